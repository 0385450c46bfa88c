"""ACLs on transactions and idempotence (issue 16), as Kafka's KafkaApis checks them: WRITE on the
transactional id for InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and a
transactional Produce; AddPartitionsToTxn WRITE on each topic (v4+, from brokers, CLUSTER_ACTION);
AddOffsetsToTxn and TxnOffsetCommit READ on the group, TxnOffsetCommit READ on each topic; an
idempotent producer's InitProducerId IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
With confluent-kafka and kafka-python producers and raw requests as SASL users."""

from __future__ import annotations

import datetime

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.errors import KafkaError as KafkaPythonError
from kafka.errors import TransactionalIdAuthorizationFailedError
from kio.schema.add_offsets_to_txn.v3 import request as add_offsets
from kio.schema.add_partitions_to_txn.v3 import request as add_v3
from kio.schema.add_partitions_to_txn.v4 import request as add_v4
from kio.schema.find_coordinator.v4 import request as find_coordinator
from kio.schema.init_producer_id.v4 import request as init_request
from kio.schema.produce.v9 import request as produce_request
from kio.schema.txn_offset_commit.v3 import request as txn_commit

from tests.brokerproc import wait_until
from tests.integration.sasl_requests import SaslConnection
from tests.integration.test_acls import add_users_and_acls, kafka_python_user, start_acl_broker, user
from tests.integration.test_sasl import SECRET
from tidelog.protocol.records import build_batch

NONE, TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED, NOT_ATTEMPTED = 0, 29, 30, 31, 53, 55
LOADING, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR = 14, 15, 16


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """tina: WRITE on transactional ids tx- and topics t-, READ on t-1 and groups txg-; ivan: WRITE on
    t-1 only; olga: IDEMPOTENT_WRITE on the cluster only; nora: DESCRIBE on t-1 only. Topics t-1, t-2, u-1."""
    broker = start_acl_broker(tmp_path_factory.mktemp("txn-acls") / "data", {
        "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1"})
    try:
        admin = f"127.0.0.1:{broker.listener_ports['ADMIN']}"
        add_users_and_acls(broker, ("tina", "ivan", "olga", "nora"), (
            ("tx-", "--transactional-id", "--prefixed", "--principal", "User:tina", "--operation", "write"),
            ("t-", "--topic", "--prefixed", "--principal", "User:tina", "--operation", "write"),
            ("t-1", "--topic", "--principal", "User:tina", "--operation", "read"),
            ("txg-", "--group", "--prefixed", "--principal", "User:tina", "--operation", "read"),
            ("t-1", "--topic", "--principal", "User:ivan", "--operation", "write"),
            ("--cluster", "--principal", "User:olga", "--operation", "idempotent-write"),
            ("t-1", "--topic", "--principal", "User:nora", "--operation", "describe"),
        ))
        client = AdminClient({"bootstrap.servers": admin})
        for future in client.create_topics([NewTopic(t, 1) for t in ("t-1", "t-2", "u-1")]).values():
            future.result(15)
        yield broker
    finally:
        broker.stop()


def _connect(broker, name: str) -> SaslConnection:
    return SaslConnection(f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}", name, SECRET)


def _init(connection: SaslConnection, transactional_id: str | None):
    """InitProducerId; for a transactional id, once its coordinator is ready (FindCoordinator
    creates __transaction_state)."""
    def init():
        return connection.request(22, 4, init_request.InitProducerIdRequest(
            transactional_id=transactional_id, transaction_timeout=datetime.timedelta(seconds=60),
            producer_id=-1, producer_epoch=-1))
    if transactional_id is None:
        return init()
    connection.request(10, 4, find_coordinator.FindCoordinatorRequest(key_type=1,
                                                                      coordinator_keys=(transactional_id,)))
    return wait_until(lambda: (answer := init()).error_code not in (COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
                                                                     LOADING) and answer,
                      message=f"the coordinator of {transactional_id}")


def _add_partitions(connection: SaslConnection, transactional_id: str, producer, topics: dict[str, int]) -> dict:
    response = connection.request(24, 3, add_v3.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=transactional_id, v3_and_below_producer_id=producer.producer_id,
        v3_and_below_producer_epoch=producer.producer_epoch, v3_and_below_topics=tuple(
            add_v3.AddPartitionsToTxnTopic(name=name, partitions=(partition,)) for name, partition in topics.items())))
    return {t.name: p.partition_error_code for t in response.results_by_topic_v3_and_below for p in t.results_by_partition}


def _produce(connection: SaslConnection, transactional_id: str | None, producer, topic: str) -> int:
    batch = build_batch([(b"k", b"v", [])], producer_id=producer.producer_id, producer_epoch=producer.producer_epoch,
                        base_sequence=0, is_transactional=True)
    response = connection.request(0, 9, produce_request.ProduceRequest(
        transactional_id=transactional_id, acks=-1, timeout=datetime.timedelta(seconds=10),
        topic_data=(produce_request.TopicProduceData(name=topic, partition_data=(
            produce_request.PartitionProduceData(index=0, records=batch),)),)))
    [topic_response] = response.responses
    return topic_response.partition_responses[0].error_code


