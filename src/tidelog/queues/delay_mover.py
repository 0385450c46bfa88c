"""The delay mover (issue 14, delayed delivery for every consumer): a topic whose config
``tidelog.delay.target.topic`` names a target is a *delay topic*; each of its records is appended to
the target when due (its ``tidelog-deliver-at`` / ``tidelog-delay-ms`` header, else its timestamp
plus ``tidelog.delay.ms``), keeping its key, value and headers and adding ``tidelog-origin-topic``,
``tidelog-origin-partition`` and ``tidelog-origin-offset``. So any Kafka consumer of the target,
classic groups included, sees it then. Partition p of the delay topic moves to partition
p mod (target partitions).

Exactly once, across crashes and failovers:

- The mover works in **rounds**. Its state is (T, O): every record with offset < O and due <= T
  has been moved, no other. A round to (T', O') (T' the time now, O' how far the log was read)
  moves exactly the records with offset < O' and due <= T' that are not in (T, O), in (due,
  offset) order. The log below its high watermark is the same on every replica, so a round is the
  same list wherever it is computed.
- It appends them as an idempotent producer, in batches whose last record carries
  ``tidelog-delay-round: topic,partition,T,O,T',O',i,n`` (i the index in the round of that record,
  n the round's size), with acks=all. The target partition may be led by this broker or by another
  (``DelayTarget``: the Partition here, else Produce and Fetch to its leader wherever it is now);
  the target's replicas keep these batches and their producer state.
- The producer id belongs to the delay partition (``mover_producer_id``: from its topic id and
  index, the same on every broker; epoch 0), so the target's sequence check is a compare-and-set
  on the mover's progress: a mover appends sequence s+1 only after it appended, or found in the
  target, the batch ending at s.
- ``recover`` (on start, after a crash, on the delay partition's new leader, after a divergence)
  asks the target partition for the mover's last batch (``DelayTarget.last_batch``: from the
  producer state of the Partition here, or DescribeProducers at the leader elsewhere for its last
  sequence and time, then ListOffsets by that time and a Fetch from there to the batch), and goes
  on from there: the round's remaining records (i+1..n-1) first, then new rounds, at the next
  sequence. While that batch is not below the target's high watermark yet (a deposed leader's
  last append, not yet replicated), recovery waits (OFFSET_NOT_AVAILABLE, retried). A locally kept
  copy of (T, O), written after every round that took records (and at most every
  ``COPY_EVERY_MS`` after rounds that took none) with the sequence its next batch was to have, is
  used where it continues that batch (the same sequence: rounds that moved nothing since); a copy
  from an earlier leadership is not taken over the target's batch (its time may be ahead of the
  target's by a clock skew between brokers, and records moved since by another leader's mover
  would be moved again).
- The progress is also committed, replicated, before each batch and at a round's end (and once a
  minute while idle):
  the delay partition's offset in the group ``PROGRESS_GROUP`` of ``__consumer_offsets``
  (``DelayProgress``; metadata: the round as in its header and the next sequence, of the progress
  before the batch, whose sequence is the batch's, and ``after``: the progress after it; and after
  a round's last batch, its end). Where the target has no batch of the mover (deleted by retention
  or DeleteRecords while its producer state keeps the next sequence; or a target whose state lost
  the mover), the target's next sequence says which of the two holds: at or past the batch's end,
  the one after it (the batch was appended: a broker dying between the target's acknowledgement
  and a commit after it would have left the progress one batch behind), else the one before. ``recover`` goes on from that
  committed progress or the local copy, whichever continues the target's sequence (else the
  further one, and a WARNING says what is moved again). A failed
  commit does not stop the moves (the next carries the newer progress). A commit the coordinator
  refuses as a deposed leader's (FENCED_LEADER_EPOCH: the progress store sends the delay
  partition's leader epoch, groups/offset_manager.py fences the group by it) stops the mover
  (``fenced``): it appends and commits no more. After an upgrade from the version whose movers
  had allocated producer ids, the first mover finds the old one's last round header among the
  target's other producers' last batches (``earlier_last_batches``, where the target is led
  here).
- Should a deposed mover still append after that (cut off from the metadata store, it has not
  learnt that it was deposed), the sequence check refuses one of the two movers' batches
  (OUT_OF_ORDER_SEQUENCE_NUMBER), or answers a batch of the same sequence and size as a duplicate
  of the other's; so the first append after ``recover`` is read back and compared (``MoverDiverged``
  when it is not this mover's). Either way the owner starts the mover again and ``recover`` finds
  the other batch.

Where it looks for due records: ``DelayIndex`` (delay_index.py), an on-disk index by due time of
the records with offset < O and due > T; records read since the last round (offset >= O) are in
memory until the next round takes them (bounded by one read). A new leader rebuilds the index from
the log once (only records due after T). Memory follows one read and one round (a round is cut
at ``max_round_records`` records, its T' the due time of the last one taken), never the number
of delayed records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from typing import Awaitable, Callable, NamedTuple, Protocol

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, build_batch, iter_records, parse_batch_header
from tidelog.queues.delay_index import DelayIndex
from tidelog.queues.log_batches import parse_log_batches
from tidelog.queues.record_attrs import QueueSettings, scan_batch
from tidelog.storage.producer_state import BROKER_PRODUCER_IDS

__all__ = ["MOVER_PRODUCER_IDS", "PROGRESS_GROUP", "ROUND_HEADER", "DelayMover", "DelayProgress", "DelaySource",
           "DelayTarget", "MoverDiverged", "MoverState", "batches", "mover_producer_id"]

logger = logging.getLogger(__name__)

ROUND_HEADER = "tidelog-delay-round"
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = "tidelog-origin-topic", "tidelog-origin-partition", "tidelog-origin-offset"
_OURS = (ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET, "tidelog-delay-round")
STATE_FILE = "mover-state.json"
INDEX_COMPLETE_FILE = "index-complete.json"
SEQUENCE_WRAP = 2**31
COPY_EVERY_MS = 5_000  # the local copy is written after a round that took records, else at most this often
MOVER_PRODUCER_IDS = BROKER_PRODUCER_IDS  # movers' producer ids are at or above this (the target never expires them)
PROGRESS_GROUP = "__tidelog-delay-mover"  # the group whose offsets in __consumer_offsets are the movers' progress
# (groups/offset_manager.EPOCH_FENCED_GROUP, the same name: its commits are fenced by leader epoch)
COMMIT_IDLE_MS = 60_000  # an idle mover commits its (unchanged) progress this often: offsets expire when not committed
COMMIT_RETRY_MS = 1_000  # after a failed commit, the next try waits this long (moves go on meanwhile)


def mover_producer_id(topic_id: uuid.UUID, partition: int) -> int:
    """The producer id of the mover of a delay partition: the same on every broker, distinct per
    delay partition (62 bits of a hash), above the allocated producer ids."""
    digest = hashlib.blake2b(topic_id.bytes + partition.to_bytes(4, "big"), digest_size=8).digest()
    return MOVER_PRODUCER_IDS | (int.from_bytes(digest, "big") & (MOVER_PRODUCER_IDS - 1))


class MoverDiverged(Exception):
    """The target holds another mover's batch where this mover's was to go: start again (recover)."""


class DelaySource(Protocol):
    """The delay topic's partition, as its leader reads it."""

    def log_start_offset(self) -> int: ...

    def high_watermark(self) -> int: ...

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        """Whole batches from the one holding ``offset``, below the high watermark, at least one."""


