"""Replicated workload: 3 Tidelog brokers and one etcd on loopback (dev-cluster style processes),
replication factor 3, min.insync.replicas=2, acks=all, 1 KiB records, one partition; the same
workload against a single-node broker in the same run for the ratio; then failover times.

    python -m benchmarks.replicated [--records 200000] [--runs 3] [--failovers 3] [--out DIR]

Throughput phases are kafka_load.produce / consume (the producer and consumer settings of the
other workloads). Failover: an idempotent acks=all producer writes continuously (linger 5 ms,
metadata refresh 1 s) while the partition's leader is SIGKILLed; the failover time is from the
kill to the first record acknowledged after it. The killed broker then restarts and the ISR
heals before the next round. Every process runs in its own session and is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import kafka_load
from benchmarks.procs import ServerProcess, free_port, port_open, wait_until

RECORD_BYTES = 1024
# Failure detection like the cluster tests: a dead broker's lease lapses after 2 s.
CLUSTER_SETTINGS = {"broker.session.timeout.ms": "2000", "replica.lag.time.max.ms": "2000", "http.port": "-1",
                    "log.durability.profile": "balanced"}


def start_etcd(workdir: Path) -> tuple[ServerProcess, str]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise SystemExit("etcd is not installed (Debian/Ubuntu: apt-get install -y etcd-server)")
    client_port, peer_port = free_port(), free_port()
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    args = [etcd, "--name", "bench", "--data-dir", str(workdir / "etcd-data"), "--listen-client-urls", client,
            "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"bench={peer}", "--max-txn-ops", "10000", "--heartbeat-interval", "50",
            "--election-timeout", "500", "--log-level", "warn"]

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{client}/health", timeout=1) as response:
                return b"true" in response.read()
        except OSError:
            return False

    return ServerProcess("etcd", args, workdir).start(healthy), f"etcd://127.0.0.1:{client_port}"


class Broker:
    """One ``tidelog serve`` (cluster member when ``cluster`` is given) on a fixed port."""

    def __init__(self, workdir: Path, node_id: int, cluster: str | None, settings: dict[str, str]) -> None:
        self.workdir, self.node_id, self.cluster, self.settings = workdir, node_id, cluster, settings
        self.port = free_port()
        self.server: ServerProcess | None = None

    def start(self) -> "Broker":
        port_file = self.workdir / f"broker-{self.node_id}.port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--port-file", str(port_file), "--data-dir", str(self.workdir / f"broker-{self.node_id}"),
                "--log-level", "WARNING"]
        if self.cluster:
            args += ["--cluster", self.cluster, "--broker-id", str(self.node_id)]
        for name, value in self.settings.items():
            args += ["--set", f"{name}={value}"]
        self.server = ServerProcess(f"broker-{self.node_id}", args, self.workdir)
        self.server.start(lambda: port_file.exists() and port_open(self.port))
        return self

    def kill(self) -> None:
        if self.server is not None and self.server.proc.poll() is None:
            self.server.proc.send_signal(signal.SIGKILL)
            self.server.proc.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def create_topic(bootstrap: str, topic: str, replication_factor: int, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, replication_factor, config=configs)], request_timeout=30)[topic].result(30)

    def ready() -> bool:
        partition = admin.list_topics(topic, timeout=10).topics[topic].partitions.get(0)
        return partition is not None and partition.leader > 0 and len(partition.isrs) == replication_factor

    wait_until(ready, 30, f"{topic} led with a full ISR")


def throughput(bootstrap: str, topic: str, records: int, timeout_s: float) -> dict:
    produced = kafka_load.produce(bootstrap, topic, records, RECORD_BYTES, "all", timeout_s)
    consumed = kafka_load.consume(bootstrap, topic, records, RECORD_BYTES, timeout_s)
    return {"produce": produced, "consume": consumed}


def measure_failovers(brokers: dict[int, Broker], bootstrap: str, rounds: int) -> list[float]:
    """Leader SIGKILLed under a continuous acks=all producer: seconds to the next acknowledgement."""
    topic = "failover"
    create_topic(bootstrap, topic, 3, {"min.insync.replicas": "2"})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    acked: list[float] = []
    failed: list[str] = []
    stop = threading.Event()
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                            "retry.backoff.ms": 20, "retry.backoff.max.ms": 100, "message.timeout.ms": 60000,
                            "topic.metadata.refresh.interval.ms": 1000, "error_cb": lambda err: None})

    def delivered(err, msg) -> None:
        (failed.append(str(err)) if err is not None else acked.append(time.monotonic()))

    def write() -> None:
        while not stop.is_set():
            try:
                producer.produce(topic, value=b"x" * RECORD_BYTES, partition=0, on_delivery=delivered)
            except BufferError:
                pass
            producer.poll(0.001)
        producer.flush(60)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    times = []
    try:
        for _ in range(rounds):
            before = len(acked)
            wait_until(lambda: len(acked) > before + 1000, 60, "records acknowledged before the kill")
            leader_id = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
            brokers[leader_id].kill()
            killed_at = time.monotonic()
            wait_until(lambda: acked and acked[-1] > killed_at, 60, "an acknowledgement after the kill")
            times.append(min(t for t in acked if t > killed_at) - killed_at)
            print(f"failover: leader {leader_id} SIGKILLed, next acknowledgement {times[-1]:.2f} s later", flush=True)
            brokers[leader_id].start()
            wait_until(lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions[0].isrs) == 3,
                       60, "the ISR healed")
    finally:
        stop.set()
        writer.join(90)
    if failed:
        print(f"failover producer errors: {failed[:3]}", flush=True)
    return times


def run(records: int, runs: int, failovers: int, timeout_s: float, tmp_root: Path) -> dict:
    results: dict = {"records": records, "record_bytes": RECORD_BYTES, "single": [], "replicated": [], "failover_s": []}
    # Single node, the same workload (replication factor 1).
    for run_index in range(runs):
        workdir = tmp_root / f"single-{run_index}"
        workdir.mkdir()
        broker = Broker(workdir, 1, None, {"http.port": "-1", "log.durability.profile": "balanced"}).start()
        try:
            create_topic(broker.bootstrap, "bench", 1, {})
            results["single"].append(throughput(broker.bootstrap, "bench", records, timeout_s))
        finally:
            broker.stop()
        print(f"single node run {run_index + 1}: produce {results['single'][-1]['produce']['records_per_s']:,.0f} rec/s",
              flush=True)
    # Three brokers, replication factor 3.
    for run_index in range(runs):
        workdir = tmp_root / f"cluster-{run_index}"
        workdir.mkdir()
        etcd, cluster = start_etcd(workdir)
        brokers = {i: Broker(workdir, i, cluster, CLUSTER_SETTINGS) for i in (1, 2, 3)}
        try:
            for broker in brokers.values():
                broker.start()
            bootstrap = ",".join(b.bootstrap for b in brokers.values())
            create_topic(bootstrap, "bench", 3, {"min.insync.replicas": "2"})
            results["replicated"].append(throughput(bootstrap, "bench", records, timeout_s))
            print(f"replicated run {run_index + 1}: produce {results['replicated'][-1]['produce']['records_per_s']:,.0f} rec/s",
                  flush=True)
            if run_index == runs - 1 and failovers:
                results["failover_s"] = measure_failovers(brokers, bootstrap, failovers)
        finally:
            for broker in brokers.values():
                broker.stop()
            etcd.stop()
    return results


def markdown(results: dict) -> str:
    def median(rows, phase):
        return statistics.median(r[phase]["records_per_s"] for r in rows) if rows else 0.0

    lines = ["| setup | produce records/s | produce MB/s | consume records/s |", "|---|---:|---:|---:|"]
    for label, rows in (("single node (RF 1)", results["single"]), ("3 brokers (RF 3, min.insync.replicas 2)", results["replicated"])):
        produce = median(rows, "produce")
        lines.append(f"| {label} | {produce:,.0f} | {produce * RECORD_BYTES / 1e6:,.1f} | {median(rows, 'consume'):,.0f} |")
    single, replicated = median(results["single"], "produce"), median(results["replicated"], "produce")
    if single:
        lines.append(f"\nReplicated produce: {replicated / single:.0%} of the single node (medians of {len(results['single'])} runs, "
                     f"{results['records']:,} records of {RECORD_BYTES} B, acks=all).")
    if results["failover_s"]:
        times = results["failover_s"]
        lines.append(f"\nFailover (leader SIGKILL to the next acknowledged record, {len(times)} rounds): "
                     + ", ".join(f"{t:.2f} s" for t in times) + f"; median {statistics.median(times):.2f} s.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replicated", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally-blocks stop every server
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-replicated-"))
    try:
        results = run(args.records, args.runs, args.failovers, args.timeout, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replicated-latest.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
