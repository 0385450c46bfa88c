"""``python -m benchmarks.produce_cpu``: the broker's CPU per GB produced, thread by thread,
user and system time apart, with no librdkafka on the machine.

A `balanced` broker (``tidelog serve``, a fresh data directory, ``--partitions`` partitions,
default one) and a raw-socket client: one Produce v9 frame (a batch of ``--records-per-request``
records of ``--record-bytes`` for each partition, built once; the broker assigns offsets, so the
same bytes serve every request; with ``--rotate`` one partition a request, 0..N-1 in turn, as
librdkafka's sticky partitioner sends the p16 rows) sent ``--requests`` times, ``--in-flight`` at a time, each response read. Reported over
the sends: the broker's user and system seconds per GB of record batches, the event-loop thread's
and the other threads' apart (``/proc/PID/task/*/stat``), and the event-loop thread's user
microseconds per request. CPU time comes in 10 ms ticks: a GB or more per measurement.

``--tidelog-ref REF`` measures that commit's src/ as well, alternating (ref, working tree, ref,
...) ``--pairs`` times, each in a fresh broker: an A/B of the produce path on a busy machine,
where the client's own CPU (a fraction of librdkafka's) disturbs it least.

``--callgrind`` runs each broker under valgrind's callgrind with instrumentation off, switches
it on (``callgrind_control -i on``) for the measured sends only, after the warm-up, and reports
the broker's instructions a request, every thread, user space: a count the machine's load does
not change (the CPU-time figures are then meaningless; use fewer ``--requests``, ~200).
``--annotate N`` also prints the working tree's N costliest functions (callgrind_annotate).

``--floor`` measures the kernel's floor (references.socket_to_page_cache: a loopback socket into
the page cache, an fdatasync per MiB, warm, the median of four passes) right after each broker,
as many MiB as the broker took, in the same directory: each row then gives the broker's CPU
per GB over the floor's, and its system time over the floor's (the floor is nearly all system
time; what the broker's kernel time spends above it is its own).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
TOPIC = "produce-cpu"


def produce_frame(topic: str, batch: bytes, acks: int, partitions: int = 1, indexes=None) -> bytes:
    """A Produce v9 request (flexible header v2) carrying ``batch`` to each of partitions 0..N-1
    of ``topic`` (or to each of ``indexes``), size-prefixed."""
    from tidelog.protocol.wire import uvarint

    indexes = range(partitions) if indexes is None else indexes
    name = topic.encode()
    header = struct.pack(">hhih", 0, 9, 1, len(b"produce-cpu")) + b"produce-cpu" + b"\x00"
    entries = b"".join(struct.pack(">i", index) + uvarint(len(batch) + 1) + batch + b"\x00"
                       for index in indexes)
    body = (b"\x00" + struct.pack(">hi", acks, 30_000)  # null transactional id, acks, timeout
            + uvarint(2) + uvarint(len(name) + 1) + name  # one topic
            + uvarint(len(indexes) + 1) + entries  # its partitions, a batch each
            + b"\x00" + b"\x00")  # the topic's and the request's tagged fields
    return struct.pack(">i", len(header) + len(body)) + header + body


def thread_cpu_s(pid: int) -> dict[int, tuple[float, float]]:
    """Each thread's (user, system) seconds."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        threads[int(tid)] = (int(fields[11]) * _TICK_S, int(fields[12]) * _TICK_S)
    return threads


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def _start_under_callgrind(src: Path | None, workdir: Path):
    """A `balanced` broker as benchmarks.peers.Tidelog starts one, under callgrind with
    instrumentation off: (server, bootstrap, callgrind's output file)."""
    from benchmarks.procs import ServerProcess, port_open

    port_file, out = workdir / "port", workdir / "callgrind.out"
    args = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.1", "--port", "0",
            "--port-file", str(port_file), "--data-dir", str(workdir / "data"), "--log-level", "WARNING",
            "--set", "log.durability.profile=balanced", "--set", "http.port=-1"]
    server = ServerProcess("tidelog-callgrind", args, workdir, {"PYTHONPATH": str(src)} if src else None)
    server.start(lambda: port_file.exists() and port_open(int(port_file.read_text().split()[0])), timeout_s=300)
    return server, f"127.0.0.1:{int(port_file.read_text().split()[0])}", out


