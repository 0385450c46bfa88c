"""benchmarks.small_requests_cpu: a broker, a raw-socket producer and consumer; one-record
Produce requests, one-batch Fetches answered at once, and Fetches parked then woken by one
record, each answered without an error and with the record (the benchmark raises otherwise)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import small_requests_cpu  # noqa: E402


def test_the_fetch_frame_asks_for_the_offset_and_bytes_given():
    from tidelog.protocol import apis
    from tidelog.protocol.wire import parse_request_header

    frame = memoryview(small_requests_cpu.fetch_frame("t", 17, 500, max_bytes=1))[4:]
    header, offset = parse_request_header(frame, True)
    assert (header.api_key, header.api_version, header.client_id) == (1, 12, "small-requests")
    request, end = apis.request_reader(1, 12)(frame.toreadonly(), offset)
    assert offset + end == len(frame) and request.max_wait.total_seconds() == 0.5 and request.min_bytes == 1
    (topic,) = request.topics
    (partition,) = topic.partitions
    assert (topic.topic, partition.fetch_offset, partition.partition_max_bytes) == ("t", 17, 1)


def test_the_benchmark_measures_each_kind_of_small_request(tmp_path):
    row = small_requests_cpu.measure(None, rounds=30, record_bytes=1024, park_ms=1.0, workdir=tmp_path / "broker",
                                     callgrind=False)
    for measure in small_requests_cpu.MEASURES:
        assert row[f"{measure}_loop_cpu_us"] >= row[f"{measure}_loop_user_us"] >= 0  # 10 ms ticks: may be 0
        assert row[f"{measure}_ms"] > 0
    assert row["pair_ms"] >= 1.0  # the parked Fetch's head start
    assert row["pair_over_idle"] == row["pair_loop_cpu_us"] - row["idle_loop_cpu_us"]
