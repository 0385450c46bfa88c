"""Push delivery (issue 15) against receivers that fail: down for a while (connections refused),
slower than the ack deadline, closing connections without an answer; and a broker SIGKILLed in the
middle of deliveries. In every case each record is acknowledged by the receiver at least once, and
a record comes again only after an attempt of it failed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

from tests.integration.push_receiver import Receiver, create_subscription, status_of, wait_for
from tests.integration.share_clients import create_topic, metric

# Back-offs short enough for the test's time; a delivery limit high enough that no record runs out
# of attempts while the receiver is away (about 10 attempts in 5 s with these back-offs).
RETRYING = {"backoff_initial_ms": 20, "backoff_multiplier": 2.0, "backoff_max_ms": 500, "delivery_limit": 10,
            "linger_ms": 5}


def _produce(broker, topic: str, count: int, partitions: int, prefix: str) -> set[str]:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    values = set()
    for i in range(count):
        value = f"{prefix}{i}"
        producer.produce(topic, value.encode(), partition=i % partitions)
        values.add(value)
    assert producer.flush(60) == 0
    return values


def _acknowledged_values(receiver: Receiver) -> Counter:
    return Counter(r["value"] for d in receiver.snapshot() if 200 <= d.status < 300 for r in d.records)


def _failed_only_before(receiver: Receiver, ok=lambda d: 200 <= d.status < 300) -> None:
    """Every record the receiver got more than once came in a request that failed (or was answered
    after the broker gave up on it) before."""
    deliveries = receiver.snapshot()
    received = Counter(k for d in deliveries for k in d.keys)
    failed = Counter(k for d in deliveries if not ok(d) for k in d.keys)
    assert all(received[k] <= failed[k] + 1 for k in received), \
        [k for k in received if received[k] > failed[k] + 1][:5]


def test_a_receiver_down_for_five_seconds_gets_every_record_after(broker):
    create_topic(broker.bootstrap, "outage", 2)
    with Receiver() as receiver:
        create_subscription(broker, name="outage-hook", topics=["outage"], endpoint=receiver.url, batch_size=20,
                            **RETRYING)
        values = _produce(broker, "outage", 200, 2, "a")
        wait_for(lambda: set(_acknowledged_values(receiver)) == values, 60, "the first 200")
        receiver.down()
        went_down = time.monotonic()
        values |= _produce(broker, "outage", 300, 2, "b")
        wait_for(lambda: status_of(broker, "outage-hook")["state"] == "failing", 30, "the subscription failing")
        time.sleep(max(0.0, 5 - (time.monotonic() - went_down)))  # the outage itself lasts 5 s
        status = status_of(broker, "outage-hook")
        assert status["failed_by_status"].get("connection", 0) >= 2, status
        assert status["concurrency"] == 1
        receiver.up()
        wait_for(lambda: set(_acknowledged_values(receiver)) == values, 60, "every record after the outage")
        assert set(_acknowledged_values(receiver).values()) == {1}  # refused attempts never reached it
        wait_for(lambda: status_of(broker, "outage-hook")["state"] == "active", 30, "recovered")


def test_a_receiver_slower_than_the_deadline_gets_them_again(broker):
    create_topic(broker.bootstrap, "slow", 1)

    async def answer(n, delivery):
        if n < 3:
            await asyncio.sleep(1.5)  # past the 500 ms deadline: the broker gives up and releases them
        return 200

    with Receiver(answer) as receiver:
        create_subscription(broker, name="slow-hook", topics=["slow"], endpoint=receiver.url, batch_size=10,
                            ack_deadline_ms=500, **RETRYING)
        values = _produce(broker, "slow", 100, 1, "s")
        wait_for(lambda: set(_acknowledged_values(receiver)) >= values and status_of(broker, "slow-hook")["acknowledged"] == 100,
                 60, "every record acknowledged")
        assert status_of(broker, "slow-hook")["failed_by_status"].get("timeout", 0) >= 1
        # the slow answers came after the deadline: those requests count as failed attempts
        slow = receiver.snapshot()[:3]
        _failed_only_before(receiver, ok=lambda d: d.status == 200 and not any(d is s for s in slow))


def test_a_receiver_closing_connections_gets_every_record(broker):
    create_topic(broker.bootstrap, "closing", 1)
    with Receiver(lambda n, d: None if n % 2 == 0 and n < 20 else 200) as receiver:
        create_subscription(broker, name="closing-hook", topics=["closing"], endpoint=receiver.url, batch_size=10,
                            **RETRYING)
        values = _produce(broker, "closing", 200, 1, "c")
        wait_for(lambda: set(_acknowledged_values(receiver)) == values, 60, "every record")
        assert status_of(broker, "closing-hook")["failed_by_status"].get("connection", 0) >= 1
        assert set(_acknowledged_values(receiver).values()) == {1}
        _failed_only_before(receiver)


@pytest.mark.slow
def test_broker_sigkill_mid_delivery_loses_nothing(broker):
    create_topic(broker.bootstrap, "crash", 3)

    async def answer(n, delivery):
        await asyncio.sleep(0.02)  # deliveries are in flight when the broker dies
        return 200

    with Receiver(answer) as receiver:
        create_subscription(broker, name="crash-hook", topics=["crash"], endpoint=receiver.url, batch_size=25,
                            max_concurrency=4, **RETRYING)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        values = set()
        for i in range(3000):
            producer.send("crash", f"x{i}".encode(), partition=i % 3)
            values.add(f"x{i}")
        producer.flush(60)
        producer.close()
        wait_for(lambda: len(_acknowledged_values(receiver)) >= 500, 60, "deliveries under way")
        broker.kill()
        before = len(_acknowledged_values(receiver))
        assert before < 3000, "everything was delivered before the kill: the test proves nothing"
        broker.restart()
        wait_for(lambda: set(_acknowledged_values(receiver)) == values, 120, "every record after the restart")
        duplicates = sum(n - 1 for n in _acknowledged_values(receiver).values())
        # only records in flight (or answered but not yet durably acknowledged) at the kill come again
        assert duplicates <= before, duplicates


@pytest.mark.slow
def test_partition_leader_sigkill_in_a_cluster_moves_deliveries(tmp_path):
    """3 brokers (real etcd), a topic with 3 replicas: each broker delivers the partitions it leads;
    the leader of partition 0 is SIGKILLed mid-delivery and its successor delivers the rest."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.clusterproc import Cluster

    cluster = Cluster(tmp_path, 3, {"http.port": "0"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic("moving", 3, 3, config={"min.insync.replicas": "2"})])["moving"].result(30)
        wait_for(lambda: all(p.leader > 0 for p in admin.list_topics("moving", timeout=5).topics["moving"].partitions.values()),
                 30, "leaders")

        async def answer(n, delivery):
            await asyncio.sleep(0.02)
            return 200

        with Receiver(answer) as receiver:
            create_subscription(cluster.brokers[1], name="moving-hook", topics=["moving"], endpoint=receiver.url,
                                batch_size=25, max_concurrency=4, **RETRYING)
            producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                                 "linger.ms": 5, "message.timeout.ms": 60000})
            acked: set[str] = set()
            for i in range(3000):
                producer.produce("moving", f"m{i}".encode(), partition=i % 3,
                                 on_delivery=lambda err, msg: err is None and acked.add(msg.value().decode()))
                producer.poll(0)
            assert producer.flush(60) == 0
            wait_for(lambda: len(_acknowledged_values(receiver)) >= 300, 60, "deliveries under way")
            victim = admin.list_topics("moving", timeout=5).topics["moving"].partitions[0].leader
            cluster.brokers[victim].kill()
            assert len(_acknowledged_values(receiver)) < 3000, "all delivered before the kill: the test proves nothing"
            wait_for(lambda: set(_acknowledged_values(receiver)) >= acked, 120,
                     f"every acknowledged record pushed after broker {victim} died")
            assert len(acked) == 3000
            new_leader = admin.list_topics("moving", timeout=5).topics["moving"].partitions[0].leader
            assert new_leader not in (victim, -1)
            # the new leader delivers partition 0 now (its own status, not the cluster's sum)
            local = status_of(cluster.brokers[new_leader], "moving-hook", local=True)
            assert {"topic": "moving", "partition": 0} in local["partitions"] and local["node_id"] == new_leader
            assert metric(cluster.brokers[new_leader], "tidelog_push_records_total", subscription="moving-hook",
                          event="acknowledged") == local["acknowledged"] > 0
    finally:
        cluster.stop()
