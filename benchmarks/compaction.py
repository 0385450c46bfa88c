"""Compaction: what it does to ``__consumer_offsets``, how fast the cleaner goes, and what it costs producers.

    python -m benchmarks.compaction [--groups 100] [--partitions 10] [--commit-interval-s 60] [--days 7]
                                    [--segment-mb 100] [--changelog-records 1000000] [--changelog-segment-mb 16]
                                    [--latency-sends 2000] [--out DIR]

1. A week of commits. ``--groups`` consumer groups, each committing ``--partitions`` offsets
   every ``--commit-interval-s`` for ``--days``, written into ``__consumer_offsets`` (segments of
   ``--segment-mb``, ``offsets.topic.segment.bytes``: Kafka's 100 MiB by default) as the
   group coordinator writes them (one batch per commit, Kafka's record format), directly into a
   stopped broker's data directory, which is quicker than driving the commits through clients.
   The broker then starts with the cleaner off (the size on disk and the start time, which is
   dominated by replaying the topic), runs with it on until the topic is cleaned (the cleaner's
   time and throughput from its metrics), and starts again: size and start time after.
2. Produce latency while the cleaner works. A compacted topic is filled with
   ``--changelog-records`` records (100-byte values over 10,000 keys); then one confluent-kafka
   producer sends ``--latency-sends`` single records (acks=all, one in flight) to another topic
   and each delivery is timed, once with the cleaner off and once while it cleans the
   changelog (the cleaning is checked to span the whole measurement).

Every broker is a ``tidelog serve`` process on a free loopback port with its own data
directory under a temporary directory, stopped by PID (SIGTERM) and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.procs import ServerProcess, free_port, port_open, wait_until
from tidelog.groups.records import OffsetKey, OffsetValue, encode_offset_key, encode_offset_value
from tidelog.protocol.topics import CONSUMER_OFFSETS
from tidelog.protocol.records import build_batch, parse_batch_header
from tidelog.storage.log import LogConfig, PartitionLog

OFFSETS_TOPIC = CONSUMER_OFFSETS
DAY_S = 24 * 3600


class Broker:
    """One single-node ``tidelog serve`` on a free port, with its HTTP port for /metrics."""

    def __init__(self, data_dir: Path, settings: dict[str, str]) -> None:
        self.data_dir, self.settings = data_dir, settings
        self.port, self.http_port = free_port(), free_port()
        self.server: ServerProcess | None = None
        self.started_s = 0.0

    def start(self) -> "Broker":
        args = [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--set", f"http.port={self.http_port}"]
        for name, value in self.settings.items():
            args += ["--set", f"{name}={value}"]
        began = time.monotonic()
        self.server = ServerProcess("broker", args, self.data_dir.parent)
        self.server.start(lambda: port_open(self.port), timeout_s=900)  # listening once groups are loaded
        self.started_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout_s=300)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> dict[tuple[str, tuple], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=30).read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def dirty_ratio(self, topic: str) -> float | None:
        return self.metrics().get(("tidelog_log_cleaner_dirty_ratio", (("partition", "0"), ("topic", topic))))


def cleanings(log_path: Path, name: str) -> list[tuple[float, float, int, int]]:
    """(start, end as epoch seconds, records read, records kept) of each cleaning of ``name`` (a
    topic-partition) the broker logged."""
    import datetime as dt

    def epoch(line: str) -> float:
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    found, started = [], None
    for line in log_path.read_text(errors="replace").splitlines():
        if f"{name}: cleaning offsets" in line:
            started = epoch(line)
        elif f"{name}: cleaned " in line and started is not None:
            read, kept = line.rsplit(", ", 1)[1].split(" records")[0].split(" -> ")
            found.append((started, epoch(line), int(read), int(kept)))
            started = None
    return found


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file())


def write_commits(data_dir: Path, groups: int, partitions: int, interval_s: int, days: float,
                  segment_bytes: int) -> tuple[int, int]:
    """Append a simulated history of offset commits to the stopped broker's __consumer_offsets;
    return (commits, records)."""
    config = LogConfig(segment_bytes=segment_bytes, durability="throughput", compact=True, delete=False)
    log = PartitionLog.open(data_dir / f"{OFFSETS_TOPIC}-0", OFFSETS_TOPIC, 0, config, recover=False)
    keys = [[encode_offset_key(OffsetKey(f"group-{g}", f"topic-{g % 20}", p)) for p in range(partitions)]
            for g in range(groups)]
    start_ms = int(time.time() * 1000) - int(days * DAY_S * 1000)
    commits = 0
    for step in range(int(days * DAY_S / interval_s)):
        now_ms = start_ms + step * interval_s * 1000
        for g in range(groups):
            values = [encode_offset_value(OffsetValue(step * 100 + p, -1, "", now_ms)) for p in range(partitions)]
            batch = bytearray(build_batch([(k, v, []) for k, v in zip(keys[g], values)], timestamp_ms=now_ms))
            log.append(memoryview(batch), parse_batch_header(batch), now_ms=now_ms)
            commits += 1
    log.close()
    return commits, commits * partitions


def offsets_topic(args, root: Path) -> dict:
    data_dir = root / "offsets" / "data"
    data_dir.parent.mkdir(parents=True)
    segment_bytes = int(args.segment_mb * 1024 * 1024)
    off = {"log.cleaner.enable": "false", "offsets.topic.segment.bytes": str(segment_bytes)}
    Broker(data_dir, off).start().stop()  # creates the topic and the metadata
    began = time.monotonic()
    commits, records = write_commits(data_dir, args.groups, args.partitions, args.commit_interval_s, args.days,
                                     segment_bytes)
    print(f"wrote {commits:,} commits ({records:,} records) in {time.monotonic() - began:.0f} s", file=sys.stderr)
    partition_dir = data_dir / f"{OFFSETS_TOPIC}-0"
    before_bytes = directory_bytes(partition_dir)
    broker = Broker(data_dir, off).start()
    before_start_s = broker.started_s
    broker.stop()
    broker = Broker(data_dir, {"log.cleaner.backoff.ms": "200"}).start()
    try:
        wait_until(lambda: broker.dirty_ratio(OFFSETS_TOPIC) == 0 and broker.metrics().get(
            ("tidelog_log_cleaner_runs_total", (("result", "cleaned"),)), 0) >= 1, 3600, "the cleaner", 1.0)
        metrics = broker.metrics()
    finally:
        broker.stop()
    clean_s = metrics[("tidelog_log_cleaner_run_seconds_sum", ())]
    read_bytes = metrics[("tidelog_log_cleaner_read_bytes_total", ())]
    removed = metrics[("tidelog_log_cleaner_removed_records_total", ())]
    records_read = sum(read for _, _, read, _ in cleanings(broker.server.log_path, f"{OFFSETS_TOPIC}-0"))
    after_bytes = directory_bytes(partition_dir)
    broker = Broker(data_dir, off).start()
    after_start_s = broker.started_s
    broker.stop()
    return {
        "groups": args.groups, "partitions": args.partitions, "commit_interval_s": args.commit_interval_s,
        "days": args.days, "segment_mb": args.segment_mb, "commits": commits, "records": records,
        "before_bytes": before_bytes, "before_start_s": before_start_s,
        "after_bytes": after_bytes, "after_start_s": after_start_s,
        "clean_s": clean_s, "cleaner_read_bytes": read_bytes, "cleaner_removed_records": removed,
        "cleaner_mb_per_s": read_bytes / clean_s / 1e6 if clean_s else None,
        "cleaner_records_per_s": records_read / clean_s if clean_s else None,
    }


def fill_changelog(data_dir: Path, topic: str, records: int, segment_bytes: int) -> None:
    config = LogConfig(segment_bytes=segment_bytes, durability="throughput", compact=True, delete=False)
    log = PartitionLog.open(data_dir / f"{topic}-0", topic, 0, config, recover=False)
    value = b"v" * 100
    for start in range(0, records, 100):
        batch = bytearray(build_batch([(b"key-%05d" % ((start + i) % 10_000), value, []) for i in range(100)]))
        log.append(memoryview(batch), parse_batch_header(batch))
    log.close()


def produce_latencies(bootstrap: str, topic: str, sends: int) -> list[tuple[float, float]]:
    """(when sent, epoch seconds; seconds to its delivery) of ``sends`` single records, one in flight."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                            "max.in.flight.requests.per.connection": 1})
    latencies: list[float] = []
    value = b"x" * 1024
    for i in range(sends):
        sent, wall = time.perf_counter(), time.time()
        producer.produce(topic, value=value, key=b"%d" % i, partition=0,
                         on_delivery=lambda err, msg, sent=sent, wall=wall: latencies.append(
                             (wall, time.perf_counter() - sent)))
        producer.flush(30)
    del producer  # librdkafka's handle goes now, not after the broker stopped
    assert len(latencies) == sends
    return latencies


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)],
            "max_ms": 1000 * ordered[-1], "mean_ms": 1000 * statistics.fmean(ordered)}


