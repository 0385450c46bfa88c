"""``python -m benchmarks.small_requests_cpu``: the broker's instructions (or CPU) per small
request, the lat-5k-linger0 shape: every record its own acks=all Produce and every Fetch woken by
one record.

A `balanced` broker (``tidelog serve``, a fresh data directory, one partition) and two raw-socket
clients, a producer and a consumer. Three measures, one after the other in the same broker:

- ``produce``: a Produce v9 of one ``--record-bytes`` record, acks=all, its response read, again;
- ``fetch``: a Fetch v12 (sessionless, min_bytes 1) of one record that is there (offset 0,
  ``partition_max_bytes`` 1: the first batch alone), answered at once;
- ``pair``: the consumer's Fetch parks (from the log's end; its max_wait ``PAIR_WAIT_MS``, 30 s,
  not a client's 500 ms: a Produce's fsync or a loaded machine under callgrind can take longer
  than 500 ms, and the Fetch must be answered by the record, not its max_wait; the wait's length
  costs nothing, one timer either way), the producer's one-record Produce wakes it; both answers read, then the next round. What a lat-5k-linger0
  record costs the broker (its Produce, the parked Fetch's wake-up, both responses). The
  consumer's Fetch is given ``--park-ms`` to park before the Produce is sent (a sleep: nothing
  on the wire says a Fetch has parked), and ``idle`` (the same sleeps, no requests) measures
  what the broker does meanwhile, subtracted from ``pair``.

``--callgrind`` (the default) runs the broker under valgrind's callgrind with instrumentation off,
on for each measure's rounds only (after a warm-up), dumped after each: instructions a round,
every thread, user space: a count the machine's load does not change. ``--no-callgrind``
measures the event-loop thread's CPU microseconds a round instead (10 ms ticks: use thousands of
rounds). ``--annotate N`` prints the costliest functions of the working tree's ``pair``.

``--tidelog-ref REF`` measures that commit's src/ as well, alternating (ref, working tree, ...)
``--pairs`` times, each in a fresh broker.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.produce_cpu import (_callgrind_instructions, _recv_exactly, _start_under_callgrind, produce_frame,
                                    thread_cpu_s)

TOPIC = "small-requests"
MEASURES = ("produce", "fetch", "pair", "idle")
PAIR_WAIT_MS = 30_000  # the parked Fetch's max_wait: only a lost wake-up reaches it


def fetch_frame(topic: str, offset: int, max_wait_ms: int, correlation_id: int = 1, max_bytes: int = 1 << 20) -> bytes:
    """A framed sessionless Fetch v12 of ``topic``-0 from ``offset``, min_bytes 1, ``max_bytes``
    for the partition (a record batch larger is sent whole: KIP-74)."""
    from kio.schema.fetch.v12 import request as fetch
    from kio.serial import entity_writer

    from tidelog.protocol.apis import load_request_schema

    partition = fetch.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=max_bytes)
    request = fetch.FetchRequest(max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1,
                                 max_bytes=1 << 20, session_epoch=-1,
                                 topics=(fetch.FetchTopic(topic=topic, partitions=(partition,)),),
                                 forgotten_topics_data=())
    body = io.BytesIO()
    entity_writer(load_request_schema(1, 12))(body, request)
    client = b"small-requests"
    data = struct.pack(">hhih", 1, 12, correlation_id, len(client)) + client + b"\x00" + body.getvalue()
    return struct.pack(">i", len(data)) + data


class _Client:
    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def response(self) -> bytes:
        (size,) = struct.unpack(">i", _recv_exactly(self.sock, 4))
        return _recv_exactly(self.sock, size)


def _produce_ok(response: bytes) -> None:
    at = 4 + 1 + 1 + 1 + len(TOPIC) + 1 + 4  # correlation id, tags, topic count and name, partition count, index
    error_code = struct.unpack_from(">h", response, at)[0]
    if error_code:
        raise RuntimeError(f"produce answered error code {error_code}")


def _fetch_records(response: bytes) -> int:
    """The record bytes of a one-partition Fetch v12 response (an error raises)."""
    at = 4 + 1 + 4 + 2 + 4 + 1  # correlation id, tags, throttle, error, session id, topic count
    (error_code,) = struct.unpack_from(">h", response, 4 + 1 + 4)
    if error_code:
        raise RuntimeError(f"fetch answered error code {error_code}")
    name_len = response[at] - 1
    at += 1 + name_len + 1 + 4  # the name, partition count, index
    (error_code,) = struct.unpack_from(">h", response, at)
    if error_code:
        raise RuntimeError(f"fetch answered partition error code {error_code}")
    at += 2 + 8 + 8 + 8  # hw, lso, log start
    at += 1 + 4  # no aborted transactions (compact null), preferred read replica
    size, shift = 0, 0
    while True:  # records: compact bytes, unsigned varint length + 1
        byte = response[at]
        at += 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return max(size - 1, 0)


def measure(src: Path | None, rounds: int, record_bytes: int, park_ms: float, workdir: Path, callgrind: bool,
            annotate: int = 0) -> dict:
    from benchmarks.kafka_load import create_topic
    from benchmarks.peers import Tidelog
    from tidelog.protocol.records import build_batch

    if callgrind:
        server, bootstrap, out = _start_under_callgrind(src, workdir)
    else:
        Tidelog.src_dir = src
        target = Tidelog("balanced")
        server = target.start(workdir)
        bootstrap = target.bootstrap
    row: dict = {"rounds": rounds}
    try:
        create_topic(bootstrap, TOPIC, 1)
        batch = build_batch([(b"k" * min(record_bytes, 8), b"v" * max(record_bytes - 8, 0), [])])
        produce = produce_frame(TOPIC, batch, -1)
        producer, consumer = _Client(bootstrap), _Client(bootstrap)
        next_offset = 0
        one_batch = fetch_frame(TOPIC, 0, 500, max_bytes=1)

        def produce_round() -> None:
            nonlocal next_offset
            producer.sock.sendall(produce)
            _produce_ok(producer.response())
            next_offset += 1

        def fetch_round() -> None:
            consumer.sock.sendall(one_batch)  # partition_max_bytes 1: the first batch alone
            if not _fetch_records(consumer.response()):
                raise RuntimeError("a fetch of offset 0 found no records")

        def pair_round() -> None:
            nonlocal next_offset
            consumer.sock.sendall(fetch_frame(TOPIC, next_offset, PAIR_WAIT_MS))
            sent = time.monotonic()
            time.sleep(park_ms / 1000)
            producer.sock.sendall(produce)
            _produce_ok(producer.response())
            if not _fetch_records(consumer.response()):
                raise RuntimeError(f"a parked fetch was answered with no records after "
                                   f"{(time.monotonic() - sent) * 1e3:.0f} ms (max_wait {PAIR_WAIT_MS} ms)")
            next_offset += 1

        def idle_round() -> None:
            time.sleep(park_ms / 1000)

        steps = {"produce": produce_round, "fetch": fetch_round, "pair": pair_round, "idle": idle_round}
        for name in MEASURES:
            step = steps[name]
            for _ in range(20):  # warm up: the segment, the pools, the first fsyncs
                step()
            if callgrind:
                subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True, check=True)
            before = thread_cpu_s(server.pid)
            started = time.monotonic()
            for _ in range(rounds):
                step()
            seconds = time.monotonic() - started
            after = thread_cpu_s(server.pid)
            if callgrind:
                instructions = _callgrind_instructions(server.pid, out, annotate if name == "pair" else 0)
                row[f"{name}_instructions"] = instructions / rounds
            user, system = (after[server.pid][i] - before.get(server.pid, (0.0, 0.0))[i] for i in (0, 1))
            row[f"{name}_loop_cpu_us"] = (user + system) / rounds * 1e6
            row[f"{name}_loop_user_us"] = user / rounds * 1e6
            row[f"{name}_ms"] = seconds / rounds * 1e3
        producer.sock.close()
        consumer.sock.close()
    finally:
        server.stop(timeout_s=120)
    key = "instructions" if callgrind else "loop_cpu_us"
    row["pair_over_idle"] = row[f"pair_{key}"] - row[f"idle_{key}"]
    row["load"] = os.getloadavg()[0]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.small_requests_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, help="rounds per measure (default 200 under callgrind, 3,000 without)")
    p.add_argument("--record-bytes", type=int, default=1024, help="bytes of the record's key and value (default 1,024)")
    p.add_argument("--park-ms", type=float, help="the parked Fetch's head start (default 20 under callgrind, 1 without)")
    p.add_argument("--no-callgrind", dest="callgrind", action="store_false",
                   help="the event-loop thread's CPU a round instead of instructions")
    p.add_argument("--annotate", type=int, default=0, help="with callgrind: the N costliest functions of `pair`")
    p.add_argument("--tidelog-ref", help="also measure this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--pairs", type=int, default=1, help="with --tidelog-ref: how many (ref, working tree) pairs (default 1)")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args(argv)
    rounds = args.rounds or (200 if args.callgrind else 3000)
    park_ms = args.park_ms if args.park_ms is not None else (20.0 if args.callgrind else 1.0)
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-small-requests-"))
    rows = []
    unit = "instructions" if args.callgrind else "loop_cpu_us"
    try:
        from benchmarks.peers import Tidelog

        sides = Tidelog.ab_sides(args.tidelog_ref, tmp_root / "ref")
        for pair in range(1, (args.pairs if args.tidelog_ref else 1) + 1):
            for name, src in sides:
                workdir = tmp_root / f"{pair}-{len(rows)}"
                row = {"pair": pair, "side": name, **measure(src, rounds, args.record_bytes, park_ms, workdir,
                                                             args.callgrind, args.annotate if src is None else 0)}
                shutil.rmtree(workdir, ignore_errors=True)
                rows.append(row)
                figures = ", ".join(f"{m} {row[f'{m}_{unit}']:,.0f}" + (
                    "" if args.callgrind else f" (user {row[f'{m}_loop_user_us']:,.0f})") for m in MEASURES)
                print(f"{pair} {name:>16}: load {row['load']:.1f}; {unit} a round: {figures}; "
                      f"pair - idle {row['pair_over_idle']:,.0f}", flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
