"""Partition: one partition replica hosted by this broker, as leader or follower (Kafka's
``kafka.cluster.Partition``).

It owns the replica's log, its idempotent-producer state, its leader-epoch cache, its high
watermark and, as leader, the ISR's progress and the waiters: acknowledgements waiting for the
high watermark, and fetches waiting for data. Everything that appends goes through it, so
validation, idempotence, leader epochs and the acknowledgement waits exist once:

- ``append_as_leader(records, required_acks)``: one RecordBatch v2, validated as Kafka's
  LogValidator does (``log_validator.py``: size, CRC, records, ``max.message.bytes``, keys on
  compacted topics, CreateTime bounds or LogAppendTime, the topic's ``compression.type``),
  checked against the producer state (a retried duplicate gets its first offsets), stamped with
  the leader epoch and appended. Produce, the HTTP API and the internal topics
  (``__consumer_offsets``, and the coming share-group state, transaction state, dead letters and
  delay mover) all call it.
- ``wait_for_acks([(partition, end_offset)...], required_acks, timeout_s)`` (``waiters.py``):
  acks=1 returns once the leader's log is durable under the topic's durability profile;
  acks=all once the high watermark has passed the end offset and the ISR is still at least
  ``min.insync.replicas``.
- ``read(...)``: whole batches for a consumer (below the high watermark) or a follower (up to
  the log end, durable or not yet: copying overlaps the leader's fsync; the fetch offset counts
  as the follower's position once the read succeeded).
- ``append_as_follower(records, leader_high_watermark)``: the leader's batches at its offsets.

The high watermark is the smallest of the leader's durable end offset and the log end offsets
of the followers in the maximal ISR (the stored ISR plus a replica whose joining is being
written, KIP-497); it only moves forward. A single node is a cluster of one: its ISR is itself,
so the high watermark is its durable end offset.

Roles are set by the ReplicaManager from the metadata store's partition state
(``make_leader``, ``update_state``, ``make_follower``, ``stop_leading``); ISR changes the leader
wants are written by its ``IsrWriter`` (compare-and-swap in the store).
Not thread-safe; the event loop owns it.

Its parts beside it in cluster/: ``partition_config.py`` (what the topic's configs mean for it:
``PartitionConfig``, ``log_config_for``), ``log_validator.py`` (what an append checks, as leader
and as follower) and ``waiters.py`` (the acknowledgement and fetch waits). This module exports
their names the Partition's callers use.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Protocol

from tidelog.clock import monotonic_ms, wall_clock_ms
from tidelog.cluster.log_validator import follower_batches, validate_as_leader
from tidelog.cluster.partition_config import PartitionConfig, log_config_for
from tidelog.cluster.partition_txn import READ_COMMITTED, READ_UNCOMMITTED, PartitionTransactions
from tidelog.cluster.waiters import AckWaiters, ParkedReads, parked_fetch_count, wait_for_acks, wait_for_data
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import parse_batch_header, set_partition_leader_epoch
from tidelog.storage.leader_epoch import LeaderEpochCache
from tidelog.storage.producer_state import ProducerState

if TYPE_CHECKING:
    from tidelog.cluster.metadata import PartitionState
    from tidelog.storage.log import PartitionLog
    from tidelog.storage.manager import LogManager

__all__ = ["AppendResult", "IsrWriter", "Partition", "PartitionConfig", "ReadResult", "log_config_for",
           "parked_fetch_count", "wait_for_acks", "wait_for_data"]

logger = logging.getLogger(__name__)

_NEVER = float("inf")  # a time after every append's (bisect by offset alone)
_new_tuple = tuple.__new__  # a NamedTuple without its Python __new__ (one an append)
BACKLOG_LOG_INTERVAL_MS = 60_000  # a partition's backlog-hold INFO / WARNING lines: at most one of each a minute
APPENDS_REMEMBERED = 10_000  # appends above the high watermark whose times a leader keeps (follower_fetched)


class AppendResult(NamedTuple):
    """Where an appended batch went: ``base_offset`` .. ``end_offset - 1``."""

    base_offset: int
    end_offset: int
    log_append_time: int  # -1 unless the topic stamps LogAppendTime
    log_start_offset: int
    record_count: int
    size_bytes: int
    max_timestamp: int
    duplicate: bool  # an idempotent producer's retry, answered with its first offsets


class ReadResult(NamedTuple):
    error: ErrorCode
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: bytes | memoryview = b""
    aborted_transactions: list | None = None  # read_committed: the AbortedTxn overlapping the read


class IsrWriter(Protocol):
    """Writes the ISR changes a leader wants (the ReplicaManager, through the metadata store)."""

    def may_join_isr(self, replica_id: int, broker_epoch: int = -1) -> bool:
        """False for a broker that may not count as in sync now (in controlled shutdown, or
        ``broker_epoch``, the registration its fetch came from, is not its current one)."""

    def change_isr(self, partition: "Partition", isr: tuple[int, ...]) -> None:
        """Start writing ``isr``; ``partition.pending_isr`` is set until ``isr_written``."""


class Partition:
    """One partition replica hosted here; see the module docstring."""

    def __init__(self, topic: str, index: int, log: "PartitionLog", logs: "LogManager", node_id: int,
                 config: PartitionConfig, isr_writer: IsrWriter | None = None, high_watermark: int = 0) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.logs = logs  # the durability waits
        self.node_id = node_id
        self.config = config
        self.isr_writer = isr_writer
        self.state: "PartitionState | None" = None  # as the metadata store has it, while leader or follower
        self.leading = False
        self.high_watermark = min(high_watermark, log.log_end_offset)
        # Leader side: each follower's position (its last fetch offset), when it last caught up
        # with the log end, and its previous fetch (leader log end offset then, time).
        self.follower_end_offsets: dict[int, int] = {}
        self.caught_up_ms: dict[int, int] = {}
        self.last_fetch: dict[int, tuple[int, int]] = {}
        # (log end offset after, monotonic ms) of each append as leader above the high watermark,
        # and the log end before the first of them: when the leader's log end first passed a
        # follower's position (follower_fetched).
        self.appended: list[tuple[int, int]] = []
        self.appended_from = 0
        # The backlog (leader side, partitions with followers): bytes appended as leader since it
        # began leading, how many of them the high watermark has passed, and (end offset, bytes
        # appended up to it) of the appends above the high watermark; connections whose acks=all
        # Produce took the backlog past ``backlog_max_bytes`` stop reading until it is back
        # within (``backlog_hold``, replica.backlog.max.bytes; 0: no bound).
        self.backlog_max_bytes = 0
        self.appended_bytes = 0
        self.high_watermark_bytes = 0
        self._backlog_ends: collections.deque[tuple[int, int]] = collections.deque()
        self._backlog_holds: list[asyncio.Future] = []
        # For the log lines (backlog_started, backlog_overdue): when the holds now pending began
        # (None: nothing held), and when this partition last said so at INFO / WARNING.
        self.backlog_held_since_ms: int | None = None
        self._backlog_info_ms = self._backlog_warning_ms = -BACKLOG_LOG_INTERVAL_MS
        self.pending_isr: tuple[int, ...] | None = None  # the ISR a compare-and-swap in flight is writing
        # How many times the maximal ISR fell below min.insync.replicas while leading (and whether
        # it is below now): an acks=all wait that began before a shortfall is answered
        # NOT_ENOUGH_REPLICAS_AFTER_APPEND (acks_all_outcome), as Kafka answers every produce
        # pending at that moment, even where the leader's fsync kept the high watermark below it.
        self.isr_shortfalls = 0
        self._isr_short = False
        self.leader_epoch_start_offset = 0
        self.ack_waiters = AckWaiters()  # acks=all appends waiting for the high watermark
        self.parked_reads = ParkedReads()  # consumers' fetches waiting for the high watermark (wait_for_data)
        self.parked_replica_reads = ParkedReads()  # followers' fetches waiting for appends (wait_for_data(replica=True))
        self._producer_state: ProducerState | None = None
        self.transactions = PartitionTransactions(log)  # open transactions, the LSO, the .txnindex files
        self._epoch_cache: LeaderEpochCache | None = None
        self.producer_id_expiration_ms: int | None = None

    def __repr__(self) -> str:
        role = "leader" if self.leading else "follower" if self.state is not None else "replica"
        return f"Partition({self.topic}-{self.index}, {role}, high_watermark={self.high_watermark}, log={self.log!r})"

    # ---- state owned here --------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.index

    @property
    def producer_state(self) -> ProducerState:
        """The idempotent-producer state, loaded (snapshot + replay) on first use."""
        if self._producer_state is None:
            self._producer_state = ProducerState.load(self.log, self.producer_id_expiration_ms)
        return self._producer_state

    @property
    def epoch_cache(self) -> LeaderEpochCache:
        if self._epoch_cache is None:
            self._epoch_cache = LeaderEpochCache(self.log)
        return self._epoch_cache

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch if self.leading and self.state is not None else -1

    @property
    def isr(self) -> tuple[int, ...]:
        return self.state.isr if self.state is not None else ()

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The ISR the high watermark and acks=all count (Kafka's "maximal ISR", KIP-497): the
        stored ISR plus a replica whose joining is being written. Waiting for one replica more
        is safe; committing without one that may be in the ISR a moment later is not. During a
        pending shrink the stored ISR is the larger one, so it stays counted until the write lands."""
        isr = self.isr
        pending = self.pending_isr
        if pending is None:
            return isr
        return isr + tuple(r for r in pending if r not in isr)

    @property
    def last_stable_offset(self) -> int:
        """read_committed's bound: the first offset of the oldest undecided transaction, or the
        high watermark (Kafka's LSO)."""
        return self.transactions.last_stable_offset(self.high_watermark)

    def set_config(self, config: PartitionConfig) -> None:
        self.config = config
        if self.leading:
            self._count_isr_shortfall()

    def _count_isr_shortfall(self) -> None:
        """After the ISR (or min.insync.replicas) changed as leader: count a fall of the maximal
        ISR below min.insync.replicas (``isr_shortfalls``). Only the stored ISR's changes can
        shrink it: a pending write only adds to it (``maximal_isr``)."""
        short = len(self.maximal_isr) < self.config.min_insync_replicas
        if short and not self._isr_short:
            self.isr_shortfalls += 1
        self._isr_short = short

    def leader_error(self, current_leader_epoch: int = -1, replica_id: int = -1) -> ErrorCode | None:
        """None when this replica leads at ``current_leader_epoch`` (-1: any) and ``replica_id``
        (a follower's fetch; -1: a client) is one of its replicas. A broker that is no replica
        gets Kafka's answer: UNKNOWN_LEADER_EPOCH (it may be one soon, as during a
        reassignment), or NOT_LEADER_OR_FOLLOWER when it sent no epoch. While the log directory
        is offline (an I/O error) the replica is offline: KAFKA_STORAGE_ERROR, as Kafka answers."""
        if self.log.log_dir.offline:
            return ErrorCode.kafka_storage_error
        if not self.leading:
            return ErrorCode.not_leader_or_follower
        state = self.state
        if current_leader_epoch >= 0:
            if current_leader_epoch < state.leader_epoch:
                return ErrorCode.fenced_leader_epoch
            if current_leader_epoch > state.leader_epoch:
                return ErrorCode.unknown_leader_epoch
        if replica_id >= 0 and replica_id not in state.replicas:
            return ErrorCode.unknown_leader_epoch if current_leader_epoch >= 0 else ErrorCode.not_leader_or_follower
        return None

    # ---- roles -------------------------------------------------------------------------------
    def make_leader(self, state: "PartitionState", now_ms: int | None = None, log_level: int = logging.INFO) -> None:
        """Lead at ``state``'s leader epoch: the epoch starts at the log end; every replica
        counts as caught up now (it has ``replica.lag.time.max.ms`` to show it). ``log_level``:
        DEBUG in a bulk take-up (the replica manager logs a summary).

        What a follower copied and has not flushed yet (its flushes follow a schedule) goes into
        the next fsync now, and its appends as leader start group fsyncs again; the high
        watermark it had as a follower is cut to what it has made durable (under balanced and
        durable), so consumers read nothing the new leader could lose in a power loss, and it
        moves up with that fsync (docs/storage.md).

        Already leading (a new epoch naming this broker again, its log as it was): the acks=all
        waits go on and complete when the high watermark passes them, or time out, as Kafka's
        delayed produces stay in purgatory across such a bump. Failing them while a later batch
        succeeds would let an idempotent librdkafka producer report the failed batch's records
        delivered without offsets (its implicit acknowledgement)."""
        if self.log.flush_deferred:
            self.log.flush_deferred = False
            self.logs.flush_soon(self.log)
        self.epoch_cache.assign(state.leader_epoch, self.log.log_end_offset)
        self.leader_epoch_start_offset = self.log.log_end_offset
        self.state = state
        self.leading = True
        self.high_watermark = min(self.high_watermark, self.log.durable_end_offset)
        now = now_ms if now_ms is not None else monotonic_ms()
        self.follower_end_offsets = {}
        self.last_fetch = {}
        self.appended = []
        self.appended_from = self.log.log_end_offset
        self._forget_backlog()
        self.caught_up_ms = {r: now for r in state.replicas}
        self.pending_isr = None
        self._count_isr_shortfall()
        self._advance_high_watermark()
        if logger.isEnabledFor(log_level):
            logger.log(log_level, "%s-%d: leader (epoch %d), isr %s, high watermark %d, log end offset %d", self.topic,
                       self.index, state.leader_epoch, list(state.isr), self.high_watermark, self.log.log_end_offset)

    def update_state(self, state: "PartitionState") -> None:
        """A newer state at the same leader epoch (an ISR change written by anyone)."""
        self.state = state
        if self.leading:
            self._count_isr_shortfall()
            self._advance_high_watermark()

    def make_follower(self, state: "PartitionState") -> None:
        if self.leading:
            self.stop_leading()
        self.state = state

    def stop_leading(self, error: ErrorCode = ErrorCode.not_leader_or_follower) -> bool:
        """Give the leadership up: waiting acknowledgements get ``error``, parked fetches wake
        (and answer NOT_LEADER_OR_FOLLOWER). False if it was not leading."""
        if not self.leading:
            return False
        self.leading = False
        self.pending_isr = None
        self.appended = []  # its times matter only while leading
        self._forget_backlog()
        self.ack_waiters.fail(error)
        self.wake_readers()
        logger.info("%s-%d: no longer the leader", self.topic, self.index)
        return True

    def stop(self, error: ErrorCode = ErrorCode.not_leader_or_follower) -> None:
        """Neither lead nor follow any more (the replica goes, or the log directory went offline)."""
        self.stop_leading(error)
        self.state = None
        self.wake_readers()

    # ---- appending as leader -------------------------------------------------------------------
    def append_as_leader(self, records, required_acks: int = -1, now_ms: int | None = None) -> AppendResult:
        """Validate one RecordBatch v2 and append it as leader; see the module docstring.

        ``records`` must be writable (the base offset, leader epoch and LogAppendTime are set in
        place). Raises KafkaError (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS for acks=all with
        too small an ISR, INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER,
        KAFKA_STORAGE_ERROR, ...) or InvalidBatch (bad input: CORRUPT_MESSAGE, INVALID_RECORD,
        INVALID_TIMESTAMP, MESSAGE_TOO_LARGE, ...)."""
        log, state = self.log, self.state
        # leader_error() for a client (any epoch): leading, its log directory online; inline, as
        # this runs for every batch produced.
        if not self.leading or log.log_dir.offline_reason is not None:
            error = self.leader_error()
            if error == ErrorCode.kafka_storage_error:
                raise log.log_dir.error()
            raise KafkaError(error, f"broker {self.node_id} does not lead {self.topic}-{self.index}")
        if required_acks == -1 and len(state.isr) < self.config.min_insync_replicas:
            raise KafkaError(ErrorCode.not_enough_replicas, f"{self.topic}-{self.index}: the ISR {list(state.isr)} is "
                             f"smaller than min.insync.replicas {self.config.min_insync_replicas}")
        now_ms = now_ms if now_ms is not None else wall_clock_ms()
        records, info, append_time = validate_as_leader(records, self.config, now_ms, self.topic, self.index)
        # The producer checks and their bookkeeping see only batches with a producer id (the four
        # calls return at once without one: not made for a plain producer's batch).
        idempotent = info.producer_id >= 0
        producer_state = self.producer_state
        if idempotent:
            self.transactions.check_data(info)  # before idempotence: a zombie's retry is fenced, not a duplicate
            duplicate_offset = producer_state.check(info)
            if duplicate_offset is not None:
                logger.info("duplicate batch from producer %d to %s-%d answered with its offset %d",
                            info.producer_id, self.topic, self.index, duplicate_offset)
                return AppendResult(duplicate_offset, duplicate_offset + info.last_offset_delta + 1, append_time,
                                    self.log.log_start_offset, info.record_count, len(records), info.max_timestamp,
                                    True)
        info = set_partition_leader_epoch(records, info, state.leader_epoch)
        base_offset = log.append(records, info, now_ms)
        size = len(records)
        if len(state.replicas) > 1:
            self._remember_append(size)
        if idempotent:
            producer_state.update(info, base_offset, now_ms)
            self.transactions.on_data(info, base_offset, now_ms)
        # A single replica: the high watermark may move at once (throughput: the log end is
        # durable enough); maximal_isr without the property calls when no ISR change is pending.
        if (len(state.isr) if self.pending_isr is None else len(self.maximal_isr)) <= 1:
            self._advance_high_watermark()
        self.parked_replica_reads.wake()  # followers copy it now; consumers wait for the high watermark
        return _new_tuple(AppendResult, (base_offset, base_offset + info.last_offset_delta + 1, append_time,
                                         log.log_start_offset, info.record_count, size, info.max_timestamp, False))

    # ---- acknowledgements (the waits: cluster/waiters.py) -----------------------------------------
    def acks_all_outcome(self, end_offset: int, shortfalls: int | None = None) -> ErrorCode | None:
        """acks=all's answer for ``end_offset`` now, or None while the high watermark is below it.
        ``shortfalls``: ``isr_shortfalls`` when the wait began (right after the append); a
        shortfall since answers NOT_ENOUGH_REPLICAS_AFTER_APPEND whatever the ISR is now, as Kafka
        does (its high watermark passes every pending produce then). Were it acknowledged once the
        ISR healed, an idempotent librdkafka producer would take that for the acknowledgement of
        its earlier batches answered NOT_ENOUGH_REPLICAS_AFTER_APPEND, and report them delivered
        without offsets (its implicit ack)."""
        if not self.leading:
            return ErrorCode.not_leader_or_follower
        if shortfalls is not None and shortfalls != self.isr_shortfalls:
            return ErrorCode.not_enough_replicas_after_append
        if self.high_watermark < end_offset:
            return None
        state = self.state  # maximal_isr without its property calls when no ISR change is pending
        if len(state.isr if self.pending_isr is None and state is not None else self.maximal_isr) \
                < self.config.min_insync_replicas:
            return ErrorCode.not_enough_replicas_after_append
        return ErrorCode.none

    async def wait_acknowledged(self, end_offset: int, required_acks: int, timeout_s: float) -> ErrorCode:
        """``wait_for_acks`` for one append (an internal writer's)."""
        (error,) = await wait_for_acks([(self, end_offset)], required_acks, timeout_s, self.logs)
        return error

    def fail_ack_waiters(self, error: ErrorCode) -> None:
        """Answer every acknowledgement waiting here with ``error`` (a shutdown)."""
        self.ack_waiters.fail(error)

    def append_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, committed: bool,
                      now_ms: int | None = None) -> AppendResult:
        """Append the COMMIT/ABORT marker of a producer's transaction as leader (WriteTxnMarkers;
        partition_txn.py checks the epochs: INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED).
        The caller waits for acks=all."""
        error = self.leader_error()
        if error is not None:
            if error == ErrorCode.kafka_storage_error:
                raise self.log.log_dir.error()
            raise KafkaError(error, f"broker {self.node_id} does not lead {self.topic}-{self.index}")
        now_ms = now_ms if now_ms is not None else wall_clock_ms()
        records = memoryview(bytearray(self.transactions.marker_batch(
            producer_id, producer_epoch, coordinator_epoch, committed, now_ms, self.state.leader_epoch)))
        base_offset = self.log.append(records, parse_batch_header(records))
        self._remember_append(len(records))
        self.transactions.marker_appended(producer_id, producer_epoch, coordinator_epoch, committed, base_offset, now_ms,
                                          self.high_watermark)
        if len(self.maximal_isr) <= 1:
            self._advance_high_watermark()
        self.wake_readers()
        return AppendResult(base_offset, base_offset + 1, -1, self.log.log_start_offset, 1, len(records), now_ms, False)

    def _remember_append(self, size: int) -> None:
        """When the log end moved, for follower_fetched, and by how many bytes, for the backlog
        (partitions with followers). At most APPENDS_REMEMBERED of each: a follower below those
        falls back to Kafka's rule; the backlog keeps every other end, which can only make it
        seem larger (the high watermark's bytes are then those of an end below it)."""
        if len(self.state.replicas) > 1:
            end = self.log.log_end_offset
            appended = self.appended
            appended.append((end, monotonic_ms()))
            if len(appended) > APPENDS_REMEMBERED:
                self._forget_appends(len(appended) // 2)
            self.appended_bytes += size
            ends = self._backlog_ends
            ends.append((end, self.appended_bytes))
            if len(ends) > APPENDS_REMEMBERED:
                kept = list(ends)
                self._backlog_ends = collections.deque(kept[(len(kept) - 1) % 2 :: 2])  # the last one stays

    def _forget_appends(self, count: int) -> None:
        self.appended_from = self.appended[count - 1][0]
        del self.appended[:count]

    # ---- the high watermark ----------------------------------------------------------------------
    def _advance_high_watermark(self) -> None:
        """Move the high watermark up to what the leader's disk and every in-sync follower hold:
        acknowledgements up to it are answered and consumers parked for data read again
        (followers' fetches are not woken: they read up to the log end, which did not move)."""
        durable_end = self.log.durable_end_offset  # never past what the leader itself has made durable
        if durable_end <= self.high_watermark:  # the minimum below cannot pass it: nothing moves
            return
        ends = [durable_end]
        state = self.state
        for replica in state.isr if self.pending_isr is None and state is not None else self.maximal_isr:
            if replica != self.node_id:
                ends.append(self.follower_end_offsets.get(replica, -1))
        candidate = min(ends)
        if candidate <= self.high_watermark:
            return
        self.high_watermark = candidate
        if self.appended and self.appended[0][0] <= candidate:  # every ISR follower holds those
            self._forget_appends(bisect.bisect_right(self.appended, (candidate, _NEVER)))
        ends = self._backlog_ends
        if ends and ends[0][0] <= candidate:
            while ends and ends[0][0] <= candidate:
                self.high_watermark_bytes = ends.popleft()[1]
            if self._backlog_holds and self.backlog_bytes <= self.backlog_max_bytes:
                self._release_backlog_holds()
        self.transactions.on_high_watermark(candidate)
        self.ack_waiters.release(candidate)
        self.parked_reads.wake()

    # ---- the backlog above the high watermark ------------------------------------------------------
    @property
    def backlog_bytes(self) -> int:
        """Bytes appended as leader that the high watermark has not passed (0 without followers)."""
        return self.appended_bytes - self.high_watermark_bytes

    def backlog_hold(self) -> asyncio.Future | None:
        """After an acks=all append: None while the backlog is within ``backlog_max_bytes``, else
        a future done once it is again (the followers copied, the leader flushed, the ISR
        shrank) or the leadership goes. The Produce's connection reads nothing until then, as
        Kafka reads a connection's next request only once it has answered the one before: a
        pipelining producer cannot run the leader further ahead of its followers."""
        if self.backlog_max_bytes <= 0 or self.backlog_bytes <= self.backlog_max_bytes or not self.leading:
            return None
        future = asyncio.get_running_loop().create_future()
        if self.backlog_held_since_ms is None:
            self._backlog_started()
        self._backlog_holds.append(future)
        return future

    @property
    def backlog_held(self) -> int:
        """Produce requests whose connection this partition's backlog holds now (each holds one
        connection; a pipelining producer's requests appended before the first hold hold the
        same one)."""
        return sum(1 for future in self._backlog_holds if not future.done())

    def _backlog_started(self) -> None:
        """The first hold since the backlog was last within its bound: flow control doing its
        job, so an INFO line at most once per BACKLOG_LOG_INTERVAL_MS a partition."""
        now = monotonic_ms()
        self.backlog_held_since_ms = now
        if now - self._backlog_info_ms >= BACKLOG_LOG_INTERVAL_MS:
            self._backlog_info_ms = now
            logger.info("%s-%d: holding acks=all producers: %d bytes above the high watermark %d (replica.backlog.max.bytes "
                        "%d), ISR %s", self.topic, self.index, self.backlog_bytes, self.high_watermark,
                        self.backlog_max_bytes, list(self.state.isr))

    def backlog_overdue(self, now_ms: int, after_ms: int) -> bool:
        """A WARNING (at most once per BACKLOG_LOG_INTERVAL_MS a partition) when a connection has
        been held longer than ``after_ms`` (replica.lag.time.max.ms: the followers are neither
        catching up nor leaving the ISR); True when it said so. ReplicaManager's ISR loop asks."""
        since = self.backlog_held_since_ms
        if since is None or now_ms - since < after_ms or now_ms - self._backlog_warning_ms < BACKLOG_LOG_INTERVAL_MS:
            return False
        self._backlog_warning_ms = now_ms
        logger.warning("%s-%d: %d acks=all Produce requests have held their connections for %d ms: %d bytes above the "
                       "high watermark %d (replica.backlog.max.bytes %d), ISR %s, follower ends %s", self.topic, self.index,
                       self.backlog_held, now_ms - since, self.backlog_bytes, self.high_watermark,
                       self.backlog_max_bytes, list(self.state.isr), dict(sorted(self.follower_end_offsets.items())))
        return True

    def _release_backlog_holds(self) -> None:
        self.backlog_held_since_ms = None
        holds, self._backlog_holds = self._backlog_holds, []
        for future in holds:
            if not future.done():
                future.set_result(None)

    def _forget_backlog(self) -> None:
        """A leadership begins or ends: count from nothing, and let every held connection read."""
        self.appended_bytes = self.high_watermark_bytes = 0
        self._backlog_ends.clear()
        self._release_backlog_holds()

    def on_local_flush(self) -> None:
        """The log's durable offset moved (balanced, durable): the high watermark may follow,
        which wakes the consumers parked for data (under those profiles an append alone shows
        them nothing)."""
        if self.leading:
            self._advance_high_watermark()

    # ---- reading -------------------------------------------------------------------------------
    def read(self, fetch_offset: int, max_bytes: int, min_one_batch: bool, replica_id: int = -1,
             current_leader_epoch: int = -1, isolation_level: int = READ_UNCOMMITTED,
             as_slice: bool = False, replica_epoch: int = -1) -> ReadResult:
        """Whole batches from ``fetch_offset`` for a consumer (``replica_id`` -1: below the high
        watermark; read_committed below the LSO, with the aborted transactions of the range) or
        a follower (up to the log end, as in Kafka: a follower copies records while the leader's
        own fsync of them runs, and the high watermark waits for both; its position counts once
        the read succeeded, Kafka's Replica.updateFetchState). ``as_slice``: the records as a FileSlice
        (storage/file_slice.py) for sendfile. ``replica_epoch``: the follower's broker epoch
        (Fetch v15+ ReplicaState; -1 unknown), checked before it joins the ISR (KIP-903). Errors
        are returned, not raised."""
        error = self.leader_error(current_leader_epoch, replica_id)
        if error is not None:
            return ReadResult(error)
        log = self.log
        high_watermark = self.high_watermark
        # A consumer's LSO once (nothing below moves it); a follower's after its fetch counted,
        # which may advance the high watermark.
        last_stable_offset = self.transactions.last_stable_offset(high_watermark) if replica_id < 0 else -1
        log_end_offset = log.log_end_offset
        max_offset = high_watermark if replica_id < 0 else log_end_offset
        committed_only = replica_id < 0 and isolation_level == READ_COMMITTED
        if committed_only:
            max_offset = last_stable_offset
        try:
            records = log.read(fetch_offset, max_bytes, min_one_batch, max_offset, as_slice)
        except KafkaError as e:
            if e.error_code != ErrorCode.offset_out_of_range and not log.log_dir.offline:  # offline: logged once
                logger.error("fetch from %s-%d failed: %s", self.topic, self.index, e)
            return ReadResult(e.error_code, high_watermark, self.last_stable_offset, log.log_start_offset)
        if replica_id >= 0:
            self.follower_fetched(replica_id, fetch_offset, log_end_offset, replica_epoch=replica_epoch)
            high_watermark = self.high_watermark
            last_stable_offset = self.transactions.last_stable_offset(high_watermark)
        aborted = self.transactions.aborted_transactions(fetch_offset, max_offset) if committed_only and records else None
        return ReadResult(ErrorCode.none, high_watermark, last_stable_offset, log.log_start_offset, records, aborted)

    def wake_readers(self) -> None:
        """Every parked fetch, consumer's or follower's, reads again (a leadership change, a
        transaction marker, a follower's append)."""
        self.parked_reads.wake()
        self.parked_replica_reads.wake()

    # ---- leader: followers and the ISR ----------------------------------------------------------
    def follower_fetched(self, replica_id: int, fetch_offset: int, log_end_offset: int, now_ms: int | None = None,
                         replica_epoch: int = -1) -> None:
        """A follower whose read from ``fetch_offset`` succeeded has every offset below it;
        ``log_end_offset`` is the leader's as the read began. One that has reached the high
        watermark and the current epoch's start joins the ISR, if its broker may
        (``IsrWriter.may_join_isr``: with ``replica_epoch``, the broker epoch its fetch carried,
        only as that broker's current registration, KIP-903).

        It was caught up (in sync, for ``lagging_replicas``) when the leader's log end last was
        at or below its position: now if it holds the whole log, else just before the first
        append past its position. So its lag is a time, however many appends behind it is:
        pipelined Produce requests run the log end ahead of followers that copy a partition's
        fetch size a round trip, and a follower with a steady backlog stays in sync, while one
        that copies less than is appended falls ever further behind and leaves. Kafka's rule
        (caught up as of its previous fetch if it has reached the log end of then) is the
        fallback below the appends still remembered."""
        if not self.leading or replica_id not in self.state.replicas:
            return
        now = now_ms if now_ms is not None else monotonic_ms()
        previous = self.last_fetch.get(replica_id)
        caught_up = self.caught_up_ms.get(replica_id, 0)
        if fetch_offset >= log_end_offset:
            caught_up = now
        else:
            if previous is not None and fetch_offset >= previous[0]:
                caught_up = max(caught_up, previous[1])
            appended = self.appended
            first_past = bisect.bisect_right(appended, (fetch_offset, _NEVER))
            if first_past < len(appended) and fetch_offset >= self.appended_from:
                caught_up = max(caught_up, appended[first_past][1])
        self.caught_up_ms[replica_id] = caught_up
        self.last_fetch[replica_id] = (log_end_offset, now)
        self.follower_end_offsets[replica_id] = fetch_offset
        if (replica_id not in self.state.isr and self.pending_isr is None and fetch_offset >= self.high_watermark
                and fetch_offset >= self.leader_epoch_start_offset and self.isr_writer is not None
                and self.isr_writer.may_join_isr(replica_id, replica_epoch)):
            self.isr_writer.change_isr(self, tuple(self.state.isr) + (replica_id,))
        self._advance_high_watermark()

    def lagging_replicas(self, now_ms: int, lag_max_ms: int) -> list[int]:
        """ISR members (other than this broker) not caught up with the log end for ``lag_max_ms``."""
        if not self.leading or self.pending_isr is not None:
            return []
        return [r for r in self.state.isr if r != self.node_id and now_ms - self.caught_up_ms.get(r, 0) > lag_max_ms]

    def isr_written(self, stored: "PartitionState | None") -> None:
        """The ISR write started by the IsrWriter finished (``stored``: the new state, None if
        it lost a compare-and-swap or failed)."""
        self.pending_isr = None
        if stored is not None and self.leading and stored.leader_epoch == self.state.leader_epoch:
            self.state = stored
        if self.leading:
            self._count_isr_shortfall()
            self._advance_high_watermark()  # a joiner that did not join holds it no more

    def replica_lags(self) -> Iterable[tuple[int, int]]:
        """(follower, records it is behind the log end offset), as leader."""
        if not self.leading:
            return
        end = self.log.log_end_offset
        for replica in self.state.replicas:
            if replica != self.node_id:
                yield replica, max(end - self.follower_end_offsets.get(replica, 0), 0)

    def offset_for_leader_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch``, where it ends here), or (-1, -1) (OffsetForLeaderEpoch)."""
        return self.epoch_cache.end_offset_for(epoch, self.log.log_end_offset)

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords as leader: move the log start up to ``offset`` (-1: the high watermark),
        never past the high watermark; return the new log start offset."""
        if offset == -1:
            offset = self.high_watermark
        if offset < 0:
            raise KafkaError(ErrorCode.offset_out_of_range, f"The offset {offset} for partition {self.topic}-{self.index} is not valid")
        if offset > self.high_watermark:
            raise KafkaError(
                ErrorCode.offset_out_of_range,
                f"Cannot increment the log start offset to {offset} of partition {self.topic}-{self.index} since it is "
                f"larger than the high watermark {self.high_watermark}",
            )
        return self.log.delete_records_before(offset)

    # ---- follower ------------------------------------------------------------------------------
    def append_as_follower(self, records, leader_high_watermark: int) -> int:
        """Append whole batches at the offsets the leader gave them; return the bytes appended.

        Each batch is checked as recovery checks a segment (length, magic, CRC-32C) before it
        is appended, as Kafka's followers do: a batch corrupted on the leader's disk raises
        InvalidBatch (CORRUPT_MESSAGE) after the intact batches before it were appended, so
        corruption stays on the broker where it happened."""
        log = self.log
        cache = self.epoch_cache
        producer_state = self.producer_state
        appended = 0
        for batch, info in follower_batches(records):
            if info.base_offset < log.log_end_offset:
                if info.last_offset >= log.log_end_offset == log.log_start_offset:
                    # An empty log started at the leader's log start, which falls inside this
                    # batch: start at the batch instead (Kafka does the same), the log start
                    # offset then moves up to the leader's again.
                    log.truncate_fully_and_start_at(info.base_offset)
                    self.transactions.reset()
                else:
                    continue  # already here (a retried fetch)
            cache.assign(info.partition_leader_epoch, info.base_offset)
            log.append(batch, info, base_offset=info.base_offset)  # past the log end after a compacted gap
            producer_state.update(info, info.base_offset)
            self.transactions.apply(batch, info)
            appended += info.size
        self.set_follower_high_watermark(leader_high_watermark)
        if appended:
            self.wake_readers()
        return appended

    def set_follower_high_watermark(self, leader_high_watermark: int) -> None:
        self.high_watermark = min(leader_high_watermark, self.log.log_end_offset)
        self.transactions.on_high_watermark(self.high_watermark)

    def follow_log_start(self, leader_log_start_offset: int) -> None:
        """Move our log start up with the leader's (its retention or DeleteRecords), as Kafka's
        followers do, so a new leader never serves records its predecessor had deleted."""
        log = self.log
        if log.log_start_offset < leader_log_start_offset <= log.log_end_offset:
            log.delete_records_before(leader_log_start_offset)

    def truncate_to(self, offset: int) -> None:
        """Drop a divergent tail from ``offset`` on (a follower's truncation)."""
        log = self.log
        if offset >= log.log_end_offset:
            return
        logger.warning("%s-%d: truncating the divergent tail %d..%d", self.topic, self.index, offset, log.log_end_offset)
        log.truncate_to(offset)
        self.epoch_cache.truncate_from(offset)
        self.high_watermark = min(self.high_watermark, log.log_end_offset)
        self._producer_state = None  # rebuilt from the log on next use
        self.transactions.reset()

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Start again, empty, at ``offset`` (below the leader's log start: nothing here continues)."""
        self.log.truncate_fully_and_start_at(offset)
        self.epoch_cache.truncate_from(0)
        self.high_watermark = offset
        self._producer_state = None
        self.transactions.reset()

    # ---- upkeep --------------------------------------------------------------------------------
    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget idempotent producers idle for ``expiration_ms``; how many went."""
        self.transactions.remove_expired(now_ms, expiration_ms)
        if self._producer_state is None:
            return 0
        return self._producer_state.remove_expired(now_ms, expiration_ms, self.transactions.holds_open_transaction)

    @property
    def producer_count(self) -> int:
        return len(self._producer_state.producers) if self._producer_state is not None else 0

    def active_producers(self) -> dict[int, tuple[int, int]]:
        """For the log cleaner: each idempotent producer's last batch (offset of its last record,
        epoch), which must stay for its sequence numbers to go on."""
        producers = {}
        for producer_id, entry in self.producer_state.producers.items():
            if entry.batches:
                _, _, base_offset, last_offset_delta = entry.batches[-1]
                producers[producer_id] = (base_offset + last_offset_delta, entry.epoch)
        return producers

    def producer_state_snapshot(self) -> tuple[Path, str] | None:
        """At a clean shutdown: the producer state's snapshot (file, content) to write, so the
        next start replays little; None if it was never loaded."""
        if self._producer_state is not None and not self.log.closed:
            return self._producer_state.snapshot(self.log.dir, self.log.log_end_offset)
        return None
