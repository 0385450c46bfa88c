"""Deleting a topic removes the offsets groups committed for it, as Kafka's group coordinator does
(onPartitionsDeleted: tombstones in ``__consumer_offsets``): OffsetFetch answers none for the
topic, the group's listing no longer names it, a topic created again under the name starts with
no committed offsets (a new consumer follows auto.offset.reset), and a restart keeps them gone.
Real clients: confluent-kafka (classic and KIP-848 groups), kafka-python and aiokafka."""

from __future__ import annotations

import asyncio
import time

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.integration.group_clients import GROUP_SETTINGS

PARTITIONS = 2


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(GROUP_SETTINGS)


def make_topic(bootstrap: str, topic: str, records: int, replication_factor: int = 1) -> None:
    """Create ``topic`` (2 partitions) and write ``records`` records to each partition."""
    from confluent_kafka import Producer

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor)])[topic].result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
    for partition in range(PARTITIONS):
        for i in range(records):
            producer.produce(topic, value=b"%d-%d" % (partition, i), partition=partition)
    assert producer.flush(30) == 0


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(15)


def consume_and_commit(client: str, bootstrap: str, group: str, topics: list[str], count: int,
                       protocol: str = "classic", timeout_s: float = 30.0) -> list[bytes]:
    """Join ``group`` subscribed to ``topics``, read ``count`` records from the start (or the committed
    offsets), commit them, leave. Returns the values read."""
    deadline = time.monotonic() + timeout_s
    values: list[bytes] = []
    if client == "confluent":
        config = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False}
        if protocol == "consumer":
            config["group.protocol"] = "consumer"
        else:
            config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
        consumer = Consumer(config)
        consumer.subscribe(topics)
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                values.append(msg.value())
        if values:
            consumer.commit(asynchronous=False)
        consumer.close()
    elif client == "aiokafka":
        async def run() -> None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=300)
            await consumer.start()
            try:
                while len(values) < count and time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=100)).values():
                        values.extend(r.value for r in records)
                if values:
                    await consumer.commit()
            finally:
                await consumer.stop()

        asyncio.run(run())
    else:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                 enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=300)
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                values += [r.value for r in records]
        if values:
            consumer.commit()
        consumer.close()
    return values


def committed(client: str, bootstrap: str, group: str, topic: str) -> list[int | None]:
    """The group's committed offset of each partition of ``topic`` (None: none), through OffsetFetch."""
    if client == "confluent":
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            found = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
        finally:
            consumer.close()
        return [tp.offset if tp.offset >= 0 else None for tp in found]
    if client == "aiokafka":
        async def fetch() -> list[int | None]:
            from aiokafka import AIOKafkaConsumer
            from aiokafka.structs import TopicPartition as AioTopicPartition

            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
            await consumer.start()
            try:
                return [await consumer.committed(AioTopicPartition(topic, p)) for p in range(PARTITIONS)]
            finally:
                await consumer.stop()

        return asyncio.run(fetch())
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition as KafkaTopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [consumer.committed(KafkaTopicPartition(topic, p)) for p in range(PARTITIONS)]
    finally:
        consumer.close()


