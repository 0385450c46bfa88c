"""The Partition's transactional side in process (cluster/partition_txn.py through the Partition):
the LSO, read_committed reads and their aborted transactions, fencing, the .txnindex files
through retention, DeleteRecords, a roll and a restart, a follower's appends and truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_partition import batch, leader, run
from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.partition_txn import READ_COMMITTED
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch, iter_records
from tidelog.storage.checkpoint import write_checkpoint_file

PID, OTHER = 7, 8


def txn_batch(producer_id: int, sequence: int, count: int = 2, epoch: int = 0) -> memoryview:
    return memoryview(bytearray(build_batch([(b"k", b"v%d" % i, []) for i in range(count)], producer_id=producer_id,
                                            producer_epoch=epoch, base_sequence=sequence, is_transactional=True)))


def values(records) -> list[bytes]:
    return [r.value for r in iter_records(records)]


def txn_indexes(partition: Partition) -> list[Path]:
    return sorted(Path(partition.log.dir).glob("*.txnindex"))


def test_read_committed_stops_at_the_first_open_transaction_and_lists_the_aborted_ones(tmp_path):
    async def main(logs):
        p = leader(logs)
        p.append_as_leader(txn_batch(PID, 0))                       # 0-1 aborted below
        p.append_as_leader(txn_batch(OTHER, 0))                     # 2-3 committed below
        p.append_marker(PID, 0, 0, committed=False)                 # 4 ABORT
        assert p.last_stable_offset == 2                            # OTHER's transaction holds it
        read = p.read(0, 1 << 20, True, isolation_level=READ_COMMITTED)
        assert values(read.records) == [b"v0", b"v1"] and read.last_stable_offset == 2
        assert [(a.producer_id, a.first_offset) for a in read.aborted_transactions] == [(PID, 0)]
        p.append_marker(OTHER, 0, 0, committed=True)                # 5 COMMIT
        assert p.last_stable_offset == p.high_watermark == 6
        read = p.read(0, 1 << 20, True, isolation_level=READ_COMMITTED)
        assert [r.offset for r in iter_records(read.records)] == [0, 1, 2, 3, 4, 5]
        assert [(a.producer_id, a.first_offset, a.last_offset) for a in read.aborted_transactions] == [(PID, 0, 4)]
        assert p.read(0, 1 << 20, True).aborted_transactions is None  # read_uncommitted lists none
        assert len(txn_indexes(p)) == 1

    run(main, tmp_path)


def test_a_fenced_producer_and_an_old_coordinator_are_refused(tmp_path):
    async def main(logs):
        p = leader(logs)
        p.append_as_leader(txn_batch(PID, 0))
        p.append_marker(PID, 1, 3, committed=False)  # the fence: epoch 1, coordinator epoch 3
        with pytest.raises(KafkaError) as raised:
            p.append_as_leader(txn_batch(PID, 2))  # the zombie, epoch 0
        assert raised.value.error_code == ErrorCode.invalid_producer_epoch
        with pytest.raises(KafkaError) as raised:
            p.append_marker(PID, 1, 2, committed=True)
        assert raised.value.error_code == ErrorCode.transaction_coordinator_fenced
        p.append_as_leader(txn_batch(PID, 0, epoch=1))  # the new epoch starts again
        with pytest.raises(KafkaError) as raised:
            p.append_as_leader(memoryview(bytearray(build_batch([(b"k", b"plain", [])], producer_id=PID, producer_epoch=1,
                                                                base_sequence=2))))
        assert raised.value.error_code == ErrorCode.invalid_txn_state  # a plain batch inside its transaction

    run(main, tmp_path)


def test_the_txnindex_follows_its_segment_through_rolls_retention_and_a_restart(tmp_path):
    async def main(logs):
        p = leader(logs)
        for round in range(3):
            p.append_as_leader(txn_batch(PID, 2 * round))
            p.append_marker(PID, 0, 0, committed=False)
            p.log.roll()
        assert len(txn_indexes(p)) == 3
        p.delete_records_before(6)  # the first two segments go, their indexes with them
        assert [f.name for f in txn_indexes(p)] == ["%020d.txnindex" % 6]
        read = p.read(6, 1 << 20, True, isolation_level=READ_COMMITTED)
        assert [(a.first_offset, a.last_offset) for a in read.aborted_transactions] == [(6, 8)]
        p.append_as_leader(txn_batch(PID, 6))  # open at 9
        write_checkpoint_file(*p.transactions.snapshot())  # a clean shutdown: the indexes synced, the snapshot
        return p.log.dir

    log_dir = run(main, tmp_path)
    assert (Path(log_dir) / "transaction-state.json").exists()

    async def reopened(logs):
        p = leader(logs)
        assert p.last_stable_offset == 9  # the open transaction is remembered
        p.append_marker(PID, 0, 0, committed=False)
        read = p.read(6, 1 << 20, True, isolation_level=READ_COMMITTED)
        assert [(a.first_offset, a.last_offset) for a in read.aborted_transactions] == [(6, 8), (9, 11)]

    run(reopened, tmp_path)


def test_an_unclean_restart_rebuilds_the_index_from_the_log(tmp_path):
    async def main(logs):
        p = leader(logs)
        p.append_as_leader(txn_batch(PID, 0))
        p.append_marker(PID, 0, 0, committed=False)
        for path in txn_indexes(p):
            path.write_bytes(b"\x00" * 7)  # torn
        p.transactions.reset()  # what a restart without a snapshot does: replay the log
        read = p.read(0, 1 << 20, True, isolation_level=READ_COMMITTED)
        assert [(a.producer_id, a.first_offset, a.last_offset) for a in read.aborted_transactions] == [(PID, 0, 2)]

    run(main, tmp_path)


def test_a_follower_applies_markers_and_truncation_forgets_what_it_cut(tmp_path):
    async def main(logs):
        source = leader(logs, replicas=(NODE_LEADER, 2), isr=(NODE_LEADER,))
        source.append_as_leader(txn_batch(PID, 0))
        source.append_marker(PID, 0, 0, committed=False)
        source.append_as_leader(txn_batch(OTHER, 0))
        fetched = source.read(0, 1 << 20, True, replica_id=2).records
        assert fetched
        follower_log = logs.create("t", 1)
        follower = logs.partitions[("t", 1)] = Partition("t", 1, follower_log, logs, 2, PartitionConfig())
        follower.make_follower(PartitionState((NODE_LEADER, 2), NODE_LEADER, 0, (NODE_LEADER, 2)))
        follower.append_as_follower(fetched, 5)
        assert follower.transactions.open_transaction(OTHER) == 3
        assert [(a.first_offset, a.last_offset) for a in follower.transactions.aborted_transactions(0, 5)] == [(0, 2)]
        follower.truncate_to(3)  # OTHER's batch was divergent
        assert follower.transactions.open_transaction(OTHER) is None
        assert follower.last_stable_offset == follower.high_watermark

    run(main, tmp_path)


NODE_LEADER = 1


def test_a_producer_with_an_open_transaction_does_not_expire(tmp_path):
    async def main(logs):
        p = leader(logs)
        p.append_as_leader(txn_batch(PID, 0), now_ms=1_000)
        p.append_as_leader(txn_batch(OTHER, 0), now_ms=1_000)
        p.append_marker(OTHER, 0, 0, committed=True, now_ms=1_000)
        p.remove_expired_producers(now_ms=10_000, expiration_ms=5_000)
        assert set(p.producer_state.producers) == {PID}  # its sequence numbers still matter
        assert p.transactions.open_transaction(PID) == 0
        p.append_as_leader(txn_batch(PID, 2))  # continues its sequence, not refused as a gap or a new producer

    run(main, tmp_path)


def test_a_partition_filled_by_plain_producers_since_it_was_created_never_replays_its_log(tmp_path):
    """Every append of a producer's batch goes through the transaction state, so a partition
    created empty knows its state without reading the log back: its first read_committed read
    (librdkafka's default isolation) must not re-read what plain producers wrote. It did: the
    first Fetch after 1 GB of them waited while the event loop re-read the whole GB."""
    async def main(logs):
        p = leader(logs)
        for _ in range(20):
            p.append_as_leader(batch(50))
        log_reads = []
        read = p.log.read
        p.log.read = lambda *args, **kwargs: log_reads.append(args) or read(*args, **kwargs)  # counts, then reads
        assert p.last_stable_offset == p.high_watermark == 1000
        assert log_reads == [], "the LSO re-read the log"
        fetched = p.read(0, 1 << 20, True, isolation_level=READ_COMMITTED)
        assert len(values(fetched.records)) == 1000 and fetched.aborted_transactions == []
        assert len(log_reads) == 1  # the fetch's own read
        p.append_as_leader(txn_batch(PID, 0))  # a transaction now: the LSO stops at it
        assert p.last_stable_offset == 1000

    run(main, tmp_path)
