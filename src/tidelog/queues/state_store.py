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

A filter's acquisition writes its alternating state batches as one TiledBatches (columns: first
and last offsets, two kinds in turn); the store keeps it so in its state, one entry for all of them
(``PersistedState.batches``), cuts it by its columns as the start offset passes, packs it from its
columns into the records, and makes it StateBatch only where another write changes it or near it
and where the state is read (``state``): what it keeps and writes is what the batches one by one
would be.

Writes are queued and appended in call order by one flusher task; all writes waiting when it runs
go out as one append (one durability wait for many ShareFetch/ShareAcknowledge changes). A write
returns once the injected ``append`` says the records are durable (replicated to the ISR in a
cluster), and only then is the in-memory merged state updated. When an append fails, every write
in it fails and the next write of those share-partitions is a snapshot, which supersedes whatever
part of the failed append reached the log.

Loading: ``replay`` each record of the topic in log order (snapshot replaces, update merges,
tombstone deletes), then ``state(key)``. A record is ignored (``replay`` says why) when its writer
was fenced: an update built on an older snapshot than the latest replayed (its writer had missed a
reset: FENCED_STATE_EPOCH), a snapshot of an older state epoch, or any record written under an
older leader epoch of the topic-partition than the latest one (a deposed leader still writing:
NOT_LEADER_OR_FOLLOWER). A leader that loads a share-partition first writes a snapshot under its
leader epoch (``fence``), which fences every older leader from then on.

