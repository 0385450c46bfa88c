"""The partition side of transactions: open transactions, fencing checks, the LSO, the aborted list,
and the rebuild of state and .txnindex from a real log after a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol.control_records import EndTxnMarker, build_end_txn_marker_batch
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch, parse_batch_header
from tidelog.storage.log import LogConfig, PartitionLog
from tidelog.storage.producer_txn import SNAPSHOT_FILE, CompletedTxn, ProducerTransactions
from tidelog.storage.txn_index import AbortedTxn, TransactionIndex, collect_aborted_transactions


def data(producer_id, epoch=0, transactional=True, count=1, sequence=0):
    batch = build_batch([(None, b"v", [])] * count, timestamp_ms=1_000, producer_id=producer_id,
                        producer_epoch=epoch, base_sequence=sequence, is_transactional=transactional)
    return parse_batch_header(batch)


def error_of(call, *args):
    with pytest.raises(KafkaError) as e:
        call(*args)
    return e.value.error_code


def test_an_open_transaction_holds_the_lso_until_its_marker_is_replicated():
    state = ProducerTransactions()
    state.on_data(data(1, count=3), 10)
    state.on_data(data(-1, transactional=False), 13)
    assert state.open_transaction(1) == 10
    assert state.last_stable_offset(high_watermark=14) == 10
    completed = state.on_marker(1, 0, EndTxnMarker(True, 0), 14)
    assert completed == CompletedTxn(1, 10, 14, aborted=False)
    state.complete(completed)
    assert state.open_transaction(1) is None
    assert state.last_stable_offset(high_watermark=14) == 10, "the marker is not below the high watermark yet"
    state.on_high_watermark(15)
    assert state.last_stable_offset(high_watermark=15) == 15
    assert state.first_unstable_offset() is None


def test_the_lso_never_passes_the_high_watermark_nor_sits_below_the_log_start():
    state = ProducerTransactions()
    assert state.last_stable_offset(high_watermark=7) == 7
    state.on_data(data(1), 20)
    assert state.last_stable_offset(high_watermark=15) == 15
    assert state.last_stable_offset(high_watermark=30, log_start_offset=25) == 25


def test_aborted_entry_carries_the_lso_after_the_marker():
    state = ProducerTransactions()
    state.on_data(data(1), 0)
    state.on_data(data(2), 1)
    state.on_data(data(3), 2)
    aborted = state.on_marker(2, 0, EndTxnMarker(False, 0), 3)
    assert state.aborted_entry(aborted) == AbortedTxn(2, 1, 3, 0), "producer 1's transaction is still open at 0"
    state.complete(aborted, high_watermark=10)
    first = state.on_marker(1, 0, EndTxnMarker(False, 0), 4)
    assert state.aborted_entry(first) == AbortedTxn(1, 0, 4, 2)
    state.complete(first)
    last = state.on_marker(3, 0, EndTxnMarker(False, 0), 5)
    assert state.aborted_entry(last) == AbortedTxn(3, 2, 5, 6)


def test_a_marker_without_data_here_completes_nothing_but_moves_the_epochs():
    state = ProducerTransactions()
    assert state.on_marker(5, 3, EndTxnMarker(False, 2), 0) is None
    assert error_of(state.check_data, data(5, epoch=2)) == ErrorCode.invalid_producer_epoch
    assert error_of(state.check_marker, 5, 3, EndTxnMarker(True, 1)) == ErrorCode.transaction_coordinator_fenced
    state.check_marker(5, 3, EndTxnMarker(True, 2))


def test_zombie_fencing_a_bumped_abort_marker_fences_the_old_epoch():
    state = ProducerTransactions()
    state.check_data(data(1, epoch=4))
    state.on_data(data(1, epoch=4), 0)
    state.check_data(data(1, epoch=4))  # more of the same transaction
    completed = state.on_marker(1, 5, EndTxnMarker(False, 0), 1)  # the coordinator fenced epoch 4
    state.complete(completed)
    assert error_of(state.check_data, data(1, epoch=4)) == ErrorCode.invalid_producer_epoch
    assert error_of(state.check_marker, 1, 4, EndTxnMarker(True, 0)) == ErrorCode.invalid_producer_epoch
    state.check_data(data(1, epoch=5))


def test_a_plain_batch_inside_a_transaction_is_an_invalid_txn_state():
    state = ProducerTransactions()
    state.on_data(data(1), 0)
    assert error_of(state.check_data, data(1, transactional=False)) == ErrorCode.invalid_txn_state
    state.check_data(data(2, transactional=False))
    state.complete(state.on_marker(1, 0, EndTxnMarker(True, 0), 1))
    state.check_data(data(1, transactional=False))


def test_expiry_spares_producers_with_an_open_transaction():
    state = ProducerTransactions()
    state.on_data(data(1), 0, timestamp_ms=1_000)
    state.on_data(data(2), 1, timestamp_ms=1_000)
    state.complete(state.on_marker(2, 0, EndTxnMarker(True, 0), 2, timestamp_ms=1_000))
    assert state.remove_expired(now_ms=10_000, expiration_ms=5_000) == 1
    assert set(state.producers) == {1}


def test_log_start_offset_drops_completed_transactions_below_it():
    state = ProducerTransactions()
    state.on_data(data(1), 0)
    state.complete(state.on_marker(1, 0, EndTxnMarker(True, 0), 5))
    assert state.first_unstable_offset() == 0
    state.on_log_start_offset(6)
    assert state.first_unstable_offset() is None


# ---- a model: random transactional traffic over segments ----------------------------------------

class Model:
    """A partition as the wiring will drive it: append, markers to the active segment's index, rolls,
    high watermark; beside it the truth (every transaction's first and last offset)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state = ProducerTransactions()
        self.segments: list[tuple[int, TransactionIndex]] = [(0, TransactionIndex(directory / "0.txnindex", 0))]
        self.end = 0
        self.high_watermark = 0
        self.open: dict[int, int] = {}
        self.done: list[tuple[int, int, int, bool]] = []  # pid, first, marker, aborted

    def produce(self, pid: int, transactional: bool, count: int) -> None:
        info = data(pid, transactional=transactional, count=count)
        if pid in self.open and not transactional:
            assert error_of(self.state.check_data, info) == ErrorCode.invalid_txn_state
            return
        self.state.check_data(info)
        self.state.on_data(info, self.end)
        if transactional and pid not in self.open:
            self.open[pid] = self.end
        self.end += count

    def end_txn(self, pid: int, committed: bool) -> None:
        marker = EndTxnMarker(committed, 0)
        self.state.check_marker(pid, 0, marker)
        completed = self.state.on_marker(pid, 0, marker, self.end)
        if pid in self.open:
            assert completed == CompletedTxn(pid, self.open[pid], self.end, not committed)
            if not committed:
                entry = self.state.aborted_entry(completed)
                others = [first for other, first in self.open.items() if other != pid]
                assert entry.last_stable_offset == min(others, default=self.end + 1)
                self.segments[-1][1].append(entry)
            self.state.complete(completed, self.high_watermark)
            self.done.append((pid, self.open.pop(pid), self.end, not committed))
        else:
            assert completed is None
        self.end += 1

    def roll(self) -> None:
        if self.segments[-1][0] < self.end:
            self.segments.append((self.end, TransactionIndex(self.directory / f"{self.end}.txnindex", self.end)))

    def advance(self, by: int) -> None:
        self.high_watermark = min(self.end, self.high_watermark + by)
        self.state.on_high_watermark(self.high_watermark)

    def true_lso(self) -> int:
        unstable = [first for first in self.open.values()]
        unstable += [first for _, first, marker, _ in self.done if marker >= self.high_watermark]
        return min(min(unstable, default=self.high_watermark), self.high_watermark)

    def aborted_overlapping(self, fetch_offset: int, upper: int) -> list[tuple[int, int]]:
        return sorted((pid, first) for pid, first, marker, aborted in self.done
                      if aborted and marker >= fetch_offset and first < upper)

    def indexes_from(self, offset: int) -> list[TransactionIndex]:
        start = max(i for i, (base, _) in enumerate(self.segments) if base <= offset)
        return [index for _, index in self.segments[start:]]


operations = st.lists(st.one_of(
    st.tuples(st.just("produce"), st.integers(1, 4), st.booleans(), st.integers(1, 5)),
    st.tuples(st.just("end"), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("roll")),
    st.tuples(st.just("advance"), st.integers(0, 20)),
), max_size=60)


@settings(max_examples=150, deadline=None)
@given(operations, st.data())
def test_lso_and_aborted_lists_match_the_truth(ops, drawn):
    with tempfile.TemporaryDirectory() as directory:
        model = Model(Path(directory))
        for op in ops:
            getattr(model, {"produce": "produce", "end": "end_txn", "roll": "roll", "advance": "advance"}[op[0]])(*op[1:])
            assert model.state.last_stable_offset(model.high_watermark) == model.true_lso()
        lso = model.true_lso()
        if lso > 0:
            fetch_offset = drawn.draw(st.integers(0, lso - 1))
            upper = drawn.draw(st.integers(fetch_offset + 1, lso))
            found = collect_aborted_transactions(model.indexes_from(fetch_offset), fetch_offset, upper)
            assert sorted((e.producer_id, e.first_offset) for e in found) == model.aborted_overlapping(fetch_offset, upper)
        for _, index in model.segments:
            index.close()


# ---- recovery: state and .txnindex rebuilt from a real log ---------------------------------------

def write_transactional_log(directory: Path) -> tuple[PartitionLog, Model]:
    """A real log with small segments, driven like the model, indexes written beside it."""
    log = PartitionLog.open(directory / "t-0", "t", 0, LogConfig(segment_bytes=400), recover=False)
    model = Model(directory / "t-0")
    model.segments = []

    def index_for(base):
        if not model.segments or model.segments[-1][0] != base:
            model.segments.append((base, TransactionIndex(log.dir / f"{base:020d}.txnindex", base)))
        return model.segments[-1][1]

    script = [(1, "d"), (2, "d"), (3, "p"), (1, "d"), (2, "abort"), (4, "d"), (1, "commit"), (3, "p"), (5, "d"),
              (4, "abort"), (6, "d"), (5, "d"), (6, "commit"), (7, "d"), (5, "abort"), (8, "d"), (8, "abort"), (9, "d")]
    for pid, what in script:
        if what in ("d", "p"):
            batch = bytearray(build_batch([(None, b"x" * 40, [])] * 2, timestamp_ms=1_000, producer_id=pid,
                                          producer_epoch=0, base_sequence=0, is_transactional=what == "d"))
            info = parse_batch_header(batch)
            model.state.check_data(info)
            offset = log.append(memoryview(batch), info)
            index_for(log.active_segment.base_offset)
            model.state.on_data(info, offset)
        else:
            marker = EndTxnMarker(what == "commit", 3)
            batch = bytearray(build_end_txn_marker_batch(pid, 0, 3, marker.committed, 1_000))
            info = parse_batch_header(batch)
            model.state.check_marker(pid, 0, marker)
            offset = log.append(memoryview(batch), info)
            index = index_for(log.active_segment.base_offset)
            completed = model.state.on_marker(pid, 0, marker, offset)
            if completed is not None:
                if completed.aborted:
                    index.append(model.state.aborted_entry(completed))
                model.state.complete(completed)
    assert len(log.segments) >= 4, "the script should span several segments"
    assert [base for base, _ in model.segments] == [s.base_offset for s in log.segments]
    return log, model


def index_contents(segments):
    return {base: index.entries() for base, index in segments}


def test_load_rebuilds_state_and_every_index_from_the_log(tmp_path):
    log, model = write_transactional_log(tmp_path)
    written = index_contents(model.segments)
    assert sum(len(v) for v in written.values()) == 4
    for _, index in model.segments:
        index.delete()
    rebuilt = [(base, TransactionIndex(log.dir / f"{base:020d}.txnindex", base)) for base, _ in model.segments]
    state = ProducerTransactions.load(log, rebuilt)
    assert index_contents(rebuilt) == written
    assert state.open_transactions == model.state.open_transactions
    assert sorted(state.open_transactions.values()) == [7, 9]
    assert state.last_stable_offset(log.log_end_offset) == model.state.last_stable_offset(log.log_end_offset)


def test_load_from_a_snapshot_replays_only_what_follows_it(tmp_path):
    log, model = write_transactional_log(tmp_path)
    written = index_contents(model.segments)
    middle = model.segments[len(model.segments) // 2][0]
    prefix_state = ProducerTransactions.load(_Prefix(log, middle))
    prefix_state.save(log.dir, middle)
    torn = model.segments[-1][1]
    torn.close()
    with open(torn.path, "ab") as f:  # the crash tore the last index
        f.write(b"\x00" * 20)
    reopened = [(base, TransactionIndex(log.dir / f"{base:020d}.txnindex", base)) for base, _ in model.segments]
    state = ProducerTransactions.load(log, reopened)
    assert index_contents(reopened) == written
    assert state.open_transactions == model.state.open_transactions


def test_a_snapshot_above_the_recovery_point_or_outside_the_log_is_not_used(tmp_path):
    log, model = write_transactional_log(tmp_path)
    ProducerTransactions().save(log.dir, log.log_end_offset)  # claims: nothing open at the end
    assert ProducerTransactions.load(log).open_transactions == {}
    state = ProducerTransactions.load(log, snapshot_usable_below=log.log_end_offset - 1)
    assert state.open_transactions == model.state.open_transactions
    ProducerTransactions().save(log.dir, log.log_end_offset + 10)
    assert ProducerTransactions.load(log).open_transactions == model.state.open_transactions
    (log.dir / SNAPSHOT_FILE).write_text("{not json")
    assert ProducerTransactions.load(log).open_transactions == model.state.open_transactions
    ProducerTransactions.delete_snapshot(log.dir)
    assert not (log.dir / SNAPSHOT_FILE).exists()


class _Prefix:
    """The log as it was when its end was ``end`` (for a snapshot taken then)."""

    def __init__(self, log: PartitionLog, end: int) -> None:
        self.dir, self.log_start_offset, self.log_end_offset, self._log = log.dir, log.log_start_offset, end, log
        self.segments = log.segments  # the replay reads batch headers from them, up to log_end_offset

    def read(self, offset, max_bytes, min_one_batch):
        return self._log.read(offset, max_bytes, min_one_batch, max_offset=self.log_end_offset)


def test_a_damaged_index_makes_the_replay_start_at_the_log_start(tmp_path):
    log, model = write_transactional_log(tmp_path)
    written = index_contents(model.segments)
    ProducerTransactions().save(log.dir, log.log_end_offset)  # a snapshot that would skip everything
    damaged = next(index for _, index in model.segments if len(index))
    damaged.close()
    damaged.path.write_bytes(b"\x00\x07" + damaged.path.read_bytes()[2:])  # an unknown entry version
    reopened = [(base, TransactionIndex(log.dir / f"{base:020d}.txnindex", base)) for base, _ in model.segments]
    state = ProducerTransactions.load(log, reopened)
    assert index_contents(reopened) == written
    assert state.open_transactions == model.state.open_transactions


def test_replay_reads_batch_headers_not_the_records(tmp_path, monkeypatch):
    """Rebuilding the state after a crash reads each batch's header (and a marker's few bytes),
    not the records: a GB partition's first read_committed Fetch replayed all of it in the event loop."""
    import os

    from tidelog.storage import segment as segment_module

    log = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(segment_bytes=1 << 30), recover=False)
    value = os.urandom(256 << 10)
    for i in range(16):
        batch = bytearray(build_batch([(None, value, [])], timestamp_ms=1_000, producer_id=7, producer_epoch=0,
                                      base_sequence=i, is_transactional=True))
        log.append(memoryview(batch), parse_batch_header(batch))
    marker = bytearray(build_end_txn_marker_batch(7, 0, 3, True, 1_000))
    log.append(memoryview(marker), parse_batch_header(marker))
    read = []
    real_pread = os.pread

    def counting_pread(fd, n, position):
        data = real_pread(fd, n, position)
        read.append(len(data))
        return data

    monkeypatch.setattr(segment_module.os, "pread", counting_pread)
    state = ProducerTransactions.load(log, [(s.base_offset, TransactionIndex(log.dir / "0.txnindex", 0))
                                            for s in log.segments])
    assert state.open_transactions == {} and 7 in state.producers  # the commit was replayed
    log_bytes = log.active_segment.size_bytes
    assert sum(read) < log_bytes // 10, f"read {sum(read)} bytes of a {log_bytes}-byte log to replay 17 headers"
    log.close()
