"""``python -m benchmarks.replication_trace``: where an acks=all record's time goes on three brokers.

benchmarks/replicated.py's cluster (3 brokers, one etcd, RF 3, min.insync.replicas 2, balanced),
each broker run under benchmarks/broker_trace.py, which notes on the machine's monotonic clock
(shared by every process) each append as leader, follower read at the leader, follower position
taken, high watermark and durable end moved, Produce acknowledgement wait returned, and on the
followers each Fetch sent, its response read and its append done. Then either the lat-5k shape
(``--rate``, ``--seconds``) or a full-rate produce (``--records``), and each batch the leader
appended is followed through:

- ``wake``: the leader's append -> a follower's read that carries it; split into ``wake_parked``
  (the Fetch answered was sent before the append: parked at the leader, or on its way) and
  ``wake_busy`` (the follower was busy with the previous response: its next Fetch);
- ``to_follower``: -> the follower has the response (encode, send, the kernel, the follower's loop);
- ``f_append``: -> the follower appended it (decode, CRC, write);
- ``f_next``: -> the follower's next Fetch sent (its position in it);
- ``to_leader``: -> the leader took that position (the kernel, the leader's loop, decode, handler);
- ``hw_after``: the later follower's position taken -> the high watermark passed the batch (0
  unless the leader's own fsync came later);
- ``ack_after``: -> the Produce's acknowledgement wait returned (the future's wake-up);

and beside them ``durable`` (the append -> the leader's durable end passed it) and ``total`` (the
append -> the acknowledgement wait returned). Per stage the median, p90 and p99 over batches, the
follower stages for the follower the high watermark waited for (the later one of the ISR).

Per-stage p99s, each taken alone, do not say what held the slowest records, so ``tail`` compares
the slowest 1% of batches (by ``total``) with all of them: each stage's mean, which path held the
high watermark (the leader's fsync or the followers' positions), and how many waited for a leader
fsync that ran while a follower's scheduled flush did. ``leader_fsyncs`` splits the leader's
segment fsyncs the same way, within the run: what the followers' flushes cost the group commit on
a disk the three brokers share. ``--autogroup-nice -20`` weights the brokers' and this process's
sessions above the machine's others (benchmarks/latency_trace.py's option): on a machine shared
with other engineers' suites, closer to an idle machine's CPU, not its disk. ``--set NAME=VALUE``
sets a broker setting (e.g. ``replica.flush.interval.ms``).

    python -m benchmarks.replication_trace [--rate 5000 --seconds 10 | --records 200000] [--tidelog-ref REF]
        [--autogroup-nice -20] [--set NAME=VALUE] [--json OUT] [--keep DIR]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import kafka_load, replicated

HERE = Path(__file__).resolve().parent
STAGES = ("wake", "wake_parked", "wake_busy", "to_follower", "f_append", "f_next", "to_leader", "hw_after", "ack_after", "durable", "total")


def _first_at_least(keys: list[int], values: list, target: int):
    i = bisect.bisect_left(keys, target)
    return values[i] if i < len(keys) else None


def analyse(traces: dict[int, list], leader_id: int, topic: str) -> dict:
    """Per batch appended on ``topic`` by ``leader_id``, the stages (ms) above."""
    leader = traces[leader_id]
    appends = [(r[1], r[3]) for r in leader if r[0] == "lappend" and r[2] == topic]

    def series(rows, kind, value_at):
        picked = [(r[value_at], r[1]) for r in rows if r[0] == kind and r[2] == topic]
        picked.sort()  # by offset, then time: the first time each offset was reached
        return [o for o, _ in picked], [t for _, t in picked]

    hw_keys, hw_times = series(leader, "hw", 3)
    durable_keys, durable_times = series(leader, "durable", 3)
    acked_keys, acked_times = series(leader, "acked", 3)
    followers = sorted({r[3] for r in leader if r[0] == "lread" and r[2] == topic})
    per_follower = {}
    for replica in followers:
        reads = sorted((r[5], r[1]) for r in leader if r[0] == "lread" and r[2] == topic and r[3] == replica)
        fetched = sorted((r[4], r[1]) for r in leader if r[0] == "lfetched" and r[2] == topic and r[3] == replica)
        rows = traces.get(replica, [])
        fappends = sorted((r[3], r[1]) for r in rows if r[0] == "fappend" and r[2] == topic and r[4] > 0)
        sends = sorted(r[1] for r in rows if r[0] == "fsend")
        recvs = sorted(r[1] for r in rows if r[0] == "frecv")
        per_follower[replica] = ([o for o, _ in reads], [t for _, t in reads], [o for o, _ in fetched],
                                 [t for _, t in fetched], [o for o, _ in fappends], [t for _, t in fappends], sends, recvs)
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    batches: list[dict] = []  # per batch: every stage (ms), the critical path, a follower flush overlapping
    leader_fsyncs = sorted((r[2], r[3]) for r in leader if r[0] == "fsync" and r[5].endswith(".log"))
    follower_flushes = sorted((r[2], r[3]) for replica, rows in traces.items() if replica != leader_id
                              for r in rows if r[0] == "fsync" and r[5].endswith(".log"))
    for appended_at, end in appends:
        timeline = []
        for replica, (read_keys, read_times, fetched_keys, fetched_times, fa_keys, fa_times, sends, recvs) \
                in per_follower.items():
            read_at = _first_at_least(read_keys, read_times, end)
            taken_at = _first_at_least(fetched_keys, fetched_times, end)
            appended_f = _first_at_least(fa_keys, fa_times, end)
            if None in (read_at, taken_at, appended_f):
                break
            i = bisect.bisect_right(recvs, appended_f) - 1
            j = bisect.bisect_left(sends, appended_f)
            if i < 0 or j >= len(sends):
                break
            asked = sends[bisect.bisect_right(sends, recvs[i]) - 1]  # the Fetch this response answered
            timeline.append((taken_at, read_at, recvs[i], appended_f, sends[j], asked < appended_at))
        else:
            hw_at = _first_at_least(hw_keys, hw_times, end)
            acked_at = _first_at_least(acked_keys, acked_times, end)
            durable_at = _first_at_least(durable_keys, durable_times, end)
            if not timeline or None in (hw_at, acked_at, durable_at):
                continue
            # The follower the high watermark waited for: the later one whose position came before
            # it (one out of the ISR, as after a shrink under load, is not waited for).
            counted = [t for t in timeline if t[0] <= hw_at]
            if not counted:
                continue
            taken_at, read_at, received, appended_f, sent, parked = max(counted)
            stages["wake_parked" if parked else "wake_busy"].append((read_at - appended_at) / 1e6)
            batch = {}
            for name, ns in (("wake", read_at - appended_at), ("to_follower", received - read_at),
                             ("f_append", appended_f - received), ("f_next", sent - appended_f),
                             ("to_leader", taken_at - sent), ("hw_after", hw_at - taken_at),
                             ("ack_after", acked_at - hw_at), ("durable", durable_at - appended_at),
                             ("total", acked_at - appended_at)):
                stages[name].append(ns / 1e6)
                batch[name] = ns / 1e6
            # The high watermark passed the batch when the later of the leader's fsync and the
            # followers' positions came: which one held it.
            batch["critical"] = "leader fsync" if durable_at > taken_at else "followers"
            batch["flush_overlap"] = _overlaps(follower_flushes, appended_at, durable_at)
            batch["leader_fsync_ms"] = max((e - s_) / 1e6 for s_, e in leader_fsyncs if s_ < durable_at and e > appended_at) \
                if _overlaps(leader_fsyncs, appended_at, durable_at) else 0.0
            batches.append(batch)
    stages["_batches"] = batches  # type: ignore[assignment]
    return stages


def _overlaps(intervals: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether any (start, end) of ``intervals`` (sorted by start) overlaps [start, end]."""
    i = bisect.bisect_left(intervals, (end, end))
    return any(s < end and e > start for s, e in intervals[max(0, i - 64):i])


