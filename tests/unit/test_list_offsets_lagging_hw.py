"""ListOffsets on a new leader whose high watermark is still below the start offset of its leader
epoch (the lagging-high-watermark state after an election), in process over a real LogManager and
the real ListOffsets handler.

A follower's high watermark trails its leader's by a fetch round, so the broker elected next starts
leading with a high watermark below records the old leader had already acknowledged. Kafka
(Partition.fetchOffsetForTimestamp, KAFKA-2334) answers OFFSET_NOT_AVAILABLE, retriable, for
LATEST and for a lookup by time finding nothing below the high watermark until the high watermark
reaches the epoch's start offset: answering the lagging high watermark would start a consumer with
auto.offset.reset=latest below records already acknowledged, which it would then read as new.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kio.schema.list_offsets.v7 import request as v7

from tests.unit.test_partition import RecordingIsrWriter, batch, run
from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.replica_manager import ReplicaManager
from tidelog.handlers import list_offsets
from tidelog.handlers.registry import RequestContext
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch

OLD_LEADER, NEW_LEADER = 1, 2
T0 = 1_700_000_000_000  # the first record's timestamp; record n has T0 + n


class Hosted:
    """The part of the ReplicaManager the handler reads: its own ``get`` over a real partition."""

    get = ReplicaManager.get

    def __init__(self, partition) -> None:
        self.partitions = {(partition.topic, partition.index): partition}


async def list_offsets_of(partition, *timestamps: int, isolation_level: int = 0, replica_id: int = -1):
    """[(error, offset)] for each timestamp, asked of ``partition``'s broker in one request."""
    request = v7.ListOffsetsRequest(replica_id=replica_id, isolation_level=isolation_level, topics=(v7.ListOffsetsTopic(
        name=partition.topic, partitions=tuple(v7.ListOffsetsPartition(partition_index=partition.index, timestamp=t)
                                               for t in timestamps)),))
    ctx = RequestContext(SimpleNamespace(api_version=7), "test", True, NEW_LEADER, replicas=Hosted(partition))
    response = await list_offsets.handle(ctx, request)
    return [(ErrorCode(p.error_code), p.offset) for p in response.topics[0].partitions]


def elected_with_a_lagging_high_watermark(logs) -> Partition:
    """Broker 2 copied offsets 0-5 from broker 1 (leader epoch 0) while broker 1's high watermark
    was 4, then was elected leader (epoch 1): its high watermark 4, its epoch starting at 6."""
    source_log = logs.create("source", 0)
    source = Partition("source", 0, source_log, logs, OLD_LEADER, PartitionConfig(), RecordingIsrWriter())
    logs.partitions[("source", 0)] = source
    source.make_leader(PartitionState((OLD_LEADER,), OLD_LEADER, 0, (OLD_LEADER,)))
    for n in range(6):
        source.append_as_leader(memoryview(bytearray(build_batch([(b"k", b"%d" % n, [])], timestamp_ms=T0 + n))))
    fetched = bytes(source.read(0, 1 << 20, True).records)

    log = logs.create("t", 0)
    partition = logs.partitions[("t", 0)] = Partition("t", 0, log, logs, NEW_LEADER, PartitionConfig(),
                                                      RecordingIsrWriter())
    partition.make_follower(PartitionState((OLD_LEADER, NEW_LEADER), OLD_LEADER, 0, (OLD_LEADER, NEW_LEADER)))
    assert partition.append_as_follower(fetched, leader_high_watermark=4) == len(fetched)
    partition.make_leader(PartitionState((OLD_LEADER, NEW_LEADER), NEW_LEADER, 1, (OLD_LEADER, NEW_LEADER)))
    assert (partition.high_watermark, partition.leader_epoch_start_offset, log.log_end_offset) == (4, 6, 6)
    return partition


def test_latest_is_not_available_while_the_high_watermark_lags_the_epochs_start(tmp_path):
    async def main(logs):
        partition = elected_with_a_lagging_high_watermark(logs)
        for isolation_level in (0, 1):
            assert await list_offsets_of(partition, list_offsets.LATEST, isolation_level=isolation_level) == [
                (ErrorCode.offset_not_available, -1)]
        # The earliest offset does not depend on the high watermark.
        assert await list_offsets_of(partition, list_offsets.EARLIEST) == [(ErrorCode.none, 0)]

        # Broker 1 follows and fetches from 6: the high watermark reaches the epoch's start.
        partition.follower_fetched(OLD_LEADER, 6, 6)
        assert partition.high_watermark == 6
        assert await list_offsets_of(partition, list_offsets.LATEST) == [(ErrorCode.none, 6)]

    run(main, tmp_path)


def test_a_lookup_by_time_past_the_high_watermark_is_not_available_while_it_lags(tmp_path):
    async def main(logs):
        partition = elected_with_a_lagging_high_watermark(logs)
        # Found below the high watermark: answered; found at or past it, or not found: not available yet.
        assert await list_offsets_of(partition, T0 + 1, T0 + 4, T0 + 99, list_offsets.MAX_TIMESTAMP) == [
            (ErrorCode.none, 1), (ErrorCode.offset_not_available, -1), (ErrorCode.offset_not_available, -1),
            (ErrorCode.offset_not_available, -1)]

        partition.follower_fetched(OLD_LEADER, 6, 6)
        assert await list_offsets_of(partition, T0 + 1, T0 + 4, T0 + 99, list_offsets.MAX_TIMESTAMP) == [
            (ErrorCode.none, 1), (ErrorCode.none, 4), (ErrorCode.none, -1), (ErrorCode.none, 5)]

    run(main, tmp_path)


def test_a_leader_whose_high_watermark_is_below_its_log_end_within_its_epoch_answers_it(tmp_path):
    """The usual state (records of this epoch not yet replicated) is not the lagging one: LATEST is
    the high watermark, as in Kafka."""
    async def main(logs):
        partition = elected_with_a_lagging_high_watermark(logs)
        partition.follower_fetched(OLD_LEADER, 6, 6)
        partition.append_as_leader(batch(3))
        assert partition.high_watermark == 6 and partition.log.log_end_offset == 9
        assert await list_offsets_of(partition, list_offsets.LATEST) == [(ErrorCode.none, 6)]
        assert await list_offsets_of(partition, T0 + 99) == [(ErrorCode.none, -1)]

    run(main, tmp_path)