def produce_latency(args, root: Path) -> dict:
    data_dir = root / "latency" / "data"
    data_dir.parent.mkdir(parents=True)
    off = {"log.cleaner.enable": "false"}
    broker = Broker(data_dir, off).start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    segment_bytes = int(args.changelog_segment_mb * 1024 * 1024)
    for name, configs in (("changelog", {"cleanup.policy": "compact", "segment.bytes": str(segment_bytes)}), ("latency", {})):
        admin.create_topics([NewTopic(name, 1, 1, config=configs)])[name].result(30)
    del admin
    broker.stop()
    fill_changelog(data_dir, "changelog", args.changelog_records, segment_bytes)
    broker = Broker(data_dir, off).start()
    try:
        quiet = produce_latencies(broker.bootstrap, "latency", args.latency_sends)
    finally:
        broker.stop()
    broker = Broker(data_dir, {"log.cleaner.backoff.ms": "100"}).start()
    try:
        wait_until(lambda: (broker.dirty_ratio("changelog") or 0) > 0, 60, "the changelog to be seen dirty", 0.1)
        busy = produce_latencies(broker.bootstrap, "latency", args.latency_sends)
        wait_until(lambda: broker.dirty_ratio("changelog") == 0, 3600, "the changelog to be cleaned", 1.0)
        metrics = broker.metrics()
    finally:
        broker.stop()
    runs = cleanings(broker.server.log_path, "changelog-0")
    during = [latency for sent, latency in busy if any(start <= sent <= end for start, end, _, _ in runs)]
    clean_s = metrics[("tidelog_log_cleaner_run_seconds_sum", ())]
    return {
        "changelog_records": args.changelog_records, "sends": args.latency_sends, "sends_during_cleaning": len(during),
        "cleaner_off": percentiles([latency for _, latency in quiet]), "cleaner_on": percentiles(during),
        "clean_s": clean_s, "cleaner_mb_per_s": metrics[("tidelog_log_cleaner_read_bytes_total", ())] / clean_s / 1e6,
        "cleaner_records_per_s": sum(read for _, _, read, _ in runs) / clean_s,
    }


