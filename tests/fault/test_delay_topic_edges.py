"""Delay topics (issue 14.2b) at the edges of their exactly-once recovery, in a 3-broker cluster
(real processes, real etcd) with the delay partition led by broker 1 and its target by broker 2:

- the mover idle for longer than ``producer.id.expiration.ms``, then its broker SIGKILLed: the
  target keeps the mover's producer state (a mover's producer id never expires), so the new
  leader, on a broker that never ran the mover (no local copy of its progress), goes on from
  the mover's last batch in the target instead of moving every record again.

Records are produced by confluent-kafka and read back from the target by kafka-python's and
confluent-kafka's classic consumers: every record once, none early."""

from __future__ import annotations

import random
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_delay_topic_cluster import create_apart, leaders, metric

pytestmark = pytest.mark.slow

MOVER_PRODUCER_IDS = 1 << 62
EXPIRATION_MS = 3000
TIMEOUT_S = 30


@pytest.fixture
def expiring_cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "producer.id.expiration.ms": str(EXPIRATION_MS),
                                    "producer.id.expiration.check.interval.ms": "300"}).start()
    yield cluster
    cluster.stop()


def produce_delayed(bootstrap: str, numbers: range, max_delay_ms: int, seed: int) -> dict[int, int]:
    """Records numbered ``numbers`` to the delay topic with random delays; number -> due time (ms)."""
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    due = {}
    for n in numbers:
        now = int(time.time() * 1000)
        due[n] = now + rng.randint(0, max_delay_ms)
        producer.produce("delays", value=b"%d" % n, headers={"tidelog-deliver-at": str(due[n])}, timestamp=now)
    assert producer.flush(TIMEOUT_S) == 0
    return due


def read_target_kafka_python(bootstrap: str, count: int) -> list[tuple[int, int]]:
    """(number, timestamp) of the target's first ``count`` moved records (and any beyond them that
    are there by then), as a classic group."""
    consumer = KafkaConsumer("target", bootstrap_servers=bootstrap, group_id="edge-readers",
                             auto_offset_reset="earliest", fetch_max_wait_ms=50)
    got = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                got += [(int(r.value), r.timestamp) for r in records if dict(r.headers).get("tidelog-origin-topic")]
    finally:
        consumer.close()
    return got


def read_target_confluent(bootstrap: str, end: int) -> list[int]:
    """The numbers of the moved records below offset ``end`` of the target, as a classic group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "other-edge-readers",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition("target", 0, 0)])
    got, position = [], 0
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while position < end and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None or message.error():
                continue
            position = message.offset() + 1
            if dict(message.headers() or []).get("tidelog-origin-topic"):
                got.append(int(message.value()))
    finally:
        consumer.close()
    return got


def leader_of(admin, topic: str) -> int | None:
    """The topic's leader, None while the metadata cannot be had (a broker just killed)."""
    try:
        return leaders(admin).get(topic)
    except KafkaException:
        return None


def target_end(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size"})
    try:
        return consumer.get_watermark_offsets(TopicPartition("target", 0), timeout=10)[1]
    finally:
        consumer.close()


def target_producers(bootstrap: str) -> list[int]:
    """The producer ids the target partition's leader holds state for (DescribeProducers)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        state = admin.describe_producers([KafkaTopicPartition("target", 0)])[KafkaTopicPartition("target", 0)]
        return [p.producer_id for p in state.active_producers]
    finally:
        admin.close()


def assert_moved_exactly_once(bootstrap: str, due: dict[int, int], others: int = 0) -> None:
    """Each record of ``due`` once in the target, none moved before it was due; ``others``: records
    in the target not moved from the delay topic."""
    wait_until(lambda: int(time.time() * 1000) >= max(due.values()), TIMEOUT_S, interval_s=0.05,
               message="the last record due")
    got = read_target_kafka_python(bootstrap, len(due))
    assert sorted(n for n, _ in got) == sorted(due)
    early = [(n, due[n] - moved) for n, moved in got if moved < due[n]]
    assert not early, f"moved before due (number, ms early): {early[:5]}"
    end = target_end(bootstrap)
    assert end == len(due) + others, f"the target holds {end} records, {len(due) + others} expected"
    assert sorted(read_target_confluent(bootstrap, end)) == sorted(due)


def test_a_mover_idle_past_producer_expiry_is_not_forgotten_on_failover(expiring_cluster):
    cluster = expiring_cluster
    admin = create_apart(cluster)
    due = produce_delayed(cluster.bootstrap, range(0, 40), 1000, seed=21)
    wait_until(lambda: metric(cluster.brokers[1], "tidelog_delay_topic_records_total", event="moved",
                              topic="delays") == 40, TIMEOUT_S, interval_s=0.1, message="the first 40 moved")
    # A witness: an idempotent producer's one record to the target after the mover's last batch.
    # Once the target's leader forgot it, it has run its expiry check past the mover's idle time too.
    witness = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True})
    witness.produce("target", value=b"witness")
    assert witness.flush(TIMEOUT_S) == 0
    with_witness = target_producers(cluster.bootstrap)
    assert len([p for p in with_witness if p < MOVER_PRODUCER_IDS]) == 1, with_witness
    wait_until(lambda: not [p for p in target_producers(cluster.bootstrap) if p < MOVER_PRODUCER_IDS], TIMEOUT_S,
               interval_s=0.2, message="the witness producer expired at the target's leader")
    assert [p for p in target_producers(cluster.bootstrap) if p >= MOVER_PRODUCER_IDS], \
        "the mover's producer state expired with the witness's"

    cluster.brokers[1].kill()  # broker 3 never ran the mover: it has no local copy of its progress
    wait_until(lambda: leader_of(admin, "delays") == 3, TIMEOUT_S, message="broker 3 leading the delay partition")
    assert leader_of(admin, "target") == 2
    due.update(produce_delayed(cluster.bootstrap, range(40, 80), 1000, seed=22))
    assert_moved_exactly_once(cluster.bootstrap, due, others=1)
    assert metric(cluster.brokers[3], "tidelog_delay_topic_records_total", event="moved", topic="delays") == 40
