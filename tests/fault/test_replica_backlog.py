"""A pipelining acks=all producer cannot run a leader further ahead of its followers than
``replica.backlog.max.bytes`` (plus the requests its connection had already read).

A 3-broker cluster (real processes, real etcd), one partition at replication factor 3 and
min.insync.replicas=2. Both followers are SIGSTOPped (their leases and the lag time are long
enough for them to stay in the ISR), and confluent-kafka's producer, which pipelines up to a
million requests on a connection, sends ~12 MB. Kafka reads a connection's next request only
after answering the one before; a Tidelog leader appends pipelined Produce requests at once, so
without a bound it took all of them while nothing could be replicated. With the bound its log
stops growing (the connection is not read; the producer gets no error), and once the followers
are SIGCONTinued everything acknowledged is there, read back with confluent-kafka and kafka-python.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_cluster_fetch_sessions import _metrics
from tests.integration.clients import consume

pytestmark = pytest.mark.slow

TOPIC = "backlog"
BOUND = 2 << 20  # replica.backlog.max.bytes
REQUEST = 1_000_000  # librdkafka's message.max.bytes: the largest Produce it sends
RECORDS = 12_000
VALUE_BYTES = 1024
HOLDS = "tidelog_replica_backlog_holds_total"


def _log_bytes(broker) -> int:
    """Bytes of the partition's segment files on ``broker`` (readable while it is stopped)."""
    return sum(path.stat().st_size for path in (Path(broker.data_dir) / f"{TOPIC}-0").glob("*.log"))


def _value(n: int) -> bytes:
    return b"%08d" % n + b"x" * (VALUE_BYTES - 8)


def test_a_pipelining_producer_stops_at_the_backlog_bound_and_loses_nothing(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "replica.backlog.max.bytes": str(BOUND),
                                    "broker.session.timeout.ms": "60000", "replica.lag.time.max.ms": "60000"}).start()
    stopped = []
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(10)
        partition = lambda: admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0]  # noqa: E731
        wait_until(lambda: len(partition().isrs) == 3, 20, message="all three replicas in sync")
        leader_id = partition().leader
        leader = cluster.brokers[leader_id]
        followers = [b for i, b in cluster.brokers.items() if i != leader_id]
        for follower in followers:
            follower.pause()
            stopped.append(follower)
        replicated = max(_log_bytes(f) for f in followers)

        acked: list[int] = []
        errors: list[str] = []

        def delivered(err, msg) -> None:
            (errors.append(str(err)) if err is not None else acked.append(int(msg.value()[:8])))

        producer = Producer({"bootstrap.servers": leader.bootstrap, "acks": "all", "linger.ms": 5,
                             "request.timeout.ms": 60000, "message.timeout.ms": 120000})
        for n in range(RECORDS):
            producer.produce(TOPIC, value=_value(n), partition=0, on_delivery=delivered)
            producer.poll(0)
        unreplicated = lambda: _log_bytes(leader) - replicated  # noqa: E731
        # The leader holds the connection, or (without the bound) has taken far more than it.
        wait_until(lambda: producer.poll(0) >= 0 and (_metrics(leader).get(HOLDS, 0) >= 1
                                                       or unreplicated() > BOUND + 2 * REQUEST),
                   30, message="the leader holding the producer's connection")
        # While the followers stay stopped, the producer keeps pushing and the leader reads nothing.
        most = 0
        for _ in range(20):
            producer.poll(0.05)
            most = max(most, unreplicated())
        assert most <= BOUND + 2 * REQUEST, f"{most:,} bytes above the followers' copies, bound {BOUND:,}"
        assert not acked and not errors, (len(acked), errors[:3])  # nothing can be acknowledged, nothing failed
        assert len(producer) > RECORDS // 2  # most records still wait in the client, not in the leader

        for follower in followers:
            follower.resume()
        stopped.clear()
        assert producer.flush(60) == 0, "records not acknowledged after the followers came back"
        assert not errors, errors[:3]
        assert sorted(acked) == list(range(RECORDS))
        for client in ("confluent", "kafka-python"):
            read = consume(client, cluster.bootstrap, TOPIC, RECORDS, timeout_s=60)
            assert [int(m.value[:8]) for m in read] == list(range(RECORDS)), client
        assert _metrics(leader).get(HOLDS, 0) >= 1
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        for follower in stopped:
            follower.resume()
        cluster.stop()
