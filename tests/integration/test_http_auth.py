"""The HTTP side secured (issue 16): open until the broker has users, then HTTP Basic against the
same users or a bearer token; /health and /metrics open by setting; the broker's ACLs applied
to the caller; HTTPS with the broker's certificate."""

from __future__ import annotations

import pytest
import requests

from tests.brokerproc import wait_until
from tests.integration.security_clients import Pki
from tests.integration.test_sasl import SECRET, tidelog

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def _api(broker, path: str = "/api/v1/topics", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{broker.metrics_port}{path}"


def test_open_until_users_exist_then_basic_or_bearer(broker_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# ops dashboards\nsekrit-token-1 User:dashboard\n")
    tokens.chmod(0o600)
    broker = broker_factory({"http.bearer.tokens.file": str(tokens)})
    assert requests.get(_api(broker), timeout=10).status_code == 401  # a tokens file: credentials needed
    broker.stop()
    broker = broker_factory({}, name="no-users")
    assert requests.get(_api(broker), timeout=10).status_code == 200  # no users: open, as before
    assert tidelog("users", "create", "alice", "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    anonymous = requests.get(_api(broker), timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith('Basic realm="tidelog"')
    assert anonymous.json()["error_code"] == "AUTHENTICATION_REQUIRED"
    assert requests.get(_api(broker), auth=("alice", SECRET), timeout=10).status_code == 200
    wrong = requests.get(_api(broker), auth=("alice", "not-it"), timeout=10)
    assert wrong.status_code == 401
    assert "HTTP authentication failed from 127.0.0.1 (basic, user 'alice')" in broker.log()
    assert "not-it" not in broker.log()
    assert requests.get(_api(broker, "/health"), timeout=10).status_code == 200
    assert requests.get(_api(broker, "/metrics"), timeout=10).status_code == 200
    assert requests.get(_api(broker, "/"), timeout=10).status_code == 401  # the console asks too


def test_bearer_tokens_and_closed_metrics(broker_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("sekrit-token-1 User:dashboard\n")
    tokens.chmod(0o600)
    broker = broker_factory({"http.bearer.tokens.file": str(tokens), "http.health.metrics.open": "false"})
    assert requests.get(_api(broker), headers={"Authorization": "Bearer sekrit-token-1"}, timeout=10).status_code == 200
    assert requests.get(_api(broker), headers={"Authorization": "Bearer guess"}, timeout=10).status_code == 401
    assert requests.get(_api(broker, "/metrics"), timeout=10).status_code == 401
    assert requests.get(_api(broker, "/metrics"), headers={"Authorization": "Bearer sekrit-token-1"},
                        timeout=10).status_code == 200


def test_acls_apply_to_the_api(broker_factory):
    # The Kafka listener is PLAINTEXT (ANONYMOUS, a super user here, administers); HTTP callers
    # authenticate, and their principal is held to the ACLs.
    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:admin;User:ANONYMOUS"})
    for user in ("admin", "alice", "bob"):
        assert tidelog("users", "create", user, "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    admin = requests.Session()
    admin.auth = ("admin", SECRET)
    assert admin.post(_api(broker), json={"name": "events", "partitions": 1}, timeout=10).status_code in (200, 201)
    denied_create = requests.post(_api(broker), json={"name": "other", "partitions": 1}, auth=("alice", SECRET), timeout=10)
    assert denied_create.status_code == 403
    assert tidelog("acls", "add", "events", "--topic", "--principal", "User:alice", "--operation", "write",
                   "-b", broker.bootstrap).returncode == 0
    records = {"records": [{"value": "hello"}]}
    assert requests.post(_api(broker, "/api/v1/topics/events/records"), json=records, auth=("alice", SECRET),
                         timeout=10).status_code == 200
    forbidden = requests.post(_api(broker, "/api/v1/topics/events/records"), json=records, auth=("bob", SECRET), timeout=10)
    assert forbidden.status_code == 403 and forbidden.json()["error_code"] == "TOPIC_AUTHORIZATION_FAILED"
    assert requests.get(_api(broker, "/api/v1/topics/events"), auth=("bob", SECRET), timeout=10).status_code == 403
    assert requests.get(_api(broker, "/api/v1/topics/events"), auth=("alice", SECRET), timeout=10).status_code == 200


def test_https(broker_factory, tmp_path):
    pki = Pki.make(tmp_path / "pki")
    broker = broker_factory({"http.ssl.enable": "true", "ssl.keystore.location": str(pki.server_pem)})
    assert requests.get(_api(broker, "/health", "https"), verify=str(pki.ca_file), timeout=10).status_code == 200
    assert requests.get(_api(broker, scheme="https"), verify=str(pki.ca_file), timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(_api(broker, "/health"), timeout=10)  # plain HTTP is not served


def _set_quota(broker, user: str, rate: float) -> None:
    from kio.schema.alter_client_quotas.v1 import request as quotas

    from tests.integration.share_clients import request

    answer = request(broker.bootstrap, 49, 1, quotas.AlterClientQuotasRequest(validate_only=False, entries=(
        quotas.EntryData(entity=(quotas.EntityData(entity_type="user", entity_name=user),),
                         ops=(quotas.OpData(key="producer_byte_rate", value=rate, remove=False),)),)))
    assert [e.error_code for e in answer.entries] == [0]


def test_share_group_transaction_and_security_routes_are_held_to_the_acls(broker_factory):
    """As the Kafka API checks them: a share group's routes READ (DESCRIBE, DELETE) on the group and
    READ on each topic they read or acknowledge; the listings and the read-only security routes
    DESCRIBE on the cluster. The security routes never show a secret."""
    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:admin;User:ANONYMOUS"})
    for name in ("admin", "alice", "bob", "carol", "ops"):
        assert tidelog("users", "create", name, "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    for args in (("jobs", "--topic", "--principal", "User:alice", "--operation", "read"),
                 ("jobs", "--topic", "--principal", "User:bob", "--operation", "read"),
                 ("workers", "--group", "--principal", "User:alice", "--operation", "read"),
                 ("workers", "--group", "--principal", "User:bob", "--operation", "read"),
                 ("--cluster", "--principal", "User:ops", "--operation", "describe")):
        assert tidelog("acls", "add", *args, "-b", broker.bootstrap).returncode == 0
    assert requests.post(_api(broker), json={"name": "jobs", "partitions": 1}, auth=("admin", SECRET),
                         timeout=10).status_code == 201
    assert requests.post(_api(broker, "/api/v1/topics/jobs/records"), json={"records": [{"value": "a"}]},
                         auth=("admin", SECRET), timeout=10).status_code == 200
    _set_quota(broker, "alice", 1048576)

    def receive(name: str) -> requests.Response:
        return requests.post(_api(broker, "/api/v1/share-groups/workers/receive"), auth=(name, SECRET), timeout=30,
                             json={"topic": "jobs", "member_id": f"{name}-member", "timeout_ms": 0})

    assert receive("alice").status_code == 200
    assert requests.get(_api(broker, "/api/v1/share-groups/workers"), auth=("alice", SECRET), timeout=10).status_code == 200
    no_group = receive("carol")
    assert (no_group.status_code, no_group.json()["error_code"]) == (403, "GROUP_AUTHORIZATION_FAILED")
    # bob joined while he could read jobs; without READ his acknowledgements and receives are refused
    assert receive("bob").status_code == 200
    assert tidelog("acls", "remove", "jobs", "--topic", "--principal", "User:bob", "-b", broker.bootstrap).returncode == 0
    wait_until(lambda: receive("bob").status_code == 403, message="bob's READ on jobs gone")
    assert receive("bob").json()["error_code"] == "TOPIC_AUTHORIZATION_FAILED"
    acked = requests.post(_api(broker, "/api/v1/share-groups/workers/ack"), auth=("bob", SECRET), timeout=10,
                          json={"member_id": "bob-member", "receipts": ["jobs/0/0"]})
    assert acked.status_code == 200 and [f["error_code"] for f in acked.json()["failed"]] == ["TOPIC_AUTHORIZATION_FAILED"]
    left = requests.delete(_api(broker, "/api/v1/share-groups/workers/members/bob-member"), auth=("bob", SECRET), timeout=10)
    assert left.status_code == 200
    denied_delete = requests.delete(_api(broker, "/api/v1/share-groups/workers"), auth=("alice", SECRET), timeout=10)
    assert (denied_delete.status_code, denied_delete.json()["error_code"]) == (403, "GROUP_AUTHORIZATION_FAILED")

    for path in ("/api/v1/transactions", "/api/v1/share-groups", "/api/v1/users", "/api/v1/acls", "/api/v1/quotas"):
        assert requests.get(_api(broker, path), auth=("ops", SECRET), timeout=10).status_code == 200, path
        refused = requests.get(_api(broker, path), auth=("alice", SECRET), timeout=10)
        assert (refused.status_code, refused.json()["error_code"]) == (403, "CLUSTER_AUTHORIZATION_FAILED"), path
    users = requests.get(_api(broker, "/api/v1/users"), auth=("ops", SECRET), timeout=10)
    assert {u["name"]: [m["mechanism"] for m in u["mechanisms"]] for u in users.json()["users"]}["alice"] == [
        "SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert not any(word in users.text for word in ("salt", "stored_key", "server_key", SECRET))
    acls = requests.get(_api(broker, "/api/v1/acls"), auth=("ops", SECRET), timeout=10).json()
    assert acls["enabled"] and acls["super_users"] == ["User:ANONYMOUS", "User:admin"]
    assert {"resource_type": "CLUSTER", "name": "kafka-cluster", "pattern_type": "LITERAL", "principal": "User:ops",
            "host": "*", "operation": "DESCRIBE", "permission_type": "ALLOW"} in acls["acls"]
    assert requests.get(_api(broker, "/api/v1/quotas"), auth=("ops", SECRET), timeout=10).json()["quotas"] == [
        {"entity": {"user": "alice"}, "values": {"producer_byte_rate": 1048576.0}}]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_secured_cluster_answers_group_routes_at_the_coordinator_as_the_caller(tmp_path):
    """Three brokers with users and ACLs: a broker that is not the group coordinator forwards the
    caller's credentials, so the coordinator (and the leaders of the share-partitions) authenticate
    and authorise the same user; anonymous callers get 401 everywhere."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.clusterproc import Cluster
    from tests.etcdproc import etcd_binary

    etcd_binary()  # skips without etcd
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster", 3, settings={
        "http.port": "0", "authorizer.class.name": AUTHORIZER, "super.users": "User:admin;User:ANONYMOUS"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="three registered brokers")
        wait_until(lambda: admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader > 0,
                   30, message="a group coordinator")
        coordinator = admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader
        admin.create_topics([NewTopic("queue", 6, 3)])["queue"].result(10)
        wait_until(lambda: all(p.leader > 0 for p in admin.list_topics("queue", timeout=5).topics["queue"].partitions.values()),
                   30, message="queue led")
        bootstrap = cluster.brokers[coordinator].bootstrap
        for name in ("admin", "alice", "ops"):
            assert tidelog("users", "create", name, "--password", SECRET, "-b", bootstrap).returncode == 0
        for args in (("queue", "--topic", "--principal", "User:alice", "--operation", "read"),
                     ("workers", "--group", "--principal", "User:alice", "--operation", "read"),
                     ("--cluster", "--principal", "User:ops", "--operation", "describe")):
            assert tidelog("acls", "add", *args, "-b", bootstrap).returncode == 0
        via = cluster.brokers[next(n for n in cluster.brokers if n != coordinator)]
        base = f"http://127.0.0.1:{via.metrics_port}/api/v1"
        wait_until(lambda: requests.get(base + "/groups", timeout=30).status_code == 401, 30,
                   message="the users known to every broker")
        assert requests.get(base + "/groups", auth=("ops", SECRET), timeout=30).status_code == 200
        # the overview's group count, asked of the coordinator with the caller's credentials (was null)
        assert requests.get(base + "/cluster", auth=("ops", SECRET), timeout=30).json()["groups"] == 0
        refused = requests.get(base + "/groups", auth=("alice", SECRET), timeout=30)
        assert (refused.status_code, refused.json()["error_code"]) == (403, "CLUSTER_AUTHORIZATION_FAILED")
        produced = requests.post(base + "/topics/queue/records", auth=("admin", SECRET), timeout=60, json={
            "records": [{"value": f"job-{i}", "partition": i % 6} for i in range(12)]})
        assert produced.status_code == 200, produced.text

        def receive() -> list:
            answer = requests.post(base + "/share-groups/workers/receive", auth=("alice", SECRET), timeout=60, json={
                "topic": "queue", "member_id": "w1", "max_records": 12, "timeout_ms": 500})
            assert answer.status_code == 200, answer.text
            return answer.json()["records"]
        # share.auto.offset.reset is latest: records produced after the member joined
        receive()
        requests.post(base + "/topics/queue/records", auth=("admin", SECRET), timeout=60, json={
            "records": [{"value": f"late-{i}", "partition": i % 6} for i in range(12)]}).raise_for_status()
        taken: list = []
        wait_until(lambda: taken.extend(receive()) or len(taken) >= 12, 60, message="every record, from every leader")
        assert sorted(r["value"] for r in taken) == sorted(f"late-{i}" for i in range(12))
        done = requests.post(base + "/share-groups/workers/ack", auth=("alice", SECRET), timeout=60, json={
            "member_id": "w1", "receipts": [r["receipt"] for r in taken]}).json()
        assert len(done["acknowledged"]) == 12 and done["failed"] == [], done
    finally:
        cluster.stop()
