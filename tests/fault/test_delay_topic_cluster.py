"""Delay topics (issue 14) in a 3-broker cluster (real processes, real etcd) where the delay topic's
partition and its target partition have different leaders: the delay partition's mover appends to
the target's leader on another broker. Records with delays of 0-5 s reach the target exactly once
(as many records in the target as were produced, each number once) and never before they were
due, read by kafka-python's and confluent-kafka's classic consumers; also when the delay
partition's leader is SIGKILLed while records are being moved (its successor, on a third broker,
finds where the mover stopped in the target's batches at the target's leader), and when the
target's leader is SIGKILLed (the mover retries at the new leader)."""

from __future__ import annotations

import re
import time

import pytest
import requests
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.integration.test_delay_topic import check, consume_confluent, consume_kafka_python, produce_delayed

pytestmark = pytest.mark.slow

RECORDS = 300
MAX_DELAY_MS = 5000
# The kill tests kill a broker while records are still waiting: none is due before the producer has
# surely flushed (a loaded machine took seconds), and they stay due over several seconds after.
KILL_MIN_DELAY_MS, KILL_MAX_DELAY_MS = 2000, 9000
CONSUME_S = 60
# The delay partition is led by broker 1, its target by broker 2; broker 3 is each one's next in line.
DELAYS_REPLICAS, TARGET_REPLICAS = [1, 3, 2], [2, 3, 1]
OFFSETS = "__consumer_offsets"


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0"}).start()  # /metrics
    yield cluster
    cluster.stop()


def leaders(admin: AdminClient) -> dict[str, int]:
    """Each topic's leader; none while the metadata cannot be had (a broker just killed: the admin
    client's metadata request may time out on its connection to it)."""
    try:
        topics = admin.list_topics(timeout=5).topics
    except KafkaException:
        return {}
    return {name: topics[name].partitions[0].leader for name in ("delays", "target") if name in topics}


def placement(admin: AdminClient, names=("delays", "target")) -> dict[str, tuple[int, list[int]]]:
    topics = admin.list_topics(timeout=5).topics
    return {name: (topics[name].partitions[0].leader, list(topics[name].partitions[0].replicas))
            for name in names if name in topics and 0 in topics[name].partitions}


def create_placed(cluster: Cluster, replicas: dict[str, list[int]]) -> AdminClient:
    """The delay topic and its target (one partition each) on these replicas, led by the first:
    created, then their replicas put in that order (AlterPartitionReassignments) and the preferred
    leaders elected (ElectLeaders), by kafka-python's admin client (confluent-kafka's has neither;
    a manual assignment at creation is for a single node only). ``__consumer_offsets`` (which the
    brokers create at their start) may be placed too: the movers commit their progress there."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wanted = {name: (r[0], r) for name, r in replicas.items()}
    futures = admin.create_topics([NewTopic("target", 1, len(replicas["target"])),
                                   NewTopic("delays", 1, len(replicas["delays"]),
                                            config={"tidelog.delay.target.topic": "target"})])
    for future in futures.values():
        future.result(30)
    if OFFSETS in replicas:
        wait_until(lambda: OFFSETS in placement(admin, (OFFSETS,)), 30, interval_s=0.1, message="__consumer_offsets")
    mover = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10000)
    try:
        assert mover.alter_partition_reassignments({KafkaTopicPartition(name, 0): r for name, r in replicas.items()}) == {
            KafkaTopicPartition(name, 0): None for name in replicas}
        wait_until(lambda: {name: r for name, (_, r) in placement(admin, tuple(replicas)).items()} == replicas, 30,
                   interval_s=0.1, message="replicas in order")
        while placement(admin, tuple(replicas)) != wanted:
            mover.elect_leaders(0, {name: [0] for name in replicas}, raise_errors=False)
            wait_until(lambda: placement(admin, tuple(replicas)) == wanted, 10, interval_s=0.1,
                       message="the delay and target leaders")
    finally:
        mover.close()
    return admin


def create_apart(cluster: Cluster) -> AdminClient:
    """The two topics (3 replicas) led by brokers 1 and 2."""
    return create_placed(cluster, {"delays": DELAYS_REPLICAS, "target": TARGET_REPLICAS})


def target_size(bootstrap: str) -> int:
    """Records in the target (its high watermark): a duplicate would make it more than produced."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size"})
    try:
        return consumer.get_watermark_offsets(TopicPartition("target", 0), timeout=10)[1]
    finally:
        consumer.close()


