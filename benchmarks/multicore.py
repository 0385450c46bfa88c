"""Beyond one core (issue 19, item 7): one host running 1 and 2 brokers of one cluster, each its
own process, a topic's partitions spread over them, loaded by several client processes.

    python -m benchmarks multicore [--setups single,cluster-1,cluster-2,cluster-2-rf2] [--partitions 16]
                                   [--records 1000000] [--record-bytes 1024] [--producers 3] [--consumers 3]
                                   [--runs 3] [--pin] [--out DIR]

Setups (a fresh etcd and fresh brokers each time, started as ``tidelog dev-cluster`` starts them,
with benchmarks/replicated.py's helpers; ``log.durability.profile`` balanced everywhere):

- ``single``: a plain single node (no etcd), the reference;
- ``cluster-1``: a 1-broker cluster (etcd + one ``tidelog serve --cluster``): like for like;
- ``cluster-2``: a 2-broker cluster, the topic at replication factor 1, leaders spread evenly;
- ``cluster-2-rf2``: the same at replication factor 2 (each broker leads half and follows half).

Each setup gets one topic of ``--partitions`` partitions. The placement (leaders and replicas per
broker) is read back from Metadata and reported. Then two phases, each timed from the moment the
client processes are told to go until the last one is done:

1. ``--producers`` processes (confluent-kafka, the producer settings of benchmarks/kafka_load.py,
   ``--record-bytes`` random values, acks=all, keyless: librdkafka's sticky partitioner spreads the batches
   over every partition), ``--records`` records in all;
2. ``--consumers`` processes, each assigned a contiguous block of the partitions (as the range
   assignor would give them) from offset 0, reading what its partitions hold.

Each client is its own process (one Python process is the limit of a client otherwise), started
before the clock starts (the interpreter and librdkafka loaded, the broker answering: only its
own client's connection is made on the clock, a few milliseconds), and bounded in records and
time. For each phase: aggregate
records/s, each broker's CPU seconds and its use of a core (CPU seconds / wall seconds), broker
CPU per GB, etcd's CPU, the clients' CPU, what the rest of the machine used (busy CPU from
/proc/stat minus all of those) and the load average. Setups are interleaved run by run.

``--pin``: broker N runs on core N-1 (every thread, as ``taskset -a`` would set it) and the
clients on the cores left, if any (on 2 cores with 2 brokers there are none: they run anywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import kafka_load
from benchmarks.procs import ServerProcess, load_average, machine_busy_cpu_seconds, wait_until
from benchmarks.replicated import RECORD_BYTES, Broker, start_etcd

REPO = Path(__file__).resolve().parents[1]
TOPIC = "bench"
# The same settings for every broker of every setup, Tidelog's defaults otherwise (not
# replicated.py's 2 s lease, made for failover times: on a loaded host it moved leaderships).
BROKER_SETTINGS = {"http.port": "-1", "log.durability.profile": "balanced"}
# name: (brokers, in a cluster, replication factor)
SETUPS = {
    "single": (1, False, 1),
    "cluster-1": (1, True, 1),
    "cluster-2": (2, True, 1),
    "cluster-2-rf2": (2, True, 2),
}
LABELS = {
    "single": "single node (no etcd)",
    "cluster-1": "1-broker cluster",
    "cluster-2": "2-broker cluster, RF 1",
    "cluster-2-rf2": "2-broker cluster, RF 2",
}


class Client:
    """One client process (``python -m benchmarks.multicore worker SPEC``): it says ``ready``
    once loaded (and, for a producer, once the brokers answered), starts on ``go``, and answers
    with one JSON line."""

    def __init__(self, spec: dict, log_path: Path) -> None:
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.multicore", "worker", json.dumps(spec)],
                                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True)
        self.log_path = log_path
        self.answered = False

    def _line(self, deadline: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line:
            raise RuntimeError(f"client {self.proc.pid} gave no answer (exit {self.proc.poll()}): "
                               + self.log_path.read_text(errors="replace")[-2000:])
        return line

    def wait_ready(self, deadline: float) -> None:
        line = self._line(deadline)
        if line.strip() != "ready":
            raise RuntimeError(f"client {self.proc.pid} said {line!r} instead of ready")

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self, deadline: float) -> dict:
        result = json.loads(self._line(deadline))
        self.answered = True
        return result

    def stop(self) -> None:
        """Once it has answered it exits by itself (its client closed); otherwise SIGKILL by PID."""
        try:
            self.proc.wait(timeout=10 if self.answered else 0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stdin.close()


def worker(spec: dict) -> int:
    """A client process: connect, wait for ``go``, run one phase, print its result."""
    if spec["role"] == "produce":  # the topic is there and the brokers answer, before the clock
        AdminClient({"bootstrap.servers": spec["bootstrap"]}).list_topics(TOPIC, timeout=30)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu0 = time.process_time()
    if spec["role"] == "produce":
        result = kafka_load.produce(spec["bootstrap"], TOPIC, spec["records"], spec["record_bytes"], "all", spec["timeout_s"],
                                    partitions=spec["partitions"])
    else:
        result = kafka_load.consume(spec["bootstrap"], TOPIC, spec["records"], spec["record_bytes"], spec["timeout_s"],
                                    assigned=spec["assigned"])
    result.update(ended_at=time.monotonic(), process_cpu_s=time.process_time() - cpu0)
    print(json.dumps(result), flush=True)
    return 0


def create_topic(bootstrap: str, partitions: int, replication_factor: int, timeout_s: float = 60) -> dict:
    """The topic, once every partition has a leader and a full ISR; its placement per broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, partitions, replication_factor)], request_timeout=timeout_s)[TOPIC].result(timeout_s)

    def placed():
        meta = admin.list_topics(TOPIC, timeout=10).topics[TOPIC]
        states = list(meta.partitions.values())
        if len(states) == partitions and all(p.leader > 0 and len(p.isrs) == replication_factor for p in states):
            return states
        return None

    states = wait_until(placed, timeout_s, f"{TOPIC}: every partition led with a full ISR")
    leaders: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for p in states:
        leaders[str(p.leader)] = leaders.get(str(p.leader), 0) + 1
        for r in p.replicas:
            replicas[str(r)] = replicas.get(str(r), 0) + 1
    return {"leaders_per_broker": dict(sorted(leaders.items())), "replicas_per_broker": dict(sorted(replicas.items()))}


