"""A follower's log flushes on the replica flush schedule, not with each append, and a follower
that becomes leader flushes what it holds before its high watermark counts it (cluster/partition.py
``make_leader``), over a real LogManager in a temporary directory."""

from __future__ import annotations

import asyncio

from tests.unit.test_partition import NODE, RecordingIsrWriter, batch, leader, run
from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig


async def _wait_for(condition, message: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.005)


def test_a_follower_leads_only_with_what_it_has_flushed(tmp_path):
    async def main(logs):
        source = leader(logs, leader_epoch=0)  # stands for the leader's log (its flushes are its own)
        for _ in range(3):
            source.append_as_leader(batch(2))
        await source.wait_acknowledged(6, 1, 5.0)
        fetched = bytes(source.read(0, 1 << 20, True, replica_id=-1).records)

        log = logs.create("t", 1)
        follower = logs.partitions[("t", 1)] = Partition("t", 1, log, logs, NODE, PartitionConfig(), RecordingIsrWriter())
        follower.make_follower(PartitionState((2, NODE), 2, 0, (2, NODE)))
        log.flush_deferred = True  # as the ReplicaManager sets it while the log follows
        follower.append_as_follower(fetched, leader_high_watermark=6)
        assert follower.high_watermark == 6 and log.log_end_offset == 6
        # A group fsync of another log runs and leaves the follower's appends alone.
        source.append_as_leader(batch(1))
        await source.wait_acknowledged(source.log.log_end_offset, 1, 5.0)
        assert log.durable_offset == 0

        # Elected (the other replica gone): it counts nothing it has not flushed, flushes at once,
        # and then serves it all; its own appends start group fsyncs again.
        follower.make_leader(PartitionState((2, NODE), NODE, 1, (NODE,)))
        assert not log.flush_deferred
        assert follower.high_watermark == log.durable_offset < 6
        await _wait_for(lambda: follower.high_watermark == 6, "the flush of what it copied")
        assert log.durable_offset == 6
        result = follower.append_as_leader(batch(1))
        await follower.wait_acknowledged(result.end_offset, -1, 5.0)
        assert follower.high_watermark == log.durable_offset == 7

    run(main, tmp_path, durability="balanced")
