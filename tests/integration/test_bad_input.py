"""Bad input over raw sockets: the broker closes what Kafka closes, answers what Kafka answers,
logs why, and keeps serving new and existing connections afterwards."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from tests.brokerproc import wait_until
from tidelog.protocol import apis
from tidelog.protocol.records import build_batch

TIMEOUT_S = 10.0


class Conn:
    def __init__(self, broker) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT_S)
        self.correlation_id = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, message, version: int) -> int:
        self.correlation_id += 1
        message.with_header(correlation_id=self.correlation_id, client_id="bad-input")
        self.send(bytes(message.encode(version=version, header=True, framed=True)))
        return self.correlation_id

    def recv_exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed by the broker")
            data += chunk
        return bytes(data)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exactly(4))
        return self.recv_exactly(size)

    def roundtrip(self, message, response_cls, version: int):
        correlation_id = self.request(message, version)
        response = response_cls.decode(self.recv_frame(), version=version, header=True)
        assert response.header.correlation_id == correlation_id
        return response

    def api_versions(self, version: int = 0):
        response = self.roundtrip(ApiVersionsRequest[version](), ApiVersionsResponse, version)
        assert response.error_code == 0
        return response

    def closed_by_broker(self) -> bool:
        """True once the broker has closed the connection (EOF or reset) within the timeout."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


def frame(api_key: int, version: int, correlation_id: int, body: bytes, client_id: bytes | None = b"bad-input") -> bytes:
    if client_id is None:
        header = struct.pack(">hhih", api_key, version, correlation_id, -1)
    else:
        header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(header) + len(body)) + header + body


def assert_still_serving(broker, existing: Conn, reason: str) -> None:
    """The broker lives, answers a fresh connection and an older good one, and logged ``reason``."""
    assert broker.alive, broker.log()
    fresh = Conn(broker)
    try:
        fresh.api_versions(3)
    finally:
        fresh.close()
    existing.api_versions(0)
    wait_until(lambda: reason in broker.log(), TIMEOUT_S, message=f"log line {reason!r}")


@pytest.fixture
def broker(shared_broker):
    """One broker for the module: every test here checks that bad input leaves it serving."""
    return shared_broker


@pytest.fixture
def good(broker):
    conn = Conn(broker)
    conn.api_versions(0)
    yield conn
    conn.close()


# --- frames the broker must close -------------------------------------------------------------


@pytest.mark.parametrize(
    "size, reason",
    [
        (104857600 + 1, "frame size 104857601 outside"),  # > socket.request.max.bytes
        (2**31 - 1, "frame size 2147483647 outside"),
        (-1, "frame size -1 outside"),
        (-(2**31), "frame size -2147483648 outside"),
        (0, "frame size 0 outside"),
        (3, "frame size 3 outside"),
    ],
)
def test_frame_size_out_of_bounds_closes(broker, good, size, reason):
    bad = Conn(broker)
    bad.send(struct.pack(">i", size) + b"\x00\x12\x00\x00\x00\x00\x00\x01")
    assert bad.closed_by_broker()
    assert_still_serving(broker, good, reason)


def test_smaller_socket_request_max_bytes(broker_factory):
    broker = broker_factory({"socket.request.max.bytes": "1000"})
    good = Conn(broker)
    good.api_versions(0)
    bad = Conn(broker)
    bad.send(frame(3, 1, 1, b"\x00\x00\x00\x01\x03\xe8" + b"x" * 1000))
    assert bad.closed_by_broker()
    assert_still_serving(broker, good, "outside 8..1000 (socket.request.max.bytes)")


def test_truncated_body_closes(broker, good):
    """A Metadata v1 body cut inside its topic name; the size prefix matches the cut frame."""
    body = struct.pack(">ih", 1, 10) + b"abc"
    bad = Conn(broker)
    bad.send(frame(3, 1, 5, body))
    assert bad.closed_by_broker()
    assert_still_serving(broker, good, "cannot decode Metadata v1 request")


def test_header_shorter_than_client_id_closes(broker, good):
    bad = Conn(broker)
    header = struct.pack(">hhih", 18, 0, 1, 50) + b"short"
    bad.send(struct.pack(">i", len(header)) + header)
    assert bad.closed_by_broker()
    assert_still_serving(broker, good, "client_id runs past the end of the frame")


