"""A byte range of a segment file, sent to a socket without passing through Python.

``PartitionLog.read_slice`` returns one for a Fetch: the whole batches of the range, as found
from their headers alone. The connection writes it with ``os.sendfile`` on a plaintext socket
(the kernel copies page cache to socket) and reads it (``read``) where bytes are needed (TLS,
a socket that is not writable at once). It keeps the segment, not a descriptor: a file closed
while idle (open_files.py) is reopened by ``segment.fd``, but a segment released since the read
(deleted by retention or truncation, replaced by the cleaner, its log closed) is not, since its
path may name other bytes: the send fails (OSError) and the connection closes, as it does when
a follower's truncation shortened the file. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidelog.storage.segment import LogSegment

__all__ = ["FileSlice"]


class FileSlice:
    __slots__ = ("segment", "position", "size", "records")

    def __init__(self, segment: "LogSegment", position: int, size: int, records: int) -> None:
        self.segment = segment
        self.position = position
        self.size = size
        self.records = records  # offsets spanned (the record count unless compacted)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def read(self, offset: int = 0) -> bytes:
        """The slice's bytes from ``offset``; short if the file was truncated meanwhile."""
        return os.pread(self._fd(), self.size - offset, self.position + offset)

    def send(self, socket_fd: int, offset: int = 0) -> int:
        """Bytes from ``offset`` sent to the non-blocking ``socket_fd`` until it would block;
        raises OSError if the file ends first (truncated meanwhile) or the socket fails."""
        sent = offset
        fd = self._fd()
        while sent < self.size:
            try:
                count = os.sendfile(socket_fd, fd, self.position + sent, self.size - sent)
            except BlockingIOError:
                break
            if count == 0:
                raise OSError(f"{self.segment.log_path} ends before position {self.position + self.size}")
            sent += count
        return sent - offset

    def _fd(self) -> int:
        if self.segment.released:
            raise OSError(f"{self.segment.log_path} left the log after the read")
        return self.segment.fd
