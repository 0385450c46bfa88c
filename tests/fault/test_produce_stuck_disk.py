"""A Produce on a stuck disk is answered within its timeout_ms (ptimeout15), in a real broker
process with real clients.

The disk is stuck with tests/fault/stuck_disk (writes15's sitecustomize on the broker's
PYTHONPATH): while a file exists, every flush job of the broker's log manager waits in its flush
thread; the event loop runs on. A Produce (acks=all, balanced profile) then waits for a flush that
does not end. Kafka bounds a Produce's wait by its timeout_ms and answers REQUEST_TIMED_OUT (the
client retries; an idempotent producer's retry is answered as a duplicate; a timed-out wait
leaves the produce purgatory at once). Before, the wait for
the flush had no timeout: the broker held the Produce until the disk answered, never answering
REQUEST_TIMED_OUT (tidelog_produce_errors_total stayed 0, no log line).

Each client in turn (confluent-kafka, then kafka-python, both idempotent): the disk sticks, the
client produces, the broker answers its Produce REQUEST_TIMED_OUT (counted, one WARNING an
episode), the client retries; the disk answers again, every send is acknowledged, and every
acknowledged record is read back exactly once."""

from __future__ import annotations

import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer

from tests.brokerproc import BrokerProcess, wait_until
from tests.fault.test_delay_topic_cluster import metric
from tests.fault.test_internal_write_stalls import read_all, stuck_disk_env, warnings_matching

RECORDS = 20
TIMEOUT_MS = 1000  # the Produce's timeout_ms


def timed_out(broker) -> float:
    return metric(broker, "tidelog_produce_errors_total", error="request_timed_out")


def test_a_produce_on_a_stuck_disk_is_answered_request_timed_out_and_its_retry_writes_each_record_once(
        tmp_path, monkeypatch):
    hold = tmp_path / "hold-fsync"
    for name, value in stuck_disk_env(hold).items():
        monkeypatch.setenv(name, value)
    broker = BrokerProcess(tmp_path / "data", {"http.port": "0"}).start()  # /metrics on a port of its own
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("orders", 1, 1)])["orders"].result(30)
        warmup = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        warmup.produce("orders", value=b"before")
        assert warmup.flush(30) == 0  # the partition's first flush, before the disk sticks

        # confluent-kafka: request.timeout.ms is the Produce's timeout_ms; the message's own
        # timeout is long, so librdkafka retries until the disk answers.
        hold.touch()
        try:
            acknowledged, failed = [], []
            producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all",
                                 "request.timeout.ms": TIMEOUT_MS, "message.timeout.ms": 60000,
                                 "retry.backoff.ms": 100})

            def delivered(error, message):
                (failed if error else acknowledged).append(error or message.value())

            confluent_values = [b"c%d" % i for i in range(RECORDS)]
            for value in confluent_values:
                producer.produce("orders", value=value, on_delivery=delivered)
            producer.poll(0)
            started = time.monotonic()
            wait_until(lambda: timed_out(broker) >= 1, 20, message="the Produce answered REQUEST_TIMED_OUT")
            assert time.monotonic() - started < 10
            assert acknowledged == [] and failed == []  # nothing acknowledged while the disk is stuck
            wait_until(lambda: timed_out(broker) >= 2, 20, message="the retry answered REQUEST_TIMED_OUT too")
            # Timed-out waits leave the produce purgatory at once (robust16): it holds the waits
            # still within their timeout (librdkafka's requests in flight, 5 at the most), not one
            # a retry for as long as the disk is stuck (it grew with every retry before).
            wait_until(lambda: timed_out(broker) >= 8, 30, message="more retries answered REQUEST_TIMED_OUT")
            purgatory = metric(broker, "tidelog_produce_purgatory_size")
            assert purgatory <= 5, (purgatory, timed_out(broker))
        finally:
            hold.unlink()  # the disk answers again
        assert producer.flush(30) == 0
        assert failed == [] and sorted(acknowledged) == sorted(confluent_values)
        warned = warnings_matching(broker.log(), r"acknowledgement waits answered REQUEST_TIMED_OUT")
        assert len(warned) == 1, warned  # once an episode, not once a request

        # kafka-python: request_timeout_ms is the Produce's timeout_ms (and its own wait for the answer).
        before = timed_out(broker)
        hold.touch()
        try:
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all",
                                     request_timeout_ms=TIMEOUT_MS, delivery_timeout_ms=60000,
                                     retry_backoff_ms=100)
            python_values = [b"p%d" % i for i in range(RECORDS)]
            futures = [producer.send("orders", value=value) for value in python_values]
            wait_until(lambda: timed_out(broker) >= before + 1, 20,
                       message="kafka-python's Produce answered REQUEST_TIMED_OUT")
            assert not any(future.is_done for future in futures)
        finally:
            hold.unlink()
        try:
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)  # raises if the send failed
        finally:
            producer.close(timeout=10)

        got = read_all(broker.bootstrap, "orders", 1 + 2 * RECORDS)
        assert sorted(got) == sorted([b"before"] + confluent_values + python_values)  # each once
    finally:
        hold.unlink(missing_ok=True)
        broker.stop()
