"""Push subscriptions over the HTTP API (issue 15; docs/push.md) against a real broker: create, list,
describe, change, pause, resume, delete; every answer checked against the OpenAPI document; bad
fields named, 404 and 409; the signing secret shown once and never listed; subscriptions kept across
a broker restart; with ACLs on, creating one needs READ on its topics and on its share group."""

from __future__ import annotations

import pytest
import requests

from tests.integration.test_http_api import HttpApi
from tests.integration.test_http_auth import AUTHORIZER
from tests.integration.test_sasl import SECRET, tidelog

# Deliveries to it are refused at once (nothing listens on loopback's port 9, discard): the
# subscription exists and fails quietly with back-off; these tests are about its administration.
ENDPOINT = "http://127.0.0.1:9/hook"


def _new(name: str = "orders-hook", **fields) -> dict:
    return {"name": name, "topics": ["orders"], "endpoint": ENDPOINT, **fields}


@pytest.fixture
def http(broker) -> HttpApi:
    api = HttpApi(broker)
    api.call("POST", "/topics", 201, json_body={"name": "orders", "partitions": 2})
    return api


def test_create_list_describe_update_pause_resume_delete(broker, http):
    http.call("POST", "/topics", 201, json_body={"name": "audit", "partitions": 1})
    http.call("POST", "/topics", 201, json_body={"name": "dlq.orders", "partitions": 1,
                                                 "configs": {"errors.deadletterqueue.group.enable": "true"}})
    assert http.call("GET", "/push-subscriptions", 200) == {"subscriptions": []}
    created = http.call("POST", "/push-subscriptions", 201, json_body=_new(
        batch_size=10, linger_ms=0, bearer_token="endpoint-token", dead_letter_topic="dlq.orders"))
    secret = created["secret"]
    assert len(secret) >= 32
    assert created["name"] == "orders-hook" and created["topics"] == ["orders"] and created["endpoint"] == ENDPOINT
    assert created["share_group"] == "push.orders-hook" and created["created_ms"] > 0
    assert (created["batch_size"], created["linger_ms"], created["max_concurrency"]) == (10, 0, 8)  # given, given, default
    assert created["bearer_token"] == "***" and created["dead_letter_topic"] == "dlq.orders"
    assert created["payload_format"] == "batch" and created["paused"] is False
    assert created["status"]["state"] in ("idle", "active", "failing")

    listed = http.call("GET", "/push-subscriptions", 200)["subscriptions"]
    assert [s["name"] for s in listed] == ["orders-hook"]
    described = http.call("GET", "/push-subscriptions/{name}", 200, name="orders-hook")
    for answer in (listed[0], described):
        assert "secret" not in answer and secret not in str(answer) and "endpoint-token" not in str(answer)
        assert {k: v for k, v in answer.items() if k != "status"} == {
            k: v for k, v in created.items() if k not in ("status", "secret")}
    assert {"state", "last_error", "concurrency", "in_flight", "delivered", "acknowledged", "failed_by_status",
            "retries", "dead_lettered", "backlog", "latency_p50_ms", "latency_p99_ms"} <= set(described["status"])

    changed = http.call("PATCH", "/push-subscriptions/{name}", 200, name="orders-hook",
                        json_body={"topics": ["orders", "audit"], "batch_size": 500, "bearer_token": None})
    assert changed["topics"] == ["orders", "audit"] and changed["batch_size"] == 500 and changed["bearer_token"] is None
    assert changed["linger_ms"] == 0 and changed["dead_letter_topic"] == "dlq.orders"  # the rest kept
    assert changed["created_ms"] == created["created_ms"]

    paused = http.call("POST", "/push-subscriptions/{name}/pause", 200, name="orders-hook")
    assert paused["paused"] is True and paused["status"]["state"] == "paused"
    assert http.call("GET", "/push-subscriptions/{name}", 200, name="orders-hook")["status"]["state"] == "paused"
    assert http.call("POST", "/push-subscriptions/{name}/pause", 200, name="orders-hook")["paused"] is True  # again: no-op
    resumed = http.call("POST", "/push-subscriptions/{name}/resume", 200, name="orders-hook")
    assert resumed["paused"] is False and resumed["status"]["state"] != "paused"

    assert http.call("DELETE", "/push-subscriptions/{name}", 200, name="orders-hook") == {"deleted": "orders-hook"}
    assert http.call("GET", "/push-subscriptions", 200) == {"subscriptions": []}
    http.error("GET", "/push-subscriptions/{name}", 404, "SUBSCRIPTION_NOT_FOUND", name="orders-hook")


