"""Topic administration through real admin clients: create, list, describe, delete, partitions,
delete-records, describe-cluster, with Kafka's error codes (confluent-kafka, kafka-python, aiokafka)."""

from __future__ import annotations

import asyncio
import uuid

import kafka.errors as kerrors
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KPTopicPartition

from tests.brokerproc import wait_until
from tests.integration.clients import consume, produce

TIMEOUT_S = 15


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


def confluent_admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kp_admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def create_errors(admin: AdminClient, topics: list[NewTopic], **options) -> dict[str, int | None]:
    """Run create_topics; map each topic to its Kafka error code (None on success)."""
    results = {}
    for name, future in admin.create_topics(topics, request_timeout=TIMEOUT_S, **options).items():
        try:
            future.result(TIMEOUT_S)
            results[name] = None
        except KafkaException as e:
            results[name] = e.args[0].code()
    return results


def partition_count(admin: AdminClient, topic: str) -> int | None:
    metadata = admin.list_topics(topic=topic, timeout=TIMEOUT_S).topics[topic]
    if metadata.error is not None:
        return None
    return len(metadata.partitions)


def topic_ids(admin: AdminClient, topics: list[str]) -> dict[str, str]:
    described = admin.describe_topics(TopicCollection(topics), request_timeout=TIMEOUT_S)
    return {name: str(future.result(TIMEOUT_S).topic_id) for name, future in described.items()}


# --- create / list / describe / delete ------------------------------------------------------

def test_confluent_create_list_describe_delete(broker):
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic("orders", 3, 1, config={"retention.ms": "3600000"}),
                                 NewTopic("defaults")]) == {"orders": None, "defaults": None}
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert len(topics["orders"].partitions) == 3
    assert len(topics["defaults"].partitions) == 1  # num.partitions
    described = admin.describe_topics(TopicCollection(["orders"]), request_timeout=TIMEOUT_S)["orders"].result(TIMEOUT_S)
    assert [p.id for p in described.partitions] == [0, 1, 2]
    assert all(p.leader.id == 1 and [r.id for r in p.replicas] == [1] for p in described.partitions)

    for future in admin.delete_topics(["orders", "defaults"], request_timeout=TIMEOUT_S).values():
        future.result(TIMEOUT_S)
    remaining = admin.list_topics(timeout=TIMEOUT_S).topics
    assert "orders" not in remaining and "defaults" not in remaining


def test_kafka_python_create_list_describe_delete(broker):
    admin = kp_admin(broker)
    try:
        result = admin.create_topics({"kp-topic": {"num_partitions": 2, "replication_factor": 1,
                                                   "configs": {"cleanup.policy": "compact"}}})
        (topic,) = result["topics"]
        assert topic["error_code"] == 0 and topic["num_partitions"] == 2 and topic["replication_factor"] == 1
        assert topic["configs"]["cleanup.policy"]["value"] == "compact"
        assert topic["configs"]["cleanup.policy"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert topic["configs"]["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        assert uuid.UUID(str(topic["topic_id"])).int != 0
        assert "kp-topic" in admin.list_topics()
        (described,) = admin.describe_topics(["kp-topic"])
        assert len(described["partitions"]) == 2
        deleted = admin.delete_topics(["kp-topic"])
        assert [t["error_code"] for t in deleted["topics"]] == [0]
        assert "kp-topic" not in admin.list_topics()
    finally:
        admin.close()


def test_aiokafka_create_and_delete(broker):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin import NewTopic as AIONewTopic

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([AIONewTopic("aio-topic", 4, 1)])
            assert "aio-topic" in await admin.list_topics()
            await admin.delete_topics(["aio-topic"])
            assert "aio-topic" not in await admin.list_topics()
        finally:
            await admin.close()

    asyncio.run(run())


def test_create_errors_confluent(broker):
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic("taken", 1)]) == {"taken": None}
    errors = create_errors(admin, [
        NewTopic("taken", 1),
        NewTopic("bad name!", 1),
        NewTopic("x" * 250, 1),
        NewTopic("rf-two", 1, 2),
        NewTopic("unknown-config", 1, config={"no.such.config": "1"}),
        NewTopic("bad-value", 1, config={"retention.ms": "soon"}),
        NewTopic("bad-choice", 1, config={"cleanup.policy": "shred"}),
    ])
    assert errors == {
        "taken": KafkaError.TOPIC_ALREADY_EXISTS,
        "bad name!": KafkaError.TOPIC_EXCEPTION,
        "x" * 250: KafkaError.TOPIC_EXCEPTION,
        "rf-two": KafkaError.INVALID_REPLICATION_FACTOR,
        "unknown-config": KafkaError.INVALID_CONFIG,
        "bad-value": KafkaError.INVALID_CONFIG,
        "bad-choice": KafkaError.INVALID_CONFIG,
    }
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert "rf-two" not in topics and "unknown-config" not in topics


