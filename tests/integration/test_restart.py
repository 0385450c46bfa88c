"""A broker restarted cleanly (SIGTERM) or after a crash (SIGKILL) keeps data, configs and topic ids."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from kafka import KafkaAdminClient

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
