"""A delay topic (issue 14.2b) after an upgrade from the version whose movers were idempotent
producers with an allocated producer id (below 2^62; now a mover's id is derived from its delay
partition): the new mover finds where the old one stopped from the old one's last batch in the
target (its `tidelog-delay-round` header), also in the middle of a round, and moves each of the
rest once.

The old mover is played by a confluent-kafka idempotent producer (an allocated producer id, epoch
0, sequences from 0, as the old mover had) writing what the old mover wrote: the first batch of
a round of 20 due records, with the origin headers and the round header on its last record, as
if the broker had stopped for the upgrade after it; then the delay topic's config names its
target and the new version's mover starts. Read back by kafka-python's and confluent-kafka's
classic consumers."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from kafka import KafkaConsumer

from tests.brokerproc import wait_until
from tests.integration.test_delay_topic import create
from tests.fault.test_delay_topic_cluster import metric

TIMEOUT_S = 15


def test_a_mover_of_the_earlier_version_is_continued_in_the_middle_of_its_round(broker):
    create(broker.bootstrap, {"target": {}, "delays": {}})  # not a delay topic yet: nothing moves
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for n in range(20):
        producer.produce("delays", value=b"%d" % n, headers={"tidelog-delay-ms": "0"})
    assert producer.flush(TIMEOUT_S) == 0
    round_end = int(time.time() * 1000)

    old_mover = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 1000})
    for n in range(10):
        headers = [("tidelog-delay-ms", b"0"), ("tidelog-origin-topic", b"delays"),
                   ("tidelog-origin-partition", b"0"), ("tidelog-origin-offset", b"%d" % n)]
        if n == 9:  # the last record of the round's first batch: round (-1, 0) -> (round_end, 20), index 9 of 20
            headers.append(("tidelog-delay-round", f"delays,0,-1,0,{round_end},20,9,20".encode()))
        old_mover.produce("target", value=b"%d" % n, headers=headers)
    assert old_mover.flush(TIMEOUT_S) == 0

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    config = ConfigResource("topic", "delays", incremental_configs=[ConfigEntry(
        "tidelog.delay.target.topic", "target", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([config]).values():
        future.result(TIMEOUT_S)
    wait_until(lambda: metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays") >= 10,
               TIMEOUT_S, interval_s=0.05, message="the new mover moving")
    assert metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays") == 10  # 10..19 only

    consumer = KafkaConsumer("target", bootstrap_servers=broker.bootstrap, group_id="upgrade-readers",
                             auto_offset_reset="earliest", fetch_max_wait_ms=50)
    got = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 20 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                got += [int(r.value) for r in records]
    finally:
        consumer.close()
    assert sorted(got) == list(range(20))
    other = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "size"})
    try:
        assert other.get_watermark_offsets(TopicPartition("target", 0), timeout=10)[1] == 20
    finally:
        other.close()
