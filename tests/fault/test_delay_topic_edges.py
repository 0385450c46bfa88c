"""Delay topics (issue 14.2b) at the edges of their exactly-once recovery, in a 3-broker cluster
(real processes, real etcd) with the delay partition led by broker 1 and its target by broker 2:

- the mover idle for longer than ``producer.id.expiration.ms``, then its broker SIGKILLed: the
  target keeps the mover's producer state (a mover's producer id never expires), so the new
  leader, on a broker that never ran the mover (no local copy of its progress), goes on from
  the mover's last batch in the target instead of moving every record again;
- the target's retention deleting the mover's last batch (its progress marker there), then the
  delay partition's leader SIGKILLed and started again: its mover goes on from its local copy of
  its progress (the target's producer state still names the mover's last sequence, and the batch
  is known to be gone once it has not appeared below the high watermark for twice
  ``replica.lag.time.max.ms``), where it waited for that batch forever before.
- the same deletion, then the delay partition failed over to a broker that never ran its mover
  (no local copy of its progress): the new leader's mover goes on from the progress committed to
  ``__consumer_offsets`` (group ``__tidelog-delay-mover``), replicated, instead of moving again
  every record still in the delay topic.
- the target's leader's clock a minute ahead of the delay partition's leaders' (a clock skew between
  brokers), the delay partition's leader SIGKILLed: the new leader's mover finds the last batch at
  the target's leader (searched from that batch's own time, the mover's clock, not the time the
  target's leader appended it by its clock) and goes on from there.

Records are produced by confluent-kafka and read back from the target by kafka-python's and
confluent-kafka's classic consumers: every record once, none early."""

from __future__ import annotations

import random
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_delay_topic_cluster import create_apart, create_placed, leaders, metric

pytestmark = pytest.mark.slow

MOVER_PRODUCER_IDS = 1 << 62
EXPIRATION_MS = 3000
TIMEOUT_S = 30


@pytest.fixture
def edge_cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "producer.id.expiration.ms": str(EXPIRATION_MS),
                                    "producer.id.expiration.check.interval.ms": "300",
                                    "log.retention.check.interval.ms": "200", "replica.lag.time.max.ms": "3000"}).start()
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


def read_target_kafka_python(bootstrap: str, count: int, start: int | None = None) -> list[tuple[int, int]]:
    """(number, timestamp) of the target's first ``count`` moved records (and any beyond them that
    are there by then), as a classic group; from offset ``start`` (assigned) if given."""
    if start is None:
        consumer = KafkaConsumer("target", bootstrap_servers=bootstrap, group_id="edge-readers",
                                 auto_offset_reset="earliest", fetch_max_wait_ms=50)
    else:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="retention-readers", fetch_max_wait_ms=50)
        consumer.assign([KafkaTopicPartition("target", 0)])
        consumer.seek(KafkaTopicPartition("target", 0), start)
    got = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                got += [(int(r.value), r.timestamp) for r in records if dict(r.headers).get("tidelog-origin-topic")]
    finally:
        consumer.close()
    return got


def read_target_confluent(bootstrap: str, end: int, start: int = 0) -> list[int]:
    """The numbers of the moved records from ``start`` to offset ``end`` of the target, as a classic group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "other-edge-readers",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition("target", 0, start)])
    got, position = [], start
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
    return leaders(admin).get(topic)


def target_offsets(bootstrap: str) -> tuple[int, int]:
    """The target's log start offset and high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size"})
    try:
        return consumer.get_watermark_offsets(TopicPartition("target", 0), timeout=10)
    finally:
        consumer.close()


def target_end(bootstrap: str) -> int:
    return target_offsets(bootstrap)[1]


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


def test_a_mover_idle_past_producer_expiry_is_not_forgotten_on_failover(edge_cluster):
    cluster = edge_cluster
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
    assert wait_until(lambda: leader_of(admin, "target"), TIMEOUT_S, message="the target's leader") == 2
    due.update(produce_delayed(cluster.bootstrap, range(40, 80), 1000, seed=22))
    assert_moved_exactly_once(cluster.bootstrap, due, others=1)
    assert metric(cluster.brokers[3], "tidelog_delay_topic_records_total", event="moved", topic="delays") == 40


def test_a_target_whose_retention_deleted_the_movers_last_batch(edge_cluster):
    cluster = edge_cluster
    # The delay topic on broker 1 alone (it leads it again after its restart), the target led by broker 2.
    admin = create_placed(cluster, {"delays": [1], "target": [2, 3, 1]})
    first = produce_delayed(cluster.bootstrap, range(0, 20), 500, seed=23)
    assert_moved_exactly_once(cluster.bootstrap, first)
    delete_the_movers_batches(cluster, admin)
    start, _ = target_offsets(cluster.bootstrap)

    cluster.brokers[1].kill()
    cluster.brokers[1].start()
    wait_until(lambda: leader_of(admin, "delays") == 1, TIMEOUT_S, message="broker 1 leading the delay partition again")
    second = produce_delayed(cluster.bootstrap, range(20, 40), 500, seed=24)
    assert_moved_once_since(cluster.bootstrap, start, second)


