"""Share groups through the HTTP API against a real broker process: HTTP consumers are members of
the share group (they show in Kafka's ShareGroupDescribe and split partitions with Kafka
ShareConsumers), records are taken exactly once when every consumer acknowledges, RELEASE and
lock expiry redeliver with the delivery count rising, and a broker SIGKILL loses no
acknowledgement and redelivers what was in flight. Every response is checked against the
OpenAPI document."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.brokerproc import wait_until
from tests.integration.share_clients import LOW_LIMIT
from tests.integration.test_http_api import HttpApi

# Short locks and a low delivery limit, so that redelivery takes seconds (Kafka's ranges allow them).
FAST_LOCKS = {"group.share.min.record.lock.duration.ms": "1000", "group.share.record.lock.duration.ms": "1000",
              "group.share.delivery.count.limit": "3"}


class Queue:
    """One HTTP consumer of a share group."""

    def __init__(self, http: HttpApi, group: str, topic: str, member_id: str | None = None) -> None:
        self.http, self.group, self.topic, self.member_id = http, group, topic, member_id

    def receive(self, max_records: int = 10, timeout_ms: int = 0) -> list[dict]:
        body = {"topic": self.topic, "max_records": max_records, "timeout_ms": timeout_ms}
        if self.member_id is not None:
            body["member_id"] = self.member_id
        answer = self.http.call("POST", "/share-groups/{group}/receive", 200, json_body=body, group=self.group)
        self.member_id = answer["member_id"]
        return answer["records"]

    def settle(self, action: str, receipts: list[str], **extra) -> dict:
        return self.http.call("POST", f"/share-groups/{{group}}/{action}", 200, group=self.group,
                              json_body={"member_id": self.member_id, "receipts": receipts, **extra})


def produce(http: HttpApi, topic: str, count: int, partitions: int) -> set[str]:
    values = [f"job-{i}" for i in range(count)]
    for start in range(0, count, 500):
        http.call("POST", "/topics/{topic}/records", 200, topic=topic, json_body={
            "records": [{"value": v, "partition": i % partitions} for i, v in enumerate(values[start:start + 500], start)]})
    return set(values)


def test_http_consumers_take_every_record_exactly_once(broker):
    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "work", "partitions": 6})
    consumers = [Queue(http, "workers", "work") for _ in range(3)]
    for _ in range(2):  # join (the group starts at the end of the log), then learn the settled assignment
        for consumer in consumers:
            assert consumer.receive() == []
    group = http.call("GET", "/share-groups/{group}", 200, group="workers")
    assert sorted(len(a["partitions"]) for m in group["members"] for a in m["assignment"]) == [2, 2, 2]
    values = produce(http, "work", 600, 6)
    taken: list[tuple[int, dict]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(index: int, consumer: Queue) -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if len(taken) >= len(values):
                        return
                records = consumer.receive(max_records=50, timeout_ms=500)
                if records:
                    done = consumer.settle("ack", [r["receipt"] for r in records])
                    assert done["failed"] == [] and len(done["acknowledged"]) == len(records)
                with lock:
                    taken.extend((index, r) for r in records)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    receipts = [r["receipt"] for _, r in taken]
    assert len(receipts) == 600 and len(set(receipts)) == 600  # every record once
    assert {r["value"] for _, r in taken} == values
    assert {r["delivery_count"] for _, r in taken} == {1}
    assert {i for i, _ in taken} == {0, 1, 2}
    group = http.call("GET", "/share-groups/{group}", 200, group="workers")
    assert group["lag"] == 0 and group["in_flight"] == 0 and group["counts"]["acknowledged"] == 600
    assert {(p["start_offset"], p["lag"]) for p in group["partitions"]} == {(100, 0)}
    assert {m["client_id"] for m in group["members"]} == {"tidelog-http"}
    listed = http.call("GET", "/share-groups", 200)["groups"]
    assert [(g["group_id"], g["members"], g["lag"]) for g in listed] == [("workers", 3, 0)]


def test_release_and_lock_expiry_redeliver_with_a_rising_count(broker_factory):
    broker = broker_factory(FAST_LOCKS)
    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "jobs", "partitions": 1})
    a, b = Queue(http, "g", "jobs"), Queue(http, "g", "jobs")
    a.receive(), b.receive()
    produce(http, "jobs", 1, 1)
    first = a.receive(max_records=1, timeout_ms=5000)
    assert [(r["receipt"], r["delivery_count"]) for r in first] == [("jobs/0/0", 1)]
    assert a.settle("release", ["jobs/0/0"])["acknowledged"] == ["jobs/0/0"]
    asked = time.monotonic()  # before b's acquisition: its lock runs out no earlier than 1 s after this
    again = b.receive(max_records=1, timeout_ms=5000)
    assert [(r["receipt"], r["delivery_count"]) for r in again] == [("jobs/0/0", 2)]
    # b does not acknowledge: its lock (1 s) runs out and a waiting receive gets the record back.
    third = a.receive(max_records=1, timeout_ms=10_000)
    assert [(r["receipt"], r["delivery_count"]) for r in third] == [("jobs/0/0", 3)]
    assert time.monotonic() - asked >= 0.95  # (from b's answer on, as it was, a slow answer left less than 0.5 s)
    late = b.settle("ack", ["jobs/0/0"])
    assert late["acknowledged"] == [] and late["failed"][0]["error_code"] == "INVALID_RECORD_STATE"
    # the third delivery was the last (share.delivery.count.limit 3): released, it is archived
    a.settle("release", ["jobs/0/0"])
    group = http.call("GET", "/share-groups/{group}", 200, group="g")
    assert group["counts"]["archived"] == 1 and group["counts"]["lock_expired"] == 1
    # release with a delay: available again only after it
    produce(http, "jobs", 1, 1)
    second = a.receive(max_records=1, timeout_ms=5000)
    assert [r["receipt"] for r in second] == ["jobs/0/1"]
    released = time.monotonic()  # before the release: the record is available no earlier than 1.5 s after this
    a.settle("release", ["jobs/0/1"], delay_ms=1500)
    delayed = b.receive(max_records=1, timeout_ms=10_000)
    assert [(r["receipt"], r["delivery_count"]) for r in delayed] == [("jobs/0/1", 2)]
    assert time.monotonic() - released >= 1.45  # (an empty receive right after the release needed it within 1.5 s)
    b.settle("ack", ["jobs/0/1"])
    assert http.call("GET", "/share-groups/{group}", 200, group="g")["lag"] == 0


def test_http_and_kafka_consumers_are_members_of_one_share_group(broker):
    from tests.integration.share_clients import share_consumer, wait_for

    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "mixed", "partitions": 2})
    queue = Queue(http, "mixed-group", "mixed")
    queue.receive()
    kafka = share_consumer(broker.bootstrap, "mixed-group", ["mixed"])
    try:
        def assignment() -> dict[str, list[int]]:
            group = http.call("GET", "/share-groups/{group}", 200, group="mixed-group")
            return {m["client_id"]: [p for a in m["assignment"] for p in a["partitions"]] for m in group["members"]}

        def heartbeats() -> None:
            assert list(kafka.poll(0.2)) == [] and queue.receive() == []

        # both members, and each has heard of the other's: one partition each
        wait_for(lambda: len(a := assignment()) == 2 and sorted(sum(a.values(), [])) == [0, 1], 30,
                 "one partition for each member", heartbeats)
        values = produce(http, "mixed", 200, 2)
        seen: list[str] = []

        def poll() -> None:
            for message in kafka.poll(0.2):
                assert message.error() is None
                seen.append(message.value().decode())
            records = queue.receive(max_records=100)
            if records:
                queue.settle("ack", [r["receipt"] for r in records])
            seen.extend(r["value"] for r in records)

        wait_for(lambda: len(seen) >= 200, 60, "every record", poll)
        kafka.commit_sync(30)
        assert sorted(seen) == sorted(values)
    finally:
        kafka.close()


@pytest.mark.slow
def test_broker_sigkill_loses_no_acknowledgement_and_redelivers_what_was_in_flight(broker):
    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "durable", "partitions": 1})
    queue = Queue(http, "crash", "durable", member_id="survivor")
    queue.receive()
    produce(http, "durable", 10, 1)
    records = queue.receive(max_records=10, timeout_ms=5000)
    assert len(records) == 10
    acked = [r["receipt"] for r in records[:5]]
    assert queue.settle("ack", acked)["acknowledged"] == acked  # durable before the answer
    broker.kill()
    broker.restart()
    http = HttpApi(broker)
    queue.http = http
    redelivered: list[dict] = []
    wait_until(lambda: redelivered.extend(queue.receive(max_records=10, timeout_ms=1000)) or len(redelivered) >= 5,
               timeout_s=60, message="the records in flight at the crash")
    assert sorted(r["receipt"] for r in redelivered) == sorted(r["receipt"] for r in records[5:])
    assert {r["delivery_count"] for r in redelivered} == {2}  # the count survived the crash
    queue.settle("ack", [r["receipt"] for r in redelivered])
    assert queue.receive(max_records=10, timeout_ms=500) == []
    assert requests.get(http.base + "/share-groups/crash", timeout=10).json()["lag"] == 0


def test_rejected_and_undeliverable_records_are_dead_lettered_and_counted(broker_factory):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    broker = broker_factory(LOW_LIMIT)
    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "orders", "partitions": 1})
    http.call("POST", "/topics", 201, json_body={"name": "dlq.orders", "partitions": 1,
                                                 "configs": {"errors.deadletterqueue.group.enable": "true"}})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        resource = ConfigResource(ConfigResourceType.GROUP, "pickers",
                                  configs={"errors.deadletterqueue.topic.name": "dlq.orders"})
        assert admin.alter_configs([resource], incremental=True)["group"]["pickers"] == "OK"
    finally:
        admin.close()
    queue = Queue(http, "pickers", "orders")
    queue.receive()
    http.call("POST", "/topics/{topic}/records", 200, topic="orders",
              json_body={"records": [{"value": "poison"}, {"value": "flaky"}]})
    records = queue.receive(max_records=2, timeout_ms=5000)
    assert [r["value"] for r in records] == ["poison", "flaky"]
    assert queue.settle("reject", ["orders/0/0"])["acknowledged"] == ["orders/0/0"]
    counts = [1]
    for _ in range(2):  # released until the delivery limit (3): the third release archives it
        queue.settle("release", ["orders/0/1"])
        counts += [r["delivery_count"] for r in queue.receive(max_records=1, timeout_ms=5000)]
    queue.settle("release", ["orders/0/1"])
    assert counts == [1, 2, 3]
    assert queue.receive(max_records=1, timeout_ms=1500) == []
    group = http.call("GET", "/share-groups/{group}", 200, group="pickers")
    assert group["counts"]["dead_lettered"] == 2 and group["counts"]["rejected"] == 1 and group["lag"] == 0
    assert group["config"]["dead_letter_topic"] == "dlq.orders"
    assert [g["dead_lettered"] for g in http.call("GET", "/share-groups", 200)["groups"]] == [2]
    letters = http.call("GET", "/topics/{topic}/partitions/{partition}/records", 200, topic="dlq.orders", partition=0,
                        params={"offset": 0, "timeout_ms": 5000})["records"]
    assert len(letters) == 2


def test_a_silent_http_member_is_removed_and_its_records_go_to_another(broker_factory):
    """Every call of an HTTP member is its heartbeat: one silent for share.session.timeout.ms is removed
    like a Kafka member, its records delivered again (that delivery counted) long before their locks
    (30 s) would run out; its late acknowledgement is UNKNOWN_MEMBER_ID and its next receive rejoins."""
    broker = broker_factory({"group.share.min.session.timeout.ms": "1000", "group.share.session.timeout.ms": "2000",
                             "group.share.min.heartbeat.interval.ms": "100", "group.share.heartbeat.interval.ms": "500"})
    http = HttpApi(broker)
    http.call("POST", "/topics", 201, json_body={"name": "tasks", "partitions": 1})
    silent, busy = Queue(http, "g", "tasks", member_id="silent"), Queue(http, "g", "tasks", member_id="busy")
    silent.receive(), busy.receive()
    produce(http, "tasks", 1, 1)
    assert [r["delivery_count"] for r in silent.receive(max_records=1, timeout_ms=5000)] == [1]
    taken: list[dict] = []
    # within 20 s: the session (2 s) ends, not the lock (30 s)
    wait_until(lambda: taken.extend(busy.receive(max_records=1, timeout_ms=500)) or taken, timeout_s=20,
               message="the silent member's record delivered to the busy one")
    assert [(r["receipt"], r["delivery_count"]) for r in taken] == [("tasks/0/0", 2)]
    members = [m["member_id"] for m in http.call("GET", "/share-groups/{group}", 200, group="g")["members"]]
    assert members == ["busy"]
    error = http.error("POST", "/share-groups/{group}/ack", 409, "UNKNOWN_MEMBER_ID", group="g",
                       json_body={"member_id": "silent", "receipts": ["tasks/0/0"]})
    assert "silent" in error
    assert silent.receive() == []  # joins again
    members = {m["member_id"] for m in http.call("GET", "/share-groups/{group}", 200, group="g")["members"]}
    assert members == {"busy", "silent"}
