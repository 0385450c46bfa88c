"""Transactional produce beside idempotent produce, on one Tidelog broker.

    python -m benchmarks.transactions [--records 200000] [--record-bytes 1024] [--per-txn 100,1000]
                                      [--durability balanced] [--runs 3] [--out DIR]

One confluent-kafka producer (acks=all, linger.ms=5) writes ``--records`` records of
``--record-bytes`` to a one-partition topic, first idempotent (``enable.idempotence``), then
transactional with ``--per-txn`` records per transaction (begin, produce, commit_transaction,
which waits for the COMMIT markers). Each figure is records/s over the whole run, with
transactions/s and the broker's CPU seconds per 100,000 records; the median of ``--runs``.
Then a read_committed consumer reads the transactional topic back and the count is checked.

The broker is a ``tidelog serve`` process on a free loopback port with its own data directory
in a temporary directory, stopped by PID (SIGTERM) and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.procs import ServerProcess, cpu_seconds, free_port, port_open


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transactions", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--record-bytes", type=int, default=1024)
    p.add_argument("--per-txn", default="100,1000", help="records per transaction, comma-separated")
    p.add_argument("--durability", default="balanced", choices=("throughput", "balanced", "durable"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def _produce(bootstrap: str, topic: str, records: int, value: bytes, per_txn: int | None) -> float:
    """Seconds to write ``records`` (idempotent when ``per_txn`` is None)."""
    config = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
              "queue.buffering.max.messages": 1_000_000}
    if per_txn is not None:
        config["transactional.id"] = f"bench-{topic}"
    producer = ck.Producer(config)
    errors: list = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    if per_txn is not None:
        producer.init_transactions(30)
    began = time.perf_counter()
    sent = 0
    while sent < records:
        batch = records - sent if per_txn is None else min(per_txn, records - sent)
        if per_txn is not None:
            producer.begin_transaction()
        for _ in range(batch):
            while True:
                try:
                    producer.produce(topic, value, partition=0, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.01)
        sent += batch
        if per_txn is not None:
            producer.commit_transaction(60)
    assert producer.flush(120) == 0 and not errors, errors[:3]
    return time.perf_counter() - began


def _read_committed(bootstrap: str, topic: str, expected: int) -> int:
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-verify", "isolation.level": "read_committed",
                            "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.assign([ck.TopicPartition(topic, 0, 0)])
    count, deadline = 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(10_000, 1.0):
                if m.error():
                    if m.error().code() == ck.KafkaError._PARTITION_EOF and count >= expected:
                        return count
                    continue
                count += 1
    finally:
        consumer.close()
    return count


def main(argv=None) -> int:
    args = parse_args(argv)
    per_txn = [int(n) for n in args.per_txn.split(",") if n]
    value = b"x" * args.record_bytes
    root = Path(tempfile.mkdtemp(prefix="tidelog-bench-txn-"))
    port = free_port()
    server = ServerProcess("broker", [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port",
                                      str(port), "--data-dir", str(root / "data"), "--set", "http.port=-1",
                                      "--set", f"log.durability.profile={args.durability}"], root)
    bootstrap = f"127.0.0.1:{port}"
    rows = []
    try:
        server.start(lambda: port_open(port))
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for mode in [None, *per_txn]:
            label = "idempotent" if mode is None else f"transactional, {mode:,} per transaction"
            samples = []
            for run in range(args.runs):
                topic = f"bench-{'idem' if mode is None else mode}-{run}"
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                cpu_before = cpu_seconds(server.pids())
                seconds = _produce(bootstrap, topic, args.records, value, mode)
                cpu = cpu_seconds(server.pids()) - cpu_before
                if mode is not None:
                    read = _read_committed(bootstrap, topic, args.records)
                    assert read == args.records, f"read_committed read {read} of {args.records}"
                samples.append((args.records / seconds, cpu / args.records * 100_000))
            rate = statistics.median(s[0] for s in samples)
            rows.append({"mode": label, "records_per_s": round(rate), "transactions_per_s":
                         None if mode is None else round(rate / mode, 1),
                         "broker_cpu_s_per_100k": round(statistics.median(s[1] for s in samples), 2)})
            print(f"{label:40s} {rate:10,.0f} records/s"
                  + ("" if mode is None else f"  {rate / mode:8,.1f} transactions/s")
                  + f"  broker CPU {rows[-1]['broker_cpu_s_per_100k']} s / 100k records", flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "transactions.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                                "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
