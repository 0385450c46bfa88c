"""Where a user sees a delay topic's movers (issue 14): GET /api/v1/topics/{name} (its ``delay``
block, checked against the OpenAPI document) and GET .../delay, ``tidelog topics describe --http``
and the gauge tidelog_delay_topic_waiting_records, and the console's topic page. Records produced
with confluent-kafka (tidelog-delay-ms) and kafka-python (tidelog-deliver-at) wait, then are moved
when due."""

from __future__ import annotations

import json
import time

import pytest
import requests
from confluent_kafka import Producer
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_delay_topic_cluster import create_apart
from tests.integration.test_cli import ok, tidelog
from tests.integration.test_console import page  # noqa: F401 - the browser fixture
from tests.integration.test_delay_topic import TIMEOUT_S, create
from tests.integration.test_http_api import HttpApi

PER_CLIENT = 40
DELAY_MS = 10_000  # long enough to look at the waiting records on a loaded machine


def gauge(broker, partition: int) -> float | None:
    text = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text
    line = f'tidelog_delay_topic_waiting_records{{partition="{partition}",topic="delays"}} '
    found = [row[len(line):] for row in text.splitlines() if row.startswith(line)]
    return float(found[0]) if found else None


def test_a_delay_topics_movers_are_shown_by_the_http_api_the_cli_and_a_gauge(broker):
    create(broker.bootstrap, {"target": {}})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    created = admin.create_topics(
        [NewTopic("delays", 2, 1, config={"tidelog.delay.target.topic": "target"})])
    created["delays"].result(TIMEOUT_S)
    http = HttpApi(broker)

    produced_at = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for n in range(PER_CLIENT):
        producer.produce("delays", partition=n % 2, value=b"c%d" % n, headers={"tidelog-delay-ms": str(DELAY_MS)})
    assert producer.flush(TIMEOUT_S) == 0
    legacy = KafkaProducer(bootstrap_servers=broker.bootstrap)
    deliver_at = produced_at + DELAY_MS
    for n in range(PER_CLIENT):
        legacy.send("delays", partition=n % 2, value=b"k%d" % n,
                    headers=[("tidelog-deliver-at", str(deliver_at).encode())])
    legacy.flush(TIMEOUT_S)
    legacy.close()
    total = 2 * PER_CLIENT

    def delay_view(field: str, wanted: int):
        """The topic's delay block once ``field`` sums to ``wanted`` over its partitions (else None)."""
        view = http.call("GET", "/topics/{topic}", 200, topic="delays")["delay"]
        return view if sum(p[field] or 0 for p in view["partitions"]) == wanted else None

    # Read by the mover, not due yet: all waiting (the first due time is DELAY_MS after producing).
    view = wait_until(lambda: delay_view("waiting_records", total), TIMEOUT_S, 0.1, "the delayed records counted as waiting")
    assert int(time.time() * 1000) < produced_at + DELAY_MS, "the machine was too slow to see them waiting"
    assert view["target_topic"] == "target" and [p["partition"] for p in view["partitions"]] == [0, 1]
    for p in view["partitions"]:
        assert p["waiting_records"] == PER_CLIENT
        assert (p["state"], p["moved_records"], p["lost_records"]) == ("waiting", 0, 0)
        assert (p["target_topic"], p["target_partition"], p["target_local"]) == ("target", 0, True)
        assert p["target_leader"] == p["leader"] is not None
        assert produced_at + DELAY_MS <= p["next_due_ms"] <= int(time.time() * 1000) + DELAY_MS
    assert http.call("GET", "/topics/{topic}/delay", 200, topic="delays")["target_topic"] == "target"
    assert http.call("GET", "/topics/{topic}", 200, topic="target")["delay"] is None
    assert "not a delay topic" in http.error("GET", "/topics/{topic}/delay", 400, "INVALID_REQUEST", topic="target")
    assert gauge(broker, 0) == gauge(broker, 1) == PER_CLIENT

    described = json.loads(ok("topics", "describe", "delays", "--http", http.root, "--json", broker=broker))
    assert [p["waiting_records"] for p in described["delay"]["partitions"]] == [PER_CLIENT, PER_CLIENT]
    text = ok("topics", "describe", "delays", "--http", http.root, broker=broker)
    rows = [line.split("\t") for line in text.splitlines()]
    header = next(r for r in rows if r[0] == "PARTITION" and "WAITING" in r)
    movers = [dict(zip(header, r)) for r in rows[rows.index(header) + 1:rows.index(header) + 3]]
    assert [(m["TARGET"], m["TARGET_LEADER"], m["STATE"], m["WAITING"], m["MOVED"]) for m in movers] == \
        [("target-0", "here", "waiting for next due", str(PER_CLIENT), "0")] * 2, text
    assert "--http URL" in tidelog("topics", "describe", "delays", broker=broker).stderr.decode()  # where to look

    # Due: moved, nothing waiting; how late the last move was. moved_records counts a batch once the
    # target took it; its round ends (idle, the progress committed) only after the commit that follows.
    def moved_and_idle():
        view = delay_view("moved_records", total)
        return view if view is not None and all(p["state"] == "idle" for p in view["partitions"]) else None
    view = wait_until(moved_and_idle, DELAY_MS / 1000 + 30, 0.1, "the delayed records moved, the rounds ended")
    assert int(time.time() * 1000) >= produced_at + DELAY_MS
    for p in view["partitions"]:
        assert (p["waiting_records"], p["next_due_ms"], p["state"]) == (0, None, "idle")
        assert p["last_move_ms"] >= produced_at + DELAY_MS and p["last_move_late_ms"] >= 0
        # its progress, committed to __consumer_offsets after the moves (a new topic: it started from its start)
        assert (p["committed_offset"], p["recovered_from"], p["commit_error"]) == (PER_CLIENT, "start", None)
        assert p["committed_ms"] >= produced_at
    assert http.call("GET", "/topics/{topic}", 200, topic="target")["records"] == total
    assert gauge(broker, 0) == gauge(broker, 1) == 0
    recoveries = f'tidelog_delay_topic_recoveries_total{{source="start",topic="delays"}} '
    assert any(row.startswith(recoveries) and float(row[len(recoveries):]) >= 2 for row in
               requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text.splitlines())
    described = json.loads(ok("topics", "describe", "delays", "--http", http.root, "--json", broker=broker))
    assert [(p["moved_records"], p["state"]) for p in described["delay"]["partitions"]] == [(PER_CLIENT, "idle")] * 2
    text = ok("topics", "describe", "delays", "--http", http.root, broker=broker)
    rows = [line.split("\t") for line in text.splitlines()]
    header = next(r for r in rows if r[0] == "PARTITION" and "WAITING" in r)
    movers = [dict(zip(header, r)) for r in rows[rows.index(header) + 1:rows.index(header) + 3]]
    assert [m["COMMITTED_(FROM)"] for m in movers] == [f"{PER_CLIENT} (start)"] * 2, text
    # Any Kafka tool sees the movers' progress as the offsets of the group __tidelog-delay-mover.
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("__tidelog-delay-mover")])
    committed = offsets["__tidelog-delay-mover"].result(TIMEOUT_S).topic_partitions
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in committed) == [("delays", 0, PER_CLIENT),
                                                                               ("delays", 1, PER_CLIENT)]


