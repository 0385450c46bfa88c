"""Share-group consume (KIP-932 queues): ``consumers`` confluent-kafka ShareConsumers of one new
share group take every record of the topic, each polled by its own thread, acknowledging
implicitly (the records of a poll are accepted with the next poll). Beside ``consume_group`` (a
consumer group of the same size) it shows what taking records one by one, with locks and
acknowledgements made durable, costs against reading partitions by offset.

The group is made to start at the earliest record (``share.auto.offset.reset=earliest`` through
IncrementalAlterConfigs on the GROUP resource) before its consumers subscribe; the clock runs from
the subscribe() calls, so joining and the first assignment are part of the time. A record counts
at its first delivery only (a redelivery would mean a lock ran out: reported as ``redelivered``)."""

from __future__ import annotations

import threading
import time
import uuid

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from benchmarks.kafka_load import phase_result


def start_earliest(bootstrap: str, group: str, timeout_s: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)


def consume_share(bootstrap: str, topic: str, records: int, record_bytes: int, timeout_s: float, consumers: int) -> dict:
    group = f"bench-share-{uuid.uuid4().hex[:8]}"
    start_earliest(bootstrap, group)
    lock = threading.Lock()
    received = redelivered = 0
    errors: list[str] = []
    done = threading.Event()
    deadline = time.monotonic() + timeout_s

    def member():
        nonlocal received, redelivered
        consumer = ck.ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, "error_cb": lambda err: None})
        try:
            consumer.subscribe([topic])
            while not done.is_set() and time.monotonic() < deadline:
                batch = consumer.poll(0.05)
                first = again = 0
                for message in batch:
                    if message.error() is None:
                        if (message.delivery_count() or 1) > 1:
                            again += 1
                        else:
                            first += 1
                    elif len(errors) < 5:
                        errors.append(str(message.error()))
                with lock:
                    received += first
                    redelivered += again
                    if received >= records:
                        done.set()
        finally:
            consumer.close()  # accepts the last poll's records and leaves the group

    cpu0 = time.process_time()
    start = time.perf_counter()
    threads = [threading.Thread(target=member, daemon=True) for _ in range(consumers)]
    for t in threads:
        t.start()
    done.wait(max(0.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - start
    client_cpu = time.process_time() - cpu0
    done.set()
    for t in threads:
        t.join(30)
    result = phase_result(received, record_bytes, seconds, client_cpu, "ok" if received >= records else "timeout", errors)
    result["redelivered"] = redelivered
    return result