class DelayTarget(Protocol):
    """The target topic's partition, wherever it is led."""

    def append(self, batch: bytes) -> Awaitable[int]:
        """Append one idempotent batch; its base offset (a duplicate's: the first one's) once
        acknowledged by the ISR (acks=all). Raises KafkaError (or OSError) when it was not."""

    def last_batch(self, producer_id: int) -> Awaitable[tuple[bytes | None, int]]:
        """The last batch of ``producer_id`` that the partition's producer state knows (None when it
        knows none, or the batch is gone from the log) and the sequence that follows it (0 when it
        knows none); KafkaError OFFSET_NOT_AVAILABLE while that batch is not below the high
        watermark yet."""

    def read(self, offset: int, max_bytes: int) -> Awaitable[bytes | memoryview]:
        """Whole batches from the one holding ``offset`` (at least one if there is one), below the
        high watermark."""

    def earlier_last_batches(self) -> Awaitable[list[bytes]]:
        """The last batch of each producer id below 2^62 that the partition's producer state knows
        and its log still holds, below the high watermark, where the partition is led by this
        broker ([] at another broker): an earlier version's movers had such ids."""


class DelayProgress(Protocol):
    """The mover's progress, replicated: its delay partition's offset in the group ``PROGRESS_GROUP``
    of ``__consumer_offsets`` (compacted, replicated, listed by every Kafka tool)."""

    def fetch(self) -> Awaitable[tuple[int, str | None] | None]:
        """The committed offset and metadata (None: nothing committed). Raises KafkaError (or OSError)."""

    def commit(self, offset: int, metadata: str) -> Awaitable[None]:
        """Commit, durably (acks=all on __consumer_offsets). Raises KafkaError (or OSError)."""


