"""Checkpoint files: small files replaced whole and durably, the one way Tidelog writes them.

``write_checkpoint_file(path, data)`` writes ``<name>.tmp`` beside ``path``, fsyncs it, renames
it over ``path`` and fsyncs the directory: after a crash or a power loss the file holds the old
content or the new, never a mix, and a completed call survives. ``remove_file`` makes a removal
survive the same way. Used for every such file: a partition's ``recovery-point``,
``log-start-offset`` and producer state, the leader-epoch and high-watermark checkpoints, the
embedded metadata file and the clean-shutdown marker.

Each write and fsync consults the fault hook (storage/faults.py: target "checkpoint" for the
file, "dir" for the directory). Errors are raised as OSError; the caller decides what one means
(for a log directory's own files, the LogManager takes the directory offline). Blocking; called
on the event loop only for small files written rarely, or from an executor.
"""

from __future__ import annotations

import os
from pathlib import Path

from tidelog.storage.faults import faults

__all__ = ["fsync_dir", "read_checkpoint", "remove_file", "write_checkpoint", "write_checkpoint_file"]

TMP_SUFFIX = ".tmp"


def write_checkpoint_file(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if faults.armed:
            faults.check("write", "checkpoint")
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        if faults.armed:
            faults.check("fsync", "checkpoint")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(dir: Path) -> None:
    """Make the directory's entries (files created, renamed or removed in it) durable."""
    if faults.armed:
        faults.check("fsync", "dir")
    fd = os.open(dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: Path) -> bool:
    """Remove ``path`` durably; False if it did not exist."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def write_checkpoint(path: Path, value: int) -> None:
    """A checkpoint holding one decimal number."""
    write_checkpoint_file(path, f"{value}\n")


def read_checkpoint(path: Path) -> int | None:
    """The number in a checkpoint; None if the file is missing or unreadable."""
    try:
        return int(Path(path).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