def test_create_errors_kafka_python(broker):
    admin = kp_admin(broker)
    try:
        result = admin.create_topics(
            {"zero-partitions": {"num_partitions": 0}, "negative-rf": {"num_partitions": 1, "replication_factor": -2},
             "rf-two": {"num_partitions": 1, "replication_factor": 2}},
            raise_errors=False)
        codes = {t["name"]: t["error_code"] for t in result["topics"]}
        assert codes == {"zero-partitions": kerrors.InvalidPartitionsError.errno,
                         "negative-rf": kerrors.InvalidReplicationFactorError.errno,
                         "rf-two": kerrors.InvalidReplicationFactorError.errno}
        messages = {t["name"]: t["error_message"] for t in result["topics"]}
        assert "only 1 broker(s) are registered" in messages["rf-two"]
        with pytest.raises(kerrors.TopicAlreadyExistsError):
            admin.create_topics({"dup": {"num_partitions": 1}})
            admin.create_topics({"dup": {"num_partitions": 1}})
        # A manual assignment naming a broker that does not exist cannot be honoured.
        result = admin.create_topics({"manual": {"assignments": {0: [1], 1: [2]}}}, raise_errors=False)
        assert result["topics"][0]["error_code"] == kerrors.InvalidReplicationAssignmentError.errno
        result = admin.create_topics({"manual": {"assignments": {0: [1], 1: [1]}}})
        assert result["topics"][0]["num_partitions"] == 2
    finally:
        admin.close()


def test_duplicate_names_in_one_request_are_invalid_request(broker):
    from kafka.protocol.admin import CreateTopicsRequest

    admin = kp_admin(broker)
    try:
        topic = CreateTopicsRequest.CreatableTopic
        request = CreateTopicsRequest(topics=[topic(name="twice", num_partitions=1, replication_factor=1),
                                              topic(name="twice", num_partitions=1, replication_factor=1)],
                                      timeout_ms=10000, validate_only=False)
        response = admin._manager.run(admin._manager.send, request)
        assert [(t.name, t.error_code) for t in response.topics] == [("twice", kerrors.InvalidRequestError.errno)]
        assert "twice" not in admin.list_topics()
    finally:
        admin.close()


def test_validate_only_creates_nothing(broker):
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic("dry-run", 3)], validate_only=True) == {"dry-run": None}
    assert create_errors(admin, [NewTopic("dry-rf", 1, 2)], validate_only=True) == {"dry-rf": KafkaError.INVALID_REPLICATION_FACTOR}
    kp = kp_admin(broker)
    try:
        result = kp.create_topics({"dry-kp": {"num_partitions": 2}}, validate_only=True)
        assert result["topics"][0]["error_code"] == 0 and result["topics"][0]["num_partitions"] == 2
        topics = kp.list_topics()
    finally:
        kp.close()
    assert "dry-run" not in topics and "dry-kp" not in topics


