"""``python -m benchmarks.txn_fetch_cpu``: the broker's instructions per Fetch, read_committed
against read_uncommitted, where the fetched range holds no aborted transaction.

A `balanced` broker (``tidelog serve``, a fresh data directory) runs under valgrind's callgrind
with instrumentation off (benchmarks/produce_cpu.py ``--callgrind``'s way). A topic of one
partition gets ``--aborted`` aborted transactions of 10 records (each followed by a committed one,
from confluent-kafka's transactional producer, so the partition's ``.txnindex`` has entries), then
``--tail`` records of an idempotent producer. A raw-socket client then sends ``--requests`` Fetch
v12 requests, one at a time, each from the same offset in the tail (after the last aborted
transaction's marker; max wait 0, 64 KiB a partition: a batch or a few each time), with
read_committed and with read_uncommitted (in halves: uncommitted, committed, committed,
uncommitted): instrumentation is on for the measured requests only, after 20 warm-up requests of
each. Reported: the broker's instructions a request, every thread, user
space: a count the machine's load does not change. The difference of the two isolation levels is
what read_committed costs a fetch (the last stable offset, the aborted-transaction lookup).

``--tidelog-ref REF`` measures that commit's src/ (git archive, C extension built) as well,
alternating (ref, working tree) ``--pairs`` times, each side in a fresh broker.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPIC = "txn-fetch"
WARM_UP = 20


def fetch_frame(topic: str, offset: int, isolation_level: int, correlation_id: int = 1) -> bytes:
    """A Fetch v12 request (flexible header v2) of partition 0 of ``topic`` from ``offset``, size-prefixed."""
    from kio.serial import entity_writer

    from tidelog.protocol import apis

    cls = apis.request_type(1, 12)
    module = sys.modules[cls.__module__]
    request = apis.build(cls, replica_id=-1, max_wait=datetime.timedelta(milliseconds=0), min_bytes=1,
                         max_bytes=1 << 20, isolation_level=isolation_level, session_id=0, session_epoch=-1, topics=(
                             apis.build(module.FetchTopic, topic=topic, partitions=(
                                 apis.build(module.FetchPartition, partition=0, current_leader_epoch=-1,
                                            fetch_offset=offset, last_fetched_epoch=-1, log_start_offset=-1,
                                            partition_max_bytes=64 << 10),)),),
                         forgotten_topics_data=(), rack_id="")
    out = io.BytesIO()
    entity_writer(cls)(out, request)
    client = b"txn-fetch-cpu"
    header = struct.pack(">hhih", 1, 12, correlation_id, len(client)) + client + b"\x00"
    return struct.pack(">i", len(header) + len(out.getvalue())) + header + out.getvalue()


def _fill(bootstrap: str, aborted: int, tail: int) -> int:
    """The aborted and committed transactions, then the tail; the tail's first offset."""
    import confluent_kafka as ck

    producer = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": "txn-fetch-cpu",
                            "transaction.timeout.ms": 60_000})
    producer.init_transactions(120)
    for _ in range(aborted):
        for outcome in ("abort", "commit"):
            producer.begin_transaction()
            for i in range(10):
                producer.produce(TOPIC, b"x" * 100, partition=0)
            producer.flush(120)
            (producer.abort_transaction if outcome == "abort" else producer.commit_transaction)(120)
    firsts: list[int] = []
    plain = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(tail):
        plain.produce(TOPIC, b"t" * 100, partition=0,
                      on_delivery=lambda err, msg: firsts.append(msg.offset()) if err is None else None)
    if plain.flush(120) or len(firsts) != tail:
        raise RuntimeError(f"{tail - len(firsts)} of the tail's records not delivered")
    return min(firsts)


