"""A pipelining acks=all producer cannot run a leader further ahead of its followers than
``replica.backlog.max.bytes`` (plus the requests its connection had already read).

A 3-broker cluster (real processes, real etcd), a partition (of three) at replication factor 3 and
min.insync.replicas=2. Both followers are SIGSTOPped (their leases and the lag time are long
enough for them to stay in the ISR), and confluent-kafka's producer, which pipelines up to a
million requests on a connection, sends ~12 MB. Kafka reads a connection's next request only
after answering the one before; a Tidelog leader appends pipelined Produce requests at once, so
without a bound it took all of them while nothing could be replicated. With the bound its log
stops growing (the connection is not read; the producer gets no error), and once the followers
are SIGCONTinued everything acknowledged is there, read back with confluent-kafka and kafka-python.
While held, the leader's metrics and HTTP API show the backlog and the held connection; after, zero.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_cluster_fetch_sessions import _metrics
from tests.integration.clients import consume
from tests.integration.test_cli import ok, ok_json
from tests.integration.test_console import page  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.slow

TOPIC = "backlog"
BOUND = 2 << 20  # replica.backlog.max.bytes
REQUEST = 1_000_000  # librdkafka's message.max.bytes: the largest Produce it sends
RECORDS = 12_000
VALUE_BYTES = 1024
HOLDS = "tidelog_replica_backlog_holds_total"
BACKLOG = "tidelog_replica_backlog_bytes_sum"
HELD = "tidelog_replica_backlog_held_connections"


def _log_bytes(broker, index: int) -> int:
    """Bytes of the partition's segment files on ``broker`` (readable while it is stopped)."""
    return sum(path.stat().st_size for path in (Path(broker.data_dir) / f"{TOPIC}-{index}").glob("*.log"))


def _http_partition(broker, index: int) -> dict:
    """The partition as ``broker``'s HTTP API describes it (GET /api/v1/topics/{topic}; while
    the other partitions' leaders are stopped it waits the 5 s it gives them to answer)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/{TOPIC}", timeout=30) as page:
        return json.loads(page.read())["partitions"][index]


def _value(n: int) -> bytes:
    return b"%08d" % n + b"x" * (VALUE_BYTES - 8)


def test_a_pipelining_producer_stops_at_the_backlog_bound_and_loses_nothing(tmp_path, page):
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "replica.backlog.max.bytes": str(BOUND),
                                    "broker.session.timeout.ms": "60000", "replica.lag.time.max.ms": "60000"}).start()
    stopped = []
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        # One partition led by each broker; the test produces to the controller's: the CLI
        # (librdkafka's admin) waits for the controller, which is then not a stopped follower.
        admin.create_topics([NewTopic(TOPIC, 3, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(10)
        partitions = lambda: admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions  # noqa: E731
        wait_until(lambda: all(len(p.isrs) == 3 for p in partitions().values()), 20, message="all three replicas in sync")
        leader_id = admin.describe_cluster().result(10).controller.id
        index = next(i for i, p in partitions().items() if p.leader == leader_id)
        leader = cluster.brokers[leader_id]
        followers = [b for i, b in cluster.brokers.items() if i != leader_id]
        for follower in followers:
            follower.pause()
            stopped.append(follower)
        replicated = max(_log_bytes(f, index) for f in followers)

        acked: list[int] = []
        errors: list[str] = []

        def delivered(err, msg) -> None:
            (errors.append(str(err)) if err is not None else acked.append(int(msg.value()[:8])))

        # No client retries and timeouts far beyond the hold: a request librdkafka timed out and
        # sent again could land after later ones (a non-idempotent producer's retries reorder, in
        # Kafka too), which would hide whether the broker kept the order; now any timeout is an
        # error the test reports, and the order check below is the broker's alone.
        producer = Producer({"bootstrap.servers": leader.bootstrap, "acks": "all", "linger.ms": 5, "retries": 0,
                             "request.timeout.ms": 300000, "socket.timeout.ms": 300000,
                             "message.timeout.ms": 600000})
        for n in range(RECORDS):
            producer.produce(TOPIC, value=_value(n), partition=index, on_delivery=delivered)
            producer.poll(0)
        unreplicated = lambda: _log_bytes(leader, index) - replicated  # noqa: E731
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
        # Where a user looks: the backlog over the bound and the held connection, in the metrics
        # and in the HTTP API's partition view (which the console and `topics describe --http` show).
        metrics = _metrics(leader)
        assert metrics[BACKLOG] > BOUND and metrics[HELD] == 1, (metrics[BACKLOG], metrics[HELD])
        assert metrics[f'tidelog_replica_backlog_bytes{{partition="{index}",topic="{TOPIC}"}}'] == metrics[BACKLOG]
        view = _http_partition(leader, index)
        assert view["backlog_bytes"] > BOUND and view["backlog_held"] >= 1, view
        http = f"http://127.0.0.1:{leader.metrics_port}"
        described = ok_json("topics", "describe", TOPIC, "--http", http, broker=leader)["partitions"][index]
        assert described["backlog_bytes"] > BOUND and described["backlog_held"] >= 1, described
        plain = ok("topics", "describe", TOPIC, "--http", http, broker=leader).splitlines()
        row = plain[plain.index(next(line for line in plain if "BACKLOG_BYTES\tHELD_PRODUCERS" in line)) + 1 + index].split("\t")
        assert int(row[-2]) > BOUND and int(row[-1]) >= 1, row
        page.goto(f"{http}/#/topics/{TOPIC}")
        row = f"[data-testid=partitions-table] [data-row='{index}']"
        page.wait_for_selector(row)
        headers = page.locator("[data-testid=partitions-table] th").all_inner_texts()
        cells = dict(zip(headers, page.locator(row + " td").all_inner_texts()))
        assert cells["Backlog"].endswith("MiB") and int(cells["Held producers"]) >= 1, cells
        assert page.errors == []

        for follower in followers:
            follower.resume()
        stopped.clear()
        assert producer.flush(60) == 0, "records not acknowledged after the followers came back"
        assert not errors, errors[:3]
        assert sorted(acked) == list(range(RECORDS))
        wait_until(lambda: (m := _metrics(leader))[BACKLOG] == 0 and m[HELD] == 0, 20,
                   message="no backlog and no held connection once everything is acknowledged")
        view = _http_partition(leader, index)
        assert view["backlog_bytes"] == 0 and view["backlog_held"] == 0, view
        for client in ("confluent", "kafka-python"):
            read = consume(client, cluster.bootstrap, TOPIC, RECORDS, partition=index, timeout_s=60)
            assert [int(m.value[:8]) for m in read] == list(range(RECORDS)), client
        assert _metrics(leader).get(HOLDS, 0) >= 1
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        for follower in stopped:
            follower.resume()
        cluster.stop()
