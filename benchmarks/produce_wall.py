"""``python -m benchmarks.produce_wall``: where a produce row's wall time goes, thread by thread.

The harness's produce phase (benchmarks.kafka_load: confluent-kafka, the row's producer settings,
one partition, ``--records`` values of ``--record-bytes``, timed from the first produce() to the
end of flush()) against a ``balanced`` (or ``--target``) Tidelog broker, or against librdkafka's
in-process mock cluster (``--target mock``: a C broker answering from memory, the least any broker
can cost this client), and the producer into nothing (``--ceiling``, the issue's reference: no
broker, no batching, no sends). For every thread of the client and of the broker, from
``/proc/PID/task/TID/schedstat``: seconds on a CPU, seconds runnable but waiting for one (the
run queue), and the rest of the phase blocked (a poll, a futex, epoll, the disk). Also when the
enqueue loop ended (the rest of the phase is the client draining what it queued) and the client
process's minor page faults (a deeper queue in the client touches more fresh memory).

The lower bound of the phase on this machine's CPUs is max(all the threads' CPU / CPUs, the
busiest thread's CPU): the bound line gives it in records/s, and the same against the producer
into nothing. A thread that waits for a CPU about as long as it runs is what a shared 2-core box
does to three busy threads (the client's produce loop, librdkafka's broker thread, the broker's
event loop), not a pipeline waiting on acknowledgements; a client blocked on queue space would
show as its produce thread blocked.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

TOPIC = "wall"


def thread_times(pid: int) -> dict[int, tuple[str, float, float]]:
    """Every thread of ``pid``: (name, seconds on a CPU, seconds waiting for one)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            on_cpu, run_queue, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:  # ended meanwhile
            continue
        out[int(tid)] = (stat[stat.index("(") + 1 : stat.rindex(")")], int(on_cpu) / 1e9, int(run_queue) / 1e9)
    return out


def by_name(before: dict, after: dict, wall_s: float) -> dict[str, dict]:
    """Threads that ran at least 5 ms over the phase, grouped by name: count, cpu, runq, blocked seconds."""
    groups: dict[str, dict] = {}
    for tid, (name, cpu, queue) in after.items():
        _, cpu0, queue0 = before.get(tid, (name, 0.0, 0.0))
        if cpu - cpu0 < 0.005:
            continue
        g = groups.setdefault(name, {"threads": 0, "cpu_s": 0.0, "runq_s": 0.0, "blocked_s": 0.0})
        g["threads"] += 1
        g["cpu_s"] += cpu - cpu0
        g["runq_s"] += queue - queue0
        g["blocked_s"] += max(0.0, wall_s - (cpu - cpu0) - (queue - queue0))
    return groups


def busy_cores() -> float:
    """CPU seconds the whole machine has used so far (every process; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measure(target: str, records: int, record_bytes: int, acks: str, tmp: Path) -> dict:
    """One produce phase against ``target`` (a Tidelog profile, or ``mock``)."""
    import confluent_kafka as ck

    from benchmarks import kafka_load
    from benchmarks.machine import own_minor_faults
    from benchmarks.peers import Tidelog

    server = None
    if target == "mock":
        settings = {"test.mock.num.brokers": 1}
    else:
        tidelog = Tidelog(target)
        server = tidelog.start(tmp)
        kafka_load.create_topic(tidelog.bootstrap, TOPIC, 1)
        settings = {"bootstrap.servers": tidelog.bootstrap}
    try:
        producer = ck.Producer({**settings, "acks": acks, **kafka_load.PRODUCER_SETTINGS, "log_level": 0,
                                "error_cb": lambda err: None})
        producer.list_topics(TOPIC, timeout=10)  # connected, the topic known (the mock makes it)
        value = os.urandom(record_bytes)
        faults0 = own_minor_faults()
        machine0, client0, started = busy_cores(), thread_times(os.getpid()), time.perf_counter()
        broker0 = thread_times(server.pid) if server else {}
        sent = kafka_load.produce_into(producer, TOPIC, value, records, time.monotonic() + 300)
        enqueued = time.perf_counter() - started
        left = producer.flush(300)
        wall = time.perf_counter() - started
        client1, machine1 = thread_times(os.getpid()), busy_cores()  # before the producer's threads end
        faults = own_minor_faults() - faults0
        broker1 = thread_times(server.pid) if server else {}
        del producer
    finally:
        if server is not None:
            server.stop(timeout_s=60)
    return {"target": target, "records": sent - left, "wall_s": wall, "enqueued_s": enqueued,
            "records_per_s": (sent - left) / wall, "client": by_name(client0, client1, wall),
            "broker": by_name(broker0, broker1, wall), "machine_busy_cores": (machine1 - machine0) / wall,
            "client_minor_faults": faults,
            "load": os.getloadavg()[0]}


def ceiling(records: int, record_bytes: int) -> dict:
    """The producer into nothing (kafka_load.client_ceiling), its threads' CPU."""
    from benchmarks import kafka_load

    before, started = thread_times(os.getpid()), time.perf_counter()
    row = kafka_load.client_ceiling(records, record_bytes)
    wall = time.perf_counter() - started
    return {**row, "client": by_name(before, thread_times(os.getpid()), wall)}


