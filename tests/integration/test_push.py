"""Push delivery (issue 15) to a real aiohttp receiver on loopback: records produced with
confluent-kafka and kafka-python are POSTed in signed batches and acknowledged by a 2xx; a failing
receiver gets them again (and only those); per-record rejects land in the dead-letter topic, read
back with a consumer; raw bodies; pause and resume."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaProducer

from tests.integration.push_receiver import Receiver, api, create_subscription, status_of, verify, wait_for
from tests.integration.share_clients import create_topic, metric

# Short back-offs: a failing receiver is retried within the test's time.
FAST = {"backoff_initial_ms": 20, "backoff_multiplier": 2.0, "backoff_max_ms": 200, "linger_ms": 5}


@pytest.fixture
def broker(shared_broker):
    """The module's broker (tests/conftest.py): each test has its own topics and subscription."""
    return shared_broker


def _produce_confluent(broker, topic: str, count: int, partitions: int, prefix: str = "v") -> set[str]:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    values = set()
    for i in range(count):
        value = f"{prefix}{i}"
        producer.produce(topic, value.encode(), key=str(i).encode(), partition=i % partitions,
                         headers=[("n", str(i).encode())])
        values.add(value)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return values


def _produce_kafka_python(broker, topic: str, count: int, partitions: int, prefix: str = "k") -> set[str]:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    values = set()
    for i in range(count):
        value = f"{prefix}{i}"
        producer.send(topic, value.encode(), partition=i % partitions)
        values.add(value)
    producer.flush(60)
    producer.close()
    return values


def _values(deliveries) -> list[str]:
    return [r["value"] for d in deliveries if 200 <= d.status < 300 for r in d.records]


@pytest.mark.slow
def test_ten_thousand_records_delivered_exactly_once(broker):
    create_topic(broker.bootstrap, "orders", 4)
    with Receiver() as receiver:
        secret = create_subscription(broker, name="orders-hook", topics=["orders"], endpoint=receiver.url,
                                     batch_size=100, **FAST)
        values = _produce_confluent(broker, "orders", 8000, 4) | _produce_kafka_python(broker, "orders", 2000, 4)
        wait_for(lambda: len(receiver.acknowledged_keys()) >= 10_000, 120, "10,000 records delivered")
        deliveries = receiver.snapshot()
        got = _values(deliveries)
        assert len(got) == 10_000 and set(got) == values  # every record once
        assert all(r["delivery_count"] == 1 for d in deliveries for r in d.records)
        assert max(len(d.records) for d in deliveries) <= 100
        assert all(verify(secret, d) for d in deliveries)
        first = next(r for d in deliveries for r in d.records if r["value"] == "v0")
        assert (first["key"], first["headers"], first["subscription"]) == ("0", [{"key": "n", "value": "0", "value_encoding": "text"}], "orders-hook")
        wait_for(lambda: status_of(broker, "orders-hook")["acknowledged"] == 10_000, 30, "10,000 acknowledged")
        status = status_of(broker, "orders-hook")
        assert status["state"] == "active" and status["backlog"] == 0 and status["failed_by_status"] == {}
        assert status["latency_p50_ms"] is not None
        assert metric(broker, "tidelog_push_records_total", subscription="orders-hook", event="acknowledged") == 10_000
        assert metric(broker, "tidelog_share_group_records_total", group="push.orders-hook", event="acknowledged") == 10_000
        assert len(receiver.snapshot()) == len(deliveries)  # nothing more came


def test_a_receiver_failing_a_third_of_the_batches_gets_every_record(broker):
    create_topic(broker.bootstrap, "flaky", 2)
    with Receiver(lambda n, d: 500 if n % 3 == 1 else 200) as receiver:
        create_subscription(broker, name="flaky-hook", topics=["flaky"], endpoint=receiver.url, batch_size=50,
                            delivery_limit=10, **FAST)
        values = _produce_confluent(broker, "flaky", 2000, 2)
        wait_for(lambda: set(_values(receiver.snapshot())) == values, 120, "every record acknowledged")
        deliveries = receiver.snapshot()
        failed = Counter(k for d in deliveries if d.status == 500 for k in d.keys)
        acknowledged = Counter(k for d in deliveries if d.status == 200 for k in d.keys)
        assert all(n == 1 for n in acknowledged.values())  # acknowledged once each
        # a record came more than once only because an earlier POST of it failed
        received = Counter(k for d in deliveries for k in d.keys)
        assert all(received[k] == failed[k] + 1 for k in received)
        assert failed and status_of(broker, "flaky-hook")["failed_by_status"].get("500", 0) >= 1
        assert metric(broker, "tidelog_push_requests_total", subscription="flaky-hook", result="500") >= 1


