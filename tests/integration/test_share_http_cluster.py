"""The HTTP share-group routes in a 3-broker cluster (real processes, real etcd): every broker
answers them at the group coordinator, so an HTTP consumer may use any broker; the coordinator
takes and acknowledges records of the partitions it leads itself and of the others at their
leaders (through their HTTP APIs), so one member gets every record of a topic led by three brokers."""

from __future__ import annotations

import json

import pytest
import requests
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.etcdproc import etcd_binary

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_any_broker_serves_the_share_group_routes_at_the_coordinator(tmp_path):
    etcd_binary()  # skips without etcd
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster", 3, settings={"http.port": "0"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="three registered brokers")
        wait_until(lambda: admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader > 0,
                   30, message="a group coordinator")
        coordinator = admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader
        # six partitions over three brokers: the coordinator leads some of them
        admin.create_topics([NewTopic("queue", 6, 3)])["queue"].result(10)
        wait_until(lambda: all(p.leader > 0 for p in admin.list_topics("queue", timeout=5).topics["queue"].partitions.values()),
                   30, message="queue led")
        partitions = admin.list_topics("queue", timeout=5).topics["queue"].partitions
        assert {info.leader for info in partitions.values()} == set(cluster.brokers)  # led by all three
        others = [n for n in cluster.brokers if n != coordinator]
        via = cluster.brokers[others[0]]
        base = f"http://127.0.0.1:{via.metrics_port}/api/v1"

        def post(path: str, body: dict) -> dict:
            response = requests.post(base + path, json=body, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()

        assert post("/share-groups/workers/receive", {"topic": "queue", "member_id": "w1"})["records"] == []
        post("/topics/queue/records", {"records": [{"value": f"job-{i}", "partition": i % 6} for i in range(30)]})
        taken: list[dict] = []
        wait_until(lambda: taken.extend(post("/share-groups/workers/receive", {
            "topic": "queue", "member_id": "w1", "max_records": 30, "timeout_ms": 1000})["records"]) or len(taken) >= 30,
                   60, message="every record through a broker that is not the coordinator")
        assert sorted(r["value"] for r in taken) == sorted(f"job-{i}" for i in range(30))
        assert {r["delivery_count"] for r in taken} == {1}
        done = post("/share-groups/workers/ack", {"member_id": "w1", "receipts": [r["receipt"] for r in taken]})
        assert len(done["acknowledged"]) == 30 and done["failed"] == []
        views = [requests.get(f"http://127.0.0.1:{b.metrics_port}/api/v1/share-groups/workers", timeout=30).json()
                 for b in cluster.brokers.values()]
        assert all([m["member_id"] for m in v["members"]] == ["w1"] for v in views), views
        assert len({json.dumps(v["members"], sort_keys=True) for v in views}) == 1
        assert [v["lag"] for v in views] == [0, 0, 0]  # the leaders' state, read back by the coordinator
        # every record acknowledged at its leader: nothing comes back
        assert post("/share-groups/workers/receive", {"topic": "queue", "member_id": "w1", "timeout_ms": 500})["records"] == []
    finally:
        cluster.stop()
