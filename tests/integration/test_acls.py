"""ACLs (issue 16): StandardAuthorizer semantics checked through real clients on a SASL listener:
produce, fetch, group join and commit, topic creation and deletion, describe configs, ACL
administration; prefixed patterns, deny precedence, Metadata listing only what a principal may
describe; the ACLs managed with `tidelog acls`."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from confluent_kafka.admin import ResourceType as AdminResourceType
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from tests.brokerproc import BrokerProcess, wait_until
from tests.integration.security_clients import Security
from tests.integration.test_sasl import SECRET, tidelog

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """SASL for clients, a loopback PLAINTEXT listener for administration (its ANONYMOUS
    principal is the super user); users alice, bob and mallory; ACLs:

    alice: WRITE and READ on topics prefixed orders-, DENY WRITE on orders-secret, READ on
    groups prefixed app-, CREATE on topics prefixed alice-, DESCRIBE_CONFIGS on orders-1.
    bob: READ on orders-1 (but no group). mallory: DESCRIBE on orders-1 only.
    """
    broker = start_acl_broker(tmp_path_factory.mktemp("acls") / "data")
    try:
        _set_up(broker)
        yield broker
    finally:
        broker.stop()


def start_acl_broker(data_dir, settings: dict[str, str] | None = None) -> BrokerProcess:
    """A broker with ACLs on, SASL for clients and a loopback PLAINTEXT listener ADMIN whose
    ANONYMOUS principal is the super user (the caller stops it)."""
    return BrokerProcess(data_dir, {
        "listeners": "ADMIN://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "listener.security.protocol.map": "ADMIN:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "ADMIN", "authorizer.class.name": AUTHORIZER,
        "super.users": "User:ANONYMOUS", "auto.create.topics.enable": "false", "http.port": "0",
        "group.initial.rebalance.delay.ms": "100",  # as tests/conftest.py TEST_SETTINGS
        **(settings or {})}).start()


def add_users_and_acls(broker, users, acls) -> None:
    """SCRAM-SHA-256 ``users`` (password SECRET) and the ACLs (``tidelog acls add`` arguments), as admin."""
    admin = f"127.0.0.1:{broker.listener_ports['ADMIN']}"
    for name in users:
        assert tidelog("users", "create", name, "--password", SECRET, "--mechanism", "SCRAM-SHA-256",
                       "-b", admin).returncode == 0
    for args in acls:
        result = tidelog("acls", "add", *args, "-b", admin)
        assert result.returncode == 0, result


def _set_up(broker) -> None:
    admin = f"127.0.0.1:{broker.listener_ports['ADMIN']}"
    add_users_and_acls(broker, ("alice", "bob", "mallory"), (
        ("orders-", "--topic", "--prefixed", "--principal", "User:alice", "--operation", "write"),
        ("orders-", "--topic", "--prefixed", "--principal", "User:alice", "--operation", "read"),
        ("orders-secret", "--topic", "--principal", "User:alice", "--operation", "write", "--deny"),
        ("app-", "--group", "--prefixed", "--principal", "User:alice", "--operation", "read"),
        ("alice-", "--topic", "--prefixed", "--principal", "User:alice", "--operation", "create"),
        ("orders-1", "--topic", "--principal", "User:alice", "--operation", "describe-configs"),
        ("orders-1", "--topic", "--principal", "User:bob", "--operation", "read"),
        ("orders-1", "--topic", "--principal", "User:mallory", "--operation", "describe"),
    ))
    client = AdminClient({"bootstrap.servers": admin})
    for future in client.create_topics([NewTopic(t, 1) for t in ("orders-1", "orders-secret", "hr")]).values():
        future.result(15)


def user(broker, name: str) -> dict:
    return {"bootstrap.servers": f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}", "log_level": 0,
            **Security("SASL_PLAINTEXT", mechanism="SCRAM-SHA-256", username=name, password=SECRET).confluent()}


def kafka_python_user(broker, name: str) -> dict:
    return {"bootstrap_servers": f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}",
            **Security("SASL_PLAINTEXT", mechanism="SCRAM-SHA-256", username=name, password=SECRET).kafka_python()}


def confluent_produce(broker, name: str, topic: str) -> KafkaError | None:
    """Produce one record as ``name``; the delivery error, or None."""
    results: list = []
    producer = Producer({**user(broker, name), "acks": "all", "message.timeout.ms": 10000})
    producer.produce(topic, b"v", partition=0, on_delivery=lambda err, msg: results.append(err))
    producer.flush(15)
    assert len(results) == 1
    return results[0]


def test_produce_allowed_by_a_prefixed_acl_and_denied_without_one(broker):
    assert confluent_produce(broker, "alice", "orders-1") is None
    assert confluent_produce(broker, "bob", "orders-1").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # not idempotent: mallory may write no topic, so an idempotent producer's InitProducerId is
    # refused first (CLUSTER_AUTHORIZATION_FAILED, test_txn_acls.py), as Kafka refuses it
    producer = KafkaProducer(**kafka_python_user(broker, "mallory"), max_block_ms=10000, enable_idempotence=False)
    with pytest.raises(TopicAuthorizationFailedError):
        producer.send("orders-1", b"v", partition=0).get(15)
    producer.close(5)
    assert "Principal = User:bob is Denied operation = WRITE from host = 127.0.0.1 on resource = Topic:LITERAL:orders-1" in broker.log()


def test_deny_wins_over_allow(broker):
    assert confluent_produce(broker, "alice", "orders-secret").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def _consume_assigned(config: dict, topic: str) -> KafkaError | bytes:
    consumer = Consumer({**config, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        def polled():
            msg = consumer.poll(0.5)
            if msg is None or (msg.error() and msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED):
                return None  # librdkafka looks its group's coordinator up even when assigned by hand
            return msg.error() or msg.value()
        return wait_until(polled, message="a record or an error")
    finally:
        consumer.close()


def test_fetch_allowed_and_denied(broker):
    assert confluent_produce(broker, "alice", "orders-1") is None
    assert _consume_assigned(user(broker, "bob"), "orders-1") == b"v"
    # librdkafka retries a denied fetch without telling the application: no record reaches it
    # while the broker refuses each fetch.
    consumer = Consumer({**user(broker, "mallory"), "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition("orders-1", 0, 0)])
    denial = ("Principal = User:mallory is Denied operation = READ from host = 127.0.0.1 on resource = "
              "Topic:LITERAL:orders-1")
    try:
        def refused() -> bool:
            msg = consumer.poll(0.2)
            assert msg is None or msg.error(), "a denied consumer got a record"
            return denial in broker.log()
        wait_until(refused, message="the broker to refuse mallory's fetch")
    finally:
        consumer.close()
    consumer = KafkaConsumer(**kafka_python_user(broker, "mallory"), enable_auto_commit=False)
    from kafka import TopicPartition as KPTopicPartition

    consumer.assign([KPTopicPartition("orders-1", 0)])
    consumer.seek(KPTopicPartition("orders-1", 0), 0)
    with pytest.raises(TopicAuthorizationFailedError):
        for _ in range(20):
            consumer.poll(500)
    consumer.close()


def test_group_join_and_commit(broker):
    assert confluent_produce(broker, "alice", "orders-1") is None
    group = f"app-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({**user(broker, "alice"), "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe(["orders-1"])
    try:
        msg = wait_until(lambda: (m := consumer.poll(0.5)) is not None and not m.error() and m, message="a record")
        committed = consumer.commit(msg, asynchronous=False)
        assert committed[0].error is None and committed[0].offset == msg.offset() + 1
    finally:
        consumer.close()
    # bob may read the topic but not join a group: the JoinGroup is refused as a whole.
    denied = KafkaConsumer("orders-1", **kafka_python_user(broker, "bob"), group_id="app-bob",
                           auto_offset_reset="earliest")
    with pytest.raises(GroupAuthorizationFailedError):
        for _ in range(20):
            denied.poll(500)
    denied.close()


def test_create_and_delete_topics(broker):
    admin = AdminClient(user(broker, "alice"))
    created = admin.create_topics([NewTopic("alice-new", 1), NewTopic("someone-else", 1)], request_timeout=15)
    created["alice-new"].result(15)
    with pytest.raises(Exception) as denied:
        created["someone-else"].result(15)
    assert denied.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(Exception) as no_delete:
        admin.delete_topics(["alice-new"], request_timeout=15)["alice-new"].result(15)
    assert no_delete.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_describe_configs(broker):
    admin = AdminClient(user(broker, "alice"))
    allowed = admin.describe_configs([ConfigResource(AdminResourceType.TOPIC, "orders-1")])
    assert "retention.ms" in next(iter(allowed.values())).result(15)
    denied = admin.describe_configs([ConfigResource(AdminResourceType.TOPIC, "hr")])
    with pytest.raises(Exception) as raised:
        next(iter(denied.values())).result(15)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_metadata_lists_only_describable_topics(broker):
    alice = set(AdminClient(user(broker, "alice")).list_topics(timeout=15).topics)
    assert {"orders-1", "orders-secret"} <= alice and "hr" not in alice  # READ/WRITE imply DESCRIBE
    assert set(AdminClient(user(broker, "mallory")).list_topics(timeout=15).topics) == {"orders-1"}


def test_acl_administration_needs_the_cluster(broker):
    alice = ["-X", f"security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=SCRAM-SHA-256", "-X",
             "sasl.username=alice", "-X", f"sasl.password={SECRET}", "-b",
             f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}"]
    result = tidelog("acls", "add", "orders-1", "--topic", "--principal", "User:alice", "--operation", "all", *alice)
    assert result.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in result.stderr, result
    admin = ["-b", f"127.0.0.1:{broker.listener_ports['ADMIN']}"]
    listed = json.loads(tidelog("acls", "list", "--json", "--principal", "User:bob", *admin).stdout)
    assert listed == [{"resource_type": "topic", "name": "orders-1", "pattern": "literal", "principal": "User:bob",
                       "host": "*", "operation": "read", "permission": "allow"}]
    assert tidelog("acls", "add", "hr", "--topic", "--principal", "User:bob", "--operation", "write", *admin).returncode == 0
    assert confluent_produce(broker, "bob", "hr") is None
    removed = tidelog("acls", "remove", "hr", "--topic", "--principal", "User:bob", *admin)
    assert removed.stdout.strip() == "User:bob allow write on topic:literal:hr from *", removed
    assert confluent_produce(broker, "bob", "hr").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
