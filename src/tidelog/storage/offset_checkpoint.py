"""Offset checkpoint files: one offset per partition, in Kafka's ``OffsetCheckpointFile`` format.

On disk (UTF-8 text)::

    0                      the format version
    2                      how many entries follow
    orders 0 1234          topic, partition, offset: one line each
    orders 1 987

Written whole through storage/checkpoint.py (a temporary file, fsync, rename, fsync of the
directory), so a crash leaves the old file or the new one. The replica manager keeps the high
watermarks of this broker's replicas in ``<data dir>/replication-offset-checkpoint`` this way, as
Kafka does. A line that is not ``topic partition offset`` is skipped when reading. Blocking; small
files, written from an executor or at shutdown. Stateless.
"""

from __future__ import annotations

from pathlib import Path

from tidelog.storage.checkpoint import write_checkpoint_file

__all__ = ["read_offset_checkpoint", "render_offset_checkpoint", "write_offset_checkpoint"]

VERSION = 0


def render_offset_checkpoint(offsets: dict[tuple[str, int], int]) -> str:
    """The file's content for ``(topic, partition) -> offset`` (entries sorted, so equal maps render alike)."""
    lines = sorted(f"{topic} {partition} {offset}\n" for (topic, partition), offset in offsets.items())
    return f"{VERSION}\n{len(lines)}\n" + "".join(lines)


def write_offset_checkpoint(path: Path, text: str) -> None:
    """Replace the file with ``text`` (from ``render_offset_checkpoint``) atomically and durably."""
    write_checkpoint_file(path, text)


def read_offset_checkpoint(path: Path) -> dict[tuple[str, int], int]:
    """``(topic, partition) -> offset`` from the file; empty when it does not exist."""
    try:
        lines = Path(path).read_text().split("\n")
    except FileNotFoundError:
        return {}
    offsets = {}
    for line in lines[2:]:
        parts = line.rsplit(" ", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].lstrip("-").isdigit():
            offsets[(parts[0], int(parts[1]))] = int(parts[2])
    return offsets
