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

    python -m benchmarks.replication_trace [--rate 5000 --seconds 10 | --records 200000] [--tidelog-ref REF]
"""

from __future__ import annotations

import argparse
import bisect
import json
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
            for name, ns in (("wake", read_at - appended_at), ("to_follower", received - read_at),
                             ("f_append", appended_f - received), ("f_next", sent - appended_f),
                             ("to_leader", taken_at - sent), ("hw_after", hw_at - taken_at),
                             ("ack_after", acked_at - hw_at), ("durable", durable_at - appended_at),
                             ("total", acked_at - appended_at)):
                stages[name].append(ns / 1e6)
    return stages


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
        brokers = {i: replicated.Broker(tmp_root, i, cluster, dict(replicated.CLUSTER_SETTINGS)) for i in (1, 2, 3)}
        try:
            for broker in brokers.values():
                broker.start()
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
        summary = {key: result.get(key) for key in ("records_per_s", "latency_ms", "ack_latency_ms") if key in result}
        summary["cpu_s"] = {("leader" if i == leader_id else f"follower {i}"): round(c, 2) for i, c in cpu.items()}
        summary["load_average"] = replicated.load_average()
        print(json.dumps({key: value for key, value in summary.items()}))
        summary["stages_ms"] = {name: quantiles(stages[name]) for name in STAGES}
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))
        print(f"{'stage (ms)':<12} {'n':>7} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}")
        for name in STAGES:
            q = summary["stages_ms"][name]
            if q:
                print(f"{name:<12} {q['n']:>7} {q['p50']:>8.3f} {q['p90']:>8.3f} {q['p99']:>8.3f} {q['mean']:>8.3f}")
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
