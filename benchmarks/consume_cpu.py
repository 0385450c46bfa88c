"""``python -m benchmarks.consume_cpu``: the one-consumer consume row alone, against librdkafka's
mock cluster in the same run, with what the client saw of each round trip.

A `balanced` broker (``tidelog serve``, a fresh data directory, one topic of ``--partitions``)
takes ``--records`` records of ``--record-bytes`` from the benchmark's producer
(kafka_load.produce), then the benchmark's consumer (kafka_load.CONSUMER_SETTINGS, assign() from
offset 0) reads them all back. Reported for the consume: records/s; the broker's CPU per GB,
user and system apart, the event-loop thread's and the other threads' (``/proc/PID/task/*/stat``);
and from librdkafka's statistics (``statistics.interval.ms``): Fetch requests per GB, bytes per
Fetch response, the round-trip time the client measured (request written to response read:
the broker's wait, its work, both socket copies), and the client's own wait before a request
leaves (``outbuf_latency``). The mock-cluster reference (kafka_load.consume_ceiling: the fastest
any broker serves this consumer; a C broker answering from memory) is measured the same way in
each pair, so the ratio is of one run on one machine.

``--tidelog-ref REF`` measures that commit's src/ as well, alternating (mock, ref, working tree,
mock, ...) ``--pairs`` times, each Tidelog side in a fresh broker: an A/B on a busy machine.
``--peer tansu`` adds another broker of ``python -m benchmarks`` to each round (its CPU the same
way: every thread of its process). ``--profile DIR`` samples the working tree's broker with py-spy during its consume passes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.produce_cpu import thread_cpu_s

TOPIC = "consume-cpu"
STATS_INTERVAL_MS = 200
PROFILE_RATE_HZ = 1000  # a fetch lasts about a millisecond


def sender_socket(pid: int) -> dict:
    """The TCP state of the busiest sending socket of process ``pid`` (the broker's side of the
    consumer's connection; for the in-process mock, this process), from ``ss -tinp``: the
    congestion control, cwnd (segments), MSS, pacing rate, min RTT, retransmitted bytes. On this
    machine's loopback BBR (``net.ipv4.tcp_congestion_control``) keeps the cwnd at 10-40 segments
    of 64 KB, under one 1 MB response, and paces: the two modes of the broker's system time a fetch
    are its (BENCHMARKS.md, "Consume rows, session 9"). The cwnd here is one sample at the end."""
    try:
        text = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    best: dict = {}
    for head, info in _pairs(text):
        if f"pid={pid}," not in head:
            continue
        sent = int((re.search(r"bytes_sent:(\d+)", info) or [0, 0])[1])
        if sent > best.get("bytes_sent", -1):
            def field(name: str, pattern: str = r"(\S+)") -> str | None:
                match = re.search(rf"\b{name}[: ]{pattern}", info)
                return match.group(1) if match else None
            best = {"bytes_sent": sent, "cc": info.split()[0], "cwnd": field("cwnd"), "mss": field("mss"),
                    "pacing_rate": field("pacing_rate"), "minrtt_ms": field("minrtt"),
                    "bytes_retrans": field("bytes_retrans") or "0"}
    return best


def _pairs(text: str) -> list[tuple[str, str]]:
    """(socket line, its info line) of ``ss -tinpH`` output."""
    lines = text.splitlines()
    return [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1) if not lines[i][:1].isspace()
            and lines[i + 1][:1].isspace()]


class Stats:
    """librdkafka's statistics, summed over the broker connections that fetched: Fetch requests,
    bytes received, and the round-trip and queueing latencies (each window's average weighted by
    its count)."""

    def __init__(self) -> None:
        self.last: dict = {}
        self.windows: list[dict] = []
        self.seen = 0

    def callback(self, text: str) -> None:
        stats = json.loads(text)
        self.seen += 1
        brokers = {name: b for name, b in stats.get("brokers", {}).items() if b.get("nodeid", -1) >= 0}
        self.last = brokers
        for b in brokers.values():
            self.windows.append({"rtt": b.get("rtt", {}), "outbuf": b.get("outbuf_latency", {})})

    def wait_for_next(self, consumer, timeout_s: float = 3.0) -> None:
        """Poll until one more statistics callback has come (the counters at the end of the pass)."""
        seen = self.seen
        deadline = time.monotonic() + timeout_s
        while self.seen == seen and time.monotonic() < deadline:
            consumer.poll(0.05)

    def summary(self) -> dict:
        fetches = sum(b.get("req", {}).get("Fetch", 0) for b in self.last.values())
        rx_bytes = sum(b.get("rxbytes", 0) for b in self.last.values())

        def weighted(key: str, field: str) -> float | None:
            windows = [w[key] for w in self.windows if w[key].get("cnt")]
            count = sum(w["cnt"] for w in windows)
            return sum(w[field] * w["cnt"] for w in windows) / count / 1e3 if count else None

        return {"fetches": fetches, "rx_bytes": rx_bytes, "rtt_avg_ms": weighted("rtt", "avg"),
                "rtt_p50_ms": weighted("rtt", "p50"), "rtt_p99_ms": weighted("rtt", "p99"),
                "outbuf_avg_ms": weighted("outbuf", "avg")}


def consume(bootstrap: str, records: int, partitions: int, timeout_s: float, broker_pid: int | None = None) -> dict:
    """kafka_load.consume's loop, with statistics; the counters (and the broker's socket, of
    ``broker_pid``) are read after the clock stops."""
    import confluent_kafka as ck

    from benchmarks.kafka_load import CONSUMER_SETTINGS

    stats = Stats()
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, **CONSUMER_SETTINGS, "error_cb": lambda err: None,
                            "statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": stats.callback})
    received = 0
    deadline = time.monotonic() + timeout_s
    try:
        cpu0 = time.process_time()
        start = time.perf_counter()
        consumer.assign([ck.TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        while received < records and time.monotonic() < deadline:
            for message in consumer.consume(min(10_000, records - received), 0.5):
                if message.error() is None:
                    received += 1
        seconds = time.perf_counter() - start
        client_cpu = time.process_time() - cpu0
        tcp = sender_socket(broker_pid) if broker_pid else {}
        stats.wait_for_next(consumer)
    finally:
        consumer.close()
    return {"records": received, "seconds": seconds, "records_per_s": received / seconds, "client_cpu_s": client_cpu,
            "status": "ok" if received >= records else "timeout", "tcp": tcp, **stats.summary()}


def measure_tidelog(src: Path | None, records: int, record_bytes: int, partitions: int, workdir: Path,
                    timeout_s: float, profile_dir: Path | None, perf_path: Path | None = None, peer: str = "") -> dict:
    """One broker (Tidelog from ``src``, None: the working tree; or the ``peer`` target, e.g.
    tansu), the records produced, then consumed: the figures of the consume."""
    from benchmarks import kafka_load
    from benchmarks.peers import Tidelog, make_target

    if peer:
        target = make_target(peer)
    else:
        Tidelog.src_dir = src
        target = Tidelog("balanced")
    server = target.start(workdir)
    try:
        kafka_load.create_topic(target.bootstrap, TOPIC, partitions)
        produced = kafka_load.produce(target.bootstrap, TOPIC, records, record_bytes, "1", timeout_s, partitions)
        if produced["status"] != "ok":
            raise RuntimeError(f"produce: {produced['status']} {produced['errors']}")
        before = thread_cpu_s(server.pid)
        if profile_dir is not None:
            from benchmarks import profile

            profile.RATE_HZ = PROFILE_RATE_HZ
            raw = profile_dir / f"consume-{int(time.time())}.txt"
            seconds, row = profile.record(server.pid, raw, lambda: consume(target.bootstrap, records, partitions,
                                                                             timeout_s, server.pid))
            (profile_dir / (raw.stem + ".json")).write_text(json.dumps(profile.summarise(raw, seconds, top=40),
                                                                       indent=1))
        elif perf_path is not None:
            import signal
            import subprocess

            perf = subprocess.Popen(["perf", "record", "-g", "-p", str(server.pid), "-o", str(perf_path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.5)  # perf has no readiness signal; it attaches within a few ms
                row = consume(target.bootstrap, records, partitions, timeout_s, server.pid)
            finally:
                perf.send_signal(signal.SIGINT)
                perf.wait(60)
        else:
            row = consume(target.bootstrap, records, partitions, timeout_s, server.pid)
        after = thread_cpu_s(server.pid)
        row["peak_rss_mb"] = server.peak_rss_bytes() / 1e6
    finally:
        server.stop()
    gb = records * record_bytes / 1e9
    loop = [after[server.pid][i] - before.get(server.pid, (0.0, 0.0))[i] for i in (0, 1)]
    total = [sum(after[t][i] - before.get(t, (0.0, 0.0))[i] for t in after) for i in (0, 1)]
    row.update(broker_s_per_gb=sum(total) / gb, user_s_per_gb=total[0] / gb, system_s_per_gb=total[1] / gb,
               loop_user_s_per_gb=loop[0] / gb, loop_system_s_per_gb=loop[1] / gb,
               other_threads_s_per_gb=(sum(total) - sum(loop)) / gb,
               loop_user_us_per_fetch=loop[0] / row["fetches"] * 1e6 if row["fetches"] else None)
    return row


def measure_mock(records: int, record_bytes: int, partitions: int, timeout_s: float) -> dict:
    from benchmarks import kafka_load

    stats = Stats()
    tcp: dict = {}

    def before_close(consumer) -> None:
        tcp.update(sender_socket(os.getpid()))  # the mock serves from this process
        stats.wait_for_next(consumer)

    row = kafka_load.consume_ceiling(records, record_bytes, timeout_s, partitions,
                                     settings={"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": stats.callback},
                                     before_close=before_close)
    row.update(stats.summary(), tcp=tcp)
    return row


def _line(pair: int, name: str, row: dict, records: int, record_bytes: int, mock_rate: float | None) -> str:
    gb = records * record_bytes / 1e9
    text = (f"{pair} {name:>18}: load {row['load']:.1f}; {row['records_per_s']:,.0f} records/s"
            + (f" ({100 * row['records_per_s'] / mock_rate:.0f}% of the mock)" if mock_rate and name != "mock" else "")
            + f"; {row['fetches'] / gb:,.0f} fetches/GB, {row['rx_bytes'] / max(row['fetches'], 1) / 1e3:,.0f} KB each"
            + (f", rtt avg {row['rtt_avg_ms']:.3f} p50 {row['rtt_p50_ms']:.3f} p99 {row['rtt_p99_ms']:.3f} ms"
               if row.get("rtt_avg_ms") is not None else "")
            + (f", outbuf {row['outbuf_avg_ms']:.3f} ms" if row.get("outbuf_avg_ms") is not None else "")
            + f"; client {row['client_cpu_s'] / gb:.2f} s/GB"
            + (f"; sender {row['tcp']['cc']} cwnd {row['tcp']['cwnd']}" if row.get("tcp") else ""))
    if "broker_s_per_gb" in row:
        text += (f"; broker {row['broker_s_per_gb']:.3f} s/GB (user {row['user_s_per_gb']:.3f}, system "
                 f"{row['system_s_per_gb']:.3f}; loop {row['loop_user_s_per_gb']:.3f}+{row['loop_system_s_per_gb']:.3f},"
                 f" others {row['other_threads_s_per_gb']:.3f})"
                 + (f", loop user {row['loop_user_us_per_fetch']:.0f} us a fetch" if row["loop_user_us_per_fetch"] else ""))
    return text


def _medians(rows: list[dict]) -> list[str]:
    """One line a side over the rounds: the medians of its share of the mock and its broker CPU."""
    import statistics

    lines = []
    for side in dict.fromkeys(row["side"] for row in rows if row["side"] != "mock"):
        mine = [row for row in rows if row["side"] == side]
        shares = [row["of_mock"] for row in mine if row.get("of_mock")]
        text = f"median {side:>14} ({len(mine)} rounds):"
        if shares:
            text += f" {100 * statistics.median(shares):.0f}% of the mock ({100 * min(shares):.0f}-{100 * max(shares):.0f}%);"
        if all("broker_s_per_gb" in row for row in mine):
            text += (f" broker {statistics.median(row['broker_s_per_gb'] for row in mine):.3f} s/GB (system "
                     f"{statistics.median(row['system_s_per_gb'] for row in mine):.3f})")
        lines.append(text)
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.consume_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=500_000, help="records produced, then consumed (default 500,000)")
    p.add_argument("--record-bytes", type=int, default=1024, help="bytes of each record's value (default 1,024)")
    p.add_argument("--partitions", type=int, default=1, help="partitions of the topic (default 1)")
    p.add_argument("--tidelog-ref", help="also measure this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--pairs", type=int, default=3, help="how many rounds (mock, [ref,] working tree) (default 3)")
    p.add_argument("--peer", action="append", default=[], help="also measure this target of python -m benchmarks "
                                                              "(e.g. tansu) in each round (repeatable)")
    p.add_argument("--no-mock", action="store_true", help="skip the mock-cluster reference")
    p.add_argument("--profile", type=Path, help="py-spy the working tree's broker while it serves, into this directory")
    p.add_argument("--perf", type=Path, help="perf record -g the working tree's broker while it serves, into this file")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on each produce and consume (s)")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args(argv)
    from benchmarks import machine

    machine.steady_client_heap()  # as python -m benchmarks: the clients' freed memory stays in this process
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-consume-cpu-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        from benchmarks.peers import Tidelog

        sides = Tidelog.ab_sides(args.tidelog_ref, tmp_root / "ref")
        for pair in range(1, args.pairs + 1):
            mock_rate = None
            if not args.no_mock:
                row = {"pair": pair, "side": "mock", "load": os.getloadavg()[0],
                       **measure_mock(args.records, args.record_bytes, args.partitions, args.timeout)}
                mock_rate = row["records_per_s"]
                rows.append(row)
                print(_line(pair, "mock", row, args.records, args.record_bytes, None), flush=True)
            for name, src in sides + [(peer, None) for peer in args.peer]:
                workdir = tmp_root / f"{pair}-{len(rows)}"
                peer = name if name in args.peer else ""
                row = {"pair": pair, "side": name, "load": os.getloadavg()[0],
                       **measure_tidelog(src, args.records, args.record_bytes, args.partitions, workdir, args.timeout,
                                         args.profile if src is None and not peer else None,
                                         args.perf if src is None and not peer else None, peer)}
                row["of_mock"] = row["records_per_s"] / mock_rate if mock_rate else None
                shutil.rmtree(workdir, ignore_errors=True)
                rows.append(row)
                print(_line(pair, name, row, args.records, args.record_bytes, mock_rate), flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    for line in _medians(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
