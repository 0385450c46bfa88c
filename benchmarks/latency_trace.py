"""``python -m benchmarks.latency_trace``: where a slow lat-5k record's time went, record by record.

The lat-5k shape (1 KiB, acks=all, one partition, a producer paced to ``--rate``, a consumer in a
thread of this process; kafka_load.latency's settings) against a `balanced` broker run under
benchmarks/broker_trace.py, which notes on this process's clock (CLOCK_MONOTONIC) every fsync
syscall (file, size, thread), group-commit job, Produce wait, collection, event-loop lateness and
segment roll. Beside it, this process samples every ``--sched-ms`` the run-queue wait of the
broker's threads and its own (``/proc/<pid>/task/<tid>/schedstat``: time runnable but not on a
CPU), and ``--perf`` records the machine's block requests (every process's writes, and the cache
flushes an fsync ends with) and ext4 fsyncs with `perf record -a -k mono`. Every run starts with
the machine's write-back finished (benchmarks/writeback.py: one sync(2), what it found noted) and
notes what the disk did during the load (everyone's bytes written, cache flushes, discards);
``--reference`` runs the disk alone at the same write pattern, as long, right after each run
(references.group_commit_wait), with the same counts of fsyncs over 10, 20 and 50 ms as the
broker's segment fsyncs: whether a run's long fsyncs were the broker's or the disk's.
``--autogroup-nice -20`` weights this process's and the broker's sessions above the machine's
others while a run lasts (the kernel shares the CPU between sessions before processes): on a
machine shared with other engineers' suites it takes the run closer to an idle machine's CPU
(at load 5-9, lat-5k p50 6-21 ms unweighted against 2-4 ms weighted), not the disk's.

Each record (offset, produce() time, arrival) is then cut into the stages it went through:

- ``to_append``: produce() -> the broker's wait for its Produce began (linger, send, the frame
  read, decode, append);
- ``to_job``: -> the group-commit job that covers it started (waiting for the running job);
- ``to_syscall``: -> its fsync syscall began (the hand-off to an fsync thread);
- ``syscall``: the fsync(s) of the job (the segment's, and whatever else the job syncs);
- ``to_loop``: -> the job's outcome was back on the event loop (the hand-back);
- ``to_fetch_wake``: -> the consumer's parked Fetch resumed (0 when none was parked: the next
  fetch came later, which ``to_consumer`` then holds);
- ``fetch_answer``: -> the Fetch response that carried it left the broker (the read, the
  response, the write; from broker_trace's ``write``/``fwrite`` rows; 0 in a tree without them;
  when no Fetch was parked, the consumer's next Fetch's way in too: ``fetch_answer_parked_ms``
  gives it over the records whose Fetch was parked, the broker's own part);
- ``to_consumer``: -> the consumer had it (the socket, librdkafka, the consumer's poll).

Beside the stages, ``ack_write_ms``: the job's outcome on the loop -> the Produce response that
acknowledged the record left the broker (the Produce tasks' steps, their done-callbacks, the
write): the broker's share of an acknowledgement after the fsync.

Each stage's p50/p90/p99 over every record is reported too, with how many records' job ended
while no consumer Fetch was parked (the consumer between fetches: the record waits for the next).

and for the slowest (over ``--slow-ms``, and the p99 and p99.9 sets) what was around them: the
dominant stage; collections, loop lateness and the broker's threads' run-queue waits during the
record's life; other fsyncs of the broker (not the segment's) in it; and, with ``--perf``, during
the job's syscall, the block requests of other processes in flight and the flush's time.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import confluent_kafka as ck

from benchmarks import kafka_load, references, writeback
from benchmarks.procs import ServerProcess, load_average, port_open

HERE = Path(__file__).resolve().parent
STAGES = ("to_append", "to_job", "to_syscall", "syscall", "to_loop", "to_fetch_wake", "fetch_answer", "to_consumer")


def _schedstat(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (thread name, ns on a CPU, ns runnable waiting for one)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, _ = f.read().split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, int(run), int(wait))
    return out


def set_autogroup_nice(pids: list[int], nice: int) -> dict[int, int]:
    """With the kernel's autogroups (``/proc/sys/kernel/sched_autogroup_enabled``) the CPU is shared
    between sessions first (the broker runs in a session of its own), so a process's own nice
    value weighs only against its session; this sets the sessions' weight (root for < 0).
    Returns each pid's value before (to put back)."""
    before = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup") as f:  # "/autogroup-7 nice 0"
                before[pid] = int(f.read().split()[-1])
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
        except (OSError, ValueError) as e:
            print(f"cannot set the autogroup nice of {pid}: {e}", file=sys.stderr)
    return before


