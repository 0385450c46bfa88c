"""Requests pipelined on one connection take effect in order, as on a Kafka broker.

Kafka reads a connection's next request only after it has answered the one before (the
processor mutes the channel meanwhile), so a client may pipeline an OffsetCommit and an
OffsetFetch, a CreateTopics and a Metadata, a Produce and a Fetch, and the later request sees
what the earlier one did. Tidelog starts Produce requests at once (they append in arrival order
and their acknowledgement waits overlap); every other request waits for those before it. These
tests send each pair in one write on one socket, with every response read afterwards."""

from __future__ import annotations

import datetime
import io
import socket
import struct

import pytest
from kio.schema.create_topics.v7 import request as create_topics
from kio.schema.delete_topics.v6 import request as delete_topics
from kio.schema.fetch.v12 import request as fetch
from kio.schema.metadata.v12 import request as metadata
from kio.schema.offset_commit.v8 import request as offset_commit
from kio.schema.offset_fetch.v8 import request as offset_fetch
from kio.schema.produce.v9 import request as produce
from kio.serial import entity_reader, entity_writer

from tidelog.protocol.apis import is_flexible, load_request_schema, load_response_schema
from tidelog.protocol.records import build_batch, iter_records

TIMEOUT_S = 15.0
PRODUCE, FETCH, METADATA, OFFSET_COMMIT, OFFSET_FETCH, CREATE_TOPICS, DELETE_TOPICS = 0, 1, 3, 8, 9, 19, 20


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


class Pipeline:
    """One socket: ``send`` writes several requests at once, ``answers`` reads their responses."""

    def __init__(self, broker) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT_S)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def frame(self, api_key: int, version: int, request) -> tuple[bytes, tuple]:
        self.correlation_id += 1
        body = io.BytesIO()
        entity_writer(load_request_schema(api_key, version))(body, request)
        header = struct.pack(">hhih", api_key, version, self.correlation_id, 4) + b"test"
        if is_flexible(api_key, version):
            header += b"\x00"
        data = header + body.getvalue()
        return struct.pack(">i", len(data)) + data, (api_key, version, self.correlation_id)

    def send(self, *requests: tuple[int, int, object]) -> list:
        """Write every request in one ``sendall``; return their responses, in order."""
        frames = [self.frame(*request) for request in requests]
        self.sock.sendall(b"".join(data for data, _ in frames))
        return [self._answer(*expected) for _, expected in frames]

    def _answer(self, api_key: int, version: int, correlation_id: int):
        (size,) = struct.unpack(">i", self._exactly(4))
        frame = self._exactly(size)
        assert struct.unpack_from(">i", frame)[0] == correlation_id
        offset = 5 if is_flexible(api_key, version) and api_key != 18 else 4
        return entity_reader(load_response_schema(api_key, version))(memoryview(frame)[offset:], 0)[0]

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return bytes(data)


def _create(name: str, partitions: int = 1):
    topic = create_topics.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1, assignments=(),
                                         configs=())
    return CREATE_TOPICS, 7, create_topics.CreateTopicsRequest(topics=(topic,), timeout=datetime.timedelta(seconds=10))


def _metadata(name: str):
    return METADATA, 12, metadata.MetadataRequest(topics=(metadata.MetadataRequestTopic(topic_id=None, name=name),),
                                                  allow_auto_topic_creation=False,
                                                  include_topic_authorized_operations=False)


def _produce(name: str, values: list[bytes], acks: int = -1):
    batch = build_batch([(None, value, []) for value in values])
    data = produce.TopicProduceData(name=name, partition_data=(produce.PartitionProduceData(index=0, records=batch),))
    return PRODUCE, 9, produce.ProduceRequest(acks=acks, timeout=datetime.timedelta(seconds=10), topic_data=(data,))


def _fetch(name: str, offset: int):
    partition = fetch.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)
    return FETCH, 12, fetch.FetchRequest(max_wait=datetime.timedelta(0), min_bytes=0, topics=(
        fetch.FetchTopic(topic=name, partitions=(partition,)),), forgotten_topics_data=())


def _commit(group: str, name: str, offset: int):
    partition = offset_commit.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                           committed_metadata="")
    return OFFSET_COMMIT, 8, offset_commit.OffsetCommitRequest(
        group_id=group, member_id="", topics=(offset_commit.OffsetCommitRequestTopic(name=name, partitions=(partition,)),))


def _committed(group: str, name: str):
    topics = (offset_fetch.OffsetFetchRequestTopics(name=name, partition_indexes=(0,)),)
    return OFFSET_FETCH, 8, offset_fetch.OffsetFetchRequest(groups=(offset_fetch.OffsetFetchRequestGroup(
        group_id=group, topics=topics),))


def test_metadata_pipelined_behind_create_and_delete_topics_sees_them(broker):
    conn = Pipeline(broker)
    try:
        for round_ in range(5):
            name = f"made-{round_}"
            created, described = conn.send(_create(name, partitions=3), _metadata(name))
            assert created.topics[0].error_code == 0, created
            (topic,) = described.topics
            assert (topic.error_code, len(topic.partitions)) == (0, 3), topic
            deleted, described = conn.send((DELETE_TOPICS, 6, delete_topics.DeleteTopicsRequest(
                topics=(delete_topics.DeleteTopicState(name=name, topic_id=None),),
                timeout=datetime.timedelta(seconds=10))), _metadata(name))
            assert deleted.responses[0].error_code == 0, deleted
            assert described.topics[0].error_code == 3, "UNKNOWN_TOPIC_OR_PARTITION after the delete"
    finally:
        conn.close()


