"""Many partitions on one broker (issue 19, item 4): 1,000 topics x 10 partitions by default.

    python -m benchmarks.partitions [--topics 1000] [--partitions 10] [--records 200000]
                                    [--record-bytes 1024] [--metadata-requests 20] [--keep DIR] [--out DIR]
    python -m benchmarks.partitions --restarts 3 --data-dir DIR [--out FILE]

One single-node ``tidelog serve`` (default settings, the process's own descriptor limit) on a
free loopback port with its own data directory under a temporary directory:

1. CreateTopics, 50 topics a request: how long, then the broker's open descriptors and RSS.
2. Metadata for every topic (v1, all topics), ``--metadata-requests`` times over one raw
   socket: the broker's answer time, without a client's parsing (median and max).
3. Produce ``--records`` keyed records with confluent-kafka's default partitioner spread over
   every partition (a random key, the topics in turn), then the same count to a one-partition
   topic: records/s of each and their ratio. Then descriptors and RSS again.
4. A clean stop (SIGTERM) and a start: the times. Then SIGKILL and a start (recovery): the
   time, and every record is still there (the sum of the log end offsets, one ListOffsets).

Start times are from the process's launch to its Kafka port accepting connections (it listens
once its logs are open). The broker is stopped by PID and the directory removed at the end.

``--restarts N --data-dir DIR`` measures only the starts, N times each, on a data directory an
earlier run kept (``--keep``), after one start and clean stop: a start after a clean stop, then
a SIGKILL once it serves and a start after it (recovery), then a clean stop. Each start reports the wall time and the
broker's own phases from its log (the "broker N started in ..." line), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.procs import ServerProcess, free_port, port_open

TIMEOUT_S = 120


class Broker:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port, self.http_port = free_port(), free_port()
        self.server: ServerProcess | None = None
        self.log_dir: Path | None = None  # where the broker's log goes (default: beside the data directory)

    def start(self) -> float:
        """Start the broker; return the seconds until its port accepted a connection."""
        args = [sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--set", f"http.port={self.http_port}"]
        began = time.monotonic()
        self.server = ServerProcess("broker", args, self.log_dir or self.data_dir.parent)
        self.server.start(lambda: port_open(self.port), timeout_s=600)
        return time.monotonic() - began

    def stop(self) -> float:
        began = time.monotonic()
        if self.server is not None:
            self.server.stop(timeout_s=300)
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.server is not None and self.server.proc is not None
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.proc.wait()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.server.pid}/fd"))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def create_topics(admin: AdminClient, names: list[str], partitions: int) -> float:
    began = time.monotonic()
    for i in range(0, len(names), 50):
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names[i:i + 50]],
                                      request_timeout=TIMEOUT_S * 3, operation_timeout=TIMEOUT_S * 3)
        for future in futures.values():
            future.result(TIMEOUT_S * 3)
    return time.monotonic() - began


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def metadata_latencies(bootstrap: str, requests: int) -> tuple[list[float], int]:
    """Seconds per Metadata v1 request for all topics over one connection, and the response size."""
    host, port = bootstrap.rsplit(":", 1)
    client_id = b"bench"
    latencies, size = [], 0
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        for correlation in range(requests):
            # api_key 3 (Metadata), version 1, correlation id, client id; topics: null = all
            body = struct.pack(">hhih", 3, 1, correlation, len(client_id)) + client_id + struct.pack(">i", -1)
            began = time.perf_counter()
            sock.sendall(struct.pack(">i", len(body)) + body)
            (length,) = struct.unpack(">i", _recv_exactly(sock, 4))
            response = _recv_exactly(sock, length)
            latencies.append(time.perf_counter() - began)
            assert struct.unpack(">i", response[:4])[0] == correlation
            size = length
    return latencies, size


def produce(bootstrap: str, topics: list[str], records: int, record_bytes: int) -> float:
    """Records/s producing ``records`` keyed records over ``topics`` in turn (acks=all)."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 21})
    value = os.urandom(record_bytes)
    keys = [random.randbytes(8) for _ in range(4096)]
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    began = time.monotonic()
    for i in range(records):
        while True:
            try:
                producer.produce(topics[i % len(topics)], value, keys[i % 4096], on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(TIMEOUT_S * 5):
        raise RuntimeError("produce did not finish")
    elapsed = time.monotonic() - began
    if failed:
        raise RuntimeError(f"{len(failed)} deliveries failed, first: {failed[0]}")
    return records / elapsed


def total_end_offsets(admin: AdminClient, topics: list[str], partitions: int) -> int:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    request = {TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in range(partitions)}
    futures = admin.list_offsets(request, request_timeout=TIMEOUT_S)
    return sum(f.result(TIMEOUT_S).offset for f in futures.values())


def run(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="tidelog-partitions-", dir=args.tmp_dir))
    broker = Broker(root / "data")
    names = [f"t{i:04d}" for i in range(args.topics)]
    result: dict = {"topics": args.topics, "partitions_per_topic": args.partitions,
                    "partitions": args.topics * args.partitions, "records": args.records,
                    "record_bytes": args.record_bytes}
    try:
        result["first_start_s"] = broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        result["create_s"] = create_topics(admin, names, args.partitions)
        result["fds_after_create"] = broker.descriptors()
        result["rss_mb_after_create"] = broker.rss_mb()
        latencies, size = metadata_latencies(broker.bootstrap, args.metadata_requests)
        result["metadata_ms_median"] = statistics.median(latencies) * 1000
        result["metadata_ms_max"] = max(latencies) * 1000
        result["metadata_response_bytes"] = size
        result["produce_spread_rps"] = produce(broker.bootstrap, names, args.records, args.record_bytes)
        create_topics(admin, ["one"], 1)
        result["produce_one_rps"] = produce(broker.bootstrap, ["one"], args.records, args.record_bytes)
        result["spread_over_one"] = result["produce_spread_rps"] / result["produce_one_rps"]
        result["fds_after_produce"] = broker.descriptors()
        result["rss_mb_after_produce"] = broker.rss_mb()
        result["clean_stop_s"] = broker.stop()
        result["start_after_clean_stop_s"] = broker.start()
        result["rss_mb_after_clean_start"] = broker.rss_mb()
        result["fds_after_clean_start"] = broker.descriptors()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        expected = total_end_offsets(admin, names, args.partitions)
        assert expected == args.records, f"{expected} records after a clean restart, {args.records} produced"
        broker.kill()
        result["start_after_sigkill_s"] = broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        found = total_end_offsets(admin, names, args.partitions)
        assert found == args.records, f"{found} records after SIGKILL, {args.records} acknowledged"
        result["fds_after_recovery"] = broker.descriptors()
        result["rss_mb_after_recovery"] = broker.rss_mb()
    finally:
        broker.stop()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            shutil.move(broker.data_dir, args.keep)
            shutil.rmtree(root, ignore_errors=True)
    return result


