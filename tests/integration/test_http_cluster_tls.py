"""The HTTP API of a 3-broker cluster served over HTTPS (``http.ssl.enable``; real processes,
real etcd): a broker asks the others' HTTP APIs over https, checking their certificates against
``ssl.truststore.location`` and showing its own (the HTTP side here requires client
certificates), so ``GET /api/v1/cluster`` through any broker lists all three with their
event-loop lag and the group count, their consoles as https:// links, and a group route asked
of a broker that does not coordinate the groups is answered by the coordinator."""

from __future__ import annotations

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.etcdproc import etcd_binary
from tests.integration.security_clients import Pki

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pki):
    etcd_binary()  # skips without etcd
    settings = {"http.port": "0", "http.ssl.enable": "true", **pki.broker_settings(client_auth="required")}
    cluster = Cluster(tmp_path_factory.mktemp("https-cluster"), 3, settings=settings).start()
    yield cluster
    cluster.stop()


def get(pki: Pki, broker, path: str) -> dict:
    response = requests.get(f"https://127.0.0.1:{broker.metrics_port}/api/v1{path}", verify=str(pki.ca_file),
                            cert=(str(pki.client_cert), str(pki.client_key)), timeout=20)
    assert response.status_code == 200, (broker.broker_id, path, response.status_code, response.text)
    return response.json()


def test_the_cluster_view_through_any_broker_lists_all_three_with_their_lag(cluster, pki):
    def complete(broker) -> bool:
        brokers = get(pki, broker, "/cluster")["brokers"]
        return len(brokers) == 3 and all(b["event_loop"] and b["event_loop"]["samples"] >= 1 for b in brokers)

    try:
        for node_id, broker in cluster.brokers.items():
            wait_until(lambda: complete(broker), 30, message=f"broker {node_id}'s view of three brokers with their lag")
            view = get(pki, broker, "/cluster")
            assert [b["node_id"] for b in view["brokers"]] == [1, 2, 3]
            for b in view["brokers"]:
                assert b["event_loop_error"] is None, (node_id, b)
                assert b["event_loop"]["samples"] >= 1 and b["event_loop"]["window_s"] == 60, (node_id, b)
                assert b["console"] == f"https://127.0.0.1:{cluster.brokers[b['node_id']].metrics_port}/", (node_id, b)
            assert view["groups"] is not None, (node_id, view)
    except BaseException:
        print(cluster.logs())
        raise


def test_a_group_route_is_answered_by_the_coordinator_through_every_broker(cluster, pki):
    bootstrap = cluster.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("orders", 1, 3)])["orders"].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce("orders", b"one")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "billing", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe(["orders"])
        message = None
        wait_until(lambda: (message := consumer.poll(0.5)) is not None and message.error() is None, 60,
                   message="the record")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    try:
        for node_id, broker in cluster.brokers.items():
            assert "billing" in [g["group_id"] for g in get(pki, broker, "/groups")["groups"]], node_id
            offsets = get(pki, broker, "/groups/billing")["offsets"]
            assert [(o["topic"], o["committed_offset"]) for o in offsets] == [("orders", 1)], (node_id, offsets)
            assert get(pki, broker, "/cluster")["groups"] == 1, node_id
    except BaseException:
        print(cluster.logs())
        raise


def test_a_broker_whose_certificate_is_not_trusted_shows_as_unanswered_with_why(tmp_path, pki):
    """The brokers trust another CA than the one that signed their certificates: each one's view
    names the others' certificate as the reason their lag is missing, logs it once at WARNING
    and counts it (tidelog_http_peer_requests_total{result="failed"})."""
    etcd_binary()
    stranger = Pki.make(tmp_path / "other-ca")
    settings = {"http.port": "0", "http.ssl.enable": "true", "ssl.keystore.location": str(pki.server_pem),
                "ssl.truststore.location": str(stranger.ca_file)}
    (tmp_path / "mistrust").mkdir()
    cluster = Cluster(tmp_path / "mistrust", 2, settings=settings).start()
    try:
        viewer = cluster.brokers[1]

        def other() -> dict:
            response = requests.get(f"https://127.0.0.1:{viewer.metrics_port}/api/v1/cluster", verify=str(pki.ca_file),
                                    timeout=20)
            assert response.status_code == 200, response.text
            return {b["node_id"]: b for b in response.json()["brokers"]}.get(2, {})

        wait_until(lambda: other().get("event_loop_error"), 30, message="broker 2 in broker 1's view, unanswered")
        assert other()["event_loop"] is None and "certificate" in other()["event_loop_error"], other()
        warnings = [line for line in viewer.log().splitlines()
                    if "HTTP API of the broker at" in line and "did not answer" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0] and "certificate" in warnings[0], warnings
        metrics = requests.get(f"https://127.0.0.1:{viewer.metrics_port}/metrics", verify=str(pki.ca_file), timeout=20).text
        assert 'tidelog_http_peer_requests_total{result="failed",what="broker"}' in metrics, metrics
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
