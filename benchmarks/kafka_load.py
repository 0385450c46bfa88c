"""The Kafka workloads, driven by confluent-kafka (librdkafka) against any Kafka-compatible
broker: produce N records of a fixed size to one partition, then read them all back with
one consumer using assign() (no consumer group)."""

from __future__ import annotations

import os
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

# Settings of the issue: linger 5 ms, ~1 MiB batches, no compression. librdkafka also caps a
# batch at message.max.bytes (default 1,000,000), so batches are ~1 MB.
PRODUCER_SETTINGS = {
    "linger.ms": 5,
    "batch.size": 1_048_576,
    "compression.type": "none",
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "delivery.report.only.error": True,  # no Python callback per delivered record
    "message.timeout.ms": 120_000,
}
# Latency runs: 1 ms of batching (at 5,000/s ~5 records a request). With 0, every record is a
# request of its own and the request rate, not the record rate, is what gets measured.
LATENCY_LINGER_MS = 1
CONSUMER_SETTINGS = {
    # librdkafka insists on a group.id even for assign(); nothing is committed or joined.
    "group.id": "benchmark-assign-only",
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 1_048_576,
    "fetch.wait.max.ms": 500,
    # librdkafka's default (1,000 ms) stops fetching a partition for a whole second once
    # queued.min.messages (100,000) are waiting in the client: a consume loop that drains them in
    # a tenth of that then idles, and the figure measures the timer (100 B records: 170-200k
    # records/s with the default, 0.66-1.2M with 10 ms, same broker, same run).
    "fetch.queue.backoff.ms": 10,
}


def create_topic(bootstrap: str, topic: str, partitions: int = 1, timeout_s: float = 30.0) -> None:
    """CreateTopics; if the broker refuses or lacks it, fall back to auto-creation by Metadata."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=timeout_s)[topic].result(timeout_s)
    except ck.KafkaException as e:
        if e.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
            admin.list_topics(topic, timeout=timeout_s)  # auto-creates where enabled
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) >= partitions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not ready: {meta.error if meta else 'missing'}")
        time.sleep(0.05)


def phase_result(records: int, record_bytes: int, seconds: float, client_cpu_s: float, status: str,
                 errors: list[str] | None = None) -> dict:
    seconds = max(seconds, 1e-9)
    return {
        "records": records,
        "bytes": records * record_bytes,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "mb_per_s": records * record_bytes / seconds / 1e6,
        "client_cpu_s": client_cpu_s,
        "status": status,
        "errors": errors or [],
    }


def produce_into(producer: ck.Producer, topic: str, value: bytes, records: int, deadline: float,
                 partitions: int = 1, partition: int = 0) -> int:
    """Hand ``records`` copies of ``value`` to the producer; wait for queue space when full.
    One partition: ``partition``. Several: no partition given, so librdkafka's sticky
    partitioner for keyless records picks one per batch."""
    produce = producer.produce
    poll = producer.poll
    kwargs = {"partition": partition} if partitions == 1 else {}
    sent = 0
    while sent < records:
        try:
            produce(topic, value, **kwargs)
        except BufferError:
            poll(0.005)
            if time.monotonic() > deadline:
                break
            continue
        sent += 1
        if sent & 1023 == 0:
            poll(0)
    return sent


def produce(bootstrap: str, topic: str, records: int, record_bytes: int, acks: str, timeout_s: float,
            partitions: int = 1) -> dict:
    """Produce ``records`` values of ``record_bytes`` (random, so incompressible); time from
    the first produce() call until flush() returns, i.e. until every record is acknowledged."""
    value = os.urandom(record_bytes)
    failures: list[str] = []
    failed = 0

    def on_delivery(err, msg):  # called for failures only (delivery.report.only.error)
        nonlocal failed
        failed += 1
        if len(failures) < 5:
            failures.append(str(err))

    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": acks, **PRODUCER_SETTINGS,
                            "on_delivery": on_delivery, "error_cb": lambda err: None})
    deadline = time.monotonic() + timeout_s
    cpu0 = time.process_time()
    start = time.perf_counter()
    sent = produce_into(producer, topic, value, records, deadline, partitions)
    remaining = producer.flush(max(0.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - start
    client_cpu = time.process_time() - cpu0
    if remaining:
        producer.purge()
        producer.flush(1)
    acked = sent - remaining - failed
    status = "ok" if acked == records else ("errors" if failed else "timeout")
    return phase_result(acked, record_bytes, seconds, client_cpu, status, failures)


def consume(bootstrap: str, topic: str, records: int, record_bytes: int, timeout_s: float, partitions: int = 1,
            assigned: list[int] | None = None) -> dict:
    """Read every partition (or the ``assigned`` ones) from offset 0 until ``records`` records have arrived."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, **CONSUMER_SETTINGS, "error_cb": lambda err: None})
    errors: list[str] = []
    received = 0
    deadline = time.monotonic() + timeout_s
    cpu0 = time.process_time()
    start = time.perf_counter()
    consumer.assign([ck.TopicPartition(topic, p, 0) for p in (range(partitions) if assigned is None else assigned)])
    try:
        while received < records and time.monotonic() < deadline:
            # consume(n, timeout) returns when it has n messages or the timeout passed: ask for
            # no more than are still due, or the last call would wait out its timeout.
            for message in consumer.consume(min(10_000, records - received), 0.5):
                if message.error() is None:
                    received += 1
                elif len(errors) < 5:
                    errors.append(str(message.error()))
        seconds = time.perf_counter() - start
        client_cpu = time.process_time() - cpu0
    finally:
        consumer.close()
    return phase_result(received, record_bytes, seconds, client_cpu, "ok" if received >= records else "timeout", errors)