Several brokers append to the topic. When others appended since this store last looked (its
append's offset is past what it has seen), the store replays their records first (the
``catch_up`` hook, up to its own append), then its own records as any replayer would: a write
whose record is ignored fails with the error above instead of succeeding (Kafka's share
coordinator refuses such a write), and a ``fence`` snapshot that another broker's records
preceded is rebuilt from the state they left and written again. The topic is not compacted (Kafka's is not either): records
below ``prunable_offset()`` (the oldest latest-snapshot of any share-partition) are redundant and
the owner deletes them (DeleteRecords), as Kafka's share coordinator prunes its partitions.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from itertools import chain, islice, repeat
from operator import eq, gt, itemgetter
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
    TiledBatches,
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
# catch_up(until, end): replay into the store the topic's records it has not seen below ``until``
# (other brokers' appends before its own), then count it as having seen everything below ``end``.
StateCatchUp = Callable[[int, int], Awaitable[None]]
FENCE_ATTEMPTS = 5


class _Superseded(Exception):
    """A fence snapshot preceded by another broker's records of its share-partition: build again."""


@dataclass
class PersistedState:
    """A share-partition's state as the records written so far say. ``batches``: its state batches,
    sorted, not overlapping, neighbours alike joined; in the store's own states (not in what
    ``ShareStateStore.state`` returns) an entry may be a TiledBatches standing for its batches (a
    filter's acquisition, kept as columns: ``expanded`` makes them StateBatch)."""

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


_LAST = itemgetter(1)  # a StateBatch's last offset, a C key for bisect
_FIRST = itemgetter(0)
_STATE = itemgetter(2)


def combine_state_batches(existing: Iterable[StateBatch], new: Iterable[StateBatch], start_offset: int,
                          combined: bool = False) -> list[StateBatch]:
    """``new`` batches laid over ``existing`` ones (later wins where they overlap), without anything
    below ``start_offset``, neighbours with the same state and count joined (Kafka's
    PersisterStateBatchCombiner). The result is sorted and does not overlap. ``new`` may be a
    TiledBatches. ``combined``: ``existing`` is such a result (a list, not changed), with entries
    that may be TiledBatches standing for their batches (the store's own state, ``_onto_items``),
    and so is what it returns; else a list of StateBatch."""
    if combined:
        return _onto_items(existing, new, start_offset)  # type: ignore[arg-type]
    # What is below the start offset goes first, in one pass (the walks below cost far more a batch).
    return _combined(sorted([b for b in existing if b.last_offset >= start_offset]),
                     [b for b in new if b.last_offset >= b.first_offset], start_offset)


def expanded(items: Iterable) -> list[StateBatch]:
    """A state's entries (StateBatch, or TiledBatches standing for theirs) as StateBatch."""
    out: list[StateBatch] = []
    for item in items:
        if type(item) is TiledBatches:
            out.extend(item)
        else:
            out.append(item)
    return out


def _item_first(item) -> int:
    return item[0] if type(item) is StateBatch else item.firsts[0]


def _item_last(item) -> int:
    return item[1] if type(item) is StateBatch else item.lasts[-1]


def _onto_items(items: list, new: Iterable[StateBatch], start_offset: int) -> list:
    """``combine_state_batches`` onto a combined state whose entries may be TiledBatches: what the
    start offset passes goes by a binary search over the entries (a TiledBatches it cuts is cut by
    its columns), an acquisition's TiledBatches after everything becomes an entry (its first batch
    joined with the state's last one where alike: a batch taken off each), and any other write is
    combined over the entries around it, TiledBatches there made StateBatch (the rest untouched:
    their neighbours do not change, so nothing joins them that did not before)."""
    result = items[bisect_right(items, start_offset - 1, key=_item_last):]
    if result and _item_first(result[0]) < start_offset:
        head = result[0]
        result[0] = head._replace(first_offset=start_offset) if type(head) is StateBatch \
            else head.from_offset(start_offset)
    if type(new) is TiledBatches:
        if not new:
            return result
        first = new.firsts[0]
        if first >= start_offset and (not result or _item_last(result[-1]) < first):
            if result and _peeled_joins(result, new[0]):
                result[-1] = result[-1]._replace(last_offset=new.lasts[0])
                new = new.after(1, 0)
            if new:
                result.append(new)
            return result
        new = list(new)
    else:
        new = [b for b in new if b.last_offset >= b.first_offset]
    if not new:
        return result
    if TiledBatches not in set(map(type, result)):
        return _combined(result, new, start_offset, combined=True)
    if new[0].first_offset >= start_offset and _item_last(result[-1]) < new[0].first_offset:
        # (records entering the window after an acquisition's TiledBatches: walked after them, the
        # TiledBatches' last batch taken off where the first one joins it; a copy: None leaves it changed)
        if _peeled_joins(result, new[0]) or type(result[-1]) is StateBatch:
            appended = _joined_in_order(result[:], new, start_offset, combined=True)
        else:
            appended = _joined_in_order([], new, start_offset)
            if appended is not None:
                appended[:0] = result
        if appended is not None:
            return appended
    low = min(map(_FIRST, new))
    high = max(map(_LAST, new))
    i = bisect_right(result, low - 2, key=_item_last)  # the entries from the one holding (or after) low - 1
    j = bisect_left(result, high + 2, key=_item_first)  # up to the one holding high + 1
    around = _combined(expanded(result[i:j]), new, start_offset, combined=True)
    return [*result[:i], *around, *result[j:]]


def _peeled_joins(items: list, batch: StateBatch) -> bool:
    """Whether ``batch`` joins the last batch of ``items`` (right after it, alike); when it does and
    that batch is a TiledBatches' last, it is taken off the TiledBatches as a StateBatch (``items``
    changed: their batches the same)."""
    last = items[-1]
    if type(last) is StateBatch:
        return last[1] + 1 == batch[0] and last[2:] == batch[2:]
    tail = last[-1]
    if tail[1] + 1 != batch[0] or tail[2:] != batch[2:]:
        return False
    if len(last) > 1:
        items[-1:] = [last.before(len(last) - 1), tail]
    else:
        items[-1] = tail
    return True


def _combined(existing: list[StateBatch], new: list[StateBatch], start_offset: int,
              combined: bool = False) -> list[StateBatch]:
    """``combine_state_batches`` over StateBatch only, ``existing`` sorted without what is below the
    start offset (a list it may change), ``new`` without empty batches unless a TiledBatches;
    ``combined``: ``existing`` is joined already."""
    result = existing
    if combined and not new:
        if result and result[0].first_offset < start_offset:
            result[0] = result[0]._replace(first_offset=start_offset)
        return result
    if new and new[0].first_offset >= start_offset and (not result or result[-1].last_offset < new[0].first_offset):
        # The usual case (records entering the window, a filter's acquisition): ``new`` after all of
        # ``existing``; one walk, where the general one below took four.
        appended = _joined_in_order(result, new, start_offset, combined)
        if appended is not None:
            return appended
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


def _joined_in_order(existing: list[StateBatch], new: list[StateBatch], start_offset: int,
                     combined: bool = False) -> list[StateBatch] | None:
    """``existing`` then ``new`` (every batch of ``existing`` before the first of ``new``, all of
    ``existing`` ending at or after ``start_offset``), cut at ``start_offset`` and joined as
    combine_state_batches joins; None when they are not in order (overlapping, unsorted).
    ``combined``: ``existing`` is joined already (only ``new`` is walked)."""
    if existing and existing[0].first_offset < start_offset:
        existing[0] = existing[0]._replace(first_offset=start_offset)
    merged: list[StateBatch] = []
    previous = None
    rest: list[StateBatch] = []
    if combined:
        merged = existing
        previous = existing[-1] if existing else None
        if len(new) > 2 and not any(map(eq, islice(map(_STATE, new), 1, None), map(_STATE, new))) \
                and all(map(gt, islice(map(_FIRST, new), 1, None), map(_LAST, new))):
            # (a filter's acquisition: taken and filtered-out records in turn, a state each, none
            # joining the next: laid on in bulk after the first, which may join the state's last)
            rest = new[1:]
            new = new[:1]
    for batch in new if combined else chain(existing, new):
        if previous is not None:
            if batch.first_offset <= previous.last_offset:
                return None
            if batch.first_offset == previous.last_offset + 1 and batch.delivery_state == previous.delivery_state \
                    and batch.delivery_count == previous.delivery_count \
                    and batch.available_at_ms == previous.available_at_ms:
                previous = merged[-1] = previous._replace(last_offset=batch.last_offset)
                continue
        merged.append(batch)
        previous = batch
    merged += rest
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
    __slots__ = ("key", "build", "future", "fence")

    def __init__(self, key: ShareStateKey, build: Callable, future: asyncio.Future, fence: bool = False) -> None:
        self.key = key
        self.build = build
        self.future = future
        self.fence = fence


def _ignored(record_type: int, value, current: "PersistedState | None") -> ErrorCode | None:
    """Why a replayer ignores this decoded record given the state replayed so far (None: applied)."""
    if value is None:
        return None
    if record_type == SNAPSHOT_RECORD_TYPE:
        if current is None or value.state_epoch > current.state_epoch:
            return None
        if value.state_epoch < current.state_epoch:
            return ErrorCode.fenced_state_epoch
    elif current is None:
        return ErrorCode.invalid_request
    if 0 <= value.leader_epoch < current.leader_epoch:
        return ErrorCode.not_leader_or_follower
    if record_type != SNAPSHOT_RECORD_TYPE and value.snapshot_epoch < current.snapshot_epoch:
        return ErrorCode.fenced_state_epoch
    return None


class ShareStateStore:
    def __init__(self, append: StateAppender, clock_ms: Callable[[], int], updates_per_snapshot: int = 500,
                 catch_up: StateCatchUp | None = None) -> None:
        self._append = append
        self._catch_up = catch_up
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
    @property
    def end_offset(self) -> int | None:
        """The topic offset after the last record this store wrote or replayed (None: none yet)."""
        return self._end_offset

    def state(self, key: ShareStateKey) -> PersistedState | None:
        """A copy of the share-partition's state, its batches StateBatch; None: it has none."""
        state = self._states.get(key)
        return None if state is None else replace(state, batches=expanded(state.batches))

    def has(self, key: ShareStateKey) -> bool:
        """Whether the share-partition has a state (``state(key)`` is not None), without copying it."""
        return key in self._states

    def completion(self, key: ShareStateKey) -> tuple[int, int] | None:
        """(start offset, Acknowledged or Archived records at or after it) of the share-partition's
        state (KIP-1226's lag input for one not loaded), a TiledBatches counted from its columns;
        None: it has none."""
        state = self._states.get(key)
        if state is None:
            return None
        start = state.start_offset
        complete = 0
        for item in state.batches:
            if type(item) is TiledBatches:
                firsts, lasts = item.firsts, item.lasts
                for k, (delivery_state, _count) in enumerate(item.kinds):
                    if delivery_state in (2, 4):  # (the batches of that kind: every other one from k)
                        complete += sum(lasts[k::2]) - sum(map(max, firsts[k::2], repeat(start))) + len(lasts[k::2])
            elif item.delivery_state in (2, 4) and item.last_offset >= start:
                complete += item.last_offset - max(item.first_offset, start) + 1
        return start, complete

    def keys(self, group_id: str | None = None) -> list[ShareStateKey]:
        return [k for k in self._states if group_id is None or k.group_id == group_id]

    def prunable_offset(self) -> int | None:
        """Records below this offset of the topic are no longer needed to load any state; None when
        not known (a state loaded without offsets)."""
        offsets = [state.snapshot_log_offset for state in self._states.values()]
        if any(offset is None for offset in offsets):
            return None
        return min(offsets, default=self._end_offset)  # type: ignore[type-var]

    def replay(self, key: bytes, value: bytes | None, offset: int | None = None) -> ErrorCode | None:
        """Apply one record read back from ``__share_group_state`` (in log order) at ``offset``;
        None, or why it was ignored (its writer was fenced, see the module docstring). A record
        this broker cannot read is skipped with a warning."""
        if offset is not None:
            self._end_offset = max(self._end_offset or 0, offset + 1)
        try:
            record_type, state_key = decode_key(key)
            if value is None:
                self._states.pop(state_key, None)
                return None
            decoded = decode_snapshot_value(value) if record_type == SNAPSHOT_RECORD_TYPE else decode_update_value(value)
            current = self._states.get(state_key)
            ignored = _ignored(record_type, decoded, current)
            if ignored is not None:
                if current is None:
                    logger.warning("__share_group_state: update for %s without a snapshot; skipped", state_key)
                else:  # a reset by another broker, or a deposed leader still writing after a failover
                    logger.info("__share_group_state: %s record of %s (state epoch %d, leader epoch %d, snapshot %d) "
                                "ignored: %s (latest: state epoch %d, leader epoch %d, snapshot %d)",
                                "snapshot" if record_type == SNAPSHOT_RECORD_TYPE else "update", state_key,
                                getattr(decoded, "state_epoch", current.state_epoch), decoded.leader_epoch,
                                decoded.snapshot_epoch, ignored.name, current.state_epoch, current.leader_epoch,
                                current.snapshot_epoch)
                return ignored
            if record_type == SNAPSHOT_RECORD_TYPE:
                self._states[state_key] = PersistedState(
                    decoded.state_epoch, decoded.start_offset,
                    combine_state_batches([], decoded.state_batches, decoded.start_offset), decoded.snapshot_epoch,
                    decoded.leader_epoch, decoded.delivery_complete_count, decoded.create_timestamp_ms,
                    decoded.write_timestamp_ms, 0, offset)
            else:
                self._states[state_key] = _merged(current, decoded.start_offset, decoded.state_batches,
                                                  decoded.delivery_complete_count, decoded.leader_epoch)
        except (StateRecordError, UnicodeDecodeError, ValueError) as e:
            logger.warning("__share_group_state: unreadable record skipped: %s", e)
        return None

    # --- writing ------------------------------------------------------------------------------
    async def initialize(self, key: ShareStateKey, start_offset: int) -> PersistedState:
        """Start (or restart) a share-partition at ``start_offset`` with no in-flight state: a snapshot
        with the next state epoch (0 the first time). Returns the new state."""
        def build(current: PersistedState | None):
            now = self._clock_ms()
            state = PersistedState(0 if current is None else current.state_epoch + 1, start_offset, [],
                                   0 if current is None else current.snapshot_epoch + 1,
                                   -1 if current is None else current.leader_epoch, 0, now, now, 0)
            return SNAPSHOT_RECORD_TYPE, _snapshot_bytes(state), state

        await self._submit(key, build)
        return self.state(key)  # type: ignore[return-value]

    async def write(self, key: ShareStateKey, state_epoch: int, start_offset: int, batches: list[StateBatch],
                    delivery_complete_count: int = -1, leader_epoch: int = -1) -> None:
        """Persist a share-partition's change: its start offset and the state batches that changed.
        Raises KafkaError: FENCED_STATE_EPOCH (state reset since ``state_epoch``), INVALID_REQUEST
        (never initialised), or whatever the append raised."""
        await self.write_future(key, state_epoch, start_offset, batches, delivery_complete_count, leader_epoch)

    def write_future(self, key: ShareStateKey, state_epoch: int, start_offset: int, batches: list[StateBatch],
                     delivery_complete_count: int = -1, leader_epoch: int = -1) -> asyncio.Future:
        """``write`` queued now: the future that is done once the write is durable (or has failed
        with ``write``'s errors). For a caller that finishes its change in a done callback, with no
        task or coroutine of its own (ShareManager._settle)."""
        def build(current: PersistedState | None):
            if current is None:
                raise KafkaError(ErrorCode.invalid_request, f"Share-partition {key} is not initialized.")
            if state_epoch < current.state_epoch:
                raise KafkaError(ErrorCode.fenced_state_epoch,
                                 f"State epoch {state_epoch} of {key} is older than {current.state_epoch}.")
            if 0 <= leader_epoch < current.leader_epoch:
                raise KafkaError(ErrorCode.not_leader_or_follower,
                                 f"Leader epoch {leader_epoch} of {key} is older than {current.leader_epoch}.")
            state = _merged(current, start_offset, batches, delivery_complete_count, leader_epoch)
            if current.updates_since_snapshot >= self.updates_per_snapshot or key in self._needs_snapshot:
                now = self._clock_ms()
                state.snapshot_epoch = current.snapshot_epoch + 1
                state.updates_since_snapshot = 0
                state.create_timestamp_ms = state.write_timestamp_ms = now
                return SNAPSHOT_RECORD_TYPE, _snapshot_bytes(state), state
            update = ShareUpdateValue(current.snapshot_epoch, leader_epoch, start_offset,
                                      batches if type(batches) is TiledBatches else list(batches),  # (its columns)
                                      delivery_complete_count)
            return UPDATE_RECORD_TYPE, encode_update_value(update), state

        return self._queued(key, build)

    async def fence(self, key: ShareStateKey, leader_epoch: int) -> PersistedState:
        """A leader loading the share-partition at ``leader_epoch`` (the topic-partition's): write a
        snapshot of its state under that epoch, so replayers ignore whatever an older leader writes
        after it (and that leader's write fails). A snapshot another broker's records of the
        share-partition preceded is built again from the state they left. Returns the state.
        Raises KafkaError: NOT_LEADER_OR_FOLLOWER (a newer leader fenced it already),
        INVALID_REQUEST (never initialised), COORDINATOR_NOT_AVAILABLE (kept being preceded)."""
        def build(current: PersistedState | None):
            if current is None:
                raise KafkaError(ErrorCode.invalid_request, f"Share-partition {key} is not initialized.")
            if 0 <= leader_epoch < current.leader_epoch:
                raise KafkaError(ErrorCode.not_leader_or_follower, f"Share-partition {key} is fenced by leader epoch "
                                 f"{current.leader_epoch} (this one is {leader_epoch}).")
            now = self._clock_ms()
            state = replace(current, batches=list(current.batches), snapshot_epoch=current.snapshot_epoch + 1,
                            leader_epoch=leader_epoch, updates_since_snapshot=0, create_timestamp_ms=now,
                            write_timestamp_ms=now)
            return SNAPSHOT_RECORD_TYPE, _snapshot_bytes(state), state

        for _ in range(FENCE_ATTEMPTS):
            try:
                await self._submit(key, build, fence=True)
            except _Superseded:
                continue
            return self.state(key)  # type: ignore[return-value]
        raise KafkaError(ErrorCode.coordinator_not_available,
                         f"Share-partition {key}: other brokers kept writing its state while it was loading.")

    def snapshot_next(self, key: ShareStateKey) -> None:
        """The next write of ``key`` is a snapshot (a new snapshot epoch): a share-partition loaded
        here (after a failover) fences the updates of a previous leader still writing."""
        self._needs_snapshot.add(key)

    async def delete(self, key: ShareStateKey) -> None:
        """Forget a share-partition (its group or topic was deleted, or its offsets): a tombstone."""
        await self._submit(key, lambda current: (SNAPSHOT_RECORD_TYPE, None, None))

    async def _submit(self, key: ShareStateKey, build: Callable, fence: bool = False) -> None:
        await self._queued(key, build, fence)

    def _queued(self, key: ShareStateKey, build: Callable, fence: bool = False) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_Write(key, build, future, fence))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return future

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
            # to tell others' records from ours: the states this append's writes were built on (only
            # those: a copy of every share-partition's state an append was O(share-partitions))
            known_end, before = self._end_offset, {key: self._states.get(key) for key in tentative}
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
            if base_offset is not None and self._catch_up is not None and base_offset > (known_end or 0):
                await self._settle_after_others(base_offset, records, accepted, before)
                continue
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


    async def _settle_after_others(self, base_offset: int, records: list[tuple[bytes, bytes | None]],
                                   accepted: list[_Write], before: dict[ShareStateKey, PersistedState]) -> None:
        """Other brokers appended before this append: replay theirs, then ours as any replayer
        would; a write whose record is ignored fails (its writer is fenced), a fence snapshot that
        their records of the same share-partition preceded (its state changed since ``before``,
        the states when the append was built) is built again (_Superseded). A catch-up running
        meanwhile may have replayed some of these records already: replaying them again gives
        the same outcome."""
        try:
            await self._catch_up(base_offset, base_offset + len(records))
        except Exception as e:  # noqa: BLE001 - not known whether these writes count: they fail
            logger.warning("__share_group_state: reading the records before %d failed: %s", base_offset, e)
            self._needs_snapshot.update(w.key for w in accepted)
            for w in accepted:
                if not w.future.done():
                    w.future.set_exception(KafkaError(ErrorCode.coordinator_not_available, str(e)))
            return
        touched = {w.key for w in accepted if self._states.get(w.key) is not before.get(w.key)}
        outcomes: dict[ShareStateKey, ErrorCode | None] = {}
        superseded: set[ShareStateKey] = {w.key for w in accepted if w.fence and w.key in touched}
        for i, (key_bytes, value) in enumerate(records):
            key = decode_key(key_bytes)[1]
            if key in superseded:  # not replayed: the snapshot is built again from what the others left
                self._end_offset = base_offset + i + 1
                continue
            outcome = self.replay(key_bytes, value, base_offset + i)
            outcomes.setdefault(key, outcome)
        for w in accepted:
            if w.future.done():
                continue
            if w.key in superseded:
                w.future.set_exception(_Superseded())
            elif (error := outcomes.get(w.key)) is not None:
                w.future.set_exception(KafkaError(error, f"The state write of share-partition {w.key} was fenced: "
                                                  f"{error.name}"))
            else:
                self._needs_snapshot.discard(w.key)
                w.future.set_result(None)


def _merged(current: PersistedState, start_offset: int, batches: Iterable[StateBatch], delivery_complete_count: int,
            leader_epoch: int) -> PersistedState:
    # Never back: a write prepared before an earlier one that moved it (SharePartition's transitions
    # write the start offset they leave) must not undo that.
    start = current.start_offset if start_offset == -1 else max(start_offset, current.start_offset)
    return PersistedState(
        current.state_epoch, start, combine_state_batches(current.batches, batches, start, combined=True),
        current.snapshot_epoch,
        current.leader_epoch if leader_epoch == -1 else leader_epoch,
        delivery_complete_count, current.create_timestamp_ms, current.write_timestamp_ms,
        current.updates_since_snapshot + 1, current.snapshot_log_offset)


def _snapshot_bytes(state: PersistedState) -> bytes:
    return encode_snapshot_value(ShareSnapshotValue(
        state.snapshot_epoch, state.state_epoch, state.leader_epoch, state.start_offset, state.create_timestamp_ms,
        state.write_timestamp_ms, list(state.batches), state.delivery_complete_count))
