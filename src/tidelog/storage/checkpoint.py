"""Checkpoint files: small files replaced whole and durably, the one way Tidelog writes them.

``write_checkpoint_file(path, data)`` writes ``<name>.tmp`` beside ``path``, fsyncs it, renames
it over ``path`` and fsyncs the directory: after a crash or a power loss the file holds the old
content or the new, never a mix, and a completed call survives. ``write_checkpoint_files`` does
the same for many files with two syncs of the whole filesystem instead of two fsyncs a file (a
clean stop of thousands of partitions writes a snapshot for each). ``remove_file`` makes a removal
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
from typing import Callable

from tidelog.storage.faults import faults

__all__ = ["fsync_dir", "read_checkpoint", "read_small_file", "remove_file", "write_checkpoint", "write_checkpoint_file",
           "write_checkpoint_files"]

TMP_SUFFIX = ".tmp"


def _write_tmp(path: Path, data: bytes | str, sync: bool) -> Path:
    """``<name>.tmp`` beside ``path`` holding ``data`` (fsynced if ``sync``); removed again if
    that fails. Returns its path."""
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if faults.armed:
            faults.check("write", "checkpoint")
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            if faults.armed:
                faults.check("fsync", "checkpoint")
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_checkpoint_file(path: Path, data: bytes | str, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring);
    ``sync=False``: atomically only, the caller makes file and directory durable later (a
    process crash keeps it: the page cache is the kernel's)."""
    path = Path(path)
    os.replace(_write_tmp(path, data, sync), path)
    if sync:
        fsync_dir(path.parent)


def write_checkpoint_files(files: list[tuple[Path, bytes | str]], sync_filesystem: Callable[[list[str]], None]) -> None:
    """Replace each ``path`` with its ``data`` as ``write_checkpoint_file`` would, for many files:
    every temporary file is written, ``sync_filesystem`` (given the fault targets it covers)
    makes them durable at once, each is renamed over its file, and ``sync_filesystem`` once more
    makes the renames durable. A crash midway leaves each file old or new (a ``.tmp`` beside it
    at worst, which the next start removes); once it returns every file survives."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            path = Path(path)
            written.append((_write_tmp(path, data, sync=False), path))
        sync_filesystem(["checkpoint"] * len(written))
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in written:
        os.replace(tmp, path)
    sync_filesystem(["dir"])


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


def read_small_file(path: Path) -> str:
    """A small file's text in three system calls (open, read, close: a start after a crash reads
    one or more of each of thousands of partitions). Raises FileNotFoundError, OSError,
    ValueError (not UTF-8)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_checkpoint(path: Path) -> int | None:
    """The number in a checkpoint; None if the file is missing or unreadable."""
    try:
        return int(read_small_file(path).strip())
    except (FileNotFoundError, ValueError):
        return None
