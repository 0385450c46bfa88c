"""What the numbers were taken on: the machine and the software versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


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
