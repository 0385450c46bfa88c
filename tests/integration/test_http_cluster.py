"""The HTTP API of a 3-broker cluster (real processes, real etcd): every broker describes the
cluster as Metadata and DescribeCluster do (every live broker, the real controller, each
partition's leader, replicas, ISR and offline state, under-replicated and offline counts), any
broker shows the same offsets and records (read from the leader wherever it is), /ready is 200
on brokers that coordinate no group, and a dead broker shows as offline replicas and offline
partitions everywhere, and as "none" in ``tidelog topics describe``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("http-cluster"), 3, settings={"http.port": "0"}).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def get(broker, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}{path}", timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def api(broker, path: str) -> dict:
    status, body = get(broker, "/api/v1" + path)
    assert status == 200, (broker.broker_id, path, status, body)
    return body


def create(admin, name: str, partitions: int, replication_factor: int) -> None:
    admin.create_topics([NewTopic(name, partitions, replication_factor)])[name].result(10)
    wait_until(lambda: all(p.leader > 0 and len(p.isrs) == replication_factor
                           for p in admin.list_topics(name, timeout=5).topics[name].partitions.values()),
               20, message=f"{name} led with a full ISR")


def metadata_view(admin, topic: str) -> list[tuple[int, int | None, list[int], list[int]]]:
    partitions = admin.list_topics(topic, timeout=5).topics[topic].partitions
    return [(p, partitions[p].leader if partitions[p].leader >= 0 else None, list(partitions[p].replicas), list(partitions[p].isrs))
            for p in sorted(partitions)]


def http_view(broker, topic: str):
    return [(p["partition"], p["leader"], p["replicas"], p["isr"]) for p in api(broker, f"/topics/{topic}")["partitions"]]


def test_every_broker_lists_every_broker_and_the_real_controller(cluster, admin):
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 20, message="three brokers registered")
    described = admin.describe_cluster().result(10)
    for node_id, broker in cluster.brokers.items():
        wait_until(lambda: len(api(broker, "/cluster")["brokers"]) == 3, 20, message=f"broker {node_id} to see 3 brokers")
        view = api(broker, "/cluster")
        assert view["node_id"] == node_id and view["cluster_id"] == described.cluster_id
        assert view["controller_id"] == described.controller.id
        assert [(b["node_id"], b["port"], b["controller"]) for b in view["brokers"]] == [
            (n.id, n.port, n.id == described.controller.id) for n in sorted(described.nodes, key=lambda n: n.id)]
        assert view["offline_partitions"] == 0


def test_ready_on_every_broker_including_those_that_coordinate_no_group(cluster):
    for node_id, broker in cluster.brokers.items():
        wait_until(lambda: get(broker, "/ready")[0] == 200, 30, message=f"broker {node_id} ready")
        assert get(broker, "/ready")[1] == {"status": "ready"}
        assert api(broker, "/cluster")["ready"] is True


def test_any_broker_shows_the_leaders_offsets_and_records(cluster, admin):
    create(admin, "spread", 3, 3)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for partition in range(3):
        for n in range(5 + partition):
            producer.produce("spread", value=b"p%d-%d" % (partition, n), key=b"k", partition=partition,
                             headers=[("h", b"v")])
    assert producer.flush(30) == 0
    expected = metadata_view(admin, "spread")
    assert {leader for _, leader, _, _ in expected} == {1, 2, 3}  # a partition led by each broker

    for node_id, broker in cluster.brokers.items():
        assert http_view(broker, "spread") == expected, node_id
        topic = api(broker, "/topics/spread")
        assert [(p["log_start_offset"], p["high_watermark"]) for p in topic["partitions"]] == [(0, 5), (0, 6), (0, 7)], node_id
        assert topic["records"] == 18 and topic["under_replicated_partitions"] == 0 and topic["offline_partitions"] == 0
        assert all(p["size_bytes"] > 0 for p in topic["partitions"]), topic["partitions"]
        listed = {t["name"]: t for t in api(broker, "/topics")["topics"]}
        assert listed["spread"]["records"] == 18
        for partition in range(3):
            read = api(broker, f"/topics/spread/partitions/{partition}/records?offset=1&limit=3")
            assert [r["value"] for r in read["records"]] == [f"p{partition}-{n}" for n in (1, 2, 3)], (node_id, partition)
            assert read["high_watermark"] == 5 + partition and read["next_offset"] == 4
            assert read["records"][0]["headers"] == [{"key": "h", "value": "v", "value_encoding": "text"}]
        # Past the high watermark: 416 from whichever broker answers.
        status, body = get(broker, "/api/v1/topics/spread/partitions/0/records?offset=99")
        assert (status, body["error_code"]) == (416, "OFFSET_OUT_OF_RANGE"), (node_id, body)


def test_any_broker_takes_records_for_every_partition(cluster, admin):
    """HTTP produce on a broker that does not lead a partition is produced at its leader (acks=all)."""
    import requests

    create(admin, "anywhere", 3, 3)
    expected = {p: [] for p in range(3)}
    for node_id, broker in cluster.brokers.items():
        body = {"records": [{"value": f"via-{node_id}-p{p}", "partition": p, "timestamp": 1_700_000_000_000 + p} for p in range(3)]}
        response = requests.post(f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/anywhere/records", json=body, timeout=60)
        assert response.status_code == 200, response.text
        offsets = response.json()["offsets"]
        assert [(o["partition"], o["timestamp"]) for o in offsets] == [(p, 1_700_000_000_000 + p) for p in range(3)], offsets
        for o in offsets:
            expected[o["partition"]].append((o["offset"], f"via-{node_id}-p{o['partition']}"))
    from tests.integration.clients import consume

    for partition, produced in expected.items():
        assert [offset for offset, _ in produced] == [0, 1, 2]
        records = consume("confluent", cluster.bootstrap, "anywhere", 3, partition=partition)
        assert [(r.offset, r.value.decode()) for r in records] == produced


def test_a_long_poll_on_a_broker_that_does_not_lead_returns_the_new_record(cluster, admin):
    create(admin, "polled", 1, 1)
    leader = metadata_view(admin, "polled")[0][1]
    other = next(b for n, b in cluster.brokers.items() if n != leader)
    # The topic reaches each broker through its own watch of the store: the broker asked may not
    # know it yet when the admin client's broker does (a 404 then, at load 10).
    wait_until(lambda: get(other, "/api/v1/topics/polled")[0] == 200, 20, message="the other broker knows the topic")
    import threading

    result: dict = {}

    def read() -> None:
        try:
            result.update(api(other, "/topics/polled/partitions/0/records?offset=0&timeout_ms=15000"))
        except BaseException as e:  # reported by the test, not lost in the thread
            result["error"] = e

    reader = threading.Thread(target=read)
    reader.start()
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    producer.produce("polled", value=b"late", partition=0)
    undelivered = producer.flush(30)
    del producer  # librdkafka's producer has no close()
    assert undelivered == 0
    reader.join(30)
    assert "error" not in result, result["error"]
    assert [r["value"] for r in result["records"]] == ["late"]


def test_group_routes_answer_alike_on_every_broker(cluster, admin):
    """Groups live on the coordinator (the leader of __consumer_offsets-0); every other broker's API
    forwards group routes there, so every console shows the same groups."""
    import requests
    from confluent_kafka import Consumer, TopicPartition

    create(admin, "grouped", 2, 3)
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "everywhere", "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition("grouped", 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    coordinator = admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader
    views = {}
    for node_id, broker in cluster.brokers.items():
        groups = {g["group_id"]: g for g in api(broker, "/groups")["groups"]}
        assert "everywhere" in groups, (node_id, groups)
        views[node_id] = api(broker, "/groups/everywhere")
        assert api(broker, "/cluster")["groups"] == len(groups)
    assert len({json.dumps(v, sort_keys=True) for v in views.values()}) == 1, views
    # A commit through a broker that is not the coordinator lands at the coordinator.
    other = next(b for n, b in cluster.brokers.items() if n != coordinator)
    url = f"http://127.0.0.1:{other.metrics_port}/api/v1/groups/everywhere/offsets"
    response = requests.post(url, json={"offsets": [{"topic": "grouped", "partition": 1, "offset": 0}]}, timeout=30)
    assert response.status_code == 200, response.text
    committed = {(o["topic"], o["partition"]) for o in api(cluster.brokers[coordinator], "/groups/everywhere")["offsets"]}
    assert committed == {("grouped", 0), ("grouped", 1)}
    # Each broker's console address is listed.
    consoles = {b["node_id"]: b["console"] for b in api(other, "/cluster")["brokers"]}
    assert consoles == {n: f"http://127.0.0.1:{b.metrics_port}/" for n, b in cluster.brokers.items()}


def test_push_subscriptions_are_the_clusters(cluster, admin):
    """Push subscriptions live in etcd: made, changed, paused and deleted through any broker, seen
    alike by every broker; any broker's status adds up every broker's deliveries."""
    import requests

    create(admin, "pushed", 3, 3)
    brokers = list(cluster.brokers.values())
    base = {b.broker_id: f"http://127.0.0.1:{b.metrics_port}/api/v1/push-subscriptions" for b in brokers}
    one, two, three = (b.broker_id for b in brokers)
    created = requests.post(base[one], timeout=30, json={"name": "everywhere", "topics": ["pushed"],
                                                         "endpoint": "http://127.0.0.1:9/hook", "batch_size": 10})
    assert created.status_code == 201, created.text

    def seen(check) -> bool:
        answers = [requests.get(url + "/everywhere", timeout=30) for url in base.values()]
        return all(a.status_code == 200 and check(a.json()) for a in answers)

    wait_until(lambda: seen(lambda s: s["batch_size"] == 10), 20, message="every broker sees the subscription")
    # Each broker delivers the share-partitions it leads; any broker's status adds all of them up.
    wait_until(lambda: seen(lambda s: s["status"]["brokers"] == sorted(base) and s["status"]["unreachable"] == []
                        and sorted(p["partition"] for p in s["status"]["partitions"]) == [0, 1, 2]), 30,
               message="every broker's status counting the three brokers' deliveries")
    assert requests.patch(base[two] + "/everywhere", json={"batch_size": 20}, timeout=30).status_code == 200
    assert requests.post(base[three] + "/everywhere/pause", timeout=30).status_code == 200
    wait_until(lambda: seen(lambda s: s["batch_size"] == 20 and s["status"]["state"] == "paused"), 20,
               message="every broker sees the change and the pause")
    for node_id, url in base.items():
        listed = requests.get(url, timeout=30).json()["subscriptions"]
        assert [(s["name"], s["status"]["brokers"]) for s in listed] == [("everywhere", sorted(base))]
        assert created.json()["secret"] not in json.dumps(listed)
    assert requests.post(base[two], timeout=30, json={"name": "everywhere", "topics": ["pushed"],
                                                      "endpoint": "http://127.0.0.1:9/hook"}).status_code == 409
    assert requests.delete(base[two] + "/everywhere", timeout=30).status_code == 200
    wait_until(lambda: all(requests.get(url, timeout=30).json()["subscriptions"] == [] for url in base.values()), 20,
               message="every broker sees the deletion")


def test_a_dead_broker_shows_as_offline_replicas_everywhere_and_none_in_the_cli(cluster, admin):
    create(admin, "fragile", 3, 1)
    create(admin, "sturdy", 3, 3)
    victim_id = 3
    fragile = metadata_view(admin, "fragile")
    lost = [p for p, leader, _, _ in fragile if leader == victim_id]
    assert lost, fragile
    cluster.brokers[victim_id].kill()
    survivors = {n: b for n, b in cluster.brokers.items() if n != victim_id}
    for node_id, broker in survivors.items():
        wait_until(lambda: len(api(broker, "/cluster")["brokers"]) == 2, 30, message=f"broker {node_id} to drop broker 3")
        wait_until(lambda: api(broker, "/cluster")["under_replicated_partitions"] > 0, 30,
                   message=f"broker {node_id} to count under-replicated partitions")
        view = api(broker, "/cluster")
        assert view["offline_partitions"] >= len(lost)
        topic = api(broker, "/topics/fragile")
        for p in topic["partitions"]:
            if p["partition"] in lost:
                assert (p["leader"], p["offline"], p["offline_replicas"], p["high_watermark"]) == (None, True, [victim_id], None)
        assert topic["offline_partitions"] == len(lost)
        status, body = get(broker, f"/api/v1/topics/fragile/partitions/{lost[0]}/records")
        assert (status, body["error_code"]) == (503, "LEADER_NOT_AVAILABLE"), body
        sturdy = api(broker, "/topics/sturdy")
        assert all(victim_id in p["offline_replicas"] and p["leader"] != victim_id for p in sturdy["partitions"])
        # The same picture from every survivor.
        assert http_view(broker, "fragile") == http_view(survivors[min(survivors)], "fragile")

    # The CLI says "none" for a partition without a leader (null in --json).
    bootstrap = ",".join(b.bootstrap for b in survivors.values())
    result = subprocess.run([sys.executable, "-m", "tidelog", "topics", "describe", "fragile", "-b", bootstrap, "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    partitions = {p["partition"]: p for p in json.loads(result.stdout)["partitions"]}
    assert all(partitions[p]["leader"] is None for p in lost), partitions
    plain = subprocess.run([sys.executable, "-m", "tidelog", "topics", "describe", "fragile", "-b", bootstrap],
                           capture_output=True, text=True, timeout=60).stdout
    rows = [line.split("\t") for line in plain.splitlines() if line.split("\t")[0].isdigit()]
    assert rows and all(row[1] == "none" for row in rows if int(row[0]) in lost), plain
    assert "-1001" not in plain and "-1\t" not in plain