def markdown(results: dict) -> str:
    o = results["offsets"]
    lines = [
        f"{o['groups']} groups x {o['partitions']} partitions, a commit every {o['commit_interval_s']} s for "
        f"{o['days']} days: {o['commits']:,} commits, {o['records']:,} records; segments of {o['segment_mb']:g} MiB.",
        "",
        "| `__consumer_offsets` | size on disk | broker start (listening, groups loaded) |",
        "| --- | ---: | ---: |",
        f"| before compaction | {o['before_bytes'] / 1e6:,.1f} MB | {o['before_start_s']:.1f} s |",
        f"| after compaction | {o['after_bytes'] / 1e6:,.1f} MB | {o['after_start_s']:.1f} s |",
        "",
        f"The cleaning took {o['clean_s']:.1f} s in the worker ({o['cleaner_mb_per_s']:.1f} MB/s, "
        f"{o['cleaner_records_per_s']:,.0f} records/s read) and removed {o['cleaner_removed_records']:,.0f} records.",
    ]
    if "latency" in results:
        lat = results["latency"]
        lines += [
            "",
            f"Produce latency (confluent-kafka, acks=all, 1 KiB, one in flight, {lat['sends']:,} sends) with the "
            f"cleaner off, and on while it compacts a {lat['changelog_records']:,}-record changelog "
            f"({lat['cleaner_mb_per_s']:.1f} MB/s, {lat['cleaner_records_per_s']:,.0f} records/s; the "
            f"{lat['sends_during_cleaning']:,} sends made during a cleaning):",
            "",
            "| cleaner | p50 | p99 | max | mean |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name in ("cleaner_off", "cleaner_on"):
            p = lat[name]
            lines.append(f"| {name.split('_')[1]} | {p['p50_ms']:.2f} ms | {p['p99_ms']:.2f} ms | {p['max_ms']:.2f} ms "
                         f"| {p['mean_ms']:.2f} ms |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compaction", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=10, help="offsets each group commits at a time")
    parser.add_argument("--commit-interval-s", type=int, default=60)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--segment-mb", type=float, default=100, help="offsets.topic.segment.bytes, in MiB")
    parser.add_argument("--changelog-records", type=int, default=1_000_000)
    parser.add_argument("--changelog-segment-mb", type=float, default=16)
    parser.add_argument("--latency-sends", type=int, default=2000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally-blocks stop every server
    root = Path(tempfile.mkdtemp(prefix="tidelog-compaction-"))
    try:
        results = {"offsets": offsets_topic(args, root)}
        if not args.skip_latency:
            results["latency"] = produce_latency(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compaction-latest.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
