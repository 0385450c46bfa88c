"""Committed offsets: the in-memory table of every group's offsets, expiry, and lag.

The table is the state the ``__consumer_offsets`` records describe (see groups/records.py);
the coordinator writes the records first and applies them here once they are durable.
Not thread-safe; the broker's event loop owns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from tidelog.groups.records import OffsetValue


@dataclass
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int | None = None
    # where its record is in __consumer_offsets (-1: not known): of a plain and a transactional
    # commit of one partition, the one written last wins (groups/txn_offsets.py)
    record_offset: int = field(default=-1, compare=False)

    @classmethod
    def from_value(cls, value: OffsetValue, record_offset: int = -1) -> "CommittedOffset":
        return cls(value.offset, value.leader_epoch, value.metadata, value.commit_timestamp_ms, value.expire_timestamp_ms,
                   record_offset)

    def to_value(self) -> OffsetValue:
        return OffsetValue(self.offset, self.leader_epoch, self.metadata, self.commit_timestamp_ms, self.expire_timestamp_ms)


class OffsetStore:
    """group id -> (topic, partition) -> CommittedOffset."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[tuple[str, int], CommittedOffset]] = {}

    def put(self, group_id: str, topic: str, partition: int, committed: CommittedOffset) -> None:
        self._groups.setdefault(group_id, {})[(topic, partition)] = committed

    def remove(self, group_id: str, topic: str, partition: int) -> bool:
        offsets = self._groups.get(group_id)
        if offsets is None or offsets.pop((topic, partition), None) is None:
            return False
        if not offsets:
            del self._groups[group_id]
        return True

    def get(self, group_id: str, topic: str, partition: int) -> CommittedOffset | None:
        offsets = self._groups.get(group_id)
        return offsets.get((topic, partition)) if offsets else None

    def group_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        return self._groups.get(group_id, {})

    def has_offsets(self, group_id: str) -> bool:
        return bool(self._groups.get(group_id))

    def group_ids(self) -> list[str]:
        return list(self._groups)

    def of_topic(self, topic: str) -> list[tuple[str, int, CommittedOffset]]:
        """Every group's committed offsets of the topic's partitions: (group, partition, offset)."""
        return [(group_id, partition, committed) for group_id, offsets in self._groups.items()
                for (name, partition), committed in offsets.items() if name == topic]

    def drop_group(self, group_id: str) -> list[tuple[str, int]]:
        """Forget every offset of a group; return the partitions it had."""
        return list(self._groups.pop(group_id, {}))

    def expired(self, group_id: str, now_ms: int, retention_ms: int, base_timestamp_ms: int | None) -> list[tuple[str, int]]:
        """Kafka's expiry rule for a group that may expire offsets.

        An offset with an explicit expire timestamp (OffsetCommit v2-v4 retention) expires then.
        Otherwise it expires ``retention_ms`` after ``base_timestamp_ms`` (when the group became
        empty), or after its own commit for groups without a protocol (assign() consumers).
        """
        result = []
        for key, committed in self._groups.get(group_id, {}).items():
            if committed.expire_timestamp_ms is not None:
                if now_ms >= committed.expire_timestamp_ms:
                    result.append(key)
                continue
            base = base_timestamp_ms if base_timestamp_ms is not None else committed.commit_timestamp_ms
            if now_ms >= base + retention_ms:
                result.append(key)
        return result


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int

    @property
    def lag(self) -> int:
        return max(self.log_end_offset - max(self.committed_offset, 0), 0)


def compute_lag(
    offsets: dict[tuple[str, int], CommittedOffset],
    log_end_offset: Callable[[str, int], int | None],
    partitions: Iterable[tuple[str, int]] | None = None,
) -> list[PartitionLag]:
    """Lag per partition: log end offset minus committed offset (partitions of deleted topics skipped).

    ``partitions`` limits the result; a listed partition without a commit gets committed -1
    and a lag of the whole log end offset.
    """
    keys = sorted(offsets) if partitions is None else list(partitions)
    result = []
    for topic, partition in keys:
        end = log_end_offset(topic, partition)
        if end is None:
            continue
        committed = offsets.get((topic, partition))
        result.append(PartitionLag(topic, partition, committed.offset if committed else -1, end))
    return result
