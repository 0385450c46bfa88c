"""This broker's share-partitions: loading them, ShareFetch acquisition, acknowledgements, lock timers,
the dead-letter step and durability (Kafka's SharePartitionManager with the persister in-process).

Every change to a share-partition goes the same way (``_settle``): the state machine applies it as
a pending transition; records it archives for a dead-letter reason go to ``dead_letter`` first;
then its state batches are written to ``__share_group_state`` and awaited; only then is it
committed (records handed to a consumer are durably Acquired, an acknowledgement is durable before
it is answered). When a step fails the transition is rolled back and the caller gets the error.

Collaborators (all narrow, passed in):

- ``source``: the partitions' logs (``PartitionSource``): log start offset, high watermark, last
  stable offset, offset for a timestamp, and reading whole batches.
- ``store``: the ``ShareStateStore`` over ``__share_group_state``.
- ``configs(group_id)``: the group's resolved ``ShareConfig`` (group configs over broker defaults).
- ``dead_letter(key, letters)``: writes dead-letter records (KIP-1191) and returns once durable;
  it decides from the group's config whether there is a DLQ topic at all.
- ``on_counts(key, counts)``: metrics (acquired, acknowledged, released, rejected, archived,
  redelivered, lock_expired, renewed records).
- ``clock_ms``: wall-clock milliseconds (locks, delays).
- ``policies(key, data, batches, start, last)``: issue 14's selection policy of an acquisition
  (queue_features.py), made from the read; ``lookahead(key)``: the look-ahead it will have
  (records past MaxRecords it lets into the window), asked before the read to bound it.
- ``refresh()``: brings ``store`` up to date with what other brokers wrote (a cluster: the state
  topic's replica here), awaited before a share-partition is loaded or initialised.

Lock expiries and delayed records: one timer per loaded share-partition, armed at its earliest
deadline (a ``SessionTimer``: after a stall it lets the acknowledgements waiting in the sockets in
first). ``wait`` lets a ShareFetch sleep until records of its partitions become available again.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence

from tidelog.clock import wall_clock_ms
from tidelog.config import parse_share_auto_offset_reset
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.in_flight import DeadLetter, Transition
from tidelog.queues.log_batches import AcquiredRecords, batches_holding, parse_log_batches
from tidelog.queues.retry import RetryBackoff
from tidelog.queues.selection import OFFSET_ORDER, SelectionPolicy
from tidelog.queues.share_partition import AckBatch, AcquireMode, SharePartition, SharePartitionConfig
from tidelog.queues.state_records import ShareStateKey
from tidelog.queues.state_store import ShareStateStore
from tidelog.session_timer import SessionTimer

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_MS = 1000  # a failed expiry (dead-letter or state write) is tried again after this
_OWNERSHIP_LOST = (ErrorCode.fenced_state_epoch, ErrorCode.not_coordinator, ErrorCode.not_leader_or_follower)


class PartitionSource(Protocol):
    """What share groups need of a topic-partition's log (the Partition object, once it exists)."""

    def log_start_offset(self, topic_id: uuid.UUID, partition: int) -> int: ...

    def high_watermark(self, topic_id: uuid.UUID, partition: int) -> int: ...

    def leader_epoch(self, topic_id: uuid.UUID, partition: int) -> int:
        """The leader epoch of the topic-partition led here (-1: not known, no fencing by it). Raises
        KafkaError (NOT_LEADER_OR_FOLLOWER, ...) where it is not led here."""
        ...

    def last_stable_offset(self, topic_id: uuid.UUID, partition: int) -> int:
        """read_committed's bound (the first one replays the log for its transactions: asked only
        by read_committed groups)."""

    def offset_for_timestamp(self, topic_id: uuid.UUID, partition: int, timestamp_ms: int) -> int | None: ...

    def aborted_transactions(self, topic_id: uuid.UUID, partition: int, fetch_offset: int,
                             upper_bound_offset: int) -> Iterable[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions a read_committed read of
        [fetch_offset, upper_bound_offset) must skip (the .txnindex entries)."""

    def read(self, topic_id: uuid.UUID, partition: int, offset: int, max_bytes: int, max_offset: int) -> bytes | memoryview:
        """Whole batches from the one holding ``offset``, below ``max_offset``, at least one batch
        even past ``max_bytes`` (KIP-74). Raises KafkaError (UNKNOWN_TOPIC_OR_PARTITION,
        NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR, ...)."""


DeadLetterWriter = Callable[[ShareStateKey, list[DeadLetter]], Awaitable[None]]
CountsHook = Callable[[ShareStateKey, dict[str, int]], None]
# Issue 14 (queues/queue_features.py): the selection policy of one acquisition from the read
# (key, data, parse_log_batches output, start offset, last offset read).
PolicyHook = Callable[[ShareStateKey, object, list, int, int], SelectionPolicy]


@dataclass(frozen=True)
class ShareConfig:
    """A share group's settings as the share-partitions use them."""

    partition: SharePartitionConfig = SharePartitionConfig()
    auto_offset_reset: str = "latest"  # latest | earliest | by_duration
    auto_offset_reset_duration_ms: int = 0
    isolation_level: str = "read_uncommitted"
    dead_letter_topic: str = ""
    dead_letter_copy_record: bool = False

    @classmethod
    def resolve(cls, broker_config, group_configs: Mapping[str, str]) -> "ShareConfig":
        """From the broker's settings and a group's overrides (``BrokerConfig.group_value``)."""
        value = broker_config.group_value
        strategy, duration_ms = parse_share_auto_offset_reset(value(group_configs, "share.auto.offset.reset"))
        return cls(
            SharePartitionConfig(value(group_configs, "share.delivery.count.limit"),
                                 value(group_configs, "share.record.lock.duration.ms"),
                                 value(group_configs, "share.partition.max.record.locks"),
                                 RetryBackoff.from_group(lambda name: value(group_configs, name))),
            strategy, duration_ms, value(group_configs, "share.isolation.level"),
            value(group_configs, "errors.deadletterqueue.topic.name"),
            value(group_configs, "errors.deadletterqueue.copy.record.enable"))


class ShareConfigs:
    """``ShareConfig.resolve`` of each group, kept while its overrides stay the same (resolving takes
    tens of microseconds, and a ShareFetch asks once per partition and more). ``group_configs(group_id)``
    gives the group's overrides; the broker's settings do not change while it runs. At most
    ``MAX_GROUPS`` groups are kept (all dropped when full: they are resolved again on use)."""

    MAX_GROUPS = 4096

    def __init__(self, broker_config, group_configs: Callable[[str], Mapping[str, str]]) -> None:
        self._broker_config = broker_config
        self._group_configs = group_configs
        self._resolved: dict[str, tuple[dict[str, str], ShareConfig]] = {}

    def __call__(self, group_id: str) -> ShareConfig:
        overrides = self._group_configs(group_id)
        cached = self._resolved.get(group_id)
        if cached is not None and cached[0] == overrides:
            return cached[1]
        copied = dict(overrides)
        resolved = ShareConfig.resolve(self._broker_config, copied)
        if len(self._resolved) >= self.MAX_GROUPS:
            self._resolved.clear()
        self._resolved[group_id] = (copied, resolved)
        return resolved


class AcquireResult(NamedTuple):
    """What a ShareFetch returns for one partition: the batches holding the acquired records (as
    buffers of the log read, in offset order) and the acquired ranges with delivery counts."""

    acquired: list[AcquiredRecords]
    records: list[memoryview]

    @property
    def records_bytes(self) -> int:
        return sum(len(b) for b in self.records)


EMPTY_RESULT = AcquireResult([], [])


class _Loaded:
    __slots__ = ("sp", "timer", "timer_at_ms", "leader_epoch")

    def __init__(self, sp: SharePartition, leader_epoch: int = -1) -> None:
        self.sp = sp
        self.leader_epoch = leader_epoch  # of the topic-partition when it was loaded: its state writes carry it
        self.timer: asyncio.TimerHandle | SessionTimer | None = None  # (SessionTimer: fallen due, _on_due)
        self.timer_at_ms: int | None = None


class ShareManager:
    def __init__(self, store: ShareStateStore, source: PartitionSource, configs: Callable[[str], ShareConfig], *,
                 dead_letter: DeadLetterWriter | None = None, on_counts: CountsHook | None = None,
                 clock_ms: Callable[[], int] | None = None, policies: PolicyHook | None = None,
                 lookahead: Callable[[ShareStateKey], int] | None = None,
                 refresh: Callable[[], Awaitable[None]] | None = None,
                 on_unload: Callable[[ShareStateKey], None] | None = None) -> None:
        self.store = store
        self.source = source
        self.configs = configs
        self._dead_letter = dead_letter
        self._on_counts = on_counts
        self._clock_ms = clock_ms or wall_clock_ms
        self._policies = policies
        self._lookahead = lookahead
        self._refresh = refresh
        self._on_unload = on_unload  # a share-partition left memory: whatever is cached for it goes too
        self._loaded: dict[ShareStateKey, _Loaded] = {}
        self._loading: dict[ShareStateKey, asyncio.Future] = {}
        self._initializing: dict[ShareStateKey, asyncio.Future] = {}  # at most one initialisation per key
        self._waiters: dict[ShareStateKey, set[asyncio.Future]] = {}
        self._tasks: set[asyncio.Future] = set()  # state writes (and their tasks) not yet finished
        self._closed = False

    # --- share-partition state ----------------------------------------------------------------
    async def initialize(self, group_id: str, partitions: Mapping[uuid.UUID, Iterable[int]]) -> None:
        """Give every listed share-partition that has none a durable state, starting where the group's
        ``share.auto.offset.reset`` says (ShareGroupCoordinator's ``initialize``)."""
        if self._refresh is not None:
            await self._refresh()
        config = self.configs(group_id)
        writes = []
        for topic_id, numbers in partitions.items():
            for partition in numbers:
                key = ShareStateKey(group_id, topic_id, partition)
                pending = self._initializing.get(key)
                if pending is not None:  # another heartbeat initialises it: wait for that one
                    writes.append(asyncio.shield(pending))
                elif not self.store.has(key):
                    pending = asyncio.ensure_future(
                        self.store.initialize(key, self._reset_offset(config, topic_id, partition)))
                    self._initializing[key] = pending
                    pending.add_done_callback(lambda _, key=key: self._initializing.pop(key, None))
                    writes.append(asyncio.shield(pending))
        if writes:
            results = await asyncio.gather(*writes, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    def _reset_offset(self, config: ShareConfig, topic_id: uuid.UUID, partition: int) -> int:
        if config.auto_offset_reset == "earliest":
            return self.source.log_start_offset(topic_id, partition)
        if config.auto_offset_reset == "by_duration":
            found = self.source.offset_for_timestamp(topic_id, partition,
                                                     self._clock_ms() - config.auto_offset_reset_duration_ms)
            if found is not None:
                return found
        return self.source.high_watermark(topic_id, partition)

    async def _partition(self, key: ShareStateKey) -> SharePartition:
        """The loaded share-partition (loading it once, however many requests ask at the same time)."""
        config = self.configs(key.group_id)
        while (loaded := self._loaded.get(key)) is None:
            pending = self._loading.get(key)
            if pending is not None:
                await asyncio.shield(pending)
                continue
            future = asyncio.get_running_loop().create_future()
            self._loading[key] = future
            try:
                await self._load(key, config)
                future.set_result(None)
            except BaseException as e:
                future.set_exception(e)
                future.exception()  # retrieved here; the waiters raise it themselves
                raise
            finally:
                del self._loading[key]
        sp = loaded.sp
        sp.config = config.partition
        log_start = self.source.log_start_offset(key.topic_id, key.partition)
        if log_start > sp.start_offset:
            sp.move_log_start(log_start)
        return sp

    async def _load(self, key: ShareStateKey, config: ShareConfig) -> _Loaded:
        # Only where the topic-partition is led (leader_epoch raises NOT_LEADER_OR_FOLLOWER elsewhere):
        # a share-partition loaded on a follower would go stale while another broker serves it.
        leader_epoch = self.source.leader_epoch(key.topic_id, key.partition)
        if self._refresh is not None:
            await self._refresh()
        state = self.store.state(key)
        if state is None:
            await self.initialize(key.group_id, {key.topic_id: [key.partition]})
            state = self.store.state(key)
            if state is None:
                raise KafkaError(ErrorCode.coordinator_not_available, f"No state for share-partition {key}.")
        if leader_epoch >= 0:  # a snapshot under this leader epoch first: a deposed leader's later writes fail
            state = await self.store.fence(key, leader_epoch)
        else:
            self.store.snapshot_next(key)  # replayers then ignore a previous owner's later updates
        now = self._clock_ms()
        sp = SharePartition.from_state(config.partition, state.start_offset, state.batches, state.state_epoch, now)
        loaded = self._loaded[key] = _Loaded(sp, leader_epoch)
        logger.info("share-partition %s/%s-%d loaded: start offset %d, %d in flight", key.group_id, key.topic_id,
                    key.partition, sp.start_offset, sp.in_flight_records)
        self._arm(key)
        return loaded

    def loaded(self, group_id: str | None = None) -> list[tuple[ShareStateKey, SharePartition]]:
        return [(k, l.sp) for k, l in self._loaded.items() if group_id is None or k.group_id == group_id]

    def acquisition_lock_timeout_ms(self, group_id: str) -> int:
        return self.configs(group_id).partition.record_lock_duration_ms

    # --- ShareFetch -----------------------------------------------------------------------------
    async def acquire(self, key: ShareStateKey, member_id: str, *, max_records: int, max_bytes: int,
                      batch_size: int | None = None, mode: AcquireMode = AcquireMode.BATCH_OPTIMIZED,
                      policy: SelectionPolicy = OFFSET_ORDER) -> AcquireResult:
        """Acquire records of one share-partition for a member and return them once that is durable.
        Raises KafkaError (the partition's error code in the ShareFetch response)."""
        sp = await self._partition(key)
        now = self._clock_ms()
        offset = sp.fetch_offset(now)
        if offset is None or max_records <= 0:
            return EMPTY_RESULT
        config = self.configs(key.group_id)
        if config.isolation_level == "read_committed":
            upper = self.source.last_stable_offset(key.topic_id, key.partition)
        else:
            upper = self.source.high_watermark(key.topic_id, key.partition)
        # No further than the window can take (an acquisition never enters records past it): a
        # consumer's max_bytes (librdkafka: 50 MB) read, parsed and scanned per fetch to acquire
        # one batch was most of a ShareFetch's cost and, held by concurrent fetches, of the RSS.
        upper = min(upper, max(sp.next_offset, sp.start_offset + sp.config.max_in_flight_records))
        # Nor further past the window's end than this acquisition lets records in: max_records and
        # the policy's look-ahead, in whole batches (SharePartition._enter_window). Unfiltered, with
        # 1 KiB records, two of every three batches read were read for nothing.
        if policy is not OFFSET_ORDER or self._policies is None:
            lookahead = policy.lookahead_records
        elif self._lookahead is not None:
            lookahead = self._lookahead(key)
        else:  # (the policy is made after the read: no bound but the window's)
            lookahead = sp.config.max_in_flight_records
        upper = min(upper, max(sp.next_offset, offset) + max_records + lookahead)
        if offset >= upper:
            return EMPTY_RESULT
        data = self.source.read(key.topic_id, key.partition, offset, max_bytes, upper)
        aborted = () if config.isolation_level != "read_committed" else \
            self.source.aborted_transactions(key.topic_id, key.partition, offset, upper)
        batches = parse_log_batches(data, aborted)
        if not batches:
            return EMPTY_RESULT
        if self._policies is not None and policy is OFFSET_ORDER:
            policy = self._policies(key, data, batches, sp.start_offset, batches[-1][2].last_offset)
        t = sp.acquire(member_id, [b for _, _, b in batches], max_records, now, batch_size=batch_size, mode=mode,
                       policy=policy)
        await self._settle(key, sp, t)
        if not t.acquired:
            return EMPTY_RESULT
        return AcquireResult(t.acquired, batches_holding(memoryview(data), batches, t.acquired))

    # --- ShareAcknowledge / piggy-backed acknowledgements -----------------------------------------
    async def acknowledge(self, key: ShareStateKey, member_id: str, acks: Sequence[AckBatch], *,
                          release_delay_ms: int = 0, renew_allowed: bool = True) -> ErrorCode:
        """Apply a member's acknowledgements of one share-partition; the AcknowledgeErrorCode.
        ``renew_allowed``: RENEW (type 4) is valid only in v2 requests with IsRenewAck set."""
        try:
            sp = await self._partition(key)
            t = sp.acknowledge(member_id, acks, self._clock_ms(), release_delay_ms=release_delay_ms,
                               renew_allowed=renew_allowed)
            await self._settle(key, sp, t)
        except KafkaError as e:
            if e.error_code == ErrorCode.invalid_record_state:  # e.g. its lock ran out: an ordinary race
                logger.debug("share-partition %s: acknowledgement by %s refused: %s", key, member_id, e)
            elif e.error_code == ErrorCode.invalid_request:  # malformed acknowledgement batches: a client bug
                logger.warning("share-partition %s: acknowledgement by %s refused: %s", key, member_id, e)
            else:
                logger.warning("share-partition %s: acknowledgement by %s failed: %s", key, member_id, e)
            return e.error_code
        return ErrorCode.none

    async def release_member(self, group_id: str, member_id: str, *, count_delivery: bool,
                             partitions: Iterable[tuple[uuid.UUID, int]] | None = None) -> None:
        """A member's share session closed or it left the group: its acquired records become
        available again (``count_delivery``: whether the interrupted delivery counts, see
        SharePartition.release_member)."""
        keys = [k for k in self._loaded if k.group_id == group_id] if partitions is None else \
            [ShareStateKey(group_id, t, p) for t, p in partitions if ShareStateKey(group_id, t, p) in self._loaded]
        for key in keys:
            sp = self._loaded[key].sp
            t = sp.release_member(member_id, self._clock_ms(), count_delivery=count_delivery)
            try:
                await self._settle(key, sp, t)
            except Exception as e:  # noqa: BLE001 - the locks still expire on their own
                logger.warning("share-partition %s: releasing the records of %s failed: %s", key, member_id, e)

    # --- waiting for records ------------------------------------------------------------------
    async def wait(self, keys: Iterable[ShareStateKey], timeout_s: float) -> bool:
        """Sleep until records of one of ``keys`` become available again (released, lock expired,
        delay over), acknowledgements move its start offset (room in a full window), or
        ``timeout_s`` passes; True when woken. New records in the log are the log's business (the
        broker's append notification)."""
        future = asyncio.get_running_loop().create_future()
        keys = list(keys)
        for key in keys:
            self._waiters.setdefault(key, set()).add(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiters[key]

    def _notify(self, key: ShareStateKey) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(None)

    # --- durability -----------------------------------------------------------------------------
    async def _settle(self, key: ShareStateKey, sp: SharePartition, t: Transition) -> None:
        """Dead letters, then the state write, then commit; rollback and re-raise on failure. The steps
        go on without the caller (the write's done callback, or a task where dead letters come first):
        a caller cancelled meanwhile (its client went away) does not leave the share-partition and its
        durable state disagreeing."""
        if t.empty and not t.dead_letters:
            sp.commit(t)
            self._report(key, t)
            self._arm(key)
            return
        loaded = self._loaded.get(key)  # the leader epoch it was loaded at (a deposed leader's writes fail)
        leader_epoch = loaded.leader_epoch if loaded is not None and loaded.sp is sp else -1
        if not t.dead_letters or self._dead_letter is None:
            # The usual change: its write queued now and the transition finished by the write's own
            # done callback, so a cancelled caller changes nothing either (no task, no coroutine: a
            # ShareFetch settles two changes, its acknowledgements and its acquisition).
            written = self._write(key, sp, t, leader_epoch)
            self._tasks.add(written)
            written.add_done_callback(lambda future: self._written(key, sp, t, future))
            await asyncio.shield(written)
            return
        task = asyncio.get_running_loop().create_task(self._make_durable(key, sp, t, leader_epoch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    def _write(self, key: ShareStateKey, sp: SharePartition, t: Transition, leader_epoch: int) -> asyncio.Future:
        start = sp.start_offset if t.start_offset is None else max(t.start_offset, sp.start_offset)
        return self.store.write_future(key, sp.state_epoch, start, t.state_batches,
                                       sp.delivery_complete_count(start), leader_epoch)

    async def _make_durable(self, key: ShareStateKey, sp: SharePartition, t: Transition,
                            leader_epoch: int = -1) -> None:
        """_settle's steps where records go to the dead-letter topic first."""
        try:
            await self._dead_letter(key, list(t.dead_letters))
            await self._write(key, sp, t, leader_epoch)
        except BaseException as e:
            self._finish(key, sp, t, e)
            raise
        self._finish(key, sp, t, None)

    def _written(self, key: ShareStateKey, sp: SharePartition, t: Transition, future: asyncio.Future) -> None:
        self._tasks.discard(future)
        self._finish(key, sp, t, asyncio.CancelledError() if future.cancelled() else future.exception())

    def _finish(self, key: ShareStateKey, sp: SharePartition, t: Transition, error: BaseException | None) -> None:
        """Commit the transition once its write is durable, or roll it back (``error``: why not)."""
        if error is not None:
            sp.rollback(t)
            if isinstance(error, KafkaError) and error.error_code in _OWNERSHIP_LOST:
                self._unload(key)
            else:
                self._arm(key)
            return
        start = sp.start_offset
        sp.commit(t)
        self._report(key, t)
        self._arm(key)
        # records available again, or room in a window that was full (the start offset moved on)
        if {"released", "lock_expired"} & t.counts.keys() or sp.start_offset > start:
            self._notify(key)

    def _report(self, key: ShareStateKey, t: Transition) -> None:
        if self._on_counts is not None and t.counts:
            self._on_counts(key, dict(t.counts))

    # --- timers ---------------------------------------------------------------------------------
    def _arm(self, key: ShareStateKey, not_before_ms: int | None = None) -> None:
        loaded = self._loaded.get(key)
        if loaded is None or self._closed:
            return
        deadline = loaded.sp.next_deadline_ms()
        if deadline is not None and not_before_ms is not None:
            deadline = max(deadline, not_before_ms)
        if deadline == loaded.timer_at_ms and loaded.timer is not None:
            return
        if loaded.timer is not None:
            loaded.timer.cancel()
            loaded.timer = None
        loaded.timer_at_ms = deadline
        if deadline is None:
            return
        delay_s = max(0.0, (deadline - self._clock_ms()) / 1000)
        loaded.timer = asyncio.get_running_loop().call_later(delay_s, self._on_due, key)

    def _on_due(self, key: ShareStateKey) -> None:
        """The deadline came: ``_on_timer`` once the loop has read its sockets (the rest of a
        SessionTimer, tidelog/session_timer.py): after a stall, the acknowledgements waiting there,
        sent in time, are applied before their records' locks expire. Made here, not when armed:
        the timer is armed again after most ShareFetch rounds and acknowledgements, and a bare
        handle costs ~5.7k instructions less an arming (callgrind)."""
        loaded = self._loaded.get(key)
        if loaded is not None and loaded.timer is not None and not isinstance(loaded.timer, SessionTimer):
            loaded.timer = SessionTimer.fallen_due(asyncio.get_running_loop(), loaded.timer.when(), self._on_timer,
                                                   (key,))

    def _on_timer(self, key: ShareStateKey) -> None:
        loaded = self._loaded.get(key)
        if loaded is None:
            return
        loaded.timer = None
        loaded.timer_at_ms = None
        task = asyncio.get_running_loop().create_task(self.run_timers(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_timers(self, key: ShareStateKey) -> None:
        """Expire the share-partition's locks that ran out and wake fetches for records now due."""
        loaded = self._loaded.get(key)
        if loaded is None:
            return
        sp = loaded.sp
        now = self._clock_ms()
        t = sp.expire_locks(now)
        try:
            await self._settle(key, sp, t)
        except Exception as e:  # noqa: BLE001 - tried again shortly; the records stay locked meanwhile
            logger.warning("share-partition %s: expiring locks failed (retrying in %d ms): %s", key,
                           RETRY_AFTER_FAILURE_MS, e)
            self._arm(key, not_before_ms=now + RETRY_AFTER_FAILURE_MS)
            return
        if sp.fetch_offset(now) is not None:
            self._notify(key)

    # --- admin ----------------------------------------------------------------------------------
    def describe_offsets(self, group_id: str, partitions: Iterable[tuple[uuid.UUID, int]]
                         ) -> list[tuple[uuid.UUID, int, int, int]]:
        """DescribeShareGroupOffsets: (topic id, partition, start offset, lag) per partition; -1 and
        -1 where the group has no state. Lag (KIP-1226) is the records from the start offset to the
        high watermark not yet acknowledged or archived."""
        out = []
        for topic_id, partition in partitions:
            key = ShareStateKey(group_id, topic_id, partition)
            loaded = self._loaded.get(key)
            if loaded is not None:
                start, complete = loaded.sp.start_offset, loaded.sp.delivery_complete_count()
            else:
                completion = self.store.completion(key)
                if completion is None:
                    out.append((topic_id, partition, -1, -1))
                    continue
                start, complete = completion
            try:
                high_watermark = self.source.high_watermark(topic_id, partition)
            except KafkaError:
                out.append((topic_id, partition, start, -1))
                continue
            out.append((topic_id, partition, start, max(0, high_watermark - start - complete)))
        return out

    async def alter_offsets(self, group_id: str, offsets: Mapping[tuple[uuid.UUID, int], int]) -> None:
        """AlterShareGroupOffsets (the group must be empty, the caller checks): each share-partition
        starts afresh at its offset, with a new state epoch that fences any older writer."""
        if self._refresh is not None:
            await self._refresh()
        for (topic_id, partition), offset in offsets.items():
            key = ShareStateKey(group_id, topic_id, partition)
            self._unload(key)
            await self.store.initialize(key, offset)

    async def delete_offsets(self, group_id: str, partitions: Iterable[tuple[uuid.UUID, int]]) -> None:
        """DeleteShareGroupOffsets, or deleting a group or topic: the share-partitions' state goes."""
        if self._refresh is not None:
            await self._refresh()
        for topic_id, partition in partitions:
            key = ShareStateKey(group_id, topic_id, partition)
            self._unload(key)
            if self.store.has(key):
                await self.store.delete(key)

    def state_keys(self, group_id: str) -> list[ShareStateKey]:
        return self.store.keys(group_id)

    def describe_partition(self, key: ShareStateKey) -> dict | None:
        """For the console and the CLI: the window and its records by state."""
        loaded = self._loaded.get(key)
        if loaded is None:
            state = self.store.state(key)
            if state is None:
                return None
            return {"start_offset": state.start_offset, "state_epoch": state.state_epoch, "loaded": False}
        sp = loaded.sp
        acquired: dict[str, int] = {}
        for first, last, state, _count, member in sp.runs():
            if member:
                acquired[member] = acquired.get(member, 0) + last - first + 1
        return {"start_offset": sp.start_offset, "next_offset": sp.next_offset, "state_epoch": sp.state_epoch,
                "in_flight": sp.in_flight_records, "records": sp.counts_by_state(), "acquired_by": acquired,
                "loaded": True}

    def forget_partition(self, topic_id: uuid.UUID, partition: int) -> None:
        """This broker no longer leads the topic-partition (or it was deleted): drop every group's
        share-partition of it from memory; its durable state stays for the next leader."""
        for key in [k for k in self._loaded if k.topic_id == topic_id and k.partition == partition]:
            self._unload(key)

    def _unload(self, key: ShareStateKey) -> None:
        loaded = self._loaded.pop(key, None)
        if loaded is not None and loaded.timer is not None:
            loaded.timer.cancel()
        if self._on_unload is not None:
            self._on_unload(key)

    async def close(self) -> None:
        self._closed = True
        for key in list(self._loaded):
            self._unload(key)
        for task in list(self._tasks):
            task.cancel()
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()
