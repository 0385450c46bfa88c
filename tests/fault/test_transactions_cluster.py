"""Transactions in a 3-broker cluster (real processes, real etcd): produce verification with a
transaction coordinator on another broker (KIP-890 part 1), and a partition leader SIGKILLed in
the middle of a transaction (the transaction commits or aborts as a whole; read_committed
consumers see all of it or nothing; no record of a committed transaction is lost)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    EndTxnRequest,
    EndTxnResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
)

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.integration.test_bad_input import Conn
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch

TIMEOUT_S = 60
RETRIABLE = {ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress, ErrorCode.not_coordinator,
             ErrorCode.concurrent_transactions}


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3).start()
    yield cluster
    cluster.stop()


def leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    return {p: m.leader for p, m in admin.list_topics(topic, timeout=5).topics[topic].partitions.items()}


def until_answered(ask, what: str):
    """``ask()`` -> (error code, answer) until the error is not a retriable coordinator one."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        error, answer = ask()
        if ErrorCode(error) not in RETRIABLE:
            return ErrorCode(error), answer
        assert time.monotonic() < deadline, f"{what}: still {ErrorCode(error).name} after {TIMEOUT_S}s"
        time.sleep(0.1)


def produce_transactional(conn: Conn, transactional_id: str, topic: str, partition: int, producer_id: int,
                          producer_epoch: int, sequence: int, values: list[bytes]):
    batch = build_batch([(None, v, []) for v in values], producer_id=producer_id, producer_epoch=producer_epoch,
                        base_sequence=sequence, is_transactional=True)
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=batch)
    request = ProduceRequest[9](transactional_id=transactional_id, acks=-1, timeout_ms=10000,
                                topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[data])])
    (topic_response,) = conn.roundtrip(request, ProduceResponse, 9).responses
    (result,) = topic_response.partition_responses
    return result


def read_committed(bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float = TIMEOUT_S) -> list[bytes]:
    """What a read_committed consumer reads of the topic from the start until it has ``expected``
    records and has reached every partition's last stable offset (so nothing more is coming)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rc-{time.monotonic_ns()}",
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                seen.append(message.value())
                continue
            if len(seen) >= expected:
                ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
                        for p in range(partitions)]
                positions = [tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in range(partitions)])]
                if all(pos >= end or pos < 0 and end == 0 for pos, end in zip(positions, ends)):
                    return seen
            assert time.monotonic() < deadline, f"read_committed read {len(seen)} of {expected} in {timeout_s}s"
    finally:
        consumer.close()


def test_a_leader_asks_the_coordinator_on_another_broker_before_a_transactional_batch(cluster):
    """KIP-890 part 1 with the coordinator elsewhere: a transactional batch for a partition the
    transaction holds is appended; one for a partition it does not hold is refused
    (INVALID_TXN_STATE to Produce v9), so no transaction opens there that no marker would close
    (read_committed readers are not stuck behind it). Raw requests over kafka-python's protocol
    classes (a real client would have added the partition first), then confluent-kafka reading."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="3 brokers registered")
    admin.create_topics([NewTopic("verified", 6, 1)])["verified"].result(30)
    wait_until(lambda: set(leaders(admin, "verified").values()) == {1, 2, 3}, 30, message="leaders on every broker")
    txn_id = "tx-verify"
    coordinator = transaction_coordinator(cluster, txn_id)
    conn = Conn(cluster.brokers[coordinator])
    pid, epoch = init_producer_id(conn, txn_id)
    elsewhere = [p for p, leader in leaders(admin, "verified").items() if leader != coordinator]
    added, not_added = elsewhere[0], elsewhere[1]
    error = add_partitions_to_txn(conn, txn_id, pid, epoch, "verified", [added])
    assert error == ErrorCode.none
    by_leader = {p: Conn(cluster.brokers[leader]) for p, leader in leaders(admin, "verified").items()}

    refused = produce_transactional(by_leader[not_added], txn_id, "verified", not_added, pid, epoch, 0, [b"stray"])
    assert ErrorCode(refused.error_code) == ErrorCode.invalid_txn_state, refused
    accepted = produce_transactional(by_leader[added], txn_id, "verified", added, pid, epoch, 0, [b"in-1", b"in-2"])
    assert ErrorCode(accepted.error_code) == ErrorCode.none, accepted
    error, _ = until_answered(lambda: (lambda r: (r.error_code, r))(conn.roundtrip(
        EndTxnRequest[3](transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=True),
        EndTxnResponse, 3)), "EndTxn")
    assert error == ErrorCode.none
    assert sorted(read_committed(cluster.bootstrap, "verified", 6, 2)) == [b"in-1", b"in-2"]


