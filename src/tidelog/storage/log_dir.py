"""One log directory's health: online, or offline after an I/O error (Kafka's LogDirFailureChannel).

Linux drops the dirty pages of a failed write-back and reports the error once, to one fsync:
the next fsync of the same file succeeds although the data is gone (PostgreSQL's "fsyncgate").
So the first I/O error on a write, an fsync, a read or a checkpoint of a directory's files takes
the whole directory offline until a restart, whose recovery rescans what was not durable. While
offline every partition in it answers KAFKA_STORAGE_ERROR and nothing more is appended, synced
or acknowledged; listeners (the broker's metric and ``/ready``, the replica manager) are told
once. Running out of descriptors or memory is not a disk fault: it fails the operation only.

Not thread-safe; the event loop owns it (fsync jobs report their errors through the loop).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Callable

from tidelog.storage.errors import StorageError

__all__ = ["LogDirState"]

logger = logging.getLogger(__name__)

_NOT_DISK_FAULTS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


class LogDirState:
    """Whether one log directory is online; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offline_reason: str | None = None
        self.listeners: list[Callable[[str], None]] = []  # called once, with the reason

    @property
    def offline(self) -> bool:
        return self.offline_reason is not None

    def fail(self, error: BaseException, what: str) -> StorageError:
        """Take the directory offline for ``error`` met while doing ``what`` (the first error
        wins); return the StorageError to raise."""
        if isinstance(error, OSError) and error.errno in _NOT_DISK_FAULTS:
            logger.error("%s: %s failed: %s", self.path, what, error)
            return StorageError(f"{what} failed: {error}")
        if self.offline_reason is None:
            self.offline_reason = f"{what}: {error}"
            logger.error("log directory %s is OFFLINE after an I/O error (%s); its partitions answer "
                         "KAFKA_STORAGE_ERROR until a restart runs recovery", self.path, self.offline_reason)
            for listener in list(self.listeners):
                try:
                    listener(self.offline_reason)
                except Exception:
                    logger.exception("log directory offline listener failed")
        return self.error()

    def error(self) -> StorageError:
        return StorageError(f"log directory {self.path} is offline ({self.offline_reason})")
