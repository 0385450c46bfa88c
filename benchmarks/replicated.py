"""Replicated workload: 3 Tidelog brokers and one etcd on loopback (dev-cluster style processes),
replication factor 3, min.insync.replicas=2, acks=all, 1 KiB records, one partition; the same
workload against a single-node broker in the same run for the ratio; then failover times.

    python -m benchmarks.replicated [--records 200000] [--runs 3] [--failovers 3] [--latency-seconds 10]
                                    [--profile] [--out DIR] [--cluster-only] [--set NAME=VALUE]
                                    [--tidelog-ref REF] [--cold-memory GIB]

Throughput phases are kafka_load.produce / consume (the producer and consumer settings of the
other workloads); each broker's CPU seconds per GB produced are reported by role (the
partition's leader, each follower), with the load average after every phase, and the produce
phase's CPU-bound ceiling: the CPU seconds per GB of every process of the setup (brokers, etcd,
the client) and the records/s at which they would fill the machine's cores. Latency: the
lat-5k shape (kafka_load.latency: 5,000 records/s of 1 KiB for 10 s, acks=all, linger 1 ms, a
consumer in the same process) on a new topic, RF 1 on the single node and RF 3 with
min.insync.replicas=2 on the cluster, with each record's produce-to-acknowledgement time
beside the end-to-end one; each latency run, and the disk alone at its write pattern after it,
starts with the machine's write-back of the throughput phases finished (benchmarks/writeback.py).
``--profile``: py-spy samples the three brokers during the first replicated produce run (raw
stacks and the top functions into --out). Failover: an idempotent acks=all producer writes
continuously (linger 5 ms, metadata refresh 1 s) while the partition's leader is SIGKILLed; the
failover time is from the kill to the first record acknowledged after it. The killed broker then
restarts and the ISR heals before the next round. Every process runs in its own session and is
stopped by PID. For A/Bs: ``--tidelog-ref REF`` runs that commit's
src/ (git archive, C extension built) instead of the working tree, ``--set`` adds a setting to
every cluster broker, ``--cluster-only`` skips the single node. ``--cold-memory GIB``: during each
produce phase a helper process holds GIB of anonymous memory it touched just before, taking
the pages the machine freed lately: on this VM (virtio-balloon free page reporting) the
brokers' page-cache writes then go to memory the host must fault in first, as on an idle
machine, where nothing else frees pages (under other engineers' load their frees keep memory
warm and hide the cost; BENCHMARKS.md, "Session 16").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import kafka_load, procs, references, writeback
from benchmarks.procs import ServerProcess, free_port, port_open, wait_until

RECORD_BYTES = 1024
LATENCY_RATE = 5_000  # records/s of the latency runs (the lat-5k shape)
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

    src_dir: Path | None = None  # --tidelog-ref: that commit's exported src/
    trace_dir: Path | None = None  # run under benchmarks/broker_trace.py, its rows into broker-<id>.json here

    def __init__(self, workdir: Path, node_id: int, cluster: str | None, settings: dict[str, str]) -> None:
        self.workdir, self.node_id, self.cluster, self.settings = workdir, node_id, cluster, settings
        self.port = free_port()
        self.server: ServerProcess | None = None

    def start(self) -> "Broker":
        port_file = self.workdir / f"broker-{self.node_id}.port"
        port_file.unlink(missing_ok=True)
        if self.trace_dir is not None:
            launcher = [str(Path(__file__).resolve().parent / "broker_trace.py"), str(self.trace_dir / f"broker-{self.node_id}.json")]
        else:
            launcher = ["-m", "tidelog"]
        args = [sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--port-file", str(port_file), "--data-dir", str(self.workdir / f"broker-{self.node_id}"),
                "--log-level", "WARNING"]
        if self.cluster:
            args += ["--cluster", self.cluster, "--broker-id", str(self.node_id)]
        for name, value in self.settings.items():
            args += ["--set", f"{name}={value}"]
        env = {"PYTHONPATH": str(self.src_dir)} if self.src_dir else None
        self.server = ServerProcess(f"broker-{self.node_id}", args, self.workdir, env)
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


def load_average() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


def leader_of(bootstrap: str, topic: str) -> int:
    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions[0].leader


def user_system_seconds(pid: int) -> tuple[float, float]:
    """A process's CPU seconds in user space (Python, C extensions) and in the kernel (its
    syscalls: sendfile, socket and file writes, and on loopback the peer's TCP receive run in
    the sender's softirq), all its threads (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