def delete_the_movers_batches(cluster, admin) -> None:
    """Retention deletes every batch the mover appended to the target (small segments, one kept,
    records of another producer after them), then the target keeps its records again."""
    moved_end = target_end(cluster.bootstrap)

    def set_retention(values: dict[str, str]) -> None:
        config = ConfigResource("topic", "target", incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in values.items()])
        for future in admin.incremental_alter_configs([config]).values():
            future.result(TIMEOUT_S)

    set_retention({"segment.bytes": "1024", "retention.bytes": "1024"})
    filler = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 0})

    def mover_batches_deleted() -> bool:
        filler.produce("target", value=b"f" * 600)
        assert filler.flush(TIMEOUT_S) == 0
        return target_offsets(cluster.bootstrap)[0] >= moved_end

    wait_until(mover_batches_deleted, TIMEOUT_S, interval_s=0.1, message="the mover's batches deleted by retention")
    set_retention({"retention.bytes": "-1"})
    assert [p for p in target_producers(cluster.bootstrap) if p >= MOVER_PRODUCER_IDS], "the mover's state is kept"


def assert_moved_once_since(bootstrap: str, start: int, due: dict[int, int]) -> None:
    """Each record of ``due`` once in the target from offset ``start`` on (read by kafka-python and
    confluent-kafka), none moved before it was due, no other moved record."""
    wait_until(lambda: int(time.time() * 1000) >= max(due.values()), TIMEOUT_S, interval_s=0.05,
               message="the last record due")
    got = read_target_kafka_python(bootstrap, len(due), start)
    assert sorted(n for n, _ in got) == sorted(due), "neither the first records again nor any of the second lost"
    assert all(moved >= due[n] for n, moved in got)
    assert sorted(read_target_confluent(bootstrap, target_end(bootstrap), start)) == sorted(due)


def test_a_failover_after_retention_deleted_the_movers_last_batch_goes_on_from_its_committed_progress(edge_cluster):
    cluster = edge_cluster
    # The delay partition led by broker 1 with a replica on broker 3; the target led by broker 2.
    admin = create_placed(cluster, {"delays": [1, 3], "target": [2, 3, 1]})
    first = produce_delayed(cluster.bootstrap, range(0, 20), 500, seed=27)
    assert_moved_exactly_once(cluster.bootstrap, first)
    delete_the_movers_batches(cluster, admin)
    start, _ = target_offsets(cluster.bootstrap)

    cluster.brokers[1].kill()  # broker 3 never ran the mover: no local copy of its progress
    wait_until(lambda: leader_of(admin, "delays") == 3, TIMEOUT_S, message="broker 3 leading the delay partition")
    second = produce_delayed(cluster.bootstrap, range(20, 40), 500, seed=28)
    assert_moved_once_since(cluster.bootstrap, start, second)
    assert metric(cluster.brokers[3], "tidelog_delay_topic_records_total", event="moved", topic="delays") == 20
    assert "going on from its progress committed to __consumer_offsets" in cluster.brokers[3].log()
    assert metric(cluster.brokers[3], "tidelog_delay_topic_recoveries_total", topic="delays", source="committed") == 1
    # Seen by any Kafka tool: the group __tidelog-delay-mover's offset of the delay partition.
    kafka_admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10000)
    try:
        wait_until(lambda: kafka_admin.list_group_offsets("__tidelog-delay-mover")["__tidelog-delay-mover"].get(
            KafkaTopicPartition("delays", 0), (None,))[0] == 40, TIMEOUT_S, interval_s=0.2,
            message="the progress committed after the second 20")
    finally:
        kafka_admin.close()


def test_a_target_leader_whose_clock_is_a_minute_ahead(edge_cluster):
    cluster = edge_cluster
    skewed = cluster.brokers[2]
    skewed.kill()
    skewed.env["TIDELOG_CLOCK_SKEW_MS"] = "60000"
    skewed.start()
    admin = create_placed(cluster, {"delays": [1, 3, 2], "target": [2, 3, 1]})
    due = produce_delayed(cluster.bootstrap, range(0, 40), 1000, seed=25)
    wait_until(lambda: metric(cluster.brokers[1], "tidelog_delay_topic_records_total", event="moved",
                              topic="delays") == 40, TIMEOUT_S, interval_s=0.1, message="the first 40 moved")
    cluster.brokers[1].kill()  # broker 3 has no copy of the mover's progress: it needs the target's batch
    wait_until(lambda: leader_of(admin, "delays") == 3, TIMEOUT_S, message="broker 3 leading the delay partition")
    assert wait_until(lambda: leader_of(admin, "target"), TIMEOUT_S, message="the target's leader") == 2
    due.update(produce_delayed(cluster.bootstrap, range(40, 80), 1000, seed=26))
    assert_moved_exactly_once(cluster.bootstrap, due)
    assert metric(cluster.brokers[3], "tidelog_delay_topic_records_total", event="moved", topic="delays") == 40
    assert "is gone" not in cluster.brokers[3].log()