def test_unknown_api_key_closes(broker, good):
    bad = Conn(broker)
    bad.send(frame(999, 0, 77, b""))
    assert bad.closed_by_broker()
    assert_still_serving(broker, good, "unknown API key 999")


@pytest.mark.parametrize("version", [14, 99, -1])
def test_unsupported_metadata_version_closes(broker, good, version):
    bad = Conn(broker)
    bad.send(frame(3, version, 1, b"\x00\x00\x00\x00"))
    assert bad.closed_by_broker()
    assert_still_serving(broker, good, f"unsupported Metadata version {version}")


def test_requests_pipelined_before_a_bad_frame_are_answered(broker, good):
    """Kafka answers what came before the bad frame in order, then closes."""
    conn = Conn(broker)
    payload = b"".join(frame(18, 0, cid, b"") for cid in (1, 2, 3)) + frame(999, 0, 4, b"")
    conn.send(payload)
    for cid in (1, 2, 3):
        (got,) = struct.unpack_from(">i", conn.recv_frame())
        assert got == cid
    assert conn.closed_by_broker()
    assert_still_serving(broker, good, "unknown API key 999")


def test_nothing_after_a_failed_request_is_answered(broker, good):
    """A request that cannot be answered closes the connection before anything pipelined behind
    it is answered (the fuzz campaign got answers to the last two of [bad, ApiVersions,
    Metadata]). DescribeConfigs v1 with a null ``resources`` array (not nullable) is the bad one."""
    conn = Conn(broker)
    describe_configs_null_resources = struct.pack(">ib", -1, 0)
    conn.send(frame(32, 1, 1, describe_configs_null_resources) + frame(18, 0, 2, b"") + frame(3, 1, 3, struct.pack(">i", -1)))
    with pytest.raises(ConnectionError):
        data = conn.recv_frame()
        pytest.fail(f"answered correlation id {struct.unpack_from('>i', data)[0]} after a request that got no answer")
    assert_still_serving(broker, good, "closing connection from")


def null_array_body(api_key: int, version: int) -> tuple[str, bytes]:
    """A well-formed body but for its first array that the schema does not let be null."""
    from tests.schema_requests import RequestWriter

    for null_at in range(50):
        writer = RequestWriter(null_at=null_at)
        body = writer.body(api_key, version)
        if writer.nulled_array:
            return writer.nulled_field, body
    raise AssertionError(f"no non-nullable array in api {api_key} v{version}")


# Found by the fuzz campaign: each handler iterated over the None that kio decoded.
NULL_ARRAY_CASES = [(32, 1), (32, 4), (33, 0), (15, 0), (15, 5), (42, 2), (8, 2), (8, 9), (2, 1), (2, 10), (19, 2),
                    (19, 7), (20, 6), (21, 2), (37, 3), (44, 1), (9, 1), (35, 4), (23, 4), (47, 0)]


@pytest.mark.parametrize("api_key, version", NULL_ARRAY_CASES)
def test_null_non_nullable_array_closes_with_a_warning(broker, good, api_key, version):
    """Kafka fails to parse such a request and closes the connection; so does Tidelog, with a
    WARNING that names the field, never an ERROR traceback from the handler."""
    field, body = null_array_body(api_key, version)
    conn = Conn(broker)
    flexible_tags = b"\x00" if apis.is_flexible(api_key, version) else b""
    header = struct.pack(">hhih", api_key, version, 3, 1) + b"x" + flexible_tags
    conn.send(struct.pack(">i", len(header) + len(body)) + header + body)
    assert conn.closed_by_broker()
    assert_still_serving(broker, good, f"non-nullable field {field} was serialized as null")
    assert " ERROR " not in broker.log()


SHARE_REQUESTS = [(78, 1), (78, 2), (79, 1), (79, 2)]  # decoded by hand (protocol/share_requests.py)


def _share_frame(api_key: int, version: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, 3, 1) + b"x" + b"\x00"
    return struct.pack(">i", len(header) + len(body)) + header + body


@pytest.mark.parametrize("api_key, version", SHARE_REQUESTS)
def test_share_request_with_null_acknowledgement_batches_closes_with_a_warning(broker, good, api_key, version):
    from tests.schema_requests import RequestWriter

    null_at = 0
    while (writer := RequestWriter(null_at=null_at)).body(api_key, version) and \
            writer.nulled_field != "acknowledgement_batches":
        null_at += 1
        assert writer.nulled_field is not None, "no acknowledgement_batches field"
    conn = Conn(broker)
    conn.send(_share_frame(api_key, version, writer.body(api_key, version)))
    assert conn.closed_by_broker()
    assert_still_serving(broker, good, "non-nullable field acknowledgement_batches was serialized as null")
    assert " ERROR " not in broker.log()