COLD_MEMORY_GIB = 0  # --cold-memory
_HOLD_MEMORY = (
    "import mmap, sys\n"
    "n = int(sys.argv[1]) << 30\n"
    "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "chunk = b'\\1' * (1 << 20)\n"
    "for off in range(0, n, 1 << 20):\n"
    "    m[off:off + (1 << 20)] = chunk\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def cold_memory(gib: int):
    """Hold ``gib`` GiB of memory touched just before (the machine's recently freed pages) while
    the block runs; nothing when 0."""
    if not gib:
        yield
        return
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_MEMORY, str(gib)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            raise SystemExit(f"--cold-memory: could not hold {gib} GiB")
        yield
    finally:
        holder.stdin.close()
        try:
            holder.wait(30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def throughput(bootstrap: str, topic: str, records: int, timeout_s: float, brokers: dict[int, "Broker"],
               profile_dir: Path | None = None, etcd: ServerProcess | None = None) -> dict:
    """Produce then consume ``records``; each broker's CPU seconds per GB produced (by role:
    the partition's leader, its followers), and the load average after each phase. With
    ``profile_dir``, py-spy samples every broker during the produce phase.

    The CPU-bound ceiling of the produce phase: every process of the setup (brokers, etcd, the
    producing client) in CPU seconds per GB, and the records/s at which they would fill the
    machine's cores (``ceiling_records_per_s``: cores / s per GB); beside it the machine's own
    busy seconds per GB (/proc/stat: also the kernel's threads, write-back and softirq run
    outside any process, and whatever else runs on the machine) and its busy cores."""
    leader_id = leader_of(bootstrap, topic)
    held = contextlib.ExitStack()  # --cold-memory: taken before the counters start (its touching is not the phase's)
    held.enter_context(cold_memory(COLD_MEMORY_GIB))
    before = {i: b.server.cpu_seconds() for i, b in brokers.items()}
    split_before = {i: user_system_seconds(b.server.pid) for i, b in brokers.items()}
    etcd_before = etcd.cpu_seconds() if etcd is not None else 0.0
    machine_before = procs.machine_busy_cpu_seconds()
    produce = lambda: kafka_load.produce(bootstrap, topic, records, RECORD_BYTES, "all", timeout_s)  # noqa: E731
    profiles = None
    try:
        if profile_dir is None:
            produced = produce()
        else:
            from benchmarks import profile

            raw = {b.server.pid: profile_dir / f"broker-{i}-{'leader' if i == leader_id else 'follower'}.raw"
                   for i, b in brokers.items()}
            seconds, produced = profile.record_many(raw, produce)
            profiles = {path.stem: profile.summarise(path, seconds) for path in raw.values()}
    except BaseException:
        held.close()
        raise
    produced["cold_memory_gib"] = COLD_MEMORY_GIB
    cpu = {i: b.server.cpu_seconds() - before[i] for i, b in brokers.items()}
    machine_busy = procs.machine_busy_cpu_seconds() - machine_before
    etcd_cpu = etcd.cpu_seconds() - etcd_before if etcd is not None else 0.0
    split = {i: tuple(after - earlier for after, earlier in zip(user_system_seconds(b.server.pid), split_before[i]))
             for i, b in brokers.items()}
    held.close()  # after the counters: its memory's release is not the phase's either
    produced["load_average"] = load_average()
    gigabytes = produced["bytes"] / 1e9
    if gigabytes:
        cores = os.cpu_count() or 1
        setup_s_per_gb = (sum(cpu.values()) + etcd_cpu + produced["client_cpu_s"]) / gigabytes
        produced["ceiling"] = {
            "cores": cores, "client_s_per_gb": round(produced["client_cpu_s"] / gigabytes, 3),
            "etcd_s_per_gb": round(etcd_cpu / gigabytes, 3), "setup_s_per_gb": round(setup_s_per_gb, 3),
            "ceiling_records_per_s": round(cores / setup_s_per_gb * 1e9 / RECORD_BYTES) if setup_s_per_gb else None,
            "machine_busy_s_per_gb": round(machine_busy / gigabytes, 3),
            "machine_busy_cores": round(machine_busy / produced["seconds"], 2)}
    if gigabytes:  # (user, system) s/GB: Python's share against the kernel's
        produced["leader_user_system_s_per_gb"] = [round(x / gigabytes, 3) for x in split[leader_id]]
        produced["follower_user_system_s_per_gb"] = [[round(x / gigabytes, 3) for x in split[i]]
                                                     for i in sorted(split) if i != leader_id]
    produced["leader_cpu_s_per_gb"] = cpu[leader_id] / gigabytes if gigabytes else None
    produced["follower_cpu_s_per_gb"] = sorted(c / gigabytes for i, c in cpu.items() if i != leader_id) if gigabytes else []
    if profiles is not None:
        produced["profiles"] = profiles
    consumed = kafka_load.consume(bootstrap, topic, records, RECORD_BYTES, timeout_s)
    consumed["load_average"] = load_average()
    return {"produce": produced, "consume": consumed}


def latency(bootstrap: str, topic: str, replication_factor: int, seconds: float, timeout_s: float,
            brokers: dict[int, "Broker"]) -> dict:
    """End-to-end latency at LATENCY_RATE records/s, acks=all (kafka_load.latency, the lat-5k
    shape), with each record's produce-to-acknowledgement time beside it, and each broker's CPU
    microseconds per record by role (at a fixed rate, less at the mercy of the machine's load
    than throughput figures are)."""
    create_topic(bootstrap, topic, replication_factor, {"min.insync.replicas": "2"} if replication_factor > 1 else {})
    leader_id = leader_of(bootstrap, topic)
    # The throughput phase's write-back (up to three brokers' copies of it) finished first, as
    # every latency row of the main benchmark starts (benchmarks/writeback.py).
    settled = writeback.settle()
    device = writeback.device_name(next(iter(brokers.values())).workdir)
    disk_before = writeback.disk_counters(device)
    before = {i: b.server.cpu_seconds() for i, b in brokers.items()}
    result = kafka_load.latency(bootstrap, topic, LATENCY_RATE, seconds, RECORD_BYTES, "all", timeout_s,
                                acknowledgements=True)
    result["writeback_before"] = settled
    result["disk_during"] = writeback.disk_delta(disk_before, writeback.disk_counters(device))
    cpu_us = {i: (b.server.cpu_seconds() - before[i]) * 1e6 / max(result["records"], 1) for i, b in brokers.items()}
    result["leader_cpu_us_per_record"] = cpu_us[leader_id]
    result["follower_cpu_us_per_record"] = sorted(c for i, c in cpu_us.items() if i != leader_id)
    result["load_average"] = load_average()
    return result


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


def disk_reference(tmp_root: Path, seconds: float, followers: int) -> dict:
    """The disk alone at a setup's write pattern (references.group_commit_wait), as long as the
    latency run and, like it, starting with the machine's write-back finished."""
    settled = writeback.settle()
    return {"writeback_before": settled, **references.group_commit_wait(tmp_root, seconds=seconds, followers=followers)}


def run(records: int, runs: int, failovers: int, timeout_s: float, tmp_root: Path, latency_s: float = 10.0,
        profile_dir: Path | None = None, cluster_only: bool = False, settings: dict[str, str] | None = None) -> dict:
    results: dict = {"records": records, "record_bytes": RECORD_BYTES, "latency_rate": LATENCY_RATE, "single": [],
                     "replicated": [], "single_latency": [], "replicated_latency": [], "failover_s": [],
                     # The disk alone at each setup's write pattern, right after its latency run
                     # (references.group_commit_wait): what it adds to a record, without the brokers.
                     "single_disk": [], "replicated_disk": []}
    # Single node, the same workload (replication factor 1).
    for run_index in range(0 if cluster_only else runs):
        workdir = tmp_root / f"single-{run_index}"
        workdir.mkdir()
        broker = Broker(workdir, 1, None, {"http.port": "-1", "log.durability.profile": "balanced"}).start()
        try:
            create_topic(broker.bootstrap, "bench", 1, {})
            results["single"].append(throughput(broker.bootstrap, "bench", records, timeout_s, {1: broker}))
            if latency_s:
                results["single_latency"].append(latency(broker.bootstrap, "lat", 1, latency_s, timeout_s, {1: broker}))
                results["single_disk"].append(disk_reference(tmp_root, latency_s, 0))
        finally:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)  # the next run starts without this one's dirty pages
        print(f"single node run {run_index + 1}: {summary(results['single'][-1], results['single_latency'])}", flush=True)
    # Three brokers, replication factor 3.
    for run_index in range(runs):
        workdir = tmp_root / f"cluster-{run_index}"
        workdir.mkdir()
        etcd, cluster = start_etcd(workdir)
        brokers = {i: Broker(workdir, i, cluster, {**CLUSTER_SETTINGS, **(settings or {})}) for i in (1, 2, 3)}
        try:
            for broker in brokers.values():
                broker.start()
            bootstrap = ",".join(b.bootstrap for b in brokers.values())
            create_topic(bootstrap, "bench", 3, {"min.insync.replicas": "2"})
            results["replicated"].append(throughput(bootstrap, "bench", records, timeout_s, brokers,
                                                    profile_dir if run_index == 0 else None, etcd))
            if latency_s:
                results["replicated_latency"].append(latency(bootstrap, "lat", 3, latency_s, timeout_s, brokers))
                results["replicated_disk"].append(disk_reference(tmp_root, latency_s, 2))
            print(f"replicated run {run_index + 1}: {summary(results['replicated'][-1], results['replicated_latency'])}",
                  flush=True)
            if run_index == runs - 1 and failovers:
                results["failover_s"] = measure_failovers(brokers, bootstrap, failovers)
        finally:
            for broker in brokers.values():
                broker.stop()
            etcd.stop()
            shutil.rmtree(workdir, ignore_errors=True)  # as above: 3 GB of a run still being written back
    return results


def summary(row: dict, latencies: list[dict]) -> str:
    produced = row["produce"]
    text = (f"produce {produced['records_per_s']:,.0f} rec/s, leader {produced['leader_cpu_s_per_gb']:.2f} s/GB, "
            f"followers {', '.join(f'{c:.2f}' for c in produced['follower_cpu_s_per_gb']) or '-'} s/GB "
            f"(load {' '.join(map(str, produced['load_average']))})")
    if "leader_user_system_s_per_gb" in produced:
        text += (f"; user/system s/GB: leader {'/'.join(f'{x:.2f}' for x in produced['leader_user_system_s_per_gb'])}"
                 + "".join(f", follower {'/'.join(f'{x:.2f}' for x in pair)}"
                           for pair in produced.get("follower_user_system_s_per_gb", [])))
    if "ceiling" in produced:
        c = produced["ceiling"]
        text += (f"; all processes {c['setup_s_per_gb']:.2f} s/GB (client {c['client_s_per_gb']:.2f}, etcd "
                 f"{c['etcd_s_per_gb']:.2f}): CPU-bound ceiling {c['ceiling_records_per_s']:,} rec/s on {c['cores']} cores; "
                 f"machine busy {c['machine_busy_s_per_gb']:.2f} s/GB, {c['machine_busy_cores']:.2f} cores")
    if latencies and "latency_ms" in latencies[-1]:
        lat = latencies[-1]
        text += (f"; e2e p50 {lat['latency_ms']['p50']:.2f} ms, p99 {lat['latency_ms']['p99']:.2f} ms at "
                 f"{LATENCY_RATE:,}/s, leader {lat['leader_cpu_us_per_record']:.0f} us/record, followers "
                 f"{', '.join(f'{c:.0f}' for c in lat['follower_cpu_us_per_record']) or '-'} us/record "
                 f"(load {' '.join(map(str, lat['load_average']))})")
    return text


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """The median with the range over runs: '143,000 (120,000-150,000)'."""
    if not values:
        return "-"
    median = fmt.format(statistics.median(values))
    return median if len(values) == 1 else f"{median} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def markdown(results: dict) -> str:
    def phase(rows, name, key="records_per_s"):
        return [r[name][key] for r in rows if r[name].get(key) is not None]

    def loads(rows):
        values = [x for r in rows for x in r["produce"]["load_average"][:1]]
        return f"{min(values):.1f}-{max(values):.1f}" if values else "-"

    lines = ["| setup | produce records/s | consume records/s | leader CPU s/GB | each follower's CPU s/GB | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, rows in (("single node (RF 1)", results["single"]),
                        ("3 brokers (RF 3, min.insync.replicas 2)", results["replicated"])):
        followers = [c for r in rows for c in r["produce"]["follower_cpu_s_per_gb"]]
        lines.append(f"| {label} | {spread(phase(rows, 'produce'))} | {spread(phase(rows, 'consume'))} | "
                     f"{spread(phase(rows, 'produce', 'leader_cpu_s_per_gb'), '{:.2f}')} | {spread(followers, '{:.2f}')} | "
                     f"{loads(rows)} |")
    single, replicated = phase(results["single"], "produce"), phase(results["replicated"], "produce")
    if single and replicated:
        lines.append(f"\nReplicated produce: {statistics.median(replicated) / statistics.median(single):.0%} of the single "
                     f"node (medians of {len(single)} runs, {results['records']:,} records of {RECORD_BYTES} B, acks=all).")
    ceilings = [(label, [r["produce"]["ceiling"] for r in rows if "ceiling" in r["produce"]])
                for label, rows in (("single node (RF 1)", results["single"]), ("3 brokers (RF 3)", results["replicated"]))]
    if any(rows for _, rows in ceilings):
        lines += ["", "The CPU-bound ceiling of the produce phase: every process of the setup (brokers, etcd, the "
                  "producing client) in CPU seconds per GB, and the records/s at which they would fill the machine's "
                  "cores; beside it the whole machine's busy seconds per GB and busy cores (/proc/stat: also kernel "
                  "threads and anything else running):", "",
                  "| setup | all processes s/GB | client s/GB | etcd s/GB | CPU-bound ceiling records/s | "
                  "machine busy s/GB | machine busy cores |", "|---|---:|---:|---:|---:|---:|---:|"]
        for label, rows in ceilings:
            if rows:
                column = lambda key, fmt="{:.2f}": spread([c[key] for c in rows if c.get(key) is not None], fmt)  # noqa: E731
                lines.append(f"| {label} | {column('setup_s_per_gb')} | {column('client_s_per_gb')} | "
                             f"{column('etcd_s_per_gb')} | {column('ceiling_records_per_s', '{:,.0f}')} | "
                             f"{column('machine_busy_s_per_gb')} | {column('machine_busy_cores')} |")
    latency_rows = [(label, [r for r in results[key] if "latency_ms" in r])
                    for label, key in (("single node (RF 1)", "single_latency"), ("3 brokers (RF 3)", "replicated_latency"))]
    if any(rows for _, rows in latency_rows):
        lines += ["", f"End-to-end latency at {results['latency_rate']:,} records/s, acks=all, 1 KiB (ms; median of runs, range):",
                  "", "| setup | e2e p50 | e2e p99 | e2e p99.9 | ack p50 | ack p99 | leader CPU us/record | "
                  "follower CPU us/record | load (1 min) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, rows in latency_rows:
            if not rows:
                continue
            e2e = lambda q: spread([r["latency_ms"][q] for r in rows], "{:.2f}")  # noqa: E731
            ack = lambda q: spread([r["ack_latency_ms"][q] for r in rows if "ack_latency_ms" in r], "{:.2f}")  # noqa: E731
            values = [r["load_average"][0] for r in rows]
            followers = [c for r in rows for c in r.get("follower_cpu_us_per_record", [])]
            lines.append(f"| {label} | {e2e('p50')} | {e2e('p99')} | {e2e('p99.9')} | {ack('p50')} | {ack('p99')} | "
                         f"{spread([r['leader_cpu_us_per_record'] for r in rows if 'leader_cpu_us_per_record' in r], '{:.0f}')} | "
                         f"{spread(followers, '{:.0f}')} | {min(values):.1f}-{max(values):.1f} |")
        disk_rows = [(label, [r for r in results.get(key, []) if "latency_ms" in r]) for label, key in (
            ("the disk alone at RF 1's write pattern (reference)", "single_disk"),
            ("the disk alone at RF 3's write pattern: the leader's group commit and two followers' copies "
             "fsynced each second (reference)", "replicated_disk"))]
        if any(rows for _, rows in disk_rows):
            lines += ["", "A record's wait for the fsync that covers it with no broker running "
                      "(references.group_commit_wait, right after each latency run; ms, median of runs, range):", "",
                      "| setup | wait p50 | wait p99 | wait p99.9 |", "|---|---:|---:|---:|"]
            for label, rows in disk_rows:
                if rows:
                    wait = lambda q: spread([r["latency_ms"][q] for r in rows], "{:.2f}")  # noqa: E731
                    lines.append(f"| {label} | {wait('p50')} | {wait('p99')} | {wait('p99.9')} |")
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
    parser.add_argument("--latency-seconds", type=float, default=10.0,
                        help=f"length of each latency run at {LATENCY_RATE:,} records/s (0: none)")
    parser.add_argument("--profile", action="store_true",
                        help="sample each broker with py-spy during the first replicated produce run (into --out)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--cluster-only", action="store_true", help="no single-node runs (A/Bs of the replicated path)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every cluster broker (repeatable)")
    parser.add_argument("--tidelog-ref", help="run the brokers from this commit's src/ (git archive, C extension built)")
    parser.add_argument("--cold-memory", type=int, default=0, metavar="GIB",
                        help="hold GIB of just-touched memory during each produce phase (the idle machine's cold page cache)")
    args = parser.parse_args(argv)
    global COLD_MEMORY_GIB
    COLD_MEMORY_GIB = args.cold_memory
    settings = dict(setting.split("=", 1) for setting in args.set)
    if args.profile:
        from benchmarks import profile

        if profile.py_spy() is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy, or the bench extra)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally-blocks stop every server
    args.out.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-replicated-"))
    try:
        if args.tidelog_ref:
            from benchmarks.peers import Tidelog

            Tidelog.use_ref(args.tidelog_ref, tmp_root / "tidelog-src")
            Broker.src_dir = Tidelog.src_dir
            print(f"brokers from commit {Tidelog.commit} (git archive)", flush=True)
        results = run(args.records, args.runs, args.failovers, args.timeout, tmp_root, args.latency_seconds,
                      args.out if args.profile else None, args.cluster_only, settings)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    (args.out / "replicated-latest.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    for name, summary_ in (results["replicated"][0]["produce"].get("profiles") or {}).items() if results["replicated"] else ():
        print(f"\n{name}: {summary_['busy_percent']}% of one core sampled; own samples:")
        for row in summary_["own"][:10]:
            print(f"  {row['percent']:5.1f}%  {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
