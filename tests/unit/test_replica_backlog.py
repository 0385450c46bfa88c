"""A leader's backlog above its high watermark (replica.backlog.max.bytes): the bytes appended
that the high watermark has not passed, and the hold an acks=all Produce's connection waits on
while they are over the bound (Partition.backlog_hold). The processes-and-clients test is
tests/fault/test_replica_backlog.py."""

from __future__ import annotations

import asyncio

from tests.unit.test_partition import batch, leader, run
from tidelog.cluster import partition as partition_module


def test_the_backlog_counts_the_bytes_above_the_high_watermark(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        sizes = [len(batch(count)) for count in (3, 5, 2)]
        ends = []
        for count in (3, 5, 2):
            ends.append(partition.append_as_leader(batch(count)).end_offset)
        assert partition.backlog_bytes == sum(sizes)
        end = partition.log.log_end_offset
        partition.follower_fetched(2, ends[0], end)
        partition.follower_fetched(3, ends[1], end)
        assert partition.high_watermark == ends[0] and partition.backlog_bytes == sizes[1] + sizes[2]
        partition.follower_fetched(2, ends[2], end)
        assert partition.high_watermark == ends[1] and partition.backlog_bytes == sizes[2]
        partition.follower_fetched(3, ends[2], end)
        assert partition.backlog_bytes == 0

    run(main, tmp_path)


def test_a_hold_lasts_until_the_followers_bring_the_backlog_within_the_bound(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        size = len(batch(10))
        partition.backlog_max_bytes = 2 * size
        ends = [partition.append_as_leader(batch(10)).end_offset for _ in range(2)]
        assert partition.backlog_hold() is None  # at the bound, not over it
        ends.append(partition.append_as_leader(batch(10)).end_offset)
        hold = partition.backlog_hold()
        assert hold is not None and not hold.done()
        end = partition.log.log_end_offset
        partition.follower_fetched(2, ends[2], end)  # one follower alone moves nothing
        await asyncio.sleep(0)
        assert not hold.done() and partition.backlog_bytes == 3 * size
        partition.follower_fetched(3, ends[0], end)
        assert partition.backlog_bytes == 2 * size
        await asyncio.wait_for(hold, 1)
        assert partition.backlog_hold() is None

    run(main, tmp_path)


def test_holds_end_with_the_leadership_and_single_replicas_are_never_held(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        partition.backlog_max_bytes = 1
        partition.append_as_leader(batch(3))
        hold = partition.backlog_hold()
        assert hold is not None
        partition.stop_leading()
        await asyncio.wait_for(hold, 1)
        assert partition.backlog_bytes == 0 and partition.backlog_hold() is None

    run(main, tmp_path)

    async def single(logs):
        partition = leader(logs)  # a cluster of one: its high watermark is its durable end
        partition.backlog_max_bytes = 1
        partition.append_as_leader(batch(3))
        assert partition.backlog_bytes == 0 and partition.backlog_hold() is None

    run(single, tmp_path / "single", durability="balanced")


def test_no_bound_holds_nothing(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        assert partition.backlog_max_bytes == 0  # a Partition made without the replica manager's setting
        partition.append_as_leader(batch(3))
        assert partition.backlog_bytes > 0 and partition.backlog_hold() is None

    run(main, tmp_path)


def test_many_small_appends_keep_a_bounded_list_that_never_underestimates(tmp_path, monkeypatch):
    monkeypatch.setattr(partition_module, "APPENDS_REMEMBERED", 8)

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        size = len(batch(1))
        ends = [partition.append_as_leader(batch(1)).end_offset for _ in range(50)]
        assert len(partition._backlog_ends) <= 8
        assert partition.backlog_bytes == 50 * size
        end = partition.log.log_end_offset
        for passed in (7, 20, 33, 49):
            partition.follower_fetched(2, ends[passed - 1], end)
            partition.follower_fetched(3, ends[passed - 1], end)
            assert partition.high_watermark == ends[passed - 1]
            assert (50 - passed) * size <= partition.backlog_bytes <= 50 * size
        partition.follower_fetched(2, ends[-1], end)
        partition.follower_fetched(3, ends[-1], end)
        assert partition.backlog_bytes == 0

    run(main, tmp_path)


def test_a_connection_is_held_by_its_pending_holds_only():
    """A Produce waits while ``held_by()`` names a hold: one already done (its removal is a
    callback not yet run) must not be named, or the Produce's wait loop spins without yielding."""
    from tidelog.server.connection import KafkaConnection

    async def main():
        connection = KafkaConnection.__new__(KafkaConnection)
        # Also paused for another reason ("writing"), so no transport is needed here.
        connection._holds, connection._pause_reasons, connection._closed = [], {"writing"}, False
        connection.transport = None
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        connection._hold_reading(first)
        connection._hold_reading(second)
        assert connection._held_by() is first and "replication" in connection._pause_reasons
        first.set_result(None)  # its release callback has not run yet
        assert connection._held_by() is second
        second.set_result(None)
        assert connection._held_by() is None
        await asyncio.sleep(0)
        assert connection._holds == [] and connection._pause_reasons == {"writing"}

    asyncio.run(main())
