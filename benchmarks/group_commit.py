"""``python -m benchmarks.group_commit``: the broker's own share of a `balanced` acknowledgement.

In one process, no client and no socket: a LogManager (uvloop, as `tidelog serve` runs it)
appends one batch (5 records of 1 KiB, the lat-5k request) to one balanced log every
``--interval-ms`` and waits for it as a Produce does (``wait_durable_many``). For each append it
reports the time to the answer, the fsync syscalls' own time (os.fsync timed in the fsync
thread, or as the C fsync thread reports it), and the difference: the group commit's hand-offs (the job's start, the loop to the
fsync thread and back, the waiters' wake-up). ``on_durable`` is when the high watermark moves
(a parked consumer fetch is woken then).

``--busy-us N`` keeps the event loop busy meanwhile: a callback runs Python for N us of every
millisecond (what other requests cost the loop: a broker taking lat-5k-linger0's 5,000 Produce
requests a second spends ~0.3 of it), so the fsync thread's GIL acquisitions and the job's
callback wait for the loop as they do in a busy broker. ``--switch-interval-ms`` sets
``sys.setswitchinterval`` in the measured process (CPython's default 5 ms: how long a thread
waiting for the GIL lets a running one go on).

``--rate N`` (open loop, lat-5k-linger0's pattern): a thread of the process marks an arrival every
1/N s, on time whatever the answers, through a pipe the loop watches (as a Produce frame wakes
it); each arrival appends one batch of ``--records`` records (1 for linger 0) and waits for it as
a Produce does, so waits overlap and the group commit's jobs follow one another. It reports each arrival's
time to its answer, and (``--floor``) the disk alone at the same pattern in the same minutes
(references.group_commit_wait's ``request_wait_ms``, the e2e-floor rows' disk part): how much the
group commit adds to the disk, with no client and no socket.

``--tidelog-ref REF`` measures that commit's src/ as well, alternating (ref, working tree, ref,
...) ``--pairs`` times, each side in a fresh process: an A/B of the path on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def measure_open_loop(appends: int, rate: float, records: int, data_dir: str, busy_us: float = 0.0) -> dict:
    """``--rate`` (see the module docstring); runs in the measured tree's process."""
    import asyncio
    import threading
    import time

    import uvloop

    from tidelog.protocol.records import build_batch, parse_batch_header
    from tidelog.storage.log import LogConfig
    from tidelog.storage.manager import LogManager

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    waits_ns: list[int] = []
    arrivals: list[int] = []  # due times, in order (the pipe's bytes are in the same order)

    def pace(start_ns: int) -> None:
        interval_ns = int(1e9 / rate)
        for i in range(appends):
            due = start_ns + i * interval_ns
            while (left := due - time.perf_counter_ns()) > 0:
                if left > 200_000:
                    time.sleep((left - 100_000) / 1e9)
            arrivals.append(due)
            os.write(write_fd, b"\0")

    async def run():
        loop = asyncio.get_running_loop()
        busy_until = [0.0]

        def busy() -> None:  # Python on the loop for busy_us of every millisecond
            if busy_until[0] < 0:
                return
            spin_until = time.perf_counter() + busy_us / 1e6
            while time.perf_counter() < spin_until:
                pass
            loop.call_later(0.001, busy)

        if busy_us > 0:
            loop.call_soon(busy)
        manager = LogManager(Path(data_dir), LogConfig(durability="balanced"))
        await manager.start()
        log = manager.create("t", 0)
        batch = bytearray(build_batch([(None, os.urandom(1024), [])] * records, timestamp_ms=1_000))
        info = parse_batch_header(batch)
        await manager.wait_durable_many([(log, log.append(memoryview(batch), info))])  # the directory's first fsync
        done = loop.create_future()
        taken = [0]

        def answered(due: int, _future) -> None:
            waits_ns.append(time.perf_counter_ns() - due)
            if len(waits_ns) == appends and not done.done():
                done.set_result(None)

        def arrived() -> None:
            try:
                count = len(os.read(read_fd, 4096))
            except BlockingIOError:
                return
            for _ in range(count):
                due = arrivals[taken[0]]
                taken[0] += 1
                log.append(memoryview(batch), info)
                waiter = manager.durable_waiter([(log, log.log_end_offset)])
                if waiter is None:
                    answered(due, None)
                else:
                    waiter.add_done_callback(partial(answered, due))

        loop.add_reader(read_fd, arrived)
        pacer = threading.Thread(target=pace, args=(time.perf_counter_ns() + 10_000_000,), daemon=True)
        pacer.start()
        await asyncio.wait_for(done, 60 + appends / rate * 5)
        loop.remove_reader(read_fd)
        busy_until[0] = -1
        pacer.join()
        await manager.close()

    uvloop.run(run())
    os.close(read_fd)
    os.close(write_fd)
    ordered = sorted(waits_ns)
    return {"appends": appends, "rate": rate, "records": records, "busy_us": busy_us,
            "wait_us": {name: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3 for name, q in QUANTILES}}