def partition_counts(bootstrap: str, partitions: int) -> list[int]:
    """Records each partition holds (its high watermark: the topic is new)."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "benchmark-watermarks", "error_cb": lambda err: None})

    def read() -> list[int] | None:
        try:
            return [consumer.get_watermark_offsets(ck.TopicPartition(TOPIC, p), timeout=10)[1] for p in range(partitions)]
        except ck.KafkaException:  # the client's metadata does not know a partition's leader yet
            return None

    try:
        return wait_until(read, 60, "every partition's high watermark", interval_s=0.2)
    finally:
        consumer.close()


def pin(pids: list[int], cores: set[int]) -> None:
    """Every thread of these processes on these cores (threads made later inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), cores)
            except (OSError, ValueError):  # a thread that ended meanwhile
                pass


def client_cores(broker_count: int) -> set[int] | None:
    """The cores left to the clients when the brokers are pinned; None: no core is left."""
    left = set(range(broker_count, os.cpu_count() or 1))
    return left or None


def run_phase(role: str, specs: list[dict], brokers: dict[int, Broker], etcd: ServerProcess | None,
              workdir: Path, timeout_s: float, pin_clients: set[int] | None = None) -> dict:
    """Start the clients, wait until all are connected, tell them to go; the aggregate and the CPU
    of every process from then until the last one answers."""
    clients = [Client(spec, workdir / f"{role}-{i}.log") for i, spec in enumerate(specs)]
    try:
        deadline = time.monotonic() + 120
        for client in clients:
            client.wait_ready(deadline)
            if pin_clients:
                pin([client.proc.pid], pin_clients)
        broker_cpu0 = {i: b.server.cpu_seconds() for i, b in brokers.items()}
        etcd_cpu0 = etcd.cpu_seconds() if etcd else 0.0
        busy0, load0 = machine_busy_cpu_seconds(), load_average()
        go_at = time.monotonic()
        for client in clients:
            client.go()
        deadline = go_at + timeout_s + 60
        results = [client.result(deadline) for client in clients]
        broker_cpu = {i: b.server.cpu_seconds() - broker_cpu0[i] for i, b in brokers.items()}
        etcd_cpu = (etcd.cpu_seconds() - etcd_cpu0) if etcd else 0.0
        busy, load1 = machine_busy_cpu_seconds() - busy0, load_average()
    finally:
        for client in clients:
            client.stop()
    seconds = max(r["ended_at"] for r in results) - go_at
    records = sum(r["records"] for r in results)
    clients_cpu = sum(r["process_cpu_s"] for r in results)
    size_bytes = sum(r["bytes"] for r in results)
    gigabytes = size_bytes / 1e9
    return {
        "status": "ok" if all(r["status"] == "ok" for r in results) else "; ".join(sorted({r["status"] for r in results})),
        "errors": [e for r in results for e in r["errors"]][:5],
        "clients": len(clients),
        "records": records,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "mb_per_s": size_bytes / seconds / 1e6,
        "client_records_per_s": [r["records_per_s"] for r in results],
        "broker_cpu_s": {str(i): cpu for i, cpu in broker_cpu.items()},
        "broker_core_use": {str(i): cpu / seconds for i, cpu in broker_cpu.items()},
        "broker_cpu_s_per_gb": sum(broker_cpu.values()) / gigabytes if gigabytes else None,
        "etcd_cpu_s": etcd_cpu,
        "clients_cpu_s": clients_cpu,
        "others_cpu_s": max(0.0, busy - sum(broker_cpu.values()) - etcd_cpu - clients_cpu),
        "machine_busy_cpu_s": busy,
        "machine_busy_share": busy / seconds / (os.cpu_count() or 1),  # 1.0: no core was ever idle
        "load_average": [load0, load1],
    }


