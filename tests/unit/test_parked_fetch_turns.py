"""A parked Fetch's answer goes out in the loop turn its task reads the new data, not in a
done-callback's turn after it (server/connection.py ``_answer_parked``): on a busy loop each turn
runs every callback that is ready, so a consumer waiting on a long poll saw each record a whole
turn late. Real clients over real sockets: tests/integration/test_produce_consume.py,
test_request_order.py."""

from __future__ import annotations

import asyncio

from tests.unit.test_fetch_at_once import _correlation_ids, _fetch_frame, _Leader, _produce_frame, _values, _wait_until
from tests.unit.test_partition import leader, run
from tests.unit.test_replica_backlog import _receive, _Socket
from tidelog.cluster.waiters import ParkedReads
from tidelog.handlers.registry import load_all
from tidelog.protocol.records import build_batch
from tidelog.server.connection import KafkaConnection


class _Turns:
    """Counts the event loop's turns: a callback that schedules itself again each turn."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


class _WakeTurn(ParkedReads):
    """The partition's parked reads, noting the turn they were woken in."""

    __slots__ = ("turns", "woken_at")

    def __init__(self, turns: _Turns) -> None:
        super().__init__()
        self.turns, self.woken_at = turns, None

    def wake(self) -> None:
        if len(self) and self.woken_at is None:
            self.woken_at = self.turns.count
        super().wake()


class _WriteTurn(_Socket):
    def __init__(self, turns: _Turns) -> None:
        super().__init__()
        self.turns, self.written_at = turns, []

    def write(self, data) -> None:
        self.written_at.append(self.turns.count)
        super().write(data)

    def writelines(self, parts) -> None:
        self.written_at.append(self.turns.count)
        super().writelines(parts)


def test_a_parked_fetch_is_answered_in_the_turn_after_the_append_wakes_it(tmp_path):
    """The append wakes the parked Fetch (turn T); its task reads in the next turn (T+1) and the
    response is written then. Before, the task's done-callback wrote it at T+2. The connection
    then answers a Fetch pipelined behind it, in order, and stays usable."""
    load_all()

    async def main(logs):
        partition = leader(logs)
        turns = _Turns()
        partition.parked_reads = parked = _WakeTurn(turns)
        broker = _Leader(logs, partition)
        connection = KafkaConnection(broker)
        connection.transport = socket = _WriteTurn(turns)
        _receive(connection, _fetch_frame(1, 0, max_wait_ms=5000) + _fetch_frame(2, 0))
        for _ in range(5):
            await asyncio.sleep(0)
        assert socket.written == [] and len(parked) == 1
        producer = KafkaConnection(broker)
        producer.transport = _Socket()
        _receive(producer, _produce_frame(9, b"new"))
        await _wait_until(lambda: len(socket.written) == 2)
        turns.stop()
        assert parked.woken_at is not None
        assert socket.written_at[0] - parked.woken_at == 1, (parked.woken_at, socket.written_at)
        assert _correlation_ids(socket) == [1, 2]
        assert [_values(frame) for frame in socket.written] == [[b"new"], [b"new"]]
        _receive(connection, _fetch_frame(3, 0))  # the connection goes on: answered at once
        assert _correlation_ids(socket) == [1, 2, 3]

    run(main, tmp_path)


def test_a_closed_connection_cancels_its_parked_fetch(tmp_path):
    """The connection's place for the parked Fetch's answer is cancelled when it closes, and the
    Fetch's task with it (not left waiting out its max_wait)."""
    load_all()

    async def main(logs):
        partition = leader(logs)
        broker = _Leader(logs, partition)
        connection = KafkaConnection(broker)
        connection.transport = _Socket()
        before = asyncio.all_tasks()
        _receive(connection, _fetch_frame(1, 0, max_wait_ms=5000))
        parked = asyncio.all_tasks() - before
        assert len(parked) == 1
        connection.connection_lost(None)
        await _wait_until(lambda: all(task.done() for task in parked))
        assert all(task.cancelled() for task in parked)
        assert len(partition.parked_reads) == 0

    run(main, tmp_path)
