"""The HTTP API (/api/v1) against a real broker: every endpoint, with Kafka clients on the other side.

Every response is checked against the OpenAPI document the broker serves (schemathesis'
response validation), and a schemathesis run sends generated requests to every operation.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from urllib.parse import quote

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[test]' (schemathesis)")

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from tests.brokerproc import wait_until  # noqa: E402
from tests.integration.clients import consume, produce  # noqa: E402
from tests.integration.group_clients import confluent_consumer, poll_until  # noqa: E402


class HttpApi:
    """requests against the broker's /api/v1, each response validated against its OpenAPI operation."""

    def __init__(self, broker) -> None:
        self.root = f"http://127.0.0.1:{broker.metrics_port}"
        self.base = self.root + "/api/v1"
        self.schema = schemathesis.openapi.from_url(self.base + "/openapi.json")
        self.session = requests.Session()

    def call(self, method: str, template: str, expect: int, *, json_body=None, params=None, data=None, **path):
        url = self.base + template.format(**{k: quote(str(v), safe="") for k, v in path.items()})
        response = self.session.request(method, url, json=json_body, params=params, data=data, timeout=60)
        assert response.status_code == expect, f"{method} {url}: {response.status_code} {response.text}"
        assert response.headers["Content-Type"].startswith("application/json")
        self.schema[template][method].validate_response(response)
        return response.json()

    def error(self, method: str, template: str, expect: int, code: str, **kwargs) -> str:
        body = self.call(method, template, expect, **kwargs)
        assert body["error_code"] == code, body
        return body["message"]


@pytest.fixture
def http(broker) -> HttpApi:
    return HttpApi(broker)