def start_broker(workdir: Path, trace_out: Path, src_dir: Path | None, settings: list[str]) -> tuple[ServerProcess, str]:
    port_file = workdir / "port"
    args = [sys.executable, str(HERE / "broker_trace.py"), str(trace_out), "serve", "--host", "127.0.0.1",
            "--port", "0", "--port-file", str(port_file), "--data-dir", str(workdir / "data"), "--log-level",
            "WARNING", "--set", "log.durability.profile=balanced", "--set", "http.port=-1"]
    for setting in settings:
        args += ["--set", setting]
    env = {"PYTHONPATH": str(src_dir)} if src_dir else None
    server = ServerProcess("tidelog-traced", args, workdir, env)
    bootstrap = {}

    def ready() -> bool:
        if not port_file.exists():
            return False
        port = int(port_file.read_text().split()[0])
        bootstrap["b"] = f"127.0.0.1:{port}"
        return port_open(port)

    server.start(ready)
    return server, bootstrap["b"]


def load(bootstrap: str, rate: int, seconds: float, linger_ms: float, sample,
         stop_sampling: threading.Event) -> tuple[list[tuple[int, int, int]], float]:
    """The lat-5k load on topic ``bench`` (partition 0); ``sample()`` runs in a thread from when the
    consumer is fetching until ``stop_sampling`` is set (at the end). Returns (offset, produced ns,
    arrived ns) per record, and when the producer started (perf_counter seconds)."""
    records = int(rate * seconds)
    got: list[tuple[int, int, int]] = []
    ready, stop = threading.Event(), threading.Event()

    def consume():
        consumer = ck.Consumer({"bootstrap.servers": bootstrap, **kafka_load.CONSUMER_SETTINGS,
                                "error_cb": lambda err: None})
        consumer.assign([ck.TopicPartition("bench", 0, 0)])
        try:
            consumer.consume(1, 0.5)
            ready.set()
            while len(got) < records and not stop.is_set():
                message = consumer.poll(0.1)
                if message is None or message.error() is not None:
                    continue
                now = time.perf_counter_ns()
                got.append((message.offset(), struct.unpack_from(">q", message.value())[0], now))
        finally:
            ready.set()
            consumer.close()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    ready.wait(30)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", **kafka_load.PRODUCER_SETTINGS,
                            "linger.ms": linger_ms, "error_cb": lambda err: None})
    padding = os.urandom(1024 - 8)
    pack = struct.Struct(">q").pack
    start = time.perf_counter()
    sent, interval = 0, 1.0 / rate
    while sent < records:
        due = int((time.perf_counter() - start) / interval) + 1
        while sent < min(due, records):
            producer.produce("bench", pack(time.perf_counter_ns()) + padding, partition=0)
            sent += 1
        producer.poll(0)
        pause = start + sent * interval - time.perf_counter()
        if pause > 0:
            time.sleep(min(pause, 0.001))
    producer.flush(60)
    deadline = time.monotonic() + 60
    while len(got) < records and time.monotonic() < deadline and consumer.is_alive():
        time.sleep(0.01)
    stop.set()
    stop_sampling.set()
    consumer.join(10)
    sampler.join(10)
    return got, start


# ---- perf: the machine's block requests and ext4 fsyncs ------------------------------------

PERF_EVENTS = ["block:block_rq_issue", "block:block_rq_complete", "ext4:ext4_sync_file_enter",
               "ext4:ext4_sync_file_exit"]


def parse_perf(path: Path) -> dict:
    """Block requests as (issue ns, complete ns, pid, comm, rwbs, bytes) and ext4 fsyncs as
    (tid, enter ns, exit ns, inode)."""
    text = subprocess.run(["perf", "script", "-i", str(path), "--ns", "-F", "comm,pid,tid,time,event,trace"],
                          capture_output=True, text=True, timeout=300).stdout
    issued: dict[tuple, list] = {}
    requests, syncs, entered = [], [], {}
    for line in text.splitlines():
        try:
            head, _, trace = line.partition(": ")
            fields = head.split()
            event = trace.split(":", 2)[1] if trace.startswith(("block:", "ext4:")) else None
            if event is None:
                head2, _, rest = line.rpartition(" block:") if " block:" in line else line.rpartition(" ext4:")
                fields = head2.split()
                event, _, trace = rest.partition(": ")
                event = event.strip()
            else:
                trace = trace.split(": ", 1)[1]
            t = int(round(float(fields[-1].rstrip(":")) * 1e9))
            comm_pid = fields[:-1]
            pid_tid = comm_pid[-1]
            comm = " ".join(comm_pid[:-1])
            pid, _, tid = pid_tid.partition("/")
        except (ValueError, IndexError):
            continue
        parts = trace.split()
        if event == "block_rq_issue":  # dev rwbs bytes () sector + n ...
            rwbs, size = parts[1], int(parts[2])
            sector = parts[4] if parts[3] == "()" else parts[3]
            issued.setdefault((rwbs.replace("M", "").replace("S", "").replace("F", "") or "F", sector), []).append(
                [t, None, int(pid), comm, rwbs, size])
        elif event == "block_rq_complete":  # dev rwbs () sector + n ...
            rwbs = parts[1]
            sector = parts[3] if parts[2] == "()" else parts[2]
            key = (rwbs.replace("M", "").replace("S", "").replace("F", "") or "F", sector)
            if rwbs.startswith("FF") or sector == "18446744073709551615":
                key = ("F", "0")
            waiting = issued.get(key)
            if waiting:
                request = waiting.pop(0)
                request[1] = t
                requests.append(request)
        elif event == "ext4_sync_file_enter":
            entered[tid] = (t, trace)
        elif event == "ext4_sync_file_exit" and tid in entered:
            t0, what = entered.pop(tid)
            syncs.append((int(tid), t0, t, what))
    requests.sort()
    return {"requests": requests, "issued": [q[0] for q in requests], "syncs": syncs}