@pytest.mark.slow
def test_the_console_topic_page_shows_the_delay_movers(broker, page):
    create(broker.bootstrap, {"target": {}, "delays": {"tidelog.delay.target.topic": "target"}})
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for n in range(5):
        producer.produce("delays", value=b"%d" % n, headers={"tidelog-delay-ms": "600000"})
    assert producer.flush(TIMEOUT_S) == 0
    api = f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/delays"
    wait_until(lambda: [requests.get(api, timeout=10).json()["delay"]["partitions"][0][field]
                        for field in ("waiting_records", "committed_offset")] == [5, 5],
               TIMEOUT_S, 0.1, "the delayed records counted as waiting, the progress committed")
    page.goto(f"http://127.0.0.1:{broker.metrics_port}/#/topics/delays")
    row = "[data-testid=delay-table] [data-row='0']"
    page.wait_for_selector(row)
    cells = page.locator(row + " td").all_inner_texts()
    assert cells[:4] == ["0", "target-0 (led here)", "waiting for next due", "5"], cells
    assert cells[5:7] == ["0", "0"], cells  # moved, lost
    assert cells[8] == "5 (started from start)", cells  # the progress committed (read up to 5)
    assert page.errors == []


@pytest.mark.slow
def test_in_a_cluster_each_partitions_movers_status_comes_from_its_leader(tmp_path):
    """The delay partition led by broker 1, its target by broker 2: brokers 2 and 3 (not leading it)
    show broker 1's mover, through broker 1's HTTP API."""
    cluster = Cluster(tmp_path, 3, {"http.port": "0"}).start()
    try:
        create_apart(cluster)
        producer = Producer({"bootstrap.servers": cluster.bootstrap})
        for n in range(20):
            producer.produce("delays", value=b"%d" % n, headers={"tidelog-delay-ms": str(DELAY_MS)})
        assert producer.flush(TIMEOUT_S) == 0
        apis = {node_id: HttpApi(broker) for node_id, broker in cluster.brokers.items()}

        def delay_partition(node_id: int, field: str, wanted: int) -> dict | None:
            view = apis[node_id].call("GET", "/topics/{topic}", 200, topic="delays")["delay"]
            return view["partitions"][0] if view["partitions"][0][field] == wanted else None

        for node_id in (2, 3, 1):
            p = wait_until(lambda: delay_partition(node_id, "waiting_records", 20), TIMEOUT_S, 0.1,
                           f"broker {node_id} showing the records waiting")
            assert (p["leader"], p["target_leader"], p["target_local"], p["moved_records"]) == (1, 2, False, 0), p
        described = json.loads(ok("topics", "describe", "delays", "--http", apis[3].root, "--json",
                                  "--bootstrap-server", cluster.bootstrap))
        assert [(p["leader"], p["waiting_records"]) for p in described["delay"]["partitions"]] == [(1, 20)]
        for node_id in (3, 2):
            # moved_records counts a batch once the target took it; the round ends after its commit
            # (to __consumer_offsets, at another broker: 5 records were still "moving" at load 9)
            p = wait_until(lambda: (q := delay_partition(node_id, "moved_records", 20)) is not None and q["state"] == "idle"
                           and q, DELAY_MS / 1000 + 30, 0.1, f"broker {node_id} showing the records moved, the round ended")
            assert (p["leader"], p["waiting_records"], p["state"]) == (1, 0, "idle"), p
    finally:
        cluster.stop()