@pytest.mark.slow
def test_partition_leader_killed_in_the_middle_of_a_transaction(cluster):
    """A transactional producer (confluent-kafka) writes transactions over 3 partitions (3
    replicas each); in the middle of one, the leader of a partition that is not the transaction
    coordinator is SIGKILLed. Each transaction commits or aborts as a whole: read_committed sees
    every record of the committed ones and none of the aborted ones, nothing else."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="3 brokers registered")
    admin.create_topics([NewTopic("eos", 3, 3, config={"min.insync.replicas": "2"})])["eos"].result(30)
    wait_until(lambda: all(leader > 0 for leader in leaders(admin, "eos").values()), 30, message="leaders")
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "tx-failover", "linger.ms": 5,
                         "transaction.timeout.ms": 60000, "topic.metadata.refresh.interval.ms": 1000})
    producer.init_transactions(TIMEOUT_S)
    coordinator = None
    committed: list[bytes] = []
    aborted: list[bytes] = []
    killed = None
    for txn in range(6):
        values = [b"t%d-%d" % (txn, i) for i in range(300)]
        producer.begin_transaction()
        try:
            for i, value in enumerate(values):
                producer.produce("eos", value, partition=i % 3)
                producer.poll(0)
                if txn == 3 and i == 150:  # half the transaction written: a leader dies
                    producer.flush(TIMEOUT_S)
                    coordinator = coordinator or transaction_coordinator(cluster, "tx-failover")
                    killed = next(leader for leader in leaders(admin, "eos").values() if leader != coordinator)
                    cluster.brokers[killed].kill()
            producer.commit_transaction(TIMEOUT_S)
            committed += values
        except KafkaException as e:
            error = e.args[0]
            assert error.txn_requires_abort() or error.retriable(), error
            producer.abort_transaction(TIMEOUT_S)
            aborted += values
    assert killed is not None
    wait_until(lambda: all(leader not in (killed, -1) for leader in leaders(admin, "eos").values()), 30,
               message="new leaders")
    seen = read_committed(cluster.bootstrap, "eos", 3, len(committed))
    assert len(seen) == len(set(seen)), "a record read twice"
    assert sorted(seen) == sorted(committed), (len(seen), len(committed), len(aborted))
    assert len(committed) >= 5 * 300  # at most the transaction with the kill aborted


def transaction_coordinator(cluster: Cluster, transactional_id: str) -> int:
    conn = Conn(cluster.brokers[1])  # asked before any broker is killed
    error, found = until_answered(lambda: (lambda r: (r.coordinators[0].error_code, r.coordinators[0]))(conn.roundtrip(
        FindCoordinatorRequest[4](key_type=1, coordinator_keys=[transactional_id]), FindCoordinatorResponse, 4)),
        "FindCoordinator")
    assert error == ErrorCode.none
    return found.node_id


def init_producer_id(conn: Conn, transactional_id: str) -> tuple[int, int]:
    """InitProducerId at the transaction coordinator ``conn``: (producer id, epoch)."""
    error, init = until_answered(lambda: (lambda r: (r.error_code, r))(conn.roundtrip(
        InitProducerIdRequest[3](transactional_id=transactional_id, transaction_timeout_ms=60000, producer_id=-1,
                                 producer_epoch=-1),
        InitProducerIdResponse, 3)), "InitProducerId")
    assert error == ErrorCode.none
    return init.producer_id, init.producer_epoch


def add_partitions_to_txn(conn: Conn, transactional_id: str, producer_id: int, epoch: int, topic: str,
                          partitions: list[int]) -> int:
    """AddPartitionsToTxn v3 at the transaction coordinator ``conn``: the first partition's error code."""
    error, _ = until_answered(lambda: (lambda r: (r.results_by_topic_v3_and_below[0].results_by_partition[0]
                                                   .partition_error_code, r))(conn.roundtrip(
        AddPartitionsToTxnRequest[3](v3_and_below_transactional_id=transactional_id, v3_and_below_producer_id=producer_id,
                                     v3_and_below_producer_epoch=epoch,
                                     v3_and_below_topics=[AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(
                                         name=topic, partitions=partitions)]),
        AddPartitionsToTxnResponse, 3)), "AddPartitionsToTxn")
    return error


def _transactional_frame(correlation_id: int, transactional_id: str, topic: str, producer_id: int, epoch: int,
                         batches: dict[int, tuple[int, list[bytes]]]) -> bytes:
    """A framed Produce v9 (acks=all) of transactional batches: partition -> (base sequence, values)."""
    data = [ProduceRequest.TopicProduceData.PartitionProduceData(index=p, records=build_batch(
        [(None, v, []) for v in values], producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence,
        is_transactional=True)) for p, (sequence, values) in batches.items()]
    request = ProduceRequest[9](transactional_id=transactional_id, acks=-1, timeout_ms=10000,
                                topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=data)])
    request.with_header(correlation_id=correlation_id, client_id="pipelined")
    return bytes(request.encode(version=9, header=True, framed=True))