def test_per_record_rejects_go_to_the_dead_letter_topic(broker):
    create_topic(broker.bootstrap, "jobs", 1)
    create_topic(broker.bootstrap, "dlq.jobs", 1, {"errors.deadletterqueue.group.enable": "true"})

    def answer(n, delivery):
        results = [{"topic": r["topic"], "partition": r["partition"], "offset": r["offset"], "result": "reject"}
                   for r in delivery.records if r["value"].endswith("7")]
        return 200, {"results": results}

    with Receiver(answer) as receiver:
        create_subscription(broker, name="jobs-hook", topics=["jobs"], endpoint=receiver.url,
                            dead_letter_topic="dlq.jobs", **FAST)
        values = _produce_confluent(broker, "jobs", 100, 1, prefix="job")
        rejected = {v for v in values if v.endswith("7")}
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dlq-reader", "auto.offset.reset": "earliest"})
        consumer.subscribe(["dlq.jobs"])
        dead: list = []
        try:
            def poll():
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    dead.append(message)
                return len(dead) >= len(rejected)
            wait_for(poll, 60, "the rejected records in dlq.jobs")
        finally:
            consumer.close()
        assert {m.value().decode() for m in dead} == rejected  # copied records
        headers = dict(dead[0].headers())
        assert headers["__dlq.errors.reason"] == b"rejected" and headers["__dlq.errors.group.id"] == b"push.jobs-hook"
        assert len(receiver.received_keys()) == 100  # rejected records are not delivered again
        wait_for(lambda: status_of(broker, "jobs-hook")["dead_lettered"] == len(rejected), 30, "dead_lettered counted")


def test_past_the_delivery_limit_records_are_dead_lettered(broker):
    create_topic(broker.bootstrap, "doomed", 1)
    create_topic(broker.bootstrap, "dlq.doomed", 1, {"errors.deadletterqueue.group.enable": "true"})
    with Receiver(lambda n, d: 503) as receiver:
        create_subscription(broker, name="doomed-hook", topics=["doomed"], endpoint=receiver.url,
                            dead_letter_topic="dlq.doomed", delivery_limit=3, **FAST)
        _produce_confluent(broker, "doomed", 5, 1)
        wait_for(lambda: status_of(broker, "doomed-hook")["dead_lettered"] == 5, 60, "5 records dead-lettered")
        counts = Counter(receiver.received_keys())
        assert set(counts.values()) == {3}  # each tried delivery_limit times


def test_raw_payload_and_bearer_token(broker):
    create_topic(broker.bootstrap, "raw", 1)
    with Receiver(raw=True) as receiver:
        secret = create_subscription(broker, name="raw-hook", topics=["raw"], endpoint=receiver.url,
                                     payload_format="raw", bearer_token="s3cret-token", **FAST)
        values = _produce_kafka_python(broker, "raw", 20, 1)
        wait_for(lambda: {r["value"] for d in receiver.snapshot() for r in d.records} == values, 60, "every raw record")
        for d in receiver.snapshot():
            assert d.headers["Authorization"] == "Bearer s3cret-token"
            assert d.headers["Content-Type"] == "application/octet-stream"
            assert verify(secret, d)
            assert not verify("wrong-secret", d)


def test_pause_stops_deliveries_and_resume_delivers_the_backlog(broker):
    create_topic(broker.bootstrap, "paused", 1)
    with Receiver() as receiver:
        create_subscription(broker, name="paused-hook", topics=["paused"], endpoint=receiver.url, **FAST)
        _produce_confluent(broker, "paused", 10, 1, prefix="a")
        wait_for(lambda: len(receiver.acknowledged_keys()) == 10, 60, "the first 10")
        assert api(broker, "POST", "/push-subscriptions/paused-hook/pause")[0] == 200
        wait_for(lambda: status_of(broker, "paused-hook")["state"] == "paused", 30, "paused")
        _produce_confluent(broker, "paused", 10, 1, prefix="b")
        wait_for(lambda: status_of(broker, "paused-hook")["backlog"] == 10, 30, "a backlog of 10")
        assert len(receiver.acknowledged_keys()) == 10
        assert api(broker, "POST", "/push-subscriptions/paused-hook/resume")[0] == 200
        wait_for(lambda: len(receiver.acknowledged_keys()) == 20, 60, "the backlog delivered")
        wait_for(lambda: status_of(broker, "paused-hook")["backlog"] == 0, 30, "no backlog")


def test_only_records_after_creation_are_delivered(broker):
    create_topic(broker.bootstrap, "late", 1)
    _produce_confluent(broker, "late", 5, 1, prefix="before")
    with Receiver() as receiver:
        create_subscription(broker, name="late-hook", topics=["late"], endpoint=receiver.url, **FAST)
        values = _produce_confluent(broker, "late", 5, 1, prefix="after")
        wait_for(lambda: set(_values(receiver.snapshot())) == values, 60, "the records after creation")
        assert not any(v.startswith("before") for v in _values(receiver.snapshot()))


