"""A read_committed read from past the last aborted transaction's marker lists none without a look
at a ``.txnindex`` (cluster/partition_txn.py ``_no_aborted_from``), and the reads that must list
one still do: after a new ABORT marker (as leader, and a follower's), after a truncation and new
aborted transactions below the offset it had, after a restart whose replay rebuilds the entries,
and where the first lookup came from a share group (no Fetch loaded the state before)."""

from __future__ import annotations

from tests.unit.test_partition import leader, run
from tests.unit.test_txn_partition_hooks import NODE_LEADER, OTHER, PID, txn_batch, txn_indexes
from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.partition_txn import READ_COMMITTED
from tidelog.protocol.control_records import build_end_txn_marker_batch
from tidelog.protocol.records import build_batch
from tidelog.storage import txn_index


def plain(count: int = 2) -> memoryview:
    return memoryview(bytearray(build_batch([(b"k", b"p%d" % i, []) for i in range(count)])))


def aborted(partition: Partition, fetch_offset: int) -> list[tuple[int, int, int]]:
    read = partition.read(fetch_offset, 1 << 20, True, isolation_level=READ_COMMITTED)
    return [(a.producer_id, a.first_offset, a.last_offset) for a in read.aborted_transactions]


class CountingCollect:
    """txn_index.TransactionIndex.collect, counted: how many index lookups the reads made."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        original = txn_index.TransactionIndex.collect

        def counted(index, *args):
            self.calls += 1
            return original(index, *args)
        monkeypatch.setattr(txn_index.TransactionIndex, "collect", counted)


def test_a_read_past_the_last_aborted_marker_looks_at_no_index_and_a_new_abort_is_listed(tmp_path, monkeypatch):
    lookups = CountingCollect(monkeypatch)

    async def main(logs):
        p = leader(logs)
        p.append_as_leader(txn_batch(PID, 0))           # 0-1
        p.append_marker(PID, 0, 0, committed=False)     # 2 ABORT
        p.append_as_leader(plain())                     # 3-4
        p.log.roll()
        p.append_as_leader(plain())                     # 5-6
        assert aborted(p, 0) == [(PID, 0, 2)]
        calls = lookups.calls
        for _ in range(5):
            assert aborted(p, 3) == [] and aborted(p, 5) == []
        assert lookups.calls == calls  # nothing looked up: past the marker at 2
        p.append_as_leader(txn_batch(OTHER, 0))         # 7-8
        p.append_marker(OTHER, 0, 0, committed=False)   # 9 ABORT, in the new segment
        p.append_as_leader(plain())                     # 10-11
        assert aborted(p, 5) == [(OTHER, 7, 9)]
        assert aborted(p, 3) == [(OTHER, 7, 9)]
        calls = lookups.calls
        assert aborted(p, 10) == []
        assert lookups.calls == calls

    run(main, tmp_path)


def test_a_partition_without_aborted_transactions_looks_its_indexes_up_once(tmp_path, monkeypatch):
    lookups = CountingCollect(monkeypatch)

    async def main(logs):
        p = leader(logs)
        p.append_as_leader(plain())
        p.log.roll()
        p.append_as_leader(txn_batch(PID, 0))
        p.append_marker(PID, 0, 0, committed=True)
        assert aborted(p, 2) == []
        calls = lookups.calls
        assert aborted(p, 2) == [] and aborted(p, 4) == []
        assert lookups.calls == calls
        assert aborted(p, 0) == []  # (before the segment it knew clear: looked up)
        assert lookups.calls > calls

    run(main, tmp_path)


def test_a_followers_abort_marker_and_a_truncation_below_the_known_offset(tmp_path):
    async def main(logs):
        source = leader(logs, replicas=(NODE_LEADER, 2), isr=(NODE_LEADER,))
        source.append_as_leader(plain(3))                # 0-2
        source.append_as_leader(txn_batch(PID, 0))       # 3-4
        source.append_marker(PID, 0, 0, committed=False)  # 5 ABORT
        source.append_as_leader(plain())                 # 6-7
        fetched = source.read(0, 1 << 20, True, replica_id=2).records
        follower_log = logs.create("t", 1)
        follower = logs.partitions[("t", 1)] = Partition("t", 1, follower_log, logs, 2, PartitionConfig())
        follower.make_follower(PartitionState((NODE_LEADER, 2), NODE_LEADER, 0, (NODE_LEADER, 2)))
        follower.append_as_follower(fetched, 8)
        follower.high_watermark = 8
        assert follower.transactions.aborted_transactions(6, 8) == []  # known clear from 6 on
        follower.truncate_to(3)  # a divergent tail cut: the transaction and its marker go
        assert follower.transactions.aborted_transactions(0, 3) == []
        # The new leader's log from 3: another producer's transaction, aborted, below 6.
        follower.append_as_follower(memoryview(bytearray(build_batch(
            [(b"k", b"o", [])], base_offset=3, producer_id=OTHER, producer_epoch=0, base_sequence=0,
            is_transactional=True))), 4)
        marker = build_end_txn_marker_batch(OTHER, 0, 0, False, 0, 0)  # ABORT at 4
        follower.append_as_follower(memoryview(bytearray(_at(marker, 4))), 5)
        assert [(a.producer_id, a.first_offset, a.last_offset)
                for a in follower.transactions.aborted_transactions(4, 5)] == [(OTHER, 3, 4)]
        assert [(a.producer_id, a.first_offset, a.last_offset)
                for a in follower.transactions.aborted_transactions(0, 5)] == [(OTHER, 3, 4)]

    run(main, tmp_path)


def _at(batch: bytes, base_offset: int) -> bytes:
    return base_offset.to_bytes(8, "big") + bytes(batch[8:])


def test_the_first_lookup_without_a_loaded_state_sees_the_entries_its_replay_rebuilds(tmp_path):
    async def main(logs):
        p = leader(logs)
        p.append_as_leader(plain())                      # 0-1
        p.append_as_leader(txn_batch(PID, 0))            # 2-3
        p.append_marker(PID, 0, 0, committed=False)      # 4 ABORT
        p.append_as_leader(plain())                      # 5-6
        for path in txn_indexes(p):
            path.unlink()  # lost, as after an unclean shutdown (written to the page cache only)
        p.transactions.reset()  # what a restart without a snapshot does: replay the log at first use
        # (a share group's read asks this without a Fetch having loaded the state)
        assert [(a.producer_id, a.first_offset, a.last_offset)
                for a in p.transactions.aborted_transactions(0, 7)] == [(PID, 2, 4)]
        assert p.transactions.aborted_transactions(5, 7) == []

    run(main, tmp_path)