def tail(batches: list[dict], fraction: float = 0.01) -> dict:
    """The slowest ``fraction`` of batches (by ``total``) against all: each stage's mean, which
    path held the high watermark (the leader's fsync or the followers' positions), and how many
    had one of the followers' flushes (an fsync of their log) running during the leader's wait
    for its own fsync: what the per-stage p99s, taken one at a time, cannot say."""
    if not batches:
        return {}
    ranked = sorted(batches, key=lambda b: b["total"])
    slow = ranked[-max(1, int(len(ranked) * fraction)):]

    def describe(rows: list[dict]) -> dict:
        out = {"n": len(rows)}
        for name in ("wake", "to_follower", "f_append", "f_next", "to_leader", "hw_after", "ack_after", "durable",
                     "leader_fsync_ms", "total"):
            out[name] = statistics.fmean(r[name] for r in rows)
        out["leader_fsync_critical"] = sum(r["critical"] == "leader fsync" for r in rows) / len(rows)
        out["follower_flush_overlap"] = sum(r["flush_overlap"] for r in rows) / len(rows)
        return out

    return {"all": describe(ranked), "slowest": describe(slow)}


def leader_fsyncs(traces: dict[int, list], leader_id: int) -> dict:
    """The leader's segment fsyncs (ms), split by whether one of the followers' segment fsyncs
    (their scheduled flushes) ran at the same time: what the followers' flushes cost the leader's
    group commit on a shared disk, measured within one run."""
    followers = sorted((r[2], r[3]) for replica, rows in traces.items() if replica != leader_id
                       for r in rows if r[0] == "fsync" and r[5].endswith(".log"))
    split: dict[str, list[float]] = {"overlapping": [], "alone": []}
    for r in traces[leader_id]:
        if r[0] == "fsync" and r[5].endswith(".log"):
            split["overlapping" if _overlaps(followers, r[2], r[3]) else "alone"].append((r[3] - r[2]) / 1e6)
    return {**{name: quantiles(values) for name, values in split.items()},
            "follower_flush": quantiles([(e - s) / 1e6 for s, e in followers])}


def quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"n": len(values), "p50": statistics.median(values), "p90": at(0.9), "p99": at(0.99),
            "mean": statistics.fmean(values)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replication_trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=replicated.LATENCY_RATE)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--records", type=int, default=0, help="a full-rate produce of this many records instead")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--tidelog-ref")
    parser.add_argument("--keep", type=Path, help="copy the raw traces here")
    parser.add_argument("--json", type=Path, help="write the summary and each stage's quantiles here")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every broker (repeatable)")
    parser.add_argument("--autogroup-nice", type=int, metavar="N",
                        help="weight the brokers', etcd's and this process's sessions N (-20: well above the machine's "
                             "other sessions; benchmarks/latency_trace.py's option): closer to an idle machine's CPU, "
                             "not its disk")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="no trace: py-spy samples the three brokers during the workload instead (raw stacks into DIR)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-repltrace-"))
    try:
        if args.tidelog_ref:
            from benchmarks.peers import Tidelog

            Tidelog.use_ref(args.tidelog_ref, tmp_root / "tidelog-src")
            replicated.Broker.src_dir = Tidelog.src_dir
        if not args.profile:
            replicated.Broker.trace_dir = tmp_root / "traces"
            replicated.Broker.trace_dir.mkdir()
        etcd, cluster = replicated.start_etcd(tmp_root)
        settings = {**replicated.CLUSTER_SETTINGS, **dict(item.split("=", 1) for item in args.set)}
        brokers = {i: replicated.Broker(tmp_root, i, cluster, settings) for i in (1, 2, 3)}
        try:
            for broker in brokers.values():
                broker.start()
            own_nice = {}
            if args.autogroup_nice is not None:
                from benchmarks.latency_trace import set_autogroup_nice

                pids = [etcd.pid, *(b.server.pid for b in brokers.values())]
                own_nice = set_autogroup_nice([os.getpid()], args.autogroup_nice)
                set_autogroup_nice(pids, args.autogroup_nice)
            bootstrap = ",".join(b.bootstrap for b in brokers.values())
            topic = "bench" if args.records else "lat"
            replicated.create_topic(bootstrap, topic, 3, {"min.insync.replicas": "2"})
            leader_id = replicated.leader_of(bootstrap, topic)
            before = {i: b.server.cpu_seconds() for i, b in brokers.items()}
            if args.records:
                workload = lambda: kafka_load.produce(bootstrap, topic, args.records,  # noqa: E731
                                                      replicated.RECORD_BYTES, "all", args.timeout)
            else:
                workload = lambda: kafka_load.latency(bootstrap, topic, args.rate, args.seconds,  # noqa: E731
                                                      replicated.RECORD_BYTES, "all", args.timeout, acknowledgements=True)
            if args.profile:
                from benchmarks import profile

                args.profile.mkdir(parents=True, exist_ok=True)
                raw = {b.server.pid: args.profile / f"broker-{i}-{'leader' if i == leader_id else 'follower'}.raw"
                       for i, b in brokers.items()}
                seconds, result = profile.record_many(raw, workload)
                for path in raw.values():
                    summary_ = profile.summarise(path, seconds, top=25)
                    print(f"{path.stem}: {summary_['busy_percent']}% of one core sampled; own samples:")
                    for kind in ("own", "inclusive"):
                        print(f" {kind}:")
                        for row in summary_[kind][:25]:
                            print(f"  {row['percent']:5.1f}%  {row['function']}")
            else:
                result = workload()
            cpu = {i: b.server.cpu_seconds() - before[i] for i, b in brokers.items()}
            for pid, nice in own_nice.items():  # this session's weight as it was (it outlives the run)
                set_autogroup_nice([pid], nice)
        finally:
            for broker in brokers.values():
                broker.stop()
            etcd.stop()
        if args.profile:
            print(json.dumps({key: result.get(key) for key in ("records_per_s", "latency_ms") if key in result}))
            return 0
        traces = {i: json.loads((replicated.Broker.trace_dir / f"broker-{i}.json").read_text()) for i in brokers}
        if args.keep:
            shutil.copytree(replicated.Broker.trace_dir, args.keep, dirs_exist_ok=True)
        stages = analyse(traces, leader_id, topic)
        batches = stages.pop("_batches")
        summary = {key: result.get(key) for key in ("records_per_s", "latency_ms", "ack_latency_ms") if key in result}
        summary["cpu_s"] = {("leader" if i == leader_id else f"follower {i}"): round(c, 2) for i, c in cpu.items()}
        summary["load_average"] = replicated.load_average()
        print(json.dumps({key: value for key, value in summary.items()}))
        summary["stages_ms"] = {name: quantiles(stages[name]) for name in STAGES}
        summary["tail"] = tail(batches)
        summary["leader_fsyncs_ms"] = leader_fsyncs(traces, leader_id)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))
        print(f"{'stage (ms)':<12} {'n':>7} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}")
        for name in STAGES:
            q = summary["stages_ms"][name]
            if q:
                print(f"{name:<12} {q['n']:>7} {q['p50']:>8.3f} {q['p90']:>8.3f} {q['p99']:>8.3f} {q['mean']:>8.3f}")
        if summary["tail"]:
            print("mean (ms) over all batches / the slowest 1%:")
            every, slow = summary["tail"]["all"], summary["tail"]["slowest"]
            for name in every:
                print(f"  {name:<24} {every[name]:>9.3f} {slow[name]:>9.3f}")
        print("the leader's segment fsyncs (ms), alone / overlapping a follower's flush, and the followers' flushes:")
        for name, q in summary["leader_fsyncs_ms"].items():
            if q:
                print(f"  {name:<24} n {q['n']:>6}  p50 {q['p50']:8.3f}  p90 {q['p90']:8.3f}  p99 {q['p99']:8.3f}")
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