def test_pipelined_transactional_requests_append_in_order_while_the_leader_asks_the_coordinator(cluster):
    """A connection's Produce requests append in the order sent, as Kafka serialises them, also
    while a transactional one waits for the coordinator on another broker (KIP-890 part 1).
    Raw: the transaction is open on partition B (a batch appended); one write brings request 1
    (the first batch for partition A, which the leader must ask about, and B's next) and request
    2 (B's next again, nothing to ask): request 2 must append to B after request 1 (before the
    fix it appended while request 1 waited for the answer and was refused,
    OUT_OF_ORDER_SEQUENCE_NUMBER; 3 of 3 runs). Then confluent-kafka, transactions whose
    partitions the leader learns one by one while batches of the others stream: every
    transaction commits, and read_committed reads each partition in the order produced
    (kafka-python). That part passed before the fix too (librdkafka did not pipeline a batch
    behind a check in 3 runs); it is the cross-client check of the path."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="3 brokers registered")
    admin.create_topics([NewTopic("piped", 6, 1)])["piped"].result(30)
    wait_until(lambda: set(leaders(admin, "piped").values()) == {1, 2, 3}, 30, message="leaders on every broker")
    txn_id = "tx-piped"
    coordinator = transaction_coordinator(cluster, txn_id)
    conn = Conn(cluster.brokers[coordinator])
    pid, epoch = init_producer_id(conn, txn_id)
    led = leaders(admin, "piped")
    elsewhere = next(broker for broker in (1, 2, 3) if broker != coordinator)
    a, b = [p for p, leader in sorted(led.items()) if leader == elsewhere][:2]
    error = add_partitions_to_txn(conn, txn_id, pid, epoch, "piped", [a, b])
    assert error == ErrorCode.none
    leader_conn = Conn(cluster.brokers[elsewhere])
    first = produce_transactional(leader_conn, txn_id, "piped", b, pid, epoch, 0, [b"b0"])
    assert ErrorCode(first.error_code) == ErrorCode.none, first
    leader_conn.send(_transactional_frame(101, txn_id, "piped", pid, epoch, {a: (0, [b"a0"]), b: (1, [b"b1"])})
                     + _transactional_frame(102, txn_id, "piped", pid, epoch, {b: (2, [b"b2"])}))
    answers = []
    for correlation_id in (101, 102):
        response = ProduceResponse.decode(leader_conn.recv_frame(), version=9, header=True)
        assert response.header.correlation_id == correlation_id
        answers.append({p.index: ErrorCode(p.error_code) for p in response.responses[0].partition_responses})
    assert answers == [{a: ErrorCode.none, b: ErrorCode.none}, {b: ErrorCode.none}], answers
    error, _ = until_answered(lambda: (lambda r: (r.error_code, r))(conn.roundtrip(
        EndTxnRequest[3](transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=True),
        EndTxnResponse, 3)), "EndTxn")
    assert error == ErrorCode.none

    # The client's transactions go to a topic of their own: partitions of "piped" picked the same
    # way could be a and b again (when both coordinators leave the same broker "elsewhere").
    admin.create_topics([NewTopic("piped-ck", 6, 1)])["piped-ck"].result(30)
    wait_until(lambda: set(leaders(admin, "piped-ck").values()) == {1, 2, 3}, 30, message="leaders on every broker")
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "tx-piped-ck", "linger.ms": 0,
                         "transaction.timeout.ms": 60000})
    producer.init_transactions(TIMEOUT_S)
    ck_coordinator = transaction_coordinator(cluster, "tx-piped-ck")
    ck_leader = next(broker for broker in (1, 2, 3) if broker != ck_coordinator)
    c, d = [p for p, leader in sorted(leaders(admin, "piped-ck").items()) if leader == ck_leader][:2]
    failures: list = []
    produced = {c: [], d: []}

    def delivered(error, message) -> None:
        if error is not None:
            failures.append(error)

    for txn in range(8):
        producer.begin_transaction()
        for i in range(400):  # d alone first, then c joins the transaction while d's batches stream
            partition = d if i < 200 or i % 2 else c
            value = b"%d-%d" % (txn, i)
            producer.produce("piped-ck", value, partition=partition, on_delivery=delivered)
            produced[partition].append(value)
            producer.poll(0)
        producer.commit_transaction(TIMEOUT_S)
    assert failures == []
    assert len(read_committed(cluster.bootstrap, "piped", 6, 4)) == 4  # b0, a0, b1, b2
    expected = len(produced[c]) + len(produced[d])
    assert len(read_committed(cluster.bootstrap, "piped-ck", 6, expected)) == expected
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition
    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    try:
        for topic, partition, values in (("piped", b, [b"b0", b"b1", b"b2"]), ("piped", a, [b"a0"]),
                                         ("piped-ck", c, produced[c]), ("piped-ck", d, produced[d])):
            consumer.assign([KTopicPartition(topic, partition)])
            consumer.seek_to_beginning()
            read: list[bytes] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(read) < len(values):
                assert time.monotonic() < deadline, f"{topic}-{partition}: read {len(read)} of {len(values)}"
                for records in consumer.poll(timeout_ms=500).values():
                    read += [r.value for r in records]
            assert read == values, f"{topic}-{partition} out of order"
    finally:
        consumer.close()
