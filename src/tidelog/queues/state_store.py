"""Durable share-partition state: Kafka's share coordinator, in-process, over ``__share_group_state``.

Each share-partition (group, topic id, partition) has a persisted state: a state epoch, a start
offset and the state batches of its in-flight window (delivery state 0 Available, 2 Acknowledged,
4 Archived, and delivery counts), as records of ``state_records.py``. A write that changes a few
batches is a ShareUpdate record; after ``updates_per_snapshot`` updates
(``share.coordinator.snapshot.update.records.per.snapshot``, Kafka's default 500) the next write is
a ShareSnapshot of the whole merged state, so replay reads one snapshot and at most that many
updates per share-partition. Initialising (or resetting) a share-partition writes a snapshot with
a new state epoch; a write from a share-partition loaded under an older state epoch fails with
FENCED_STATE_EPOCH.

Writes are queued and appended in call order by one flusher task; all writes waiting when it runs
go out as one append (one durability wait for many ShareFetch/ShareAcknowledge changes). A write
returns once the injected ``append`` says the records are durable (replicated to the ISR in a
cluster), and only then is the in-memory merged state updated. When an append fails, every write
in it fails and the next write of those share-partitions is a snapshot, which supersedes whatever
part of the failed append reached the log.

Loading: ``replay`` each record of the topic in log order (snapshot replaces, update merges,
tombstone deletes; an update built on an older snapshot than the latest replayed is ignored: its
writer had missed a reset or a failover), then ``state(key)``. The topic is not compacted (Kafka's is not either): records
below ``prunable_offset()`` (the oldest latest-snapshot of any share-partition) are redundant and
the owner deletes them (DeleteRecords), as Kafka's share coordinator prunes its partitions.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable, Iterable

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import SHARE_GROUP_STATE
from tidelog.queues.state_records import (
    SNAPSHOT_RECORD_TYPE,
    UPDATE_RECORD_TYPE,
    ShareSnapshotValue,
    ShareStateKey,
    ShareUpdateValue,
    StateBatch,
    StateRecordError,
    decode_key,
    decode_snapshot_value,
    decode_update_value,
    encode_key,
    encode_snapshot_value,
    encode_update_value,
)

logger = logging.getLogger(__name__)

TOPIC = SHARE_GROUP_STATE
# Kafka's defaults are 50 partitions spread over brokers; one partition is enough for one coordinator here.
PARTITIONS = 1
TOPIC_CONFIGS = {"cleanup.policy": "delete", "segment.bytes": str(100 * 1024 * 1024), "retention.ms": "-1"}

# append(records) -> the offset of the first record, once durable. Records are (key, value) pairs, a None
# value is a tombstone; they get consecutive offsets. Raises KafkaError (NOT_COORDINATOR, REQUEST_TIMED_OUT,
# KAFKA_STORAGE_ERROR, ...) when they are not durable.
StateAppender = Callable[[list[tuple[bytes, bytes | None]]], Awaitable[int]]


@dataclass
class PersistedState:
    """A share-partition's state as the records written so far say."""

    state_epoch: int
    start_offset: int
    batches: list[StateBatch] = field(default_factory=list)
    snapshot_epoch: int = 0
    leader_epoch: int = -1
    delivery_complete_count: int = -1
    create_timestamp_ms: int = -1
    write_timestamp_ms: int = -1
    updates_since_snapshot: int = 0
    snapshot_log_offset: int | None = None  # where its latest snapshot is in the topic


def _first_offset(batch: StateBatch) -> int:
    return batch.first_offset


def combine_state_batches(existing: Iterable[StateBatch], new: Iterable[StateBatch], start_offset: int) -> list[StateBatch]:
    """``new`` batches laid over ``existing`` ones (later wins where they overlap), without anything
    below ``start_offset``, neighbours with the same state and count joined (Kafka's
    PersisterStateBatchCombiner). The result is sorted and does not overlap."""
    result: list[StateBatch] = sorted(existing)
    new = [b for b in new if b.last_offset >= b.first_offset]
    if all(a.last_offset < b.first_offset for a, b in zip(new, new[1:])):
        result = _overlay(result, new)  # the usual case (a transition's batches): one walk
        new = []
    for batch in new:
        if batch.last_offset < batch.first_offset:
            continue
        i = bisect_left(result, batch.first_offset, key=_first_offset)  # no list of firsts per batch: O(n log n)
        if i > 0 and result[i - 1].last_offset >= batch.first_offset:
            i -= 1
        j = i
        pieces: list[StateBatch] = []
        while j < len(result) and result[j].first_offset <= batch.last_offset:
            old = result[j]
            if old.first_offset < batch.first_offset:
                pieces.append(old._replace(last_offset=batch.first_offset - 1))
            j += 1
        pieces.append(batch)
        if j > i and result[j - 1].last_offset > batch.last_offset:
            pieces.append(result[j - 1]._replace(first_offset=batch.last_offset + 1))
        result[i:j] = pieces
    merged: list[StateBatch] = []
    for b in result:
        if b.last_offset < start_offset:
            continue
        if b.first_offset < start_offset:
            b = b._replace(first_offset=start_offset)
        if merged and merged[-1].last_offset + 1 == b.first_offset and merged[-1][2:] == b[2:]:
            merged[-1] = merged[-1]._replace(last_offset=b.last_offset)
        else:
            merged.append(b)
    return merged


