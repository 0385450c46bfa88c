"""LogManager.durable_waiter over many logs (a Produce's partitions): one future for all of them,
done only when every log it waits for is durable, failed by the first failure (a partition
deleted meanwhile, the directory going offline), and a log already durable or under
`throughput` not waited for."""

from __future__ import annotations

import asyncio
import errno

import pytest

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.errors import StorageError
from tidelog.storage.faults import faults
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager

from .storage_helpers import append


@pytest.fixture(autouse=True)
def reset_faults():
    faults.reset()
    yield
    faults.reset()


async def started(tmp_path, partitions: int, **config) -> tuple[LogManager, list]:
    manager = LogManager(tmp_path, LogConfig(durability="balanced", **config))
    await manager.start()
    logs = [manager.create("t", p) for p in range(partitions)]
    return manager, logs


def test_a_wait_over_many_logs_is_one_future_answered_when_each_is_durable(tmp_path):
    async def run():
        manager, logs = await started(tmp_path, 5)
        for log in logs[:4]:
            append(log)
        await manager.wait_durable_many([(log, log.log_end_offset) for log in logs[:4]])
        for log in logs[1:]:
            append(log)
        # logs[0] is durable already: not waited for; the other four share one future
        waiter = manager.durable_waiter([(log, log.log_end_offset) for log in logs])
        assert isinstance(waiter, asyncio.Future)
        assert manager.pending_durability_waits() == 4
        await asyncio.wait_for(waiter, 10)
        assert [log.durable_offset for log in logs] == [3, 6, 6, 6, 3]
        assert manager.pending_durability_waits() == 0
        await manager.close()

    asyncio.run(run())


def test_a_shared_wait_is_done_only_once_its_last_log_is_durable(tmp_path):
    """Two logs, the second's record appended after the job that covers the first started: the
    wait ends with the second's job, not the first's."""
    async def run():
        manager, (first, second) = await started(tmp_path, 2)
        append(first)
        append(second)
        waiter = manager.durable_waiter([(first, first.log_end_offset), (second, second.log_end_offset + 3)])
        append(second)  # the offset waited for, written after the first job started
        seen = []  # at each log's durable move: (log, its durable offset, the wait done)
        manager.on_durable = lambda log: seen.append((log.partition, log.durable_offset, waiter.done()))
        await asyncio.wait_for(waiter, 10)
        assert sorted(seen[:2]) == [(0, 3, False), (1, 3, False)] and seen[2:] == [(1, 6, False)]  # done after
        assert first.durable_offset == 3 and second.durable_offset == 6
        await manager.close()

    asyncio.run(run())


def append_each(logs) -> list:
    """Append to each log; (log, its new log end offset) of each, as a shared wait takes them."""
    for log in logs:
        append(log)
    return [(log, log.log_end_offset) for log in logs]


def test_a_partition_deleted_while_it_waits_fails_the_whole_wait(tmp_path):
    async def run():
        manager, logs = await started(tmp_path, 3)
        ends = append_each(logs)
        waiter = manager.durable_waiter(ends)
        manager.delete_partition("t", 1)  # in the same turn: before the job can end
        with pytest.raises(KafkaError) as raised:
            await asyncio.wait_for(waiter, 10)
        assert raised.value.error_code == ErrorCode.not_leader_or_follower
        await manager.close()

    asyncio.run(run())


def test_an_fsync_error_fails_the_shared_wait_once(tmp_path):
    async def run():
        manager, logs = await started(tmp_path, 3)
        ends = append_each(logs)
        await manager.wait_durable_many(ends)
        faults.fail_next_fsync(errno.EIO, target="segment")
        ends = append_each(logs)
        with pytest.raises(StorageError):
            await asyncio.wait_for(manager.wait_durable_many(ends), 10)
        assert manager.offline and all(log.durable_offset == 3 for log in logs)
        await manager.close()

    asyncio.run(run())


def test_a_cancelled_shared_wait_is_left_alone_by_the_commit_that_answers_it(tmp_path):
    async def run():
        manager, logs = await started(tmp_path, 3)
        ends = append_each(logs)
        waiter = manager.durable_waiter(ends)
        waiter.cancel()  # the connection went away
        await manager.wait_durable_many(ends)
        assert waiter.cancelled() and manager.pending_durability_waits() == 0
        assert all(log.durable_offset == 3 for log in logs)
        await manager.close()

    asyncio.run(run())