def _answered(sock: socket.socket) -> bytes:
    from benchmarks.produce_cpu import _recv_exactly

    (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
    return _recv_exactly(sock, size)


def _check(response: bytes, isolation_level: int) -> None:
    """The first answer: no error, records, and (read_committed) no aborted transaction listed."""
    from kio.serial import entity_reader

    from tidelog.protocol import apis

    body = memoryview(bytes(response[4 + 1:])).toreadonly()  # after the correlation id and the header's tags
    decoded, _ = entity_reader(apis.response_type(1, 12))(body, 0)
    partition = decoded.responses[0].partitions[0]
    if decoded.error_code or partition.error_code or not partition.records:
        raise RuntimeError(f"fetch answered {decoded.error_code}/{partition.error_code}, "
                           f"{len(partition.records or b'')} bytes of records")
    if isolation_level and partition.aborted_transactions:
        raise RuntimeError(f"aborted transactions listed in the tail: {partition.aborted_transactions}")


def measure(src: Path | None, requests: int, aborted: int, tail: int, workdir: Path) -> dict:
    """One broker from ``src`` (None: the installed tidelog) under callgrind: instructions a Fetch
    request at each isolation level."""
    from benchmarks.kafka_load import create_topic
    from benchmarks.produce_cpu import _callgrind_instructions, _start_under_callgrind

    server, bootstrap, out = _start_under_callgrind(src, workdir)
    row: dict = {"requests": requests, "aborted_transactions": aborted, "tail_records": tail}
    try:
        create_topic(bootstrap, TOPIC, 1, timeout_s=120)
        offset = _fill(bootstrap, aborted, tail)
        row["fetch_offset"] = offset
        host, port = bootstrap.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=120) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            frames = {isolation: fetch_frame(TOPIC, offset, isolation) for isolation in (0, 1)}
            for isolation, frame in frames.items():
                for i in range(WARM_UP):
                    sock.sendall(frame)
                    response = _answered(sock)
                    if i == 0:
                        _check(response, isolation)
            counted = {0: 0, 1: 0}
            for isolation in (0, 1, 1, 0):  # in halves, each level first once
                subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True, check=True)
                for _ in range(requests // 2):
                    sock.sendall(frames[isolation])
                    _answered(sock)
                counted[isolation] += _callgrind_instructions(server.pid, out, 0)
            for name, isolation in (("read_uncommitted", 0), ("read_committed", 1)):
                row[f"{name}_instructions_per_request"] = counted[isolation] / (requests // 2 * 2)
    finally:
        server.stop(timeout_s=120)
    # (each dump counts from the one before: _callgrind_instructions takes the latest)
    row["read_committed_extra"] = row["read_committed_instructions_per_request"] - \
        row["read_uncommitted_instructions_per_request"]
    row["load"] = os.getloadavg()[0]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.txn_fetch_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="measured Fetch requests per isolation level (default 300)")
    p.add_argument("--aborted", type=int, default=20, help="aborted transactions before the tail (default 20)")
    p.add_argument("--tail", type=int, default=2000, help="records after the last transaction (default 2,000)")
    p.add_argument("--tidelog-ref", help="also measure this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--pairs", type=int, default=1, help="with --tidelog-ref: how many (ref, working tree) pairs (default 1)")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args(argv)
    from benchmarks.peers import Tidelog

    rows = []
    with tempfile.TemporaryDirectory(prefix="txn-fetch-cpu-") as tmp:
        sides = Tidelog.ab_sides(args.tidelog_ref, Path(tmp) / "ref")
        for round_ in range(args.pairs if args.tidelog_ref else 1):
            for name, src in sides:
                workdir = Path(tmp) / f"{round_}-{'ref' if src else 'tree'}"
                workdir.mkdir()
                started = time.monotonic()
                row = {"side": name, "round": round_, **measure(src, args.requests, args.aborted, args.tail, workdir),
                       "seconds": time.monotonic() - started}
                rows.append(row)
                print(f"{name:>20}: read_uncommitted {row['read_uncommitted_instructions_per_request']:,.0f}, "
                      f"read_committed {row['read_committed_instructions_per_request']:,.0f} instructions a Fetch "
                      f"(+{row['read_committed_extra']:,.0f}); load {row['load']:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
