"""``python -m benchmarks``: run every workload against every target, several times, in one
invocation, and write the results (JSON, a markdown table, a PNG) to benchmarks/results/.

Each (run, target, workload) gets a fresh server process on a free loopback port with a
fresh data directory; it is stopped by PID and its directory removed before the next."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import latency_floor, machine, references, report, writeback
from benchmarks.peers import ALL_TARGETS, Target, make_target
from benchmarks.procs import ServerProcess, machine_busy_cpu_seconds
from benchmarks.workloads import DEFAULT_WORKLOADS, WORKLOADS, Workload

HERE = Path(__file__).resolve().parent

# --issue19: every target of issue 19 in one sitting of 17-22 minutes on the idle 2-core machine
# (the cross product of every target and workload, plus the replicated part, is 27-33: BENCHMARKS.md).
# Tidelog's balanced profile and Tansu run every workload a target is measured on; the other
# targets run the headline rows only (the non-Kafka peers' clients have no others anyway).
ISSUE19_WORKLOADS = ("1k-acks-all,100b-acks-1,1k-acks-all-p16,100b-acks-1-p16,1k-acks-all-p256,1k-p6-group3,"
                     "1k-p6-share1,1k-p6-share3,lat-5k,lat-20k,lat-5k-linger0")
ISSUE19_FULL_TARGETS = ("tidelog-balanced", "tansu")
ISSUE19_HEADLINE_WORKLOADS = ("1k-acks-all", "100b-acks-1", "lat-5k")
# Tansu's consumer group takes ~25 s to join whatever the record count (1,000,000 records: 40k/s in
# session 5's full run; 100,000: 4k/s), so its 1k-p6-group3 row measures the join, not the reads.
ISSUE19_LIMITED = {"tansu": [w for w in ISSUE19_WORKLOADS.split(",") if w not in ("1k-p6-group3",)]}



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, help="records per workload (default 1,000,000; 2,000 with --quick)")
    p.add_argument("--runs", type=int, help="repetitions; medians and min-max are reported (default 3; 1 with --quick)")
    p.add_argument("--targets", help=f"comma-separated subset of: {','.join(ALL_TARGETS)} (default all; "
                                     "tidelog-balanced with --quick)")
    p.add_argument("--workloads", help=f"comma-separated subset of: {','.join(WORKLOADS)} "
                                       f"(default {DEFAULT_WORKLOADS}; 1k-acks-all with --quick)")
    p.add_argument("--issue19", action="store_true",
                   help="every issue-19 target in one sitting (17-22 min idle): every target, tidelog-balanced on "
                        f"{ISSUE19_WORKLOADS}, tansu on the same but 1k-p6-group3, the others on "
                        f"{','.join(ISSUE19_HEADLINE_WORKLOADS)}; implies --replicated")
    p.add_argument("--quick", action="store_true", help="a small smoke run: few records, one run, Tidelog only, no references")
    p.add_argument("--no-references", action="store_true", help="skip the disk, socket-to-page-cache and client-ceiling references")
    p.add_argument("--disk-mib", type=int, help="size of the disk reference writes (default 512; 8 with --quick)")
    p.add_argument("--floor-mib", type=int, default=1024,
                   help="size of the socket-to-page-cache references, the kernel's floor under produce (default 1024)")
    p.add_argument("--profile", action="store_true", help="also sample the Tidelog broker with py-spy during a produce run")
    p.add_argument("--phase-timeout", type=float, default=300.0, help="bound on each produce or consume phase (s)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where results go (default benchmarks/results)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the temporary data directories")
    p.add_argument("--tidelog-ref", help="run Tidelog from this commit's src/ (git archive) instead of the working tree")
    p.add_argument("--tidelog-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra broker setting for every Tidelog target (repeatable; for A/B runs)")
    p.add_argument("--ack-latency", action="store_true",
                   help="latency rows also time each record from produce() to its acknowledgement (a Python "
                        "delivery callback a record in the producer's loop)")
    p.add_argument("--update-doc", action="store_true",
                   help="write the generated tables into BENCHMARKS.md and the plot to benchmarks/throughput.png")
    p.add_argument("--replicated", action="store_true",
                   help="then, in the same sitting, python -m benchmarks replicated (3 brokers on etcd, RF 3, beside a "
                        "single node; issue 19 item 3), --runs runs of --replicated-records records, into the same "
                        "results and report")
    p.add_argument("--replicated-records", type=int, default=200_000,
                   help="records a replicated throughput run (default 200,000, that module's own default)")
    p.add_argument("--replicated-failovers", type=int, default=3, help="leader SIGKILLs timed after the last RF 3 run")
    p.add_argument("--replicated-latency-seconds", type=float, default=10.0,
                   help="each replicated latency run at 5,000 records/s, and the disk beside it (default 10, as lat-5k)")
    p.add_argument("--no-steady-heap", dest="steady_heap", action="store_false",
                   help="leave glibc's malloc thresholds at their defaults in this process (the clients' process): "
                        "freed heap memory then goes back to the kernel and later phases touch fresh pages "
                        "(machine.steady_client_heap)")
    p.add_argument("--note", default="", help="a sentence for the report's load line (what else was running)")
    args = p.parse_args(argv)
    quick = args.quick
    args.limited = {}  # target -> the only workloads it runs (--issue19)
    if args.issue19:
        if quick or args.targets or args.workloads:
            p.error("--issue19 chooses the targets and workloads itself (not with --quick, --targets, --workloads)")
        args.workloads = ISSUE19_WORKLOADS
        args.replicated = True
        args.limited = {t: list(ISSUE19_HEADLINE_WORKLOADS) for t in ALL_TARGETS if t not in ISSUE19_FULL_TARGETS}
        args.limited.update(ISSUE19_LIMITED)
    args.records = args.records or (2_000 if quick else 1_000_000)
    args.runs = args.runs or (1 if quick else 3)
    args.targets = [t for t in (args.targets or ("tidelog-balanced" if quick else ",".join(ALL_TARGETS))).split(",") if t]
    workloads = args.workloads or ("1k-acks-all" if quick else DEFAULT_WORKLOADS)
    args.workloads = [WORKLOADS[w] for w in workloads.split(",") if w]
    args.references = not (args.no_references or quick)
    args.disk_mib = args.disk_mib or (8 if quick else 512)
    return args


def run_order(targets: list, workloads: list, run: int) -> list[tuple]:
    """(workload, target) in the order run ``run`` measures them: each workload's targets one
    after another, so the rows a ratio compares are seconds apart, not the minutes of every other
    workload of the first target (the machine's state, and on a shared machine its load, drifts
    in between); the targets' order reversed in every second run, so no target always follows
    the same one (the row before frees its broker's memory and data directory just before)."""
    order = targets if run % 2 else targets[::-1]
    return [(workload, target) for workload in workloads for target in order]


def run_phase(server: ServerProcess, fn, *args) -> dict:
    """Run one phase and add the broker's CPU and memory and everyone else's CPU to its result."""
    cpu0 = server.cpu_seconds()
    busy0 = machine_busy_cpu_seconds()
    faults0 = machine.own_minor_faults(), machine.minor_faults(server.pids())
    system0 = machine.system_cpu_seconds(server.pids())
    result = fn(*args)
    broker_cpu = server.cpu_seconds() - cpu0
    busy = machine_busy_cpu_seconds() - busy0
    result.update(client_minor_faults=machine.own_minor_faults() - faults0[0],
                  broker_minor_faults=machine.minor_faults(server.pids()) - faults0[1],
                  broker_system_cpu_s=machine.system_cpu_seconds(server.pids()) - system0)
    gigabytes = result["bytes"] / 1e9
    result.update(
        broker_cpu_s=broker_cpu,
        broker_cpu_s_per_gb=broker_cpu / gigabytes if gigabytes else None,
        broker_peak_rss_bytes=server.peak_rss_bytes(),
        others_cpu_s=max(0.0, busy - broker_cpu - result["client_cpu_s"]),
    )
    return result


def run_target(target: Target, workload: Workload, run: int, records: int, tmp_root: Path, timeout_s: float) -> list[dict]:
    """Start a fresh server, run the workload's phases (produce then consume, or one latency
    phase), stop it; one row per phase."""
    base = {"run": run, "target": target.name, "kind": target.kind, "workload": workload.name,
            "record_bytes": workload.record_bytes, "acks": workload.acks}
    workdir = Path(tempfile.mkdtemp(prefix=f"{target.name}-{workload.name}-", dir=tmp_root))
    rows = []
    server = None
    phase = "start"
    try:
        if workload.is_latency:  # every target's latency row starts with the earlier rows' write-back done
            base["writeback_before"] = writeback.settle()
        server = target.start(workdir)
        topic = "bench"
        target.prepare(topic, workload)
        if workload.is_latency:
            phase = "latency"
            device = writeback.device_name(workdir)
            disk_before = writeback.disk_counters(device)
            row = run_phase(server, target.latency, topic, workload, timeout_s)
            rows.append({**base, "phase": phase, **row,
                         "disk_during": writeback.disk_delta(disk_before, writeback.disk_counters(device))})
            return rows
        phase = "produce"
        rows.append({**base, "phase": phase, **run_phase(server, target.produce, topic, records, workload, timeout_s)})
        phase = "consume"
        if rows[-1]["status"] != "ok":
            rows.append({**base, "phase": phase, "status": "not run: the produce phase did not complete", "errors": []})
        else:
            rows.append({**base, "phase": phase, **run_phase(server, target.consume, topic, records, workload, timeout_s)})
    except Exception as e:  # one failing target must not stop the others
        tail = server.log_tail(1500) if server else ""
        rows.append({**base, "phase": phase, "status": f"failed: {type(e).__name__}: {e}", "errors": [tail]})
        traceback.print_exc()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def latency_references(run: int, tmp_root: Path, seconds: float = 5.0, workloads=(), timeout_s: float = 300.0) -> list[dict]:
    """The disk's fsync alone, and lat-5k's write pattern without the broker for ``seconds`` (as
    long as a latency row: the disk's rare long fsyncs are caught as often): how long a record
    waits for the group fsync covering it (references.group_commit_wait). Each starts with the
    machine's write-back finished, as the latency rows do. Then, for each 5,000/s row of
    ``workloads``, its floor (benchmarks/latency_floor.py: the clients against the mock cluster,
    plus the disk's wait from a request's arrival; lat-5k's disk part is the run above)."""
    base = {"run": run, "kind": "reference", "workload": "-", "acks": "-", "phase": "latency"}
    rows = [{**base, "target": "disk-fsync-latency", "record_bytes": 4096, "writeback_before": writeback.settle()}]
    rows[0].update(references.fsync_latency(tmp_root))
    rows.append({**base, "target": "disk-group-commit-wait", "record_bytes": 1024, "writeback_before": writeback.settle()})
    rows[1].update(references.group_commit_wait(tmp_root, seconds=seconds, samples=True))
    disk = {**rows[1], "request_waits_s": rows[1].pop("request_waits_s", None)}
    for w in workloads:
        if w.is_latency and w.rate == 5_000:
            row = {**base, "target": latency_floor.TARGET, "workload": w.name, "acks": w.acks, "record_bytes": w.record_bytes,
                   "writeback_before": writeback.settle()}
            try:
                row.update(latency_floor.floor(tmp_root, w.rate, w.seconds, w.record_bytes, w.linger_ms, timeout_s,
                                               disk if w.linger_ms == 1 and w.record_bytes == 1024 else None))
            except Exception as e:  # noqa: BLE001 - a reference that fails is reported, the run goes on
                row.update(status=f"failed: {type(e).__name__}: {e}", errors=[])
            rows.append(row)
    return rows


def run_references(args, run: int, tmp_root: Path) -> list[dict]:
    rows = []
    seconds = max((w.seconds for w in args.workloads if w.is_latency), default=5.0)
    if all(workload.is_latency for workload in args.workloads):  # latency rows only: the disk's latency references
        return latency_references(run, tmp_root, seconds, args.workloads, args.phase_timeout)
    for name, sync in (("disk-fdatasync-per-MiB", True), ("disk-sequential", False)):
        rows.append({"run": run, "target": name, "kind": "reference", "workload": "-", "record_bytes": 1_048_576,
                     "acks": "-", "phase": "write", **references.disk_write(tmp_root, args.disk_mib, sync)})
    rows += latency_references(run, tmp_root, seconds, args.workloads, args.phase_timeout)
    for name, sync in (("socket-to-page-cache-fdatasync-per-MiB", True), ("socket-to-page-cache", False)):
        rows.append({"run": run, "target": name, "kind": "reference", "workload": "-", "record_bytes": 1_048_576,
                     "acks": "-", "phase": "write", **references.socket_to_page_cache(tmp_root, args.floor_mib, sync)})
    for workload in args.workloads:
        if not workload.has_ceiling:
            continue
        base = {"run": run, "target": "client-ceiling", "kind": "reference", "workload": workload.name,
                "record_bytes": workload.record_bytes, "acks": "-"}
        faults0 = machine.own_minor_faults()
        rows.append({**base, "phase": "produce",
                     **references.client_ceiling(args.records, workload.record_bytes, workload.partitions),
                     "client_minor_faults": machine.own_minor_faults() - faults0})
        faults0 = machine.own_minor_faults()
        try:
            consume = references.consume_ceiling(args.records, workload.record_bytes, workload.partitions,
                                                 args.phase_timeout)
        except Exception as e:  # noqa: BLE001 - a reference that fails is reported, the run goes on
            consume = {"status": f"failed: {type(e).__name__}: {e}", "errors": []}
        rows.append({**base, "phase": "consume", **consume, "client_minor_faults": machine.own_minor_faults() - faults0})
    return rows


def run_profile(args, tmp_root: Path) -> dict | None:
    from benchmarks import profile
    from benchmarks.peers import Tidelog

    if profile.py_spy() is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    workload = next((w for w in args.workloads if w.is_basic), WORKLOADS["1k-acks-all"])
    target = Tidelog("balanced")
    workdir = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp_root))
    out = args.out / "profile-produce.txt"
    server = target.start(workdir)
    try:
        target.prepare("bench", workload)

        def produce_for_a_while():
            # Enough samples even when one pass is short: repeat up to 10 s (and 20 passes).
            results = []
            start = time.monotonic()
            while time.monotonic() - start < 10 and len(results) < 20:
                results.append(target.produce("bench", args.records, workload, args.phase_timeout))
                if results[-1]["status"] != "ok":
                    break
            return results

        seconds, results = profile.record(server.pid, out, produce_for_a_while)
        summary = profile.summarise(out, seconds)
        records = sum(r["records"] for r in results)
        summary.update(target=target.name, workload=workload.name, records=records,
                       records_per_s_under_profiler=records / seconds, raw=str(out.name))
        return summary
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_replicated(args, tmp_root: Path) -> dict:
    """benchmarks.replicated in this sitting: the single node, then three brokers (RF 3), each
    ``args.runs`` times, their latency runs and the disk beside them, then the failovers. A
    failure is recorded (with what was measured before it) and the report goes on."""
    from benchmarks import replicated

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if shutil.which("etcd") is None:
        return {"started": started, "error": "etcd is not installed (apt-get install -y etcd-server)", "records": 0,
                "record_bytes": replicated.RECORD_BYTES, "single": [], "replicated": [], "failover_s": []}
    from benchmarks.peers import Tidelog

    if Tidelog.src_dir is not None:  # --tidelog-ref: the same commit's brokers
        replicated.Broker.src_dir = Tidelog.src_dir
    workdir = tmp_root / "replicated"
    workdir.mkdir()
    print(f"replicated: {args.runs} run(s) of {args.replicated_records:,} records, single node then RF 3", flush=True)
    try:
        out = replicated.run(args.replicated_records, args.runs, args.replicated_failovers, args.phase_timeout, workdir,
                             args.replicated_latency_seconds)
    except Exception as e:  # noqa: BLE001 - reported; the main run's results still get written (not SIGTERM's SystemExit)
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}", "records": args.replicated_records,
               "record_bytes": replicated.RECORD_BYTES, "single": [], "replicated": [], "failover_s": []}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out["started"] = started
    out["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return out


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds through the finally blocks, which stop every server by PID.
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    import signal

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["micro"]:  # python -m benchmarks micro: the hot functions, no broker
        from benchmarks import micro

        return micro.main(argv[1:])
    if argv[:1] == ["push"]:  # python -m benchmarks push ...: push subscriptions' throughput and latency
        from benchmarks import push

        return push.main(argv[1:])
    if argv[:1] == ["replicated"]:  # python -m benchmarks replicated ...: the 3-broker RF 3 workload
        from benchmarks import replicated

        return replicated.main(argv[1:])
    if argv[:1] == ["multicore"]:  # python -m benchmarks multicore ...: 1 and 2 brokers of a cluster on one host
        from benchmarks import multicore

        return multicore.main(argv[1:])
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    client_heap = machine.steady_client_heap() if args.steady_heap else {"skipped": "--no-steady-heap"}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-bench-", dir=args.tmp_dir))
    started = dt.datetime.now(dt.timezone.utc)
    if args.tidelog_ref:
        from benchmarks.peers import Tidelog

        Tidelog.use_ref(args.tidelog_ref, tmp_root / "tidelog-src")
    if args.ack_latency:
        from benchmarks.peers import KafkaTarget

        KafkaTarget.ack_latency = True
    if args.tidelog_set:
        from benchmarks.peers import Tidelog

        Tidelog.extra_settings = tuple(args.tidelog_set)
    targets, skipped = [], []
    for name in args.targets:
        target = make_target(name)
        reason = target.unavailable()
        if reason:
            skipped.append({"target": name, "reason": reason})
            print(f"skipping {name}: {reason}", flush=True)
        else:
            targets.append(target)
    from benchmarks.peers import Tidelog

    extensions = machine.c_extensions(Tidelog.src_dir or HERE.parent / "src")
    for module, state in extensions.items():
        if state != "built":
            print(f"warning: the C extension {module} is {state}", flush=True)
    machine_info = machine.machine_info(tmp_root)
    machine_info["busy_at_start"] = machine.busy_processes()
    results = {
        "started": started.isoformat(timespec="seconds"),
        # The note is in the report's load line; the command shows where it went.
        "command": "python -m benchmarks " + shlex.join([a if not args.note or a != args.note else "..." for a in argv]),
        "note": args.note,
        "machine": machine_info,
        "versions": {**machine.client_versions(), **{t.name: t.version() for t in targets},
                     **{f"C extension {module}": state for module, state in extensions.items()}},
        "settings": {
            "records": args.records, "runs": args.runs,
            "workloads": [{**vars(w), "description": w.describe()} for w in args.workloads],
            "producer": _kafka_settings("producer"), "consumer": _kafka_settings("consumer"),
            "targets": {t.name: t.settings() for t in targets},
            "disk_reference_mib": args.disk_mib, "socket_floor_mib": args.floor_mib, "phase_timeout_s": args.phase_timeout,
            "limited": {t.name: args.limited[t.name] for t in targets if t.name in args.limited},
            "client_heap": client_heap,
        },
        "skipped": skipped,
        "not_supported": {t.name: [w.name for w in args.workloads if not t.supports(w)] for t in targets
                          if any(not t.supports(w) for w in args.workloads)},
        "rows": [],
        "profile": None,
    }
    try:
        for run in range(1, args.runs + 1):
            if args.references:
                print(f"run {run}: references", flush=True)
                results["rows"] += run_references(args, run, tmp_root)
            for workload, target in run_order(targets, args.workloads, run):
                if not target.supports(workload) or workload.name not in args.limited.get(target.name, [workload.name]):
                    continue
                t0 = time.monotonic()
                rows = run_target(target, workload, run, args.records, tmp_root, args.phase_timeout)
                results["rows"] += rows
                print(f"run {run}: {target.name} {workload.name}: " + "; ".join(
                    f"{r['phase']} {r.get('records_per_s') or 0:,.0f} rec/s"
                    + (f" p99 {r['latency_ms']['p99']:.1f} ms" if "latency_ms" in r else "") + f" {r['status']}"
                    for r in rows)
                    + f" ({time.monotonic() - t0:.0f}s)", flush=True)
        if args.profile:
            print("profiling the broker with py-spy", flush=True)
            results["profile"] = run_profile(args, tmp_root)
        if args.replicated:
            results["replicated"] = run_replicated(args, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        results["machine"]["loadavg_at_end"] = machine.load_average()
        results["machine"]["busy_at_end"] = machine.busy_processes()
        results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        json_path = args.out / f"results-{stamp}.json"
        json_path.write_text(json.dumps(results, indent=1))
        shutil.copyfile(json_path, args.out / "latest.json")
    markdown = report.markdown(results)
    (args.out / "results.md").write_text(markdown)
    png = report.plot(results, args.out / "throughput.png")
    if args.update_doc:
        report.update_doc(HERE.parent / "BENCHMARKS.md", results, markdown)
        if png:
            shutil.copyfile(png, HERE / "throughput.png")
    print(markdown)
    print(f"results: {json_path}")
    failed = [r for r in results["rows"] if r["status"] != "ok"]
    return 1 if failed else 0


def _kafka_settings(which: str) -> dict:
    from benchmarks import kafka_load

    if which == "producer":
        return {**{k: v for k, v in kafka_load.PRODUCER_SETTINGS.items()}, "acks": "per workload"}
    return {**kafka_load.CONSUMER_SETTINGS, "assignment": "assign() to partition 0 from offset 0: no group join, no commits"}
