"""DescribeTopicPartitions, DescribeLogDirs, AlterReplicaLogDirs and ElectLeaders on a single
node, through kafka-python's KafkaAdminClient (their newest versions), confluent-kafka
(ElectLeaders, the only one of these librdkafka has; its binding refuses a request_timeout
keyword for it) and kafka-python's protocol classes sent
over a plain socket at older or edge-case versions (null lists, cursors, unknown election types);
and in a 3-broker cluster: offline replicas, a preferred leader that is not available, then
moved back by ElectLeaders."""

from __future__ import annotations

import os
import socket
import struct

import kafka.errors as kerrors
import pytest
from confluent_kafka import ElectionType, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as NewConfluentTopic
from kafka import KafkaAdminClient, TopicPartitionReplica
from kafka.admin import NewTopic
from kafka.protocol.admin.cluster import (AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
                                          DescribeLogDirsResponse)
from kafka.protocol.admin.topics import (DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, ElectLeadersRequest,
                                         ElectLeadersResponse)

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.integration.clients import produce

TIMEOUT_S = 15
NONE, UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION, INVALID_REQUEST = 0, 3, 17, 42
LOG_DIR_NOT_FOUND, PREFERRED_LEADER_NOT_AVAILABLE, ELECTION_NOT_NEEDED = 57, 80, 84
# Every TOPIC operation (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS).
TOPIC_OPERATIONS = sum(1 << code for code in (3, 4, 5, 6, 7, 8, 10, 11))


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


class Conn:
    """One socket speaking the Kafka protocol with kafka-python's message classes."""

    def __init__(self, broker) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT_S)
        self.correlation_id = 0

    def _recv_exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed by the broker")
            data += chunk
        return bytes(data)

    def roundtrip(self, message, response_cls, version: int):
        self.correlation_id += 1
        message.with_header(correlation_id=self.correlation_id, client_id="admin-extra")
        self.sock.sendall(bytes(message.encode(version=version, header=True, framed=True)))
        (size,) = struct.unpack(">i", self._recv_exactly(4))
        response = response_cls.decode(self._recv_exactly(size), version=version, header=True)
        assert response.header.correlation_id == self.correlation_id
        return response

    def close(self) -> None:
        self.sock.close()


def kp_admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def create_topics(admin: KafkaAdminClient, topics: dict[str, int]) -> None:
    admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics.items()])


def partition_indexes(topic: dict) -> list[int]:
    return [p["partition_index"] for p in topic["partitions"]]


# --- DescribeTopicPartitions (75) -------------------------------------------------------------

def test_describe_topic_partitions_kafka_python(broker):
    admin = kp_admin(broker)
    try:
        create_topics(admin, {"dtp-a": 4, "dtp-b": 2})
        ids = {t["name"]: t["topic_id"] for t in admin.describe_topics(["dtp-a", "dtp-b"])}
        result = admin.describe_topic_partitions(["dtp-a"])
        assert result["next_cursor"] is None
        (topic,) = result["topics"]
        assert (topic["name"], topic["error_code"], topic["is_internal"]) == ("dtp-a", NONE, False)
        assert str(topic["topic_id"]) == str(ids["dtp-a"])
        assert topic["topic_authorized_operations"] == TOPIC_OPERATIONS
        assert partition_indexes(topic) == [0, 1, 2, 3]
        for p in topic["partitions"]:
            assert (p["error_code"], p["leader_id"], p["leader_epoch"]) == (NONE, 1, 0)
            assert (p["replica_nodes"], p["isr_nodes"], p["offline_replicas"]) == ([1], [1], [])
            assert not p["eligible_leader_replicas"] and not p["last_known_elr"]

        # Pages of 3 partitions over both topics (sorted by name); unknown and illegal names answer at once.
        page = admin.describe_topic_partitions(["dtp-b", "dtp-a", "dtp-nope", "bad/name"], response_partition_limit=3)
        by_name = {t["name"]: t for t in page["topics"]}
        assert [t["name"] for t in page["topics"]] == ["bad/name", "dtp-a"]
        assert by_name["bad/name"]["error_code"] == INVALID_TOPIC_EXCEPTION and by_name["bad/name"]["partitions"] == []
        assert partition_indexes(by_name["dtp-a"]) == [0, 1, 2]
        assert page["next_cursor"] == {"topic_name": "dtp-a", "partition_index": 3}
        page = admin.describe_topic_partitions(["dtp-b", "dtp-a", "dtp-nope"], response_partition_limit=3,
                                               cursor=page["next_cursor"])
        assert [(t["name"], partition_indexes(t)) for t in page["topics"]] == [("dtp-a", [3]), ("dtp-b", [0, 1])]
        assert page["next_cursor"] == {"topic_name": "dtp-nope", "partition_index": 0}
        page = admin.describe_topic_partitions(["dtp-b", "dtp-a", "dtp-nope"], cursor=page["next_cursor"])
        assert [(t["name"], t["error_code"]) for t in page["topics"]] == [("dtp-nope", UNKNOWN_TOPIC_OR_PARTITION)]
        assert page["next_cursor"] is None
    finally:
        admin.close()