@pytest.mark.parametrize("api_key, version", SHARE_REQUESTS)
def test_share_request_with_absurd_batch_count_closes(broker, good, api_key, version):
    """2**31 acknowledgement batches announced in a few bytes: refused before anything is built."""
    fields = struct.pack(">iiiiii", 1, 0, 1, 1024, 10, 10) if api_key == 78 else struct.pack(">i", 1)
    if version >= 2:
        fields += b"\x00\x00" if api_key == 78 else b"\x00"  # ShareAcquireMode, IsRenewAck
    body = (b"\x02g\x02m" + fields + b"\x02" + bytes(range(1, 17)) + b"\x02" + struct.pack(">i", 0)
            + b"\x80\x80\x80\x80\x08" + bytes(19))  # a count of 2**31 - 1, then one batch's bytes
    conn = Conn(broker)
    conn.send(_share_frame(api_key, version, body))
    assert conn.closed_by_broker()
    name = "ShareFetch" if api_key == 78 else "ShareAcknowledge"
    assert_still_serving(broker, good, f"cannot decode {name} v{version} request: MalformedFrame: array of 2147483647 "
                                       "elements")


# --- requests the broker must answer with an error --------------------------------------------


def test_api_versions_v99_gets_v0_body_with_unsupported_version(broker, good):
    conn = Conn(broker)
    conn.send(frame(18, 99, 1234, b"\x00whatever-a-future-client-sends"))
    data = conn.recv_frame()
    (correlation_id, error_code, count) = struct.unpack_from(">ihi", data)
    assert correlation_id == 1234  # response header v0: no tagged fields
    assert error_code == 35  # UNSUPPORTED_VERSION
    keys = [struct.unpack_from(">hhh", data, 10 + 6 * i) for i in range(count)]
    assert len(data) == 10 + 6 * count
    assert (18, 0, 4) in keys and (3, 0, 13) in keys and (0, 0, 12) in keys
    decoded = ApiVersionsResponse.decode(data, version=3, header=True)  # what a v3 client does
    assert decoded.error_code == 35 and len(decoded.api_keys) == count
    conn.api_versions(3)  # the client retries lower on the same connection
    assert_still_serving(broker, good, "")


@pytest.mark.parametrize("version", [10, 11])
@pytest.mark.parametrize("name", [None, "by-name"])
def test_metadata_v10_v11_topic_id_is_invalid_request(broker, good, version, name):
    """Kafka serves topic ids in Metadata from v12; v10/v11 with a null name or a topic id get
    INVALID_REQUEST on every topic (name "" where it was null), as Kafka's error response does.
    A null name used to make the response encoder raise: no answer, the connection left open."""
    conn = Conn(broker)
    topic_id = bytes(range(1, 17))
    name_bytes = b"\x00" if name is None else bytes([len(name) + 1]) + name.encode()
    body = b"\x02" + topic_id + name_bytes + b"\x00" + b"\x01\x00\x00\x00"
    header = struct.pack(">hhih", 3, version, 7, 1) + b"x" + b"\x00"
    conn.send(struct.pack(">i", len(header) + len(body)) + header + body)
    response = MetadataResponse.decode(conn.recv_frame(), version=version, header=True)
    assert response.header.correlation_id == 7
    (topic,) = response.topics
    assert (topic.error_code, topic.name) == (42, name or "")
    conn.api_versions(0)  # the connection stays usable
    assert_still_serving(broker, good, "")


def _zero_id_partition_answer(conn: Conn, api_key: int, version: int, correlation_id: int):
    """The one partition's answer in a response to a request naming the all-zero topic id."""
    from kio.serial import entity_reader

    data = conn.recv_frame()
    assert struct.unpack_from(">i", data)[0] == correlation_id
    response, _ = entity_reader(apis.response_type(api_key, version))(memoryview(data[5:]).toreadonly(), 0)
    assert response.error_code == 0
    (topic_response,) = response.responses
    assert topic_response.topic_id is None  # kio's reading of the zero uuid
    (partition_response,) = topic_response.partitions
    return partition_response


