"""A consumer's next Fetch after its partition's leader truncated and took different records
at the same offsets (storage/segment.py keeps where the last read ended, ``_read_hint``): the
Fetch from where the consumer's last read ended returns the new records, whole batches from
the one holding that offset, never bytes from where the old batch at that offset sat.

Broker 1 (in process, real etcd) leads; the controller's moves are played by the test with
metadata writes: leadership to broker 2 (broker 1 truncates its divergent tail, as its fetcher
does), then back to broker 1, which takes different records at the truncated offsets. The
consumer's Fetch requests go over a real socket (the same Fetch v11 a client sends)."""

from __future__ import annotations

from tests.fault.test_cluster_replication import KEY, TOPIC, Scenario, etcd, run, wait_for  # noqa: F401
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import iter_records


def _records(partition) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value) for r in iter_records(partition.records or b"")]


def test_a_fetch_from_where_the_last_ended_after_a_truncation_reads_the_new_records(tmp_path, etcd):  # noqa: F811
    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1,))
        try:
            producer, consumer = s.channel(), s.channel()
            for i, value in enumerate([b"a0", b"a1", b"a2", b"a3"]):
                assert await s.produce(producer, [value]) == (ErrorCode.none, i)
            first = await s.fetch(consumer, 0, replica_id=-1, leader_epoch=-1)
            assert _records(first) == [(0, b"a0"), (1, b"a1"), (2, b"a2"), (3, b"a3")]  # it reads on from 4

            state = s.broker.metadata.partitions[KEY]
            assert await s.broker.metadata.compare_and_set_partition(TOPIC, 0, state.changed(
                leader=2, leader_epoch=1, isr=(2,))) is not None  # as the controller would
            await wait_for(lambda: KEY not in s.broker.replicas.leading, message="broker 1 following")
            s.broker.replicas.get(*KEY).truncate_to(2)  # what its fetcher does with the divergent tail
            state = s.broker.metadata.partitions[KEY]
            assert await s.broker.metadata.compare_and_set_partition(TOPIC, 0, state.changed(
                leader=1, leader_epoch=2, isr=(1,))) is not None
            await wait_for(lambda: KEY in s.broker.replicas.leading, message="broker 1 leading again")

            # different records at offsets 2-4: one larger batch, where offset 4's batch began before
            assert await s.produce(producer, [b"b2" * 40, b"b3" * 40, b"b4" * 40]) == (ErrorCode.none, 2)
            assert await s.produce(producer, [b"b5"]) == (ErrorCode.none, 5)
            again = await s.fetch(consumer, 4, replica_id=-1, leader_epoch=-1)
            assert again.error_code == ErrorCode.none
            assert _records(again) == [(2, b"b2" * 40), (3, b"b3" * 40), (4, b"b4" * 40), (5, b"b5")]
        finally:
            await s.stop()

    run(scenario())