def started_line(log_path: Path, after: int) -> str:
    """The broker's "opened N logs" and "broker N started ..." lines written after byte ``after``
    of its log (its own account of the start's phases)."""
    with open(log_path, "rb") as f:
        f.seek(after)
        text = f.read().decode(errors="replace")
    lines = [line.split(": ", 1)[-1] for line in text.splitlines() if " started (cluster " in line or " logs" in line
             and ": opened " in line]
    return " | ".join(lines)


def restarts(args) -> dict:
    """Clean starts and starts after SIGKILL of an existing data directory (see the docstring)."""
    broker = Broker(args.data_dir)
    broker.log_dir = Path(tempfile.mkdtemp(prefix="tidelog-restarts-", dir=args.tmp_dir))
    log_path = broker.log_dir / "broker.log"
    rows: list[dict] = []
    try:
        broker.start()  # and a clean stop: the directory as this version stops it (an older one may have)
        broker.stop()
        for _ in range(args.restarts):
            for kind in ("clean", "sigkill"):
                offset = log_path.stat().st_size if log_path.exists() else 0
                load = os.getloadavg()
                seconds = broker.start()
                rows.append({"kind": kind, "wall_s": round(seconds, 2), "load": [round(x, 1) for x in load],
                             "broker": started_line(log_path, offset)})
                print(json.dumps(rows[-1]), flush=True)
                if kind == "clean":
                    broker.kill()
            broker.stop()
    finally:
        broker.stop()
        shutil.rmtree(broker.log_dir, ignore_errors=True)
    summary = {}
    for kind in ("clean", "sigkill"):
        times = [row["wall_s"] for row in rows if row["kind"] == kind]
        summary[f"start_after_{kind}_s"] = {"min": min(times), "max": max(times)}
    return {"runs": rows, **summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.partitions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topics", type=int, default=1000)
    p.add_argument("--partitions", type=int, default=10, help="partitions per topic")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--record-bytes", type=int, default=1024)
    p.add_argument("--metadata-requests", type=int, default=20)
    p.add_argument("--tmp-dir", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep the (cleanly stopped) data directory here")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    p.add_argument("--restarts", type=int, default=0,
                   help="only measure N clean starts and N starts after SIGKILL of --data-dir")
    p.add_argument("--data-dir", type=Path, default=None, help="with --restarts: a data directory kept by --keep")
    args = p.parse_args(argv)
    if args.restarts and args.data_dir is None:
        p.error("--restarts needs --data-dir (a directory an earlier run kept with --keep)")
    result = restarts(args) if args.restarts else run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
