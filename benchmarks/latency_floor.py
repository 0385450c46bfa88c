"""The floor under a latency row: a record's end-to-end time if the broker cost nothing.

Two parts, each measured in the same run, then added:

- **the clients' own path**: the row's producer (paced to its rate, its ``linger.ms``, acks=all;
  kafka_load.latency, the same code and settings) against librdkafka's mock cluster
  (``test.mock.num.brokers``), an in-process C broker that acknowledges at once, with no disk:
  each record's time from produce() to its acknowledgement (librdkafka's message latency, read
  when the paced loop serves the delivery report): the linger, the request's way to the broker
  and the response's way back. At a broker that cost nothing a record would leave for a
  consumer whose Fetch is parked at the moment its acknowledgement leaves for the producer, by
  the same loopback hop and client parsing, so this stands for the clients' part of its
  end-to-end time (the hand-over differs: the delivery report waits for the producer loop's next
  poll, up to 0.2 ms at 5,000/s, where a consumer's poll is already waiting). Why not the mock's
  end-to-end time itself: the mock never wakes a parked Fetch when records arrive (an empty one
  is answered when its wait is up), so its consumer either waits (up to ``fetch.wait.max.ms`` a
  record) or, with 0, spins a core and a half of this two-core machine against the producer.
  Side by side at load 8 (weighted, ``--autogroup-nice -20``), the spinning consumer's p50 was
  0.04-0.06 ms below the acknowledgement's (0.79 / 0.83 ms at linger 1, 0.15 / 0.21 at linger 0);
  its p99 ranged 0.5-274 ms over seven runs at load 6-9, the acknowledgement's 0.4-8 over four.
- **the disk**: a request's wait from its arrival to the end of the group fsync that covers it,
  one fsync at a time, at the row's write pattern (references.group_commit_wait: a request every
  ``linger.ms``, or with linger 0 each record its own request), what a broker that cost nothing
  would still add between a record's arrival and its visibility to a consumer (acks=all,
  balanced: visible once durable). From a request's arrival, not a record's: the record's
  time in the producer's batch is in the first part already.

The two are independent (the disk does not know where a record sat in its batch, nor the
clients how long an fsync took), so the floor's distribution is that of their sum: each record
of the first part is added to ``DRAWS`` waits drawn from the second (a fixed seed), and the
floor's percentiles are the sums'. A broker at the floor would cost nothing; Tidelog's row over
this one is what the broker itself adds, at p50 and at p99.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import confluent_kafka as ck

from benchmarks import kafka_load, references

TARGET = "e2e-floor"
DRAWS = 20  # disk waits drawn per client-path record
SEED = 19


def client_path(rate: int, seconds: float, record_bytes: int, linger_ms: float, timeout_s: float) -> dict:
    """kafka_load.latency against the mock cluster (see above), with every record's time to its
    acknowledgement (``ack_latencies_s``)."""
    mock = ck.Producer({"test.mock.num.brokers": 1, "log_level": 0, "error_cb": lambda err: None})
    try:
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in mock.list_topics(timeout=10).brokers.values())
        mock.list_topics("floor", timeout=10)  # creates the topic
        return kafka_load.latency(bootstrap, "floor", rate, seconds, record_bytes, "all", timeout_s,
                                  acknowledgements=True, linger_ms=linger_ms, samples=True)
    finally:
        mock.purge()


def disk_path(directory: Path, rate: int, seconds: float, record_bytes: int, linger_ms: float) -> dict:
    """references.group_commit_wait at the row's pattern, with each request's wait (``request_waits_s``)."""
    interval_ms = linger_ms if linger_ms > 0 else 1000 / rate
    return references.group_commit_wait(directory, seconds=seconds, rate=rate, record_bytes=record_bytes,
                                        interval_ms=interval_ms, samples=True)


def compose(client_s: list[float], disk_s: list[float], draws: int = DRAWS, seed: int = SEED) -> dict:
    """Percentiles (ms) of client + disk (seconds each), each client sample with ``draws`` disk samples drawn at random."""
    pick = random.Random(seed).choices
    sums = sorted((c + d) * 1e3 for c in client_s for d in pick(disk_s, k=draws))
    n = len(sums)
    out = {q: sums[min(n - 1, int(f * n))] for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
    out["max"] = sums[-1]
    return out


def floor(directory: Path, rate: int, seconds: float, record_bytes: int, linger_ms: float, timeout_s: float,
          disk: dict | None = None) -> dict:
    """The floor of a latency row (``latency_ms``, as the rows'), with its two parts'
    percentiles (``client_latency_ms``: to the acknowledgement at the mock cluster;
    ``disk_request_wait_ms``). ``disk``: a
    group_commit_wait result with ``request_waits_s`` at this pattern, measured already (else
    measured here, after the clients)."""
    client = client_path(rate, seconds, record_bytes, linger_ms, timeout_s)
    if disk is None:
        disk = disk_path(directory, rate, seconds, record_bytes, linger_ms)
    client_s = client.pop("ack_latencies_s", [])
    disk_s = disk.get("request_waits_s") or []
    result = {k: v for k, v in client.items() if k not in ("latency_ms", "ack_latency_ms")}
    result.update(client_latency_ms=client.get("ack_latency_ms"), disk_request_wait_ms=disk.get("request_wait_ms"),
                  disk_fsyncs_over_ms=disk.get("fsyncs_over_ms"), linger_ms=linger_ms)
    if client_s and disk_s:
        result["latency_ms"] = compose(client_s, disk_s)
    else:
        result["status"] = "no samples" if client.get("status") == "ok" else client.get("status")
    return result


def main(argv=None) -> int:
    """``python -m benchmarks.latency_floor``: the floors of lat-5k and lat-5k-linger0, alternated."""
    import argparse
    import shutil
    import tempfile

    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=5_000)
    p.add_argument("--linger-ms", default="1,0", help="comma-separated (default 1,0)")
    p.add_argument("--dir", type=Path, help="a directory on the data directories' filesystem (default: a new temp dir)")
    p.add_argument("--autogroup-nice", type=int, metavar="N",
                   help="this process's session's scheduling weight while it runs (as latency_trace's)")
    args = p.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="tidelog-latency-floor-", dir="/var/tmp"))
    before = {}
    if args.autogroup_nice is not None:
        from benchmarks.latency_trace import set_autogroup_nice

        before = set_autogroup_nice([os.getpid()], args.autogroup_nice)
    try:
        for run in range(1, args.runs + 1):
            for linger in (float(x) for x in args.linger_ms.split(",")):
                load = os.getloadavg()[0]
                r = floor(directory, args.rate, args.seconds, 1024, linger, 120)
                fmt = lambda d: "/".join(f"{d[q]:.2f}" for q in ("p50", "p99", "p99.9")) if d else "–"  # noqa: E731
                print(f"run {run} linger.ms={linger:g} (load {load:.1f}-{os.getloadavg()[0]:.1f}): floor p50/p99/p99.9 "
                      f"{fmt(r.get('latency_ms'))} ms = clients {fmt(r['client_latency_ms'])} + disk from a request's "
                      f"arrival {fmt(r['disk_request_wait_ms'])}; client CPU {r.get('client_cpu_s', 0):.1f} s; "
                      f"{r.get('status')}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
        if before:
            from benchmarks.latency_trace import set_autogroup_nice

            for pid, nice in before.items():  # the session outlives this process
                set_autogroup_nice([pid], nice)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
