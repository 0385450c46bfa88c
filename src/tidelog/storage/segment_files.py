"""Segment files that come and go: cleaned segments swapped in, old ones retired, crash-safely.

Kafka's scheme (LocalLog.replaceSegments, LogLoader), with the suffixes it uses:

- ``<base>.log.cleaned`` (and ``.index``, ``.timeindex``, ``.txnindex`` ``.cleaned``): a
  segment the cleaner is writing (storage/cleaner.py). Incomplete until renamed; removed at start.
- ``<base>.log.swap`` (and its indexes): a cleaned segment, fsynced, whose replacement of the
  old segments has begun. At start a swap is finished: every segment file whose base offset
  lies in the swap's offsets (from its base to the end of its last batch, which the cleaner
  makes the end of the last segment it replaces) is removed, then the swap files lose their
  suffix. A ``.swap`` index without its ``.log.swap`` was already renamed or is a leftover:
  removed.
- ``<base>.log.deleted`` (and its indexes): a segment that left the log (a swap, retention,
  DeleteRecords), kept ``file.delete.delay.ms`` before it is unlinked; removed at start.

``swap_in`` does a replacement in three steps, each ended by a directory fsync so that a crash
(or a power loss) between any two renames leaves either the old segments (no ``.swap`` yet: the
``.cleaned`` files are dropped at start) or a complete ``.swap`` that the start finishes,
never a mix: cleaned -> swap (the log file last); the old segments -> deleted; swap -> final.

Deferred unlinks are timers on the running event loop (immediate without one); ``flush_deletions``
does the pending ones at shutdown. Blocking file operations; called on the event loop (renames
and a few directory fsyncs per swap) or at open.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from tidelog.storage.checkpoint import fsync_dir
from tidelog.storage.segment import LogSegment, segment_file_name

__all__ = ["CLEANED_SUFFIX", "DELETED_SUFFIX", "SWAP_SUFFIX", "flush_deletions", "recover_segment_files", "retire_files",
           "segment_paths", "swap_in"]

logger = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
FILE_SUFFIXES = (".index", ".timeindex", ".txnindex", ".log")  # the log file last: its presence vouches for the rest

_pending: dict[asyncio.TimerHandle, list[Path]] = {}


def segment_paths(dir: Path, base_offset: int, suffix: str = "") -> list[Path]:
    """Every file a segment may have (the log file last), with ``suffix`` appended."""
    return [dir / (segment_file_name(base_offset, ext) + suffix) for ext in FILE_SUFFIXES]


def _rename(path: Path, target: Path) -> None:
    os.rename(path, target)


def swap_in(dir: Path, base_offset: int, old_base_offsets: list[int], delete_delay_ms: int) -> None:
    """Replace the segments ``old_base_offsets`` by the cleaned segment ``base_offset`` on disk
    (see the module docstring). The old segments' open descriptors stay valid. Raises OSError."""
    swapped = []
    for path in segment_paths(dir, base_offset, CLEANED_SUFFIX):
        if path.exists():
            target = path.with_name(path.name[: -len(CLEANED_SUFFIX)] + SWAP_SUFFIX)
            _rename(path, target)
            swapped.append(target)
    fsync_dir(dir)
    retired = []
    for old_base in old_base_offsets:
        for path in segment_paths(dir, old_base):
            if path.exists():
                target = path.with_name(path.name + DELETED_SUFFIX)
                _rename(path, target)
                retired.append(target)
    fsync_dir(dir)
    for path in swapped:
        _rename(path, path.with_name(path.name[: -len(SWAP_SUFFIX)]))
    fsync_dir(dir)
    _schedule_deletion(retired, delete_delay_ms)


def retire_files(paths: list[Path], delete_delay_ms: int) -> None:
    """Take a segment's files out of the log now (renamed ``.deleted``) and unlink them after
    ``delete_delay_ms`` (``file.delete.delay.ms``); at once when it is 0."""
    if delete_delay_ms <= 0:
        for path in paths:
            path.unlink(missing_ok=True)
        return
    retired = []
    for path in paths:
        target = path.with_name(path.name + DELETED_SUFFIX)
        try:
            _rename(path, target)
        except FileNotFoundError:
            continue
        retired.append(target)
    _schedule_deletion(retired, delete_delay_ms)


def _schedule_deletion(paths: list[Path], delay_ms: int) -> None:
    if not paths:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None or delay_ms <= 0:
        _unlink(paths)
        return
    handle: asyncio.TimerHandle | None = None

    def fire() -> None:
        _pending.pop(handle, None)
        _unlink(paths)

    handle = loop.call_later(delay_ms / 1000, fire)
    _pending[handle] = paths


def _unlink(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:  # removed at the next start instead
            logger.warning("cannot remove %s: %s", path, e)


def flush_deletions() -> None:
    """Unlink every file still waiting for its ``file.delete.delay.ms`` (at shutdown)."""
    for handle, paths in list(_pending.items()):
        handle.cancel()
        _unlink(paths)
    _pending.clear()


def recover_segment_files(dir: Path, index_interval_bytes: int, names: set[str] | None = None) -> bool:
    """Before a log is opened: finish interrupted swaps, drop ``.cleaned`` and ``.deleted`` files
    (see the module docstring); ``names``, the directory's listing if the caller has it, makes
    the common case (nothing to do) free. Returns whether anything changed. Raises OSError."""
    if names is not None and not any(name.endswith((CLEANED_SUFFIX, DELETED_SUFFIX, SWAP_SUFFIX)) for name in names):
        return False
    changed = False
    for path in list(dir.iterdir()):
        if path.name.endswith(CLEANED_SUFFIX) or path.name.endswith(DELETED_SUFFIX):
            path.unlink()
            changed = True
    swap_bases = sorted(int(path.name[:20]) for path in dir.glob(f"*.log{SWAP_SUFFIX}") if path.name[:20].isdigit())
    for base_offset in swap_bases:
        swap = LogSegment(dir, base_offset, suffix=SWAP_SUFFIX)
        try:
            swap.load(None, index_interval_bytes)
            next_offset = swap.next_offset
        finally:
            swap.close()
        replaced = sorted(int(path.stem) for path in dir.glob("*.log")
                          if path.stem.isdigit() and base_offset <= int(path.stem) < next_offset)
        logger.warning("%s: finishing the swap of cleaned segment %d (offsets %d..%d) for segments %s interrupted by "
                       "a crash", dir, base_offset, base_offset, next_offset - 1, replaced)
        for old_base in replaced:
            for path in segment_paths(dir, old_base):
                path.unlink(missing_ok=True)
        for path in segment_paths(dir, base_offset, SWAP_SUFFIX):
            if path.exists():
                _rename(path, path.with_name(path.name[: -len(SWAP_SUFFIX)]))
        changed = True
    for path in dir.glob(f"*{SWAP_SUFFIX}"):  # a .swap index whose log file was renamed already
        path.unlink()
        changed = True
    if changed:
        fsync_dir(dir)
    return changed
