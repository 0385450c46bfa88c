"""Replication (cluster mode): this broker's replicas, as leader or follower.

Leader side, per partition this broker leads (``LeaderPartition``):
- produce batches are stamped with the leader epoch; followers fetch with the Fetch API
  (replica id set); each follower's fetch offset, once its read succeeded, is what it has, so
  the high watermark is the smallest log end offset over the ISR and only moves forward.
  Consumers read below it, ListOffsets latest answers it, acks=all produces complete when it
  passes their batch.
- a follower that has not caught up with the log end offset for ``replica.lag.time.max.ms``
  leaves the ISR; one that reaches the high watermark (and the current epoch's start) joins
  again. Both are compare-and-swap writes of the partition state in the metadata store: a
  stale leader's write fails, as its version is old. While a write adding a follower is in
  flight, the high watermark already waits for that follower (Kafka's "maximal ISR").
Follower side: one ``Fetcher`` task per leader broker (server/replica_fetcher.py), fetching all
the partitions followed from it in one long-polling Fetch; this manager appends the leader's
batches with their offsets as they are and truncates a divergent tail where the fetcher found one.
High watermarks: every ``replica.high.watermark.checkpoint.interval.ms`` and at shutdown into
``<data dir>/replication-offset-checkpoint`` (Kafka's file, storage/offset_checkpoint.py), read
back at start.
Leader epochs: storage/leader_epoch.py.

Roles follow the partition states in the metadata store: every change notification marks the
partition, and ``_apply`` makes the local role match. When the log directory goes offline (an
I/O error) every local replica is given up and the controller is told (``announce_offline``).
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidelog.clock import monotonic_ms
from tidelog.cluster.metadata import PartitionState
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import BATCH_HEADER_SIZE, InvalidBatch, batch_crc_ok, parse_batch_header
from tidelog.server.replica_fetcher import Fetcher
from tidelog.storage.leader_epoch import LeaderEpochCache
from tidelog.storage.offset_checkpoint import read_offset_checkpoint, render_offset_checkpoint, write_offset_checkpoint

if TYPE_CHECKING:
    from tidelog.server.broker import Broker
    from tidelog.storage.log import PartitionLog

logger = logging.getLogger(__name__)

HW_CHECKPOINT_FILE = "replication-offset-checkpoint"
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - 12  # a batch's length field counts what follows it


@dataclass
class LeaderPartition:
    topic: str
    partition: int
    log: "PartitionLog"
    state: PartitionState
    high_watermark: int
    follower_end_offsets: dict[int, int] = field(default_factory=dict)
    caught_up_ms: dict[int, int] = field(default_factory=dict)
    last_fetch: dict[int, tuple[int, int]] = field(default_factory=dict)  # follower -> (leader LEO, ms)
    waiters: list[tuple[int, asyncio.Future]] = field(default_factory=list)
    pending_isr: tuple[int, ...] | None = None  # the ISR a compare-and-swap in flight is writing

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The ISR the high watermark and acks=all count (Kafka's "maximal ISR", KIP-497): the
        stored ISR plus a replica whose joining is being written. Waiting for one replica more
        is safe; committing without one that may be in the ISR a moment later is not. During a
        pending shrink the stored ISR is the larger one, so it stays counted until the write lands."""
        pending = self.pending_isr
        if pending is None:
            return self.state.isr
        return self.state.isr + tuple(r for r in pending if r not in self.state.isr)