# ---- analysis ----------------------------------------------------------------------------

def analyse(got, trace, sched: dict, client_sched: dict, perf, slow_ms: float) -> dict:
    pid = next(row[1] for row in trace if row[0] == "pid")
    waits = sorted((row[3], row[1], row[2]) for row in trace if row[0] == "wait")  # (end offset, entered, left)
    wait_ends = [w[0] for w in waits]
    jobs = [row for row in trace if row[0] == "job"]  # job, t, logs, records, end offset
    synced = [row for row in trace if row[0] == "synced"]  # synced, t, seconds, ok, target
    fsyncs = sorted((row for row in trace if row[0] == "fsync"), key=lambda r: r[2])
    fsync_starts = [r[2] for r in fsyncs]
    gcs = [row for row in trace if row[0] == "gc"]
    lags = [row for row in trace if row[0] == "lag"]
    rolls = [row for row in trace if row[0] == "roll"]
    wakes = sorted(row[2] for row in trace if row[0] == "fetch")  # when each parked fetch resumed
    # The connections: the producer's (its Produce frames) and the consumer's Fetch connection
    # (the one that sent the most Fetch requests); each one's response writes, in time order.
    by_conn: dict[tuple[int, int], int] = {}
    for row in trace:
        if row[0] == "req" and len(row) > 3 and row[2] in (0, 1):
            by_conn[(row[2], row[3])] = by_conn.get((row[2], row[3]), 0) + 1
    conn_of = {api: max((c for (a, c) in by_conn if a == api), key=lambda c: by_conn[(api, c)], default=None)
               for api in (0, 1)}
    writes_of = {api: sorted(row[1] for row in trace if row[0] in ("write", "fwrite") and row[2] == conn_of[api])
                 for api in (0, 1)}
    # One job at a time: each synced row is the outcome of the latest job before it that aimed at
    # the same end offset and is not taken yet (a job with nothing to sync has no synced row; a
    # chained job, noted at its fsync's start, may begin before the one before it is synced).
    by_end: dict[int, list] = {}
    for job in sorted(jobs, key=lambda j: j[1]):
        by_end.setdefault(job[4], []).append(job)
    paired = []
    for row in synced:
        candidates = by_end.get(row[4], [])
        k = bisect.bisect_right([j[1] for j in candidates], row[1]) - 1
        if k >= 0:
            paired.append((candidates.pop(k), row))
    paired.sort(key=lambda p: p[0][1])
    job_times = [p[0][1] for p in paired]
    per_record = []
    for offset, produced, arrived in got:
        w = bisect.bisect_right(wait_ends, offset)
        if w >= len(waits):
            continue
        _, entered, _left = waits[w]
        k = bisect.bisect_left(job_times, entered - 1)
        while k < len(paired) and paired[k][0][4] <= offset:
            k += 1
        job = paired[k] if k < len(paired) else None
        if job is None:
            continue
        (_, job_t, _, _, _), (_, synced_t, _, _, _) = job
        i = bisect.bisect_left(fsync_starts, job_t)
        in_job = [r for r in fsyncs[i:bisect.bisect_right(fsync_starts, synced_t)] if r[3] <= synced_t]
        if in_job:
            first, last = min(r[2] for r in in_job), max(r[3] for r in in_job)
        else:
            first = last = job_t
        # The first parked fetch to resume after its job's outcome (none: the fetch was not parked then).
        w = bisect.bisect_left(wakes, synced_t)
        woken = wakes[w] if w < len(wakes) and wakes[w] <= arrived else synced_t
        # The first write of the consumer's Fetch connection from then on: the response that
        # carried the record left the broker (none before its arrival: no write rows, an older tree).
        fw = writes_of[1]
        f = bisect.bisect_left(fw, woken)
        answered = fw[f] if f < len(fw) and fw[f] <= arrived else woken
        pw = writes_of[0]
        a = bisect.bisect_left(pw, synced_t)
        acked = pw[a] - synced_t if a < len(pw) else None
        stages = {"to_append": entered - produced, "to_job": job_t - entered, "to_syscall": first - job_t,
                  "syscall": last - first, "to_loop": synced_t - last, "to_fetch_wake": woken - synced_t,
                  "fetch_answer": answered - woken, "to_consumer": arrived - answered}
        # While it waited for its job to start, the running job's fsync syscalls (the disk) took:
        j = bisect.bisect_left(fsync_starts, entered - 200_000_000)
        waited_on_disk = sum(max(0, min(r[3], job_t) - max(r[2], entered))
                             for r in fsyncs[j:bisect.bisect_right(fsync_starts, job_t)] if r[5].endswith(".log"))
        per_record.append({"offset": offset, "produced": produced, "arrived": arrived,
                           "e2e": arrived - produced, "stages": stages, "job": (job_t, synced_t), "entered": entered,
                           "ack_write": acked,
                           "disk": waited_on_disk + stages["syscall"],
                           "job_fsyncs": [(r[4], os.path.basename(r[5]), r[6], r[3] - r[2]) for r in in_job]})
    # to_append in two: produce() -> its Produce frame read by the broker (the client, the socket),
    # and -> appended (the broker). One producer connection answers its requests in order, so the
    # k-th Produce frame read is the k-th wait entered (skipped if the counts differ).
    produce_reads = sorted(row[1] for row in trace if row[0] == "req" and row[2] == 0)
    entered_order = sorted(w[1] for w in waits)
    read_at = dict(zip(entered_order, produce_reads)) if len(produce_reads) == len(entered_order) else {}
    for r in per_record:
        read = read_at.get(r["entered"])
        r["split"] = (read - r["produced"], r["entered"] - read) if read is not None else None
    per_record.sort(key=lambda r: r["e2e"])
    n = len(per_record)
    if not n:
        return {"records": 0}

    def pct(q):
        return per_record[min(n - 1, int(q * n))]["e2e"] / 1e6

    def overlap(rows, a, b, t0=2, t1=3):
        return [r for r in rows if r[t0] < b and r[t1] > a]

    main_tid = pid  # the event loop's thread is the process's first

    def sched_wait(tid, a, b, sched=sched):
        """Run-queue wait of thread ``tid`` between samples around [a, b] (ns)."""
        samples = sched.get(tid, [])
        if not samples:
            return 0
        times = [s[0] for s in samples]
        i = max(0, bisect.bisect_right(times, a) - 1)
        j = min(len(samples) - 1, bisect.bisect_left(times, b))
        return samples[j][2] - samples[i][2]

    fsync_tids = sorted({r[1] for r in fsyncs})

    def context(r):
        a, b = r["produced"], r["arrived"]
        job_t, synced_t = r["job"]
        c = {
            "gc_ms": sum((g[3] - g[2]) for g in overlap(gcs, a, b)) / 1e6,
            "gc_gens": sorted({g[1] for g in overlap(gcs, a, b)}),
            "loop_late_ms": max((l[2] for l in lags if a <= l[1] + l[2] and l[1] <= b), default=0) / 1e6,
            "loop_runqueue_ms": sched_wait(main_tid, a, b) / 1e6,
            "fsync_threads_runqueue_ms": max((sched_wait(t, job_t, synced_t) for t in fsync_tids), default=0) / 1e6,
            "client_runqueue_ms": max((sched_wait(t, a, b, client_sched) for t in client_sched), default=0) / 1e6,
            "other_fsyncs": [(x[4], os.path.basename(x[5]), round((x[3] - x[2]) / 1e6, 2))
                             for x in overlap(fsyncs, a, b) if not x[5].endswith(".log")],
            "rolls": len([x for x in rolls if a <= x[1] <= b]),
        }
        c["disk_ms"] = r["disk"] / 1e6  # its job's fsync syscalls, and the running one's while it waited
        if perf:
            reqs = perf["requests"]
            lo = bisect.bisect_left(perf["issued"], r["entered"] - 10**9)
            hi = bisect.bisect_right(perf["issued"], synced_t)
            during = [q for q in reqs[lo:hi] if q[0] < synced_t and q[1] > r["entered"]]
            c["io_others"] = sum(1 for q in during if q[2] != pid)
            c["io_others_kib"] = sum(q[5] for q in during if q[2] != pid) // 1024
            c["io_own"] = sum(1 for q in during if q[2] == pid)
            flushes = [q for q in during if q[4].startswith("F")]
            c["flush_ms"] = max(((q[1] - q[0]) / 1e6 for q in flushes), default=0)
            c["slowest_io_ms"] = max(((q[1] - q[0]) / 1e6 for q in during), default=0)
            c["io_list"] = [(q[3] if q[2] != pid else "broker", q[4], q[5], round((q[1] - q[0]) / 1e6, 3))
                            for q in during][:12]
        return c

    def summarise(selection):
        if not selection:
            return {}
        dominant: dict[str, int] = {}
        for r in selection:
            stage = max(STAGES, key=lambda s: r["stages"][s])
            dominant[stage] = dominant.get(stage, 0) + 1
        medians = {s: round(statistics.median(r["stages"][s] for r in selection) / 1e6, 3) for s in STAGES}
        contexts = [context(r) for r in selection[:: max(1, len(selection) // 500)]]
        keys = [k for k in contexts[0] if isinstance(contexts[0][k], (int, float))]
        return {"records": len(selection), "dominant_stage": dominant, "median_stage_ms": medians,
                # whose fsync syscalls (its job's, and the running one's it waited for) were half its time or more
                "disk_half_or_more": sum(1 for r in selection if r["disk"] * 2 >= r["e2e"]),
                "context_median": {k: round(statistics.median(c[k] for c in contexts), 3) for k in keys},
                "with_gc": sum(1 for c in contexts if c["gc_ms"] > 0),
                "with_other_fsyncs": sum(1 for c in contexts if c["other_fsyncs"]),
                "with_roll": sum(1 for c in contexts if c["rolls"]), "contexts_read": len(contexts)}

    everyone = summarise(per_record[: max(1, n // 2)])
    p99_set = per_record[int(0.99 * n):]
    p999_set = per_record[int(0.999 * n):]
    slow = [r for r in per_record if r["e2e"] > slow_ms * 1e6]
    worst = []
    for r in per_record[-12:]:
        worst.append({"offset": r["offset"], "e2e_ms": round(r["e2e"] / 1e6, 2),
                      "stages_ms": {s: round(v / 1e6, 2) for s, v in r["stages"].items()},
                      "job_fsyncs": [(k, f, size, round(ns / 1e6, 2)) for k, f, size, ns in r["job_fsyncs"]],
                      **context(r)})
    first_produced = min(r["produced"] for r in per_record)
    last_arrived = max(r["arrived"] for r in per_record)
    job_syscalls = sorted((r[3] - r[2]) / 1e6 for r in fsyncs if r[5].endswith(".log"))
    others = [r for r in fsyncs if not r[5].endswith(".log")]
    return {
        "records": n,
        "e2e_ms": {"p50": pct(0.5), "p99": pct(0.99), "p99.9": pct(0.999), "max": per_record[-1]["e2e"] / 1e6},
        "segment_fsync_ms": {"count": len(job_syscalls),
                             "p50": job_syscalls[len(job_syscalls) // 2] if job_syscalls else None,
                             "p99": job_syscalls[int(0.99 * len(job_syscalls))] if job_syscalls else None,
                             "max": job_syscalls[-1] if job_syscalls else None},
        "segment_fsyncs_over_ms": references.fsyncs_over([ms / 1e3 for ms in job_syscalls]),
        "other_fsyncs": {"count": len(others), "files": sorted({os.path.basename(r[5]) for r in others})[:20],
                         "during_load": [(round((r[2] - first_produced) / 1e9, 3), r[4], os.path.basename(r[5]),
                                          round((r[3] - r[2]) / 1e6, 2)) for r in others
                                         if first_produced <= r[2] <= last_arrived][:40]},
        "gc_during_load": [(round((g[2] - first_produced) / 1e9, 3), g[1], round((g[3] - g[2]) / 1e6, 2), g[4],
                            g[5] if len(g) > 5 else None)
                           for g in gcs if first_produced <= g[2] <= last_arrived and (g[1] > 0 or g[3] - g[2] > 2e6)],
        "gc": {"count": len(gcs), "gen2": sum(1 for g in gcs if g[1] == 2),
               "max_ms": max(((g[3] - g[2]) / 1e6 for g in gcs), default=0),
               "p50_ms": statistics.median((g[3] - g[2]) / 1e6 for g in gcs) if gcs else None,
               # the share of the load's time the loop spent collecting: records in flight then wait
               "share_of_load": sum(g[3] - g[2] for g in gcs if first_produced <= g[2] <= last_arrived)
                                / max(1, last_arrived - first_produced)},
        "loop_late_over_0.5ms": len(lags), "loop_late_max_ms": max((l[2] for l in lags), default=0) / 1e6,
        "rolls": len(rolls),
        # Each stage over every record (not the slowest records' stages): a stage's own tail, e.g.
        # the fsync thread's hand-offs (to_syscall, to_loop), which a busy loop can hold for up to
        # the GIL's switch interval.
        "stage_ms": {s: _quantiles(sorted(r["stages"][s] for r in per_record)) for s in STAGES},
        "fetch_not_parked": sum(1 for r in per_record if r["stages"]["to_fetch_wake"] == 0),
        "fetch_answer_parked_ms": _quantiles(sorted(r["stages"]["fetch_answer"] for r in per_record
                                                    if r["stages"]["to_fetch_wake"] > 0)) if writes_of[1] else None,
        # the job's outcome on the loop -> the Produce response acknowledging the record written
        "ack_write_ms": _quantiles(sorted(r["ack_write"] for r in per_record if r["ack_write"] is not None))
        if writes_of[0] else None,
        # to_append's two parts (see above): None when the Produce frames and waits did not pair up
        "to_append_split_ms": {
            "to_broker": _quantiles(sorted(r["split"][0] for r in per_record if r["split"])),
            "read_to_append": _quantiles(sorted(r["split"][1] for r in per_record if r["split"]))}
        if any(r["split"] for r in per_record) else None,
        "requests_read": {str(k): sum(1 for row in trace if row[0] == "req" and row[2] == k) for k in (0, 1)},
        # the share of the sampled time each broker thread ran on a CPU (the event loop: its busy share)
        "broker_thread_busy": {("loop" if tid == main_tid else str(tid)): round((samples[-1][1] - samples[0][1])
                                                                               / max(1, samples[-1][0] - samples[0][0]), 3)
                               for tid, samples in sched.items() if len(samples) > 1},
        "chain": _chain(waits, [r for r in fsyncs if r[5].endswith(".log")]),
        "median_half": everyone, "p99_set": summarise(p99_set), "p99.9_set": summarise(p999_set),
        "slow_set": summarise(slow), "worst": worst,
    }


def _chain(waits: list, segment_fsyncs: list) -> dict:
    """The group commit's chaining, from the Produce waits and the segment fsync syscalls: a wait
    that entered while an fsync ran is not covered by it; it waits for that fsync's end
    (``running_rest_ms``), then for the next fsync to start (``gap_ms``: the loop seeing the end and
    starting the next job; the floor, references.group_commit_wait, starts it at once), then for
    that fsync (``own_ms``). ``waits_per_fsync``: the Produce waits whose fsync each one was (those
    entered before it started, after the one before)."""
    starts = [r[2] for r in segment_fsyncs]
    rest, gap, own, chained = [], [], [], 0
    per_fsync = [0] * len(segment_fsyncs)
    for _, entered, _left in waits:
        i = bisect.bisect_right(starts, entered) - 1  # the last fsync started before it entered
        if 0 <= i < len(segment_fsyncs) and segment_fsyncs[i][3] > entered and i + 1 < len(segment_fsyncs):
            chained += 1
            rest.append(segment_fsyncs[i][3] - entered)
            gap.append(segment_fsyncs[i + 1][2] - segment_fsyncs[i][3])
            own.append(segment_fsyncs[i + 1][3] - segment_fsyncs[i + 1][2])
        if i + 1 < len(segment_fsyncs):
            per_fsync[i + 1] += 1
    covered = sorted(n for n in per_fsync if n)
    return {"waits": len(waits), "entered_during_an_fsync": chained,
            "running_rest_ms": _quantiles(sorted(rest)) if rest else None,
            "gap_ms": _quantiles(sorted(gap)) if gap else None, "own_ms": _quantiles(sorted(own)) if own else None,
            "waits_per_fsync": {"mean": round(sum(covered) / len(covered), 2), **{
                q: covered[min(len(covered) - 1, int(f * len(covered)))] for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}}
            if covered else None}


def _quantiles(ordered: list[int]) -> dict:
    """p50, p90, p99 of sorted ns values, in ms."""
    return {q: round(ordered[min(len(ordered) - 1, int(f * len(ordered)))] / 1e6, 3)
            for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


def summary_line(run: int, r: dict) -> str:
    """One run in a few lines: the percentiles, and where the 1% and 0.1% slowest spent their time."""
    if not r.get("records"):
        return f"run {run}: no records traced"
    e2e, fs, gc_ = r["e2e_ms"], r["segment_fsync_ms"], r["gc"]
    lines = [f"run {run} (load {r['load'][0]:.1f}-{r['load'][1]:.1f}): e2e p50 {e2e['p50']:.2f} p99 {e2e['p99']:.2f} "
             f"p99.9 {e2e['p99.9']:.2f} max {e2e['max']:.1f} ms; segment fsyncs {fs['count']} (p50 {fs['p50']:.2f}, "
             f"p99 {fs['p99']:.2f}, max {fs['max']:.1f} ms); collections {gc_['count']} "
             f"({gc_['share_of_load']:.2%} of the time); loop late > 0.5 ms {r['loop_late_over_0.5ms']} times"]
    if r.get("stage_ms"):
        lines.append("  every record, stage p50/p90/p99 ms: " + ", ".join(
            f"{s} {v['p50']:.2f}/{v['p90']:.2f}/{v['p99']:.2f}" for s, v in r["stage_ms"].items())
            + f"; fetch not parked at the job's end: {r['fetch_not_parked']} of {r['records']}"
            + (f"; the job's outcome -> the Produce ack written {'/'.join(f'{v:.2f}' for v in r['ack_write_ms'].values())}"
               if r.get("ack_write_ms") else "")
            + (f"; fetch_answer when parked {'/'.join(f'{v:.2f}' for v in r['fetch_answer_parked_ms'].values())}"
               if r.get("fetch_answer_parked_ms") else ""))
    split = r.get("to_append_split_ms")
    if split:
        lines.append("  to_append: produce() -> the Produce frame read " + "/".join(f"{v:.2f}" for v in split["to_broker"].values())
                     + ", -> appended " + "/".join(f"{v:.2f}" for v in split["read_to_append"].values())
                     + f" ms (p50/p90/p99); Produce requests {r['requests_read']['0']}, Fetch requests {r['requests_read']['1']}"
                     + f"; the event loop ran {r['broker_thread_busy'].get('loop', 0):.0%} of the time")
    chain = r.get("chain")
    if chain and chain.get("gap_ms"):
        q = lambda d: "/".join(f"{v:.2f}" for v in d.values())  # noqa: E731
        lines.append(f"  chaining: {chain['entered_during_an_fsync']} of {chain['waits']} Produce waits entered during an "
                     f"fsync: its rest {q(chain['running_rest_ms'])}, then the gap to the next fsync's start "
                     f"{q(chain['gap_ms'])}, then that fsync {q(chain['own_ms'])} ms (p50/p90/p99); waits an fsync "
                     f"covered: mean {chain['waits_per_fsync']['mean']}, p50/p90/p99 {chain['waits_per_fsync']['p50']}/"
                     f"{chain['waits_per_fsync']['p90']}/{chain['waits_per_fsync']['p99']}")
    for name in ("p99_set", "p99.9_set"):
        part = r[name]
        if part:
            stages = ", ".join(f"{s} {v:.2f}" for s, v in part["median_stage_ms"].items())
            context = part["context_median"]
            lines.append(f"  slowest {part['records']}: disk half their time or more {part['disk_half_or_more']}; longest stage "
                         f"{part['dominant_stage']}; median ms {stages}; run-queue waits ms: loop "
                         f"{context['loop_runqueue_ms']:.1f}, fsync threads {context['fsync_threads_runqueue_ms']:.1f}, "
                         f"client {context['client_runqueue_ms']:.1f}")
    settled, during = r.get("writeback_before"), r.get("disk_during_load")
    if settled and during:
        lines.append(f"  write-back before: {settled['dirty_mib_before']:.0f} MiB dirty, "
                     f"{settled['writeback_mib_before']:.0f} MiB in flight, synced in {settled['sync_s']:.2f} s; during the "
                     f"load the disk (everyone) wrote {during['written_mib']:.0f} MiB in {during['writes']} requests, "
                     f"{during['flushes']} cache flushes, discarded {during['discarded_mib']:.0f} MiB; segment fsyncs "
                     f"over 10/20/50 ms: {'/'.join(str(v) for v in r['segment_fsyncs_over_ms'].values())}")
    ref = r.get("reference")
    if ref and ref.get("latency_ms"):
        lines.append(f"  the disk alone at this pattern right after ({ref['seconds']:g} s): wait p50 "
                     f"{ref['latency_ms']['p50']:.2f} p99 {ref['latency_ms']['p99']:.2f} max {ref['latency_ms']['max']:.1f} ms; "
                     f"fsyncs {ref['fsyncs']}, over 10/20/50 ms: {'/'.join(str(v) for v in ref['fsyncs_over_ms'].values())}"
                     + (f"; the disk wrote {ref['disk']['written_mib']:.0f} MiB, {ref['disk']['flushes']} flushes"
                        if ref.get("disk") else ""))
    if r.get("disk"):
        d = r["disk"]
        lines.append(f"  disk: {d['requests']} block requests ({d['broker_requests']} the broker's), others wrote "
                     f"{d['others_kib'] / 1024:.0f} MiB; cache flushes p50 {d['flush_ms_p50']:.2f} p99 {d['flush_ms_p99']:.2f} "
                     f"max {d['flush_ms_max']:.1f} ms")
    return "\n".join(lines)


def one_run(args, tmp_root: Path, src_dir: Path | None) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="latency-trace-", dir=tmp_root))
    trace_out = workdir / "trace.json"
    perf_out = workdir / "perf.data"
    device = writeback.device_name(workdir)
    settled = writeback.settle()  # the earlier runs' (and anyone's) dirty pages on the disk first
    server, bootstrap = start_broker(workdir, trace_out, src_dir, args.set)
    own_nice = {}
    if args.autogroup_nice is not None:
        own_nice = {pid: nice for pid, nice in set_autogroup_nice([os.getpid(), server.pid], args.autogroup_nice).items()
                    if pid == os.getpid()}
    perf_proc = None
    sched: dict = {}
    try:
        kafka_load.create_topic(bootstrap, "bench")
        stop_sampling = threading.Event()
        broker_pid = server.pid
        own_pid = os.getpid()
        samples: list[tuple[int, dict, dict]] = []

        def sample():
            while not stop_sampling.is_set():
                samples.append((time.perf_counter_ns(), _schedstat(broker_pid), _schedstat(own_pid)))
                stop_sampling.wait(args.sched_ms / 1000)

        if args.perf:
            perf_proc = subprocess.Popen(["perf", "record", "-q", "-k", "mono", "-a", "-o", str(perf_out),
                                          *sum((["-e", e] for e in PERF_EVENTS), [])],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf's own start (it has no ready signal)
        load_before = load_average()
        disk_before = writeback.disk_counters(device)
        got, _ = load(bootstrap, args.rate, args.seconds, args.linger_ms, sample, stop_sampling)
        disk_during = writeback.disk_delta(disk_before, writeback.disk_counters(device))
        if perf_proc is not None:
            perf_proc.send_signal(signal.SIGINT)
            perf_proc.wait(60)
    finally:
        if perf_proc is not None and perf_proc.poll() is None:
            perf_proc.kill()
            perf_proc.wait()
        server.stop()
        for pid, nice in own_nice.items():  # this session's weight as it was (it outlives the run)
            set_autogroup_nice([pid], nice)
    trace = json.loads(trace_out.read_text()) if trace_out.exists() else []
    client_sched: dict = {}
    for t, broker, own in samples:
        for tid, (name, run, wait) in broker.items():
            sched.setdefault(tid, []).append((t, run, wait))
        for tid, (name, run, wait) in own.items():
            client_sched.setdefault(tid, []).append((t, run, wait))
    perf = parse_perf(perf_out) if args.perf and perf_out.exists() else None
    result = analyse(got, trace, sched, client_sched, perf, args.slow_ms)
    result["load"] = (load_before, load_average())
    result["writeback_before"], result["disk_during_load"] = settled, disk_during
    if perf:
        reqs = perf["requests"]
        broker_pid = next((row[1] for row in trace if row[0] == "pid"), None)
        flushes = sorted((q[1] - q[0]) / 1e6 for q in reqs if q[4].startswith("F"))
        result["disk"] = {"requests": len(reqs), "broker_requests": sum(1 for q in reqs if q[2] == broker_pid),
                          "others_kib": sum(q[5] for q in reqs if q[2] != broker_pid) // 1024,
                          "flushes": len(flushes),
                          "flush_ms_p50": flushes[len(flushes) // 2] if flushes else None,
                          "flush_ms_p99": flushes[int(0.99 * len(flushes))] if flushes else None,
                          "flush_ms_max": flushes[-1] if flushes else None}
    shutil.rmtree(workdir, ignore_errors=True)
    if args.reference:
        # The disk alone at the broker's write pattern, as long as the load and right after it, from
        # write-back finished as the run was: were the long fsyncs the broker's or the disk's?
        settled = writeback.settle()
        before = writeback.disk_counters(device)
        ref = references.group_commit_wait(tmp_root, seconds=args.seconds, rate=args.rate)
        result["reference"] = {"seconds": args.seconds, "writeback_before": settled,
                               "disk": writeback.disk_delta(before, writeback.disk_counters(device)),
                               **{k: ref.get(k) for k in ("latency_ms", "fsync_ms", "fsyncs", "fsyncs_over_ms")}}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_trace", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=5_000)
    p.add_argument("--linger-ms", type=float, default=1.0)
    p.add_argument("--slow-ms", type=float, default=5.0, help="a record slower than this is slow (default 5)")
    p.add_argument("--sched-ms", type=float, default=5.0, help="how often run-queue waits are read (default 5)")
    p.add_argument("--perf", action="store_true", help="also record the machine's block requests with perf (root)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a broker setting (repeatable)")
    p.add_argument("--reference", action="store_true",
                   help="after each run, the disk alone at the same write pattern for as long (references.group_commit_wait)")
    p.add_argument("--autogroup-nice", type=int, metavar="N",
                   help="the scheduling weight of this process's and the broker's sessions (-20..19; the machine's "
                        "other sessions keep theirs): on a shared machine, a run closer to an idle one's CPU")
    p.add_argument("--tidelog-ref", help="run the broker from this commit's src/ (git archive)")
    p.add_argument("--json", type=Path, help="write every run's analysis here")
    p.add_argument("--verbose", action="store_true", help="also print each run's analysis and its slowest records")
    args = p.parse_args(argv)
    from benchmarks.peers import Tidelog

    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-latency-trace-"))
    runs = []
    try:
        src_dir = None
        if args.tidelog_ref:
            Tidelog.use_ref(args.tidelog_ref, tmp_root / "src")
            src_dir = Tidelog.src_dir
        for run in range(1, args.runs + 1):
            r = one_run(args, tmp_root, src_dir)
            runs.append({"run": run, **r})
            print(summary_line(run, r), flush=True)
            if args.verbose:
                print(json.dumps({"run": run, **{k: v for k, v in r.items() if k != "worst"}}, indent=1), flush=True)
                for w in r.get("worst", []):
                    print(json.dumps(w), flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
