"""Micro-benchmarks of the hot functions, so a regression shows up without a broker.

``python -m benchmarks micro [--json]`` times, with timeit (best of 5 repeats), each function the
produce and fetch paths run per request or per batch: the Produce decoder, batch validation
(header checks, CRC-32C and the walk over every record; a compressed batch is decompressed to
be walked), the pre-decode bounds check and kio decode of a Fetch request, the Fetch response
encoder, a log append and read (on a temporary directory, page cache only), and a share manager
taking a log without and with a one-header filter (benchmarks/share_filter.py ``manager_cost``:
microseconds per log record, acquisition and acknowledgement, no network).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import timeit
import uuid
from pathlib import Path

from kio.serial import entity_writer

from tidelog.protocol import apis
from tidelog.protocol.fetch import PartitionData, encode_fetch_response
from tidelog.protocol.guard import check_request
from tidelog.protocol.produce import decode_produce_request
from tidelog.protocol.records import build_batch, parse_batch_header, validate_batches
from tidelog.storage.log import LogConfig, PartitionLog


def _produce_body(batch: bytes, partitions: int) -> bytes:
    cls = apis.request_type(0, 9)
    module = sys.modules[cls.__module__]
    request = apis.build(cls, transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=30), topic_data=(
        apis.build(module.TopicProduceData, name="bench", partition_data=tuple(
            apis.build(module.PartitionProduceData, index=p, records=batch) for p in range(partitions))),))
    out = io.BytesIO()
    entity_writer(cls)(out, request)
    return out.getvalue()


def _fetch_body(partitions: int) -> bytes:
    cls = apis.request_type(1, 12)
    module = sys.modules[cls.__module__]
    request = apis.build(cls, replica_id=-1, max_wait=datetime.timedelta(milliseconds=500), min_bytes=1,
                         max_bytes=50 << 20, isolation_level=0, session_id=0, session_epoch=-1, topics=(
                             apis.build(module.FetchTopic, topic="bench", partitions=tuple(
                                 apis.build(module.FetchPartition, partition=p, current_leader_epoch=-1,
                                            fetch_offset=1000, last_fetched_epoch=-1, log_start_offset=-1,
                                            partition_max_bytes=1 << 20) for p in range(partitions))),),
                         forgotten_topics_data=(), rack_id="")
    out = io.BytesIO()
    entity_writer(cls)(out, request)
    return out.getvalue()


def run(scale: float = 1.0) -> dict[str, float]:
    """Microseconds per call of each hot function; ``scale`` shrinks the call counts (tests)."""

    def _time(fn, number: int) -> float:
        number = max(1, int(number * scale))
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    results: dict[str, float] = {}
    batch_16k = build_batch([(None, b"x" * 1000, [])] * 16, timestamp_ms=1_700_000_000_000)
    batch_1m = build_batch([(None, b"x" * 1000, [])] * 1000, timestamp_ms=1_700_000_000_000)
    for partitions in (1, 100):
        body = memoryview(bytearray(_produce_body(batch_16k, partitions)))
        results[f"decode Produce v9, {partitions} x 16 KiB batch"] = _time(lambda: decode_produce_request(body, 9), 2000)
    batch_small_records = build_batch([(None, b"x" * 100, [])] * 10_000, timestamp_ms=1_700_000_000_000)
    batch_zstd = build_batch([(None, bytes(range(256)) * 4, [])] * 16, timestamp_ms=1_700_000_000_000, compression=4)
    for name, batch, number in (("16 KiB (16 x 1 KiB records)", batch_16k, 2000),
                                ("1 MiB (1,000 x 1 KiB records)", batch_1m, 500),
                                ("1 MiB (10,000 x 100 B records)", batch_small_records, 200),
                                ("16 KiB zstd (16 x 1 KiB records)", batch_zstd, 2000)):
        view = memoryview(bytearray(batch))
        results[f"validate_batches, {name}"] = _time(lambda: validate_batches(view, 2 << 20), number)
    fetch_cls = apis.request_type(1, 12)
    reader = apis.request_reader(1, 12)
    for partitions in (1, 16):
        body = memoryview(_fetch_body(partitions)).toreadonly()
        results[f"guard Fetch v12, {partitions} partitions"] = _time(lambda: check_request(fetch_cls, body, 0), 2000)
        results[f"kio decode Fetch v12, {partitions} partitions"] = _time(lambda: reader(body, 0), 2000)
    topic_id = uuid.uuid4()
    records = bytes(1 << 20)
    for partitions in (1, 100):
        data = [PartitionData(p, 0, 10, 10, 0, records) for p in range(partitions)]
        results[f"encode Fetch v12 response, {partitions} x 1 MiB"] = _time(
            lambda: encode_fetch_response(12, [("bench", topic_id, data)]), 1000)
    with tempfile.TemporaryDirectory() as tmp:
        log = PartitionLog.open(Path(tmp) / "bench-0", "bench", 0, LogConfig(durability="throughput"), recover=False)
        work = bytearray(batch_16k)
        view = memoryview(work)
        info = parse_batch_header(work)
        results["PartitionLog.append, 16 KiB batch"] = _time(lambda: log.append(view, info), 1000)
        results["PartitionLog.read, 1 MiB from the start"] = _time(lambda: log.read(0, 1 << 20, True), 500)
        results["PartitionLog.read as a file slice, 1 MiB"] = _time(lambda: log.read(0, 1 << 20, True, as_slice=True), 500)
        for name, seconds in send_cost(log, scale).items():
            results[name] = seconds
        log.close()
    from benchmarks.share_filter import FILTERS, manager_cost

    for name in ("unfiltered", "header"):
        results[f"share manager, {name}, per log record (50,000 records)"] = min(
            manager_cost(max(2000, int(50_000 * scale)), FILTERS[name]) for _ in range(3))
    return results


def send_cost(log: PartitionLog, scale: float = 1.0) -> dict[str, float]:
    """Sender CPU seconds per GB of 1 MiB fetch slices written to a loopback TCP socket (a thread
    drains it): read into Python then ``send``, against ``os.sendfile`` from the segment file."""
    while log.log_end_offset < 64 * 16:  # 1 MiB of 16 KiB batches
        batch = build_batch([(None, b"x" * 1000, [])] * 16, timestamp_ms=1_700_000_000_000)
        log.append(memoryview(bytearray(batch)), parse_batch_header(batch))
    piece = log.read(0, 1 << 20, True, as_slice=True)
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    listener.close()
    done = threading.Event()

    def drain() -> None:
        buffer = bytearray(1 << 20)
        while receiver.recv_into(buffer):
            pass
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    calls = max(4, int(4096 * scale))  # 4 GB at scale 1
    gigabytes = calls * len(piece) / 1e9
    results = {}
    for path, send in (("pread + send", lambda: sender.sendall(piece.read())),
                       ("sendfile", lambda: _sendfile_all(sender, piece))):
        best = float("inf")
        for _ in range(3):
            started = time.thread_time()
            for _ in range(calls):
                send()
            best = min(best, time.thread_time() - started)
        results[f"send 1 MiB fetch slices to a loopback socket, {path} (sender CPU s per GB)"] = best / gigabytes
    sender.close()
    done.wait(10)
    receiver.close()
    return results


def _sendfile_all(sock: socket.socket, piece) -> None:
    offset = 0
    while offset < len(piece):
        offset += os.sendfile(sock.fileno(), piece.segment.fd, piece.position + offset, len(piece) - offset)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks micro", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args(argv)
    results = run()
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("| function | us per call |\n| --- | ---: |")
        for name, micros in results.items():
            print(f"| {name} | {micros:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
