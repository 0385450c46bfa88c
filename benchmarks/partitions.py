"""Many partitions on one broker (issue 19, item 4): 1,000 topics x 10 partitions by default.

    python -m benchmarks.partitions [--topics 1000] [--partitions 10] [--records 200000]
                                    [--record-bytes 1024] [--metadata-requests 20] [--keep DIR] [--out DIR]
    python -m benchmarks.partitions --restarts 3 --data-dir DIR [--out FILE]
    python -m benchmarks.partitions --produce-rounds 3 --data-dir DIR [--records N] [--out FILE]

One single-node ``tidelog serve`` (default settings, the process's own descriptor limit) on a
free loopback port with its own data directory under a temporary directory:

1. CreateTopics, 50 topics a request: how long, then the broker's open descriptors and RSS.
2. Metadata for every topic (v1, all topics), ``--metadata-requests`` times over one raw
   socket: the broker's answer time, without a client's parsing (median and max).
3. Produce ``--records`` keyed records (acks=all) with confluent-kafka's default partitioner
   spread over every partition (a random key, the topics in turn), then the same count to a
   one-partition topic: records/s of each, their ratio, and the broker's CPU microseconds a
   record. The same two against librdkafka's mock cluster (a C broker in this process holding
   the same topics: the client's own ceiling for the workload), and a spread row of each with
   the producer settings of ``TUNED`` (an extra row; the default rows keep librdkafka's
   defaults). Then descriptors and RSS again.
4. A clean stop (SIGTERM) and a start: the times. Then SIGKILL and a start (recovery): the
   time, and every record is still there (the sum of the log end offsets, one ListOffsets).

Start times are from the process's launch to its Kafka port accepting connections (it listens
once its logs are open). The broker is stopped by PID and the directory removed at the end.

``--restarts N --data-dir DIR`` measures only the starts, N times each, on a data directory an
earlier run kept (``--keep``), after one start and clean stop: a start after a clean stop, then
a SIGKILL once it serves and a start after it (recovery), then a clean stop. Each start reports the wall time and the
broker's own phases from its log (the "broker N started in ..." line), and the load average.

``--produce-rounds N --data-dir DIR`` runs only step 3, N times (mock and broker rows
interleaved), on a kept directory: for A/B runs of the produce path (each row with the load
average as it began, min-max over the rounds).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
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
import urllib.request
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.procs import ServerProcess, cpu_seconds, free_port, port_open

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


# The producer of the produce phases: acks=all, librdkafka's default partitioner and batching
# (linger.ms 5 is its default), a queue large enough never to block the loop for long.
PRODUCER = {"acks": "all", "linger.ms": 5, "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1 << 21}
# The extra row: what a user producing keyed records to thousands of partitions would set (see
# BENCHMARKS.md, "Many partitions"); the default rows keep PRODUCER.
TUNED = {"linger.ms": 100}


def produce_requests(broker: Broker) -> int:
    """Produce requests the broker has received (its ``tidelog_requests_total`` metric)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=TIMEOUT_S) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('tidelog_requests_total{api="Produce"}'):
                return int(float(line.split()[-1]))
    return 0


