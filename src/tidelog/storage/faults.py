"""Fault injection for the storage layer (in the spirit of Redpanda's fs_finject).

Every durable write the broker does consults the module-level ``faults`` first: segment and
index writes and fsyncs, checkpoint files (storage/checkpoint.py: recovery points, log start
offsets, producer state, leader epochs, high watermarks, the embedded metadata file) and
directory fsyncs. While nothing is armed that costs one attribute check. Each check names an
operation ("write" or "fsync") and a target:

- ``segment``: a ``.log`` file (its writes and its fsyncs, alone or through syncfs)
- ``index``: a ``.index`` or ``.timeindex`` file
- ``checkpoint``: a file replaced whole by storage/checkpoint.py
- ``dir``: a directory fsync (after a file is created, renamed or removed)

Tests arm it directly; a fault without a target hits the next check of that operation::

    faults.fail_next_write(errno.ENOSPC)
    faults.fail_next_fsync(errno.EIO, target="checkpoint")
    faults.short_next_write(100)        # the next segment write writes at most 100 bytes

Processes arm it with the environment, as ``op[.target]:ERRNO_NAME:probability`` items, for
example ``TIDELOG_FAULTS="write:ENOSPC:0.001,fsync.segment:EIO:0.01,fsync.checkpoint:EIO:1"``.
Not thread-safe in what it counts: fsyncs run in an executor, and a lost update of a countdown
is harmless for fault testing.
"""

from __future__ import annotations

import errno as errno_module
import logging
import os
import random

__all__ = ["FaultInjector", "faults", "OPERATIONS", "TARGETS"]

logger = logging.getLogger(__name__)

OPERATIONS = ("write", "fsync")
TARGETS = ("segment", "index", "checkpoint", "dir")


class FaultInjector:
    def __init__(self) -> None:
        self.armed = False
        self._pending: dict[str, list[tuple[int, str | None]]] = {op: [] for op in OPERATIONS}
        self._probability: dict[tuple[str, str | None], tuple[float, int]] = {}
        self._short_write_bytes: int | None = None

    def fail_next_write(self, errno: int = errno_module.EIO, target: str | None = None) -> None:
        self._arm("write", errno, target)

    def fail_next_fsync(self, errno: int = errno_module.EIO, target: str | None = None) -> None:
        self._arm("fsync", errno, target)

    def _arm(self, op: str, errno: int, target: str | None) -> None:
        if target is not None and target not in TARGETS:
            raise ValueError(f"fault target must be one of {TARGETS}, not {target!r}")
        self._pending[op].append((errno, target))
        self.armed = True

    def short_next_write(self, max_bytes: int) -> None:
        self._short_write_bytes = max_bytes
        self.armed = True

    def fail_randomly(self, op: str, errno: int, probability: float, target: str | None = None) -> None:
        if op not in OPERATIONS or (target is not None and target not in TARGETS):
            raise ValueError(f"fault must be one of {OPERATIONS}, optionally .{'/.'.join(TARGETS)}: {op}.{target}")
        self._probability[(op, target)] = (probability, errno)
        self.armed = True

    def reset(self) -> None:
        self.__init__()

    def check(self, op: str, target: str = "segment") -> None:
        """Raise the OSError armed for ``op`` ("write" or "fsync") on ``target``, if any."""
        pending = self._pending[op]
        for i, (code, wanted) in enumerate(pending):
            if wanted is None or wanted == target:
                del pending[i]
                self._update_armed()
                raise OSError(code, f"injected {op} fault ({target}): {os.strerror(code)}")
        for key in ((op, target), (op, None)):
            chance = self._probability.get(key)
            if chance is not None and random.random() < chance[0]:
                raise OSError(chance[1], f"injected {op} fault ({target}): {os.strerror(chance[1])}")

    def take_short_write(self, length: int) -> int:
        """How many of ``length`` bytes the next write may write."""
        if self._short_write_bytes is None:
            return length
        limit, self._short_write_bytes = self._short_write_bytes, None
        self._update_armed()
        return min(length, limit)

    def _update_armed(self) -> None:
        self.armed = bool(any(self._pending.values()) or self._probability or self._short_write_bytes is not None)

    def load_env(self, spec: str | None = None) -> None:
        spec = os.environ.get("TIDELOG_FAULTS", "") if spec is None else spec
        for item in filter(None, (part.strip() for part in spec.split(","))):
            try:
                where, errno_name, probability = item.split(":")
                op, _, target = where.partition(".")
                self.fail_randomly(op, getattr(errno_module, errno_name), float(probability), target or None)
            except (ValueError, AttributeError) as e:
                raise ValueError(f"TIDELOG_FAULTS: cannot parse {item!r} (op[.target]:ERRNO:probability): {e}") from None
            logger.warning("fault injection armed: %s fails with %s at probability %s", where, errno_name, probability)


faults = FaultInjector()
try:
    faults.load_env()
except ValueError as e:  # a test hook set wrongly: one line, not a traceback, and no silent ignore
    raise SystemExit(str(e)) from None