class ReplicaManager:
    """This broker's replicas in cluster mode; see the module docstring."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.node_id = broker.node_id
        self.store = broker.metadata
        self.leading: dict[tuple[str, int], LeaderPartition] = {}
        self.following: dict[tuple[str, int], PartitionState] = {}
        self.follower_high_watermarks: dict[tuple[str, int], int] = {}
        self.epoch_caches: dict[tuple[str, int], LeaderEpochCache] = {}
        self.fetchers: dict[int, Fetcher] = {}
        self.lag_max_ms = broker.config["replica.lag.time.max.ms"]
        self._dirty: set[tuple[str, int]] = set()
        self._applied_configs: dict[str, dict] = {}
        self._applied_broker_epoch = 0
        self._awaiting_election: set[tuple[str, int]] = set()
        self.log_dir_offline = False  # after an I/O error: every replica here is offline
        self._announcing: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.on_leadership: list = []  # callbacks (topic, partition, leading: bool)

    @property
    def logs(self):
        """The broker's LogManager (made after this manager, at start)."""
        return self.broker.logs

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._load_high_watermarks()
        self._applied_broker_epoch = self.store.broker_epoch
        self.store.add_listener(self._on_change)
        self.broker.logs.on_offline.append(self._on_log_dir_offline)
        self._dirty.update(self.store.partitions)
        self._wake.set()
        self._tasks = [asyncio.create_task(self._apply_loop(), name="replica-apply"),
                       asyncio.create_task(self._isr_shrink_loop(), name="isr-shrink"),
                       asyncio.create_task(self._checkpoint_loop(), name="hw-checkpoint")]

    async def stop(self) -> None:
        for fetcher in self.fetchers.values():
            fetcher.stop()
        for task in self._tasks:
            task.cancel()
        # Bounded: Python 3.11's wait_for can swallow a cancellation that lands as its inner
        # read completes, and a task that missed it must not hold the shutdown up.
        tasks = [*self._tasks, *(f.task for f in self.fetchers.values() if f.task)]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._announcing is not None:
            self._announcing.cancel()
        for leader in self.leading.values():
            self._fail_waiters(leader, ErrorCode.not_leader_or_follower)
        if not self.log_dir_offline:  # offline: the next start recovers from the logs
            self._write_high_watermarks(self._high_watermark_text())

    # ---- high watermark checkpoint ---------------------------------------------------------
    @property
    def _checkpoint_path(self):
        return self.broker.data_dir / HW_CHECKPOINT_FILE

    def _load_high_watermarks(self) -> None:
        """Read ``replication-offset-checkpoint`` (storage/offset_checkpoint.py), so that a broker
        leading again after a restart serves what was committed before it, not nothing until its
        followers fetch again."""
        for (topic, partition), high_watermark in read_offset_checkpoint(self._checkpoint_path).items():
            log = self.broker.logs.get(topic, partition)
            if log is not None:
                self.follower_high_watermarks[(topic, partition)] = min(high_watermark, log.log_end_offset)

    def _high_watermark_text(self) -> str:
        high_watermarks = {}
        for log in self.broker.logs.logs():
            key = (log.topic, log.partition)
            leader = self.leading.get(key)
            high_watermark = leader.high_watermark if leader is not None else self.follower_high_watermarks.get(key)
            if high_watermark is not None:
                high_watermarks[key] = min(high_watermark, log.log_end_offset)
        return render_offset_checkpoint(high_watermarks)

    def _write_high_watermarks(self, text: str) -> None:
        write_offset_checkpoint(self._checkpoint_path, text)

    async def _checkpoint_loop(self) -> None:
        interval_s = self.broker.config["replica.high.watermark.checkpoint.interval.ms"] / 1000
        written = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            text = self._high_watermark_text()
            if text != written and not self.log_dir_offline:
                try:
                    await loop.run_in_executor(None, self._write_high_watermarks, text)
                    written = text
                except OSError as e:
                    logger.error("cannot write %s: %s", self._checkpoint_path, e)

    def pending_changes(self) -> int:
        """Partition states changed in the store and not yet applied here (broker readiness)."""
        return len(self._dirty)

    def refresh(self, topic: str) -> None:
        """Apply the topic's partition states now (after this broker wrote them)."""
        self._on_change("topic", topic)

    def _on_change(self, kind: str, key: object) -> None:
        if kind == "partition":
            self._dirty.add(key)
        elif kind == "topic":
            record = self.store.topics.get(key)
            self._dirty.update(k for k in list(self.store.partitions) if k[0] == key)
            self._dirty.update(k for k in list(self.leading) + list(self.following) if k[0] == key)
            if record is None:
                self._drop_topic(key)
            else:
                self._apply_topic_configs(record)
        elif kind == "broker":
            if key != self.node_id or self.store.broker_epoch == self._applied_broker_epoch:
                return
            self._applied_broker_epoch = self.store.broker_epoch  # registered again: look at every partition
            self._dirty.update(self.store.partitions)
            if self.log_dir_offline:  # the announcement went with the old lease
                self._announce_offline()
        self._wake.set()

    def _apply_topic_configs(self, record) -> None:
        """A topic's config change (AlterConfigs served by any broker) reaches this broker's
        open logs of it; configs dicts are replaced on change, never mutated."""
        if self._applied_configs.get(record.name) is record.configs:
            return
        self._applied_configs[record.name] = record.configs
        log_config = self.broker.log_config(record.configs)
        for index in range(record.partitions):
            log = self.broker.logs.get(record.name, index)
            if log is not None and log.config != log_config:
                log.set_config(log_config)
                logger.info("%s-%d: log config updated", record.name, index)

    def _drop_topic(self, name: str) -> None:
        for key in [k for k in list(self.leading) + list(self.following) if k[0] == name]:
            self._stop_leading(key)
            self._stop_following(key)
            self.epoch_caches.pop(key, None)
        if any(log.topic == name for log in self.broker.logs.logs()):
            self.broker.logs.delete_topic(name)
            logger.info("topic %s deleted: removed its local replicas", name)

    async def _apply_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for key in sorted(dirty):
                try:
                    self._apply(key)
                except Exception:
                    logger.exception("applying the state of %s-%d failed", *key)

    # ---- roles -----------------------------------------------------------------------------
    def _apply(self, key: tuple[str, int]) -> None:
        if self.log_dir_offline:
            self._stop_leading(key, ErrorCode.kafka_storage_error)
            self._stop_following(key)
            return
        state = self.store.partitions.get(key)
        record = self.store.topics.get(key[0])
        if state is None or record is None or self.node_id not in state.replicas:
            self._stop_leading(key)
            self._stop_following(key)
            if state is not None and record is not None and self.broker.logs.get(*key) is not None:
                # Reassigned away: the replica is no longer ours.
                self.epoch_caches.pop(key, None)
                self.follower_high_watermarks.pop(key, None)
                self.broker._producer_states.pop(key, None)
                self.broker.logs.delete_partition(*key)
                logger.info("%s-%d: replica moved to other brokers; deleted here", *key)
            return
        log = self.broker.logs.get(*key)
        if log is None:
            log = self.broker.logs.create(key[0], key[1], self.broker.log_config(record.configs))
        if state.leader == self.node_id and state.version < self.store.broker_epoch:
            # Elected before this broker registered (it restarted, or its lease lapsed): its log
            # may lack what it had then. The controller elects again (controller.py); till then
            # this broker neither leads nor follows the partition.
            if key in self.leading or key in self.following or key not in self._awaiting_election:
                logger.info("%s-%d: led by this broker before it registered (epoch %d); waiting for the controller "
                            "to elect a leader", key[0], key[1], self.store.broker_epoch)
            self._awaiting_election.add(key)
            self._stop_leading(key)
            self._stop_following(key)
            return
        self._awaiting_election.discard(key)
        if state.leader == self.node_id:
            self._stop_following(key)
            leader = self.leading.get(key)
            if leader is None or leader.state.leader_epoch != state.leader_epoch:
                self._become_leader(key, log, state)
            elif state.version >= leader.state.version:
                self._count_isr_change(leader.state.isr, state.isr)
                leader.state = state
                self._advance_high_watermark(leader)
            return
        self._stop_leading(key)
        current = self.following.get(key)
        if current is not None and current.leader == state.leader and current.leader_epoch == state.leader_epoch:
            self.following[key] = state
            return
        self._stop_following(key)
        if state.leader >= 0:
            self.following[key] = state
            fetcher = self.fetchers.get(state.leader)
            if fetcher is None:
                fetcher = self.fetchers[state.leader] = Fetcher(self, state.leader,
                                                                 self.broker.config["replica.fetch.backoff.ms"])
                fetcher.start()
            fetcher.add(key, state.leader_epoch)
            logger.info("%s-%d: following leader %d (epoch %d)", key[0], key[1], state.leader, state.leader_epoch)

    def epoch_cache(self, key: tuple[str, int], log: "PartitionLog") -> LeaderEpochCache:
        cache = self.epoch_caches.get(key)
        if cache is None:
            cache = self.epoch_caches[key] = LeaderEpochCache(log)
        return cache

    def _become_leader(self, key, log, state: PartitionState) -> None:
        self.epoch_cache(key, log).assign(state.leader_epoch, log.log_end_offset)
        high_watermark = min(self.follower_high_watermarks.get(key, 0), log.log_end_offset)
        old = self.leading.get(key)
        if old is not None:
            high_watermark = max(high_watermark, old.high_watermark)
            self._fail_waiters(old, ErrorCode.not_leader_or_follower)
        now = monotonic_ms()
        leader = self.leading[key] = LeaderPartition(key[0], key[1], log, state, high_watermark,
                                                     caught_up_ms={r: now for r in state.replicas})
        self._advance_high_watermark(leader)
        logger.info("%s-%d: leader (epoch %d), isr %s, high watermark %d, log end offset %d", key[0], key[1],
                    state.leader_epoch, list(state.isr), leader.high_watermark, log.log_end_offset)
        if old is None:
            for callback in self.on_leadership:
                callback(key[0], key[1], True)

    def _stop_leading(self, key, error: ErrorCode = ErrorCode.not_leader_or_follower) -> None:
        leader = self.leading.pop(key, None)
        if leader is not None:
            self.follower_high_watermarks[key] = leader.high_watermark
            self._fail_waiters(leader, error)
            self.broker.notify_append(*key)  # parked consumer fetches answer NOT_LEADER now
            logger.info("%s-%d: no longer the leader", *key)
            for callback in self.on_leadership:
                callback(key[0], key[1], False)

    def _on_log_dir_offline(self, reason: str) -> None:
        """The log directory went offline (an I/O error, storage/log_dir.py): every replica
        here is offline until a restart. Leaderships are given up (acknowledgements waiting
        here answer KAFKA_STORAGE_ERROR), fetchers stop, and the controller is told, so that it
        elects leaders among the other in-sync replicas and takes this broker out of every ISR
        (Kafka's offline replicas)."""
        if self.log_dir_offline:
            return
        self.log_dir_offline = True
        logger.error("log directory offline (%s): giving up %d leaderships and %d followed partitions", reason,
                     len(self.leading), len(self.following))
        for key in list(self.leading):
            self._stop_leading(key, ErrorCode.kafka_storage_error)
        for key in list(self.following):
            self._stop_following(key)
        self._announce_offline()

    def _announce_offline(self) -> None:
        async def announce() -> None:
            delay_s = 0.1
            while True:  # until the store has it: the controller must hear of it
                try:
                    await self.store.announce_offline(self.node_id)
                    logger.info("broker %d announced its offline log directory to the controller", self.node_id)
                    return
                except Exception as e:
                    logger.warning("cannot announce the offline log directory yet (%s); retrying", e)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, 2.0)

        if self._announcing is not None:
            self._announcing.cancel()
        self._announcing = asyncio.get_running_loop().create_task(announce(), name="announce-offline")

    def _stop_following(self, key) -> None:
        state = self.following.pop(key, None)
        if state is not None:
            fetcher = self.fetchers.get(state.leader)
            if fetcher is not None:
                fetcher.remove(key)

    # ---- what the handlers ask -------------------------------------------------------------
    def leader_error(self, topic: str, partition: int, current_leader_epoch: int = -1, replica_id: int = -1) -> ErrorCode | None:
        """None when this broker leads the partition at ``current_leader_epoch`` (-1: any) and
        ``replica_id`` (a follower's fetch; -1: a client) is one of its replicas. A broker that
        is no replica gets Kafka's answer: UNKNOWN_LEADER_EPOCH (it may be one soon, as during a
        reassignment), or NOT_LEADER_OR_FOLLOWER when it sent no epoch."""
        leader = self.leading.get((topic, partition))
        if leader is None:
            return ErrorCode.not_leader_or_follower
        if current_leader_epoch >= 0:
            if current_leader_epoch < leader.state.leader_epoch:
                return ErrorCode.fenced_leader_epoch
            if current_leader_epoch > leader.state.leader_epoch:
                return ErrorCode.unknown_leader_epoch
        if replica_id >= 0 and replica_id not in leader.state.replicas:
            return ErrorCode.unknown_leader_epoch if current_leader_epoch >= 0 else ErrorCode.not_leader_or_follower
        return None

    def leader_epoch(self, topic: str, partition: int) -> int:
        leader = self.leading.get((topic, partition))
        return leader.state.leader_epoch if leader is not None else -1

    def high_watermark(self, topic: str, partition: int) -> int:
        leader = self.leading.get((topic, partition))
        return leader.high_watermark if leader is not None else self.follower_high_watermarks.get((topic, partition), 0)

    def check_min_isr(self, topic: str, partition: int) -> ErrorCode | None:
        """NOT_ENOUGH_REPLICAS before an acks=all append: counts the stored ISR, as Kafka does."""
        leader = self.leading[(topic, partition)]
        if len(leader.state.isr) < self.broker.topic_value(topic, "min.insync.replicas"):
            return ErrorCode.not_enough_replicas
        return None

    async def wait_for_isr(self, topic: str, partition: int, end_offset: int, timeout_s: float) -> ErrorCode:
        """acks=all: wait until the high watermark reaches ``end_offset``."""
        leader = self.leading.get((topic, partition))
        if leader is None:
            return ErrorCode.not_leader_or_follower
        if leader.high_watermark < end_offset:
            waiter = asyncio.get_running_loop().create_future()
            leader.waiters.append((end_offset, waiter))
            try:
                error = await asyncio.wait_for(waiter, timeout_s)
            except asyncio.TimeoutError:
                return ErrorCode.request_timed_out
            if error is not ErrorCode.none:
                return error
        if len(leader.maximal_isr) < self.broker.topic_value(topic, "min.insync.replicas"):
            return ErrorCode.not_enough_replicas_after_append
        return ErrorCode.none

    def _fail_waiters(self, leader: LeaderPartition, error: ErrorCode) -> None:
        for _, waiter in leader.waiters:
            if not waiter.done():
                waiter.set_result(error)
        leader.waiters = []

    # ---- leader: followers' fetches and the ISR --------------------------------------------
    def follower_fetch(self, topic: str, partition: int, replica_id: int, fetch_offset: int, log_end_offset: int) -> None:
        """A follower whose read from ``fetch_offset`` succeeded has every offset below it;
        ``log_end_offset`` is the leader's as the read began (Kafka's Replica.updateFetchState).
        Called only after the read, so an offset outside the log (OFFSET_OUT_OF_RANGE) never
        counts as replicated."""
        leader = self.leading.get((topic, partition))
        if leader is None or replica_id not in leader.state.replicas:
            return
        now = monotonic_ms()
        previous = leader.last_fetch.get(replica_id)
        if fetch_offset >= log_end_offset:
            leader.caught_up_ms[replica_id] = now
        elif previous is not None and fetch_offset >= previous[0]:
            leader.caught_up_ms[replica_id] = max(leader.caught_up_ms.get(replica_id, 0), previous[1])
        leader.last_fetch[replica_id] = (log_end_offset, now)
        leader.follower_end_offsets[replica_id] = fetch_offset
        if replica_id not in leader.state.isr and replica_id not in self.store.shutting_down:
            epoch_start = self.epoch_cache((topic, partition), leader.log).start_offset(leader.state.leader_epoch) or 0
            if fetch_offset >= leader.high_watermark and fetch_offset >= epoch_start and leader.pending_isr is None:
                self._change_isr(leader, tuple(leader.state.isr) + (replica_id,))
        self._advance_high_watermark(leader)

    def _advance_high_watermark(self, leader: LeaderPartition) -> None:
        ends = [leader.log.durable_end_offset]  # never past what the leader itself has made durable
        for replica in leader.maximal_isr:
            if replica != self.node_id:
                ends.append(leader.follower_end_offsets.get(replica, -1))
        candidate = min(ends)
        if candidate > leader.high_watermark:
            leader.high_watermark = candidate
            still_waiting = []
            for end_offset, waiter in leader.waiters:
                if end_offset <= candidate:
                    if not waiter.done():
                        waiter.set_result(ErrorCode.none)
                else:
                    still_waiting.append((end_offset, waiter))
            leader.waiters = still_waiting
            self.broker.notify_append(leader.topic, leader.partition)

    def on_local_flush(self, topic: str, partition: int) -> None:
        """The leader's durable offset moved (balanced, durable): the high watermark may follow."""
        leader = self.leading.get((topic, partition))
        if leader is not None:
            self._advance_high_watermark(leader)

    def on_local_append(self, topic: str, partition: int) -> None:
        """A single-replica ISR moves the high watermark with every append."""
        leader = self.leading.get((topic, partition))
        if leader is not None and len(leader.maximal_isr) <= 1:
            self._advance_high_watermark(leader)

    def _change_isr(self, leader: LeaderPartition, isr: tuple[int, ...]) -> None:
        leader.pending_isr = isr

        async def write() -> None:
            old_isr = list(leader.state.isr)
            try:
                stored = await self.store.compare_and_set_partition(leader.topic, leader.partition, leader.state.changed(isr=isr))
                if stored is None:
                    logger.info("%s-%d: ISR change to %s lost a compare-and-swap", leader.topic, leader.partition, list(isr))
                    return
                logger.info("%s-%d: ISR %s -> %s", leader.topic, leader.partition, old_isr, list(isr))
                if self.leading.get((leader.topic, leader.partition)) is leader:
                    self._count_isr_change(leader.state.isr, stored.isr)
                    leader.state = stored
            except Exception:
                logger.exception("%s-%d: ISR change failed", leader.topic, leader.partition)
            finally:
                leader.pending_isr = None
                if self.leading.get((leader.topic, leader.partition)) is leader:
                    self._advance_high_watermark(leader)  # a joiner that did not join holds it no more

        asyncio.create_task(write())

    def _count_isr_change(self, old: tuple[int, ...], new: tuple[int, ...]) -> None:
        if set(new) < set(old):
            self.broker.metrics.isr_shrinks.inc()
        elif set(new) > set(old):
            self.broker.metrics.isr_expands.inc()

    def replica_lags(self):
        """(topic, partition, follower, records behind the log end offset) for partitions led here."""
        for (topic, partition), leader in list(self.leading.items()):
            end = leader.log.log_end_offset
            for replica in leader.state.replicas:
                if replica != self.node_id:
                    yield topic, partition, replica, max(end - leader.follower_end_offsets.get(replica, 0), 0)

    async def _isr_shrink_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.lag_max_ms / 4, 50) / 1000)
            now = monotonic_ms()
            for leader in list(self.leading.values()):
                if leader.pending_isr is not None:
                    continue
                lagging = [r for r in leader.state.isr if r != self.node_id
                           and now - leader.caught_up_ms.get(r, 0) > self.lag_max_ms]
                if lagging:
                    logger.info("%s-%d: replicas %s lag more than %d ms", leader.topic, leader.partition, lagging, self.lag_max_ms)
                    self._change_isr(leader, tuple(r for r in leader.state.isr if r not in lagging))

    def offset_for_leader_epoch(self, topic: str, partition: int, epoch: int) -> tuple[int, int]:
        leader = self.leading[(topic, partition)]
        return self.epoch_cache((topic, partition), leader.log).end_offset_for(epoch, leader.log.log_end_offset)

    # ---- follower: appending the leader's batches ------------------------------------------
    def append_as_follower(self, key: tuple[str, int], records, leader_high_watermark: int) -> int:
        """Append whole batches at the offsets the leader gave them; return the bytes appended.

        Each batch is checked as recovery checks a segment (length, magic, CRC-32C) before it
        is appended, as Kafka's followers do: a batch corrupted on the leader's disk raises
        InvalidBatch (CORRUPT_MESSAGE) after the intact batches before it were appended, so
        corruption stays on the broker where it happened."""
        log = self.broker.logs.get(*key)
        if log is None:
            return 0
        view = memoryview(bytearray(records))
        cache = self.epoch_cache(key, log)
        producer_state = self.broker.producer_state(log)
        pos = appended = 0
        while pos + BATCH_HEADER_SIZE <= len(view):
            info = parse_batch_header(view, pos)
            if info.batch_length < MIN_BATCH_LENGTH or info.magic != 2 or (pos == 0 and info.size > len(view)):
                raise InvalidBatch(ErrorCode.corrupt_message, f"the batch at offset {info.base_offset} has length "
                                   f"{info.batch_length} and magic {info.magic}")
            if pos + info.size > len(view):
                break  # a partial batch after whole ones: fetched again next time
            if not batch_crc_ok(view, info, pos):
                raise InvalidBatch(ErrorCode.corrupt_message, f"the batch at offset {info.base_offset} fails its CRC-32C check")
            batch = view[pos:pos + info.size]
            pos += info.size
            if info.base_offset < log.log_end_offset:
                if info.last_offset >= log.log_end_offset == log.log_start_offset:
                    # An empty log started at the leader's log start, which falls inside this
                    # batch: start at the batch instead (Kafka does the same), the log start
                    # offset then moves up to the leader's again.
                    log.truncate_fully_and_start_at(info.base_offset)
                else:
                    continue  # already here (a retried fetch)
            cache.assign(info.partition_leader_epoch, info.base_offset)
            log.append(batch, info, base_offset=info.base_offset)  # past the log end after a compacted gap
            producer_state.update(info, info.base_offset)
            appended += info.size
        self.follower_high_watermarks[key] = min(leader_high_watermark, log.log_end_offset)
        return appended

    def truncate_fully_and_start_at(self, key: tuple[str, int], offset: int) -> None:
        log = self.broker.logs.get(*key)
        if log is None:
            return
        log.truncate_fully_and_start_at(offset)
        self.epoch_cache(key, log).truncate_from(0)
        self.follower_high_watermarks[key] = offset
        self.broker._producer_states.pop(key, None)

    def follow_log_start(self, key: tuple[str, int], leader_log_start_offset: int) -> None:
        """Move our log start up with the leader's (its retention or DeleteRecords), as Kafka's
        followers do, so a new leader never serves records its predecessor had deleted."""
        log = self.broker.logs.get(*key)
        if log is not None and log.log_start_offset < leader_log_start_offset <= log.log_end_offset:
            log.delete_records_before(leader_log_start_offset)

    def truncate(self, key: tuple[str, int], offset: int) -> None:
        log = self.broker.logs.get(*key)
        if log is None or offset >= log.log_end_offset:
            return
        logger.warning("%s-%d: truncating the divergent tail %d..%d", key[0], key[1], offset, log.log_end_offset)
        log.truncate_to(offset)
        self.epoch_cache(key, log).truncate_from(offset)
        self.broker._producer_states.pop(key, None)  # rebuilt from the log on next use
