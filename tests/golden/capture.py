"""Capture the first request frames real Kafka clients send, as golden files for tests/unit/test_wire.py.

Runs a tiny asyncio server on 127.0.0.1 that plays a one-broker cluster just far enough for a
producer to send its first Produce: it answers ApiVersions (with Tidelog's own handler) and
Metadata (one topic ``golden`` with one partition led by this server), records every frame, and
answers nothing else. Each frame is written as ``<client>-<api>-v<version>.hex`` (the frame
without its size prefix, as hex). Run by hand: ``python tests/golden/capture.py``; it overwrites
the files in this folder. Needs confluent-kafka, kafka-python and aiokafka.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import sys
import threading
import uuid
from pathlib import Path

from tidelog.handlers import api_versions
from tidelog.handlers.registry import RequestContext, load_all
from tidelog.protocol import apis
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.wire import parse_request_header, response_header
from tidelog.server.connection import encode_response

HERE = Path(__file__).parent
TOPIC = "golden"
TOPIC_ID = uuid.UUID("6f3c2a1e-0000-4000-8000-00000000abcd")
NAMES = {0: "produce", 3: "metadata", 18: "apiversions", 22: "initproducerid"}


def metadata_response(version: int, port: int):
    module = apis.response_module(3, version)
    partition = apis.build(
        module.MetadataResponsePartition, error_code=ErrorCode.none, partition_index=0, leader_id=1,
        leader_epoch=0, replica_nodes=(1,), isr_nodes=(1,), offline_replicas=(),
    )  # fmt: skip
    topic = apis.build(
        module.MetadataResponseTopic, error_code=ErrorCode.none, name=TOPIC, topic_id=TOPIC_ID,
        is_internal=False, partitions=(partition,), topic_authorized_operations=-(2**31),
    )  # fmt: skip
    broker = apis.build(module.MetadataResponseBroker, node_id=1, host="127.0.0.1", port=port, rack=None)
    return apis.build(
        module.MetadataResponse, throttle_time=datetime.timedelta(0), brokers=(broker,), cluster_id="golden-cluster",
        controller_id=1, topics=(topic,), cluster_authorized_operations=-(2**31), error_code=ErrorCode.none,
    )  # fmt: skip


class Recorder:
    def __init__(self, label: str) -> None:
        self.label = label
        self.frames: dict[str, bytes] = {}
        self.produced = asyncio.Event()
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                frame = await reader.readexactly(size)
                api_key, version, correlation_id = struct.unpack_from(">hhi", frame)
                name = f"{self.label}-{NAMES.get(api_key, api_key)}-v{version}"
                self.frames.setdefault(name, frame)
                flexible = apis.is_flexible(api_key, version)
                if api_key == 18:
                    header, _ = parse_request_header(memoryview(frame), flexible)
                    ctx = RequestContext(header=header, peer="capture", flexible=flexible)
                    body = await api_versions.handle(ctx, None)
                    body = b"".join(body) if isinstance(body, list) else encode_response(body)
                    head = response_header(correlation_id, False)
                elif api_key == 3:
                    body = encode_response(metadata_response(version, self.port))
                    head = response_header(correlation_id, flexible)
                else:
                    if api_key == 0:
                        self.produced.set()
                    continue
                writer.write(struct.pack(">i", len(head) + len(body)) + head + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def capture(label: str, run_client) -> dict[str, bytes]:
    recorder = Recorder(label)
    server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    async with server:
        await run_client(recorder)
    return recorder.frames


async def run_librdkafka(recorder: Recorder) -> None:
    from confluent_kafka import Producer

    done = threading.Event()

    def produce() -> None:
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{recorder.port}", "client.id": "golden-rdkafka",
                             "enable.idempotence": False, "linger.ms": 0, "socket.timeout.ms": 5000})  # fmt: skip
        producer.produce(TOPIC, key=b"key-1", value=b"value-1", headers=[("h", b"v")], timestamp=1_700_000_000_000)
        while not done.is_set():
            producer.poll(0.05)
        producer.purge()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        await asyncio.wait_for(recorder.produced.wait(), 30)
    finally:
        done.set()
        await asyncio.to_thread(thread.join)


async def run_kafka_python(recorder: Recorder) -> None:
    from kafka import KafkaProducer

    done = threading.Event()

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{recorder.port}", client_id="golden-kafka-python",
                                 enable_idempotence=False, linger_ms=0, request_timeout_ms=5000, acks=1)  # fmt: skip
        producer.send(TOPIC, key=b"key-1", value=b"value-1", headers=[("h", b"v")], timestamp_ms=1_700_000_000_000)
        done.wait(30)
        producer.close(timeout=0)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        await asyncio.wait_for(recorder.produced.wait(), 30)
    finally:
        done.set()
        await asyncio.to_thread(thread.join)


async def run_aiokafka(recorder: Recorder) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{recorder.port}", client_id="golden-aiokafka",
                                enable_idempotence=False, linger_ms=0, request_timeout_ms=5000, acks=1)  # fmt: skip
    await producer.start()
    try:
        await producer.send(TOPIC, key=b"key-1", value=b"value-1", headers=[("h", b"v")], timestamp_ms=1_700_000_000_000)
        await asyncio.wait_for(recorder.produced.wait(), 30)
    finally:
        task = asyncio.ensure_future(producer.stop())
        await asyncio.wait([task], timeout=5)


async def main() -> None:
    load_all()
    clients = {"rdkafka": run_librdkafka, "kafka-python": run_kafka_python, "aiokafka": run_aiokafka}
    wanted = sys.argv[1:] or list(clients)
    for label in wanted:
        frames = await capture(label, clients[label])
        for name, frame in frames.items():
            (HERE / f"{name}.hex").write_text(frame.hex() + "\n")
            print(name, len(frame), "bytes")


if __name__ == "__main__":
    asyncio.run(main())
