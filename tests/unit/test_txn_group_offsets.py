"""Transactional offset commits pending until their producer's marker: apply on COMMIT, drop on ABORT."""

from __future__ import annotations

from tidelog.groups.txn_offsets import PendingOffset, PendingTxnOffsets


def test_offsets_wait_for_the_marker_then_apply_or_vanish():
    pending = PendingTxnOffsets()
    pending.add(7, "g", "t", 0, "offset 10", record_offset=100)
    pending.add(7, "g", "t", 0, "offset 12", record_offset=101)  # later in the same transaction
    pending.add(7, "h", "t", 1, "offset 3", record_offset=102)
    pending.add(8, "g", "t", 1, "offset 5", record_offset=103)
    assert len(pending) == 3 + 1 - 1
    assert pending.has_pending("g") and pending.has_pending("g", "t", 0) and pending.has_pending("g", "t", 1)
    assert not pending.has_pending("g", "t", 2) and not pending.has_pending("other")
    assert pending.producers("g") == {7, 8}
    applied = pending.complete(7, committed=True)
    assert sorted(applied) == [PendingOffset("g", "t", 0, "offset 12", 101), PendingOffset("h", "t", 1, "offset 3", 102)]
    assert not pending.has_pending("g", "t", 0) and not pending.has_pending("h")
    assert pending.complete(7, committed=True) == [], "a second marker applies nothing"
    assert pending.complete(8, committed=False) == []
    assert not pending.has_pending("g") and len(pending) == 0


def test_a_deleted_group_loses_its_pending_offsets_only():
    pending = PendingTxnOffsets()
    pending.add(7, "g", "t", 0, 1, 10)
    pending.add(7, "h", "t", 0, 2, 11)
    pending.drop_group("g")
    assert not pending.has_pending("g")
    assert pending.complete(7, committed=True) == [PendingOffset("h", "t", 0, 2, 11)]
