"""The transactional side of one partition replica: its open transactions, LSO and ``.txnindex`` files.

The Partition (cluster/partition.py) owns one ``PartitionTransactions`` beside its idempotent
producer state and calls it at the points docs/architecture.md lists:

- ``check_data(info)`` before a client batch is appended as leader (a fenced epoch, a plain
  batch inside an open transaction: KafkaError), ``on_data`` after it;
- ``marker_batch`` / ``marker_appended``: a COMMIT/ABORT marker as leader (WriteTxnMarkers):
  the epoch and coordinator-epoch checks and the control batch, then the transaction closed
  here (an aborted one gets its entry in the active segment's ``.txnindex``);
- ``apply(batch, info)``: a follower's appended batch (data or marker);
- ``last_stable_offset(high_watermark)`` and ``on_high_watermark``: the LSO, which
  read_committed reads, ListOffsets and the cleaner stop at;
- ``aborted_transactions(fetch_offset, upper)``: what a read_committed Fetch lists, from the
  ``.txnindex`` of the fetch's segment on; none, without a look at an index, for a fetch from at
  or after the offset past the last aborted transaction's marker (known after the first lookup,
  kept as markers are written, forgotten at ``reset``: the usual read_committed fetch, at the
  log's tail, costs a comparison);
- ``reset()`` after a truncation, ``snapshot()`` at a clean shutdown, ``remove_expired``.

The state (storage/producer_txn.py) is loaded on first use: its snapshot plus a replay of the
log after it, which also rebuilds the ``.txnindex`` entries from there on. One
``TransactionIndex`` per segment, made on first use; a segment replaced by a cleaning or gone
to retention or DeleteRecords (its files renamed with it, storage/segment_files.py) gets a
fresh one, so the indexes follow the segments. Index writes go to the page cache; the indexes
are fsynced at clean shutdown with the snapshot, and after an unclean shutdown the replay from
the last snapshot (never above the recovery point, since a snapshot is only written at a clean
shutdown) rewrites every entry after it.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tidelog.protocol.control_records import (EndTxnMarker, InvalidControlRecord, build_end_txn_marker_batch,
                                              read_end_txn_marker)
from tidelog.protocol.records import BatchInfo
from tidelog.storage.producer_txn import ProducerTransactions
from tidelog.storage.txn_index import TXN_INDEX_SUFFIX, AbortedTxn, TransactionIndex, collect_aborted_transactions

if TYPE_CHECKING:
    from tidelog.storage.log import PartitionLog

__all__ = ["PartitionTransactions", "READ_COMMITTED", "READ_UNCOMMITTED"]

logger = logging.getLogger(__name__)

READ_UNCOMMITTED, READ_COMMITTED = 0, 1


class PartitionTransactions:
    """See the module docstring."""

    def __init__(self, log: "PartitionLog") -> None:
        self.log = log
        self._state: ProducerTransactions | None = None
        self._indexes: dict[int, tuple[object, TransactionIndex]] = {}  # segment base -> (segment, its index)
        # No .txnindex entry has its marker at or after this offset (None: not known yet). Entries
        # only come after the last (an ABORT marker appended, here or by a follower), or go (a
        # truncation: reset; retention, a cleaning: it stays an upper bound), so a fetch from here
        # on lists none: aborted_transactions answers it without a look at an index.
        self._no_aborted_from: int | None = None
        if log.log_end_offset == log.log_start_offset:
            # Every append of a producer's batch goes through the state (check_data, apply,
            # marker_batch), so an empty log's state, loaded now (no replay), stays whole: the
            # first read_committed read of a partition that plain producers filled need not
            # re-read all they wrote (a GB: ~0.5 s of the event loop before the first Fetch).
            self._state = ProducerTransactions.load(log, [(s.base_offset, self.index(s)) for s in log.segments])

    @property
    def state(self) -> ProducerTransactions:
        if self._state is None:
            self._state = ProducerTransactions.load(self.log, [(s.base_offset, self.index(s)) for s in self.log.segments])
        return self._state

    @property
    def open_count(self) -> int:
        """Transactions open here (0 while the state is not loaded)."""
        return len(self._state.open_transactions) if self._state is not None else 0

    def open_transaction(self, producer_id: int) -> int | None:
        return self.state.open_transaction(producer_id)

    def holds_open_transaction(self, producer_id: int) -> bool:
        """Whether the producer has a transaction open here (its idempotence state must stay)."""
        return self._state is not None and self._state.open_transaction(producer_id) is not None

    # ---- the .txnindex files -------------------------------------------------------------------
    def index(self, segment) -> TransactionIndex:
        """The ``.txnindex`` of one of the log's segments."""
        cached = self._indexes.get(segment.base_offset)
        if cached is not None and cached[0] is segment:
            return cached[1]
        if cached is not None:
            cached[1].close()
        if len(self._indexes) >= len(self.log.segments):
            live = {id(s) for s in self.log.segments}
            for base, (old, index) in list(self._indexes.items()):
                if id(old) not in live:
                    index.close()
                    del self._indexes[base]
        path = segment.log_path.with_name(segment.log_path.name[: -len(".log")] + TXN_INDEX_SUFFIX)
        index = TransactionIndex(path, segment.base_offset)
        self._indexes[segment.base_offset] = (segment, index)
        return index

    def _on_aborted(self, entry: AbortedTxn) -> None:
        self.index(self.log.segments[-1]).append(entry)  # the marker went to the active segment
        if self._no_aborted_from is not None:
            self._no_aborted_from = max(self._no_aborted_from, entry.last_offset + 1)

    def aborted_transactions(self, fetch_offset: int, upper_bound_offset: int) -> list[AbortedTxn]:
        """The aborted transactions a read_committed read of [fetch_offset, upper_bound_offset) lists."""
        clear = self._no_aborted_from
        if clear is not None and fetch_offset >= clear:
            return []  # (an entry is listed only if its marker is at or after fetch_offset)
        self.state  # noqa: B018 - loaded first: its replay writes the entries after its snapshot
        segments = self.log.segments
        first = 0
        for i in range(len(segments) - 1, -1, -1):
            if segments[i].base_offset <= fetch_offset:
                first = i
                break
        indexes = [self.index(s) for s in segments[first:]]
        found = collect_aborted_transactions(indexes, fetch_offset, upper_bound_offset)
        if clear is None and segments:
            # An entry is in the .txnindex of the segment holding its marker: past the last entry
            # of the latest index holding one, or, none holding one, from this fetch's segment on.
            ends = (index.last_offset for index in reversed(indexes))
            last = next((end for end in ends if end is not None), None)
            self._no_aborted_from = segments[first].base_offset if last is None else last + 1
        return found

    # ---- offsets -------------------------------------------------------------------------------
    def last_stable_offset(self, high_watermark: int) -> int:
        state = self.state
        state.on_high_watermark(high_watermark)  # a replay's completions are below it already
        return state.last_stable_offset(high_watermark, self.log.log_start_offset)

    def on_high_watermark(self, high_watermark: int) -> None:
        if self._state is not None:
            self._state.on_high_watermark(high_watermark)

    # ---- appends -------------------------------------------------------------------------------
    def check_data(self, info: BatchInfo) -> None:
        if info.producer_id >= 0:
            self.state.check_data(info)

    def on_data(self, info: BatchInfo, base_offset: int, now_ms: int) -> None:
        if info.producer_id >= 0:
            self.state.on_data(info, base_offset, now_ms)

    def marker_batch(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, committed: bool,
                     now_ms: int, leader_epoch: int) -> bytes:
        """The marker's control batch, once the epochs allow it (raises KafkaError otherwise)."""
        self.state.check_marker(producer_id, producer_epoch, EndTxnMarker(committed, coordinator_epoch))
        return build_end_txn_marker_batch(producer_id, producer_epoch, coordinator_epoch, committed, now_ms,
                                          leader_epoch)

    def marker_appended(self, producer_id: int, producer_epoch: int, coordinator_epoch: int, committed: bool,
                        offset: int, now_ms: int, high_watermark: int) -> None:
        state = self.state
        completed = state.on_marker(producer_id, producer_epoch, EndTxnMarker(committed, coordinator_epoch), offset,
                                    now_ms)
        if completed is None:
            return
        if completed.aborted:
            self._on_aborted(state.aborted_entry(completed))
        state.complete(completed, high_watermark)

    def apply(self, batch, info: BatchInfo) -> None:
        """A batch a follower (or a replay) appended at its own offset."""
        if info.producer_id < 0:
            return
        marker = None
        if info.is_control:
            try:
                marker = read_end_txn_marker(batch, info)
            except (InvalidControlRecord, ValueError) as e:
                logger.warning("%s: unreadable control batch at %d: %s", self.log.dir, info.base_offset, e)
        self.state.apply(info, info.base_offset, marker, self._on_aborted)

    # ---- upkeep --------------------------------------------------------------------------------
    def reset(self) -> None:
        """The log was truncated: rebuilt from it on next use (the snapshot may be above the cut)."""
        self._close_indexes()
        self._state = None
        self._no_aborted_from = None
        ProducerTransactions.delete_snapshot(self.log.dir)

    def remove_expired(self, now_ms: int, expiration_ms: int) -> None:
        if self._state is not None:
            self._state.remove_expired(now_ms, expiration_ms)

    def snapshot(self) -> "tuple[Path, str] | None":
        """At a clean shutdown: the indexes fsynced and closed, and the state's snapshot (file,
        content) to write with the producer states; None if it was never loaded. Raises OSError."""
        snapshot = None
        if self._state is not None and not self.log.closed:
            for _, index in self._indexes.values():
                index.sync()
            snapshot = self._state.snapshot(self.log.dir, self.log.log_end_offset)
        self._close_indexes()
        return snapshot

    def _close_indexes(self) -> None:
        for _, index in self._indexes.values():
            index.close()
        self._indexes.clear()
