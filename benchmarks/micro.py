"""Micro-benchmarks of the hot functions, so a regression shows up without a broker.

``python -m benchmarks micro [--json]`` times, with timeit (best of 5 repeats), each function the
produce and fetch paths run per request or per batch: the Produce decoder, batch validation
(header checks, CRC-32C and the walk over every record; a compressed batch is decompressed to
be walked), the pre-decode bounds check and kio decode of a Fetch request, the Fetch response
encoder, and a log append and read (on a temporary directory, page cache only).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import sys
import tempfile
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
        log.close()
    return results


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
