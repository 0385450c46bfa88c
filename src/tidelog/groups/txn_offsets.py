"""Transactional offset commits waiting for their transaction's marker (KIP-98, KIP-447).

TxnOffsetCommit writes a group's offsets to ``__consumer_offsets`` as a transactional batch (the
producer's id and epoch, the transactional bit), and they take effect only when the COMMIT marker
of that producer lands on the same partition; an ABORT marker drops them. Until then they are
pending here, per producer id, as Kafka's OffsetMetadataManager keeps them:

- ``add`` when a transactional batch of offset records is durable (or replayed while loading);
- ``complete(producer_id, committed)`` when a marker of that producer is written (or replayed):
  the offsets to apply, each with the ``__consumer_offsets`` offset of its record, so the caller
  keeps whichever of it and a plain OffsetCommit of the same partition was written last (Kafka:
  "we always keep the most recent committed offset" by record offset, so compaction of the topic
  cannot bring an older one back);
- ``drop(keys)`` when tombstones of those keys are durable (their topic was deleted);
- ``has_pending(group, topic, partition)``: OffsetFetch with ``require_stable`` (v7+) answers
  UNSTABLE_OFFSET_COMMIT for such a partition, and a group with pending offsets is not empty
  for deletion and expiry.

Values are whatever the group coordinator stores (opaque here). Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["PendingOffset", "PendingTxnOffsets"]


class PendingOffset(NamedTuple):
    group_id: str
    topic: str
    partition: int
    value: Any
    record_offset: int  # where its record is in __consumer_offsets


class PendingTxnOffsets:
    """See the module docstring."""

    def __init__(self) -> None:
        # producer id -> (group, topic, partition) -> PendingOffset; a later commit in the same
        # transaction replaces an earlier one
        self._by_producer: dict[int, dict[tuple[str, str, int], PendingOffset]] = {}
        self._open_by_group: dict[str, set[int]] = {}  # group -> producer ids with offsets pending

    def add(self, producer_id: int, group_id: str, topic: str, partition: int, value: Any, record_offset: int) -> None:
        self._by_producer.setdefault(producer_id, {})[(group_id, topic, partition)] = PendingOffset(
            group_id, topic, partition, value, record_offset)
        self._open_by_group.setdefault(group_id, set()).add(producer_id)

    def complete(self, producer_id: int, committed: bool) -> list[PendingOffset]:
        """The marker of ``producer_id``'s transaction: what to apply (nothing on abort)."""
        pending = self._by_producer.pop(producer_id, None)
        if pending is None:
            return []
        for group_id in {key[0] for key in pending}:
            producers = self._open_by_group.get(group_id)
            if producers is not None:
                producers.discard(producer_id)
                if not producers:
                    del self._open_by_group[group_id]
        return list(pending.values()) if committed else []

    def has_pending(self, group_id: str, topic: str | None = None, partition: int | None = None) -> bool:
        """Whether an undecided transaction holds offsets of the group (of that partition, if given)."""
        producers = self._open_by_group.get(group_id)
        if not producers:
            return False
        if topic is None:
            return True
        return any((group_id, topic, partition) in self._by_producer[pid] for pid in producers)

    def producers(self, group_id: str) -> set[int]:
        return set(self._open_by_group.get(group_id, ()))

    def of_topic(self, topic: str) -> set[tuple[str, int]]:
        """(group, partition) of every pending offset of the topic."""
        return {(group_id, partition) for offsets in self._by_producer.values()
                for group_id, name, partition in offsets if name == topic}

    def drop(self, keys: set[tuple[str, str, int]]) -> None:
        """Forget the pending offsets of these (group, topic, partition): tombstones of them are
        durable (their topic was deleted), so their transaction's marker applies nothing for them,
        as Kafka's replay of an offset tombstone drops the pending offsets of its key."""
        for pid in list(self._by_producer):
            offsets = self._by_producer[pid]
            for key in [k for k in offsets if k in keys]:
                del offsets[key]
            groups = {k[0] for k in offsets}
            for group_id in {k[0] for k in keys} - groups:
                producers = self._open_by_group.get(group_id)
                if producers is not None:
                    producers.discard(pid)
                    if not producers:
                        del self._open_by_group[group_id]
            if not offsets:
                del self._by_producer[pid]

    def drop_group(self, group_id: str) -> None:
        """The group is deleted: forget its pending offsets (a later marker applies nothing for it)."""
        for pid in self._open_by_group.pop(group_id, set()):
            offsets = self._by_producer.get(pid)
            if offsets is None:
                continue
            for key in [k for k in offsets if k[0] == group_id]:
                del offsets[key]
            if not offsets:
                del self._by_producer[pid]

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._by_producer.values())
