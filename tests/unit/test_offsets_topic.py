"""``__consumer_offsets`` in process: the group coordinator's writes go through the Partition
(acks=all, durable, the ISR waited for) and a start replays what they wrote."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.groups.offsets_topic import TOPIC, ConsumerOffsetsTopic
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager

NODE = 1


def run(main, tmp_path, durability: str = "balanced"):
    async def wrapper():
        logs = LogManager(tmp_path, LogConfig(durability=durability, flush_interval_ms=5))
        logs.open_all({})
        partitions: dict = {}
        logs.on_durable = lambda log: partitions[(log.topic, log.partition)].on_local_flush()
        await logs.start()
        try:
            return await main(logs, partitions)
        finally:
            await logs.close()

    return asyncio.run(wrapper())


def offsets_partition(logs, partitions, replicas=(NODE,), min_insync_replicas: int = 1) -> Partition:
    partition = partitions[(TOPIC, 0)] = Partition(TOPIC, 0, logs.create(TOPIC, 0), logs, NODE,
                                                   PartitionConfig(compact=True, min_insync_replicas=min_insync_replicas))
    partition.make_leader(PartitionState(tuple(replicas), NODE, 0, tuple(replicas)))
    return partition


def test_a_write_returns_once_durable_and_a_start_replays_it(tmp_path):
    async def main(logs, partitions):
        partition = offsets_partition(logs, partitions)
        topic = ConsumerOffsetsTopic(lambda: partitions.get((TOPIC, 0)), commit_timeout_ms=5000)
        await topic.open()
        await topic.write([(b"group-a", b"one"), (b"group-b", b"two")])
        assert partition.log.durable_offset == 2 and partition.high_watermark == 2  # acknowledged means durable
        await topic.write([(b"group-a", None)])  # a tombstone
        assert list(topic.replay()) == [(0, b"group-a", b"one"), (1, b"group-b", b"two"), (2, b"group-a", None)]

        again = ConsumerOffsetsTopic(lambda: partitions.get((TOPIC, 0)), commit_timeout_ms=5000)
        await again.open()
        assert list(again.replay()) == list(topic.replay())

    run(main, tmp_path)


def test_a_write_waits_for_the_isr_and_times_out_without_it(tmp_path):
    async def main(logs, partitions):
        partition = offsets_partition(logs, partitions, replicas=(NODE, 2))
        topic = ConsumerOffsetsTopic(lambda: partitions.get((TOPIC, 0)), commit_timeout_ms=50)
        await topic.open()
        with pytest.raises(KafkaError) as timed_out:
            await topic.write([(b"group", b"offsets")])
        assert timed_out.value.error_code == ErrorCode.request_timed_out

        topic.commit_timeout_ms = 5000
        writing = asyncio.ensure_future(topic.write([(b"group", b"later")]))
        await asyncio.sleep(0.05)
        assert not writing.done()
        partition.follower_fetched(2, partition.log.log_end_offset, partition.log.log_end_offset)
        await asyncio.wait_for(writing, 5)

    run(main, tmp_path)


def test_a_broker_that_no_longer_leads_answers_not_coordinator(tmp_path):
    async def main(logs, partitions):
        partition = offsets_partition(logs, partitions, replicas=(NODE, 2), min_insync_replicas=2)
        topic = ConsumerOffsetsTopic(lambda: partitions.get((TOPIC, 0)), commit_timeout_ms=5000)
        await topic.open()
        partition.update_state(partition.state.changed(isr=(NODE,)))
        with pytest.raises(KafkaError) as small_isr:
            await topic.write([(b"group", b"offsets")])
        assert small_isr.value.error_code == ErrorCode.coordinator_not_available  # NOT_ENOUGH_REPLICAS, as Kafka maps it
        partition.make_follower(partition.state.changed(leader=2, leader_epoch=1))
        with pytest.raises(KafkaError) as moved:
            await topic.write([(b"group", b"offsets")])
        assert moved.value.error_code == ErrorCode.not_coordinator
        assert partition.log.log_end_offset == 0  # nothing was appended

        missing = ConsumerOffsetsTopic(lambda: None, commit_timeout_ms=5000)
        with pytest.raises(KafkaError) as not_here:
            await missing.open()
        assert not_here.value.error_code == ErrorCode.not_coordinator

    run(main, tmp_path)
