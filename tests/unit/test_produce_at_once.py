"""A Produce appends, and the group commit's fsync job covering it starts, as its frame is read
(server/connection.py ``_started_now``), not at the loop's next turn: a task's first step runs after
every callback ready by then, and the record's fsync started that much later. The wait for the
acknowledgement is still a task, answered in order. Real clients over real sockets:
tests/integration/test_produce_consume.py, test_request_order.py, tests/fault/test_replica_backlog*.py."""

from __future__ import annotations

import asyncio
import inspect

from tests.unit.test_fetch_at_once import _correlation_ids, _Leader, _produce_frame, _wait_until
from tests.unit.test_partition import leader, run
from tests.unit.test_replica_backlog import _receive, _Socket
from tidelog.handlers.registry import load_all
from tidelog.server.connection import KafkaConnection, _started_now


def test_a_produce_appends_and_starts_its_fsync_before_the_loop_runs_again(tmp_path):
    load_all()

    async def main(logs):
        partition = leader(logs)
        connection = KafkaConnection(_Leader(logs, partition))
        connection.transport = socket = _Socket()
        _receive(connection, _produce_frame(1, b"one") + _produce_frame(2, b"two"))
        assert partition.log.log_end_offset == 2, "the appends waited for the loop"
        # Both wait for the group commit, whose job has started (or its flush.ms window, 5 ms here).
        assert logs.pending_durability_waits() == 2, "the acknowledgement waits began a loop turn later"
        assert logs._job is not None or logs._window_timer is not None
        assert socket.written == []  # answered once durable
        await _wait_until(lambda: len(socket.written) == 2)
        assert _correlation_ids(socket) == [1, 2]
        assert partition.log.durable_offset == 2

    run(main, tmp_path, durability="balanced")


def test_a_coroutine_started_now_goes_on_as_a_task_with_its_outcome_or_its_cancellation():
    async def steps(gate, log):
        log.append("first")  # runs in _started_now
        try:
            value = await gate
        except ValueError as e:
            log.append(f"raised {e}")
            return "handled"
        log.append(f"got {value}")
        await asyncio.sleep(0)
        return value * 2

    async def main():
        loop = asyncio.get_running_loop()
        log: list[str] = []
        gate = loop.create_future()
        task = _started_now(loop, steps(gate, log))
        assert log == ["first"] and not task.done()
        # A coroutine, not a generator: Python 3.12+ tasks refuse generators (asyncio.iscoroutine).
        assert asyncio.iscoroutine(task.get_coro()) and not inspect.isgenerator(task.get_coro())
        gate.set_result(21)
        assert await task == 42 and log == ["first", "got 21"]
        log.clear()
        gate = loop.create_future()
        task = _started_now(loop, steps(gate, log))
        gate.set_exception(ValueError("no"))
        assert await task == "handled" and log == ["first", "raised no"]
        gate = loop.create_future()
        task = _started_now(loop, steps(gate, log))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert task.cancelled()
        done = _started_now(loop, _finished_at_once())
        assert done.done() and done.result() == "now"
        failed = _started_now(loop, _failing_at_once())
        assert failed.done() and isinstance(failed.exception(), KeyError)

    asyncio.run(main())


async def _finished_at_once():
    return "now"


async def _failing_at_once():
    raise KeyError("x")



def test_a_coroutine_cancelled_before_its_tasks_first_step_sees_the_cancellation_as_a_tasks_would():
    """Cancelled in the turn it started (before the loop ran its task's first step): a task's
    coroutine waiting on a future has that future cancelled and CancelledError thrown in at its
    await; ``_started_now``'s rest must do the same, not leave the coroutine suspended until the
    garbage collector closes it (GeneratorExit, its future never cancelled). Failed before: the
    handler's log was ["first"] after the task was cancelled, its future pending."""

    async def steps(gate, log):
        log.append("first")
        try:
            await gate
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        except GeneratorExit:
            log.append("closed")
            raise

    async def main():
        loop = asyncio.get_running_loop()
        for started in (_started_now, lambda loop, coro: loop.create_task(_first_step_then(coro))):
            log: list[str] = []
            gate = loop.create_future()
            task = started(loop, steps(gate, log))
            if started is not _started_now:
                await asyncio.sleep(0)  # the plain task's first step, for comparison
            task.cancel()
            for _ in range(3):
                await asyncio.sleep(0)
            assert task.cancelled()
            assert gate.cancelled(), "the future the handler awaited was left pending"
            assert log == ["first", "cancelled"], log

    asyncio.run(main())


async def _first_step_then(coro):
    return await coro


class _ClosingSocket(_Socket):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_produce_aborted_in_the_turn_its_frame_was_read_gives_up_its_durability_wait(tmp_path):
    """A connection aborted in the same loop turn a Produce's frame was read (what a later
    frame's out-of-memory or SASL refusal does synchronously, ``_abort``) cancels the Produce:
    its wait for the group commit is cancelled then, as a task's awaited future is, not left to
    the group commit and the garbage collector. Failed before: the waiter's future stayed pending."""
    load_all()

    async def main(logs):
        partition = leader(logs)
        connection = KafkaConnection(_Leader(logs, partition))
        connection.transport = socket = _ClosingSocket()
        _receive(connection, _produce_frame(1, b"one"))
        assert partition.log.log_end_offset == 1
        (waiters,) = logs._balanced_waiters.values()
        (_, waiter), = waiters
        connection._abort("out of memory decoding a request")  # in the same turn, as those paths do
        await _wait_until(lambda: waiter.done())
        assert waiter.cancelled()
        assert socket.closed and socket.written == []

    run(main, tmp_path, durability="balanced")