def test_delete_errors_and_by_id(broker):
    admin = kp_admin(broker)
    try:
        deleted = admin.delete_topics(["never-was"], raise_errors=False)
        assert deleted["topics"][0]["error_code"] == kerrors.UnknownTopicOrPartitionError.errno
        deleted = admin.delete_topics([uuid.uuid4()], raise_errors=False)
        assert deleted["topics"][0]["error_code"] == kerrors.UnknownTopicIdError.errno
        topic_id = uuid.UUID(str(admin.create_topics({"by-id": {"num_partitions": 1}})["topics"][0]["topic_id"]))
        deleted = admin.delete_topics([topic_id])
        assert [(t["name"], t["error_code"]) for t in deleted["topics"]] == [("by-id", 0)]
        assert "by-id" not in admin.list_topics()
    finally:
        admin.close()
    confluent = confluent_admin(broker)
    with pytest.raises(KafkaException) as raised:
        confluent.delete_topics(["never-was"], request_timeout=TIMEOUT_S)["never-was"].result(TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_delete_disabled(broker_factory):
    broker = broker_factory({"delete.topic.enable": "false"})
    admin = kp_admin(broker)
    try:
        admin.create_topics({"keeper": {"num_partitions": 1}})
        deleted = admin.delete_topics(["keeper"], raise_errors=False)
        assert deleted["topics"][0]["error_code"] == kerrors.TopicDeletionDisabledError.errno
        assert "keeper" in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_delete_removes_data_and_recreate_gets_new_id(broker, client):
    reborn = f"reborn-{client}"
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic(reborn, 1)]) == {reborn: None}
    first_id = topic_ids(admin, [reborn])[reborn]
    produce(client, broker.bootstrap, reborn, [(None, b"old", [], None)] * 3)
    if client == "confluent":
        admin.delete_topics([reborn], request_timeout=TIMEOUT_S)[reborn].result(TIMEOUT_S)
    else:
        kp = kp_admin(broker)
        kp.delete_topics([reborn])
        kp.close()
    assert not (broker.data_dir / f"{reborn}-0").exists()
    assert create_errors(admin, [NewTopic(reborn, 1)]) == {reborn: None}
    assert topic_ids(admin, [reborn])[reborn] != first_id
    produce(client, broker.bootstrap, reborn, [(None, b"new", [], None)])
    (message,) = consume(client, broker.bootstrap, reborn, 1)
    assert (message.offset, message.value) == (0, b"new")


def test_topic_id_and_partitions_survive_restart(broker):
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic("durable-topic", 2)]) == {"durable-topic": None}
    admin.create_partitions([NewPartitions("durable-topic", 5)], request_timeout=TIMEOUT_S)["durable-topic"].result(TIMEOUT_S)
    before = topic_ids(admin, ["durable-topic"])["durable-topic"]
    broker.stop()
    broker.restart()
    admin = confluent_admin(broker)
    assert topic_ids(admin, ["durable-topic"])["durable-topic"] == before
    assert partition_count(admin, "durable-topic") == 5


# --- create partitions --------------------------------------------------------------------------

