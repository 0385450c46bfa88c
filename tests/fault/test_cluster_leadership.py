"""Leadership moves in a 3-broker cluster (real processes, real etcd) while a producer writes:
controlled shutdown on SIGTERM, preferred-leader balancing when the broker returns, the high
watermark checkpoint it leaves behind, a follower that fell below its leader's log start, and
an offset commit that cannot be replicated."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow

SETTINGS = {"leader.imbalance.check.interval.seconds": "1", "offsets.commit.timeout.ms": "1000", "http.port": "0",
            "replica.high.watermark.checkpoint.interval.ms": "100"}


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, SETTINGS).start()
    yield cluster
    cluster.stop()


def partitions(admin: AdminClient, topic: str):
    return admin.list_topics(topic, timeout=5).topics[topic].partitions


def isr_size(admin: AdminClient, topic: str, partition: int = 0) -> int:
    """The ISR size Metadata reports; -1 while the broker asked is unreachable (it was just killed)
    or answers the topic with an error and no partitions: a broker whose etcd watch has not yet
    applied the topic's creation answers it UNKNOWN_TOPIC_OR_PARTITION, or TOPIC_ALREADY_EXISTS when
    the request allows auto-creation (confluent-kafka's admin does) and its create attempt loses to
    the existing topic (seen in a CI run at load ~4, tens of ms after the creation)."""
    try:
        metadata = admin.list_topics(topic, timeout=5).topics[topic]
    except KafkaException:
        return -1
    if partition not in metadata.partitions:
        print(f"isr_size: {topic} answered with no partition {partition}: {metadata.error}", file=sys.stderr)
        return -1
    return len(metadata.partitions[partition].isrs)


def checkpointed(broker) -> dict[tuple[str, int], int]:
    """The high watermarks in a broker's replication-offset-checkpoint (Kafka's file format)."""
    path = broker.data_dir / "replication-offset-checkpoint"
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")
    entries = [line.split() for line in lines[2:] if line]
    assert lines[0] == "0" and int(lines[1]) == len(entries), lines
    return {(topic, int(partition)): int(offset) for topic, partition, offset in entries}


def create(admin: AdminClient, topic: str, count: int, replication_factor: int, **configs):
    """Create a topic and wait until Metadata shows all its partitions led with a full ISR. A broker
    that has not yet applied the creation (its etcd watch is behind the controller's write; Kafka's
    brokers lag the same way) answers the topic with an error and no partitions: that answer must
    not pass for "every partition led" (all() of none is true)."""
    admin.create_topics([NewTopic(topic, count, replication_factor, config=configs)])[topic].result(10)
    wait_until(lambda: (lambda ps: len(ps) == count and all(p.leader > 0 and len(p.isrs) == replication_factor
                                                            for p in ps.values()))(partitions(admin, topic)),
               15, message=f"{topic} led with a full ISR")


class Writer(threading.Thread):
    """acks=all idempotent producer, round-robin over the partitions; acknowledgement times."""

    def __init__(self, bootstrap: str, topic: str, count: int) -> None:
        super().__init__(daemon=True)
        self.topic, self.count = topic, count
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
                                  "topic.metadata.refresh.interval.ms": 1000})
        self.acked: list[tuple[int, float]] = []  # (partition, when)
        self.failed: list[str] = []
        self.stop = threading.Event()

    def delivered(self, err, msg) -> None:
        if err is None:
            self.acked.append((msg.partition(), time.monotonic()))
        else:
            self.failed.append(str(err))

    def run(self) -> None:
        n = 0
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.producer.produce(self.topic, value=b"%d" % n, partition=n % self.count, on_delivery=self.delivered)
                n += 1
            except BufferError:
                pass
            self.producer.poll(0.002)
        self.producer.flush(30)

    def longest_gap(self, partition: int, since: float) -> float:
        times = [since] + [when for p, when in self.acked if p == partition and when >= since]
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


def test_controlled_shutdown_then_preferred_leader_returns(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(admin, "moving", 3, 3, **{"min.insync.replicas": "2"})
    writer = Writer(cluster.bootstrap, "moving", 3)
    writer.start()
    try:
        wait_until(lambda: len(writer.acked) > 300, 20, message="records acknowledged before the shutdown")
        state = partitions(admin, "moving")[0]
        stopping, preferred = state.leader, state.replicas[0]
        assert stopping == preferred
        # The partitions it only follows have a high watermark above 0 here before it stops
        # (checkpointed every 100 ms). Their leaders stay, so it cannot go back below that.
        followed = [(p, s.leader) for p, s in partitions(admin, "moving").items() if s.leader != stopping]
        wait_until(lambda: all(checkpointed(cluster.brokers[stopping]).get(("moving", p), 0) > 0 for p, _ in followed),
                   20, message="followed partitions' high watermarks above 0 in the periodic checkpoint")
        before = checkpointed(cluster.brokers[stopping])
        since = time.monotonic()
        assert cluster.brokers[stopping].stop() == 0  # SIGTERM: controlled shutdown, then exit
        log = cluster.brokers[stopping].log()
        assert "controlled shutdown: leaderships moved" in log, log[-3000:]
        assert all(p.leader != stopping for p in partitions(admin, "moving").values())
        acked = len(writer.acked)
        wait_until(lambda: len(writer.acked) > acked + 300, 20, message="produce after the controlled shutdown")
        gaps = [writer.longest_gap(p, since) for p in range(3)]
        print(f"\ncontrolled shutdown of broker {stopping}: longest gap between acknowledgements per partition "
              + ", ".join(f"{g:.2f} s" for g in gaps))
        assert max(gaps) < 5, gaps

        # The high watermarks it led or followed were checkpointed at its shutdown. The one it led
        # may be 0 there: it followed the new leader for a moment, and a follower takes the
        # leader's high watermark as it is, lower too (Kafka's UnifiedLog.updateHighWatermark),
        # while the new leader's was still its follower's, which can lag by a fetch round.
        after = checkpointed(cluster.brokers[stopping])
        assert {p for (topic, p) in after if topic == "moving"} == {0, 1, 2}, after
        assert all(after[("moving", p)] >= before[("moving", p)] > 0 for p, _ in followed), (before, after)

        # Back again: once in sync, the preferred replica leads again (checked every second).
        cluster.brokers[stopping].restart()
        wait_until(lambda: partitions(admin, "moving")[0].leader == preferred, 20, interval_s=0.2,
                   message="leadership back on the preferred replica")
        assert all(p.leader == p.replicas[0] for p in partitions(admin, "moving").values())
        acked = len(writer.acked)
        wait_until(lambda: len(writer.acked) > acked + 300, 20, message="produce after the preferred leader returned")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        writer.stop.set()
        writer.join(40)
    assert not writer.failed, writer.failed[:5]


def test_follower_below_leader_log_start_starts_again_there(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(admin, "trimmed", 1, 2)
    state = partitions(admin, "trimmed")[0]
    follower = next(r for r in state.replicas if r != state.leader)
    cluster.brokers[follower].kill()
    wait_until(lambda: isr_size(admin, "trimmed") == 1, 15, message="the dead follower out of the ISR")
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "1"})
    for n in range(200):
        producer.produce("trimmed", value=b"%d" % n, partition=0)
    producer.flush(10)
    deleted = admin.delete_records([TopicPartition("trimmed", 0, 150)])
    assert list(deleted.values())[0].result(10).low_watermark == 150
    cluster.brokers[follower].restart()
    wait_until(lambda: isr_size(admin, "trimmed") == 2, 20, message="the follower back in the ISR")
    # Its log starts where the leader's does (checkpointed by the storage layer).
    start_file = cluster.brokers[follower].data_dir / "trimmed-0" / "log-start-offset"
    wait_until(lambda: start_file.exists() and start_file.read_text().strip() == "150", 10,
               message="the follower's log start offset at 150")


def test_commit_the_isr_cannot_take_fails(cluster):
    """Both followers of __consumer_offsets paused: the coordinator does not acknowledge the commit
    (REQUEST_TIMED_OUT after offsets.commit.timeout.ms, as Kafka) and OffsetFetch does not show it."""
    from kio.schema.offset_commit.v7 import request as offset_commit
    from kio.schema.offset_fetch.v5 import request as offset_fetch

    from tests.integration.test_cluster import raw_request
    from tidelog.protocol.errors import ErrorCode

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(admin, "committed", 1, 3)
    wait_until(lambda: isr_size(admin, "__consumer_offsets") == 3, 15, message="offsets fully replicated")
    coordinator = partitions(admin, "__consumer_offsets")[0].leader
    port = cluster.brokers[coordinator].port

    def commit(offset: int):
        request = offset_commit.OffsetCommitRequest(
            group_id="stuck", generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
            topics=(offset_commit.OffsetCommitRequestTopic(name="committed", partitions=(
                offset_commit.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset, committed_metadata=None),)),))
        return raw_request(port, 8, 7, request).topics[0].partitions[0].error_code

    def committed() -> int:
        response = raw_request(port, 9, 5, offset_fetch.OffsetFetchRequest(group_id="stuck", topics=None))
        return response.topics[0].partitions[0].committed_offset

    assert commit(7) == ErrorCode.none
    others = [i for i in cluster.brokers if i != coordinator]
    for i in others:
        cluster.brokers[i].pause()
    try:
        assert commit(9) in (ErrorCode.request_timed_out, ErrorCode.coordinator_not_available)
        assert committed() == 7
    finally:
        for i in others:
            cluster.brokers[i].resume()


def test_partition_reassignment_moves_replicas_under_a_producer(cluster):
    """AlterPartitionReassignments (kafka-python's admin) moves a partition off its leader's
    broker onto the third broker while an acks=all producer writes: no failed delivery, the new
    replica catches up and joins the ISR, leadership moves, the old replica is deleted."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KafkaTopicPartition
    from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(admin, "moved", 1, 2)
    state = partitions(admin, "moved")[0]
    leaving, staying = state.leader, next(r for r in state.replicas if r != state.leader)
    joining = next(i for i in cluster.brokers if i not in state.replicas)
    target = [joining, staying]
    writer = Writer(cluster.bootstrap, "moved", 1)
    writer.start()
    reassigner = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10000)
    tp = KafkaTopicPartition("moved", 0)
    try:
        wait_until(lambda: len(writer.acked) > 500, 20, message="records acknowledged before the move")
        assert reassigner.alter_partition_reassignments({tp: [99, staying]})[tp] is InvalidReplicationAssignmentError
        assert reassigner.alter_partition_reassignments({tp: None})[tp] is NoReassignmentInProgressError
        assert reassigner.alter_partition_reassignments({tp: target}) == {tp: None}
        wait_until(lambda: (lambda p: list(p.replicas) == target and sorted(p.isrs) == sorted(target)
                            and p.leader in target)(partitions(admin, "moved")[0]),
                   20, interval_s=0.1, message="replicas moved, in sync, led by a target replica")
        assert reassigner.list_partition_reassignments() == {}
        acked = len(writer.acked)
        wait_until(lambda: len(writer.acked) > acked + 300, 20, message="produce after the move")
        wait_until(lambda: not (cluster.brokers[leaving].data_dir / "moved-0").exists(), 10,
                   message="the old replica deleted")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        writer.stop.set()
        writer.join(40)
        reassigner.close()
    assert not writer.failed, writer.failed[:5]
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "mover-check", "auto.offset.reset": "earliest"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("moved", 0), timeout=10)
        assert low == 0 and high >= len(writer.acked)
    finally:
        consumer.close()