@pytest.mark.parametrize("version", [13, 17])
def test_fetch_with_the_zero_topic_id_is_unknown_topic_id(broker, good, version):
    """Fetch v13+ names topics by id; the all-zero id is no topic's (Kafka: UNKNOWN_TOPIC_ID).
    It used to fail in the response encoder."""
    partition = struct.pack(">iiqiqi", 0, -1, 0, -1, -1, 1 << 20) + b"\x00"
    topic = bytes(16) + b"\x02" + partition + b"\x00"
    replica_id = struct.pack(">i", -1) if version < 15 else b""
    body = replica_id + struct.pack(">iiibii", 0, 0, 1 << 20, 0, 0, -1) + b"\x02" + topic + b"\x01" + b"\x01" + b"\x00"
    conn = Conn(broker)
    header = struct.pack(">hhih", 1, version, 5, 1) + b"x" + b"\x00"
    conn.send(struct.pack(">i", len(header) + len(body)) + header + body)
    assert _zero_id_partition_answer(conn, 1, version, 5).error_code == 100  # UNKNOWN_TOPIC_ID
    conn.api_versions(0)
    assert_still_serving(broker, good, "")


@pytest.mark.parametrize("version", [1, 2])
def test_share_fetch_with_the_zero_topic_id_is_unknown_topic_id(broker, good, version):
    """ShareFetch names topics by id; the all-zero id (read as None) is no topic's: UNKNOWN_TOPIC_ID
    under that id, as Kafka answers. The response encoder used to fail on it (an ERROR and a closed
    connection; found by the fuzz campaign, seed 575040670)."""
    import io

    from kio.serial import entity_writer

    heartbeat = apis.load_request_schema(76, 1)  # ShareGroupHeartbeat: the first one creates __share_group_state
    out = io.BytesIO()
    entity_writer(heartbeat)(out, apis.build(heartbeat, group_id="zero-id", member_id="m-zero-id", member_epoch=0,
                                             subscribed_topic_names=("t",)))
    conn = Conn(broker)
    conn.send(_share_frame(76, 1, out.getvalue()))
    conn.recv_frame()
    fields = struct.pack(">iiiiii", 0, 0, 1, 1024, 10, 10) + (b"\x00\x00" if version >= 2 else b"")
    partition = struct.pack(">i", 0) + b"\x01" + b"\x00"  # no acknowledgement batches
    body = b"\x02g\x02m" + fields + b"\x02" + bytes(16) + b"\x02" + partition + b"\x00" + b"\x01" + b"\x00"
    conn.send(_share_frame(78, version, body))
    assert _zero_id_partition_answer(conn, 78, version, 3).error_code == 100  # UNKNOWN_TOPIC_ID
    conn.api_versions(0)
    assert_still_serving(broker, good, "")
    assert " ERROR " not in broker.log()


def test_deleting_the_offsets_topic_is_refused_and_groups_keep_working(broker, good):
    """Found by the fuzz campaign: DeleteTopics of __consumer_offsets left the group coordinator
    appending to a deleted log (an ERROR traceback on every group write). Kafka's own tools
    refuse to delete an internal topic; the broker refuses here, since its coordinator cannot
    reload from a re-created one."""
    from kafka.protocol.admin import DeleteTopicsRequest, DeleteTopicsResponse
    from kafka.protocol.admin import DeleteGroupsRequest, DeleteGroupsResponse

    conn = Conn(broker)
    response = conn.roundtrip(DeleteTopicsRequest[4](topic_names=["__consumer_offsets"], timeout_ms=5000), DeleteTopicsResponse, 4)
    assert response.responses[0].error_code == 42  # INVALID_REQUEST
    groups = conn.roundtrip(DeleteGroupsRequest[2](groups_names=["no-such-group"]), DeleteGroupsResponse, 2)
    assert groups.results[0].error_code == 69  # GROUP_ID_NOT_FOUND: the coordinator still answers
    assert_still_serving(broker, good, "internal topic")
    assert " ERROR " not in broker.log()