def test_create_partitions_confluent(broker):
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic("growing", 1)]) == {"growing": None}
    admin.create_partitions([NewPartitions("growing", 3)], validate_only=True, request_timeout=TIMEOUT_S)["growing"].result(TIMEOUT_S)
    assert partition_count(admin, "growing") == 1
    admin.create_partitions([NewPartitions("growing", 3)], request_timeout=TIMEOUT_S)["growing"].result(TIMEOUT_S)
    assert partition_count(admin, "growing") == 3
    for count in (3, 2):
        with pytest.raises(KafkaException) as raised:
            admin.create_partitions([NewPartitions("growing", count)], request_timeout=TIMEOUT_S)["growing"].result(TIMEOUT_S)
        assert raised.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    with pytest.raises(KafkaException) as raised:
        admin.create_partitions([NewPartitions("absent", 2)], request_timeout=TIMEOUT_S)["absent"].result(TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The new partitions take records.
    assert produce("confluent", broker.bootstrap, "growing", [(None, b"p2", [], None)], partition=2) == [0]
    assert [m.value for m in consume("confluent", broker.bootstrap, "growing", 1, partition=2)] == [b"p2"]


def test_create_partitions_kafka_python(broker):
    admin = kp_admin(broker)
    try:
        admin.create_topics({"kp-growing": {"num_partitions": 1}})
        admin.create_partitions({"kp-growing": 4})
        (described,) = admin.describe_topics(["kp-growing"])
        assert len(described["partitions"]) == 4
        with pytest.raises(kerrors.InvalidPartitionsError):
            admin.create_partitions({"kp-growing": 4})
        with pytest.raises(kerrors.InvalidReplicationAssignmentError):
            admin.create_partitions({"kp-growing": {"count": 6, "assignments": [[1]]}})
    finally:
        admin.close()


# --- delete records -------------------------------------------------------------------------------

def _earliest_offset_confluent(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
        message = wait_until(lambda: consumer.poll(0.2), timeout_s=TIMEOUT_S, message="a record from earliest")
        assert message.error() is None, message.error()
        return message.offset()
    finally:
        consumer.close()


def test_delete_records_confluent_then_consume_from_earliest(broker):
    admin = confluent_admin(broker)
    assert create_errors(admin, [NewTopic("trimmed", 1)]) == {"trimmed": None}
    produce("confluent", broker.bootstrap, "trimmed", [(None, b"r%d" % i, [], None) for i in range(10)])
    result = admin.delete_records([TopicPartition("trimmed", 0, 4)], request_timeout=TIMEOUT_S)
    assert result[TopicPartition("trimmed", 0)].result(TIMEOUT_S).low_watermark == 4
    assert _earliest_offset_confluent(broker.bootstrap, "trimmed") == 4
    low, high = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm"}).get_watermark_offsets(
        TopicPartition("trimmed", 0), timeout=TIMEOUT_S)
    assert (low, high) == (4, 10)
    # Beyond the high watermark.
    future = admin.delete_records([TopicPartition("trimmed", 0, 11)], request_timeout=TIMEOUT_S)[TopicPartition("trimmed", 0)]
    with pytest.raises(KafkaException) as raised:
        future.result(TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE


def test_delete_records_kafka_python_to_high_watermark(broker):
    admin = kp_admin(broker)
    try:
        admin.create_topics({"kp-trimmed": {"num_partitions": 1}})
        produce("kafka-python", broker.bootstrap, "kp-trimmed", [(None, b"x", [], None)] * 5)
        result = admin.delete_records({KPTopicPartition("kp-trimmed", 0): 2})
        assert result[KPTopicPartition("kp-trimmed", 0)]["low_watermark"] == 2
        result = admin.delete_records({KPTopicPartition("kp-trimmed", 0): -1})  # -1: the high watermark
        assert result[KPTopicPartition("kp-trimmed", 0)]["low_watermark"] == 5
    finally:
        admin.close()
    produce("kafka-python", broker.bootstrap, "kp-trimmed", [(None, b"after", [], None)])
    assert _earliest_offset_confluent(broker.bootstrap, "kp-trimmed") == 5


# --- describe cluster -------------------------------------------------------------------------------

def test_describe_cluster(broker):
    admin = confluent_admin(broker)
    # librdkafka answers describe_cluster from Metadata; kafka-python sends DescribeCluster.
    description = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    assert [(n.id, n.host, n.port) for n in description.nodes] == [(1, "127.0.0.1", broker.port)]
    assert description.controller.id == 1
    assert description.cluster_id and len(description.cluster_id) == 22

    kp = kp_admin(broker)
    try:
        cluster = kp.describe_cluster()
    finally:
        kp.close()
    assert cluster["cluster_id"] == description.cluster_id
    assert cluster["controller_id"] == 1
    assert [(b["broker_id"], b["port"], b["is_fenced"]) for b in cluster["brokers"]] == [(1, broker.port, False)]
    # All cluster operations: what Kafka reports when no authorizer is configured.
    from kafka.admin import ACLOperation

    names = {op.name if hasattr(op, "name") else str(op) for op in cluster["authorized_operations"]}
    assert names == {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
                     "IDEMPOTENT_WRITE"}, (names, list(ACLOperation))


def test_reassignment_to_the_current_replicas_on_one_node_is_a_no_op(broker):
    """Found by kafka-python's suite: a single node used to answer INVALID_REPLICA_ASSIGNMENT
    ("broker 1 is not registered") because its store registers no brokers; Kafka answers NONE."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import NewTopic as KPNewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([KPNewTopic("reassign-self", 1, 1)])
        tp = TopicPartition("reassign-self", 0)
        assert admin.alter_partition_reassignments({tp: [1]}) == {tp: None}
        result = admin.alter_partition_reassignments({TopicPartition("reassign-self", 0): [2]})
        assert result[tp] is not None and result[tp].errno == 39  # INVALID_REPLICA_ASSIGNMENT: no broker 2
        assert admin.list_partition_reassignments() == {}
    finally:
        admin.close()