def test_describe_topic_partitions_all_topics_and_bad_cursors(broker):
    admin = kp_admin(broker)
    conn = Conn(broker)
    try:
        create_topics(admin, {"dtp-x": 3, "dtp-y": 1})
        R = DescribeTopicPartitionsRequest
        # Every topic (empty list), from a cursor: topics before it are skipped, none is missing.
        response = conn.roundtrip(R(topics=[], response_partition_limit=2000,
                                    cursor=R.Cursor(topic_name="dtp-x", partition_index=1)),
                                  DescribeTopicPartitionsResponse, 0)
        assert [(t.name, [p.partition_index for p in t.partitions]) for t in response.topics] == [
            ("dtp-x", [1, 2]), ("dtp-y", [0])]
        assert response.next_cursor is None
        # All topics include the internal offsets topic, flagged as internal.
        response = conn.roundtrip(R(topics=[], response_partition_limit=2000, cursor=None),
                                  DescribeTopicPartitionsResponse, 0)
        internal = {t.name: t.is_internal for t in response.topics}
        assert internal["__consumer_offsets"] is True and internal["dtp-x"] is False
        # A limit below 1 still returns one partition.
        response = conn.roundtrip(R(topics=[R.TopicRequest(name="dtp-x")], response_partition_limit=0, cursor=None),
                                  DescribeTopicPartitionsResponse, 0)
        assert [p.partition_index for p in response.topics[0].partitions] == [0]
        assert (response.next_cursor.topic_name, response.next_cursor.partition_index) == ("dtp-x", 1)
        # A cursor on a topic that is not requested, or at a negative partition: INVALID_REQUEST for every topic.
        for cursor in (R.Cursor(topic_name="dtp-y", partition_index=0), R.Cursor(topic_name="dtp-x", partition_index=-1)):
            response = conn.roundtrip(R(topics=[R.TopicRequest(name="dtp-x")], response_partition_limit=10, cursor=cursor),
                                      DescribeTopicPartitionsResponse, 0)
            assert [(t.name, t.error_code, list(t.partitions)) for t in response.topics] == [("dtp-x", INVALID_REQUEST, [])]
    finally:
        conn.close()
        admin.close()


# --- DescribeLogDirs (35) / AlterReplicaLogDirs (34) ------------------------------------------

def test_describe_log_dirs_kafka_python(broker):
    admin = kp_admin(broker)
    try:
        create_topics(admin, {"ld-a": 2, "ld-b": 1})
        produce("kafka-python", broker.bootstrap, "ld-a", [(b"k", b"v" * 1000, None, None)] * 20, partition=1)
        (result,) = admin.describe_log_dirs()
        assert result["broker"] == 1
        (log_dir,) = result["log_dirs"]
        assert log_dir["error_code"] == NONE
        assert log_dir["log_dir"] == os.path.abspath(broker.data_dir)
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
        sizes = {(t["name"], p["partition_index"]): p for t in log_dir["topics"] for p in t["partitions"]}
        assert {("ld-a", 0), ("ld-a", 1), ("ld-b", 0), ("__consumer_offsets", 0)} <= set(sizes)
        assert sizes[("ld-a", 0)]["partition_size"] == 0
        assert sizes[("ld-a", 1)]["partition_size"] > 20 * 1000
        assert all(p["offset_lag"] == 0 and p["is_future_key"] is False for p in sizes.values())

        # Only the named partitions; one this broker has no log for is left out, and so is its topic.
        (result,) = admin.describe_log_dirs({"ld-a": [1, 7], "ld-nope": [0]})
        (log_dir,) = result["log_dirs"]
        assert [(t["name"], partition_indexes(t)) for t in log_dir["topics"]] == [("ld-a", [1])]
    finally:
        admin.close()


def test_describe_log_dirs_v1_all_topics(broker):
    admin = kp_admin(broker)
    conn = Conn(broker)
    try:
        create_topics(admin, {"ld-v1": 2})
        response = conn.roundtrip(DescribeLogDirsRequest(topics=None), DescribeLogDirsResponse, 1)
        (result,) = response.results
        assert (result.error_code, result.log_dir) == (NONE, os.path.abspath(broker.data_dir))
        names = {t.name: sorted(p.partition_index for p in t.partitions) for t in result.topics}
        assert names["ld-v1"] == [0, 1] and "__consumer_offsets" in names
        # An empty (not null) list describes no partition.
        response = conn.roundtrip(DescribeLogDirsRequest(topics=[]), DescribeLogDirsResponse, 1)
        assert list(response.results[0].topics) == []
    finally:
        conn.close()
        admin.close()


