"""Followers fetch through incremental fetch sessions (KIP-227) on a 3-broker cluster, and
replication still holds: every record acknowledged with acks=all is read back from the
survivors after the broker leading a partition is SIGKILLed."""

from __future__ import annotations

import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow

TOPIC = "sessions"


def _metrics(broker) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
        lines = page.read().decode().splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}


def _produce(bootstrap: str, first: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for n in range(first, first + count):
        producer.produce(TOPIC, value=b"%d" % n, partition=n % 3, on_delivery=lambda err, _: err and errors.append(err))
        if n % 50 == 0:
            producer.flush(15)  # many small appends: many fetches that carry records
    producer.flush(15)
    assert not errors, errors


def test_followers_fetch_incrementally_and_replicate_every_acknowledged_record(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 3, 3)])[TOPIC].result(10)
        partitions = lambda: admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions.values()  # noqa: E731
        wait_until(lambda: all(len(p.isrs) == 3 for p in partitions()), 15, message="full ISRs")
        _produce(cluster.bootstrap, 0, 600)

        follower_fetches = {"full": 0.0, "incremental": 0.0}
        for broker in cluster.brokers.values():
            metrics = _metrics(broker)
            for kind in follower_fetches:
                follower_fetches[kind] += metrics.get(f'tidelog_fetch_requests_total{{fetcher="follower",kind="{kind}"}}', 0)
            leads = sum(1 for p in partitions() if p.leader == broker.broker_id)
            if leads:  # two followers fetch from each leader, each in one session
                assert metrics["tidelog_fetch_sessions"] >= 2, metrics
        assert follower_fetches["incremental"] > 10 * follower_fetches["full"] > 0, follower_fetches

        victim = next(p.leader for p in partitions() if p.id == 0)
        cluster.brokers[victim].kill()
        survivors = ",".join(b.bootstrap for i, b in cluster.brokers.items() if i != victim)
        admin = AdminClient({"bootstrap.servers": survivors})
        wait_until(lambda: all(p.leader not in (victim, -1) for p in partitions()), 20, interval_s=0.2,
                   message="leaders among the survivors")
        consumer = Consumer({"bootstrap.servers": survivors, "group.id": "check", "enable.auto.commit": False})
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(3)])
        seen: list[int] = []
        wait_until(lambda: _poll_into(consumer, seen) >= 600, 30, message="every acknowledged record")
        consumer.close()
        assert sorted(seen) == list(range(600))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def _poll_into(consumer: Consumer, seen: list[int]) -> int:
    for message in consumer.consume(500, 0.5):
        if not message.error():
            seen.append(int(message.value()))
    return len(seen)