def measure(src: Path | None, requests: int, records_per_request: int, record_bytes: int, acks: int,
            in_flight: int, workdir: Path, callgrind: bool = False, annotate: int = 0, partitions: int = 1,
            rotate: bool = False) -> dict:
    """One broker from ``src`` (None: the installed tidelog), ``requests`` sends; the figures.
    ``rotate``: each request carries one partition's batch, partitions 0..N-1 in turn."""
    from benchmarks.kafka_load import create_topic
    from benchmarks.peers import Tidelog
    from tidelog.protocol.records import build_batch

    if callgrind:
        server, bootstrap, out = _start_under_callgrind(src, workdir)
        target = type("Started", (), {"bootstrap": bootstrap})
    else:
        Tidelog.src_dir = src
        target = Tidelog("balanced")
        server = target.start(workdir)
    try:
        create_topic(target.bootstrap, TOPIC, partitions)
        value = b"v" * max(record_bytes - 8, 0)
        batch = build_batch([(b"k" * min(record_bytes, 8), value, [])] * records_per_request)
        if rotate:  # as librdkafka's sticky partitioner sends the p16 rows: one partition a request
            frames = [produce_frame(TOPIC, batch, acks, indexes=[index]) for index in range(partitions)]
        else:
            frames = [produce_frame(TOPIC, batch, acks, partitions)]
        frame = frames[0]
        per_request = 1 if rotate else partitions
        host, port = target.bootstrap.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def answered() -> None:
                (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
                response = _recv_exactly(sock, size)
                # correlation id, header tags, topic count, topic name, partition count; then each
                # partition: index, error code, base offset, log append time, log start offset, no
                # record errors, no message, tags (37 bytes)
                at = 4 + 1 + 1 + 1 + len(TOPIC) + 1 + 4
                for _ in range(per_request):
                    error_code = struct.unpack_from(">h", response, at)[0]
                    if error_code:
                        raise RuntimeError(f"produce answered error code {error_code}")
                    at += 33

            for warm in range(max(min(20, requests), len(frames))):  # warm up: the segments, the pools, the fsyncs
                sock.sendall(frames[warm % len(frames)])
                answered()
            if callgrind:
                subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True, check=True)
            before = thread_cpu_s(server.pid)
            started = time.monotonic()
            sent = done = 0
            while done < requests:
                while sent < requests and sent - done < in_flight:
                    sock.sendall(frames[sent % len(frames)])
                    sent += 1
                answered()
                done += 1
            seconds = time.monotonic() - started
            after = thread_cpu_s(server.pid)
            instructions = _callgrind_instructions(server.pid, out, annotate) if callgrind else None
        peak_rss = server.peak_rss_bytes()
    finally:
        server.stop(timeout_s=120)
    gb = requests * per_request * len(batch) / 1e9
    main = [after[server.pid][i] - before.get(server.pid, (0.0, 0.0))[i] for i in (0, 1)]
    total = [sum(after[t][i] - before.get(t, (0.0, 0.0))[i] for t in after) for i in (0, 1)]
    return {
        "requests": requests, "request_bytes": len(frame), "gb": gb, "requests_per_s": requests / seconds,
        "broker_s_per_gb": (total[0] + total[1]) / gb, "user_s_per_gb": total[0] / gb, "system_s_per_gb": total[1] / gb,
        "loop_user_s_per_gb": main[0] / gb, "loop_system_s_per_gb": main[1] / gb,
        "other_threads_s_per_gb": (total[0] + total[1] - main[0] - main[1]) / gb,
        "loop_user_us_per_request": main[0] / requests * 1e6, "peak_rss_mb": peak_rss / 1e6,
        "load": os.getloadavg()[0],
        **({"instructions_per_request": instructions / requests,
            "instructions_per_record": instructions / (requests * per_request * records_per_request)}
           if instructions is not None else {}),
    }


def floor_ratio(row: dict, directory: Path) -> dict:
    """The kernel's floor measured now over as many MiB as the broker took (at least 256), and
    the broker's CPU per GB over it."""
    from benchmarks import references

    floor = references.socket_to_page_cache(directory, max(256, round(row["gb"] * 1e9 / references.BLOCK_BYTES)), True)
    per_gb = floor.get("receiver_cpu_s_per_gb")
    if not per_gb:
        return {"floor_status": floor["status"]}
    system = floor["receiver_system_s"] / (floor["bytes"] / 1e9)
    return {"floor_s_per_gb": per_gb, "floor_system_s_per_gb": system, "over_floor": row["broker_s_per_gb"] / per_gb,
            "system_over_floor": row["system_s_per_gb"] / system if system else None}