def test_alter_replica_log_dirs_kafka_python(broker):
    admin = kp_admin(broker)
    try:
        create_topics(admin, {"ard": 2})
        current = admin.describe_log_dirs()[0]["log_dirs"][0]["log_dir"]
        moves = {
            TopicPartitionReplica("ard", 0, 1): current,  # where it is already: a no-op
            TopicPartitionReplica("ard", 1, 1): "/somewhere/else",
            TopicPartitionReplica("ard", 5, 1): current,
            TopicPartitionReplica("ard-nope", 0, 1): current,
            TopicPartitionReplica("ard-nope", 1, 1): "/somewhere/else",  # the directory is checked first
        }
        errors = admin.alter_replica_log_dirs(moves)
        assert errors == {
            TopicPartitionReplica("ard", 0, 1): kerrors.NoError,
            TopicPartitionReplica("ard", 1, 1): kerrors.LogDirNotFoundError,
            TopicPartitionReplica("ard", 5, 1): kerrors.UnknownTopicOrPartitionError,
            TopicPartitionReplica("ard-nope", 0, 1): kerrors.UnknownTopicOrPartitionError,
            TopicPartitionReplica("ard-nope", 1, 1): kerrors.LogDirNotFoundError,
        }
    finally:
        admin.close()


def test_alter_replica_log_dirs_v1(broker):
    admin = kp_admin(broker)
    conn = Conn(broker)
    try:
        create_topics(admin, {"ard-v1": 1})
        current = os.path.abspath(broker.data_dir)
        D = AlterReplicaLogDirsRequest.AlterReplicaLogDir
        T = D.AlterReplicaLogDirTopic
        long_name = "l" * 220  # "<topic>-0.<uuid>-future" would pass 255 characters
        request = AlterReplicaLogDirsRequest(dirs=[
            D(path=current, topics=[T(name="ard-v1", partitions=[0]), T(name=long_name, partitions=[0])]),
            D(path=current + "/", topics=[T(name="ard-v1", partitions=[1])]),  # not the same path
        ])
        response = conn.roundtrip(request, AlterReplicaLogDirsResponse, 1)
        errors = {(t.topic_name, p.partition_index): p.error_code for t in response.results for p in t.partitions}
        assert errors == {("ard-v1", 0): NONE, (long_name, 0): INVALID_TOPIC_EXCEPTION, ("ard-v1", 1): LOG_DIR_NOT_FOUND}
    finally:
        conn.close()
        admin.close()


# --- ElectLeaders (43) ------------------------------------------------------------------------

def test_elect_leaders_kafka_python(broker):
    admin = kp_admin(broker)
    try:
        create_topics(admin, {"el": 3})
        for election_type in (0, 1):
            response = admin.elect_leaders(election_type, {"el": [0, 1, 2]})
            assert response.error_code == NONE
            (result,) = response.replica_election_results
            assert result.topic == "el"
            assert sorted((p.partition_id, p.error_code) for p in result.partition_result) == [
                (0, ELECTION_NOT_NEEDED), (1, ELECTION_NOT_NEEDED), (2, ELECTION_NOT_NEEDED)]
        response = admin.elect_leaders(0, {"el": [9], "el-nope": [0]}, raise_errors=False)
        errors = {(r.topic, p.partition_id): p.error_code for r in response.replica_election_results for p in r.partition_result}
        assert errors == {("el", 9): UNKNOWN_TOPIC_OR_PARTITION, ("el-nope", 0): UNKNOWN_TOPIC_OR_PARTITION}
    finally:
        admin.close()


def test_elect_leaders_confluent(broker):
    kp = kp_admin(broker)
    try:
        create_topics(kp, {"el-c": 2})
    finally:
        kp.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for election_type in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        partitions = [TopicPartition("el-c", 0), TopicPartition("el-c", 1)]
        results = admin.elect_leaders(election_type, partitions).result(TIMEOUT_S)
        assert {(tp.topic, tp.partition): error.code() for tp, error in results.items()} == {
            ("el-c", 0): ELECTION_NOT_NEEDED, ("el-c", 1): ELECTION_NOT_NEEDED}
    results = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("el-c", 5)]).result(TIMEOUT_S)
    assert [error.code() for error in results.values()] == [UNKNOWN_TOPIC_OR_PARTITION]
    # Every partition (null list): nothing to elect, so nothing is reported per partition.
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(TIMEOUT_S) == {}


