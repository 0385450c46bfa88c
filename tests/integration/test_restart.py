"""A broker restarted cleanly (SIGTERM) or after a crash (SIGKILL) keeps data, configs and topic ids."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from tests.integration.clients import consume, produce


def _topic_id(bootstrap: str, topic: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (described,) = admin.describe_topics([topic])
        return str(described["topic_id"])
    finally:
        admin.close()


def _topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(10)
    return {name: entry.value for name, entry in entries.items()}


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_keeps_data_configs_and_topic_ids(broker, how):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = "durable-topic"
    futures = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1,
                                            config={"retention.ms": "123456789", "segment.bytes": "100000"})])
    futures[topic].result(10)
    records = [(f"k{i}".encode(), f"value-{i}".encode() * 20, [("n", str(i).encode())], None) for i in range(2000)]
    for partition in range(3):
        assert produce("confluent", broker.bootstrap, topic, records, partition=partition) == list(range(2000))
    topic_id = _topic_id(broker.bootstrap, topic)

    if how == "sigterm":
        assert broker.stop() == 0
        assert "shutdown complete" in broker.log()
    else:
        broker.kill()
    broker.restart()

    assert _topic_id(broker.bootstrap, topic) == topic_id
    configs = _topic_configs(broker.bootstrap, topic)
    assert configs["retention.ms"] == "123456789" and configs["segment.bytes"] == "100000"
    for partition, client in zip(range(3), ["confluent", "kafka-python", "aiokafka"]):
        messages = consume(client, broker.bootstrap, topic, 2000, partition=partition)
        assert [m.value for m in messages] == [r[1] for r in records]
    # Appends continue after the last offset.
    assert produce("kafka-python", broker.bootstrap, topic, records[:10], partition=1) == list(range(2000, 2010))


def test_recreated_topic_gets_a_new_id(broker):
    produce("confluent", broker.bootstrap, "again", [(None, b"x", [], None)])
    first = _topic_id(broker.bootstrap, "again")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics(["again"])["again"].result(10)
    admin.create_topics([NewTopic("again", 1, 1)])["again"].result(10)
    assert _topic_id(broker.bootstrap, "again") != first
    assert consume("confluent", broker.bootstrap, "again", 1, timeout_s=2) == []


def whole_log(broker) -> str:
    return broker.log_path.read_text(errors="replace")  # broker.log() keeps the tail: a line each partition pushes these out


def _start_line(log: str) -> str:
    return [line for line in log.splitlines() if " started (cluster " in line][-1]


def _opened_line(log: str) -> str:
    return [line for line in log.splitlines() if "storage.manager" in line and ": opened " in line][-1]


def _opened_s(line: str) -> float:
    """The seconds the broker says opening its logs took."""
    return float(line.split(" logs")[1].split(" in ")[1].split(" s")[0])


@pytest.mark.slow
def test_a_start_of_many_partitions_reads_no_log_after_a_clean_stop_and_stays_bounded_after_a_crash(broker):
    """Issue 19.4 (a start of 10,000 partitions took 7-11 s after a clean stop, 37 s after a
    SIGKILL). Bounded on the broker's own account of opening its logs, per log and generously
    (not wall time: a loaded machine spends seconds importing), and structurally: after a clean
    stop the marker describes every log, so no log is read (tests/unit/test_storage_clean_start.py
    counts the file operations)."""
    partitions = 300
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("many", num_partitions=partitions, replication_factor=1)])["many"].result(60)
    records = [(b"k%d" % i, b"v" * 100, [], None) for i in range(3 * partitions)]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for p in range(partitions):
        for key, value, _, _ in records[3 * p : 3 * p + 3]:
            producer.produce("many", value, key, partition=p)
    assert producer.flush(60) == 0
    logs = partitions + 1  # and __consumer_offsets-0

    assert broker.stop() == 0
    broker.restart()
    opened = _opened_line(whole_log(broker))
    assert f"opened {logs} logs in " in opened and f"({logs} as the clean stop described them)" in opened, opened
    assert _opened_s(opened) < 0.25 + logs * 0.001, opened  # 0.05 s here at load 10 (11 s for 10,000 before)
    assert " started (cluster " in _start_line(whole_log(broker))

    broker.kill()
    broker.restart()
    opened = _opened_line(whole_log(broker))
    assert f"opened {logs} logs (recovered)" in opened
    # 0.22 s here at load 10; two index-file truncations a log cost ~5 ms a log before (ext4 + discard).
    assert _opened_s(opened) < 0.5 + logs * 0.003, opened
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        ends = consumer.end_offsets([TopicPartition("many", p) for p in range(partitions)])
    finally:
        consumer.close()
    assert sum(ends.values()) == len(records)
    assert produce("kafka-python", broker.bootstrap, "many", records[:5], partition=7)[0] == ends[TopicPartition("many", 7)]


def _produce_errors(bootstrap: str, topic: str, value: bytes, partition: int) -> list[int]:
    """The error code of one record produced with confluent-kafka (0: appended)."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.max.bytes": 100000})
    producer.produce(topic, value, partition=partition, on_delivery=lambda err, _msg: errors.append(err.code() if err else 0))
    assert producer.flush(30) == 0
    return errors


def test_a_restart_takes_up_many_replicas_in_one_log_line_with_their_topic_configs(broker):
    """Issue 19.4: a take-up of many replicas (a start) logs one summary line, each replica's
    "leader" line at DEBUG; the topic's configs, resolved once for all its partitions, still
    govern every partition, and a change after the start reaches them all."""
    partitions = 40
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("bulk", num_partitions=partitions, replication_factor=1,
                                  config={"max.message.bytes": "2000"})])["bulk"].result(30)
    assert broker.stop() == 0
    logged_before = broker.log_path.stat().st_size
    broker.restart()

    log = whole_log(broker)[logged_before:]
    assert any(f"took up {partitions + 1} replicas: leading {partitions + 1}, following 0" in line
               for line in log.splitlines()), log[-3000:]  # and __consumer_offsets-0
    assert ": leader (epoch " not in log, log[-3000:]
    assert _produce_errors(broker.bootstrap, "bulk", b"x" * 3000, partition=5) == [10]  # MESSAGE_TOO_LARGE
    assert _produce_errors(broker.bootstrap, "bulk", b"x" * 1000, partition=6) == [0]

    resource = ConfigResource(ConfigResource.Type.TOPIC, "bulk", incremental_configs=[
        ConfigEntry("max.message.bytes", "10000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)
    assert _produce_errors(broker.bootstrap, "bulk", b"x" * 3000, partition=partitions - 1) == [0]
    assert _produce_errors(broker.bootstrap, "bulk", b"x" * 3000, partition=5) == [0]
