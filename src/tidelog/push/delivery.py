"""The push delivery engine of this broker (issue 15; docs/push.md, "Delivery").

Each subscription is the share group ``push.<name>`` and this broker is its consumer for the
share-partitions whose topic-partition it leads (member id ``tidelog-push-<node id>``): it acquires
records through the ShareManager (as the HTTP share-group routes do, without the membership: no
assignment is needed when the consumer is the leader itself), POSTs them, and acknowledges what
the endpoint answered. So locks, delivery counts, the retry back-off, the delivery limit and
dead-lettering are the share groups' own, and durable as theirs: a record is acknowledged only
after a 2xx, and whatever was acquired but not acknowledged when a broker dies is Available again
when its share-partition is loaded by the next leader (at least once; duplicates only after a
failure).

Per subscription one pump task (``SubscriptionDelivery``): it waits for records (new log data or
records available again), takes up to ``batch_size`` (raw: 1), waits up to ``linger_ms`` for a
fuller batch, and starts a POST while fewer than ``concurrency`` are in flight. Concurrency adapts
as Pub/Sub's push does: it starts at 1, doubles on each success up to ``max_concurrency`` and
halves on each failure. After a failed POST the subscription waits ``backoff_ms(n)`` (n failures
in a row) before the next POST, and the released records wait their own retry back-off (the
share group's ``tidelog.retry.backoff.*``, from the subscription).

A share-partition of a subscription starts at the subscription's creation time (its first record
with a timestamp at or after ``created_ms``), initialised on first use here.

Bounded: POSTs per subscription (``max_concurrency``), record bytes in flight on this broker
(``push.max.in.flight.bytes``), an answer's body read (MAX_ANSWER_BYTES), the latency sample.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Callable, Mapping

import aiohttp

from tidelog.clock import wall_clock_ms
from tidelog.config_def import ConfigError
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.push.payload import (
    ACCEPT,
    REJECT,
    RELEASE,
    DecodedBatches,
    PushRecord,
    batch_request,
    parse_results,
    raw_request,
    records_of,
)
from tidelog.push.registry import PushSubscriptions, allowed_hosts, host_allowed, idle_status
from tidelog.push.subscription import PushSubscription
from tidelog.queues.acks import AckBatch, AcknowledgeType, AcquireMode
from tidelog.queues.state_records import ShareStateKey

if TYPE_CHECKING:
    from tidelog.cluster.metadata import TopicRecord
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.config import BrokerConfig
    from tidelog.metrics import BrokerMetrics
    from tidelog.queues.manager import ShareManager
    from tidelog.queues.share_groups import ShareGroups

logger = logging.getLogger(__name__)

__all__ = ["PushDelivery", "ssl_context"]

MAX_READ_BYTES = 4 << 20  # a share-partition's log read per acquisition
MAX_ANSWER_BYTES = 1 << 20  # of an endpoint's answer body
RECONCILE_S = 1.0  # subscriptions and leaderships are looked at again this often (and at every change)
IDLE_WAIT_S = 1.0  # a pump with nothing to deliver looks again after this at the latest
WARNING_INTERVAL_S = 10.0  # delivery failures of a subscription are logged at most this often
LATENCY_SAMPLE = 4096  # latencies kept per subscription for status()'s percentiles
ACTIVE_FOR_S = 60.0  # a subscription that delivered this recently is "active", else "idle"
_ACK_TYPES = {ACCEPT: AcknowledgeType.ACCEPT, RELEASE: AcknowledgeType.RELEASE, REJECT: AcknowledgeType.REJECT}


async def wait_event(event: asyncio.Event, timeout_s: float) -> None:
    """Until ``event`` is set or ``timeout_s`` passes. Not asyncio.wait_for: on Python 3.11 a
    cancellation that arrives as the event is set can be swallowed by it, and a loop around it then
    never stops (a broker's shutdown hung on a pump so)."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        pass


def ssl_context(config: "BrokerConfig") -> ssl.SSLContext | bool:
    """The TLS client context of push deliveries: certificates and host names always verified,
    against ``push.ssl.ca.location`` (a context of its own, loaded at start so that a wrong file
    stops the broker) or the system's CAs: ``True``, aiohttp's default verifying context, which
    aiohttp loaded when it was imported. A context of our own for the system's CAs cost every
    start ~35 ms of the loop's CPU idle (~1 s at load 25), with or without push subscriptions.
    ConfigError naming the setting."""
    location = config["push.ssl.ca.location"]
    if not location:
        return True
    try:
        return ssl.create_default_context(cafile=location)
    except (OSError, ssl.SSLError) as e:
        origin = config.origins.get("push.ssl.ca.location", "") if hasattr(config, "origins") else ""
        raise ConfigError(f"push.ssl.ca.location{f' ({origin})' if origin else ''}: cannot load CAs from "
                          f"{location}: {getattr(e, 'strerror', None) or e}") from None


class ByteBudget:
    """Record bytes in flight on this broker (all subscriptions), at most ``limit`` (one acquisition may
    pass it: it is taken after the read)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def available(self) -> bool:
        return self.used < self.limit

    def take(self, size: int) -> None:
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()

    async def wait(self, timeout_s: float) -> None:
        self._freed.clear()
        await wait_event(self._freed, timeout_s)


class PushDelivery:
    def __init__(self, registry: PushSubscriptions, shares: "ShareGroups", replicas: "ReplicaManager",
                 topics_by_name: Callable[[], Mapping[str, "TopicRecord"]], config: "BrokerConfig",
                 metrics: "BrokerMetrics", node_id: int) -> None:
        self.registry = registry
        self.shares = shares
        self.replicas = replicas
        self.topics_by_name = topics_by_name
        self.metrics = metrics
        self.node_id = node_id
        self.member_id = f"tidelog-push-{node_id}"
        self.allowed_hosts = allowed_hosts(config)
        self.ssl = ssl_context(config)
        self.budget = ByteBudget(config["push.max.in.flight.bytes"])
        self.deliveries: dict[str, SubscriptionDelivery] = {}
        self.session: aiohttp.ClientSession | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._dead_lettered_seen: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0),
                                             auto_decompress=True)
        self.registry.engine = self
        self.registry.add_listener(self._changed.set)
        self.replicas.on_leadership.append(lambda _topic, _partition, _leading: self._changed.set())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tidelog-push")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(d.stop() for d in self.deliveries.values()), return_exceptions=True)
        self.deliveries.clear()
        if self.session is not None:
            await self.session.close()

    async def _run(self) -> None:
        while not self._stopping:
            self._changed.clear()
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - housekeeping: say why, keep delivering, look again
                logger.exception("push: reconciling the subscriptions failed")
            await wait_event(self._changed, RECONCILE_S)

    async def reconcile(self) -> None:
        """Start, change and stop the subscriptions' deliveries to match the registry and the
        partitions this broker leads now."""
        subs = {s.name: s for s in self.registry.list()}
        for name in list(self.deliveries):
            sub = subs.get(name)
            delivery = self.deliveries[name]
            if sub is None or sub.created_ms != delivery.sub.created_ms:  # deleted (maybe made again)
                del self.deliveries[name]
                await delivery.stop()
                await delivery.forget_state()
        for name, sub in subs.items():
            partitions = self._led(sub)
            delivery = self.deliveries.get(name)
            if delivery is None:
                if not partitions:
                    continue
                delivery = self.deliveries[name] = SubscriptionDelivery(self, sub)
                logger.info("push subscription %s: delivering %d partitions from broker %d to %s", name,
                            len(partitions), self.node_id, sub.endpoint)
            delivery.update(sub, partitions)

    def _led(self, sub: PushSubscription) -> list[tuple["TopicRecord", int]]:
        topics = self.topics_by_name()
        out = []
        for name in sub.topics:
            record = topics.get(name)
            if record is None:
                continue
            for index in range(record.partitions):
                partition = self.replicas.get(name, index)
                if partition is not None and partition.leading:
                    out.append((record, index))
        return out

    # --- status and metrics ---------------------------------------------------------------------
    def status(self, sub: PushSubscription) -> dict:
        delivery = self.deliveries.get(sub.name)
        if delivery is None or delivery.sub.created_ms != sub.created_ms:
            return {**idle_status(sub), "node_id": self.node_id}
        return delivery.status(sub)

    def refresh_gauges(self, metrics: "BrokerMetrics") -> None:
        for gauge in (metrics.push_in_flight, metrics.push_backlog, metrics.push_concurrency):
            gauge.clear()
        for name, delivery in self.deliveries.items():
            metrics.push_in_flight.labels(name).set(delivery.in_flight_records)
            metrics.push_backlog.labels(name).set(delivery.backlog())
            metrics.push_concurrency.labels(name).set(delivery.concurrency)
            dead = self.shares.group_counts(delivery.sub.group_id).get("dead_lettered", 0)
            seen = self._dead_lettered_seen.get(name, 0)
            if dead > seen:
                metrics.push_records.labels(name, "dead_lettered").inc(dead - seen)
            self._dead_lettered_seen[name] = dead


class SubscriptionDelivery:
    """One subscription's deliveries from this broker: the pump and its POSTs in flight."""

    def __init__(self, engine: PushDelivery, sub: PushSubscription) -> None:
        self.engine = engine
        self.sub = sub
        self.partitions: list[tuple["TopicRecord", int]] = []
        self._initialized: set[ShareStateKey] = set()
        self._decoded = DecodedBatches()
        self._rotation = 0
        self.concurrency = 1
        self.in_flight: set[asyncio.Task] = set()
        self.in_flight_records = 0
        self.consecutive_failures = 0
        self.retry_at = 0.0  # monotonic: no POST before this (the subscription's back-off)
        self.failing = False
        self.last_error: str | None = None
        self.last_error_ms: int | None = None
        self.last_success = 0.0
        self.counts: Counter[str] = Counter()
        self.failed_by_status: Counter[str] = Counter()
        self.latencies_ms: deque[int] = deque(maxlen=LATENCY_SAMPLE)
        self._warned_at = self._state_logged_at = -WARNING_INTERVAL_S
        self._unwarned = self._state_changes_unlogged = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._pump = asyncio.get_running_loop().create_task(self._run(), name=f"tidelog-push-{sub.name}")

    @property
    def group_id(self) -> str:
        return self.sub.group_id

    def update(self, sub: PushSubscription, partitions: list[tuple["TopicRecord", int]]) -> None:
        if sub != self.sub and sub.paused != self.sub.paused:
            logger.info("push subscription %s %s on broker %d", sub.name, "paused" if sub.paused else "resumed",
                        self.engine.node_id)
        self.sub = sub
        self.concurrency = min(self.concurrency, sub.max_concurrency)
        self.partitions = partitions
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True  # a cancellation swallowed somewhere below still ends the pump's loop
        self._pump.cancel()
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.gather(self._pump, *self.in_flight, return_exceptions=True)

    async def forget_state(self) -> None:
        """The subscription is gone: its share-partitions led here lose their state (a subscription
        made again by that name starts afresh)."""
        try:
            manager = self.engine.shares.manager_or_error()
            await manager.delete_offsets(self.group_id, [(r.topic_id, p) for r, p in self.partitions])
        except Exception as e:  # noqa: BLE001 - the state stays; a new subscription by the name reuses it
            logger.warning("push subscription %s: deleting its share-group state failed: %s", self.sub.name, e)

    # --- the pump -------------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except KafkaError as e:  # the share state is not reachable here now: look again shortly
                self._note_error(f"share group: {e.message}")
                await asyncio.sleep(IDLE_WAIT_S)
            except Exception as e:  # noqa: BLE001 - never let a subscription stop: say why, try again
                logger.exception("push subscription %s: delivery step failed", self.sub.name)
                self._note_error(f"internal: {e!r}")
                await asyncio.sleep(IDLE_WAIT_S)

    async def _sleep(self, timeout_s: float) -> None:
        """Until a change of the subscription or its partitions, a POST finished (since this step
        began: ``_step`` clears the event, so a wake-up during the step is not lost), or ``timeout_s``."""
        await wait_event(self._wake, timeout_s)

    async def _step(self) -> None:
        self._wake.clear()
        sub = self.sub
        loop = asyncio.get_running_loop()
        if sub.paused or not self.partitions:
            await self._sleep(IDLE_WAIT_S)
            return
        if len(self.in_flight) >= self.concurrency:
            await self._sleep(IDLE_WAIT_S)
            return
        if loop.time() < self.retry_at:
            await self._sleep(self.retry_at - loop.time())
            return
        if not host_allowed(sub.endpoint_host, self.engine.allowed_hosts):
            self._failed("not_allowed", f"host {sub.endpoint_host!r} is not in push.allowed.hosts")
            await self._sleep(IDLE_WAIT_S * 5)
            return
        if not self.engine.budget.available:
            await self.engine.budget.wait(IDLE_WAIT_S)
            return
        manager = await self.engine.shares.ensure_loaded()  # per use: it belongs to the share groups
        limit = sub.batch_size if sub.payload_format == "batch" else 1
        # One acquisition (one state write) for every POST that may start now: a backlog of small
        # batches (raw, or batch_size 1) is not taken a record per state write.
        records = await self._acquire(manager, limit * (self.concurrency - len(self.in_flight)))
        if not records:
            await self._wait_for_records(IDLE_WAIT_S)
            return
        deadline = loop.time() + sub.linger_ms / 1000
        try:
            while len(records) < limit and (remaining := deadline - loop.time()) > 0:
                await self._wait_for_records(remaining, wake=False)
                records += await self._acquire(manager, limit - len(records))
        except BaseException:  # stopped (or failed) while lingering: the records' locks run out, the bytes come back
            self.engine.budget.give(sum(r.size_bytes for r in records))
            self.in_flight_records -= len(records)
            raise
        for start in range(0, len(records), limit):
            self._start_post(records[start:start + limit])

    async def _wait_for_records(self, timeout_s: float, wake: bool = True) -> None:
        """Until records may be available (new log data, records released or due), ``timeout_s``, or
        (``wake``) a change or a finished POST."""
        keys = [(record.topic_id, index) for record, index in self.partitions]
        waits = [asyncio.ensure_future(self.engine.shares.wait_for_records(self.group_id, keys, timeout_s))]
        if wake:
            waits.append(asyncio.ensure_future(self._sleep(timeout_s)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _acquire(self, manager: "ShareManager", limit: int) -> list[PushRecord]:
        """Up to ``limit`` records from the share-partitions led here, starting one further each time."""
        out: list[PushRecord] = []
        partitions = self.partitions
        if not partitions:
            return out
        start = self._rotation % len(partitions)
        self._rotation += 1
        for record, index in partitions[start:] + partitions[:start]:
            if len(out) >= limit:
                break
            key = ShareStateKey(self.group_id, record.topic_id, index)
            try:
                if key not in self._initialized:
                    await self._initialize(manager, key)
                result = await manager.acquire(key, self.engine.member_id, max_records=limit - len(out),
                                               max_bytes=MAX_READ_BYTES, mode=AcquireMode.RECORD_LIMIT)
            except KafkaError as e:  # this partition cannot be delivered now (leadership moving): the others may
                logger.debug("push subscription %s: %s-%d not acquirable: %s", self.sub.name, record.name, index, e)
                continue
            if not result.acquired:
                continue
            got = records_of(record.name, index, result.records, result.acquired, self._decoded)
            await self._acknowledge_gaps(manager, key, result.acquired, got)
            out += got
        if out:
            size = sum(r.size_bytes for r in out)
            self.engine.budget.take(size)
            self.in_flight_records += len(out)
        return out

    async def _initialize(self, manager: "ShareManager", key: ShareStateKey) -> None:
        """A share-partition without state starts at the subscription's creation time."""
        await self.engine.shares.catch_up()
        if not manager.store.has(key):
            source = self.engine.shares.source
            offset = source.offset_for_timestamp(key.topic_id, key.partition, self.sub.created_ms)
            if offset is None:
                offset = source.high_watermark(key.topic_id, key.partition)
            await manager.store.initialize(key, offset)
            logger.info("push subscription %s: partition %s-%d starts at offset %d", self.sub.name, key.topic_id,
                        key.partition, offset)
        self._initialized.add(key)

    async def _acknowledge_gaps(self, manager: "ShareManager", key: ShareStateKey, acquired, got: list[PushRecord]) -> None:
        """Acquired offsets that hold no record to deliver (control records, compacted away) are GAPs."""
        if sum(a.last_offset - a.first_offset + 1 for a in acquired) == len(got):
            return  # the usual case: every acquired offset holds a record
        offsets = {r.offset for r in got}
        gaps = [o for a in acquired for o in range(a.first_offset, a.last_offset + 1) if o not in offsets]
        if gaps:
            await manager.acknowledge(key, self.engine.member_id,
                                      [AckBatch(f, last, (int(AcknowledgeType.GAP),)) for f, last in _ranges(gaps)])

    # --- a POST ---------------------------------------------------------------------------------
    def _start_post(self, records: list[PushRecord]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(self.sub, records))
        self.in_flight.add(task)
        task.add_done_callback(self._posted)

    def _posted(self, task: asyncio.Task) -> None:
        self.in_flight.discard(task)
        self._wake.set()

    async def _deliver(self, sub: PushSubscription, records: list[PushRecord]) -> None:
        size = sum(r.size_bytes for r in records)
        try:
            self.counts["delivered"] += len(records)
            self.engine.metrics.push_records.labels(sub.name, "delivered").inc(len(records))
            result, answer = await self._post(sub, records)
            if result == "ok":
                try:
                    outcomes = parse_results(answer, records) or [ACCEPT] * len(records)
                except ValueError as e:
                    result = "bad_answer"
                    self._failed(result, f"the endpoint's results are not valid: {e}")
                    outcomes = [RELEASE] * len(records)
                else:
                    self._succeeded()
            else:
                outcomes = [RELEASE] * len(records)
            await self._acknowledge(sub, records, outcomes)
        finally:
            self.engine.budget.give(size)
            self.in_flight_records -= len(records)

    async def _post(self, sub: PushSubscription, records: list[PushRecord]) -> tuple[str, bytes]:
        """("ok", answer body) for a 2xx; else (the failure's name, b"") after noting it."""
        now_ms = wall_clock_ms()
        if sub.payload_format == "batch":
            body, headers = batch_request(sub.name, sub.secret, sub.bearer_token, records, now_ms)
        else:
            body, headers = raw_request(sub.name, sub.secret, sub.bearer_token, records[0], now_ms)
        timeout = aiohttp.ClientTimeout(total=sub.ack_deadline_ms / 1000)
        try:
            async with self.engine.session.post(sub.endpoint, data=body, headers=headers, timeout=timeout,
                                                allow_redirects=False) as response:
                answer = await response.content.read(MAX_ANSWER_BYTES)
                status = response.status
        except asyncio.TimeoutError:
            self._failed("timeout", f"no answer within ack_deadline_ms ({sub.ack_deadline_ms} ms)")
            return "timeout", b""
        except aiohttp.ClientSSLError as e:
            self._failed("tls", f"TLS: {e}")
            return "tls", b""
        except (aiohttp.ClientError, OSError) as e:
            self._failed("connection", f"{type(e).__name__}: {e}")
            return "connection", b""
        if 200 <= status < 300:
            return "ok", answer
        self._failed(str(status), f"HTTP {status}: {answer[:200].decode('utf-8', 'replace')}")
        return str(status), b""

    async def _acknowledge(self, sub: PushSubscription, records: list[PushRecord], outcomes: list[str]) -> None:
        by_partition: dict[tuple[str, int], list[tuple[int, str]]] = {}
        for r, outcome in zip(records, outcomes):
            by_partition.setdefault((r.topic, r.partition), []).append((r.offset, outcome))
        topics = self.engine.topics_by_name()
        try:
            manager = self.engine.shares.manager_or_error()
        except KafkaError as e:
            logger.warning("push subscription %s: cannot acknowledge %d records: %s", sub.name, len(records), e)
            return
        for (topic, partition), results in by_partition.items():
            record = topics.get(topic)
            if record is None:
                continue
            batches = [AckBatch(first, last, (int(_ACK_TYPES[outcome]),)) for first, last, outcome in _runs(results)]
            error = await manager.acknowledge(ShareStateKey(sub.group_id, record.topic_id, partition),
                                              self.engine.member_id, batches)
            if error is not ErrorCode.none:  # the lock ran out or leadership moved: the records go out again
                logger.info("push subscription %s: acknowledging %d records of %s-%d failed (%s); they will be "
                            "delivered again", sub.name, len(results), topic, partition, error.name)
                continue
            accepted = [o for _, o in results if o == ACCEPT]
            counts = Counter(o for _, o in results)
            metrics = self.engine.metrics
            if counts[ACCEPT]:
                self.counts["acknowledged"] += counts[ACCEPT]
                metrics.push_records.labels(sub.name, "acknowledged").inc(counts[ACCEPT])
            if counts[RELEASE]:
                self.counts["retries"] += counts[RELEASE]
                metrics.push_records.labels(sub.name, "released").inc(counts[RELEASE])
            if counts[REJECT]:
                self.counts["rejected"] += counts[REJECT]
                metrics.push_records.labels(sub.name, "rejected").inc(counts[REJECT])
            if accepted:
                self._observe_latency(sub.name, [r for r in records if r.topic == topic and r.partition == partition])

    def _observe_latency(self, name: str, records: list[PushRecord]) -> None:
        now_ms = wall_clock_ms()
        histogram = self.engine.metrics.push_latency.labels(name)
        for r in records:
            latency_ms = max(0, now_ms - r.timestamp)
            self.latencies_ms.append(latency_ms)
            histogram.observe(latency_ms / 1000)

    # --- outcomes -------------------------------------------------------------------------------
    def _succeeded(self) -> None:
        self.last_success = time.monotonic()
        self.consecutive_failures = 0
        self.retry_at = 0.0
        self.concurrency = min(self.sub.max_concurrency, self.concurrency * 2)
        self.engine.metrics.push_requests.labels(self.sub.name, "ok").inc()
        if self.failing:
            self.failing = False
            self._log_state_change("push subscription %s recovered: %s answers again", self.sub.name, self.sub.endpoint)

    def _failed(self, result: str, message: str) -> None:
        sub = self.sub
        self.consecutive_failures += 1
        self.concurrency = max(1, self.concurrency // 2)
        self.retry_at = asyncio.get_running_loop().time() + sub.backoff_ms(self.consecutive_failures) / 1000
        self.failed_by_status[result] += 1
        self.engine.metrics.push_requests.labels(sub.name, result).inc()
        self._note_error(message)
        if not self.failing:
            self.failing = True
            self._log_state_change("push subscription %s failing: %s (%s)", sub.name, message, sub.endpoint)
        now = time.monotonic()
        if now - self._warned_at >= WARNING_INTERVAL_S:
            logger.warning("push subscription %s: delivery to %s failed: %s%s (retrying in %d ms)", sub.name,
                           sub.endpoint, message, f" ({self._unwarned} more failures since the last warning)"
                           if self._unwarned else "", sub.backoff_ms(self.consecutive_failures))
            self._warned_at, self._unwarned = now, 0
        else:
            self._unwarned += 1

    def _log_state_change(self, text: str, *args) -> None:
        """INFO on failing/recovered, at most once per WARNING_INTERVAL_S (an endpoint failing every
        other request would flip it at every answer); the next line counts the changes left out."""
        now = time.monotonic()
        if now - self._state_logged_at < WARNING_INTERVAL_S:
            self._state_changes_unlogged += 1
            return
        if self._state_changes_unlogged:
            text += f" ({self._state_changes_unlogged} state changes since the last such line)"
        logger.info(text, *args)
        self._state_logged_at, self._state_changes_unlogged = now, 0

    def _note_error(self, message: str) -> None:
        self.last_error, self.last_error_ms = message[:500], wall_clock_ms()

    # --- status ---------------------------------------------------------------------------------
    def backlog(self) -> int:
        """Records of the share-partitions led here not yet acknowledged or archived."""
        try:
            manager = self.engine.shares.manager_or_error()
        except KafkaError:
            return 0
        offsets = manager.describe_offsets(self.group_id, [(r.topic_id, p) for r, p in self.partitions])
        return sum(lag for _t, _p, _start, lag in offsets if lag > 0)

    def status(self, sub: PushSubscription) -> dict:
        """``sub`` is the registry's (current: a pause shows at once, before the pump has seen it)."""
        if sub.paused:
            state = "paused"
        elif self.failing:
            state = "failing"
        elif self.in_flight or time.monotonic() - self.last_success < ACTIVE_FOR_S:
            state = "active"
        else:
            state = "idle"
        latencies = sorted(self.latencies_ms)
        return {
            "name": sub.name, "node_id": self.engine.node_id, "state": state, "last_error": self.last_error,
            "last_error_ms": self.last_error_ms, "concurrency": self.concurrency, "in_flight": self.in_flight_records,
            "delivered": self.counts["delivered"], "acknowledged": self.counts["acknowledged"],
            "failed_by_status": dict(self.failed_by_status), "retries": self.counts["retries"],
            "rejected": self.counts["rejected"],
            "dead_lettered": self.engine.shares.group_counts(sub.group_id).get("dead_lettered", 0),
            "backlog": self.backlog(), "latency_p50_ms": _percentile(latencies, 0.50),
            "latency_p99_ms": _percentile(latencies, 0.99),
            "partitions": [{"topic": r.name, "partition": p} for r, p in self.partitions],
        }


def _percentile(ordered: list[int], q: float) -> int | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if out and out[-1][1] == offset - 1:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out


def _runs(results: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """Sorted (offset, outcome) as (first, last, outcome) runs of consecutive offsets with one outcome."""
    out: list[tuple[int, int, str]] = []
    for offset, outcome in sorted(results):
        if out and out[-1][1] == offset - 1 and out[-1][2] == outcome:
            out[-1] = (out[-1][0], offset, outcome)
        else:
            out.append((offset, offset, outcome))
    return out