def test_a_host_outside_push_allowed_hosts_is_refused(broker_factory):
    broker = broker_factory({"push.allowed.hosts": "hooks.example.com"})
    create_topic(broker.bootstrap, "guarded", 1)
    status, answer = api(broker, "POST", "/push-subscriptions",
                         {"name": "ssrf", "topics": ["guarded"], "endpoint": "http://127.0.0.1:1/x"})
    assert status == 400 and answer["field"] == "endpoint" and "push.allowed.hosts" in answer["message"]


def test_https_endpoints_are_verified_against_push_ssl_ca_location(broker_factory, tmp_path):
    import ssl

    import trustme

    trusted, stranger = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    trusted.cert_pem.write_to_path(str(ca_file))
    contexts = []
    for ca in (trusted, stranger):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        contexts.append(context)
    broker = broker_factory({"push.ssl.ca.location": str(ca_file)})
    create_topic(broker.bootstrap, "secure", 1)
    with Receiver(ssl_context=contexts[0]) as good, Receiver(ssl_context=contexts[1]) as bad:
        create_subscription(broker, name="good-tls", topics=["secure"], endpoint=good.url, **FAST)
        create_subscription(broker, name="bad-tls", topics=["secure"], endpoint=bad.url, **FAST)
        values = _produce_confluent(broker, "secure", 10, 1)
        wait_for(lambda: set(_values(good.snapshot())) == values, 60, "the records over verified TLS")
        wait_for(lambda: status_of(broker, "bad-tls")["failed_by_status"].get("tls", 0) >= 1, 60, "a TLS failure")
        assert bad.snapshot() == []  # the handshake failed: no request reached it
        assert "certificate" in status_of(broker, "bad-tls")["last_error"].lower()


def test_without_push_ssl_ca_location_https_endpoints_are_verified_against_the_system_cas(broker):
    """The default context (aiohttp's, made when it was imported, not one of ours at every start)
    still verifies: an endpoint whose certificate a private CA signed is a TLS failure."""
    import ssl

    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    create_topic(broker.bootstrap, "system-cas", 1)
    with Receiver(ssl_context=context) as private:
        create_subscription(broker, name="private-ca", topics=["system-cas"], endpoint=private.url, **FAST)
        _produce_confluent(broker, "system-cas", 1, 1)
        wait_for(lambda: status_of(broker, "private-ca")["failed_by_status"].get("tls", 0) >= 1, 60, "a TLS failure")
        assert private.snapshot() == []
        assert "certificate" in status_of(broker, "private-ca")["last_error"].lower()


def test_an_unreadable_ca_bundle_stops_the_start_with_one_line(broker_factory, tmp_path):
    with pytest.raises(RuntimeError) as caught:
        broker_factory({"push.ssl.ca.location": str(tmp_path / "missing.pem")})
    assert "push.ssl.ca.location" in str(caught.value) and "Traceback" not in str(caught.value)


def test_the_allow_list_is_checked_again_at_delivery(broker_factory):
    """A subscription made while its host was allowed is not delivered once push.allowed.hosts leaves
    it out (the broker restarted with a tighter list); its records wait for it."""
    broker = broker_factory()
    create_topic(broker.bootstrap, "fenced", 1)
    with Receiver() as receiver:
        create_subscription(broker, name="fenced-hook", topics=["fenced"], endpoint=receiver.url, **FAST)
        broker.stop()
        broker.settings["push.allowed.hosts"] = "hooks.example.com"
        broker.restart()
        _produce_confluent(broker, "fenced", 5, 1)
        wait_for(lambda: status_of(broker, "fenced-hook")["failed_by_status"].get("not_allowed", 0) >= 1, 60,
                 "the delivery refused")
        assert "push.allowed.hosts" in status_of(broker, "fenced-hook")["last_error"]
        assert receiver.snapshot() == []
        assert metric(broker, "tidelog_push_requests_total", subscription="fenced-hook", result="not_allowed") >= 1


def test_transactional_records_are_pushed_once_and_markers_never(broker):
    """A transactional producer's COMMIT markers take offsets between the records but are none: every
    committed record is pushed once, no marker is, and the backlog drains to 0 (nothing is left
    acquired or released at a marker's offset)."""
    create_topic(broker.bootstrap, "txn-pushed", 1)
    with Receiver() as receiver:
        create_subscription(broker, name="txn-hook", topics=["txn-pushed"], endpoint=receiver.url, **FAST)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "push-txn"})
        producer.init_transactions(30)
        values = set()
        for t in range(5):
            producer.begin_transaction()
            for i in range(10):
                producer.produce("txn-pushed", f"t{t}-{i}".encode(), partition=0)
                values.add(f"t{t}-{i}")
            producer.commit_transaction(30)
        wait_for(lambda: set(_values(receiver.snapshot())) == values, 60, "the committed records")
        wait_for(lambda: status_of(broker, "txn-hook")["backlog"] == 0, 30, "no backlog")
        assert len(_values(receiver.snapshot())) == 50
