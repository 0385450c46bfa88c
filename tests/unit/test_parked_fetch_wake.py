"""A Fetch that found nothing is parked by its task's first step, a loop turn after its read
(server/connection.py ``_fetch_now``, handlers/fetch.py ``answer_now``): data that arrives in
between (an append under throughput, a group commit's job end in the same poll batch under
balanced) wakes the parked reads before this one is among them. It must still be answered
then, not at the next move of the partition or at the end of its max_wait (500 ms for the last
record of a latency run, where no later move comes). Real clients over real sockets:
tests/integration/test_produce_consume.py."""

from __future__ import annotations

import asyncio

from tests.unit.test_fetch_at_once import _correlation_ids, _fetch_frame, _Leader, _values, _wait_until
from tests.unit.test_partition import leader, run
from tests.unit.test_replica_backlog import _receive, _Socket
from tidelog.handlers.registry import load_all
from tidelog.protocol.records import build_batch
from tidelog.server.connection import KafkaConnection

# An answer a few loop turns after the append, waited for up to ANSWERED_S: a loaded 2-core CI
# machine has starved a test process for over a second (server/loop_monitor.py's stall tests);
# a lost wake-up waits for the max_wait, far past it.
MAX_WAIT_MS = 60_000
ANSWERED_S = 15.0


def _fetch_read(logs):
    """A leader partition and a connection that has read a Fetch from offset 0 (nothing there
    yet): (partition, the connection, its socket), the connection held by the caller."""
    partition = leader(logs)
    connection = KafkaConnection(_Leader(logs, partition))
    connection.transport = socket = _Socket()
    _receive(connection, _fetch_frame(1, 0, max_wait_ms=MAX_WAIT_MS))
    return partition, connection, socket


def test_data_arriving_before_a_fetch_parks_answers_it_at_once(tmp_path):
    load_all()

    async def main(logs):
        partition, _connection, socket = _fetch_read(logs)  # read: nothing; its task not run yet
        assert socket.written == [] and len(partition.parked_reads) == 0
        partition.append_as_leader(bytearray(build_batch([(None, b"meanwhile", [])])))  # same turn: the high watermark moves
        await _wait_until(lambda: len(socket.written) == 1, timeout_s=ANSWERED_S)  # not at the max_wait
        assert _correlation_ids(socket) == [1]
        assert _values(socket.written[0]) == [b"meanwhile"]
        assert len(partition.parked_reads) == 0

    run(main, tmp_path)


def test_a_parked_fetch_with_nothing_new_still_waits(tmp_path):
    """The check costs no wake-up of its own: a Fetch whose partition did not move parks as
    before and is answered by the append that comes later."""
    load_all()

    async def main(logs):
        partition, _connection, socket = _fetch_read(logs)
        for _ in range(5):
            await asyncio.sleep(0)
        assert socket.written == [] and len(partition.parked_reads) == 1
        partition.append_as_leader(bytearray(build_batch([(None, b"later", [])])))
        await _wait_until(lambda: len(socket.written) == 1, timeout_s=ANSWERED_S)
        assert _values(socket.written[0]) == [b"later"]

    run(main, tmp_path)
