"""OpenFiles: which sealed segments keep their ``.log`` file open, so descriptors stay bounded.

A broker holds one descriptor per partition for its active segment (the one appended to) and
none for indexes (index.py). A sealed segment's file is opened when it is read (consumers
catching up, followers, timestamp lookups) and registered here, most recently used last; it is
closed again once it has not been used for ``idle_ms`` (``log.segment.idle.close.ms``), or,
least recently used first, when more than ``max_open`` are open. A segment with writes no fsync
has taken yet (``unsynced``: just rolled) is never closed here, so a write-back error cannot be
lost between the write and its fsync; it is looked at again on the next pass. So the open
descriptors of a data directory are at most: its partitions, plus ``max_open``, plus the
unsynced sealed segments (those rolled since the last group fsync).

Not thread-safe; the event loop owns it (``sweep`` runs from the LogManager's task).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidelog.storage.segment import LogSegment

__all__ = ["OpenFiles"]

logger = logging.getLogger(__name__)


class OpenFiles:
    """Sealed segments with an open file, least recently used first; see the module docstring."""

    def __init__(self, max_open: int, idle_ms: int) -> None:
        self.max_open = max_open
        self.idle_ms = idle_ms
        self._used: OrderedDict[LogSegment, float] = OrderedDict()  # segment -> last use (monotonic s)
        self.closed_total = 0

    def __len__(self) -> int:
        return len(self._used)

    def touch(self, segment: LogSegment) -> None:
        """``segment`` (sealed) used its file now."""
        used = self._used
        if segment in used:
            used.move_to_end(segment)
        used[segment] = time.monotonic()
        if len(used) > self.max_open:
            self._evict(len(used) - self.max_open, keep=segment)

    def forget(self, segment: LogSegment) -> None:
        """``segment`` closed its file itself (deleted, replaced, the log closed)."""
        self._used.pop(segment, None)

    def sweep(self, now: float | None = None) -> int:
        """Close the files idle for ``idle_ms``; return how many were closed."""
        now = time.monotonic() if now is None else now
        horizon = now - self.idle_ms / 1000
        idle = []
        for segment, used_at in self._used.items():
            if used_at > horizon:
                break
            idle.append(segment)
        return self._close(idle)

    def _evict(self, count: int, keep: LogSegment) -> None:
        """Close the ``count`` least recently used files (never ``keep``'s: it is being used)."""
        oldest = []
        for segment in self._used:
            if len(oldest) >= count:
                break
            if segment is not keep:
                oldest.append(segment)
        self._close(oldest)

    def _close(self, segments: list[LogSegment]) -> int:
        closed = 0
        for segment in segments:
            if segment.unsynced:
                self._used.move_to_end(segment)  # its fsync comes first; looked at again later
                continue
            del self._used[segment]
            try:
                segment.close_file()
            except OSError as e:  # close reports a write-back error only for unsynced data, of which it has none
                logger.warning("closing idle segment %s: %s", segment.log_path, e)
            closed += 1
        self.closed_total += closed
        return closed
