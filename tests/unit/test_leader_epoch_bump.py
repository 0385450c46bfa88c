"""acks=all waits across a new leader epoch on the broker already leading, in process over a
real LogManager and Partition.

Kafka keeps a DelayedProduce in purgatory when its partition's leader epoch moves on while the
same broker stays leader (Partition.makeLeader keeps the log; DelayedProduce checks only that
this broker still leads and how far the high watermark is): it completes when the high watermark
passes it, or times out. Failing it NOT_LEADER_OR_FOLLOWER while a later batch of the same
producer succeeds would make an idempotent librdkafka producer report the failed batch's records
delivered without offsets (its implicit acknowledgement).
"""

from __future__ import annotations

import asyncio

from tidelog.cluster.partition import PartitionConfig, wait_for_acks
from tidelog.protocol.errors import ErrorCode
from tests.unit.test_acks_isr_shortfall import durable, run
from tests.unit.test_partition import RecordingIsrWriter, batch, leader


def test_a_wait_continues_when_the_same_broker_leads_at_a_new_epoch(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2), config=PartitionConfig(min_insync_replicas=2),
                           isr_writer=RecordingIsrWriter())
        first = partition.append_as_leader(batch(2, producer_id=7, base_sequence=0))
        waiting = asyncio.ensure_future(wait_for_acks([(partition, first.end_offset)], -1, 10.0, logs))
        await durable(logs, partition, first.end_offset)
        await asyncio.sleep(0)
        assert not waiting.done()  # follower 2 has not copied it yet

        # The controller writes a new leader epoch naming this broker again (same ISR).
        partition.make_leader(partition.state.changed(leader_epoch=partition.state.leader_epoch + 1))
        await asyncio.sleep(0)
        assert not waiting.done()

        second = partition.append_as_leader(batch(2, producer_id=7, base_sequence=2))
        await durable(logs, partition, second.end_offset)
        partition.follower_fetched(2, second.end_offset, partition.log.log_end_offset)
        assert partition.high_watermark == second.end_offset
        assert await waiting == [ErrorCode.none]
        assert await wait_for_acks([(partition, second.end_offset)], -1, 10.0, logs) == [ErrorCode.none]

    run(main, tmp_path)


def test_a_wait_still_fails_when_the_leadership_moves_away(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2), config=PartitionConfig(min_insync_replicas=2),
                           isr_writer=RecordingIsrWriter())
        first = partition.append_as_leader(batch(2))
        waiting = asyncio.ensure_future(wait_for_acks([(partition, first.end_offset)], -1, 10.0, logs))
        await durable(logs, partition, first.end_offset)
        partition.make_follower(partition.state.changed(leader=2, leader_epoch=partition.state.leader_epoch + 1))
        assert await waiting == [ErrorCode.not_leader_or_follower]

    run(main, tmp_path)
