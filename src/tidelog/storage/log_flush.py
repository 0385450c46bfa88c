"""How a PartitionLog's appends become durable: the flushes, the recovery point and the small
files written before the next append.

``LogFlushing`` is PartitionLog's durability half (log.py holds the rest of the class): it reads
and moves the log's own fields (``_unflushed``, ``_syncing``, ``_dir_changes``, ``durable_offset``,
...), so it has no state or owner of its own. ``start_flush`` hands out descriptors (or, for a
``syncfs`` job over many logs, only fault targets) for an fsync done elsewhere (fsync.py, the
LogManager's group commit); ``finish_flush`` accounts for it and closes them. A segment's own
descriptor is handed out, not a duplicate: the segment keeps it open while a job holds it
(``LogSegment.hold_for_sync``), so a segment closed, rolled away or deleted while its fsync runs
leaves the descriptor to the job's end, and no number is reused under an fsync thread. The
recovery point file (``recovery-point``, one decimal number, checkpoint.py) says every segment
wholly below it was fsynced.

Not thread-safe; the event loop owns it, as it owns the log.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from tidelog.storage.checkpoint import write_checkpoint, write_checkpoint_file
from tidelog.storage.fsync import sync_fds

if TYPE_CHECKING:
    from tidelog.storage.segment import LogSegment

__all__ = ["RECOVERY_POINT_FILE", "LogFlushing", "PendingFlush"]

RECOVERY_POINT_FILE = "recovery-point"

class PendingFlush(NamedTuple):
    """An fsync in progress: the offset it makes durable and what it syncs."""

    target_offset: int
    fds: list[tuple[int, str]]  # descriptors to fsync, each with its fault target (none for a syncfs)
    targets: list[str]  # the fault target of every file the fsync must cover
    segments: list[LogSegment]
    dir_changes: int  # the partition directory's entries as of this count are synced
    new_dir: bool  # the data directory's entry for the partition directory is synced
    truncations: int  # a truncation since start_flush voids the target
    files: tuple[Path, ...] = ()  # small files of the partition (write_before_next_append), synced too
    opened: tuple[int, ...] = ()  # descriptors of ``fds`` opened for the job (finish_flush closes them)
    held: tuple[LogSegment, ...] = ()  # segments whose own descriptor is in ``fds`` (finish_flush ends that)


def _close_descriptors(opened: tuple[int, ...] | list[int], held: tuple[LogSegment, ...] | list[LogSegment]) -> None:
    """Close what a flush opened and end its hold of segments' descriptors, every one; then
    raise the first OSError, if any."""
    failed: OSError | None = None
    for fd in opened:
        try:
            os.close(fd)
        except OSError as e:
            failed = failed or e
    for segment in held:
        try:
            segment.end_sync()
        except OSError as e:
            failed = failed or e
    if failed is not None:
        raise failed


class LogFlushing:
    """PartitionLog's flushes (see the module docstring); only PartitionLog derives from it."""

    @property
    def durable_end_offset(self) -> int:
        """The end of what this log's durability profile counts as durable: what a producer can
        have been acknowledged for, and so the most a consumer may read (the high watermark of a
        single node; a leader's own bound in a cluster). ``durable_offset`` under balanced and
        durable; the log end offset under throughput, which acknowledges page-cache writes."""
        if self.config.durability == "throughput":
            return self.log_end_offset
        return self.durable_offset

    def start_flush(self, syncfs: bool = False) -> PendingFlush | None:
        """Hand out what an fsync must cover: descriptors, safe to sync from a thread until
        ``finish_flush`` (which every started flush must get), or with ``syncfs`` (the caller
        syncs the whole filesystem through a descriptor opened before these writes) none, only
        their fault targets. The active segment's indexes are left in
        memory (recovery rebuilds them); a sealed segment's are written now.

        Raises StorageError when the directory is offline: nothing is synced, so nothing more
        can become durable, after an I/O error.
        """
        self._check_online()
        if self._deferred_files:
            self._write_deferred_files()
        # Segments another flush is still syncing are synced again: this flush's target may
        # only be claimed once all their bytes are on disk, whichever fsync finishes first.
        segments = list(self._syncing) + [s for s in self._unflushed if s not in self._syncing]
        dir_changes = self._dir_changes
        if not segments and dir_changes == self._dir_synced and not self._new_dir:
            return None
        active = self.segments[-1]
        fds: list[tuple[int, str]] = []
        opened: list[int] = []
        held: list[LogSegment] = []
        targets: list[str] = []
        files = tuple(self._unsynced_files)
        try:
            for path in files:
                if syncfs:
                    targets.append("checkpoint")
                else:
                    try:
                        opened.append(os.open(path, os.O_RDONLY))
                        fds.append((opened[-1], "checkpoint"))
                    except FileNotFoundError:
                        pass  # removed since (its directory entry's removal is synced below)
            for segment in segments:
                if syncfs:
                    targets.append("segment")
                    if segment is not active:  # a sealed segment's indexes are not rebuilt by recovery
                        segment.write_indexes()
                        targets += ("index", "index")
                else:
                    fds.append((segment.hold_for_sync(), "segment"))
                    held.append(segment)
                    if segment is not active:
                        opened += segment.index_sync_fds()
                        fds += ((fd, "index") for fd in opened[-2:])
                segment.unsynced = False
            if dir_changes != self._dir_synced or self._new_dir:
                if syncfs:
                    targets += ["dir"] * (1 + self._new_dir)
                else:
                    if dir_changes != self._dir_synced:
                        opened.append(os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY))
                        fds.append((opened[-1], "dir"))
                    if self._new_dir:
                        opened.append(os.open(self.dir.parent, os.O_RDONLY | os.O_DIRECTORY))
                        fds.append((opened[-1], "dir"))
        except OSError as e:
            try:
                _close_descriptors(opened, held)
            except OSError:
                pass  # the error being raised takes the directory offline already
            raise self._io_error(e, "starting a flush") from e
        self._unflushed = []
        self._unsynced_files.clear()
        for segment in segments:
            self._syncing[segment] = self._syncing.get(segment, 0) + 1
        return PendingFlush(self.log_end_offset, fds, targets or [target for _, target in fds], segments,
                            dir_changes, self._new_dir, self._truncations, files, tuple(opened), tuple(held))

    def finish_flush(self, pending: PendingFlush, error: BaseException | None = None) -> None:
        """Account for a finished fsync job. One failed by an I/O error takes the log directory
        offline (and raises nothing: the caller answers its waiters); one that never ran (another
        log of the job could not start, e.g. out of descriptors) leaves its segments to the next
        flush; a successful one moves durable_offset, unless the directory went offline meanwhile
        or a truncation voided its target. It first closes the flush's descriptors (its fsync
        has returned); a close that fails counts as the flush's I/O error."""
        if pending.opened or pending.held:
            try:
                _close_descriptors(pending.opened, pending.held)
            except OSError as e:
                if error is None:
                    error = e
        for segment in pending.segments:
            count = self._syncing.pop(segment, 0) - 1
            if count > 0:
                self._syncing[segment] = count
        if error is not None:
            if isinstance(error, OSError):
                self.log_dir.fail(error, f"{self.topic}-{self.partition}: fsync")
            elif not self.closed:
                for segment in pending.segments:
                    if segment in self.segments and segment not in self._unflushed:
                        segment.unsynced = True
                        self._unflushed.append(segment)
                self._unsynced_files.update(pending.files)
                if self.on_dirty is not None:
                    self.on_dirty(self)
            return
        if self.log_dir.offline or self.closed:
            return
        self._dir_synced = max(self._dir_synced, pending.dir_changes)
        if pending.new_dir:
            self._new_dir = False
        if pending.truncations != self._truncations:
            return  # the bytes now below the target may be newer than what was synced
        durable_offset = max(self.durable_offset, min(pending.target_offset, self.log_end_offset))
        try:
            self._checkpoint_recovery_point(durable_offset)
        except OSError as e:
            raise self._io_error(e, "writing the recovery point") from e
        self.durable_offset = durable_offset

    def _checkpoint_recovery_point(self, offset: int) -> None:
        """Persist a new recovery point only when it crosses into a later segment (rare).

        A missing file reads as 0 (recover from the first segment), which is always safe, so a
        new partition writes none: creating a topic of 256 partitions costs no fsync each.
        """
        if bisect_right(self._base_offsets, offset) != bisect_right(self._base_offsets, self._recovery_point):
            write_checkpoint(self.dir / RECOVERY_POINT_FILE, offset)
        self._recovery_point = offset

    def write_before_next_append(self, path: Path, data: str, written: Callable[[str], None] | None = None) -> None:
        """Replace a small file of this partition (the leader-epoch checkpoint) atomically before
        the next append, flush or close, and durably with the log's next flush: so before any
        record appended after this call is written the file is, and before that record is
        durable (acknowledged) file and directory entry are. Several calls before then write
        once (the last ``data``); ``cancel_write`` drops it (the file already holds it).
        ``written(data)`` is called once the file holds it. A process crash keeps what was
        written (the page cache is the kernel's); a power loss may take the file back to its old
        content together with every record appended since, which the file's reader allows for."""
        self._deferred_files[Path(path)] = (data, written)

    def cancel_write(self, path: Path) -> None:
        self._deferred_files.pop(Path(path), None)

    def _write_deferred_files(self) -> None:
        """Write what ``write_before_next_append`` holds. Raises StorageError."""
        self._check_online()
        for path, (data, written) in list(self._deferred_files.items()):
            try:
                write_checkpoint_file(path, data, sync=False)
            except OSError as e:
                raise self._io_error(e, f"writing {path.name}") from e
            del self._deferred_files[path]
            self.file_texts[path.name] = data
            self._unsynced_files.add(path)
            self._dir_changes += 1
            if written is not None:
                written(data)

    def flush(self) -> None:
        """fsync everything appended so far (synchronously); raises StorageError if it failed."""
        pending = self.start_flush()
        if pending is None:
            return
        try:
            sync_fds(pending.fds)
        except OSError as e:
            self.finish_flush(pending, e)
            raise self.log_dir.error() from e
        self.finish_flush(pending)

