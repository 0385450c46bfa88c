"""acks=all answers around an ISR that falls below min.insync.replicas, in process over a real
LogManager (balanced: the high watermark waits for the leader's group fsync).

Kafka completes every pending acks=all produce of a partition with NOT_ENOUGH_REPLICAS_AFTER_APPEND
the moment its ISR falls below min.insync.replicas (its high watermark then jumps to the leader's
log end). Here the high watermark also waits for the leader's fsync, so a batch appended before the
shortfall but not yet durable could outlast it: answered with success once the follower was back,
after an earlier batch got NOT_ENOUGH_REPLICAS_AFTER_APPEND. An idempotent librdkafka producer takes
that success as the implicit acknowledgement of the earlier batch's re-queued records and reports
them delivered without offsets (rd_kafka_dr_implicit_ack): test_cluster_failover's "acknowledged
record ... at None".
"""

from __future__ import annotations

import asyncio

from tidelog.cluster.partition import PartitionConfig, wait_for_acks
from tidelog.protocol.errors import ErrorCode
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager
from tests.unit.test_partition import RecordingIsrWriter, batch, leader

LINGER_MS = 1000  # a group fsync starts this long after its first write (the checks take a few loop turns)


def run(coroutine_function, tmp_path):
    async def main():
        logs = LogManager(tmp_path, LogConfig(durability="balanced", flush_interval_ms=LINGER_MS))
        logs.open_all({})
        logs.partitions = {}
        logs.on_durable = lambda log: logs.partitions[(log.topic, log.partition)].on_local_flush()
        await logs.start()
        try:
            return await coroutine_function(logs)
        finally:
            await logs.close()

    return asyncio.run(main())


async def durable(logs, partition, end_offset: int) -> None:
    waiter = logs.durable_waiter([(partition.log, end_offset)])
    if waiter is not None:
        await waiter


def test_a_batch_appended_before_the_isr_fell_short_is_not_acknowledged_after_it_healed(tmp_path):
    async def main(logs):
        writer = RecordingIsrWriter()
        partition = leader(logs, replicas=(1, 2), config=PartitionConfig(min_insync_replicas=2), isr_writer=writer)
        pid = 7
        first = partition.append_as_leader(batch(2, producer_id=pid, base_sequence=0))
        first_wait = asyncio.ensure_future(wait_for_acks([(partition, first.end_offset)], -1, 10.0, logs))
        await durable(logs, partition, first.end_offset)
        second = partition.append_as_leader(batch(2, producer_id=pid, base_sequence=2))  # the next group fsync's
        second_wait = asyncio.ensure_future(wait_for_acks([(partition, second.end_offset)], -1, 10.0, logs))
        await asyncio.sleep(0)  # both waits have begun

        partition.update_state(partition.state.changed(isr=(1,)))  # follower 2 paused: out of the ISR
        assert await first_wait == [ErrorCode.not_enough_replicas_after_append]
        assert partition.log.durable_offset < second.end_offset and not second_wait.done()

        # Follower 2 is back before the second batch's fsync: it copies the log and rejoins.
        partition.follower_fetched(2, partition.log.log_end_offset, partition.log.log_end_offset)
        writer.complete()
        assert partition.state.isr == (1, 2)
        assert await second_wait == [ErrorCode.not_enough_replicas_after_append]  # pending at the shortfall, as in Kafka

        # The producer's retries are duplicates: each is answered with its first offsets.
        for sent, base_sequence in ((first, 0), (second, 2)):
            retry = partition.append_as_leader(batch(2, producer_id=pid, base_sequence=base_sequence))
            assert retry.duplicate and retry.base_offset == sent.base_offset
            assert await wait_for_acks([(partition, retry.end_offset)], -1, 10.0, logs) == [ErrorCode.none]

    run(main, tmp_path)


def test_a_batch_appended_after_the_isr_healed_is_acknowledged(tmp_path):
    """The shortfall is counted, not remembered as a state: what comes after it is judged anew."""
    async def main(logs):
        writer = RecordingIsrWriter()
        partition = leader(logs, replicas=(1, 2), config=PartitionConfig(min_insync_replicas=2), isr_writer=writer)
        partition.update_state(partition.state.changed(isr=(1,)))
        partition.follower_fetched(2, 0, 0)
        writer.complete()
        assert partition.state.isr == (1, 2)
        result = partition.append_as_leader(batch(1))
        waiting = asyncio.ensure_future(wait_for_acks([(partition, result.end_offset)], -1, 10.0, logs))
        await durable(logs, partition, result.end_offset)
        partition.follower_fetched(2, result.end_offset, partition.log.log_end_offset)
        assert await waiting == [ErrorCode.none]

    run(main, tmp_path)
