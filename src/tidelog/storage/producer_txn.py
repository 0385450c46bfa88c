"""The transactional side of one partition's producer state: open transactions and the LSO.

Kafka's ProducerStateManager keeps, beside the idempotence data that storage/producer_state.py
holds here, what transactions need; this is that part:

- per transactional producer: its epoch as the log knows it (from data batches and from markers,
  which may carry a bumped epoch that fences a zombie), the coordinator epoch of its last marker,
  and the first offset of its open transaction, if any;
- the open transactions in first-offset order, and the ones completed by a marker at or above
  the high watermark (not yet replicated), whose data must stay invisible until it is;
- the first unstable offset (the oldest of both), hence the last stable offset (LSO): the
  first offset not yet decided, capped by the high watermark. read_committed fetches read below
  it, and ListOffsets(LATEST, read_committed) answers it.

Appending as leader: ``check_data`` / ``check_marker`` before the append (they raise
KafkaError: INVALID_PRODUCER_EPOCH for a fenced epoch, INVALID_TXN_STATE for a plain batch
while a transaction is open, TRANSACTION_COORDINATOR_FENCED for a marker from an old
coordinator), then ``on_data`` / ``on_marker`` once it is in the log. ``on_marker`` returns the
CompletedTxn a marker ends (None for a transaction with no data here); for an aborted one the
caller appends ``aborted_entry(completed)`` to the transaction index of the segment the marker
went to, then calls ``complete(completed)``, in that order, as Kafka does, so a failed index
write leaves the LSO where it was. Followers and replays call the ``on_`` methods without the
checks. ``on_high_watermark`` and ``on_log_start_offset`` follow the partition's offsets.

On disk: ``transaction-state.json`` in the partition directory, written with the producer
state on clean shutdown: ``{"offset": N, "producers": {pid: [epoch, coordinator_epoch,
open_txn_first_offset or -1, last_timestamp_ms]}}``, the state of the log below N. ``load``
reads it (if N is inside the log) and replays the batches from N to the log end, headers only
except for markers; the aborted transactions the replay completes go to a callback, so
recovery rebuilds the ``.txnindex`` entries of every segment from N on (see ``load``).
Not thread-safe; the event loop (the partition's owner) owns it.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from tidelog.clock import wall_clock_ms
from tidelog.protocol.control_records import EndTxnMarker, InvalidControlRecord, read_end_txn_marker
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BatchInfo
from tidelog.storage.checkpoint import remove_file, write_checkpoint_file
from tidelog.storage.log_scan import batch_headers
from tidelog.storage.txn_index import AbortedTxn, TransactionIndex

__all__ = ["CompletedTxn", "ProducerTransactions", "SNAPSHOT_FILE"]

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "transaction-state.json"


class CompletedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool


class _Producer:
    __slots__ = ("epoch", "coordinator_epoch", "open_txn_first_offset", "last_timestamp_ms")

    def __init__(self, epoch: int, coordinator_epoch: int = -1, open_txn_first_offset: int | None = None,
                 last_timestamp_ms: int = -1) -> None:
        self.epoch = epoch
        self.coordinator_epoch = coordinator_epoch
        self.open_txn_first_offset = open_txn_first_offset
        self.last_timestamp_ms = last_timestamp_ms


class ProducerTransactions:
    """See the module docstring."""

    def __init__(self) -> None:
        self.producers: dict[int, _Producer] = {}
        # first offset -> producer id. Transactions open in offset order, so insertion order is
        # first-offset order and the oldest is the first key.
        self._open: dict[int, int] = {}
        self._unreplicated: dict[int, int] = {}  # first offset -> marker offset, marker >= high watermark

    # ---- queries -------------------------------------------------------------------------

    def open_transaction(self, producer_id: int) -> int | None:
        """The first offset of the producer's open transaction here."""
        producer = self.producers.get(producer_id)
        return None if producer is None else producer.open_txn_first_offset

    @property
    def open_transactions(self) -> dict[int, int]:
        """First offset -> producer id of every open transaction, oldest first."""
        return dict(self._open)

    def first_undecided_offset(self) -> int | None:
        """The first offset of the oldest open transaction (markers above the high watermark aside)."""
        return next(iter(self._open), None)

    def first_unstable_offset(self, log_start_offset: int = 0) -> int | None:
        """The first offset a read_committed reader may not pass yet, if any (not below the log start)."""
        candidates = []
        if self._open:
            candidates.append(next(iter(self._open)))
        if self._unreplicated:
            candidates.append(min(self._unreplicated))
        if not candidates:
            return None
        return max(min(candidates), log_start_offset)

    def last_stable_offset(self, high_watermark: int, log_start_offset: int = 0) -> int:
        """The LSO: the first unstable offset if it is below the high watermark, else the high watermark."""
        first_unstable = self.first_unstable_offset(log_start_offset)
        return first_unstable if first_unstable is not None and first_unstable < high_watermark else high_watermark

    # ---- appending as leader: checks --------------------------------------------------------

    def check_data(self, info: BatchInfo) -> None:
        """Raise KafkaError if a produced batch may not be appended (before the append)."""
        producer = self.producers.get(info.producer_id) if info.producer_id >= 0 else None
        if producer is None:
            return
        if info.producer_epoch < producer.epoch:
            raise KafkaError(ErrorCode.invalid_producer_epoch,
                             f"producer {info.producer_id} epoch {info.producer_epoch} is older than {producer.epoch} "
                             "(fenced by a newer producer with its transactional id)")
        if producer.open_txn_first_offset is not None and not info.is_transactional:
            raise KafkaError(ErrorCode.invalid_txn_state,
                             f"producer {info.producer_id} sent a non-transactional batch while its transaction "
                             f"from offset {producer.open_txn_first_offset} is open")

    def check_marker(self, producer_id: int, producer_epoch: int, marker: EndTxnMarker) -> None:
        """Raise KafkaError if a COMMIT/ABORT marker may not be appended (WriteTxnMarkers as leader)."""
        producer = self.producers.get(producer_id)
        if producer is None:
            return
        if producer_epoch < producer.epoch:
            raise KafkaError(ErrorCode.invalid_producer_epoch,
                             f"marker for producer {producer_id} has epoch {producer_epoch}, older than {producer.epoch}")
        if marker.coordinator_epoch < producer.coordinator_epoch:
            raise KafkaError(ErrorCode.transaction_coordinator_fenced,
                             f"marker for producer {producer_id} from coordinator epoch {marker.coordinator_epoch}, "
                             f"older than {producer.coordinator_epoch}")

    # ---- after the append (leader, follower, replay) ----------------------------------------

    def on_data(self, info: BatchInfo, base_offset: int, timestamp_ms: int | None = None) -> None:
        """A data batch is in the log at ``base_offset``: a transactional one may open a transaction."""
        if info.producer_id < 0:
            return
        producer = self.producers.get(info.producer_id)
        if producer is None:
            if not info.is_transactional:
                return  # idempotent only: storage/producer_state.py has all there is to know
            producer = self.producers[info.producer_id] = _Producer(info.producer_epoch)
        if info.producer_epoch > producer.epoch:
            producer.epoch = info.producer_epoch
        if info.is_transactional and producer.open_txn_first_offset is None:
            producer.open_txn_first_offset = base_offset
            self._open[base_offset] = info.producer_id
        producer.last_timestamp_ms = _batch_time(info, timestamp_ms, producer.last_timestamp_ms)

    def on_marker(self, producer_id: int, producer_epoch: int, marker: EndTxnMarker, offset: int,
                  timestamp_ms: int | None = None) -> CompletedTxn | None:
        """A marker is in the log at ``offset``; returns the transaction it ends here, if it had data."""
        producer = self.producers.get(producer_id)
        if producer is None:
            producer = self.producers[producer_id] = _Producer(producer_epoch)
        completed = None
        if producer.open_txn_first_offset is not None:
            completed = CompletedTxn(producer_id, producer.open_txn_first_offset, offset, not marker.committed)
        producer.epoch = max(producer.epoch, producer_epoch)
        producer.coordinator_epoch = marker.coordinator_epoch
        producer.open_txn_first_offset = None
        if timestamp_ms is not None and timestamp_ms > producer.last_timestamp_ms:
            producer.last_timestamp_ms = timestamp_ms
        return completed

    def aborted_entry(self, completed: CompletedTxn) -> AbortedTxn:
        """The ``.txnindex`` entry of an aborted transaction, with the LSO right after its marker."""
        return AbortedTxn(completed.producer_id, completed.first_offset, completed.last_offset,
                          self._stable_offset_after(completed))

    def _stable_offset_after(self, completed: CompletedTxn) -> int:
        for first_offset, producer_id in self._open.items():
            if producer_id != completed.producer_id:
                return first_offset
        return completed.last_offset + 1

    def complete(self, completed: CompletedTxn, high_watermark: int | None = None) -> None:
        """Close the transaction ``on_marker`` returned. It stays unstable until the high watermark
        passes its marker (``on_high_watermark``), unless ``high_watermark`` already does."""
        if self._open.pop(completed.first_offset, None) is None:
            raise ValueError(f"transaction {completed} was not open")
        if high_watermark is None or completed.last_offset >= high_watermark:
            self._unreplicated[completed.first_offset] = completed.last_offset

    def apply(self, info: BatchInfo, base_offset: int, marker: EndTxnMarker | None,
              on_aborted: Callable[[AbortedTxn], None] | None = None, timestamp_ms: int | None = None) -> None:
        """``on_data`` or ``on_marker`` + ``aborted_entry`` + ``complete`` in one call (followers, replay)."""
        if not info.is_control:
            self.on_data(info, base_offset, timestamp_ms)
            return
        if marker is None:
            return
        completed = self.on_marker(info.producer_id, info.producer_epoch, marker, base_offset,
                                   timestamp_ms if timestamp_ms is not None else info.max_timestamp)
        if completed is None:
            return
        if completed.aborted and on_aborted is not None:
            on_aborted(self.aborted_entry(completed))
        self.complete(completed)

    def on_high_watermark(self, high_watermark: int) -> None:
        """Completed transactions whose marker is now below the high watermark become stable."""
        if self._unreplicated:
            self._unreplicated = {f: m for f, m in self._unreplicated.items() if m >= high_watermark}

    def on_log_start_offset(self, log_start_offset: int) -> None:
        """Records below the log start are gone (retention, DeleteRecords): so are the completed
        transactions whose marker was there. An open transaction stays open; the LSO counts it
        from the log start."""
        self.on_high_watermark(log_start_offset)

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for ``expiration_ms`` (producer.id.expiration.ms), never one with an
        open transaction (as Kafka); return how many."""
        expired = [pid for pid, p in self.producers.items()
                   if p.open_txn_first_offset is None and now_ms - p.last_timestamp_ms >= expiration_ms]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    # ---- persistence ---------------------------------------------------------------------

    def snapshot(self, partition_dir: Path, offset: int) -> tuple[Path, str]:
        """The snapshot file and its content: the state of the log below ``offset`` (its end, at
        a clean shutdown), for a caller that writes many at once (LogManager.write_checkpoints)."""
        data = {
            "offset": offset,
            "producers": {str(pid): [p.epoch, p.coordinator_epoch,
                                     -1 if p.open_txn_first_offset is None else p.open_txn_first_offset,
                                     p.last_timestamp_ms] for pid, p in self.producers.items()},
        }
        return Path(partition_dir) / SNAPSHOT_FILE, json.dumps(data)

    def save(self, partition_dir: Path, offset: int) -> None:
        """Write the snapshot (see ``snapshot``)."""
        write_checkpoint_file(*self.snapshot(partition_dir, offset))

    @staticmethod
    def delete_snapshot(partition_dir: Path) -> None:
        """Remove the snapshot (the log was truncated below it, or the partition deleted)."""
        path = Path(partition_dir) / SNAPSHOT_FILE
        if path.exists():
            remove_file(path)

    @classmethod
    def load(cls, log, indexes: Iterable[tuple[int, TransactionIndex]] = (), snapshot_usable_below: int | None = None,
             expiration_ms: int | None = None) -> "ProducerTransactions":
        """The state of ``log`` (a PartitionLog: ``dir``, ``log_start_offset``, ``log_end_offset``,
        ``read(offset, max_bytes, min_one_batch)``), rebuilding the ``.txnindex`` entries it replays.

        The snapshot is used if its offset N is inside the log and not above
        ``snapshot_usable_below`` (after an unclean shutdown: the recovery point; the indexes
        above it may have lost entries the snapshot already counts); otherwise the replay starts
        at the log start. ``indexes`` are (segment base offset, its TransactionIndex) for every
        segment, in order: each is cut at the replay start and receives the aborted
        transactions whose markers the replay finds in its segment, so after a crash, a torn
        ``.txnindex`` or a truncation the indexes agree with the log again. A damaged index
        (``sane`` false) makes the whole replay start at the log start.
        """
        state = cls()
        start = log.log_start_offset
        index_list = list(indexes)
        insane = [index for _, index in index_list if not index.sane]
        for index in insane:
            logger.warning("%s: %s is damaged; every index is rebuilt from the log start", log.dir, index.path)
            index.reset()
        path = Path(log.dir) / SNAPSHOT_FILE
        try:
            data = json.loads(path.read_text())
            offset = data["offset"]
            if log.log_start_offset <= offset <= log.log_end_offset and not insane and (
                    snapshot_usable_below is None or offset <= snapshot_usable_below):
                for pid, (epoch, coordinator_epoch, first_offset, last_timestamp_ms) in data["producers"].items():
                    state._restore(int(pid), epoch, coordinator_epoch, None if first_offset < 0 else first_offset,
                                   last_timestamp_ms)
                start = offset
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("%s: unreadable transaction state snapshot (%s), rebuilding from the log", log.dir, e)
            state = cls()
        for _, index in index_list:
            index.truncate_to(start)
        bases = [base for base, _ in index_list]

        def on_aborted(entry: AbortedTxn) -> None:
            if not index_list:
                return
            position = max(bisect_right(bases, entry.last_offset) - 1, 0)
            index_list[position][1].append(entry)

        replayed = state._replay(log, start, on_aborted)
        if replayed:
            logger.info("%s: transaction state rebuilt from %d batches after offset %d (%d open)", log.dir,
                        replayed, start, len(state._open))
        if expiration_ms is not None:
            state.remove_expired(wall_clock_ms(), expiration_ms)
        return state

    def _restore(self, producer_id: int, epoch: int, coordinator_epoch: int, open_txn_first_offset: int | None,
                 last_timestamp_ms: int) -> None:
        self.producers[producer_id] = _Producer(epoch, coordinator_epoch, open_txn_first_offset, last_timestamp_ms)
        if open_txn_first_offset is not None:
            self._open[open_txn_first_offset] = producer_id
            self._open = dict(sorted(self._open.items()))

    def _replay(self, log, offset: int, on_aborted: Callable[[AbortedTxn], None]) -> int:
        """Apply every producer batch from ``offset``: headers only, a marker's bytes read too."""
        replayed = 0
        for segment, position, info in batch_headers(log, offset):
            if info.producer_id < 0:
                continue
            marker = None
            if info.is_control:
                try:
                    marker = read_end_txn_marker(memoryview(segment.read_batch_at(position, info)), info)
                except (InvalidControlRecord, ValueError) as e:
                    logger.warning("%s: unreadable control batch at offset %d skipped: %s", log.dir,
                                   info.base_offset, e)
            self.apply(info, info.base_offset, marker, on_aborted)
            replayed += 1
        return replayed


def _batch_time(info: BatchInfo, now_ms: int | None, previous_ms: int) -> int:
    """A batch appended as leader counts at ``now_ms``; a replayed one by its max timestamp, not
    later than now (as storage/producer_state.py counts them)."""
    timestamp_ms = now_ms if now_ms is not None else min(info.max_timestamp, wall_clock_ms())
    return max(timestamp_ms, previous_ms)
