"""The .txnindex of a segment: Kafka's AbortedTxn layout on disk, reopen, damage, truncation, lookups."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.storage.faults import faults
from tidelog.storage.txn_index import AbortedTxn, TransactionIndex, collect_aborted_transactions


def test_entries_are_kafkas_34_byte_aborted_txn_v0(tmp_path):
    path = tmp_path / "00000000000000000100.txnindex"
    index = TransactionIndex(path, 100)
    assert not path.exists(), "created with its first entry, not before"
    index.append(AbortedTxn(7, 100, 105, 106))
    index.append(AbortedTxn(-3 & 0x7FFF_FFFF_FFFF_FFFF, 101, 2**40, 2**40 + 1))
    index.close()
    expected = struct.pack(">hqqqq", 0, 7, 100, 105, 106) + struct.pack(">hqqqq", 0, 0x7FFF_FFFF_FFFF_FFFD, 101, 2**40, 2**40 + 1)
    assert path.read_bytes() == expected and len(expected) == 68
    reopened = TransactionIndex(path, 100)
    assert reopened.entries() == [AbortedTxn(7, 100, 105, 106), AbortedTxn(0x7FFF_FFFF_FFFF_FFFD, 101, 2**40, 2**40 + 1)]
    assert reopened.sane and reopened.last_offset == 2**40


def test_appends_must_follow_the_last_marker(tmp_path):
    index = TransactionIndex(tmp_path / "0.txnindex", 0)
    index.append(AbortedTxn(1, 0, 10, 11))
    with pytest.raises(ValueError):
        index.append(AbortedTxn(2, 3, 10, 11))
    with pytest.raises(ValueError):
        index.append(AbortedTxn(2, 3, 9, 11))
    assert len(index) == 1


def test_a_torn_tail_is_cut_on_open(tmp_path):
    path = tmp_path / "0.txnindex"
    index = TransactionIndex(path, 0)
    index.append(AbortedTxn(1, 0, 10, 11))
    index.close()
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x00\x00\x00")
    reopened = TransactionIndex(path, 0)
    assert reopened.entries() == [AbortedTxn(1, 0, 10, 11)] and reopened.sane
    assert path.stat().st_size == 34
    reopened.append(AbortedTxn(2, 12, 20, 21))
    reopened.close()
    assert TransactionIndex(path, 0).entries() == [AbortedTxn(1, 0, 10, 11), AbortedTxn(2, 12, 20, 21)]


@pytest.mark.parametrize("raw", [
    struct.pack(">hqqqq", 1, 1, 100, 105, 106),                                      # unknown version
    struct.pack(">hqqqq", 0, 1, 10, 50, 51),                                         # ends before the segment
    struct.pack(">hqqqq", 0, 1, 100, 110, 111) + struct.pack(">hqqqq", 0, 1, 100, 105, 106),  # out of order
    struct.pack(">hqqqq", 0, 1, 120, 110, 111),                                      # first after last
])
def test_insane_entries_are_reported_and_lookups_still_answer(tmp_path, raw):
    path = tmp_path / "100.txnindex"
    path.write_bytes(raw)
    index = TransactionIndex(path, 100)
    assert not index.sane
    index.collect(0, 1000)  # a full scan, no exception
    index.reset()
    assert index.sane and len(index) == 0 and path.stat().st_size == 0


def test_truncate_drops_entries_from_the_cut(tmp_path):
    path = tmp_path / "0.txnindex"
    index = TransactionIndex(path, 0)
    for i in range(5):
        index.append(AbortedTxn(i, 10 * i, 10 * i + 5, 10 * i + 6))
    index.truncate_to(25)
    assert [e.last_offset for e in index.entries()] == [5, 15]
    assert path.stat().st_size == 2 * 34
    index.truncate_to(1000)
    assert len(index) == 2
    index.append(AbortedTxn(9, 30, 35, 36))
    index.close()
    assert [e.last_offset for e in TransactionIndex(path, 0).entries()] == [5, 15, 35]


def test_a_failed_write_leaves_the_index_as_it_was(tmp_path):
    index = TransactionIndex(tmp_path / "0.txnindex", 0)
    index.append(AbortedTxn(1, 0, 5, 6))
    faults.fail_next_write(errno.ENOSPC, target="index")
    try:
        with pytest.raises(OSError):
            index.append(AbortedTxn(2, 7, 9, 10))
    finally:
        faults.reset()
    assert index.entries() == [AbortedTxn(1, 0, 5, 6)]
    index.append(AbortedTxn(2, 7, 9, 10))
    index.sync()
    index.close()
    assert len(TransactionIndex(tmp_path / "0.txnindex", 0)) == 2


def kafka_collect(indexes, fetch_offset, upper_bound_offset):
    """Kafka's TransactionIndex.collectAbortedTxns + LocalLog walk, entry by entry."""
    found = []
    for index in indexes:
        for entry in index.entries():
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound_offset:
                found.append(entry)
            if entry.last_stable_offset >= upper_bound_offset:
                return found
    return found


@st.composite
def aborted_histories(draw):
    """Entries as a log produces them: markers in increasing order, LSOs nondecreasing and at most
    marker + 1, first offsets at or after the previous LSO, split over segments."""
    entries, offset, lso = [], 0, 0
    for _ in range(draw(st.integers(0, 30))):
        first = draw(st.integers(lso, offset + 5))
        last = max(first, offset) + draw(st.integers(1, 10))
        lso = draw(st.integers(max(lso, first + 1 if draw(st.booleans()) else lso), last + 1))
        entries.append(AbortedTxn(draw(st.integers(0, 5)), first, last, lso))
        offset = last + 1
    cuts = sorted(set(draw(st.lists(st.integers(1, max(offset, 1)), max_size=4))))
    return entries, [0] + cuts


@settings(max_examples=200, deadline=None)
@given(aborted_histories(), st.integers(0, 400), st.integers(1, 400))
def test_bisected_lookups_equal_kafkas_walk(tmp_path_factory, history, fetch_offset, span):
    entries, bases = history
    directory = tmp_path_factory.mktemp("idx")
    indexes = [TransactionIndex(directory / f"{base}.txnindex", base) for base in bases]
    for entry in entries:
        position = max(i for i, base in enumerate(bases) if base <= entry.last_offset)
        indexes[position].append(entry)
    start = max(i for i, base in enumerate(bases) if base <= fetch_offset)
    upper = fetch_offset + span
    assert collect_aborted_transactions(indexes[start:], fetch_offset, upper) == kafka_collect(indexes[start:], fetch_offset, upper)
    for index in indexes:
        index.close()
