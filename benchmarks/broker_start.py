"""What a broker's start costs, and its first clients: ``tidelog serve`` on a fresh data directory
(single node, HTTP on a free port), timed from the process's start to its port file (written
once it serves), with its CPU (user + system, /proc) by then; then a first client session, as a
user's first minute brings: a confluent-kafka producer (one record, acks=all, topic
auto-created), a consumer in a classic group reading it, an admin Metadata. Of that session:
the broker's CPU (what the first requests cost it: codecs made, modules imported, on the event
loop), the first produce's round trip, the consumer's time to its record (mostly the group's
3 s initial rebalance delay), and the event-loop lag histogram's sum and count of lags over
50 ms (tidelog_event_loop_lag_seconds, from /metrics). CPU is counted in clock ticks (10 ms): take
the median of several starts. With --tidelog-ref the starts alternate between that commit's src/
and the working tree, in the same minutes.

    python -m benchmarks.broker_start --starts 6 --tidelog-ref 39a3149
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
FIELDS = ("ready_s", "cpu_to_ready_s", "first_clients_cpu_s", "first_produce_ms", "first_consume_s", "loop_lag_sum_s",
          "loop_lags_over_50ms")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _loop_lag(http_port: int) -> tuple[float, float]:
    """(sum of the lags, count of lags over 50 ms) of tidelog_event_loop_lag_seconds."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("tidelog_event_loop_lag_seconds"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    total = values.get("tidelog_event_loop_lag_seconds_count", 0.0)
    within = next((v for k, v in values.items() if 'le="0.05"' in k), total)
    return values.get("tidelog_event_loop_lag_seconds_sum", 0.0), total - within


def _first_clients(bootstrap: str) -> tuple[float, float]:
    """(first produce round trip in ms, seconds to the consumer's first record)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    started = time.monotonic()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "log_level": 0})
    producer.produce("first", b"x")
    if producer.flush(30) != 0:
        raise RuntimeError("the first record was not acknowledged in 30 s")
    produced_ms = (time.monotonic() - started) * 1000
    started = time.monotonic()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "first", "auto.offset.reset": "earliest",
                         "log_level": 0})
    consumer.subscribe(["first"])
    try:
        deadline = time.monotonic() + 60
        while (message := consumer.poll(0.5)) is None or message.error():
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer read nothing in 60 s")
    finally:
        consumer.close()
    consumed_s = time.monotonic() - started
    AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=10)
    return produced_ms, consumed_s


def measure(src: Path | None, workdir: Path) -> dict:
    workdir.mkdir(parents=True)
    port_file = workdir / "ports"
    env = {**os.environ, **({"PYTHONPATH": str(src)} if src else {})}
    args = [sys.executable, "-m", "tidelog", "serve", "--port", "0", "--http-port", "0", "--data-dir",
            str(workdir / "data"), "--port-file", str(port_file), "--log-level", "WARNING"]
    started = time.monotonic()
    with open(workdir / "broker.log", "w") as log:
        broker = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        while not port_file.exists():
            if broker.poll() is not None:
                raise RuntimeError(f"the broker exited with {broker.returncode}: {(workdir / 'broker.log').read_text()}")
            if time.monotonic() - started > 120:
                raise RuntimeError("the broker did not serve within 120 s")
            time.sleep(0.005)
        ready_s = time.monotonic() - started
        cpu_ready = _cpu_s(broker.pid)
        kafka_port, http_port = (int(x) for x in port_file.read_text().split()[:2])
        produced_ms, consumed_s = _first_clients(f"127.0.0.1:{kafka_port}")
        first_cpu = _cpu_s(broker.pid) - cpu_ready
        lag_sum, lags_over = _loop_lag(http_port)
        return {"ready_s": ready_s, "cpu_to_ready_s": cpu_ready, "first_clients_cpu_s": first_cpu,
                "first_produce_ms": produced_ms, "first_consume_s": consumed_s, "loop_lag_sum_s": lag_sum,
                "loop_lags_over_50ms": lags_over, "load": os.getloadavg()[0]}
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.broker_start", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--starts", type=int, default=6, help="starts of each side (default 6)")
    p.add_argument("--tidelog-ref", help="also start this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--json", type=Path, help="write every start's numbers here")
    args = p.parse_args(argv)
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-broker-start-"))
    rows = []
    try:
        from benchmarks.peers import Tidelog

        sides = Tidelog.ab_sides(args.tidelog_ref, tmp_root / "ref")
        for start in range(1, args.starts + 1):
            for name, src in sides:
                workdir = tmp_root / f"{start}-{len(rows)}"
                row = {"start": start, "side": name, **measure(src, workdir)}
                shutil.rmtree(workdir, ignore_errors=True)
                rows.append(row)
                print(f"{start} {name:>16}: load {row['load']:.1f}; ready {row['ready_s']:.2f} s, CPU "
                      f"{row['cpu_to_ready_s']:.2f} s; first clients: broker CPU {row['first_clients_cpu_s']:.2f} s, "
                      f"produce {row['first_produce_ms']:.0f} ms, consume {row['first_consume_s']:.2f} s; loop lag sum "
                      f"{row['loop_lag_sum_s']:.3f} s, {row['loop_lags_over_50ms']:.0f} over 50 ms", flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    for name, _src in sides:
        mine = [r for r in rows if r["side"] == name]
        print(f"median of {len(mine)} ({name}): " + ", ".join(
            f"{field} {statistics.median(r[field] for r in mine):.3f}" for field in FIELDS))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