def test_transactional_requests_need_write_on_the_transactional_id_and_each_topic(broker):
    with _connect(broker, "tina") as tina:
        producer = _init(tina, "tx-raw")
        assert producer.error_code == NONE, producer
        # a topic without WRITE fails the whole add: the others are not attempted
        assert _add_partitions(tina, "tx-raw", producer, {"t-1": 0, "u-1": 0}) == {"t-1": NOT_ATTEMPTED,
                                                                                  "u-1": TOPIC_DENIED}
        assert _add_partitions(tina, "tx-raw", producer, {"t-1": 0}) == {"t-1": NONE}
        assert _produce(tina, "tx-raw", producer, "t-1") == NONE
        # a transactional batch under an id tina may not write: refused before anything else
        assert _produce(tina, "other-id", producer, "t-1") == TXN_DENIED
        assert _produce(tina, None, producer, "t-1") == TXN_DENIED
        # v4+ is for brokers: CLUSTER_ACTION on the cluster
        verify = tina.request(24, 4, add_v4.AddPartitionsToTxnRequest(transactions=(add_v4.AddPartitionsToTxnTransaction(
            transactional_id="tx-raw", producer_id=producer.producer_id, producer_epoch=producer.producer_epoch,
            verify_only=True, topics=(add_v4.AddPartitionsToTxnTopic(name="t-1", partitions=(0,)),)),)))
        assert (verify.error_code, verify.results_by_transaction) == (CLUSTER_DENIED, ())
    with _connect(broker, "ivan") as ivan:  # WRITE on t-1, none on the transactional id
        assert _init(ivan, "tx-raw").error_code == TXN_DENIED
        assert _add_partitions(ivan, "tx-raw", producer, {"t-1": 0}) == {"t-1": TXN_DENIED}


def test_transactional_producers_of_both_clients(broker):
    producer = Producer({**user(broker, "tina"), "transactional.id": "tx-confluent"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce("t-1", b"committed", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce("u-1", b"denied", partition=0)
    with pytest.raises(KafkaException):  # AddPartitionsToTxn refused u-1: the transaction must abort
        producer.commit_transaction(30)
    producer.abort_transaction(30)
    denied = Producer({**user(broker, "ivan"), "transactional.id": "tx-ivan"})
    with pytest.raises(KafkaException) as no_id:
        denied.init_transactions(30)
    assert no_id.value.args[0].code() == TXN_DENIED
    kp = KafkaProducer(**kafka_python_user(broker, "tina"), transactional_id="tx-kafka-python")
    kp.init_transactions()
    kp.begin_transaction()
    kp.send("t-1", b"committed", partition=0).get(15)
    kp.commit_transaction()
    kp.close(5)
    refused = KafkaProducer(**kafka_python_user(broker, "ivan"), transactional_id="tx-ivan")
    try:
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            refused.init_transactions()
    finally:
        refused.close(5)  # its sender thread held the test's frame, and both confluent producers, past the test


def test_an_idempotent_producer_needs_idempotent_write_or_write_on_some_topic(broker):
    for name, expected in (("olga", NONE), ("ivan", NONE), ("nora", CLUSTER_DENIED)):
        with _connect(broker, name) as connection:
            answer = _init(connection, None)
            assert answer.error_code == expected, (name, answer)
            assert (answer.producer_id >= 0) == (expected == NONE)
    producer = KafkaProducer(**kafka_python_user(broker, "nora"), enable_idempotence=True, max_block_ms=10000)
    with pytest.raises(KafkaPythonError, match="ClusterAuthorizationFailed"):
        producer.send("t-1", b"v", partition=0).get(15)
    producer.close(5)
    errors: list = []
    confluent = Producer({**user(broker, "nora"), "enable.idempotence": True, "message.timeout.ms": 10000,
                          "error_cb": errors.append})
    confluent.produce("t-1", b"v", partition=0)

    def fatal():
        try:
            confluent.poll(0.2)
        except KafkaException as e:  # raised from poll, or passed to error_cb
            return e.args[0]
        return errors[0] if errors else None
    error = wait_until(fatal, message="librdkafka's fatal error")
    assert error.fatal() and error.code() == CLUSTER_DENIED, error


def test_offsets_in_a_transaction_need_read_on_the_group_and_each_topic(broker):
    with _connect(broker, "tina") as tina:
        producer = _init(tina, "tx-offsets")
        assert producer.error_code == NONE

        def add_offsets_for(group: str) -> int:
            return tina.request(25, 3, add_offsets.AddOffsetsToTxnRequest(
                transactional_id="tx-offsets", producer_id=producer.producer_id, producer_epoch=producer.producer_epoch,
                group_id=group)).error_code
        assert add_offsets_for("not-hers") == GROUP_DENIED
        assert add_offsets_for("txg-1") == NONE
        committed = tina.request(28, 3, txn_commit.TxnOffsetCommitRequest(
            transactional_id="tx-offsets", group_id="txg-1", producer_id=producer.producer_id,
            producer_epoch=producer.producer_epoch, generation_id=-1, member_id="", group_instance_id=None, topics=tuple(
                txn_commit.TxnOffsetCommitRequestTopic(name=name, partitions=(txn_commit.TxnOffsetCommitRequestPartition(
                    partition_index=0, committed_offset=1, committed_leader_epoch=-1, committed_metadata=None),))
                for name in ("t-1", "t-2"))))
        assert {t.name: t.partitions[0].error_code for t in committed.topics} == {"t-1": NONE, "t-2": TOPIC_DENIED}
