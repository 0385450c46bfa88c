"""LeaderEpochCache: a partition's leader epochs and the offset where each began.

On disk: ``<partition dir>/leader-epoch-checkpoint``, one "epoch offset" line per epoch in
ascending order, replaced whole (storage/checkpoint.py) before the log's next append and made
durable by its next flush, before any record appended after the change is (Kafka 3.7 stopped
fsyncing it on each change too, KAFKA-15046); unreadable or emptied by a power loss, it is
rebuilt from the log. Rebuilt from the batches'
``partition_leader_epoch`` when missing, and fitted to the log as it opened (recovery may have
cut it below an entry; the log start may have moved past the first epochs' starts).

A leader answers OffsetForLeaderEpoch from it and a follower finds with it where its log
diverges from its leader's (Kafka's LeaderEpochFileCache). Not thread-safe; the partition's
owner (the event loop) owns it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tidelog.protocol.records import BATCH_HEADER_SIZE, parse_batch_header
from tidelog.storage.checkpoint import read_small_file

if TYPE_CHECKING:
    from tidelog.storage.log import PartitionLog

__all__ = ["EPOCH_FILE", "LeaderEpochCache", "UNDEFINED"]

logger = logging.getLogger(__name__)

EPOCH_FILE = "leader-epoch-checkpoint"
UNDEFINED = -1


class LeaderEpochCache:
    """(epoch, start offset) pairs, ascending; see the module docstring for the file."""

    def __init__(self, log: "PartitionLog") -> None:
        self.log = log
        self.path = log.dir / EPOCH_FILE
        self.entries: list[tuple[int, int]] = []
        self._file_text: str | None = None  # what the file holds (None: unknown or missing)
        try:
            text = log.file_texts.get(EPOCH_FILE)  # known since a clean stop: no read
            if text is None:
                text = log.file_texts[EPOCH_FILE] = read_small_file(self.path)
            self._file_text = text
            for line in text.split("\n"):
                if line.strip():
                    epoch, offset = line.split()
                    self.entries.append((int(epoch), int(offset)))
        except FileNotFoundError:
            self._rebuild(log)
        except ValueError:  # torn: a power loss before the flush that would have synced it
            logger.warning("%s: unreadable %s; rebuilt from the log", log.dir.name, EPOCH_FILE)
            self.entries = []
            self._rebuild(log)
        else:
            if not self.entries and log.log_end_offset > log.log_start_offset:
                self._rebuild(log)  # emptied by a power loss likewise
        self._clamp(log.log_start_offset, log.log_end_offset)

    def _clamp(self, log_start_offset: int, log_end_offset: int) -> None:
        """Fit the entries to the log as it opened, as Kafka's log loading does: recovery may
        have cut the log below where an (fsynced) entry says an epoch began, and the log start
        may have moved past the first epochs' starts."""
        kept = [e for e in self.entries if e[1] < log_end_offset]
        below = [i for i, e in enumerate(kept) if e[1] <= log_start_offset]
        if below:
            kept = [(kept[below[-1]][0], log_start_offset)] + kept[below[-1] + 1:]
        if kept != self.entries:
            logger.info("%s: leader epochs %s clamped to the log [%d, %d): %s", self.path.parent.name, self.entries,
                        log_start_offset, log_end_offset, kept)
            self.entries = kept
            self._save()

    def _rebuild(self, log: "PartitionLog") -> None:
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            chunk = memoryview(log.read(offset, 1 << 20, min_one_batch=True))
            if not chunk:
                break
            pos = 0
            while pos + BATCH_HEADER_SIZE <= len(chunk):
                info = parse_batch_header(chunk, pos)
                if info.partition_leader_epoch >= 0 and (not self.entries or info.partition_leader_epoch > self.entries[-1][0]):
                    self.entries.append((info.partition_leader_epoch, info.base_offset))
                pos += info.size
                offset = info.base_offset + info.last_offset_delta + 1
        if self.entries or log.log_end_offset > log.log_start_offset:  # a missing file and an empty log say the same
            self._save()

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else UNDEFINED

    def start_offset(self, epoch: int) -> int | None:
        for entry_epoch, offset in self.entries:
            if entry_epoch == epoch:
                return offset
        return None

    def assign(self, epoch: int, start_offset: int) -> None:
        if epoch >= 0 and (not self.entries or epoch > self.entries[-1][0]):
            self.entries.append((epoch, start_offset))
            self._save()

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch``, the offset where it ends), or (-1, -1) if none."""
        if not self.entries or epoch < self.entries[0][0]:
            return UNDEFINED, UNDEFINED
        if epoch >= self.entries[-1][0]:
            return self.entries[-1][0], log_end_offset
        for i, (entry_epoch, _) in enumerate(self.entries):
            if self.entries[i + 1][0] > epoch:
                return entry_epoch, self.entries[i + 1][1]
        return UNDEFINED, UNDEFINED

    def truncate_from(self, offset: int) -> None:
        """Forget epochs starting at or above ``offset`` (the log was truncated there)."""
        kept = [e for e in self.entries if e[1] < offset]
        if kept != self.entries:
            self.entries = kept
            self._save()

    def _save(self) -> None:
        """The file is replaced before the log's next append and synced by its next flush,
        before any record appended after this change is durable (PartitionLog.
        write_before_next_append); changes that end where the file is (a start's clamp of an
        empty epoch and its re-assignment as leader) write nothing. So starting or leading
        thousands of partitions costs no write and no fsync each."""
        text = "".join(f"{epoch} {offset}\n" for epoch, offset in self.entries)
        if text == self._file_text:
            self.log.cancel_write(self.path)
        else:
            self.log.write_before_next_append(self.path, text, self._written)

    def _written(self, text: str) -> None:
        self._file_text = text