def test_elect_leaders_v0_all_partitions_and_unknown_election_type(broker):
    admin = kp_admin(broker)
    conn = Conn(broker)
    try:
        create_topics(admin, {"el-v0": 2})
        # v0 (preferred only), null list: every topic is listed, with no partition needing an election.
        response = conn.roundtrip(ElectLeadersRequest(topic_partitions=None, timeout_ms=5000), ElectLeadersResponse, 0)
        topics = {r.topic: list(r.partition_result) for r in response.replica_election_results}
        assert topics["el-v0"] == [] and topics["__consumer_offsets"] == []
        # An empty list elects nothing.
        response = conn.roundtrip(ElectLeadersRequest(topic_partitions=[], timeout_ms=5000), ElectLeadersResponse, 0)
        assert list(response.replica_election_results) == []
        T = ElectLeadersRequest.TopicPartitions
        response = conn.roundtrip(ElectLeadersRequest(election_type=5, topic_partitions=[T(topic="el-v0", partitions=[0, 1])],
                                                      timeout_ms=5000), ElectLeadersResponse, 1)
        assert response.error_code == INVALID_REQUEST
        (result,) = response.replica_election_results
        assert [(p.partition_id, p.error_code) for p in result.partition_result] == [(0, INVALID_REQUEST), (1, INVALID_REQUEST)]
    finally:
        conn.close()
        admin.close()


# --- cluster mode -----------------------------------------------------------------------------

@pytest.fixture
def cluster(tmp_path):
    # No automatic preferred-leader balancing: ElectLeaders is what moves leadership back here.
    cluster = Cluster(tmp_path, 3, {"auto.leader.rebalance.enable": "false"}).start()
    yield cluster
    cluster.stop()


def kp_partition(admin: KafkaAdminClient, topic: str) -> dict:
    (described,) = admin.describe_topic_partitions([topic])["topics"]
    return described["partitions"][0]


def polled_partition(admin: KafkaAdminClient, topic: str) -> dict:
    """kp_partition for wait_until: while a broker is down the admin client may pick it and
    fail to connect; that is "not yet", not a failure."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

    try:
        return kp_partition(admin, topic)
    except (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError):
        return {"leader_id": -1, "isr_nodes": [], "replica_nodes": [], "offline_replicas": []}


@pytest.mark.slow
def test_cluster_elect_preferred_leader_and_describe(cluster):
    confluent = AdminClient({"bootstrap.servers": cluster.bootstrap})
    confluent.create_topics([NewConfluentTopic("pl", 1, 3)])["pl"].result(TIMEOUT_S)
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10000)
    try:
        state = wait_until(lambda: (p := polled_partition(admin, "pl"))["leader_id"] > 0 and len(p["isr_nodes"]) == 3 and p,
                           TIMEOUT_S, interval_s=0.1, message="pl led with a full ISR")
        preferred = state["replica_nodes"][0]
        assert state["leader_id"] == preferred and state["offline_replicas"] == []
        follower = state["replica_nodes"][1]
        follower_admin = kp_admin(cluster.brokers[follower])
        try:
            (follower_dirs,) = follower_admin.describe_log_dirs(brokers=[follower])
        finally:
            follower_admin.close()
        assert "pl" in [t["name"] for t in follower_dirs["log_dirs"][0]["topics"]]

        # The preferred replica dies: another replica leads, the dead one is offline.
        cluster.brokers[preferred].kill()
        state = wait_until(lambda: (p := polled_partition(admin, "pl"))["leader_id"] not in (-1, preferred) and p,
                           TIMEOUT_S, interval_s=0.1, message="a new leader")
        assert state["offline_replicas"] == [preferred] and state["leader_epoch"] >= 1
        response = admin.elect_leaders(0, {"pl": [0]}, raise_errors=False)
        assert [p.error_code for p in response.replica_election_results[0].partition_result] == [PREFERRED_LEADER_NOT_AVAILABLE]
        response = admin.elect_leaders(1, {"pl": [0]}, raise_errors=False)
        assert [p.error_code for p in response.replica_election_results[0].partition_result] == [ELECTION_NOT_NEEDED]

        # Back and in sync, but not leading (no automatic balancing) until ElectLeaders asks for it.
        cluster.brokers[preferred].restart()
        wait_until(lambda: preferred in polled_partition(admin, "pl")["isr_nodes"], 20, interval_s=0.2,
                   message="the preferred replica back in the ISR")
        assert kp_partition(admin, "pl")["leader_id"] != preferred
        results = confluent.elect_leaders(ElectionType.PREFERRED, [TopicPartition("pl", 0)]).result(TIMEOUT_S)
        assert results == {TopicPartition("pl", 0): None}
        wait_until(lambda: polled_partition(admin, "pl")["leader_id"] == preferred, TIMEOUT_S, interval_s=0.1,
                   message="leadership on the preferred replica")
        response = admin.elect_leaders(0, {"pl": [0]}, raise_errors=False)
        assert [p.error_code for p in response.replica_election_results[0].partition_result] == [ELECTION_NOT_NEEDED]
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        admin.close()

