"""Connections paused at the request-memory cap (server/request_memory.py) are woken one after
another when bytes are released; a woken connection reads its frames, and a request answered as
its frame is read (an acks=0 Produce: connection.py ``_started_now``; a Fetch with data:
``_fetch_now``) releases its bytes at once, which wakes the next connection from inside the first
one's read. With hundreds of connections waiting that nesting must not grow the stack by one
connection's read each (a RecursionError inside a read callback)."""

from __future__ import annotations

import asyncio

from kafka.protocol.producer import ProduceRequest

from tests.unit.test_fetch_at_once import _fetch_frame, _Leader, _wait_until
from tests.unit.test_partition import leader, run
from tests.unit.test_replica_backlog import _receive, _Socket
from tidelog.handlers.registry import load_all
from tidelog.protocol.records import build_batch
from tidelog.server.connection import KafkaConnection

CONNECTIONS = 400


def _acks_0_frame(correlation_id: int, value: bytes) -> bytes:
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=build_batch([(None, value, [])]))
    request = ProduceRequest[9](transactional_id=None, acks=0, timeout_ms=30000,
                                topic_data=[ProduceRequest.TopicProduceData(name="t", partition_data=[data])])
    request.with_header(correlation_id=correlation_id, client_id="wake")
    return bytes(request.encode(version=9, header=True, framed=True))


def test_hundreds_of_connections_woken_at_the_memory_cap_do_not_nest_their_reads(tmp_path):
    load_all()

    async def main(logs):
        partition = leader(logs)
        broker = _Leader(logs, partition)
        memory = broker.request_memory
        connections = []
        for _ in range(CONNECTIONS):
            connection = KafkaConnection(broker)
            connection.transport = _Socket()
            connection._loop = asyncio.get_running_loop()
            _receive(connection, _fetch_frame(1, 0, max_wait_ms=30000))  # parked: a request in flight
            connections.append(connection)
        assert all(len(c._pending) == 1 for c in connections)
        filler = memory.max_bytes - memory.used
        memory.charge(filler)  # the cap reached (other requests' bytes)
        for connection in connections:
            _receive(connection, _acks_0_frame(2, b"x"))
        assert all("memory" in c._pause_reasons for c in connections)
        before = partition.log.log_end_offset
        memory.release(filler)  # wakes them: each reads its acks=0 Produce, answered in its first step
        await _wait_until(lambda: partition.log.log_end_offset == before + CONNECTIONS)
        assert not any(c._pause_reasons for c in connections)
        for connection in connections:
            for _, _, task in connection._pending:
                task.cancel()

    run(main, tmp_path, durability="balanced")
