"""What the numbers were taken on: the machine and the software versions."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# What steady_client_heap sets: allocations up to 32 MiB (glibc's largest mmap threshold; a
# librdkafka Fetch response buffer is ~1 MiB) come from the heaps, and a heap's free top is never
# given back (the largest value mallopt takes: the client-ceiling producer's queue of 1,000,000
# records of 1 KiB is ~1.2 GB).
CLIENT_MMAP_THRESHOLD = 32 << 20
CLIENT_TRIM_THRESHOLD = 2**31 - 1


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _disk(directory: Path) -> str:
    try:
        out = subprocess.run(["df", "-hT", str(directory)], capture_output=True, text=True, timeout=10).stdout.splitlines()
        device, fstype, size = out[1].split()[:3]
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return "unknown"
    name = Path(device).name
    rotational = _read(f"/sys/block/{name}/queue/rotational").strip()
    kind = {"0": "non-rotational", "1": "rotational"}.get(rotational, "unknown type")
    return f"{device} ({fstype}, {size}, {kind})"


def machine_info(data_dir: Path) -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "disk": _disk(data_dir),
        "kernel": platform.release(),
        "os": _read("/etc/os-release").split('PRETTY_NAME="', 1)[-1].split('"', 1)[0] or platform.platform(),
        "loadavg_at_start": _read("/proc/loadavg").split()[:3],
    }


def steady_client_heap() -> dict:
    """Keep the benchmark process's freed heap memory instead of giving it back to the kernel.

    By default glibc gives a heap's free top back to the kernel (trim) and unmaps large blocks as
    soon as they are freed, with thresholds that move with what the process did before. Every
    client of the run lives in this process, one phase after another, so whether a phase's
    buffers landed in pages the process had already touched depended on the phases before it:
    the 1 KiB consume of librdkafka's mock cluster took 214,000-265,000 minor faults (a first
    touch of ~1 GB) in some runs and 2,000-5,000 in others, and 2.0-2.3 s of client CPU against
    1.2-1.5 s. On this VM a page given back is also taken back by the host about 2 s later
    (free page reporting), so its next first touch faults on the host as well. With the heap
    kept, each phase reuses memory an earlier phase touched, whatever the target. Python's own
    small-object arenas (mapped outside malloc) are not covered: ~5,000-30,000 faults a 1 GB
    consume remain. Returns the settings set, or why none were."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, CLIENT_MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, CLIENT_TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError) as e:
        return {"skipped": f"no mallopt: {e}"}
    if not ok:
        return {"skipped": "mallopt refused the settings (not glibc?)"}
    return {"M_MMAP_THRESHOLD": CLIENT_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": CLIENT_TRIM_THRESHOLD}


def own_minor_faults() -> int:
    """Minor page faults of this process so far (every thread: the clients', librdkafka's and an
    in-process mock cluster's): each is a first touch of a page, zero-filled by the kernel."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _stat_field(pids: list[int], index: int) -> int:
    """The sum over these processes of field ``index`` of ``/proc/PID/stat`` (counted after the
    command's closing parenthesis, from 0: the state is 0)."""
    total = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/stat")
        if text:
            total += int(text[text.rindex(")") + 2:].split()[index])
    return total


def minor_faults(pids: list[int]) -> int:
    """Minor page faults of these processes so far (``/proc/PID/stat``)."""
    return _stat_field(pids, 7)


def system_cpu_seconds(pids: list[int]) -> float:
    """System (kernel) CPU seconds of these processes so far: for a broker's consume, mostly the
    sendfile and the TCP transmit path, whose share on loopback depends on BBR's mode."""
    return _stat_field(pids, 12) / os.sysconf("SC_CLK_TCK")


def client_versions() -> dict:
    import confluent_kafka

    versions = {
        "python": sys.version.split()[0],
        "confluent-kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
    }
    try:
        import uvloop

        versions["uvloop"] = uvloop.__version__
    except ImportError:
        pass
    return versions


def load_average() -> list[str]:
    return _read("/proc/loadavg").split()[:3]


def _process_ticks() -> dict[int, tuple[str, int, int]]:
    """pid -> (command, parent pid, user+system clock ticks) of every process now."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        command = text[text.index("(") + 1:text.rindex(")")]
        if command.startswith("python"):  # which program: "python -m pytest", "python -m benchmarks"
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                argv = []
            words = [a.decode(errors="replace") for a in argv[1:4] if a]
            command = " ".join(["python"] + [Path(w).name if "/" in w else w for w in words])[:60]
        fields = text[text.rindex(")") + 2:].split()
        out[int(entry.name)] = (command, int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def busy_processes(seconds: float = 2.0, own_pid: int | None = None, min_percent: float = 3.0) -> list[dict]:
    """What else is running: the processes outside this one's tree that used at least
    ``min_percent`` of a core over ``seconds``, by command name (summed), busiest first."""
    import time

    own_pid = os.getpid() if own_pid is None else own_pid
    before = _process_ticks()
    start = time.monotonic()
    time.sleep(seconds)
    after = _process_ticks()
    elapsed = time.monotonic() - start
    parents = {pid: ppid for pid, (_, ppid, _) in after.items()}

    def ours(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:  # bounded walk up the tree
            if pid == own_pid:
                return True
            pid, seen = parents.get(pid, 0), seen + 1
        return False

    tick = os.sysconf("SC_CLK_TCK")
    by_command: dict[str, float] = {}
    for pid, (command, _, ticks) in after.items():
        if ours(pid):
            continue
        used = ticks - before[pid][2] if pid in before else ticks  # a process started meanwhile: all of it
        if used > 0:
            by_command[command] = by_command.get(command, 0.0) + used / tick / elapsed * 100
    return [{"command": c, "percent_of_a_core": round(p, 1)}
            for c, p in sorted(by_command.items(), key=lambda item: -item[1]) if p >= min_percent]


def c_extensions(src: Path) -> dict[str, str]:
    """Each C source under ``src``/tidelog and whether the broker will run it: built after the
    source was last changed, built before it (a stale build: rebuild with pip install -e .), or
    not built (the broker then runs its Python fallback, and measures that)."""
    out = {}
    for source in sorted(Path(src).glob("tidelog/**/*.c")):
        builds = [p for p in source.parent.glob(f"{source.stem}.*.so")] + [p for p in source.parent.glob(f"{source.stem}.so")]
        module = ".".join(source.relative_to(src).with_suffix("").parts)
        if not builds:
            out[module] = "not built: the Python fallback runs"
        elif max(p.stat().st_mtime for p in builds) < source.stat().st_mtime:
            out[module] = "STALE: built before its source last changed (rebuild: pip install -e .)"
        else:
            out[module] = "built"
    return out