def measure(appends: int, interval_ms: float, data_dir: str, busy_us: float = 0.0, switch_interval_ms: float = 0.0) -> dict:
    """Runs in the measured tree's process (its src/ first on sys.path)."""
    import asyncio
    import time

    if switch_interval_ms > 0:
        sys.setswitchinterval(switch_interval_ms / 1000)

    import uvloop

    from tidelog.protocol.records import build_batch, parse_batch_header
    from tidelog.storage.log import LogConfig
    from tidelog.storage.manager import LogManager

    fsync_ns: list[int] = []
    real_fsync = os.fsync

    def timed_fsync(fd):
        started = time.perf_counter_ns()
        real_fsync(fd)
        fsync_ns.append(time.perf_counter_ns() - started)

    os.fsync = timed_fsync
    samples: list[tuple[int, int, int]] = []  # (answer, fsync syscalls, high watermark moved), ns after the wait began

    busy_running = True

    def busy() -> None:  # Python on the loop for busy_us of every millisecond, in 100 us slices
        if not busy_running:
            return
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        spin_until = now + min(busy_us, 100) / 1e6
        while time.perf_counter() < spin_until:
            pass
        loop.call_later(max(0.0, min(busy_us, 100) / busy_us * 1e-3 - (time.perf_counter() - now)), busy)

    async def run():
        nonlocal busy_running
        if busy_us > 0:
            asyncio.get_running_loop().call_soon(busy)
        manager = LogManager(Path(data_dir), LogConfig(durability="balanced"))
        await manager.start()
        worker = getattr(manager, "_worker", None)
        if worker is not None:  # the C fsync thread (storage/fsync.py FsyncWorker) calls fsync(2) itself
            class TimedWorker:
                def __getattr__(self, name):
                    return getattr(worker, name)

                def reap(self):
                    outcomes = worker.reap()
                    fsync_ns.extend(ended - started for _, _, started, ended in outcomes)
                    return outcomes

            manager._worker = TimedWorker()
        log = manager.create("t", 0)
        durable_at: list[int] = []
        manager.on_durable = lambda _log: durable_at.append(time.perf_counter_ns())
        batch = bytearray(build_batch([(None, os.urandom(1024), [])] * 5, timestamp_ms=1_000))
        info = parse_batch_header(batch)
        await manager.wait_durable_many([(log, log.append(memoryview(batch), info))])  # the directory's first fsync
        for _ in range(appends):
            log.append(memoryview(batch), info)
            durable_at.clear()
            fsync_ns.clear()
            started = time.perf_counter_ns()
            await manager.wait_durable_many([(log, log.log_end_offset)])
            answered = time.perf_counter_ns()
            samples.append((answered - started, sum(fsync_ns), (durable_at[0] - started) if durable_at else 0))
            await asyncio.sleep(interval_ms / 1000)
        busy_running = False
        await manager.close()

    uvloop.run(run())

    def quantiles(values):
        ordered = sorted(values)
        return {name: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3 for name, q in QUANTILES}

    return {"appends": appends, "busy_us": busy_us, "switch_interval_ms": sys.getswitchinterval() * 1e3,
            "answer_us": quantiles([a for a, _, _ in samples]),
            "fsync_us": quantiles([f for _, f, _ in samples]),
            "answer_minus_fsync_us": quantiles([a - f for a, f, _ in samples]),
            "hw_moved_minus_fsync_us": quantiles([d - f for _, f, d in samples if d])}


def run_side(src: Path, appends: int, interval_ms: float, tmp_root: Path, busy_us: float = 0.0,
             switch_interval_ms: float = 0.0) -> dict:
    """One measurement in a fresh process with ``src`` first on its path."""
    data_dir = tempfile.mkdtemp(prefix="group-commit-", dir=tmp_root)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]); "
            "from benchmarks.group_commit import measure; "
            "print(json.dumps(measure(int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], float(sys.argv[6]), "
            "float(sys.argv[7]))))")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(src), str(HERE.parent), str(appends), str(interval_ms), data_dir,
                              str(busy_us), str(switch_interval_ms)],
                             capture_output=True, text=True, timeout=60 + appends * (interval_ms / 1000 + 0.05), check=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = float(open("/proc/loadavg").read().split()[0])
    return result