class MoverState(NamedTuple):
    after_ms: int  # T: every record with offset < below_offset and due <= after_ms is moved
    below_offset: int  # O


class _Progress(NamedTuple):
    """Where the mover stands, as a round header says it (a round's start and end, the index of the
    last record appended and the round's size), with the sequence its next batch is to have."""
    start: MoverState
    end: MoverState
    i: int
    n: int
    sequence: int | None

    @classmethod
    def at(cls, state: MoverState, sequence: int | None) -> "_Progress":
        return cls(state, state, 0, 1, sequence)

    def normal(self) -> "_Progress":
        """A finished round is its end state."""
        return self.at(self.end, self.sequence) if self.i + 1 >= self.n else self

    def key(self) -> tuple:
        """Orders progress: a later round's end, then further in a round, a finished round last."""
        return self.end, self.i + 1 >= self.n, self.i

    def offset(self) -> int:
        """The committed offset: the delay offset below which every record due by the state's time is moved."""
        return self.end.below_offset if self.i + 1 >= self.n else self.start.below_offset

    def describe(self) -> str:
        where = f"due <= {self.end.after_ms}, offset {self.end.below_offset}"
        if self.i + 1 < self.n:
            where = f"record {self.i + 1} of {self.n} of the round to {where}"
        return where + (f", sequence {self.sequence}" if self.sequence is not None else "")


class _Round(NamedTuple):
    start: MoverState
    end: MoverState
    entries: list[tuple[int, int]]  # (due, offset) in order