def metric(broker, name: str, **labels: str) -> float:
    """A sample of the broker's /metrics (0 when it has none yet)."""
    text = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def moved(broker) -> float:
    """Records the broker's delay mover has moved to the target."""
    return metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays")


def wait_until_moved(due: dict[int, int]) -> None:
    """Until the last record is due (the consumers then wait for what is still on its way)."""
    while int(time.time() * 1000) < max(due.values()):
        time.sleep(0.05)


def assert_exactly_once_never_early(cluster: Cluster, due: dict[int, int]) -> None:
    got = consume_kafka_python(cluster.bootstrap, RECORDS, CONSUME_S)
    lateness = sorted(check(got, due))  # each number once, none received or moved before it was due
    print(f"delay topic, remote target: moved after due (ms): p50 {lateness[len(lateness) // 2]} max {lateness[-1]}")
    assert target_size(cluster.bootstrap) == RECORDS
    again = consume_confluent(cluster.bootstrap, RECORDS, CONSUME_S)
    assert sorted(n for n, *_ in again) == sorted(due)


def test_delayed_records_move_to_a_target_led_by_another_broker(cluster):
    create_apart(cluster)
    due = produce_delayed(cluster.bootstrap, RECORDS, MAX_DELAY_MS, seed=5)
    wait_until_moved(due)
    assert_exactly_once_never_early(cluster, due)
    delay_leader = cluster.brokers[1]
    assert metric(delay_leader, "tidelog_delay_topic_records_total", event="moved", topic="delays") == RECORDS
    assert metric(delay_leader, "tidelog_delay_topic_remote_appends_total", result="ok", topic="delays") > 0
    assert "appending to target-0 at its leader, broker 2" in delay_leader.log()


def test_delayed_records_move_exactly_once_when_the_delay_partitions_leader_is_killed(cluster):
    admin = create_apart(cluster)
    due = produce_delayed(cluster.bootstrap, RECORDS, KILL_MAX_DELAY_MS, seed=6, min_delay_ms=KILL_MIN_DELAY_MS)
    wait_until(lambda: moved(cluster.brokers[1]) > 0, 30, interval_s=0.1, message="some records moved")
    assert moved(cluster.brokers[1]) < RECORDS, "every record moved before the kill: the test needs its kill in the middle"
    cluster.brokers[1].kill()  # in the middle: some moved, most still waiting
    wait_until(lambda: leaders(admin).get("delays") == 3, 30, message="broker 3 leading the delay partition")
    assert wait_until(lambda: leaders(admin).get("target"), 30, message="the target's leader") == 2  # so the new leader's mover finds the old one's progress at another broker
    wait_until_moved(due)
    assert_exactly_once_never_early(cluster, due)
    successor = cluster.brokers[3]
    assert metric(successor, "tidelog_delay_topic_remote_appends_total", result="ok", topic="delays") > 0
    # It started where the killed one stopped, found at the target's leader (not from the beginning).
    assert re.search(r"delay mover delays-0 starts at due <= \d+, offset [1-9]\d*, sequence [1-9]", successor.log())


def test_delayed_records_move_exactly_once_when_the_targets_leader_is_killed(cluster):
    # The movers' progress (committed before each batch) off the killed broker: a commit waiting on
    # a dead broker in its partition's ISR would hold the mover until the target's leader moved, and
    # no append would fail (stop 28's CI failed so: no failed append, the moves held 1.9 s once).
    admin = create_placed(cluster, {"delays": DELAYS_REPLICAS, "target": TARGET_REPLICAS, OFFSETS: [1, 3]})
    due = produce_delayed(cluster.bootstrap, RECORDS, KILL_MAX_DELAY_MS, seed=7, min_delay_ms=KILL_MIN_DELAY_MS)
    delay_leader = cluster.brokers[1]
    wait_until(lambda: metric(delay_leader, "tidelog_delay_topic_remote_appends_total", result="ok", topic="delays") > 0,
               30, interval_s=0.1, message="some records moved")
    assert moved(delay_leader) < RECORDS, "every record moved before the kill: the test needs its kill in the middle"
    cluster.brokers[2].kill()
    wait_until(lambda: leaders(admin).get("target") == 3, 30, message="broker 3 leading the target")
    wait_until_moved(due)
    assert_exactly_once_never_early(cluster, due)
    # The mover's appends failed while the target had no leader, and went on at the new one.
    assert metric(delay_leader, "tidelog_delay_topic_remote_appends_total", result="failed", topic="delays") > 0
    assert "appending to target-0 at its leader, broker 3" in delay_leader.log()
