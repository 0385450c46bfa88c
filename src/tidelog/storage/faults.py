"""Fault injection for the storage layer (in the spirit of Redpanda's fs_finject).

Segments consult the module-level ``faults`` before each write and fsync; while nothing is
armed that costs one attribute check. Tests arm it directly::

    faults.fail_next_write(errno.ENOSPC)
    faults.fail_next_fsync(errno.EIO)
    faults.short_next_write(100)        # the next os.write writes at most 100 bytes

Processes arm it with the environment, as ``op:ERRNO_NAME:probability`` items, for example
``TIDELOG_FAULTS="write:ENOSPC:0.001,fsync:EIO:0.01"``. Not thread-safe in what it counts:
fsyncs run in an executor, and a lost update of a countdown is harmless for fault testing.
"""

from __future__ import annotations

import errno as errno_module
import logging
import os
import random

__all__ = ["FaultInjector", "faults"]

logger = logging.getLogger(__name__)


class FaultInjector:
    def __init__(self) -> None:
        self.armed = False
        self._pending: dict[str, list[int]] = {"write": [], "fsync": []}
        self._probability: dict[str, tuple[float, int]] = {}
        self._short_write_bytes: int | None = None

    def fail_next_write(self, errno: int = errno_module.EIO) -> None:
        self._pending["write"].append(errno)
        self.armed = True

    def fail_next_fsync(self, errno: int = errno_module.EIO) -> None:
        self._pending["fsync"].append(errno)
        self.armed = True

    def short_next_write(self, max_bytes: int) -> None:
        self._short_write_bytes = max_bytes
        self.armed = True

    def fail_randomly(self, op: str, errno: int, probability: float) -> None:
        self._probability[op] = (probability, errno)
        self.armed = True

    def reset(self) -> None:
        self.__init__()

    def check(self, op: str) -> None:
        """Raise the OSError armed for ``op`` ("write" or "fsync"), if any."""
        pending = self._pending[op]
        if pending:
            code = pending.pop(0)
            self._update_armed()
            raise OSError(code, f"injected {op} fault: {os.strerror(code)}")
        chance = self._probability.get(op)
        if chance is not None and random.random() < chance[0]:
            raise OSError(chance[1], f"injected {op} fault: {os.strerror(chance[1])}")

    def take_short_write(self, length: int) -> int:
        """How many of ``length`` bytes the next write may write."""
        if self._short_write_bytes is None:
            return length
        limit, self._short_write_bytes = self._short_write_bytes, None
        self._update_armed()
        return min(length, limit)

    def _update_armed(self) -> None:
        self.armed = bool(self._pending["write"] or self._pending["fsync"] or self._probability
                          or self._short_write_bytes is not None)

    def load_env(self, spec: str | None = None) -> None:
        spec = os.environ.get("TIDELOG_FAULTS", "") if spec is None else spec
        for item in filter(None, (part.strip() for part in spec.split(","))):
            op, errno_name, probability = item.split(":")
            self.fail_randomly(op, getattr(errno_module, errno_name), float(probability))
            logger.warning("fault injection armed: %s fails with %s at probability %s", op, errno_name, probability)


faults = FaultInjector()
faults.load_env()