def _overlay(existing: list[StateBatch], new: list[StateBatch]) -> list[StateBatch]:
    """combine_state_batches' overlay in one walk, both lists sorted and not overlapping."""
    out: list[StateBatch] = []
    i = 0
    for batch in new:
        while i < len(existing) and existing[i].last_offset < batch.first_offset:
            out.append(existing[i])
            i += 1
        while i < len(existing) and existing[i].first_offset <= batch.last_offset:
            old = existing[i]
            if old.first_offset < batch.first_offset:
                out.append(old._replace(last_offset=batch.first_offset - 1))
            if old.last_offset > batch.last_offset:
                existing[i] = old._replace(first_offset=batch.last_offset + 1)  # the rest may meet the next one
                break
            i += 1
        out.append(batch)
    out.extend(existing[i:])
    return out


class _Write:
    __slots__ = ("key", "build", "future")

    def __init__(self, key: ShareStateKey, build: Callable, future: asyncio.Future) -> None:
        self.key = key
        self.build = build
        self.future = future


class ShareStateStore:
    def __init__(self, append: StateAppender, clock_ms: Callable[[], int], updates_per_snapshot: int = 500) -> None:
        self._append = append
        self._clock_ms = clock_ms
        self.updates_per_snapshot = updates_per_snapshot
        self._states: dict[ShareStateKey, PersistedState] = {}
        self._needs_snapshot: set[ShareStateKey] = set()
        self._queue: list[_Write] = []
        self._flusher: asyncio.Task | None = None
        self.records_written = 0
        self.appends = 0
        self._end_offset: int | None = None  # after the last record written or replayed

    # --- reading ------------------------------------------------------------------------------
    def state(self, key: ShareStateKey) -> PersistedState | None:
        state = self._states.get(key)
        return None if state is None else replace(state, batches=list(state.batches))

    def keys(self, group_id: str | None = None) -> list[ShareStateKey]:
        return [k for k in self._states if group_id is None or k.group_id == group_id]

    def prunable_offset(self) -> int | None:
        """Records below this offset of the topic are no longer needed to load any state; None when
        not known (a state loaded without offsets)."""
        offsets = [state.snapshot_log_offset for state in self._states.values()]
        if any(offset is None for offset in offsets):
            return None
        return min(offsets, default=self._end_offset)  # type: ignore[type-var]

    def replay(self, key: bytes, value: bytes | None, offset: int | None = None) -> None:
        """Apply one record read back from ``__share_group_state`` (in log order) at ``offset``. A
        record this broker cannot read is skipped with a warning."""
        if offset is not None:
            self._end_offset = offset + 1
        try:
            record_type, state_key = decode_key(key)
            if value is None:
                self._states.pop(state_key, None)
                return
            if record_type == SNAPSHOT_RECORD_TYPE:
                snapshot = decode_snapshot_value(value)
                self._states[state_key] = PersistedState(
                    snapshot.state_epoch, snapshot.start_offset,
                    combine_state_batches([], snapshot.state_batches, snapshot.start_offset), snapshot.snapshot_epoch,
                    snapshot.leader_epoch, snapshot.delivery_complete_count, snapshot.create_timestamp_ms,
                    snapshot.write_timestamp_ms, 0, offset)
            else:
                update = decode_update_value(value)
                current = self._states.get(state_key)
                if current is None:
                    logger.warning("__share_group_state: update for %s without a snapshot; skipped", state_key)
                    return
                if update.snapshot_epoch < current.snapshot_epoch:
                    # its writer had not seen the latest snapshot (a reset by another broker, or an old
                    # leader still writing after a failover): it is fenced, as a stale state epoch is
                    logger.info("__share_group_state: update for %s on snapshot %d, older than %d; ignored",
                                state_key, update.snapshot_epoch, current.snapshot_epoch)
                    return
                self._states[state_key] = _merged(current, update.start_offset, update.state_batches,
                                                  update.delivery_complete_count, update.leader_epoch)
        except (StateRecordError, UnicodeDecodeError, ValueError) as e:
            logger.warning("__share_group_state: unreadable record skipped: %s", e)

    # --- writing ------------------------------------------------------------------------------
    async def initialize(self, key: ShareStateKey, start_offset: int) -> PersistedState:
        """Start (or restart) a share-partition at ``start_offset`` with no in-flight state: a snapshot
        with the next state epoch (0 the first time). Returns the new state."""
        def build(current: PersistedState | None):
            now = self._clock_ms()
            state = PersistedState(0 if current is None else current.state_epoch + 1, start_offset, [],
                                   0 if current is None else current.snapshot_epoch + 1, -1, 0, now, now, 0)
            return SNAPSHOT_RECORD_TYPE, _snapshot_bytes(state), state

        await self._submit(key, build)
        return self.state(key)  # type: ignore[return-value]

    async def write(self, key: ShareStateKey, state_epoch: int, start_offset: int, batches: list[StateBatch],
                    delivery_complete_count: int = -1, leader_epoch: int = -1) -> None:
        """Persist a share-partition's change: its start offset and the state batches that changed.
        Raises KafkaError: FENCED_STATE_EPOCH (state reset since ``state_epoch``), INVALID_REQUEST
        (never initialised), or whatever the append raised."""
        def build(current: PersistedState | None):
            if current is None:
                raise KafkaError(ErrorCode.invalid_request, f"Share-partition {key} is not initialized.")
            if state_epoch < current.state_epoch:
                raise KafkaError(ErrorCode.fenced_state_epoch,
                                 f"State epoch {state_epoch} of {key} is older than {current.state_epoch}.")
            state = _merged(current, start_offset, batches, delivery_complete_count, leader_epoch)
            if current.updates_since_snapshot >= self.updates_per_snapshot or key in self._needs_snapshot:
                now = self._clock_ms()
                state.snapshot_epoch = current.snapshot_epoch + 1
                state.updates_since_snapshot = 0
                state.create_timestamp_ms = state.write_timestamp_ms = now
                return SNAPSHOT_RECORD_TYPE, _snapshot_bytes(state), state
            update = ShareUpdateValue(current.snapshot_epoch, leader_epoch, start_offset, list(batches),
                                      delivery_complete_count)
            return UPDATE_RECORD_TYPE, encode_update_value(update), state

        await self._submit(key, build)

    def snapshot_next(self, key: ShareStateKey) -> None:
        """The next write of ``key`` is a snapshot (a new snapshot epoch): a share-partition loaded
        here (after a failover) fences the updates of a previous leader still writing."""
        self._needs_snapshot.add(key)

    async def delete(self, key: ShareStateKey) -> None:
        """Forget a share-partition (its group or topic was deleted, or its offsets): a tombstone."""
        await self._submit(key, lambda current: (SNAPSHOT_RECORD_TYPE, None, None))

    async def _submit(self, key: ShareStateKey, build: Callable) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(key, build, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._queue:
            writes, self._queue = self._queue, []
            tentative: dict[ShareStateKey, PersistedState | None] = {}
            records: list[tuple[bytes, bytes | None]] = []
            snapshot_positions: dict[ShareStateKey, int] = {}
            accepted: list[_Write] = []
            for w in writes:
                current = tentative[w.key] if w.key in tentative else self._states.get(w.key)
                try:
                    record_type, value, state = w.build(current)
                except Exception as e:  # noqa: BLE001 - the writer's own error (fenced, not initialised)
                    w.future.set_exception(e)
                    continue
                if record_type == SNAPSHOT_RECORD_TYPE and state is not None:
                    snapshot_positions[w.key] = len(records)
                records.append((encode_key(record_type, w.key), value))
                tentative[w.key] = state
                accepted.append(w)
            if not records:
                continue
            try:
                base_offset = await self._append(records)
            except Exception as e:  # noqa: BLE001 - every write of this append failed with it
                logger.warning("__share_group_state: append of %d records failed: %s", len(records), e)
                self._needs_snapshot.update(tentative)
                for w in accepted:
                    if not w.future.done():
                        w.future.set_exception(e)
                continue
            self.appends += 1
            self.records_written += len(records)
            if base_offset is not None:
                self._end_offset = base_offset + len(records)
            for key, state in tentative.items():
                self._needs_snapshot.discard(key)
                if state is not None and key in snapshot_positions:
                    state.snapshot_log_offset = None if base_offset is None else base_offset + snapshot_positions[key]
                if state is None:
                    self._states.pop(key, None)
                else:
                    self._states[key] = state
            for w in accepted:
                if not w.future.done():
                    w.future.set_result(None)


def _merged(current: PersistedState, start_offset: int, batches: Iterable[StateBatch], delivery_complete_count: int,
            leader_epoch: int) -> PersistedState:
    start = current.start_offset if start_offset == -1 else start_offset
    return PersistedState(
        current.state_epoch, start, combine_state_batches(current.batches, batches, start), current.snapshot_epoch,
        current.leader_epoch if leader_epoch == -1 else leader_epoch,
        delivery_complete_count, current.create_timestamp_ms, current.write_timestamp_ms,
        current.updates_since_snapshot + 1, current.snapshot_log_offset)


def _snapshot_bytes(state: PersistedState) -> bytes:
    return encode_snapshot_value(ShareSnapshotValue(
        state.snapshot_epoch, state.state_epoch, state.leader_epoch, state.start_offset, state.create_timestamp_ms,
        state.write_timestamp_ms, list(state.batches), state.delivery_complete_count))
