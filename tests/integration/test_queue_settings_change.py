"""Share-group settings changed while consumers read (review12): the broker keeps a
share-partition's QueueSettings while its topic's and group's overrides stay the same
(queues/queue_features.py settings_for); a change through IncrementalAlterConfigs (kafka-python)
is in force for the records a confluent-kafka ShareConsumer acquires after it. Failed with a
cache that ignored the change (checked by hand)."""

from __future__ import annotations

import time

from confluent_kafka import Producer
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.integration.share_clients import create_topic, metric, share_consumer, wait_for
from tests.integration.test_queue_features import drain, group_configs, produce


def test_a_filter_changed_while_a_consumer_reads_applies_to_the_next_acquisitions(broker):
    create_topic(broker.bootstrap, "switching", 1)
    group_configs(broker.bootstrap, "switchers", **{"share.auto.offset.reset": "earliest",
                                                    "tidelog.filter": 'headers["type"] == b"order"'})
    kinds = ["order" if i % 3 == 0 else "refund" for i in range(30)]
    produce(broker.bootstrap, "switching", [(b"%d" % i, {"type": kinds[i]}) for i in range(30)])
    consumer = share_consumer(broker.bootstrap, "switchers", ["switching"])
    try:
        seen: list = []
        drain(consumer, lambda: len(seen) >= 10, 30, seen)
        assert sorted(int(m.value()) for _, m in seen) == list(range(0, 30, 3))
        group_configs(broker.bootstrap, "switchers", **{"tidelog.filter": 'headers["type"] == b"refund"'})
        produce(broker.bootstrap, "switching", [(b"%d" % (30 + i), {"type": kinds[i]}) for i in range(30)])
        later: list = []
        drain(consumer, lambda: len(later) >= 20, 30, later)
        assert sorted(int(m.value()) for _, m in later) == [30 + i for i in range(30) if kinds[i] == "refund"]
        assert list(consumer.poll(1.0)) == []
    finally:
        consumer.close()


def test_a_topic_ttl_set_while_a_consumer_reads_applies_to_the_next_acquisitions(broker):
    """The topic's overrides too: records a minute old are delivered while the topic has no TTL,
    and expired (archived, counted) once tidelog.ttl.ms=10000 is set on the topic."""
    create_topic(broker.bootstrap, "aging", 1)
    group_configs(broker.bootstrap, "agers", **{"share.auto.offset.reset": "earliest"})
    minute_ago_ms = int(time.time() * 1000) - 60_000

    def produce_old(values):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for value in values:
            producer.produce("aging", value, timestamp=minute_ago_ms)
        assert producer.flush(30) == 0

    produce_old([b"%d" % i for i in range(10)])
    consumer = share_consumer(broker.bootstrap, "agers", ["aging"])
    try:
        seen: list = []
        drain(consumer, lambda: len(seen) >= 10, 30, seen)
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "aging",
                                                         configs={"tidelog.ttl.ms": "10000"})], incremental=True)
            assert result["topic"]["aging"] == "OK", result
        finally:
            admin.close()
        produce_old([b"%d" % i for i in range(10, 20)])
        wait_for(lambda: metric(broker, "tidelog_share_group_records_total", group="agers", event="expired") == 10,
                 30, "the ten old records expired", lambda: seen.extend(consumer.poll(0.2)))
        assert len(seen) == 10
    finally:
        consumer.close()
