"""The data directory's lock: one broker per directory, as Kafka's ``.lock`` file.

``<data dir>/.lock`` holds the PID of the broker that owns the directory, under an exclusive
``fcntl.flock``. The kernel drops the lock when that process exits, however it exits (a
SIGKILL included), so a stale file never keeps a broker out; a second broker on a live one's
directory fails at once, before it reads or writes anything else there. Not thread-safe; the
broker takes it once at start and releases it at stop.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class DataDirError(Exception):
    """The data directory cannot be used; the message is one line for the operator."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the directory if need be, check it is writable, and lock it (or raise DataDirError)."""
        where = self.data_dir.absolute()
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise DataDirError(f"data directory {where} is not a directory")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataDirError(f"cannot create data directory {where}: {_reason(e)}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DataDirError(f"data directory {where} is not writable: {_reason(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                by = f"another broker, PID {holder}" if holder else "another process"
                raise DataDirError(f"data directory {where} is in use by {by}") from None
            raise DataDirError(f"cannot lock data directory {where}: {_reason(e)}") from None
        if not os.access(self.data_dir, os.W_OK):
            os.close(fd)
            raise DataDirError(f"data directory {where} is not writable")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the file stays: removing it would race a broker starting meanwhile)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except (OSError, UnicodeDecodeError):
        return None