def scrape(broker) -> dict[tuple[str, tuple], float]:
    """A broker's /metrics as {(name, sorted label items): value}."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_cluster_metrics(cluster):
    """Controller gauge and changes, under-replicated and offline partitions, ISR shrinks and
    expands, replication lag per follower, as a follower dies and comes back."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(admin, "measured", 1, 3)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for n in range(100):
        producer.produce("measured", value=b"%d" % n, partition=0)
    producer.flush(10)
    state = partitions(admin, "measured")[0]
    leader = cluster.brokers[state.leader]
    metrics = {i: scrape(b) for i, b in cluster.brokers.items()}
    assert sum(m[("tidelog_active_controller", ())] for m in metrics.values()) == 1
    assert all(m[("tidelog_controller_changes_total", ())] >= 1 for m in metrics.values())
    assert all(m[("tidelog_under_replicated_partitions", ())] == 0 for m in metrics.values())
    assert all(m[("tidelog_offline_partitions", ())] == 0 for m in metrics.values())
    follower = next(r for r in state.replicas if r != state.leader)
    lag_key = ("tidelog_replica_lag_records", (("partition", "0"), ("replica", str(follower)), ("topic", "measured")))
    wait_until(lambda: scrape(leader).get(lag_key) == 0, 10, message="followers caught up, lag 0")

    cluster.brokers[follower].kill()
    wait_until(lambda: isr_size(admin, "measured") == 2, 15, message="the dead follower out of the ISR")
    for n in range(50):
        producer.produce("measured", value=b"%d" % n, partition=0)
    producer.flush(10)
    after = scrape(leader)
    assert after[("tidelog_under_replicated_partitions", ())] >= 1
    assert after[("tidelog_isr_shrinks_total", ())] >= 1
    assert after[lag_key] >= 50
    cluster.brokers[follower].restart()
    wait_until(lambda: isr_size(admin, "measured") == 3, 20, message="the follower back in the ISR")
    wait_until(lambda: scrape(leader)[("tidelog_isr_expands_total", ())] >= 1 and scrape(leader).get(lag_key) == 0, 10,
               message="an ISR expansion counted and the lag back to 0")
    assert scrape(leader)[("tidelog_under_replicated_partitions", ())] == 0