def _callgrind_instructions(pid: int, out: Path, annotate: int) -> int:
    """Instrumentation off, a dump; the instructions it counted (and the costliest functions)."""
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda f: f.stat().st_mtime)
    text = dumps[-1].read_text(errors="replace")
    total = max(int(n) for n in re.findall(r"^(?:summary|totals): (\d+)", text, re.M))
    if annotate:
        report = subprocess.run(["callgrind_annotate", "--threshold=100", str(dumps[-1])], capture_output=True,
                                text=True).stdout
        lines = [line for line in report.splitlines() if re.match(r"^\s*[\d,]+ \(", line)]
        print("\n".join(lines[:annotate + 1]), flush=True)
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.produce_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1200, help="Produce requests per measurement (default 1,200)")
    p.add_argument("--records-per-request", type=int, default=1000,
                   help="records in the request's batch, in each partition's (default 1,000)")
    p.add_argument("--partitions", type=int, default=1,
                   help="partitions of the topic, a batch each in every request (default 1; see --rotate)")
    p.add_argument("--rotate", action="store_true",
                   help="one partition's batch a request, partitions 0..N-1 in turn: how librdkafka's sticky "
                        "partitioner sends the p16 rows (with --partitions 16)")
    p.add_argument("--record-bytes", type=int, default=1024, help="bytes of each record's key and value (default 1,024)")
    p.add_argument("--acks", type=int, default=-1, choices=(-1, 1), help="the requests' acks (default -1)")
    p.add_argument("--in-flight", type=int, default=5, help="requests sent before their answers (default 5)")
    p.add_argument("--tidelog-ref", help="also measure this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--pairs", type=int, default=3, help="with --tidelog-ref: how many (ref, working tree) pairs (default 3)")
    p.add_argument("--json", type=Path, help="write every measurement here")
    p.add_argument("--callgrind", action="store_true",
                   help="count the broker's instructions a request under callgrind (see above)")
    p.add_argument("--annotate", type=int, default=0, help="with --callgrind: print the N costliest functions")
    p.add_argument("--floor", action="store_true",
                   help="measure the kernel's floor after each broker and give the broker's ratio over it")
    args = p.parse_args(argv)
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-produce-cpu-"))
    rows = []
    try:
        from benchmarks.peers import Tidelog

        sides = Tidelog.ab_sides(args.tidelog_ref, tmp_root / "ref")
        for pair in range(1, (args.pairs if args.tidelog_ref else 1) + 1):
            for name, src in sides:
                workdir = tmp_root / f"{pair}-{len(rows)}"
                row = {"pair": pair, "side": name, **measure(
                    src, args.requests, args.records_per_request, args.record_bytes, args.acks, args.in_flight,
                    workdir, args.callgrind, args.annotate if src is None else 0, args.partitions, args.rotate)}
                shutil.rmtree(workdir, ignore_errors=True)
                if args.floor:
                    row.update(floor_ratio(row, tmp_root))
                rows.append(row)
                print(f"{pair} {name:>16}: load {row['load']:.1f}; {row['requests_per_s']:,.0f} requests/s of "
                      f"{row['request_bytes'] / 1e3:,.0f} KB; broker {row['broker_s_per_gb']:.3f} s/GB (user "
                      f"{row['user_s_per_gb']:.3f}, system {row['system_s_per_gb']:.3f}); event loop user "
                      f"{row['loop_user_s_per_gb']:.3f} system {row['loop_system_s_per_gb']:.3f}, other threads "
                      f"{row['other_threads_s_per_gb']:.3f}; loop user {row['loop_user_us_per_request']:.0f} us a "
                      f"request; peak RSS {row['peak_rss_mb']:.0f} MB"
                      + (f"; {row['instructions_per_request']:,.0f} instructions a request, "
                         f"{row['instructions_per_record']:,.0f} a record"
                         if args.callgrind else "")
                      + (f"; floor {row['floor_s_per_gb']:.3f} s/GB (system {row['floor_system_s_per_gb']:.3f}): "
                         f"broker {row['over_floor']:.2f}x, its system time {row['system_over_floor']:.2f}x"
                         if row.get("floor_s_per_gb") else ""), flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