def test_every_internal_topic_is_flagged_internal_and_not_deleted(broker, good):
    """Kafka's internal topics are one set: __consumer_offsets, __transaction_state and
    __share_group_state are flagged internal by Metadata and refused by DeleteTopics alike
    (Metadata once left __share_group_state out, and DeleteTopics refused only the first)."""
    from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse

    conn = Conn(broker)
    names = ["__transaction_state", "__share_group_state"]
    topic = CreateTopicsRequest[4].CreatableTopic
    created = conn.roundtrip(CreateTopicsRequest[4](
        topics=[topic(name=n, num_partitions=1, replication_factor=1, assignments=[], configs=[]) for n in names],
        timeout_ms=5000, validate_only=False), CreateTopicsResponse, 4)
    # TOPIC_ALREADY_EXISTS where an earlier test of this module's broker used share groups
    assert all(t.error_code in (0, 36) for t in created.topics), created.topics
    names.append("__consumer_offsets")
    request = MetadataRequest[9](topics=[MetadataRequest.MetadataRequestTopic(name=n) for n in names],
                                 allow_auto_topic_creation=False)
    metadata = conn.roundtrip(request, MetadataResponse, 9)
    assert {t.name: (t.error_code, t.is_internal) for t in metadata.topics} == {n: (0, True) for n in names}
    deleted = conn.roundtrip(DeleteTopicsRequest[4](topic_names=names, timeout_ms=5000), DeleteTopicsResponse, 4)
    assert {r.name: r.error_code for r in deleted.responses} == {n: 42 for n in names}  # INVALID_REQUEST
    assert_still_serving(broker, good, "refusing to delete internal topic __share_group_state")


def create_topic(conn: Conn, name: str) -> None:
    request = MetadataRequest[9](topics=[MetadataRequest.MetadataRequestTopic(name=name)], allow_auto_topic_creation=True)
    response = conn.roundtrip(request, MetadataResponse, 9)
    assert response.topics[0].error_code == 0, response


def produce(conn: Conn, topic: str, records: bytes | None, version: int = 9, partition: int = 0):
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=records)
    request = ProduceRequest[version](
        transactional_id=None, acks=1, timeout_ms=5000,
        topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[data])],
    )  # fmt: skip
    response = conn.roundtrip(request, ProduceResponse, version)
    (topic_response,) = response.responses
    (partition_response,) = topic_response.partition_responses
    return partition_response


def test_produce_v2_gets_unsupported_version(broker, good):
    conn = Conn(broker)
    create_topic(conn, "old-produce")
    # A v0/v1 message set (magic 1); Kafka 4 refuses the version before looking at it.
    message = struct.pack(">bbqi", 1, 0, 1_700_000_000_000, -1) + struct.pack(">i", 1) + b"v"
    message_set = struct.pack(">qi", 0, 4 + len(message)) + struct.pack(">I", 0) + message
    result = produce(conn, "old-produce", message_set, version=2)
    assert result.error_code == 35
    conn.api_versions(0)  # the connection stays usable
    assert_still_serving(broker, good, "refusing Produce v2")


def test_produce_bad_crc_is_corrupt_message_and_connection_stays_usable(broker, good):
    conn = Conn(broker)
    create_topic(conn, "crc")
    batch = bytearray(build_batch([(b"k", b"value", [])]))
    batch[-1] ^= 0xFF  # last byte of the value: covered by the CRC
    result = produce(conn, "crc", bytes(batch))
    assert result.error_code == 2  # CORRUPT_MESSAGE
    assert result.base_offset == -1
    ok = produce(conn, "crc", build_batch([(b"k", b"value", [])]))
    assert (ok.error_code, ok.base_offset) == (0, 0)
    assert_still_serving(broker, good, "CRC-32C mismatch")


def test_produce_zstd_before_v7_is_unsupported_compression_type(broker, good):
    conn = Conn(broker)
    create_topic(conn, "zstd-old")
    batch = build_batch([(b"k", b"value" * 10, [])], compression=4)
    assert produce(conn, "zstd-old", batch, version=6).error_code == 76  # UNSUPPORTED_COMPRESSION_TYPE
    ok = produce(conn, "zstd-old", batch, version=7)
    assert (ok.error_code, ok.base_offset) == (0, 0)
    assert_still_serving(broker, good, "zstd needs Produce v7")


def test_produce_batch_larger_than_max_message_bytes(broker, good):
    conn = Conn(broker)
    create_topic(conn, "big")
    batch = build_batch([(None, b"x" * (1048588 + 100), [])])  # message.max.bytes default 1048588
    result = produce(conn, "big", batch)
    assert result.error_code == 10  # MESSAGE_TOO_LARGE
    ok = produce(conn, "big", build_batch([(None, b"small", [])]))
    assert ok.error_code == 0
    assert_still_serving(broker, good, "exceeds max.message.bytes")


