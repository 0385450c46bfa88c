"""Where the broker's time goes: py-spy samples the Tidelog broker process while it takes
a produce workload, and we summarise the collapsed stacks by function."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.procs import wait_until

RATE_HZ = 100


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def record(pid: int, raw_path: Path, workload) -> tuple[float, object]:
    """Sample ``pid`` while ``workload()`` runs; returns (seconds sampled, workload's result)."""
    return record_many({pid: raw_path}, workload)


def record_many(raw_paths: dict[int, Path], workload) -> tuple[float, object]:
    """Sample each process (pid -> its raw output) at once while ``workload()`` runs (the three
    brokers of a cluster); returns (seconds sampled, workload's result)."""
    for raw_path in raw_paths.values():
        raw_path.unlink(missing_ok=True)
    spies = [subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw",
                               "-o", str(raw_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for pid, raw_path in raw_paths.items()]
    try:
        time.sleep(0.5)  # py-spy has no readiness signal; it attaches within a few ms
        start = time.perf_counter()
        result = workload()
        seconds = time.perf_counter() - start
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    for raw_path in raw_paths.values():
        wait_until(raw_path.exists, 10, "py-spy output")
    return seconds, result


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/src/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    return f"{m.group('func')} ({path})"


# Frames that every sample shares (interpreter start-up, click, asyncio.run): not informative.
_ROOTS = ("<frozen runpy>", "click/", "tidelog/__main__.py", "tidelog/cli/main.py")


def summarise(raw_path: Path, seconds: float, top: int = 15) -> dict:
    """Top functions by own samples (where the CPU is) and, for Tidelog's own functions, by
    inclusive samples (what the time is spent for). Time inside uvloop's C code (socket
    reads and writes, epoll) is attributed to ``Runner.run``, and time in C calls made by
    Python code (os.write, os.fsync, crc32c) to the Python function that made them."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        frames = [f for f in frames if not any(root in f for root in _ROOTS)]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if "(tidelog/" in frame:
                inclusive[frame] += n

    def table(counter):
        return [{"function": f, "samples": n, "percent": round(100.0 * n / total, 1) if total else 0.0}
                for f, n in counter.most_common(top)]

    return {
        "samples": total,
        "seconds": round(seconds, 2),
        "rate_hz": RATE_HZ,
        "busy_percent": round(100.0 * total / (seconds * RATE_HZ), 1) if seconds else None,
        "own": table(own),
        "inclusive": table(inclusive),
    }
