"""Records are validated on produce as Kafka's LogValidator does: a batch whose CRC is right but
whose records are not (or whose payload its codec cannot decompress) is refused, so consumers
never meet it; and corrupt data already on disk does not take a read path down."""

from __future__ import annotations

import asyncio
import struct
import time

import crc32c
import pytest
import requests
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.clients import consume, produce
from tests.integration.test_bad_input import Conn, assert_still_serving, create_topic, good  # noqa: F401 (fixture)
from tests.integration.test_bad_input import produce as produce_raw
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import BATCH_HEADER_SIZE, build_batch

SNAPPY = 2


def with_crc(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def garbage_records_batch(base_offset: int = 0) -> bytes:
    """Three records' worth of bytes that are not records, under a header and CRC that are right."""
    batch = bytearray(build_batch([(b"k", b"v" * 40, [])] * 3))
    batch[BATCH_HEADER_SIZE:] = bytes(range(256))[: len(batch) - BATCH_HEADER_SIZE]
    struct.pack_into(">q", batch, 0, base_offset)
    return with_crc(batch)


def not_snappy_batch(base_offset: int = 0, timestamp_ms: int | None = None) -> bytes:
    """Well-formed records, flagged snappy without being compressed."""
    batch = bytearray(build_batch([(b"k", b"value %d" % n, []) for n in range(3)], timestamp_ms=timestamp_ms))
    struct.pack_into(">h", batch, 21, SNAPPY)
    struct.pack_into(">q", batch, 0, base_offset)
    return with_crc(batch)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_garbage_records_are_refused_and_consumers_go_on(broker, good, client):
    topic = f"garbage-{client}"
    conn = Conn(broker)
    create_topic(conn, topic)
    produce(client, broker.bootstrap, topic, [(b"a", b"before", [], None)])
    result = produce_raw(conn, topic, garbage_records_batch())
    assert (result.error_code, result.base_offset) == (ErrorCode.invalid_record, -1)
    assert "INVALID_RECORD" not in (result.error_message or ""), "the message says what is wrong"
    assert "record" in result.error_message
    refused = produce_raw(conn, topic, not_snappy_batch())
    assert (refused.error_code, refused.base_offset) == (ErrorCode.corrupt_message, -1)
    assert "cannot decompress" in refused.error_message
    produce(client, broker.bootstrap, topic, [(b"b", b"after", [], None)])
    for reader in ("confluent", "kafka-python"):
        assert [m.value for m in consume(reader, broker.bootstrap, topic, 2)] == [b"before", b"after"]
    assert_still_serving(broker, good, "rejected: INVALID_RECORD: record 0")


def test_malformed_record_under_topic_recompression_is_answered(broker, good):
    """The topic recompresses every batch (compression.type=gzip): a malformed record gets an
    error code on an open connection, not a closed connection."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("recompressed", 1, 1, config={"compression.type": "gzip"})])["recompressed"].result(10)
    conn = Conn(broker)
    result = produce_raw(conn, "recompressed", garbage_records_batch())
    assert result.error_code == ErrorCode.invalid_record
    ok = produce_raw(conn, "recompressed", build_batch([(b"k", b"fine", [])]))
    assert (ok.error_code, ok.base_offset) == (0, 0)
    assert [m.value for m in consume("kafka-python", broker.bootstrap, "recompressed", 1)] == [b"fine"]


def _list_offsets_by_time(broker, topic: str, timestamp_ms: int) -> tuple[int, int]:
    from kio.schema.list_offsets.v1 import request as list_offsets

    async def ask():
        channel = BrokerChannel("127.0.0.1", broker.port, "test")
        try:
            request = list_offsets.ListOffsetsRequest(replica_id=-1, topics=(list_offsets.ListOffsetsTopic(
                name=topic, partitions=(list_offsets.ListOffsetsPartition(partition_index=0, timestamp=timestamp_ms),)),))
            partition = (await channel.request(2, 1, request, 10)).topics[0].partitions[0]
            return partition.error_code, partition.offset
        finally:
            channel.close()

    return asyncio.run(ask())


def test_corrupt_batch_on_disk_does_not_break_read_paths(broker):
    """A batch stored before produce validated records (written here straight into the segment):
    ListOffsets by time and the HTTP API answer with an error and a WARNING, no traceback."""
    topic = "stored-corrupt"
    now = int(time.time() * 1000)
    produce("confluent", broker.bootstrap, topic, [(b"k", b"good", [], now - 60_000)])
    broker.stop()
    (segment,) = (broker.data_dir / f"{topic}-0").glob("*.log")
    with open(segment, "ab") as f:
        f.write(not_snappy_batch(base_offset=1, timestamp_ms=now))
    # The clean stop's account of the log no longer matches its segment (a start would take the
    # directory offline: test_storage_clean_start); as data from before validation, it is read
    # from the files, as after a crash.
    (broker.data_dir / ".clean-shutdown").unlink()
    broker.restart()
    good = Conn(broker)
    good.api_versions(0)
    for _ in range(2):  # the connection stays usable
        # the first record at or after this time can only be in the corrupt batch
        assert _list_offsets_by_time(broker, topic, now - 30_000) == (ErrorCode.kafka_storage_error, -1)
    assert _list_offsets_by_time(broker, topic, 0) == (0, 0), "the good record is still found"
    response = requests.get(f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/{topic}/partitions/0/records",
                            params={"offset": 1}, timeout=10)
    assert 400 <= response.status_code < 500 or response.status_code == 503, (response.status_code, response.text)
    assert "Traceback" not in broker.log() and " ERROR " not in broker.log(), broker.log()
    assert_still_serving(broker, good, "cannot decode")
