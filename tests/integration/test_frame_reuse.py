"""A large request frame's buffer goes back to the broker's FramePool (server/request_memory.py)
while its request is still running: a Produce gives it back once its batches are appended,
before it waits for their acknowledgement and builds its response. Nothing may read the buffer
after that, or a frame read into it meanwhile would change what the request wrote or answered.

Here every buffer given back is overwritten at once (as the next frame read into it would), on a
broker in this process reading real sockets: Produce requests to several partitions at once,
with refused batches (a corrupt one, an unknown partition, an unknown topic) beside the good
ones, at acks=1, acks=all and acks=0, pipelined, then a connection closing in the middle of a
large frame. Every response names the right topics, partitions and errors, every record in the
log is the one sent, and every buffer taken is given back."""

from __future__ import annotations

import asyncio
import struct

import pytest
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from prometheus_client import generate_latest

from tidelog.config import BrokerConfig
from tidelog.handlers.registry import load_all
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch, iter_records
from tidelog.server.broker import Broker

TOPIC, MISSING = "frames", "no-such-topic-of-that-name"
GOOD_PARTITIONS = (0, 1, 2)
CORRUPT_PARTITION, UNKNOWN_PARTITION = 3, 7
RECORDS, VALUE_BYTES = 40, 5_000  # ~200 KB a batch: each request a large frame (pooled buffer)


def value(request: int, partition: int, index: int) -> bytes:
    return (f"{request}/{partition}/{index}:".encode() * VALUE_BYTES)[:VALUE_BYTES]


def produce_frame(correlation_id: int, acks: int) -> bytes:
    def batch(partition: int) -> bytes:
        return build_batch([(None, value(correlation_id, partition, i), []) for i in range(RECORDS)])

    corrupt = bytearray(batch(CORRUPT_PARTITION))
    corrupt[-1] ^= 0xFF  # a record byte: the CRC no longer matches
    data = ProduceRequest.TopicProduceData
    partition = data.PartitionProduceData
    topics = [data(name=TOPIC, partition_data=[partition(index=p, records=batch(p)) for p in GOOD_PARTITIONS]
                   + [partition(index=CORRUPT_PARTITION, records=bytes(corrupt)),
                      partition(index=UNKNOWN_PARTITION, records=batch(0))]),
              data(name=MISSING, partition_data=[partition(index=0, records=batch(0))])]
    request = ProduceRequest[9](transactional_id=None, acks=acks, timeout_ms=30000, topic_data=topics)
    request.with_header(correlation_id=correlation_id, client_id="frames")
    return bytes(request.encode(version=9, header=True, framed=True))


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def log_values(data_dir, partition: int) -> list[bytes]:
    segments = sorted((data_dir / f"{TOPIC}-{partition}").glob("*.log"))
    return [record.value for segment in segments for record in iter_records(segment.read_bytes())]


async def wait_for(condition, what: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("acks", [1, -1])
def test_a_frame_buffer_given_back_is_read_no_more(tmp_path, acks):
    load_all()
    data_dir = tmp_path / "data"
    acks_of = {1: acks, 2: 0, 3: acks, 4: 1}  # correlation id -> acks; the acks=0 one in the middle

    async def main():
        broker = Broker(BrokerConfig.load(env={}, overrides={"http.port": "-1"}), data_dir, port=0)
        await broker.start()
        try:
            await asyncio.wait_for(scenario(broker), 60)
        finally:
            await broker.stop()

    async def scenario(broker):
        await broker.topics.create_topic(TOPIC, 4, 1, {})
        pool = broker.request_memory.frames
        give_back = pool.release
        given_back = []

        def overwrite_then_give_back(buffer: bytearray) -> None:
            buffer[:] = b"\xa5" * len(buffer)  # what a frame read into it next would do
            given_back.append(len(buffer))
            give_back(buffer)

        pool.release = overwrite_then_give_back
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(b"".join(produce_frame(cid, a) for cid, a in acks_of.items()))
        answered = [cid for cid, a in acks_of.items() if a != 0]
        for cid in answered:
            response = ProduceResponse.decode(await read_frame(reader), version=9, header=True)
            assert response.header.correlation_id == cid
            (topic, partitions), (missing, missing_partitions) = response.responses
            assert (topic, missing) == (TOPIC, MISSING)
            assert [(p.index, p.error_code) for p in partitions] == \
                [(p, 0) for p in GOOD_PARTITIONS] + [(CORRUPT_PARTITION, ErrorCode.corrupt_message),
                                                     (UNKNOWN_PARTITION, ErrorCode.unknown_topic_or_partition)]
            assert [(p.index, p.error_code) for p in missing_partitions] == [(0, ErrorCode.unknown_topic_or_partition)]
        # A connection that goes away in the middle of its second large frame (its buffer taken
        # at once, after the first).
        cut_reader, cut = await asyncio.open_connection("127.0.0.1", broker.port)
        second = produce_frame(9, 1)
        cut.write(produce_frame(8, 1) + second[: len(second) // 2])
        response = ProduceResponse.decode(await read_frame(cut_reader), version=9, header=True)
        assert response.header.correlation_id == 8
        await wait_for(lambda: pool.in_use_bytes > 0, "the cut frame's buffer")
        cut.close()
        writer.close()
        await wait_for(lambda: pool.in_use_bytes == 0, "every frame buffer given back")
        assert broker.request_memory.used == 0
        assert pool.reused + pool.allocated == len(given_back)  # each buffer taken (and each doubling's) given back once
        scraped = generate_latest(broker.metrics.registry).decode()
        assert f'tidelog_request_frame_buffers_total{{outcome="reused"}} {float(pool.reused)}' in scraped

    asyncio.run(main())
    requests = [cid for cid in acks_of] + [8]  # every request appended, acks=0 too, and the one before the cut
    for partition in GOOD_PARTITIONS:
        assert log_values(data_dir, partition) == [value(cid, partition, i) for cid in requests for i in range(RECORDS)]
    assert log_values(data_dir, CORRUPT_PARTITION) == []
