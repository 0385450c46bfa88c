"""A Fetch whose data is there is answered as its frame is read, without a task
(handlers/fetch.py ``answer_now``, server/connection.py ``_fetch_now``): its response is written
before the event loop runs again. A Fetch that waits for data still waits, and one read behind
a waiting request is answered after it, in request order. Real clients over real sockets:
tests/integration/test_request_order.py, test_produce_consume.py, test_fetch_sendfile.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import datetime
import io
import struct

from kafka.protocol.producer import ProduceRequest
from kio.schema.fetch.v12 import request as fetch
from kio.serial import entity_reader, entity_writer

from tests.unit.test_partition import leader, run
from tests.unit.test_replica_backlog import _HeldLeader, _receive, _Socket
from tidelog.handlers.registry import load_all
from tidelog.protocol.apis import load_request_schema, load_response_schema
from tidelog.protocol.records import build_batch, iter_records
from tidelog.server.connection import KafkaConnection


class _Leader(_HeldLeader):
    """One single-replica leader partition t-0 on a real log, served to a KafkaConnection."""

    def __init__(self, logs, partition) -> None:
        super().__init__(logs, partition, bound=0)
        self.controller = None  # single node
        self.metadata = SimpleNamespace(topics={"t": SimpleNamespace(partitions=1, topic_id=None)})

    def get(self, name: str, index: int):
        return self.partitions.get((name, index))


def _fetch_frame(correlation_id: int, offset: int, max_wait_ms: int = 0) -> bytes:
    """A framed sessionless Fetch v12 of t-0 from ``offset``, min_bytes 1."""
    partition = fetch.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)
    request = fetch.FetchRequest(max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1, session_epoch=-1,
                                 topics=(fetch.FetchTopic(topic="t", partitions=(partition,)),),
                                 forgotten_topics_data=())
    body = io.BytesIO()
    entity_writer(load_request_schema(1, 12))(body, request)
    data = struct.pack(">hhih", 1, 12, correlation_id, 7) + b"at-once" + b"\x00" + body.getvalue()
    return struct.pack(">i", len(data)) + data


def _produce_frame(correlation_id: int, value: bytes) -> bytes:
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=build_batch([(None, value, [])]))
    request = ProduceRequest[9](transactional_id=None, acks=1, timeout_ms=30000,
                                topic_data=[ProduceRequest.TopicProduceData(name="t", partition_data=[data])])
    request.with_header(correlation_id=correlation_id, client_id="at-once")
    return bytes(request.encode(version=9, header=True, framed=True))


def _correlation_ids(socket: _Socket) -> list[int]:
    return [int.from_bytes(frame[4:8], "big") for frame in socket.written]


def _values(frame: bytes) -> list[bytes]:
    """The record values of a v12 Fetch response of one partition."""
    response = entity_reader(load_response_schema(1, 12))(memoryview(frame)[9:], 0)[0]  # size, id, tagged fields
    partition = response.responses[0].partitions[0]
    assert partition.error_code == 0, partition
    return [record.value for record in iter_records(bytearray(partition.records))]


async def _wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_a_fetch_with_data_is_written_before_the_loop_runs_again(tmp_path):
    load_all()

    async def main(logs):
        partition = leader(logs)
        partition.append_as_leader(bytearray(build_batch([(None, b"there", [])])))
        await _wait_until(lambda: partition.high_watermark == 1)
        connection = KafkaConnection(_Leader(logs, partition))
        connection.transport = socket = _Socket()
        tasks = len(asyncio.all_tasks())
        _receive(connection, _fetch_frame(1, 0))
        assert _correlation_ids(socket) == [1], "the answer waited for the loop"
        assert len(asyncio.all_tasks()) == tasks
        assert _values(socket.written[0]) == [b"there"]

    run(main, tmp_path)


def test_a_fetch_without_data_waits_and_the_fetch_behind_it_is_answered_after_it(tmp_path):
    """The first Fetch waits (up to 5 s) for a record past the log's end; the second, read with it,
    asks for data that is there, but waits for the first (Kafka answers a connection's requests
    in order). A Produce on another connection appends: both are answered, in order."""
    load_all()

    async def main(logs):
        partition = leader(logs)
        partition.append_as_leader(bytearray(build_batch([(None, b"first", [])])))
        await _wait_until(lambda: partition.high_watermark == 1)
        broker = _Leader(logs, partition)
        connection = KafkaConnection(broker)
        connection.transport = socket = _Socket()
        _receive(connection, _fetch_frame(1, 1, max_wait_ms=5000) + _fetch_frame(2, 0))
        for _ in range(5):
            await asyncio.sleep(0)
        assert socket.written == [], "a response went out before the parked Fetch was answered"
        producer = KafkaConnection(broker)
        producer.transport = produced = _Socket()
        _receive(producer, _produce_frame(9, b"second"))
        await _wait_until(lambda: len(socket.written) == 2)
        assert _correlation_ids(produced) == [9]
        assert _correlation_ids(socket) == [1, 2]
        assert [_values(frame) for frame in socket.written] == [[b"second"], [b"first", b"second"]]  # the second reads once it starts

    run(main, tmp_path)