def test_produce_truncated_batch_is_corrupt_message(broker, good):
    conn = Conn(broker)
    create_topic(conn, "cut")
    batch = build_batch([(b"k", b"value" * 10, [])])
    result = produce(conn, "cut", batch[:-7])
    assert result.error_code == 2
    assert_still_serving(broker, good, "truncated")


# --- known gaps (strict xfails: they flip when fixed) ----------------------------------------


def test_huge_compact_array_count_does_not_kill_the_broker(broker, good):
    bad = Conn(broker)
    # Metadata v9 body: topics = compact array claiming 2**32-2 entries.
    # The leading 0 ends the flexible header's tagged-field section.
    bad.send(frame(3, 9, 1, b"\x00" + b"\xff\xff\xff\xff\x0f" + b"\x00" * 8))
    assert bad.closed_by_broker()
    assert broker.alive
    assert_still_serving(broker, good, "cannot decode Metadata v9 request")


def test_unknown_tagged_field_in_request_body_is_skipped(broker, good):
    conn = Conn(broker)
    body = b"\x04kpy\x041.0" + b"\x01\x63\x03abc"  # ApiVersions v3 + unknown tag 99
    header = struct.pack(">hhih", 18, 3, 9, 1) + b"x" + b"\x00"
    conn.send(struct.pack(">i", len(header) + len(body)) + header + body)
    decoded = ApiVersionsResponse.decode(conn.recv_frame(), version=3, header=True)
    assert decoded.error_code == 0


# --- many connections, pipelining, memory -----------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_connections_and_pipelined_requests(broker_factory):
    broker = broker_factory({"queued.max.requests": "50"})
    conns = [Conn(broker) for _ in range(200)]
    try:
        rss_before = rss_kib(broker.proc.pid)
        pipelined = conns[0]
        pipelined.send(b"".join(frame(18, 0, cid, b"") for cid in range(1, 1001)))
        for conn in conns[1:]:
            conn.api_versions(0)
        # The broker has read what it could; it must not hold more than a bounded amount.
        assert rss_kib(broker.proc.pid) - rss_before < 64 * 1024
        for cid in range(1, 1001):
            data = pipelined.recv_frame()
            (got, error_code) = struct.unpack_from(">ih", data)
            assert (got, error_code) == (cid, 0)
        pipelined.api_versions(0)
        assert rss_kib(broker.proc.pid) < 300 * 1024
    finally:
        for conn in conns:
            conn.close()
    wait_until(lambda: broker.alive and len(broker.log()) > 0, message="broker alive")


def test_client_that_never_reads_does_not_grow_broker_memory(broker):
    """Pipelined requests and no reading: once the socket buffers fill, the broker must stop
    reading (Kafka mutes the channel) rather than queue responses in memory. ApiVersions v0 with
    a null client id is 14 bytes in and ~220 bytes out, so 600,000 of them (8.4 MB) would leave
    ~130 MB of responses queued in a broker without backpressure."""
    conn = Conn(broker)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.sock.settimeout(0.2)
    rss_before = rss_kib(broker.proc.pid)
    payload = memoryview(b"".join(frame(18, 0, cid, b"", client_id=None) for cid in range(600_000)))
    sent = 0
    last_progress = time.monotonic()
    deadline = time.monotonic() + 30
    while sent < len(payload) and time.monotonic() < deadline and time.monotonic() - last_progress < 3:
        try:
            sent += conn.sock.send(payload[sent : sent + 65536])
            last_progress = time.monotonic()
        except socket.timeout:
            pass  # the broker is not reading: either busy or applying backpressure
    samples = [rss_kib(broker.proc.pid)]

    def settled() -> bool:  # the broker has worked through what it read
        samples.append(rss_kib(broker.proc.pid))
        return abs(samples[-1] - samples[-2]) < 512

    wait_until(settled, 30, interval_s=1.0, message="broker memory to settle")
    growth_kib = samples[-1] - rss_before
    print(f"sent {sent} of {len(payload)} bytes; broker RSS grew {growth_kib} KiB; samples {samples}")
    assert growth_kib < 64 * 1024, f"broker grew {growth_kib} KiB holding responses to {sent // 14} unread requests"
    conn.close()
    assert_still_serving(broker, Conn(broker), "")