def run_open_loop_side(src: Path, appends: int, rate: float, records: int, tmp_root: Path, busy_us: float) -> dict:
    """One ``--rate`` measurement in a fresh process with ``src`` first on its path."""
    data_dir = tempfile.mkdtemp(prefix="group-commit-", dir=tmp_root)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]); "
            "from benchmarks.group_commit import measure_open_loop; "
            "print(json.dumps(measure_open_loop(int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], "
            "float(sys.argv[7]))))")
    load = os.getloadavg()[0]
    try:
        out = subprocess.run([sys.executable, "-c", code, str(src), str(HERE.parent), str(appends), str(rate), str(records),
                              data_dir, str(busy_us)], capture_output=True, text=True, timeout=120 + appends / rate * 5,
                             check=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = (load, os.getloadavg()[0])
    return result


def run_floor_side(appends: int, rate: float, records: int, tmp_root: Path) -> dict:
    """The disk alone at the ``--rate`` pattern (references.group_commit_wait), as long."""
    from benchmarks import references

    load = os.getloadavg()[0]
    r = references.group_commit_wait(tmp_root, seconds=appends / rate, rate=int(rate * records), record_bytes=1024,
                                     interval_ms=1000 / rate)
    return {"wait_us": {q: r["request_wait_ms"][q] * 1e3 for q, _ in QUANTILES if q in r["request_wait_ms"]},
            "load": (load, os.getloadavg()[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.group_commit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appends", type=int, default=3000, help="appends per measurement (default 3,000)")
    p.add_argument("--interval-ms", type=float, default=1.0, help="pause between an answer and the next append (default 1)")
    p.add_argument("--tidelog-ref", help="also measure this commit's src/ (git archive), alternating with the working tree")
    p.add_argument("--pairs", type=int, default=3, help="with --tidelog-ref: how many (ref, working tree) pairs (default 3)")
    p.add_argument("--busy-us", type=float, default=0.0,
                   help="keep the loop running Python this many us of every ms meanwhile (default 0)")
    p.add_argument("--switch-interval-ms", type=float, default=0.0,
                   help="sys.setswitchinterval in the measured process (default: CPython's 5 ms)")
    p.add_argument("--rate", type=float, help="open loop: this many appends a second, on time (see above)")
    p.add_argument("--records", type=int, default=5, help="records of 1 KiB an append (default 5; with --rate)")
    p.add_argument("--floor", action="store_true", help="with --rate: the disk alone at the same pattern, after each pair")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args(argv)
    tmp_root = Path(tempfile.mkdtemp(prefix="tidelog-group-commit-"))
    rows = []
    try:
        sides = [("working tree", HERE.parent / "src")]
        if args.tidelog_ref:
            from benchmarks.peers import Tidelog

            Tidelog.use_ref(args.tidelog_ref, tmp_root / "ref")
            sides.insert(0, (f"ref {Tidelog.commit}", Tidelog.src_dir))
        for pair in range(1, (args.pairs if args.tidelog_ref else 1) + 1):
            if args.rate:
                for name, src in sides if pair % 2 else sides[::-1]:
                    row = {"pair": pair, "side": name, **run_open_loop_side(src, args.appends, args.rate, args.records,
                                                                            tmp_root, args.busy_us)}
                    rows.append(row)
                    print(f"{pair} {name:>16}: load {row['load'][0]:.1f}-{row['load'][1]:.1f}; arrival -> answered "
                          + "/".join(f"{row['wait_us'][q]:.0f}" for q, _ in QUANTILES) + " us (p50/p90/p99)", flush=True)
                if args.floor:
                    row = {"pair": pair, "side": "disk alone", **run_floor_side(args.appends, args.rate, args.records,
                                                                                tmp_root)}
                    rows.append(row)
                    print(f"{pair} {'disk alone':>16}: load {row['load'][0]:.1f}-{row['load'][1]:.1f}; arrival -> fsync end "
                          + "/".join(f"{row['wait_us'].get(q, float('nan')):.0f}" for q, _ in QUANTILES)
                          + " us (p50/p90/p99)", flush=True)
                continue
            for name, src in sides:
                row = {"pair": pair, "side": name, **run_side(src, args.appends, args.interval_ms, tmp_root, args.busy_us,
                                                              args.switch_interval_ms)}
                rows.append(row)
                print(f"{pair} {name:>16}: load {row['load']:.1f}; " + "; ".join(
                    f"{key[:-3].replace('_', ' ')} " + "/".join(f"{row[key][q]:.0f}" for q, _ in QUANTILES)
                    for key in ("answer_us", "fsync_us", "answer_minus_fsync_us", "hw_moved_minus_fsync_us"))
                    + " us (p50/p90/p99)", flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
