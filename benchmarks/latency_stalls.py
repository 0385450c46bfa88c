"""``python -m benchmarks.latency_stalls``: are a latency run's slow records the broker's slow fsyncs?

The lat-5k shape (1 KiB, acks=all, one partition, a paced confluent-kafka producer, a consumer in
the same process stamping arrivals) against a fresh `balanced` broker with its HTTP listener on;
a thread scrapes its /metrics every ``--scrape-ms`` for the fsync job histogram
(``tidelog_fsync_latency_seconds``), so each fsync job slower than ``--slow-ms`` is placed in
time (within a scrape interval) beside the records slower than that, on the same clock.

Per run: e2e p50/p99/max; fsync jobs, and how many took over 5 ms and over ``--slow-ms``;
the slow-record episodes (records over ``--slow-ms`` sent within 0.2 s of each other) and how
many had a slow fsync job within 0.1 s; the slow fsync jobs' windows and how many fell in or next
to an episode. ``--json`` keeps every window and episode.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks import kafka_load, latency_trace
from benchmarks.procs import load_average

BUCKET = re.compile(r'^tidelog_fsync_latency_seconds_bucket\{le="([^"]+)"\} (\S+)', re.M)
EPISODE_GAP_S = 0.2  # slow records sent closer than this are one episode
NEAR_S = 0.1  # a slow fsync this close to an episode counts as beside it


def _buckets(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as response:
        return {le: float(count) for le, count in BUCKET.findall(response.read().decode())}


def _over(buckets: dict[str, float], le: str) -> float:
    return buckets["+Inf"] - buckets[le]


def one_run(target, tmp_root: Path, rate: int, seconds: float, linger_ms: float, scrape_s: float, slow_s: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="latency-stalls-", dir=tmp_root))
    server = target.start(workdir)
    try:
        http_port = int((workdir / "port").read_text().split()[1])
        kafka_load.create_topic(target.bootstrap, "bench")
        le = f"{slow_s:g}" if f"{slow_s:g}" in _buckets(http_port) else "0.02"
        samples: list[tuple[float, dict[str, float]]] = []
        stop = threading.Event()

        def scrape():
            while not stop.is_set():
                at = time.perf_counter()
                try:
                    samples.append((at, _buckets(http_port)))
                except OSError:
                    pass
                stop.wait(scrape_s)

        got, start = latency_trace.load(target.bootstrap, rate, seconds, linger_ms, scrape, stop)
        sent_and_ms = [(produced / 1e9, (arrived - produced) / 1e6) for _, produced, arrived in got]
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ordered = sorted(ms for _, ms in sent_and_ms)

    def pct(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    windows = [(t0 - start, t1 - start, _over(b1, le) - _over(b0, le))
               for (t0, b0), (t1, b1) in zip(samples, samples[1:]) if _over(b1, le) > _over(b0, le)]
    episodes: list[list[float]] = []  # [first sent, last sent, worst ms, records], s from the start
    for at, ms in sorted((at - start, ms) for at, ms in sent_and_ms if ms > slow_s * 1000):
        if episodes and at - episodes[-1][1] < EPISODE_GAP_S:
            episodes[-1][1:] = [at, max(episodes[-1][2], ms), episodes[-1][3] + 1]
        else:
            episodes.append([at, at, ms, 1])

    def near(a0, a1, b0, b1):
        return b0 - NEAR_S <= a1 and b1 + NEAR_S >= a0

    total = samples[-1][1] if samples else {}
    return {
        "records": len(ordered), "load": load_average(),
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": ordered[-1] if ordered else None},
        "fsync_jobs": total.get("+Inf"), "fsync_over_5ms": _over(total, "0.005") if total else None,
        "slow_fsync_jobs": _over(total, le) if total else None, "slow_ms": float(le) * 1000,
        "episodes": len(episodes),
        "episodes_beside_a_slow_fsync": sum(any(near(e[0], e[1], w[0], w[1]) for w in windows) for e in episodes),
        "slow_fsync_windows": len(windows),
        "windows_beside_an_episode": sum(any(near(e[0], e[1], w[0], w[1]) for e in episodes) for w in windows),
        "episode_list": [[round(x, 3) for x in e] for e in episodes],
        "window_list": [[round(x, 3) for x in w] for w in windows],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_stalls", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=5_000)
    p.add_argument("--linger-ms", type=float, default=1.0)
    p.add_argument("--scrape-ms", type=float, default=50.0, help="how often /metrics is read (default 50)")
    p.add_argument("--slow-ms", type=float, default=20.0, help="a histogram bound (ms) above which a record or an fsync "
                                                              "job is slow (default 20)")
    p.add_argument("--tidelog-ref", help="run the broker from this commit's src/ (git archive)")
    p.add_argument("--json", type=Path, help="write every run here")
    args = p.parse_args(argv)
    from benchmarks.peers import Tidelog

    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-latency-stalls-"))
    runs = []
    settings, src_dir, commit = Tidelog.extra_settings, Tidelog.src_dir, Tidelog.commit
    try:
        if args.tidelog_ref:
            Tidelog.use_ref(args.tidelog_ref, tmp_root / "src")
        Tidelog.extra_settings = ("http.port=0",)
        target = Tidelog("balanced")
        for run in range(1, args.runs + 1):
            r = one_run(target, tmp_root, args.rate, args.seconds, args.linger_ms, args.scrape_ms / 1000,
                        args.slow_ms / 1000)
            runs.append({"run": run, **r})
            lat = r["latency_ms"]
            print(f"run {run} (load {r['load']:.1f}): e2e p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.1f} ms; "
                  f"fsync jobs {r['fsync_jobs']:.0f}, over 5 ms {r['fsync_over_5ms']:.0f}, over {r['slow_ms']:g} ms "
                  f"{r['slow_fsync_jobs']:.0f}; slow-record episodes {r['episodes']}, beside a slow fsync "
                  f"{r['episodes_beside_a_slow_fsync']}; slow-fsync windows {r['slow_fsync_windows']}, beside an episode "
                  f"{r['windows_beside_an_episode']}", flush=True)
    finally:
        Tidelog.extra_settings, Tidelog.src_dir, Tidelog.commit = settings, src_dir, commit
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
