"""Share groups (KIP-932) with confluent-kafka's ShareConsumer over real sockets: records shared
exactly once, redelivery with rising delivery counts (RELEASE, lock expiry), the delivery limit,
and the group admin side with kafka-python."""

from __future__ import annotations

import time

import pytest
import requests
from confluent_kafka import AcknowledgeType

from tests.integration.share_clients import (
    LOW_LIMIT,
    create_topic,
    metric,
    produce_values,
    share_consumer,
    wait_for,
    wait_members,
)

# Short locks and delivery limits so the redelivery tests take seconds (Kafka's ranges allow them).
FAST_LOCKS = {"group.share.min.record.lock.duration.ms": "1000", "group.share.record.lock.duration.ms": "1000",
              "group.share.delivery.count.limit": "3"}


def _drain(consumers, seen: list, until, timeout_s: float) -> None:
    """Poll every consumer in turn, recording (consumer index, message), until ``until()``."""
    def poll():
        for i, consumer in enumerate(consumers):
            for message in consumer.poll(0.2):
                assert message.error() is None, message.error()
                seen.append((i, message))
    wait_for(until, timeout_s, "the records", poll)


def _settled(broker, group_id: str, count: int) -> bool:
    """The group's ``count`` members each at the assignment's epoch with a part of it (the HTTP API's view)."""
    view = requests.get(f"http://127.0.0.1:{broker.metrics_port}/api/v1/share-groups/{group_id}", timeout=10).json()
    members = view["members"]
    return len(members) == count and all(m["member_epoch"] == view["assignment_epoch"] and m["assignment"]
                                         for m in members)


@pytest.mark.slow
def test_three_consumers_share_six_partitions_exactly_once(broker):
    create_topic(broker.bootstrap, "work", 6)
    consumers = [share_consumer(broker.bootstrap, "workers", ["work"]) for _ in range(3)]
    try:
        wait_members(broker, "workers", 3, consumers)
        # Every member has been sent the final assignment (2 partitions each), not only counted: one
        # told late found the records taken by the two that held all six before it joined.
        wait_for(lambda: _settled(broker, "workers", 3), 30, "every member at the assignment's epoch",
                 lambda: [consumer.poll(0.1) for consumer in consumers])
        values = produce_values(broker.bootstrap, "work", 10_000, 6)
        seen: list = []
        _drain(consumers, seen, lambda: len(seen) >= 10_000, 120)
        for consumer in consumers:
            consumer.commit_sync(30)  # the last polls' records, accepted
        received = [m.value() for _, m in seen]
        assert len(received) == 10_000 and set(received) == values  # every record once
        assert all(m.delivery_count() == 1 for _, m in seen)
        assert len({i for i, _ in seen}) == 3  # all three consumers took part
        wait_for(lambda: metric(broker, "tidelog_share_group_records_total", group="workers", event="acknowledged")
                 == 10_000, 30, "10,000 acknowledgements counted")
    finally:
        for consumer in consumers:
            consumer.close()


def test_release_redelivers_with_rising_delivery_count_until_the_limit(broker_factory):
    broker = broker_factory(LOW_LIMIT)
    create_topic(broker.bootstrap, "jobs", 1)
    consumer = share_consumer(broker.bootstrap, "releasers", ["jobs"], **{"share.acknowledgement.mode": "explicit"})
    try:
        wait_members(broker, "releasers", 1, [consumer])
        produce_values(broker.bootstrap, "jobs", 1, 1, prefix="job-")
        counts = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(counts) < 3:
            for message in consumer.poll(0.5):
                counts.append(message.delivery_count())
                consumer.acknowledge(message, AcknowledgeType.RELEASE)
            consumer.commit_sync(30)
        assert counts == [1, 2, 3]
        # delivered share.delivery.count.limit (3) times: archived, never delivered again
        wait_for(lambda: metric(broker, "tidelog_share_group_records_total", group="releasers", event="archived") == 1,
                 30, "the record archived")
        assert list(consumer.poll(1.5)) == []
    finally:
        consumer.close()


def test_lock_expiry_redelivers_to_another_consumer(broker_factory):
    broker = broker_factory(FAST_LOCKS)
    create_topic(broker.bootstrap, "locks", 1)
    holder = share_consumer(broker.bootstrap, "lockers", ["locks"], **{"share.acknowledgement.mode": "explicit"})
    other = None
    try:
        wait_members(broker, "lockers", 1, [holder])
        produce_values(broker.bootstrap, "locks", 1, 1, prefix="held-")
        held = wait_for(lambda: list(holder.poll(0.5)), 30, "the holder's delivery")
        assert [m.delivery_count() for m in held] == [1]
        other = share_consumer(broker.bootstrap, "lockers", ["locks"])  # joins after the delivery
        # the holder neither acknowledges nor polls: its lock (1 s) runs out and the other gets it
        again: list = []
        _drain([other], again, lambda: again, 30)
        assert [(m.value(), m.delivery_count()) for _, m in again] == [(held[0].value(), 2)]
        assert metric(broker, "tidelog_share_group_records_total", group="lockers", event="lock_expired") == 1
    finally:
        holder.close()
        if other is not None:
            other.close()


