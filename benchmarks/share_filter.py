"""What a share group's filter (``tidelog.filter``, issue 14) costs the broker: the same log taken
by a share group without a filter and with one, the broker's CPU seconds per log record compared.

One broker, one topic of one partition, ``--records`` records of ``--record-bytes`` bytes, each
with a header ``type`` cycling over four values (the worst case for the share-partition: every
record of a matching type is alone between filtered-out ones) and, with ``--trace``, a unique
``traceparent`` header. Then, for each filter, a new share
group starting at the earliest record takes the whole log with one confluent-kafka ShareConsumer
(implicit acknowledgement) until it has every record the filter lets through; the broker's CPU
seconds over that phase divided by the log's records is the cost per record.
``--profile DIR`` samples the broker with py-spy during each phase (raw stacks and a summary).

    python -m benchmarks.share_filter --records 100000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from benchmarks.peers import Tidelog

TYPES = (b"order", b"refund", b"audit", b"ping")
FILTERS = {
    "unfiltered": "",
    "header": 'headers["type"] == b"order"',
    "optional-header": '"type" in headers && headers["type"] == b"order"',
}


def produce(bootstrap: str, topic: str, records: int, record_bytes: int, trace: bool) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 2000,
                            "compression.type": "none"})
    value = b"x" * record_bytes
    for n in range(records):
        while True:
            try:
                headers = {"type": TYPES[n % len(TYPES)]}
                if trace:
                    headers["traceparent"] = b"00-%032x-%016x-01" % (n, n)
                producer.produce(topic, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("produce did not finish")


def consume(bootstrap: str, topic: str, expression: str, expected: int, timeout_s: float) -> dict:
    group = f"bench-filter-{uuid.uuid4().hex[:8]}"
    configs = [ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)]
    if expression:
        configs.append(ConfigEntry("tidelog.filter", expression, incremental_operation=AlterConfigOpType.SET))
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=configs)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.incremental_alter_configs([resource])[resource].result(30)
    consumer = ck.ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, "error_cb": lambda err: None})
    received = 0
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([topic])
        while received < expected and time.monotonic() < deadline:
            received += sum(1 for m in consumer.poll(0.1) if m.error() is None)
    finally:
        consumer.close()
    return {"received": received, "expected": expected}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--filters", default=",".join(FILTERS))
    parser.add_argument("--trace", action="store_true", help="a traceparent header on every record too (unique)")
    parser.add_argument("--durability", default="throughput", help="log.durability.profile of the broker")
    parser.add_argument("--profile", type=Path, help="directory for py-spy's samples of each phase")
    parser.add_argument("--src", type=Path, help="run the broker from this src/ (a worktree of another commit, "
                                                 "to compare before and after on the same machine)")
    args = parser.parse_args(argv)
    if args.records > 1_000_000:
        parser.error("--records: at most 1,000,000 (a bounded load)")
    target = Tidelog(args.durability)
    if args.src:
        target.src_dir = args.src.resolve()
    with tempfile.TemporaryDirectory(prefix="tidelog-share-filter-") as workdir:
        server = target.start(Path(workdir))
        try:
            bootstrap = target.bootstrap
            topic = "filtered"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
            produce(bootstrap, topic, args.records, args.record_bytes, args.trace)
            rows = []
            for name in args.filters.split(","):
                expression = FILTERS[name]
                expected = args.records if not expression else len(range(0, args.records, len(TYPES)))

                def phase():
                    return consume(bootstrap, topic, expression, expected, args.timeout)

                cpu0 = server.cpu_seconds()
                start = time.perf_counter()
                if args.profile:
                    from benchmarks import profile
                    args.profile.mkdir(parents=True, exist_ok=True)
                    raw = args.profile / f"{name}.raw"
                    seconds, result = profile.record(server.pid, raw, phase)
                    (args.profile / f"{name}.json").write_text(json.dumps(profile.summarise(raw, seconds, 25), indent=1))
                else:
                    result = phase()
                seconds = time.perf_counter() - start
                cpu = server.cpu_seconds() - cpu0
                rows.append({"filter": name, **result, "seconds": round(seconds, 2), "broker_cpu_s": round(cpu, 2),
                             "broker_us_per_log_record": round(cpu * 1e6 / args.records, 2)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