def split(records: int, parts: int) -> list[int]:
    return [records // parts + (1 if i < records % parts else 0) for i in range(parts)]


def blocks(partitions: int, consumers: int) -> list[list[int]]:
    """Contiguous blocks of partitions, one a consumer, as the range assignor gives them."""
    sizes = split(partitions, consumers)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [list(range(start, start + size)) for start, size in zip(starts, sizes) if size]


def run_setup(name: str, args, workdir: Path) -> dict:
    broker_count, clustered, replication_factor = SETUPS[name]
    etcd, cluster = start_etcd(workdir) if clustered else (None, None)
    brokers = {i: Broker(workdir, i, cluster, BROKER_SETTINGS)
               for i in range(1, broker_count + 1)}
    row: dict = {"setup": name, "brokers": broker_count, "replication_factor": replication_factor}
    try:
        for broker in brokers.values():
            broker.start()
        pin_clients = None
        if args.pin:
            for i, broker in brokers.items():
                pin(broker.server.pids(), {(i - 1) % (os.cpu_count() or 1)})
            pin_clients = client_cores(broker_count)
            row["pinned"] = {"brokers": {str(i): [(i - 1) % (os.cpu_count() or 1)] for i in brokers},
                             "clients": sorted(pin_clients) if pin_clients else "any core"}
        bootstrap = ",".join(b.bootstrap for b in brokers.values())
        row["placement"] = create_topic(bootstrap, args.partitions, replication_factor)
        common = {"bootstrap": bootstrap, "partitions": args.partitions, "record_bytes": args.record_bytes,
                  "timeout_s": args.timeout}
        row["produce"] = run_phase("produce", [{**common, "role": "produce", "records": n}
                                               for n in split(args.records, args.producers)],
                                   brokers, etcd, workdir, args.timeout, pin_clients)
        held = partition_counts(bootstrap, args.partitions)
        row["records_per_partition"] = held
        row["consume"] = run_phase("consume", [{**common, "role": "consume", "assigned": block,
                                                "records": sum(held[p] for p in block)}
                                               for block in blocks(args.partitions, args.consumers)],
                                   brokers, etcd, workdir, args.timeout, pin_clients)
        row["broker_peak_rss_bytes"] = {str(i): b.server.peak_rss_bytes() for i, b in brokers.items()}
        row["etcd_peak_rss_bytes"] = etcd.peak_rss_bytes() if etcd else 0
    finally:
        for broker in brokers.values():
            broker.stop()
        if etcd is not None:
            etcd.stop()
    return row


def run(args, tmp_root: Path) -> dict:
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
               "settings": {k: v for k, v in vars(args).items() if k in
                            ("setups", "partitions", "records", "record_bytes", "producers", "consumers", "runs", "timeout", "pin")},
               "record_bytes": args.record_bytes, "rows": [], "failed": []}
    for run_index in range(1, args.runs + 1):
        for name in args.setups:  # interleaved: every setup once a run
            workdir = tmp_root / f"{name}-{run_index}"
            workdir.mkdir()
            try:
                row = {"run": run_index, **run_setup(name, args, workdir)}
            except Exception as e:  # noqa: BLE001 - one failing setup is reported, the others still run
                traceback.print_exc()
                results["failed"].append({"run": run_index, "setup": name, "error": f"{type(e).__name__}: {e}"})
                continue
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            results["rows"].append(row)
            print(f"run {run_index} {name}: placement {row['placement']['leaders_per_broker']}; "
                  + "; ".join(f"{phase} {row[phase]['records_per_s']:,.0f} rec/s ({row[phase]['status']}), broker core use "
                              + ", ".join(f"{use:.0%}" for use in row[phase]["broker_core_use"].values())
                              + f", load {row[phase]['load_average'][0]:.1f}" for phase in ("produce", "consume")),
                  flush=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return results


def _range(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{format(low, fmt)}-{format(high, fmt)}"


def markdown(results: dict) -> str:
    lines = ["| setup | phase | records/s, median (min-max) | MB/s | each broker's use of a core | broker CPU s per GB "
             "| etcd CPU s | clients' CPU s | others' CPU s | machine busy | load average |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    setups = list(dict.fromkeys(r["setup"] for r in results["rows"]))
    for name in setups:
        rows = [r for r in results["rows"] if r["setup"] == name]
        for phase in ("produce", "consume"):
            phases = [r[phase] for r in rows]
            rates = [p["records_per_s"] for p in phases]
            brokers = sorted(phases[0]["broker_core_use"])
            core_use = ", ".join(f"{b}: {_range([p['broker_core_use'][b] * 100 for p in phases], '.0f')}%" for b in brokers)
            failed = [p["status"] for p in phases if p["status"] != "ok"]
            lines.append(
                f"| {LABELS[name]} | {phase} | {statistics.median(rates):,.0f} ({_range(rates, ',.0f')})"
                + (f" **{', '.join(failed)}**" if failed else "")
                + f" | {statistics.median(p['mb_per_s'] for p in phases):,.0f} | {core_use} "
                f"| {_range([p['broker_cpu_s_per_gb'] or 0 for p in phases], '.2f')} "
                f"| {_range([p['etcd_cpu_s'] for p in phases], '.1f')} | {_range([p['clients_cpu_s'] for p in phases], '.1f')} "
                f"| {_range([p['others_cpu_s'] for p in phases], '.1f')} "
                f"| {_range([p['machine_busy_share'] * 100 for p in phases], '.0f')}% "
                f"| {_range([x for p in phases for x in p['load_average']], '.1f')} |")
    placements = {LABELS[r["setup"]]: r["placement"] for r in results["rows"]}
    s = results["settings"]
    runs = len({r["run"] for r in results["rows"]})
    lines.append(f"\n{s['records']:,} records of {results['record_bytes']} B a phase, {s['partitions']} partitions, "
                 f"{s['producers']} producer and {s['consumers']} consumer processes, {runs} run(s) of each setup, "
                 f"interleaved, on {results['cores']} cores. Leaders (replicas) per broker: "
                 + "; ".join(f"{label} {p['leaders_per_broker']} ({p['replicas_per_broker']})" for label, p in placements.items())
                 + (". Pinned: broker N on core N-1, the clients on the cores left (any core when none is)." if s.get("pin") else "."))
    rss = {}
    for r in results["rows"]:
        rss.setdefault(LABELS[r["setup"]], []).extend(r["broker_peak_rss_bytes"].values())
    etcd_rss = [r["etcd_peak_rss_bytes"] / 2**20 for r in results["rows"] if r["etcd_peak_rss_bytes"]] or [0]
    lines.append("Peak RSS per broker: " + "; ".join(f"{label} {_range([b / 2**20 for b in v], '.0f')} MiB"
                                                     for label, v in rss.items())
                 + f"; etcd {_range(etcd_rss, '.0f')} MiB.")
    lines += [f"Failed: run {f['run']} {LABELS[f['setup']]}: {f['error']}" for f in results["failed"]]
    return "\n".join(lines)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks multicore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--records", type=int, help="records a produce phase, over all producers (default 1,000,000)")
    parser.add_argument("--record-bytes", type=int, default=RECORD_BYTES, help="size of each record's value (default 1024)")
    parser.add_argument("--producers", type=int, help="producer processes (default 3; 2 with --quick)")
    parser.add_argument("--consumers", type=int, help="consumer processes (default 3; 2 with --quick)")
    parser.add_argument("--runs", type=int, help="runs of every setup (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on each phase's clients, seconds")
    parser.add_argument("--pin", action="store_true",
                        help="broker N on core N-1, the clients on the cores left (if any)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 4,000 records, one run, 2 producers and 2 consumers, single and cluster-2")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="parent of the temporary data directories")
    args = parser.parse_args(argv)
    args.records = args.records or (4_000 if args.quick else 1_000_000)
    args.runs = args.runs or (1 if args.quick else 3)
    args.producers = args.producers or (2 if args.quick else 3)
    args.consumers = args.consumers or (2 if args.quick else 3)
    if args.quick and args.setups == ",".join(SETUPS):
        args.setups = "single,cluster-2"
    args.setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown:
        parser.error(f"--setups: unknown {', '.join(unknown)} (known: {', '.join(SETUPS)})")
    if min(args.partitions, args.producers, args.consumers, args.records, args.runs, args.record_bytes) < 1:
        parser.error("--partitions, --record-bytes, --producers, --consumers, --records and --runs must be at least 1")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker(json.loads(argv[1]))
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally-blocks stop every process
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-multicore-", dir=args.tmp_dir))
    try:
        results = run(args, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multicore-latest.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    ok = not results["failed"] and all(r[phase]["status"] == "ok" for r in results["rows"] for phase in ("produce", "consume"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