def listed_topics(bootstrap: str, group: str) -> set[str]:
    """The topics ListConsumerGroupOffsets (OffsetFetch of every partition) names for the group."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    return {tp.topic for tp in result.topic_partitions}


@pytest.mark.parametrize("client,protocol", [("confluent", "classic"), ("confluent", "consumer"),
                                             ("kafka-python", "classic"), ("aiokafka", "classic")])
def test_deleting_a_topic_removes_its_committed_offsets_and_a_recreated_topic_starts_afresh(
        group_broker, client, protocol):
    bootstrap = group_broker.bootstrap
    topic, other, group = f"gone-{client}-{protocol}", f"kept-{client}-{protocol}", f"deleters-{client}-{protocol}"
    make_topic(bootstrap, topic, 2)
    make_topic(bootstrap, other, 1)
    assert len(consume_and_commit(client, bootstrap, group, [topic, other], 6, protocol)) == 6
    assert committed(client, bootstrap, group, topic) == [2, 2]
    assert listed_topics(bootstrap, group) == {topic, other}

    delete_topic(bootstrap, topic)
    wait_until(lambda: listed_topics(bootstrap, group) == {other}, 20, 0.1, message="the deleted topic's offsets to go")
    assert committed(client, bootstrap, group, topic) == [None, None]
    assert committed(client, bootstrap, group, other) == [1, 1]

    # A topic made again under the name has no committed offsets: a new member of the group reads
    # it from the start (auto.offset.reset=earliest), not from where the old topic's offsets were.
    make_topic(bootstrap, topic, 3)
    values = consume_and_commit(client, bootstrap, group, [topic], 6, protocol)
    assert sorted(values) == sorted(b"%d-%d" % (p, i) for p in range(PARTITIONS) for i in range(3))
    assert committed(client, bootstrap, group, topic) == [3, 3]


def test_deleted_offsets_stay_gone_after_a_restart_and_the_log_says_how_many(group_broker):
    bootstrap = group_broker.bootstrap
    make_topic(bootstrap, "brief", 2)
    make_topic(bootstrap, "lasting", 1)
    for group in ("first", "second"):
        assert len(consume_and_commit("confluent", bootstrap, group, ["brief"], 4)) == 4
    assert len(consume_and_commit("kafka-python", bootstrap, "third", ["lasting"], 2, "classic")) == 2
    delete_topic(bootstrap, "brief")
    wait_until(lambda: not listed_topics(bootstrap, "first") and not listed_topics(bootstrap, "second"), 20, 0.1,
               message="the deleted topic's offsets to go")
    log = wait_until(lambda: [line for line in group_broker.log().splitlines() if "removed the committed offsets" in line],
                     20, 0.1, message="the deletion's log line")
    assert "topic brief" in log[0] and "2 groups" in log[0] and " INFO " in log[0], log
    metrics = requests.get(f"http://127.0.0.1:{group_broker.metrics_port}/metrics", timeout=10).text
    assert 'tidelog_deleted_topic_offsets_total{kind="consumer"} 4.0' in metrics  # 2 groups, 2 partitions
    group_broker.kill()
    group_broker.start()
    for client in ("confluent", "kafka-python"):
        assert committed(client, bootstrap, "first", "brief") == [None, None]
        assert committed(client, bootstrap, "third", "lasting") == [1, 1]
    assert listed_topics(bootstrap, "second") == set()


def test_a_deleted_delay_topics_mover_progress_goes_and_the_topic_made_again_moves_from_its_start(group_broker):
    """The delay movers' progress (group ``__tidelog-delay-mover``, one offset per delay partition)
    goes with its delay topic like any group's offsets; the topic made again moves its own records."""
    from confluent_kafka import Producer

    bootstrap = group_broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    delay_config = {"tidelog.delay.target.topic": "due"}
    admin.create_topics([NewTopic("due", 1, 1)])["due"].result(15)

    def delay_topic_with(values: list[bytes]) -> None:
        admin.create_topics([NewTopic("later", 1, 1, config=delay_config)])["later"].result(15)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        for value in values:
            producer.produce("later", value=value, headers={"tidelog-delay-ms": "0"})
        assert producer.flush(15) == 0
        wait_until(lambda: "later" in listed_topics(bootstrap, "__tidelog-delay-mover"), 20, 0.1,
                   message="the mover's progress")

    delay_topic_with([b"a", b"b", b"c"])
    delete_topic(bootstrap, "later")
    wait_until(lambda: "later" not in listed_topics(bootstrap, "__tidelog-delay-mover"), 20, 0.1,
               message="the mover's progress to go")
    delay_topic_with([b"d", b"e"])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "due-readers", "auto.offset.reset": "earliest"})
    consumer.subscribe(["due"])
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                got.append(msg.value())
    finally:
        consumer.close()
    assert sorted(got) == [b"a", b"b", b"c", b"d", b"e"]