def test_a_failing_mover_shows_since_when_and_why_and_a_missing_target_shows(broker):
    """The target refuses the appends (min.insync.replicas above its replicas): the mover is
    failing since a time, with the error; once the target takes them, moved and idle. A delay
    topic naming a topic that does not exist has no target partition."""
    create(broker.bootstrap, {"strict": {"min.insync.replicas": "2"},
                              "stuck": {"tidelog.delay.target.topic": "strict"},
                              "orphan": {"tidelog.delay.target.topic": "nowhere"}})
    http = HttpApi(broker)
    before = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for n in range(3):
        producer.produce("stuck", value=b"%d" % n, headers={"tidelog-delay-ms": "0"})
    assert producer.flush(TIMEOUT_S) == 0

    def partition(topic: str, state: str) -> dict | None:
        p = http.call("GET", "/topics/{topic}/delay", 200, topic=topic)["partitions"][0]
        return p if p["state"] == state else None

    p = wait_until(lambda: partition("stuck", "failing"), TIMEOUT_S, 0.1, "the mover failing")
    assert before <= p["failing_since_ms"] <= int(time.time() * 1000) and p["failures"] >= 1
    assert "NOT_ENOUGH_REPLICAS" in p["last_error"].upper() and p["moved_records"] == 0, p
    text = ok("topics", "describe", "stuck", "--http", http.root, broker=broker)
    assert "failing since " in text and "NOT_ENOUGH_REPLICAS" in text.upper(), text
    http.call("PUT", "/topics/{topic}/configs", 200, topic="strict", json_body={"configs": {"min.insync.replicas": None}})
    p = wait_until(lambda: partition("stuck", "idle"), TIMEOUT_S, 0.1, "the mover moving again")
    assert (p["moved_records"], p["waiting_records"], p["failing_since_ms"], p["last_error"]) == (3, 0, None, None), p
    p = http.call("GET", "/topics/{topic}/delay", 200, topic="orphan")["partitions"][0]
    assert (p["state"], p["target_topic"], p["target_partition"], p["target_leader"]) == ("no_target", "nowhere", None, None)


@pytest.mark.parametrize("per_partition", [True, False])
def test_the_waiting_gauge_honours_metrics_per_partition_enable(broker_factory, per_partition):
    """tidelog_delay_topic_waiting_records is labelled by partition: left out with the other
    per-partition series when metrics.per.partition.enable=false; the HTTP API still counts."""
    broker = broker_factory({"metrics.per.partition.enable": str(per_partition).lower()})
    create(broker.bootstrap, {"target": {}, "delays": {"tidelog.delay.target.topic": "target"}})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for n in range(5):
        producer.produce("delays", value=b"%d" % n, headers={"tidelog-delay-ms": "600000"})
    assert producer.flush(TIMEOUT_S) == 0
    http = HttpApi(broker)
    wait_until(lambda: http.call("GET", "/topics/{topic}/delay", 200, topic="delays")["partitions"][0]["waiting_records"]
               == 5, TIMEOUT_S, 0.1, "the delayed records counted as waiting")
    assert gauge(broker, 0) == (5 if per_partition else None)