def client_ceiling(records: int, record_bytes: int, partitions: int = 1) -> dict:
    """The producer with no broker reachable: bootstrap is a loopback port nothing listens on,
    the queue is large enough for every record, and we time produce() accepting them all.
    That is the rate at which this Python loop and librdkafka's enqueue path can take records
    (no batching, no sending): no broker driven by this client can be measured above it."""
    from benchmarks.procs import free_port

    value = os.urandom(record_bytes)
    producer = ck.Producer({
        "bootstrap.servers": f"127.0.0.1:{free_port()}",
        **PRODUCER_SETTINGS,
        "queue.buffering.max.messages": records + 1,
        "queue.buffering.max.kbytes": min(2_147_483_647, records * (record_bytes + 200) // 1024 + 1024),
        "message.timeout.ms": 300_000,
        "error_cb": lambda err: None,
        "log_level": 0,
    })
    cpu0 = time.process_time()
    start = time.perf_counter()
    sent = produce_into(producer, "ceiling", value, records, time.monotonic() + 300, partitions)
    seconds = time.perf_counter() - start
    client_cpu = time.process_time() - cpu0
    producer.purge()
    producer.flush(0)
    return phase_result(sent, record_bytes, seconds, client_cpu, "ok" if sent == records else "timeout")


# librdkafka's mock cluster keeps about 5 MB per partition (older message sets are dropped as
# new ones arrive) and creates a topic of this many partitions on first use.
MOCK_PARTITION_BYTES = 5_000_000
MOCK_TOPIC_PARTITIONS = 4


def consume_ceiling(records: int, record_bytes: int, timeout_s: float, partitions: int = 1,
                    settings: dict | None = None, before_close=None) -> dict:
    """The consumer against librdkafka's in-process mock cluster (``test.mock.num.brokers``), a C
    broker that answers from memory: the fastest any broker can serve this consume loop.

    It holds only ~5 MB a partition, so the consumer reads what it holds, seeks each partition
    back to its first offset when it reaches the end, and goes on until ``records`` have
    arrived. The clock stops from a seek until the next records arrive whenever every
    partition was sent back at once (with one partition, every time), so the figure is the
    streaming rate, the round trips a real broker's prefetch would hide left out: an upper
    bound. The workload's consumer settings, except ``fetch.wait.max.ms`` (with data there a
    broker answers at once whatever it says; it only sets how long the mock parks the fetch at
    the end of what it holds before each seek) and ``fetch.error.backoff.ms`` (a seek makes the
    fetch in flight outdated, which librdkafka backs off from for 500 ms by default: 0.5 s
    stalls that a consumer streaming from a broker never meets). Partitions: topics of ``MOCK_TOPIC_PARTITIONS``
    (the mock creates topics on first use with that many; it does not serve CreateTopics).
    ``settings``: more consumer settings (statistics); ``before_close(consumer)`` runs after the
    clock stops.
    """
    mock = ck.Producer({"test.mock.num.brokers": 1, **PRODUCER_SETTINGS, "log_level": 0, "error_cb": lambda err: None})
    deadline = time.monotonic() + timeout_s
    consumer = None
    try:
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in mock.list_topics(timeout=10).brokers.values())
        topics = [f"ceiling-{i}" for i in range(-(-partitions // MOCK_TOPIC_PARTITIONS))]
        for topic in topics:
            mock.list_topics(topic, timeout=10)  # creates it
        assigned = [(topics[i // MOCK_TOPIC_PARTITIONS], i % MOCK_TOPIC_PARTITIONS) for i in range(partitions)]
        value = os.urandom(record_bytes)
        fill = MOCK_PARTITION_BYTES * 6 // 5 // (record_bytes + 20) + 1  # more than it keeps
        for topic, partition in assigned:
            produce_into(mock, topic, value, fill, deadline, partition=partition)
        if mock.flush(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the mock cluster did not take the records in time")
        consumer = ck.Consumer({"bootstrap.servers": bootstrap, **CONSUMER_SETTINGS, "fetch.wait.max.ms": 5, "fetch.error.backoff.ms": 1,
                                "log_level": 0, "error_cb": lambda err: None, **(settings or {})})
        tps = [ck.TopicPartition(topic, partition) for topic, partition in assigned]
        marks = [consumer.get_watermark_offsets(tp, timeout=10) for tp in tps]
        held = [high - low for low, high in marks]
        if min(held) <= 0:
            raise RuntimeError(f"the mock cluster holds no records: {marks}")
        errors: list[str] = []
        received = 0
        seeks = 0
        stalled = 0.0
        stall_started: float | None = None
        positions = [low for low, _ in marks]
        cpu0 = time.process_time()
        start = time.perf_counter()
        consumer.assign([ck.TopicPartition(t, p, low) for (t, p), (low, _) in zip(assigned, marks)])
        while received < records and time.monotonic() < deadline:
            due = sum(high - at for at, (_, high) in zip(positions, marks))
            # After a rewind of every partition, one record: the clock restarts when it arrives.
            wanted = 1 if stall_started is not None else min(10_000, due, records - received)
            batch = consumer.consume(wanted, 0.5)
            if batch and stall_started is not None:
                stalled += time.perf_counter() - stall_started
                stall_started = None
            for message in batch:
                if message.error() is None:
                    received += 1
                elif len(errors) < 5:
                    errors.append(str(message.error()))
            positions = [tp.offset for tp in consumer.position(tps)]
            rewound = 0
            for i, (low, high) in enumerate(marks):
                if positions[i] >= high:
                    consumer.seek(ck.TopicPartition(tps[i].topic, tps[i].partition, low))
                    positions[i] = low
                    rewound += 1
            seeks += rewound
            if rewound == len(tps) and stall_started is None:
                stall_started = time.perf_counter()
        seconds = time.perf_counter() - start - stalled
        client_cpu = time.process_time() - cpu0
        if before_close is not None:
            before_close(consumer)
    finally:
        if consumer is not None:
            consumer.close()
        mock.purge()
    result = phase_result(received, record_bytes, seconds, client_cpu, "ok" if received >= records else "timeout", errors)
    result.update(records_held_per_partition=min(held), seeks=seeks, stalled_s=stalled)
    return result


def consume_group(bootstrap: str, topic: str, records: int, record_bytes: int, timeout_s: float, consumers: int) -> dict:
    """``consumers`` members of one new consumer group subscribe() to the topic, each polled by
    its own thread (librdkafka releases the GIL while it waits); the clock runs from the
    subscribe() calls, so the group join and first rebalance are part of the time."""
    import threading
    import uuid

    group = f"bench-{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    received = 0
    errors: list[str] = []
    done = threading.Event()
    deadline = time.monotonic() + timeout_s

    def member():
        nonlocal received
        consumer = ck.Consumer({"bootstrap.servers": bootstrap, **CONSUMER_SETTINGS, "group.id": group,
                                "auto.offset.reset": "earliest", "error_cb": lambda err: None})
        try:
            consumer.subscribe([topic])
            while not done.is_set() and time.monotonic() < deadline:
                count = 0
                for message in consumer.consume(1_000, 0.05):
                    if message.error() is None:
                        count += 1
                    elif len(errors) < 5:
                        errors.append(str(message.error()))
                with lock:
                    received += count
                    if received >= records:
                        done.set()
        finally:
            consumer.close()

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
    return phase_result(received, record_bytes, seconds, client_cpu, "ok" if received >= records else "timeout", errors)


def latency(bootstrap: str, topic: str, rate: int, seconds: float, record_bytes: int, acks: str, timeout_s: float,
            acknowledgements: bool = False, linger_ms: float = LATENCY_LINGER_MS, samples: bool = False) -> dict:
    """End-to-end latency at a fixed rate: a producer paced to ``rate`` records/s for
    ``seconds`` (``linger_ms``), each value stamped with perf_counter_ns; a consumer in a
    thread of the same process, assigned to partition 0, subtracts the stamp on arrival.
    ``acknowledgements``: also each record's time from produce() to its acknowledgement
    (librdkafka's message latency), ``ack_latency_ms``: the produce side of the end-to-end time.
    ``samples``: with ``acknowledgements``, each one too (``ack_latencies_s``)."""
    import struct
    import threading

    records = int(rate * seconds)
    latencies_ns: list[int] = []
    errors: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    def consume_stamps():
        consumer = ck.Consumer({"bootstrap.servers": bootstrap, **CONSUMER_SETTINGS, "error_cb": lambda err: None})
        consumer.assign([ck.TopicPartition(topic, 0, 0)])
        try:
            consumer.consume(1, 0.5)  # connected and fetching before the producer starts
            ready.set()
            while len(latencies_ns) < records and not stop.is_set():
                message = consumer.poll(0.1)  # returns as soon as one record is there
                if message is None:
                    continue
                now = time.perf_counter_ns()
                if message.error() is None:
                    latencies_ns.append(now - struct.unpack_from(">q", message.value())[0])
                elif len(errors) < 5:
                    errors.append(str(message.error()))
        finally:
            ready.set()
            consumer.close()

    thread = threading.Thread(target=consume_stamps, daemon=True)
    thread.start()
    ready.wait(30)
    acked_s: list[float] = []

    def on_acknowledged(err, msg):
        took = msg.latency() if err is None else None
        if took is not None:
            acked_s.append(took)

    extra = {"delivery.report.only.error": False, "on_delivery": on_acknowledged} if acknowledgements else {}
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": acks, **PRODUCER_SETTINGS, "linger.ms": linger_ms,
                            "error_cb": lambda err: None, **extra})
    padding = os.urandom(max(0, record_bytes - 8))
    pack = struct.Struct(">q").pack
    cpu0 = time.process_time()
    start = time.perf_counter()
    sent = 0
    interval = 1.0 / rate
    while sent < records:
        due = int((time.perf_counter() - start) / interval) + 1
        while sent < min(due, records):
            producer.produce(topic, pack(time.perf_counter_ns()) + padding, partition=0)
            sent += 1
        producer.poll(0)
        next_at = start + sent * interval
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(min(pause, 0.001))
    producer.flush(timeout_s)
    deadline = time.monotonic() + timeout_s
    while len(latencies_ns) < records and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join(10)
    client_cpu = time.process_time() - cpu0
    received = len(latencies_ns)
    result = phase_result(received, record_bytes, elapsed, client_cpu, "ok" if received >= records else "timeout", errors)
    if latencies_ns:
        ordered = sorted(latencies_ns)

        def pct(q):
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

        result["latency_ms"] = {"p50": pct(0.50), "p99": pct(0.99), "p99.9": pct(0.999), "max": ordered[-1] / 1e6}
    if acked_s:
        acked_ms = sorted(s * 1e3 for s in acked_s)
        result["ack_latency_ms"] = {q: acked_ms[min(len(acked_ms) - 1, int(f * len(acked_ms)))]
                                    for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
        if samples:
            result["ack_latencies_s"] = acked_s
    result["target_rate"] = rate
    return result