def test_bad_fields_are_named_and_conflicts_refused(broker, http):
    def refused(body: dict, field: str, method: str = "POST", template: str = "/push-subscriptions", **path) -> str:
        response = http.session.request(method, http.base + template.format(**path), json=body, timeout=30)
        assert response.status_code == 400, response.text
        http.schema[template][method].validate_response(response)
        answer = response.json()
        assert answer["error_code"] == "INVALID_REQUEST" and answer["field"] == field, answer
        assert answer["message"].startswith(f"{field}: "), answer
        return answer["message"]

    refused({"topics": ["orders"], "endpoint": ENDPOINT}, "name")
    refused(_new(name="has space"), "name")
    refused(_new(topics=[]), "topics")
    assert "nope" in refused(_new(topics=["nope"]), "topics")  # must exist
    refused(_new(endpoint="ftp://127.0.0.1/x"), "endpoint")
    refused(_new(endpoint="http://user:pw@127.0.0.1/x"), "endpoint")
    refused(_new(batch_size=0), "batch_size")
    refused(_new(batch_size="ten"), "batch_size")
    refused(_new(backoff_multiplier=0.5), "backoff_multiplier")
    refused(_new(payload_format="xml"), "payload_format")
    refused(_new(dead_letter_topic="dlq.missing"), "dead_letter_topic")
    refused(_new(colour="blue"), "colour")  # an unknown field
    bad_json = http.session.post(http.base + "/push-subscriptions", data="{not json", timeout=30)
    assert bad_json.status_code == 400 and bad_json.json()["error_code"] == "INVALID_REQUEST"
    assert http.call("GET", "/push-subscriptions", 200) == {"subscriptions": []}  # nothing half-made

    http.call("POST", "/push-subscriptions", 201, json_body=_new())
    message = http.error("POST", "/push-subscriptions", 409, "SUBSCRIPTION_ALREADY_EXISTS", json_body=_new(batch_size=5))
    assert "orders-hook" in message
    assert http.call("GET", "/push-subscriptions/{name}", 200, name="orders-hook")["batch_size"] == 100  # unchanged
    refused({"name": "other"}, "name", "PATCH", "/push-subscriptions/{name}", name="orders-hook")
    refused({"linger_ms": -1}, "linger_ms", "PATCH", "/push-subscriptions/{name}", name="orders-hook")
    refused({"topics": ["orders", "nope"]}, "topics", "PATCH", "/push-subscriptions/{name}", name="orders-hook")
    for method, template in (("GET", "/push-subscriptions/{name}"), ("DELETE", "/push-subscriptions/{name}"),
                             ("POST", "/push-subscriptions/{name}/pause"), ("POST", "/push-subscriptions/{name}/resume")):
        assert "ghost" in http.error(method, template, 404, "SUBSCRIPTION_NOT_FOUND", name="ghost")
    http.error("PATCH", "/push-subscriptions/{name}", 404, "SUBSCRIPTION_NOT_FOUND", name="ghost", json_body={"batch_size": 5})


def test_subscriptions_survive_a_restart(broker, http):
    created = http.call("POST", "/push-subscriptions", 201, json_body=_new(batch_size=7, paused=True))
    http.call("POST", "/push-subscriptions", 201, json_body=_new(name="second", max_concurrency=2))
    broker.stop()
    broker.start()
    http = HttpApi(broker)
    listed = {s["name"]: s for s in http.call("GET", "/push-subscriptions", 200)["subscriptions"]}
    assert sorted(listed) == ["orders-hook", "second"]
    kept = listed["orders-hook"]
    assert (kept["batch_size"], kept["paused"], kept["created_ms"]) == (7, True, created["created_ms"])
    assert kept["status"]["state"] == "paused" and listed["second"]["max_concurrency"] == 2
    assert created["secret"] not in requests.get(http.base + "/push-subscriptions", timeout=30).text


def test_acls_creating_needs_read_on_the_topics_and_the_group(broker_factory):
    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:admin;User:ANONYMOUS"})
    for user in ("admin", "alice"):
        assert tidelog("users", "create", user, "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    base = f"http://127.0.0.1:{broker.metrics_port}/api/v1"
    admin, alice = requests.Session(), requests.Session()
    admin.auth, alice.auth = ("admin", SECRET), ("alice", SECRET)
    for topic in ("orders", "payroll"):
        assert admin.post(base + "/topics", json={"name": topic, "partitions": 1}, timeout=30).status_code == 201

    def acl(*args: str) -> None:
        result = tidelog("acls", "add", *args, "--principal", "User:alice", "-b", broker.bootstrap)
        assert result.returncode == 0, result.stderr

    denied = alice.post(base + "/push-subscriptions", json=_new(), timeout=30)
    assert denied.status_code == 403 and denied.json()["error_code"] == "GROUP_AUTHORIZATION_FAILED"
    assert "push.orders-hook" in denied.json()["message"]
    acl("push.", "--group", "--prefixed", "--operation", "read")  # every subscription's share group
    denied = alice.post(base + "/push-subscriptions", json=_new(), timeout=30)
    assert denied.status_code == 403 and denied.json()["error_code"] == "TOPIC_AUTHORIZATION_FAILED"
    assert "orders" in denied.json()["message"]
    acl("orders", "--topic", "--operation", "read")
    created = alice.post(base + "/push-subscriptions", json=_new(), timeout=30)
    assert created.status_code == 201, created.text
    # Changing its topics to one alice may not read is refused too; the subscription is unchanged.
    denied = alice.patch(base + "/push-subscriptions/orders-hook", json={"topics": ["orders", "payroll"]}, timeout=30)
    assert denied.status_code == 403 and "payroll" in denied.json()["message"]
    assert alice.post(base + "/push-subscriptions/orders-hook/pause", timeout=30).status_code == 200
    # Describing needs DESCRIBE on the group (READ implies it, as in Kafka), deleting DELETE.
    assert alice.get(base + "/push-subscriptions/orders-hook", timeout=30).json()["topics"] == ["orders"]
    assert alice.delete(base + "/push-subscriptions/orders-hook", timeout=30).status_code == 403
    assert alice.get(base + "/push-subscriptions", timeout=30).status_code == 403  # DESCRIBE on the cluster
    assert admin.get(base + "/push-subscriptions", timeout=30).json()["subscriptions"][0]["name"] == "orders-hook"
    acl("push.", "--group", "--prefixed", "--operation", "delete")
    assert alice.delete(base + "/push-subscriptions/orders-hook", timeout=30).status_code == 200