def test_offset_fetch_pipelined_behind_offset_commit_sees_it(broker):
    conn = Pipeline(broker)
    try:
        (created,) = conn.send(_create("committed"))
        assert created.topics[0].error_code == 0
        for offset in range(1, 21):
            committed, fetched = conn.send(_commit("pipelined", "committed", offset), _committed("pipelined", "committed"))
            assert committed.topics[0].partitions[0].error_code == 0, committed
            partition = fetched.groups[0].topics[0].partitions[0]
            assert (partition.error_code, partition.committed_offset) == (0, offset)
    finally:
        conn.close()


def test_fetch_pipelined_behind_produce_sees_its_records(broker):
    conn = Pipeline(broker)
    try:
        (created,) = conn.send(_create("read-back"))
        assert created.topics[0].error_code == 0
        for n in range(20):
            produced, fetched = conn.send(_produce("read-back", [b"value %d" % n]), _fetch("read-back", n))
            assert produced.responses[0].partition_responses[0].base_offset == n, produced
            partition = fetched.responses[0].partitions[0]
            assert partition.error_code == 0 and partition.high_watermark == n + 1, partition
            assert [record.value for record in iter_records(partition.records)] == [b"value %d" % n]
    finally:
        conn.close()


def test_pipelined_produces_append_in_request_order(broker):
    conn = Pipeline(broker)
    try:
        (created,) = conn.send(_create("in-order"))
        assert created.topics[0].error_code == 0
        for round_ in range(10):
            answers = conn.send(*[_produce("in-order", [b"%d-%d" % (round_, n)] * 3, acks=acks)
                                  for n, acks in enumerate([-1, 1, -1, 1, -1])])
            offsets = [answer.responses[0].partition_responses[0].base_offset for answer in answers]
            assert offsets == [round_ * 15 + 3 * n for n in range(5)]
        (fetched,) = conn.send(_fetch("in-order", 0))
        values = [record.value for record in iter_records(fetched.responses[0].partitions[0].records)]
        assert values == [b"%d-%d" % (round_, n) for round_ in range(10) for n in range(5) for _ in range(3)]
    finally:
        conn.close()


def test_acks_0_produces_pipelined_between_others_append_in_order_and_a_fetch_behind_sees_them(broker):
    """An acks=0 Produce is done in its first step, as its frame is read (connection.py
    ``_started_now``): nothing is answered for it, the Produce requests around it still append in
    request order, and a Fetch behind the last acknowledged one sees every record."""
    conn = Pipeline(broker)
    try:
        (created,) = conn.send(_create("acks-0-between"))
        assert created.topics[0].error_code == 0
        expected = []
        for round_ in range(5):
            requests = [_produce("acks-0-between", [b"%d-%d" % (round_, n)] * 2, acks=acks)
                        for n, acks in enumerate([0, -1, 0, 0, 1])]
            frames = [conn.frame(*request) for request in requests]
            fetch_frame = conn.frame(*_fetch("acks-0-between", 0))
            conn.sock.sendall(b"".join(data for data, _ in frames) + fetch_frame[0])
            answers = [conn._answer(*meta) for (_, meta), request in zip(frames, requests) if request[2].acks != 0]
            expected += [b"%d-%d" % (round_, n) for n in range(5) for _ in range(2)]
            assert [answer.responses[0].partition_responses[0].base_offset for answer in answers] == \
                   [round_ * 10 + 2, round_ * 10 + 8]
            fetched = conn._answer(*fetch_frame[1])
            values = [record.value for record in iter_records(fetched.responses[0].partitions[0].records)]
            assert values == expected
    finally:
        conn.close()


def test_a_parked_fetch_before_a_bad_frame_is_answered_then_the_connection_closes(broker):
    """A Fetch waiting for data (``_answer_parked`` writes its own answer) read before a frame that
    cannot be a request: the Fetch is still answered, when its wait ends, and then the connection
    closes; a Produce on another connection meanwhile ends the wait with its record."""
    conn, other = Pipeline(broker), Pipeline(broker)
    try:
        (created,) = conn.send(_create("parked-then-bad"))
        assert created.topics[0].error_code == 0
        partition = fetch.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)
        waiting = FETCH, 12, fetch.FetchRequest(max_wait=datetime.timedelta(seconds=10), min_bytes=1, topics=(
            fetch.FetchTopic(topic="parked-then-bad", partitions=(partition,)),), forgotten_topics_data=())
        data, meta = conn.frame(*waiting)
        conn.sock.sendall(data + struct.pack(">i", 4) + b"junk")  # a frame size below 8: closes
        (produced,) = other.send(_produce("parked-then-bad", [b"wakes it"]))
        assert produced.responses[0].partition_responses[0].error_code == 0
        fetched = conn._answer(*meta)
        values = [record.value for record in iter_records(fetched.responses[0].partitions[0].records)]
        assert values == [b"wakes it"]
        assert conn.sock.recv(1) == b"", "the connection stayed open after the bad frame"
    finally:
        conn.close()
        other.close()