def produce(bootstrap: str, topics: list[str], records: int, record_bytes: int, settings: dict | None = None,
            broker: Broker | None = None) -> dict:
    """Produce ``records`` keyed records over ``topics`` in turn (acks=all): records/s, the
    client's CPU microseconds a record (for the mock cluster, its own CPU too: it runs in this
    process), and with ``broker`` its CPU microseconds a record and records a Produce request."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, **PRODUCER, **(settings or {})})
    value = os.urandom(record_bytes)
    keys = [random.randbytes(8) for _ in range(4096)]
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    load = os.getloadavg()[0]
    # The scrape costs the broker CPU of its own (a gauge per partition): before the CPU is read
    # here, after it is read below.
    requests = produce_requests(broker) if broker is not None else 0
    broker_cpu = cpu_seconds([broker.server.pid]) if broker is not None else 0.0
    client_cpu = time.process_time()
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
    result = {"rps": round(records / elapsed), "client_cpu_us_per_record": round((time.process_time() - client_cpu)
                                                                                / records * 1e6, 1),
              "load": round(load, 1)}
    if broker is not None:
        result["broker_cpu_us_per_record"] = round((cpu_seconds([broker.server.pid]) - broker_cpu) / records * 1e6, 1)
        result["records_per_request"] = round(records / max(1, produce_requests(broker) - requests), 1)
    return result


class MockCluster:
    """librdkafka's in-process mock cluster (one broker, C, answering from memory) with the
    benchmark's topics created at their partition counts: the fastest any broker can take this
    producer's records, so the client's own ceiling for the same workload. The mock serves no
    CreateTopics and makes topics of 4 partitions on first use, so its topics are made through
    librdkafka's C API (``rd_kafka_mock_topic_create``, loaded with ctypes from the library
    confluent-kafka itself uses). It keeps ~5 MB a partition, dropping older records."""

    def __init__(self, topics: dict[str, int]) -> None:
        lib = _rdkafka()
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, len(errstr))
        self._lib = lib
        self._rk = lib.rd_kafka_new(0, conf, errstr, len(errstr))  # RD_KAFKA_PRODUCER; owns conf now
        if not self._rk:
            raise RuntimeError(f"librdkafka: {errstr.value.decode()}")
        self._cluster = lib.rd_kafka_mock_cluster_new(self._rk, 1)
        if not self._cluster:
            lib.rd_kafka_destroy(self._rk)
            raise RuntimeError("librdkafka could not start a mock cluster")
        for name, partitions in topics.items():
            error = lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, 1)
            if error:
                self.close()
                raise RuntimeError(f"mock topic {name}: librdkafka error {error}")
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def close(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._cluster = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None


def _rdkafka() -> ctypes.CDLL:
    """The librdkafka that confluent-kafka loaded (its wheel's own copy, else the system's)."""
    bundled = sorted((Path(ck.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka*.so*"))
    lib = ctypes.CDLL(str(bundled[0]) if bundled else ctypes.util.find_library("rdkafka"))
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    for name, restype, argtypes in (
            ("rd_kafka_conf_new", p, []),
            ("rd_kafka_conf_set", i, [p, s, s, s, ctypes.c_size_t]),
            ("rd_kafka_new", p, [i, p, s, ctypes.c_size_t]),
            ("rd_kafka_destroy", None, [p]),
            ("rd_kafka_mock_cluster_new", p, [p, i]),
            ("rd_kafka_mock_cluster_destroy", None, [p]),
            ("rd_kafka_mock_cluster_bootstraps", s, [p]),
            ("rd_kafka_mock_topic_create", i, [p, s, i, i])):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def produce_rows(broker: Broker | None, names: list[str], partitions: int, records: int, record_bytes: int,
                 rounds: int = 1) -> dict:
    """The produce phases, ``rounds`` times: spread over ``names`` and to the topic "one" on the
    broker (with its CPU a record) and on the mock cluster (the client's ceiling), with the
    default producer and with TUNED; per row the min and max over the rounds."""
    mock = MockCluster({**{name: partitions for name in names}, "one": 1})
    rows: dict[str, list[dict]] = {}
    try:
        for _ in range(rounds):
            for row, on_broker, settings in (("mock_spread", False, None), ("mock_one", False, None),
                                             ("mock_spread_tuned", False, TUNED), ("broker_spread", True, None),
                                             ("broker_one", True, None), ("broker_spread_tuned", True, TUNED)):
                if on_broker and broker is None:
                    continue
                topics = ["one"] if row.endswith("_one") else names
                target = broker.bootstrap if on_broker else mock.bootstrap
                rows.setdefault(row, []).append(produce(target, topics, records, record_bytes, settings,
                                                        broker if on_broker else None))
                print(json.dumps({row: rows[row][-1]}), flush=True)
    finally:
        mock.close()
    summary: dict = {"rounds": rows}
    for row, results in rows.items():
        summary[row] = {key: [min(r[key] for r in results), max(r[key] for r in results)] for key in results[0]}
    for prefix in ("broker", "mock"):
        if f"{prefix}_spread" in rows:
            ratios = [s["rps"] / o["rps"] for s, o in zip(rows[f"{prefix}_spread"], rows[f"{prefix}_one"])]
            summary[f"{prefix}_spread_over_one"] = [round(min(ratios), 3), round(max(ratios), 3)]
    if broker is not None:
        ratios = [b["rps"] / m["rps"] for b, m in zip(rows["broker_spread"], rows["mock_spread"])]
        summary["broker_spread_over_mock_spread"] = [round(min(ratios), 3), round(max(ratios), 3)]
    return summary


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
        create_topics(admin, ["one"], 1)
        result["produce"] = produce_rows(broker, names, args.partitions, args.records, args.record_bytes)
        produced_spread = args.records * 2  # the default and the tuned row
        result["fds_after_produce"] = broker.descriptors()
        result["rss_mb_after_produce"] = broker.rss_mb()
        result["clean_stop_s"] = broker.stop()
        result["start_after_clean_stop_s"] = broker.start()
        result["rss_mb_after_clean_start"] = broker.rss_mb()
        result["fds_after_clean_start"] = broker.descriptors()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        expected = total_end_offsets(admin, names, args.partitions)
        assert expected == produced_spread, f"{expected} records after a clean restart, {produced_spread} produced"
        broker.kill()
        result["start_after_sigkill_s"] = broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        found = total_end_offsets(admin, names, args.partitions)
        assert found == produced_spread, f"{found} records after SIGKILL, {produced_spread} acknowledged"
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


def produce_only(args) -> dict:
    """The produce phases only, ``--produce-rounds`` times, on a data directory an earlier run
    kept (``--keep``; it holds the topics): for A/B runs of the produce path without creating
    10,000 partitions each time."""
    broker = Broker(args.data_dir)
    broker.log_dir = Path(tempfile.mkdtemp(prefix="tidelog-produce-", dir=args.tmp_dir))
    names = [f"t{i:04d}" for i in range(args.topics)]
    try:
        broker.start()
        return produce_rows(broker, names, args.partitions, args.records, args.record_bytes, args.produce_rounds)
    finally:
        broker.stop()
        shutil.rmtree(broker.log_dir, ignore_errors=True)


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
    p.add_argument("--produce-rounds", type=int, default=0,
                   help="only the produce phases, N rounds, on --data-dir (a directory kept by --keep)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="with --restarts or --produce-rounds: a data directory kept by --keep")
    args = p.parse_args(argv)
    if (args.restarts or args.produce_rounds) and args.data_dir is None:
        p.error("--restarts and --produce-rounds need --data-dir (a directory an earlier run kept with --keep)")
    result = restarts(args) if args.restarts else produce_only(args) if args.produce_rounds else run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
