"""Followers flush on a schedule, not per fetch, and flush everything before they lead.

A 3-broker cluster (real processes, real etcd), one partition at replication factor 3 and
min.insync.replicas=2, the balanced profile. Nothing waits for a follower's fsync (the high
watermark waits for the leader's fsync and each in-sync follower's fetch, docs/storage.md), so a
follower fsyncs every ``replica.flush.interval.ms`` or ``replica.flush.interval.bytes``, not once
per fetch that brought records; and a follower that becomes leader flushes what it holds first,
so that nothing acknowledged is lost when the leader is SIGKILLed before the followers flushed.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_cluster_fetch_sessions import _metrics, _poll_into

pytestmark = pytest.mark.slow

TOPIC = "flushes"
FSYNC_JOBS = "tidelog_fsync_latency_seconds_count"
FOLLOWER_FETCHES = 'tidelog_fetch_requests_total{fetcher="follower",kind="incremental"}'


def _start(tmp_path, settings: dict[str, str] | None = None) -> tuple[Cluster, AdminClient, int]:
    """The cluster, an admin client and the partition's leader once all three are in sync."""
    cluster = Cluster(tmp_path, 3, {"http.port": "0", **(settings or {})}).start()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(10)
    wait_until(lambda: len(_partition(admin).isrs) == 3, 20, message="all three replicas in sync")
    return cluster, admin, _partition(admin).leader


def _partition(admin: AdminClient):
    return admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0]


def _produce_one_by_one(bootstrap: str, first: int, count: int) -> list[int]:
    """Each record acknowledged (acks=all) before the next is sent: one append, and one follower
    fetch with records, each. The values acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    acked: list[int] = []
    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is None:
            acked.append(int(msg.value()))
        else:
            errors.append(str(err))

    for n in range(first, first + count):
        producer.produce(TOPIC, value=b"%d" % n, partition=0, on_delivery=delivered)
        assert producer.flush(15) == 0, f"record {n} not acknowledged"
    assert not errors, errors
    return acked


def test_a_follower_fsyncs_on_its_schedule_not_per_fetch(tmp_path):
    # 300 batches of ~70 bytes: ~21 KB per follower, past a 6,000-byte bound three times (the
    # interval, an hour here, never elapses: the count does not depend on the machine's speed).
    cluster, admin, leader = _start(tmp_path, {"replica.flush.interval.ms": "3600000",
                                               "replica.flush.interval.bytes": "6000"})
    try:
        followers = [b for i, b in cluster.brokers.items() if i != leader]
        fsyncs_before = [_metrics(b).get(FSYNC_JOBS, 0) for b in followers]
        fetches_before = _metrics(cluster.brokers[leader]).get(FOLLOWER_FETCHES, 0)
        _produce_one_by_one(cluster.bootstrap, 0, 300)
        fetches = _metrics(cluster.brokers[leader]).get(FOLLOWER_FETCHES, 0) - fetches_before
        fsyncs = [_metrics(b).get(FSYNC_JOBS, 0) - before for b, before in zip(followers, fsyncs_before)]
        # 300 appends, each copied by each follower in a fetch of its own (about one per record
        # and follower: a follower's next fetch is what moves the high watermark).
        assert fetches >= 300, fetches
        # Per fetch that would be ~300 fsyncs each; it is one per 6,000 bytes copied.
        assert all(count < 300 / 5 for count in fsyncs), (fsyncs, fetches)
        for broker in followers:
            assert _metrics(broker).get('tidelog_follower_flushes_total{reason="bytes"}', 0) >= 2
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_with_the_default_settings_a_follower_flushes_what_it_copied_within_the_interval(tmp_path):
    cluster, admin, leader = _start(tmp_path)
    try:
        _produce_one_by_one(cluster.bootstrap, 0, 10)
        for broker in (b for i, b in cluster.brokers.items() if i != leader):
            # Nothing more is produced: the next 1 s tick flushes what the fetches brought.
            wait_until(lambda: _metrics(broker).get('tidelog_follower_flushes_total{reason="interval"}', 0) >= 1
                       and _metrics(broker)["tidelog_follower_unflushed_bytes"] == 0, 15, interval_s=0.2,
                       message=f"broker {broker.broker_id}'s scheduled flush")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_nothing_acknowledged_is_lost_when_the_leader_dies_before_the_followers_flushed(tmp_path):
    # Followers that never flush on their own: what they copied is only in their page cache
    # when the leader is SIGKILLed, and the new leader must flush it before it counts it.
    never = {"replica.flush.interval.ms": "3600000", "replica.flush.interval.bytes": str(1 << 40)}
    cluster, admin, leader = _start(tmp_path, never)
    try:
        acked = _produce_one_by_one(cluster.bootstrap, 0, 200)
        followers = {i: b for i, b in cluster.brokers.items() if i != leader}
        for broker in followers.values():
            metrics = _metrics(broker)
            assert not any(name.startswith("tidelog_follower_flushes_total") and value
                           for name, value in metrics.items()), metrics
            assert metrics["tidelog_follower_unflushed_bytes"] > 0
        cluster.brokers[leader].kill()  # SIGKILL, right after the last acknowledgement

        survivors = ",".join(b.bootstrap for b in followers.values())
        admin = AdminClient({"bootstrap.servers": survivors})
        wait_until(lambda: _partition(admin).leader in followers, 30, interval_s=0.2, message="a new leader")
        new_leader = followers[_partition(admin).leader]
        consumer = Consumer({"bootstrap.servers": survivors, "group.id": "check", "enable.auto.commit": False})
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        seen: list[int] = []
        try:
            # Every record acknowledged before the kill is served by the new leader, which counts
            # (and serves) only what it has made durable: it flushed what it held as a follower.
            wait_until(lambda: _poll_into(consumer, seen) >= len(acked), 30, message="every acknowledged record")
            assert _metrics(new_leader)['tidelog_follower_flushes_total{reason="leader"}'] >= 1
            # It acknowledges more (its appends as leader fsync again), and serves them too.
            acked += _produce_one_by_one(survivors, 200, 50)
            wait_until(lambda: _poll_into(consumer, seen) >= len(acked), 30, message="the records produced after")
        finally:
            consumer.close()
        assert seen == acked == list(range(250))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()