def test_health_ready_and_openapi(broker, http):
    assert requests.get(http.root + "/health", timeout=10).json()["status"] == "ok"
    ready = requests.get(http.root + "/ready", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    document = requests.get(http.base + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item if m != "parameters"}
    assert len(operations) == 35
    cluster = http.call("GET", "/cluster", 200)
    assert cluster["brokers"][0]["port"] == broker.port and cluster["ready"] is True
    assert cluster["brokers"][0]["event_loop"]["stall_threshold_ms"] == 1000 and cluster["brokers"][0]["event_loop_error"] is None
    assert http.call("GET", "/broker", 200)["event_loop"]["window_s"] == 60
    # tidelog_internal_write_timeouts_total by writer (robust16): none yet, shown per broker
    assert http.call("GET", "/broker", 200)["internal_write_timeouts"] == {}
    assert cluster["brokers"][0]["internal_write_timeouts"] == {}
    assert cluster["controller_id"] == cluster["brokers"][0]["node_id"]


def test_topics_create_describe_configure_delete(broker, http):
    created = http.call("POST", "/topics", 201, json_body={"name": "orders", "partitions": 3, "configs": {"retention.ms": 60000}})
    assert created["partition_count"] == 3 and [p["partition"] for p in created["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == p["isr"][0] and p["log_end_offset"] == 0 for p in created["partitions"])
    configs = {c["name"]: c for c in created["configs"]}
    assert configs["retention.ms"] == {**configs["retention.ms"], "value": "60000", "source": "topic"}
    assert configs["segment.bytes"]["source"] == "default"

    listed = http.call("GET", "/topics", 200)["topics"]
    assert {t["name"] for t in listed} >= {"orders", "__consumer_offsets"}
    public = http.call("GET", "/topics", 200, params={"internal": "false"})["topics"]
    assert [t["name"] for t in public] == ["orders"] and public[0]["configs"] == {"retention.ms": "60000"}

    http.error("POST", "/topics", 409, "TOPIC_ALREADY_EXISTS", json_body={"name": "orders"})
    http.error("POST", "/topics", 400, "INVALID_TOPIC_EXCEPTION", json_body={"name": "bad name!"})
    http.error("POST", "/topics", 400, "INVALID_CONFIG", json_body={"name": "x", "configs": {"no.such.config": "1"}})
    http.error("POST", "/topics", 400, "INVALID_REPLICATION_FACTOR", json_body={"name": "x", "replication_factor": 3})
    http.error("POST", "/topics", 400, "INVALID_REQUEST", json_body={"partitions": 1})
    http.error("POST", "/topics", 400, "INVALID_REQUEST", data="not json")

    altered = http.call("PUT", "/topics/{topic}/configs", 200, topic="orders",
                        json_body={"configs": {"retention.ms": None, "max.message.bytes": 2000}})
    overrides = {c["name"]: c["value"] for c in altered["configs"] if c["source"] == "topic"}
    assert overrides == {"max.message.bytes": "2000"}
    http.error("PUT", "/topics/{topic}/configs", 400, "INVALID_CONFIG", topic="orders", json_body={"configs": {"nope": "1"}})
    http.error("PUT", "/topics/{topic}/configs", 400, "INVALID_CONFIG", topic="orders",
               json_body={"configs": {"retention.ms": "soon"}})
    # The override applies to the live log: a record above 2000 bytes is refused.
    message = http.error("POST", "/topics/{topic}/records", 413, "MESSAGE_TOO_LARGE", topic="orders",
                         json_body={"records": [{"value": "x" * 3000, "partition": 0}]})
    assert "2000" in message

    http.error("DELETE", "/topics/{topic}", 400, "INVALID_REQUEST", topic="__consumer_offsets")
    assert http.call("DELETE", "/topics/{topic}", 200, topic="orders") == {"deleted": "orders"}
    http.error("GET", "/topics/{topic}", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="orders")
    http.error("DELETE", "/topics/{topic}", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="orders")
    # Kafka clients see the creation and deletion.
    http.call("POST", "/topics", 201, json_body={"name": "seen-by-kafka", "partitions": 2})
    metadata = Producer({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics["seen-by-kafka"].partitions) == 2 and "orders" not in metadata.topics

    # Routing errors are JSON too.
    missing = requests.get(http.base + "/nowhere", timeout=10)
    assert missing.status_code == 404 and missing.json()["error_code"] == "NOT_FOUND"
    wrong_method = requests.patch(http.base + "/topics", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_http_produce_then_consume_with_confluent_kafka(broker, http):
    http.call("POST", "/topics", 201, json_body={"name": "events", "partitions": 4})
    records = [
        {"key": "user-1", "value": {"clicks": 3}, "headers": {"source": "web"}},
        {"key": "user-2", "value": "plain text", "headers": [{"key": "bin", "value": {"base64": "AP8="}}, {"key": "none", "value": None}]},
        {"key_base64": base64.b64encode(b"\x00\x01").decode(), "value_base64": base64.b64encode(b"\xff\xfe").decode(), "partition": 3},
        {"value": None, "partition": 3, "timestamp": 1_700_000_000_000},
    ]
    result = http.call("POST", "/topics/{topic}/records", 200, topic="events", json_body={"records": records})
    offsets = result["offsets"]
    assert [o["partition"] for o in offsets[2:]] == [3, 3] and offsets[3]["offset"] == offsets[2]["offset"] + 1
    assert offsets[3]["timestamp"] == 1_700_000_000_000

    # Keys go where Kafka's murmur2 partitioner (Java client, librdkafka murmur2_random) puts them.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    delivered = {}
    for key in ("user-1", "user-2"):
        producer.produce("events", key=key, value=b"from kafka", on_delivery=lambda err, msg: delivered.setdefault(msg.key(), msg.partition()))
    assert producer.flush(30) == 0
    assert delivered == {b"user-1": offsets[0]["partition"], b"user-2": offsets[1]["partition"]}

    by_partition = {}
    for o, record in zip(offsets, records):
        by_partition.setdefault(o["partition"], []).append((o["offset"], record))
    seen = {}
    for partition, items in by_partition.items():
        for msg in consume("confluent", broker.bootstrap, "events", len(items), partition=partition, offset=items[0][0])[: len(items)]:
            seen[(partition, msg.offset)] = msg
    first = seen[(offsets[0]["partition"], offsets[0]["offset"])]
    assert first.key == b"user-1" and json.loads(first.value) == {"clicks": 3} and first.headers == [("source", b"web")]
    second = seen[(offsets[1]["partition"], offsets[1]["offset"])]
    assert second.value == b"plain text" and second.headers == [("bin", b"\x00\xff"), ("none", None)]
    third = seen[(3, offsets[2]["offset"])]
    assert (third.key, third.value) == (b"\x00\x01", b"\xff\xfe")
    fourth = seen[(3, offsets[3]["offset"])]
    assert fourth.value is None and fourth.timestamp == 1_700_000_000_000

    http.error("POST", "/topics/{topic}/records", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="events",
               json_body={"records": [{"value": "x", "partition": 4}]})
    http.error("POST", "/topics/{topic}/records", 400, "INVALID_REQUEST", topic="events", json_body={"records": []})
    http.error("POST", "/topics/{topic}/records", 400, "INVALID_REQUEST", topic="events",
               json_body={"records": [{"value_base64": "***"}]})
    http.error("POST", "/topics/{topic}/records", 400, "INVALID_REQUEST", topic="events",
               json_body={"records": [{"value": "a", "value_base64": "YQ=="}]})


def test_confluent_produce_then_consume_over_http(broker, http):
    before = int(time.time() * 1000)
    rows = [(b"k%d" % i, b"value-%d" % i, [("h", b"%d" % i)], None) for i in range(5)]
    rows.append((None, b"\x00\x01binary\xff", None, None))
    produce("confluent", broker.bootstrap, "logs", rows, partition=0)
    page = http.call("GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="logs", partition=0, params={"limit": 3})
    assert [r["offset"] for r in page["records"]] == [0, 1, 2] and page["next_offset"] == 3 and page["high_watermark"] == 6
    assert page["records"][1] == {**page["records"][1], "key": "k1", "key_encoding": "text", "value": "value-1", "value_encoding": "text",
                                  "timestamp_type": "CreateTime"}
    assert page["records"][1]["headers"] == [{"key": "h", "value": "1", "value_encoding": "text"}]
    assert page["records"][0]["timestamp"] >= before - 1000
    rest = http.call("GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="logs", partition=0,
                     params={"offset": page["next_offset"]})
    assert [r["offset"] for r in rest["records"]] == [3, 4, 5] and rest["next_offset"] == 6
    binary = rest["records"][2]
    assert binary["key"] is None and binary["value_encoding"] == "base64"
    assert base64.b64decode(binary["value"]) == b"\x00\x01binary\xff"
    forced = http.call("GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="logs", partition=0,
                       params={"offset": 4, "limit": 1, "encoding": "base64"})["records"][0]
    assert forced["value_encoding"] == "base64" and base64.b64decode(forced["value"]) == b"value-4"

    # By time: a timestamp after every record gives nothing; one before gives the first.
    later = http.call("GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="logs", partition=0,
                      params={"timestamp": int(time.time() * 1000) + 60_000})
    assert later["records"] == [] and later["next_offset"] == 6
    earlier = http.call("GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="logs", partition=0,
                        params={"timestamp": before - 1000, "limit": 1})
    assert earlier["records"][0]["offset"] == 0

    http.error("GET", "/topics/{topic}/partitions/{partition}/records", 416, "OFFSET_OUT_OF_RANGE", topic="logs", partition=0,
               params={"offset": 7})
    http.error("GET", "/topics/{topic}/partitions/{partition}/records", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="logs", partition=5)
    http.error("GET", "/topics/{topic}/partitions/{partition}/records", 400, "INVALID_REQUEST", topic="logs", partition=0,
               params={"limit": 0})
    http.error("GET", "/topics/{topic}/partitions/{partition}/records", 400, "INVALID_REQUEST", topic="logs", partition=0,
               params={"offset": 1, "timestamp": 1})

    # Long poll: a read at the end waits for the next append, not for its timeout.
    result = {}
    started = time.monotonic()
    reader = threading.Thread(target=lambda: result.update(http.call(
        "GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="logs", partition=0,
        params={"offset": 6, "timeout_ms": 20000})))
    reader.start()
    wait_until(lambda: _fetch_purgatory(http) >= 1, message="the HTTP read to wait")
    produce("confluent", broker.bootstrap, "logs", [(None, b"late", None, None)], partition=0)
    reader.join(30)
    assert [r["value"] for r in result["records"]] == ["late"]
    assert time.monotonic() - started < 15


def _fetch_purgatory(http: HttpApi) -> float:
    for line in requests.get(http.root + "/metrics", timeout=10).text.splitlines():
        if line.startswith("tidelog_fetch_purgatory_size "):
            return float(line.split()[1])
    return 0.0


def test_groups_over_http_and_with_a_kafka_consumer(broker, http):
    http.call("POST", "/topics", 201, json_body={"name": "jobs", "partitions": 2})
    http.call("POST", "/topics/{topic}/records", 200, topic="jobs",
              json_body={"records": [{"value": f"job-{i}", "partition": i % 2} for i in range(6)]})

    fetched = http.call("POST", "/groups/{group}/fetch", 200, group="workers", json_body={"topic": "jobs", "max_records": 4})
    assert len(fetched["records"]) == 4 and fetched["committed"] is True
    assert {r["value"] for r in fetched["records"]} == {"job-0", "job-2", "job-4", "job-1"}
    group = http.call("GET", "/groups/{group}", 200, group="workers")
    assert group["state"] == "Empty" and group["members"] == []
    assert {(o["partition"], o["committed_offset"], o["lag"]) for o in group["offsets"]} == {(0, 3, 0), (1, 1, 2)}
    listed = http.call("GET", "/groups", 200)["groups"]
    assert [(g["group_id"], g["lag"], g["topics"]) for g in listed] == [("workers", 2, ["jobs"])]

    # Uncommitted reads leave the offsets; the next committed read continues where the last commit was.
    peek = http.call("POST", "/groups/{group}/fetch", 200, group="workers", json_body={"topic": "jobs", "commit": False})
    assert [r["value"] for r in peek["records"]] == ["job-3", "job-5"]
    assert http.call("GET", "/groups/{group}", 200, group="workers")["lag"] == 2
    # Explicit commit (at-least-once): rewind partition 1 to offset 2.
    committed = http.call("POST", "/groups/{group}/offsets", 200, group="workers",
                          json_body={"offsets": [{"topic": "jobs", "partition": 1, "offset": 2}]})
    assert {(o["partition"], o["committed_offset"]) for o in committed["offsets"]} == {(0, 3), (1, 2)}

    # A Kafka consumer of the same group resumes from the offsets committed over HTTP.
    consumer = confluent_consumer(broker.bootstrap, "workers")
    consumer.subscribe(["jobs"])
    values = []
    try:
        deadline = time.monotonic() + 30
        while len(values) < 1 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                values.append((msg.partition(), msg.offset(), msg.value()))
        assert values == [(1, 2, b"job-5")]
        consumer.commit(asynchronous=False)
        # While it is a member, the group shows it with its assignment, and HTTP cannot consume it.
        described = http.call("GET", "/groups/{group}", 200, group="workers")
        assert described["state"] == "Stable" and described["protocol_type"] == "consumer"
        assert [m["assignment"] for m in described["members"]] == [[{"topic": "jobs", "partitions": [0, 1]}]]
        http.error("POST", "/groups/{group}/fetch", 409, "UNKNOWN_MEMBER_ID", group="workers", json_body={"topic": "jobs"})
        http.error("POST", "/groups/{group}/offsets", 409, "UNKNOWN_MEMBER_ID", group="workers",
                   json_body={"offsets": [{"topic": "jobs", "partition": 0, "offset": 0}]})
        http.error("DELETE", "/groups/{group}", 409, "NON_EMPTY_GROUP", group="workers")
    finally:
        consumer.close()
    wait_until(lambda: http.call("GET", "/groups/{group}", 200, group="workers")["state"] == "Empty", message="the group to empty")
    assert http.call("DELETE", "/groups/{group}", 200, group="workers") == {"deleted": "workers"}
    http.error("GET", "/groups/{group}", 404, "GROUP_ID_NOT_FOUND", group="workers")
    http.error("DELETE", "/groups/{group}", 404, "GROUP_ID_NOT_FOUND", group="workers")

    # A fetch that waits: woken by a record produced with a Kafka client.
    result = {}
    reader = threading.Thread(target=lambda: result.update(http.call(
        "POST", "/groups/{group}/fetch", 200, group="late", json_body={"topic": "jobs", "partitions": [0], "timeout_ms": 20000,
                                                                       "auto_offset_reset": "latest"})))
    reader.start()
    wait_until(lambda: _fetch_purgatory(http) >= 1, message="the group fetch to wait")
    produce("confluent", broker.bootstrap, "jobs", [(None, b"wake", None, None)], partition=0)
    reader.join(30)
    assert [(r["partition"], r["value"]) for r in result["records"]] == [(0, "wake")]
    assert result["positions"] == [{"partition": 0, "offset": 4}]
    http.error("POST", "/groups/{group}/fetch", 404, "UNKNOWN_TOPIC_OR_PARTITION", group="g", json_body={"topic": "nope"})
    http.error("POST", "/groups/{group}/fetch", 404, "UNKNOWN_TOPIC_OR_PARTITION", group="g", json_body={"topic": "jobs", "partitions": [2]})
    http.error("POST", "/groups/{group}/fetch", 400, "INVALID_REQUEST", group="g", json_body={"topic": "jobs", "auto_offset_reset": "never"})
    http.error("POST", "/groups/{group}/offsets", 400, "INVALID_REQUEST", group="g", json_body={"offsets": [{"topic": "jobs"}]})


def test_schemathesis_every_operation(broker, http):
    """Generated requests to every operation: no server error, and every answer as documented."""
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    http.call("POST", "/topics", 201, json_body={"name": "fuzz", "partitions": 2})
    http.call("POST", "/topics/{topic}/records", 200, topic="fuzz", json_body={"records": [{"value": "seed"}]})
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in http.schema.get_all_operations()]
    assert len(operations) == 35

    def bounded(case) -> None:
        # Keep the load small: no long polls, few partitions per generated topic.
        if isinstance(case.query, dict) and "timeout_ms" in case.query:
            case.query["timeout_ms"] = 0
        if isinstance(case.body, dict):
            if "timeout_ms" in case.body:
                case.body["timeout_ms"] = 0
            if isinstance(case.body.get("partitions"), int):
                case.body["partitions"] = min(case.body["partitions"], 4)
            if "endpoint" in case.body:  # a push subscription POSTs only to loopback (refused: nothing on port 9)
                case.body["endpoint"] = "http://127.0.0.1:9/"
        # Aim a share of the cases at the topic that exists.
        if isinstance(case.path_parameters, dict) and "topic" in case.path_parameters and len(case.path_parameters["topic"]) % 2:
            case.path_parameters["topic"] = "fuzz"

    statuses: dict[str, set[int]] = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case):
            bounded(case)
            response = case.call(base_url=http.base, timeout=30)
            case.validate_response(response, checks=checks)
            statuses.setdefault(operation.label, set()).add(response.status_code)

        run()
    assert len(statuses) == 35
    # Both documented successes and documented errors were exercised.
    assert any(s < 300 for codes in statuses.values() for s in codes)
    assert any(400 <= s < 500 for codes in statuses.values() for s in codes)
    assert requests.get(http.root + "/health", timeout=10).status_code == 200


def test_consumer_protocol_group_kip848(broker_factory):
    """A group of librdkafka members on the new protocol: members, server-side assignment, lag."""
    broker = broker_factory({"group.consumer.heartbeat.interval.ms": "300", "group.consumer.min.heartbeat.interval.ms": "100"})
    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "tasks", "partitions": 2})
    http.call("POST", "/topics/{topic}/records", 200, topic="tasks",
              json_body={"records": [{"value": f"t{i}", "partition": i % 2} for i in range(4)]})
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "new-style", "group.protocol": "consumer",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe(["tasks"])
        poll_until([consumer], lambda: len(consumer.assignment()) == 2, message="the server-side assignment")
        consumer.commit(offsets=[TopicPartition("tasks", 0, 1), TopicPartition("tasks", 1, 2)], asynchronous=False)
        group = http.call("GET", "/groups/{group}", 200, group="new-style")
        assert group["type"] == "consumer" and group["protocol_type"] == "consumer" and group["state"] == "Stable"
        assert [m["assignment"] for m in group["members"]] == [[{"topic": "tasks", "partitions": [0, 1]}]]
        assert {(o["partition"], o["lag"]) for o in group["offsets"]} == {(0, 1), (1, 0)} and group["lag"] == 1
        listed = {g["group_id"]: g for g in http.call("GET", "/groups", 200)["groups"]}
        assert listed["new-style"]["members"] == 1 and listed["new-style"]["type"] == "consumer"
        http.error("POST", "/groups/{group}/fetch", 409, "UNKNOWN_MEMBER_ID", group="new-style", json_body={"topic": "tasks"})
        http.error("DELETE", "/groups/{group}", 409, "NON_EMPTY_GROUP", group="new-style")
    finally:
        consumer.close()
    wait_until(lambda: http.call("GET", "/groups/{group}", 200, group="new-style")["members"] == [], message="the member to leave")
    assert http.call("DELETE", "/groups/{group}", 200, group="new-style") == {"deleted": "new-style"}


@pytest.mark.parametrize("auto_create", [True, False])
def test_produce_to_a_missing_topic_follows_auto_create_topics_enable(broker_factory, auto_create):
    """One behaviour per setting: HTTP produce creates a missing topic exactly when a Kafka
    producer's Metadata request would; reading a missing topic is 404 either way."""
    broker = broker_factory({"auto.create.topics.enable": str(auto_create).lower(), "num.partitions": "2"})
    http = HttpApi(broker)
    http.error("GET", "/topics/{topic}/partitions/{partition}/records", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="read-first", partition=0)
    if auto_create:
        produced = http.call("POST", "/topics/{topic}/records", 200, topic="made-by-http", json_body={"records": [{"value": "x"}]})
        assert produced["offsets"][0]["offset"] == 0
        assert http.call("GET", "/topics/{topic}", 200, topic="made-by-http")["partition_count"] == 2
        http.error("POST", "/topics/{topic}/records", 400, "INVALID_TOPIC_EXCEPTION", topic="bad name!", json_body={"records": [{"value": "x"}]})
    else:
        message = http.error("POST", "/topics/{topic}/records", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="made-by-http",
                             json_body={"records": [{"value": "x"}]})
        assert "auto.create.topics.enable" in message
        http.error("GET", "/topics/{topic}", 404, "UNKNOWN_TOPIC_OR_PARTITION", topic="made-by-http")
    # A Kafka client sees the same: its Metadata request creates the topic only when allowed.
    metadata = Producer({"bootstrap.servers": broker.bootstrap}).list_topics("made-by-kafka", timeout=10)
    assert ("made-by-kafka" in metadata.topics and metadata.topics["made-by-kafka"].error is None) == auto_create


def test_error_names_are_the_documented_ones(broker, http):
    """Every error_code the API sends for a malformed or misrouted request is named in docs/http.md."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "http.md").read_text()
    sent = {
        requests.post(http.base + "/topics", data="not json", timeout=10).json()["error_code"],
        requests.post(http.base + "/topics", json=["a list"], timeout=10).json()["error_code"],
        requests.get(http.base + "/nowhere", timeout=10).json()["error_code"],
        requests.patch(http.base + "/topics", timeout=10).json()["error_code"],
        requests.post(http.base + "/topics/t/records", data=b"x" * (65 * 1024 * 1024), timeout=60).json()["error_code"],
    }
    assert sent == {"INVALID_REQUEST", "NOT_FOUND", "METHOD_NOT_ALLOWED", "REQUEST_TOO_LARGE"}
    for name in sent | {"INTERNAL_ERROR", "BROKER_NOT_AVAILABLE", "LEADER_NOT_AVAILABLE", "NETWORK_EXCEPTION"}:
        assert f"`{name}`" in docs, name
    assert "BAD_REQUEST" not in docs