def test_priority_topic_acquires_higher_priorities_first(broker):
    """Issue 14's selection is wired into ShareFetch: on a topic with tidelog.priority.enable, a fetch
    of 10 records (v2 record_limit mode) acquires those with the highest priority header first."""
    import datetime

    from confluent_kafka import Producer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    from kio.schema.metadata.v12 import request as metadata_request
    from kio.schema.share_fetch.v2 import request as fetch_request
    from kio.schema.share_group_heartbeat.v1 import request as heartbeat_request

    from tests.integration.share_clients import request

    create_topic(broker.bootstrap, "urgent", 1, {"tidelog.priority.enable": "true", "tidelog.priority.aging.ms": "0"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(30):
        producer.produce("urgent", f"p{i % 3}-{i}".encode(), partition=0, headers=[("priority", str(i % 3).encode())])
    assert producer.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.alter_configs([ConfigResource(ConfigResourceType.GROUP, "triage", configs={"share.auto.offset.reset": "earliest"})],
                        incremental=True)
    admin.close()
    [topic] = request(broker.bootstrap, 3, 12, metadata_request.MetadataRequest(
        topics=(metadata_request.MetadataRequestTopic(topic_id=None, name="urgent"),), allow_auto_topic_creation=False,
        include_topic_authorized_operations=False)).topics
    heartbeat = request(broker.bootstrap, 76, 1, heartbeat_request.ShareGroupHeartbeatRequest(
        group_id="triage", member_id="m1", member_epoch=0, rack_id=None, subscribed_topic_names=("urgent",)))
    assert heartbeat.error_code == 0, heartbeat
    fetch = fetch_request.ShareFetchRequest(
        group_id="triage", member_id="m1", share_session_epoch=0, max_wait=datetime.timedelta(milliseconds=2000),
        min_bytes=1, max_bytes=1 << 20, max_records=10, batch_size=10, share_acquire_mode=1, is_renew_ack=False,
        topics=(fetch_request.FetchTopic(topic_id=topic.topic_id, partitions=(
            fetch_request.FetchPartition(partition_index=0, acknowledgement_batches=()),)),), forgotten_topics_data=())
    response = request(broker.bootstrap, 78, 2, fetch)
    assert response.error_code == 0, response
    [partition] = response.responses[0].partitions
    acquired = [o for a in partition.acquired_records for o in range(a.first_offset, a.last_offset + 1)]
    assert sorted(acquired) == list(range(2, 30, 3))  # the ten records with priority 2


def test_read_committed_share_group_gets_only_committed_records(broker):
    """share.isolation.level=read_committed: records of an aborted transaction are never delivered,
    those of a committed one are (a transactional confluent-kafka producer)."""
    from confluent_kafka import Producer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    create_topic(broker.bootstrap, "ledger", 1)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.alter_configs([ConfigResource(ConfigResourceType.GROUP, "clerks", configs={
        "share.auto.offset.reset": "earliest", "share.isolation.level": "read_committed"})], incremental=True)
    admin.close()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "clerk-tx"})
    producer.init_transactions(30)
    for outcome in ("aborted", "committed"):
        producer.begin_transaction()
        for i in range(5):
            producer.produce("ledger", f"{outcome}-{i}".encode(), partition=0)
        producer.flush(30)
        (producer.abort_transaction if outcome == "aborted" else producer.commit_transaction)(30)
    consumer = share_consumer(broker.bootstrap, "clerks", ["ledger"])
    try:
        seen: list = []
        _drain([consumer], seen, lambda: len(seen) >= 5, 30)
        assert sorted(m.value() for _, m in seen) == [f"committed-{i}".encode() for i in range(5)]
        assert list(consumer.poll(1.0)) == []
    finally:
        consumer.close()


def test_the_state_topic_is_pruned_and_the_state_survives_a_restart(broker_factory):
    """With a snapshot after every update and pruning every second, __share_group_state's start
    offset moves past the records no state needs; a restart replays what is left and the group
    continues where it was (acknowledged records are not delivered again)."""
    from confluent_kafka import Consumer, TopicPartition

    broker = broker_factory({"share.coordinator.snapshot.update.records.per.snapshot": "1",
                             "share.coordinator.state.topic.prune.interval.ms": "500"})
    create_topic(broker.bootstrap, "pruned", 1)
    consumer = share_consumer(broker.bootstrap, "pruners", ["pruned"])
    watcher = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watcher"})
    try:
        wait_members(broker, "pruners", 1, [consumer])
        seen: list = []
        for round_ in range(5):
            produce_values(broker.bootstrap, "pruned", 20, 1, prefix=f"r{round_}-")
            _drain([consumer], seen, lambda: len(seen) >= 20 * (round_ + 1), 30)
            consumer.commit_sync(30)
        wait_for(lambda: watcher.get_watermark_offsets(TopicPartition("__share_group_state", 0), 5)[0] > 0, 30,
                 "the state topic pruned")
    finally:
        consumer.close()
        watcher.close()
    broker.stop()
    broker.restart()
    produce_values(broker.bootstrap, "pruned", 10, 1, prefix="after-")
    again = share_consumer(broker.bootstrap, "pruners", ["pruned"])
    try:
        later: list = []
        _drain([again], later, lambda: len(later) >= 10, 30)
        assert sorted(m.value() for _, m in later) == sorted(f"after-{i}".encode() for i in range(10))
        assert list(again.poll(1.0)) == []
    finally:
        again.close()