def _groups(groups: dict) -> str:
    return "; ".join(f"{name} x{g['threads']}: cpu {g['cpu_s']:.2f} runq {g['runq_s']:.2f} blocked {g['blocked_s']:.2f}"
                     for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["cpu_s"])) or "-"


def report(row: dict, ceiling_rate: float | None) -> str:
    threads = [g for side in ("client", "broker") for g in row[side].values()]
    cpu = sum(g["cpu_s"] for g in threads)
    busiest = max((g["cpu_s"] / g["threads"] for g in threads), default=0.0)
    bound_s = max(cpu / (os.cpu_count() or 1), busiest)
    bound = row["records"] / bound_s if bound_s else 0.0
    versus = f" = {bound / ceiling_rate:.0%} of the producer into nothing" if ceiling_rate else ""
    return (f"{row['target']}: load {row['load']:.1f}; {row['records_per_s']:,.0f} records/s, {row['wall_s']:.2f} s, "
            f"enqueued at {row['enqueued_s']:.2f} s; machine busy {row['machine_busy_cores']:.2f} cores; the client's "
            f"minor page faults {row['client_minor_faults']:,} (first touches of memory)\n"
            f"  client: {_groups(row['client'])}\n  broker: {_groups(row['broker'])}\n"
            f"  CPU {cpu:.2f} s; bound on {os.cpu_count()} CPUs: {bound_s:.2f} s, {bound:,.0f} records/s{versus}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.produce_wall", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--record-bytes", type=int, default=1024)
    p.add_argument("--acks", default="all", help="the producer's acks (default all; the 100 B row uses 1)")
    p.add_argument("--targets", default="mock,balanced",
                   help="comma-separated: mock and/or Tidelog profiles (balanced, throughput, durable)")
    p.add_argument("--runs", type=int, default=1, help="rounds of the targets, alternated (default 1)")
    p.add_argument("--ceiling", action="store_true", help="measure the producer into nothing first")
    args = p.parse_args(argv)
    from benchmarks.machine import steady_client_heap

    steady_client_heap()  # as the harness's process does
    ceiling_rate = None
    if args.ceiling:
        row = ceiling(args.records, args.record_bytes)
        ceiling_rate = row["records_per_s"]
        print(f"into nothing: {ceiling_rate:,.0f} records/s, {row['seconds']:.2f} s; client over the whole call (the "
              f"producer made, and purged of what it holds, included): {_groups(row['client'])}", flush=True)
    for _ in range(args.runs):
        for target in args.targets.split(","):
            with tempfile.TemporaryDirectory(prefix="tidelog-produce-wall-") as tmp:
                row = measure(target, args.records, args.record_bytes, args.acks, Path(tmp))
            print(report(row, ceiling_rate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