class DelayMover:
    def __init__(self, origin_topic: str, origin_partition: int, source: DelaySource, target: DelayTarget,
                 index: DelayIndex, producer_id: int, clock_ms: Callable[[], int], *, delay_ms: int = 0,
                 read_bytes: int = 1 << 20, batch_records: int = 500, max_round_records: int = 10_000,
                 progress: DelayProgress | None = None) -> None:
        self.origin_topic = origin_topic
        self.origin_partition = origin_partition
        self.source = source
        self.target = target
        self.index = index
        self.producer_id = producer_id
        self.clock_ms = clock_ms
        self.settings = QueueSettings(delay_ms=delay_ms)
        self.read_bytes = read_bytes
        self.batch_records = batch_records
        self.max_round_records = max_round_records
        self.state = MoverState(-1, 0)
        self.moved = 0  # records appended to the target by this mover
        self.lost = 0  # records removed from the delay topic (retention) before they were due
        self.last_move_ms: int | None = None  # when the last batch was acknowledged (status)
        self.last_move_late_ms: int | None = None  # how long after its due time its earliest record went
        self._sequence = 0
        self._indexed = 0  # the log is read (and indexed) up to here
        self._rebuild_at: int | None = None  # rebuilding the index from the log: next offset to read
        self._new: list[tuple[int, int]] = []  # (due, offset) of records read at or after O
        self._round: _Round | None = None
        self._round_next = 0  # index in _round of the next record to append
        self._resume: tuple[MoverState, int] | None = None  # an interrupted round found by recover
        self._verify_next = True  # the first append after recover is read back (see the module docstring)
        self._copy_written_ms = -COPY_EVERY_MS  # when the local copy of the state was last written
        self.progress = progress
        self.committed: _Progress | None = None  # the progress last committed (or found committed) by this mover
        self._committed_value: tuple | None = None  # (progress, after) of its last commit (see _commit)
        self.committed_ms: int | None = None  # when (status)
        self.recovered_from: str | None = None  # where recover found the progress: target, committed, local, start
        self._commit_failing: str | None = None  # the error of a failure streak of commits
        self._commit_retry_ms = 0
        self.fenced: str | None = None  # why a commit was refused as a deposed leader's: this mover commits and moves no more

    # --- start ------------------------------------------------------------------------------------
    async def recover(self) -> None:
        """Where the last mover of this delay partition stopped (see the module docstring)."""
        found: _Progress | None = None
        batch, self._sequence = await self.target.last_batch(self.producer_id)
        header = _round_header(batch) if batch is not None else None
        if header is not None and header[:2] == (self.origin_topic, self.origin_partition):
            found = _Progress(MoverState(*header[2:4]), MoverState(*header[4:6]), header[6], header[7], self._sequence)
        self.recovered_from = "target" if found is not None else None
        self._verify_next = True
        local, local_sequence = self._read_local_state()
        if batch is None and self._sequence == 0 and local_sequence is None:
            found = await self._earlier_version(local)
            self.recovered_from = "target" if found is not None else None
        if found is not None and local is not None and local_sequence != self._sequence:
            local = None  # not written after this batch: an older leadership's (its time may be ahead)
        if found is None:
            found = await self._without_the_targets_batch(batch is None and self._sequence != 0, local, local_sequence)
            local = None
        if found is not None and (local is None or found.end >= local):
            if found.i + 1 >= found.n:
                self.state = found.end
            else:
                self.state = found.start
                self._resume = (found.end, found.i + 1)
        elif local is not None:
            self.state = local
            self.recovered_from = "local"
        else:
            self.state = MoverState(-1, self.source.log_start_offset())
            self.recovered_from = "start"
        self._indexed = self.state.below_offset
        complete = self._read_index_complete()
        if complete is None or complete < self.state.below_offset:
            self.index.clear()
            self._rebuild_at = self.source.log_start_offset()
        logger.info("delay mover %s-%d starts at due <= %d, offset %d, sequence %d (from %s)%s", self.origin_topic,
                    self.origin_partition, self.state.after_ms, self.state.below_offset, self._sequence,
                    _FROM[self.recovered_from], "; rebuilding its index from the log" if self._rebuild_at is not None else "")

    async def _without_the_targets_batch(self, gone: bool, local: MoverState | None,
                                         local_sequence: int | None) -> _Progress | None:
        """The progress to go on from where the target holds no batch of this mover: the one
        committed to ``__consumer_offsets`` (replicated) or this broker's copy, whichever continues
        the target's sequence (written after the mover's last batch there), else the furthest.
        ``gone``: the target's producer state names a last batch that its log no longer has
        (retention, DeleteRecords): said in a WARNING, with what it means."""
        candidates = []
        committed = await self._fetch_committed()
        if committed is not None:
            candidates.append(("committed", committed))
        if local is not None:
            candidates.append(("local", _Progress.at(local, local_sequence)))
        current = [c for c in candidates if c[1].sequence == self._sequence]
        chosen = max(current or candidates, key=lambda c: c[1].key()) if candidates else None
        if gone:
            if chosen is None:
                then = ("the delay partition's start, as neither a committed progress nor a copy of it is here: "
                        "records moved before and still in the delay topic are moved again")
            else:
                then = f"{_FROM[chosen[0]]} ({chosen[1].describe()})"
                if chosen[1].sequence != self._sequence:
                    then += (f"; the target's next sequence is {self._sequence}: the records moved after that "
                             f"progress are moved again")
            logger.warning("delay mover %s-%d: its last batch in the target is gone (retention or DeleteRecords); "
                           "going on from %s", self.origin_topic, self.origin_partition, then)
        if chosen is None:
            return None
        self.recovered_from = chosen[0]
        return chosen[1]

    async def _fetch_committed(self) -> _Progress | None:
        """This mover's progress committed to ``__consumer_offsets`` (None: none, or another delay
        partition's of the same name, deleted since)."""
        if self.progress is None:
            return None
        fetched = await self.progress.fetch()
        if fetched is None or fetched[0] < 0 or not fetched[1]:
            return None
        try:
            data = json.loads(fetched[1])
            if data.get("producer_id") != self.producer_id:
                return None
            found = _progress_of(data["round"], data["sequence"])
            after = data.get("after")
            if after is not None:
                after = _progress_of(after["round"], after["sequence"])
                if (self._sequence - after.sequence) % SEQUENCE_WRAP < SEQUENCE_WRAP // 2:
                    # Committed before a batch the target's sequence has reached the end of: it was
                    # appended (and maybe more after it, whose commits failed). Short of it (not
                    # appended, or refused), only the progress before it is known to be moved.
                    found = after
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("delay mover %s-%d: ignoring unreadable progress committed to %s: %r (%s)", self.origin_topic,
                           self.origin_partition, PROGRESS_GROUP, fetched[1][:200], e)
            return None
        self.committed = found.normal()
        return self.committed

    async def _earlier_version(self, local: MoverState | None) -> tuple | None:
        """Where a mover of the version before movers' producer ids were derived from the delay
        partition stopped: the latest round header naming this delay partition among the target's
        other producers' last batches (as that version's recovery looked), if not older than
        ``local`` (that version's copy). Asked only while this mover's id has no batch in the
        target and this broker has no copy written by this version."""
        found = None
        for batch in await self.target.earlier_last_batches():
            header = _round_header(batch)
            if header is None or header[:2] != (self.origin_topic, self.origin_partition):
                continue
            candidate = _Progress(MoverState(*header[2:4]), MoverState(*header[4:6]), header[6], header[7], None)
            if found is None or (candidate.end, candidate.i) > (found.end, found.i):
                found = candidate
        if found is not None and (local is None or found.end >= local):
            logger.info("delay mover %s-%d: going on from the last batch of an earlier version's mover in the target "
                        "(round to due <= %d, offset %d, record %d of %d)", self.origin_topic, self.origin_partition,
                        found.end.after_ms, found.end.below_offset, found.i + 1, found.n)
            return found
        return None

    # --- one step ---------------------------------------------------------------------------------
    async def step(self) -> int:
        """Rebuild or extend the index by one read, then run (or finish) a round; the records moved."""
        if self.fenced is not None:
            return 0  # a deposed leader's mover (see _commit)
        if self._rebuild_at is not None:
            self._rebuild_step()
            return 0
        now = self.clock_ms()
        if self._round is None:
            if self._resume is not None:
                end, next_i = self._resume
                self._resume = None
                while self._indexed < end.below_offset:  # the interrupted round's new records, read again
                    before = self._indexed
                    self._read_new(end.below_offset)
                    if self._indexed == before:
                        return 0
                self._round = self._plan(end)
                self._round_next = next_i
            else:
                self._read_new(self.source.high_watermark())
                self._round = self._plan(self._round_end(now))
                self._round_next = 0
        moved = await self._append_round()
        return moved

    def next_due_ms(self) -> int | None:
        """When the next record becomes due, for the owner's timer (None: nothing waiting)."""
        candidates = [due for due, _ in self._new if due > self.state.after_ms]
        indexed = self.index.next_due_after(self.state.after_ms, self.state.below_offset)
        if indexed is not None:
            candidates.append(indexed)
        return min(candidates) if candidates else None

    def status(self) -> dict:
        """What the mover holds now, for the HTTP API and the gauges (no log read: the index's
        buckets after T, counted incrementally, and the records read since the last round).
        ``waiting_records`` (not moved yet, due or not) and ``next_due_ms`` are None while the
        index is rebuilt from the log."""
        rebuilding = self._rebuild_at is not None
        due_read = [due for due, _ in self._new if due <= self.state.after_ms]  # due; the next round takes them
        waiting = next_due = None
        if not rebuilding:
            waiting = self.index.count_after(self.state.after_ms) + len(due_read)
            if self._round is not None:  # the open round's records before _round_next: moved (or lost)
                waiting -= self._round_next
            next_due = min(due_read) if due_read else self.next_due_ms()
        return {"waiting_records": waiting, "next_due_ms": next_due, "rebuilding": rebuilding,
                "in_round": self._round is not None, "moved_records": self.moved, "lost_records": self.lost,
                "last_move_ms": self.last_move_ms, "last_move_late_ms": self.last_move_late_ms,
                "committed_offset": self.committed.offset() if self.committed is not None else None,
                "committed_ms": self.committed_ms, "commit_error": self.fenced or self._commit_failing,
                "recovered_from": self.recovered_from}

    def _rebuild_step(self) -> None:
        """One read of the index rebuild: records below O due after T go to the index."""
        offset = max(self._rebuild_at, self.source.log_start_offset())
        if offset >= self.state.below_offset:
            self._rebuild_at = None
            self._write_index_complete(self.state.below_offset)
            return
        entries, end = self._scan(offset, self.state.below_offset)
        self.index.add((due, o) for due, o in entries if due > self.state.after_ms)
        self._rebuild_at = end

    def _read_new(self, below: int) -> None:
        """Read the log from where it was read up to, below ``below`` (one read); index it."""
        offset = max(self._indexed, self.source.log_start_offset())
        if offset >= below:
            return
        entries, end = self._scan(offset, below)
        self.index.add(entries)
        self._new.extend(entries)
        self._indexed = end

    def _scan(self, offset: int, below: int) -> tuple[list[tuple[int, int]], int]:
        data = self.source.read(offset, self.read_bytes)
        entries: list[tuple[int, int]] = []
        end = offset
        for pos, _size, batch in parse_log_batches(data):
            if batch.base_offset >= below:
                break
            end = batch.last_offset + 1
            if batch.control or batch.aborted:
                continue
            info = parse_batch_header(memoryview(data), pos)
            for run in scan_batch(data, pos, info, self.settings, {}):
                for o in range(max(run.first, offset), min(run.last + 1, below)):
                    entries.append((run.due_ms, o))
        return entries, end

    def _round_end(self, now: int) -> MoverState:
        return MoverState(max(now, self.state.after_ms), max(self._indexed, self.state.below_offset))

    def _plan(self, end: MoverState) -> _Round:
        """The records of the round from the current state to ``end``, in (due, offset) order, cut at
        ``max_round_records`` (then ``end``'s time is the last one's due time)."""
        start = self.state
        old = self.index.between(start.after_ms, end.after_ms, start.below_offset)
        new = [(due, o) for due, o in self._new if start.below_offset <= o < end.below_offset and due <= end.after_ms]
        entries = sorted(set(old) | set(new))
        if len(entries) > self.max_round_records:
            cut = entries[self.max_round_records - 1][0]
            entries = [e for e in entries if e[0] <= cut]
            end = MoverState(cut, end.below_offset)
        return _Round(start, end, entries)

    async def _append_round(self) -> int:
        round_ = self._round
        assert round_ is not None
        moved = 0
        entries = round_.entries
        wanted = {o for _, o in entries[self._round_next:]}
        records = self._fetch(wanted)
        while self._round_next < len(entries):
            chunk = entries[self._round_next:self._round_next + self.batch_records]
            last_i = self._round_next + len(chunk) - 1
            batch_records = []
            for due, offset in chunk:
                record = records.get(offset)
                if record is None:  # removed from the delay topic (retention) before it was due
                    self.lost += 1
                    continue
                headers = [(n, v) for n, v in record.headers if n not in _OURS]
                headers += [(ORIGIN_TOPIC, self.origin_topic.encode()),
                            (ORIGIN_PARTITION, str(self.origin_partition).encode()),
                            (ORIGIN_OFFSET, str(offset).encode())]
                batch_records.append((record.key, record.value, headers))
            if batch_records:
                s, e = round_.start, round_.end
                batch_records[-1][2].append((ROUND_HEADER, f"{self.origin_topic},{self.origin_partition},{s.after_ms},"
                                                           f"{s.below_offset},{e.after_ms},{e.below_offset},{last_i},"
                                                           f"{len(entries)}".encode()))
                batch = build_batch(batch_records, producer_id=self.producer_id, producer_epoch=0,
                                    base_sequence=self._sequence, timestamp_ms=self.clock_ms())
                # The progress before the batch, committed before it with the progress after it: the
                # target's next sequence says which holds (see _commit).
                before = _Progress.at(s, self._sequence) if self._round_next == 0 else \
                    _Progress(s, e, self._round_next - 1, len(entries), self._sequence)
                await self._commit(before, _Progress(s, e, last_i, len(entries),
                                                     (self._sequence + len(batch_records)) % SEQUENCE_WRAP))
                if self.fenced is not None:
                    return moved  # deposed: the round stays unfinished here (its successor goes on)
                base_offset = await self.target.append(batch)
                self.last_move_ms = self.clock_ms()
                self.last_move_late_ms = max(0, self.last_move_ms - chunk[0][0])
                if self._verify_next:
                    await self._verify(base_offset, batch)
                    self._verify_next = False
                self._sequence = (self._sequence + len(batch_records)) % SEQUENCE_WRAP
                moved += len(batch_records)
                self.moved += len(batch_records)
            self._round_next = last_i + 1
        self.state = round_.end
        self._round = None
        # Records read before O' are moved or (due later) in the index; those after stay here.
        self._new = [(due, o) for due, o in self._new if o >= round_.end.below_offset]
        self.index.drop_through(self.state.after_ms)
        now = self.clock_ms()
        if entries or not 0 <= now - self._copy_written_ms < COPY_EVERY_MS:  # an idle mover's rounds move nothing
            self._write_local_state()
            self._copy_written_ms = now
        if entries or self.committed is None or self.committed.sequence != self._sequence or \
                not 0 <= now - (self.committed_ms or 0) < COMMIT_IDLE_MS:
            await self._commit(_Progress.at(self.state, self._sequence))
        return moved

    async def _commit(self, progress: _Progress, after: _Progress | None = None) -> None:
        """Commit ``progress`` to ``__consumer_offsets``. With ``after``: committed before a batch is
        appended (``progress``'s sequence is the batch's), with the progress after that batch: where
        the target no longer holds the batch (retention), its next sequence says which of the two
        holds (``_fetch_committed``), so a broker dying between the target's acknowledgement and a
        commit after it leaves nothing to move again. (The offset and the fields an earlier version
        reads are ``progress``'s: never ahead of what is moved.) A failed commit does not stop the
        moves: the next one (after ``COMMIT_RETRY_MS``) carries the newer progress; the streak is
        logged once (WARNING) and its end (INFO)."""
        progress = progress.normal()
        after = after.normal() if after is not None else None
        if self.progress is None or (progress, after) == self._committed_value or self.fenced is not None:
            return
        now = self.clock_ms()
        if self._commit_failing is not None and 0 <= now < self._commit_retry_ms:
            return
        value = {"producer_id": self.producer_id, "round": _round_of(progress), "sequence": progress.sequence}
        if after is not None:
            value["after"] = {"round": _round_of(after), "sequence": after.sequence}
        metadata = json.dumps(value, separators=(",", ":"))
        try:
            await self.progress.commit(progress.offset(), metadata)
        except KafkaError as e:
            if e.error_code != ErrorCode.fenced_leader_epoch:
                self._commit_failed(e, now)
                return
            # Another broker leads the delay partition now (its mover's commit came first, or this
            # one no longer leads): going on would overwrite its progress and append beside it.
            self.fenced = str(e) or e.error_code.name
            logger.warning("delay mover %s-%d: no longer its delay partition's mover: %s; it stops (the partition's "
                           "leader goes on from its own progress)", self.origin_topic, self.origin_partition, self.fenced)
            return
        except Exception as e:  # noqa: BLE001 - a commit that failed, however, must not fail the moves
            self._commit_failed(e, now)
            return
        if self._commit_failing is not None:
            logger.info("delay mover %s-%d: committing its progress to __consumer_offsets again", self.origin_topic,
                        self.origin_partition)
            self._commit_failing = None
        self.committed, self.committed_ms, self._committed_value = progress, now, (progress, after)

    def _commit_failed(self, e: Exception, now: int) -> None:
        if self._commit_failing is None:
            logger.warning("delay mover %s-%d: cannot commit its progress to %s (group %s): %s; moving on, "
                           "committing again in %d ms", self.origin_topic, self.origin_partition, "__consumer_offsets",
                           PROGRESS_GROUP, e, COMMIT_RETRY_MS)
        self._commit_failing = str(e) or type(e).__name__
        self._commit_retry_ms = now + COMMIT_RETRY_MS

    async def _verify(self, base_offset: int, batch: bytes) -> None:
        """The target's batch at ``base_offset`` is ``batch`` (this mover's), not another mover's
        batch of the same sequence that the target answered as a duplicate."""
        data = memoryview(await self.target.read(base_offset, len(batch)))
        for pos, info in batches(data):
            ours = parse_batch_header(batch)
            if (info.base_offset, info.producer_id, info.base_sequence, info.last_offset_delta) == (
                    base_offset, ours.producer_id, ours.base_sequence, ours.last_offset_delta) \
                    and _round_header(bytes(data[pos:pos + info.size])) == _round_header(batch):
                return
            raise MoverDiverged(f"the target's batch at offset {base_offset} (producer {info.producer_id}, sequence "
                                f"{info.base_sequence}) is not this mover's: another mover of the delay partition appended it")
        # acks=all: below the high watermark, unless the leader changed since; read again at the retry
        raise KafkaError(ErrorCode.request_timed_out, f"the appended batch at offset {base_offset} is not readable yet")

    def _fetch(self, offsets: set[int]) -> dict:
        """The records at ``offsets`` (each batch holding some read once)."""
        found: dict = {}
        log_start = self.source.log_start_offset()
        for offset in sorted(offsets):
            if offset in found or offset < log_start:
                continue
            for record in iter_records(self.source.read(offset, 1)):  # the batch holding it
                if record.offset in offsets:
                    found[record.offset] = record
        return found

    # --- local copies -----------------------------------------------------------------------------
    def _read_local_state(self) -> tuple[MoverState | None, int | None]:
        """This broker's copy of the mover's state and the sequence its next batch was to have
        (None from a copy written before copies had it)."""
        try:
            data = json.loads((self.index.directory / STATE_FILE).read_text())
            sequence = data.get("sequence")
            return MoverState(int(data["after_ms"]), int(data["below_offset"])), \
                int(sequence) if sequence is not None else None
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return None, None

    def _write_local_state(self) -> None:
        _write_json(self.index.directory / STATE_FILE, {"after_ms": self.state.after_ms,
                                                        "below_offset": self.state.below_offset,
                                                        "sequence": self._sequence})
        self._write_index_complete(self.state.below_offset)

    def _read_index_complete(self) -> int | None:
        try:
            return int(json.loads((self.index.directory / INDEX_COMPLETE_FILE).read_text())["below_offset"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _write_index_complete(self, below_offset: int) -> None:
        _write_json(self.index.directory / INDEX_COMPLETE_FILE, {"below_offset": below_offset})


_FROM = {"target": "its last batch in the target", None: "nothing",
         "committed": f"its progress committed to __consumer_offsets (group {PROGRESS_GROUP})",
         "local": "this broker's copy of its progress", "start": "the delay partition's start"}


def _round_of(progress: _Progress) -> list[int]:
    return [progress.start.after_ms, progress.start.below_offset, progress.end.after_ms, progress.end.below_offset,
            progress.i, progress.n]


def _progress_of(round_: list, sequence) -> _Progress:
    """A committed progress's round (``_round_of``) and sequence. Raises ValueError, TypeError."""
    t0, o0, t1, o1, i, n = (int(v) for v in round_)
    return _Progress(MoverState(t0, o0), MoverState(t1, o1), i, n, int(sequence))


def _write_json(path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def batches(data: memoryview):
    """(position, BatchInfo) of each whole batch in ``data``."""
    pos = 0
    while len(data) - pos >= BATCH_HEADER_SIZE:
        info = parse_batch_header(data, pos)
        if info.size < BATCH_HEADER_SIZE or pos + info.size > len(data):
            return
        yield pos, info
        pos += info.size


def _round_header(batch: bytes) -> tuple | None:
    """The round header of a batch's last record: (topic, partition, T, O, T', O', i, n), or None."""
    if len(batch) < BATCH_HEADER_SIZE:
        return None
    last = None
    try:
        for record in iter_records(batch):
            last = record
    except ValueError:
        return None
    if last is None:
        return None
    for name, value in last.headers:
        if name == ROUND_HEADER and value is not None:
            parts = value.decode("utf-8", "replace").split(",")
            if len(parts) != 8:
                return None
            try:
                return (parts[0], int(parts[1]), *(int(p) for p in parts[2:]))
            except ValueError:
                return None
    return None
