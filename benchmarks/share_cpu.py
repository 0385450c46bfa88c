"""``python -m benchmarks.share_cpu``: the broker's instructions per record of a share-group
consume, counted by callgrind: a figure the machine's load does not change (issue 19, item 8).

A `balanced` broker (``tidelog serve``) runs under valgrind's callgrind with instrumentation off.
The 1k-p6-share rows' shape: a topic of 6 partitions, ``--records`` records of ``--record-bytes``
produced by confluent-kafka into all of them (benchmarks.kafka_load.produce); a first share group takes 20,000
of them (code paths loaded, ``__share_group_state`` created, not counted); then instrumentation is
switched on (``callgrind_control -i on``) while a new share group of ``--consumers``
ShareConsumers takes every record (benchmarks.share_groups.consume_share, implicit
acknowledgement), and off again. Reported: the broker's instructions per record (every thread,
user space: the kernel's copies, pread and the socket's, are not counted; nor is the time spent
waiting for fsyncs), and the phase's wall time (meaningless under callgrind, ~30-50x slower).

Each ShareFetch acquires one log batch of the partition it reaches first (librdkafka asks for
MaxRecords 500; a batch of 967 1 KiB records is taken whole), so most of the count is the
broker's work per request (the ShareFetch, its acknowledgements, the state write and its
group fsync, the response): a run's count moves by 2-4% with how its fetches happened to fall.

``--tidelog-ref REF`` measures that commit's src/ as well (git archive, its C extension built),
alternating (ref, working tree, ...) ``--pairs`` times, each in a fresh broker. ~1.5 minutes a
measurement at 100,000 records on this 2-core machine.

    python -m benchmarks.share_cpu --tidelog-ref f1e11d3 --pairs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARM_UP_RECORDS = 20_000
TOPIC = "bench"
PARTITIONS = 6


def measure(src: Path | None, records: int, record_bytes: int, consumers: int, workdir: Path,
            annotate: int = 0) -> dict:
    """One broker from ``src`` (None: the installed tidelog) under callgrind; the figures."""
    from benchmarks.kafka_load import create_topic, produce
    from benchmarks.produce_cpu import _callgrind_instructions, _start_under_callgrind
    from benchmarks.share_groups import consume_share

    workdir.mkdir(parents=True, exist_ok=True)
    server, bootstrap, out = _start_under_callgrind(src, workdir)
    try:
        create_topic(bootstrap, TOPIC, PARTITIONS)
        produced = produce(bootstrap, TOPIC, records, record_bytes, "all", 600, PARTITIONS)
        if produced["status"] != "ok":
            raise RuntimeError(f"produce: {produced['status']} {produced['errors']}")
        consume_share(bootstrap, TOPIC, min(WARM_UP_RECORDS, records), record_bytes, 600, 1)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True, check=True)
        started = time.monotonic()
        consumed = consume_share(bootstrap, TOPIC, records, record_bytes, 1200, consumers)
        seconds = time.monotonic() - started
        instructions = _callgrind_instructions(server.pid, out, annotate)
    finally:
        server.stop(timeout_s=120)
    return {"records": records, "record_bytes": record_bytes, "consumers": consumers,
            "status": consumed["status"], "redelivered": consumed.get("redelivered", 0),
            "seconds_under_callgrind": round(seconds, 1), "instructions": instructions,
            "instructions_per_record": round(instructions / records, 1), "load": round(os.getloadavg()[0], 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.share_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=100_000, help="records produced and consumed (default 100,000)")
    p.add_argument("--record-bytes", type=int, default=1024, help="bytes of each record's value (default 1,024)")
    p.add_argument("--consumers", type=int, default=1, help="ShareConsumers of the measured group (default 1)")
    p.add_argument("--tidelog-ref", help="also measure this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--pairs", type=int, default=2, help="with --tidelog-ref: how many (ref, working tree) pairs (default 2)")
    p.add_argument("--annotate", type=int, default=0, help="print the working tree's N costliest functions")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-share-cpu-"))
    rows = []
    try:
        from benchmarks.peers import Tidelog

        sides = Tidelog.ab_sides(args.tidelog_ref, tmp_root / "ref")
        for pair in range(1, (args.pairs if args.tidelog_ref else 1) + 1):
            for name, src in sides:
                workdir = tmp_root / f"{pair}-{len(rows)}"
                row = {"pair": pair, "side": name, **measure(src, args.records, args.record_bytes, args.consumers,
                                                              workdir, args.annotate if src is None else 0)}
                shutil.rmtree(workdir, ignore_errors=True)
                rows.append(row)
                print(f"{pair} {name:>16}: {row['instructions_per_record']:,.0f} instructions a record "
                      f"({row['status']}, {row['redelivered']} redelivered, load {row['load']})", flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
