"""A share group's filter in its worst case for the share-partition (1 record in 4 kept, each match
alone between filtered-out records: an acquisition is one mosaic) with both clients that speak
share groups: confluent-kafka's ShareConsumer and the HTTP API's share consume. Every match comes,
nothing else does, and the filtered-out records are counted; a release (HTTP) turns a mosaic back
into runs and its records come again."""

from __future__ import annotations

import time

from tests.integration.share_clients import metric, share_consumer, wait_for
from tests.integration.test_queue_features import group_configs, produce

TYPES = ("order", "refund", "audit", "ping")
RECORDS = 2000
FILTER = 'headers["type"] == b"order"'


def consume_filtered(broker, group: str, topic: str, expected: list[int]) -> list[int]:
    """What confluent-kafka's ShareConsumer of ``group`` reads of ``topic`` (the values as ints,
    sorted), once it has read ``len(expected)`` records, acknowledged them, and the broker has counted
    every other record of the topic filtered out."""
    consumer = share_consumer(broker.bootstrap, group, [topic])
    seen: list[int] = []
    try:
        def poll():
            for message in consumer.poll(0.2):
                assert message.error() is None, message.error()
                seen.append(int(message.value()))
        wait_for(lambda: len(seen) >= len(expected), 60, f"every record of {group}", poll)
        consumer.commit_sync(30)
        wait_for(lambda: metric(broker, "tidelog_share_group_records_total", group=group, event="filtered")
                 == RECORDS - len(expected), 30, "every other record filtered out", poll)
    finally:
        consumer.close()
    return sorted(seen)


def test_a_share_consumer_of_a_filtered_group_gets_each_match_once(broker):
    from tests.integration.share_clients import create_topic

    create_topic(broker.bootstrap, "mixed", 1)
    group_configs(broker.bootstrap, "orders", **{"share.auto.offset.reset": "earliest", "tidelog.filter": FILTER})
    produce(broker.bootstrap, "mixed", [(b"%d" % i, {"type": TYPES[i % 4]}) for i in range(RECORDS)])
    # (the records after the last order: archived once an acquisition gets there; value i is at offset i)
    orders = list(range(0, RECORDS, 4))
    assert consume_filtered(broker, "orders", "mixed", orders) == orders  # each once, nothing else


def test_http_consumers_of_a_filtered_group_get_each_match_and_released_ones_again(broker):
    from tests.integration.test_http_api import HttpApi
    from tests.integration.test_share_http import Queue

    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "mixed", "partitions": 1})
    group_configs(broker.bootstrap, "orders", **{"share.auto.offset.reset": "earliest", "tidelog.filter": FILTER})
    for start in range(0, RECORDS, 500):
        http.call("POST", "/topics/{topic}/records", 200, topic="mixed", json_body={"records": [
            {"value": str(i), "headers": {"type": TYPES[i % 4]}} for i in range(start, start + 500)]})
    queue = Queue(http, "orders", "mixed")
    accepted: list[int] = []
    released: set[int] = set()
    deadline = time.monotonic() + 60
    while len(accepted) < RECORDS // 4:
        assert time.monotonic() < deadline, f"{len(accepted)} of {RECORDS // 4} orders accepted"
        got = queue.receive(max_records=100, timeout_ms=500)
        assert all(int(r["value"]) % 4 == 0 for r in got), [r["value"] for r in got]
        if got and not released:  # the first batch goes back once: its records come again, counted
            queue.settle("release", [r["receipt"] for r in got])
            released = {int(r["value"]) for r in got}
            continue
        for r in got:
            assert r["delivery_count"] == (2 if int(r["value"]) in released else 1), r
        queue.settle("ack", [r["receipt"] for r in got])
        accepted.extend(int(r["value"]) for r in got)
    assert sorted(accepted) == list(range(0, RECORDS, 4))
    assert queue.receive(max_records=100, timeout_ms=200) == []


def test_a_filter_of_the_batch_subset_over_key_header_and_timestamp_with_cels_errors(broker):
    """A filter reading the key, a header and the timestamp, judged a batch at a time in the record
    walk (queues/filters.py plan_of), with confluent-kafka's ShareConsumer: every match comes once,
    and the records it fails on (a key, no ``type`` header: ``error && true``) count as
    ``filter_errors`` once each, where ``error && false`` (no key) is simply false, as in CEL."""
    from confluent_kafka import Producer

    from tests.integration.share_clients import create_topic
    from tidelog.queues.filters import plan_of

    expression = 'headers["type"] == b"order" && key != null && timestamp > 0'
    assert plan_of(expression) is not None
    create_topic(broker.bootstrap, "keyed", 1)
    group_configs(broker.bootstrap, "keyed-orders", **{"share.auto.offset.reset": "earliest",
                                                       "tidelog.filter": expression})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):  # a key on even records; no type header where i % 10 is 8 or 9
        headers = {} if i % 10 >= 8 else {"type": TYPES[i % 4]}
        producer.produce("keyed", b"%d" % i, key=b"k%d" % i if i % 2 == 0 else None, headers=headers)
    assert producer.flush(30) == 0
    expected = [i for i in range(0, RECORDS, 4) if i % 10 < 8]
    assert consume_filtered(broker, "keyed-orders", "keyed", expected) == expected  # each once, nothing else
    assert metric(broker, "tidelog_share_group_records_total", group="keyed-orders",
                  event="filter_errors") == RECORDS // 10  # i % 10 == 8: a key, no type header


def test_a_one_header_filter_counts_filter_errors_once_a_record_with_both_clients(broker):
    """The usual filter over one header (judged in the record walk, protocol/_recordwalk.c
    ``header_runs``, once its values are known), over batch after batch where 1 record in 10 has no
    ``type`` header (``headers["type"]`` fails): ``filter_errors`` counts each of those records, not
    each distinct value (it counted 1 before), for a group read by confluent-kafka's ShareConsumer
    and one read through the HTTP API."""
    from tests.integration.share_clients import create_topic
    from tests.integration.test_http_api import HttpApi
    from tests.integration.test_share_http import Queue

    create_topic(broker.bootstrap, "partly-typed", 1)
    for group in ("typed-kafka", "typed-http"):
        group_configs(broker.bootstrap, group, **{"share.auto.offset.reset": "earliest", "tidelog.filter": FILTER})
    produce(broker.bootstrap, "partly-typed", [(b"%d" % i, {} if i % 10 == 9 else {"type": TYPES[i % 4]})
                                               for i in range(RECORDS)])
    expected = [i for i in range(0, RECORDS, 4) if i % 10 != 9]
    assert consume_filtered(broker, "typed-kafka", "partly-typed", expected) == expected
    queue = Queue(HttpApi(broker), "typed-http", "partly-typed")
    accepted: list[int] = []
    deadline = time.monotonic() + 60
    while len(accepted) < len(expected):
        assert time.monotonic() < deadline, f"{len(accepted)} of {len(expected)} orders accepted"
        got = queue.receive(max_records=100, timeout_ms=500)
        queue.settle("ack", [r["receipt"] for r in got])
        accepted.extend(int(r["value"]) for r in got)
    assert sorted(accepted) == expected
    assert queue.receive(max_records=100, timeout_ms=200) == []
    for group in ("typed-kafka", "typed-http"):
        assert metric(broker, "tidelog_share_group_records_total", group=group,
                      event="filter_errors") == RECORDS // 10, group
