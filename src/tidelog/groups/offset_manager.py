"""OffsetCommit, OffsetFetch, OffsetDelete and lag for every group type (Kafka's OffsetMetadataManager).

A commit is checked against the group it names: the member's generation in a classic group
(groups/classic_protocol.py), the member epoch in a consumer-protocol group
(groups/consumer_protocol.py), nothing for an ``assign()`` consumer, whose group is created
on its first commit (an empty classic group holding only offsets). The offset records are
written to ``__consumer_offsets`` and applied to the committed-offset table
(groups/offsets.py) once durable; a failed write fails every partition of the commit. Until
then the partitions are *unstable*: OffsetFetch with ``require_stable`` answers them
UNSTABLE_OFFSET_COMMIT (the client asks again) instead of the offset the commit replaces, as
Kafka's coordinator orders such a fetch behind the writes in flight. Requests of one connection
run concurrently here, so a member's commit may still be in flight when its next heartbeat
gives the partition up and the new owner fetches where to start.
OffsetDelete removes offsets only of topics the group no longer subscribes to.
A deleted topic's offsets go from every group (``remove_topic``, Kafka's onPartitionsDeleted):
tombstones of its committed and pending transactional offsets, so a restart, a replica and the
next coordinator find them gone too, and a topic created again under the name starts with none.
Not thread-safe; the broker's event loop owns it.
"""

from __future__ import annotations

import json
import logging

from tidelog.clock import wall_clock_ms
from tidelog.groups.classic_group import DEAD, EMPTY, ClassicGroup
from tidelog.groups.classic_protocol import ClassicGroupProtocol
from tidelog.groups.consumer_protocol import ConsumerGroupProtocol
from tidelog.groups.offsets import CommittedOffset, PartitionLag, compute_lag
from tidelog.groups.records import OffsetKey, decode_offset_value, encode_offset_key, encode_offset_value
from tidelog.groups.registry import GroupLog, GroupRegistry, write_error, write_failure_level
from tidelog.groups.settings import GroupSettings
from tidelog.groups.txn_offsets import PendingTxnOffsets
from tidelog.protocol.errors import ErrorCode

logger = logging.getLogger(__name__)

# The delay movers' progress (queues/delay_mover.PROGRESS_GROUP): each commit carries its delay
# partition's leader epoch, and one older than the partition's stored or in-flight commit is a
# deposed leader's mover, refused with FENCED_LEADER_EPOCH (docs/queues.md). Other groups: not fenced.
# Only the same mover's commits fence each other (the producer id its metadata names: a delay topic
# created again under its name has another, and leader epochs from 0 again).
EPOCH_FENCED_GROUP = "__tidelog-delay-mover"
TOMBSTONES_PER_WRITE = 1000  # a deleted topic's offset tombstones go in batches of at most this many records


def _mover_of(metadata: str | None) -> object:
    try:
        found = json.loads(metadata or "")
    except ValueError:
        return None
    return found.get("producer_id") if isinstance(found, dict) else None


class OffsetManager:
    """Commits, fetches and deletes the committed offsets of classic and consumer-protocol groups."""

    def __init__(self, settings: GroupSettings, registry: GroupRegistry, classic: ClassicGroupProtocol,
                 consumer: ConsumerGroupProtocol, log: GroupLog) -> None:
        self.settings = settings
        self.registry = registry
        self.committed = registry.committed
        self.classic = classic
        self.consumer = consumer
        self.log = log
        self.pending_txn = PendingTxnOffsets()  # TxnOffsetCommit offsets waiting for their marker
        self.transactional_groups: set[str] = set()  # groups committed by TxnOffsetCommit since this broker loaded them
        self._in_flight: dict[tuple[str, str, int], int] = {}  # (group, topic, partition) -> commits being written
        self._epochs: dict[tuple[str, int], tuple[int, object]] = {}  # EPOCH_FENCED_GROUP: the last (epoch, mover) accepted
        # deleted topic -> the __consumer_offsets offset its tombstones end at, while commits of it
        # are in flight: one written before the tombstones is not applied after them
        self._tombstoned: dict[str, int] = {}

    def validate_offset_commit(self, group_id: str, generation_id: int, member_id: str,
                               group_instance_id: str | None, api_version: int | None = None
                               ) -> tuple[ErrorCode, ClassicGroup | None]:
        """Whether the member may commit for the group (and the classic group, if it is one)."""
        consumer_group = self.registry.consumer_groups.get(group_id)
        if consumer_group is not None:
            return self.consumer.validate_offset_commit(consumer_group, member_id, generation_id, api_version), None
        return self.classic.validate_offset_commit(group_id, generation_id, member_id, group_instance_id, api_version)

    async def commit_offsets(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
        offsets: dict[tuple[str, int], tuple[int, int, str | None]], retention_ms: int | None = None,
        api_version: int | None = None,
    ) -> dict[tuple[str, int], ErrorCode]:
        """Commit ``(topic, partition) -> (offset, leader_epoch, metadata)``; an error per partition.

        ``generation_id`` is the member epoch for a consumer-protocol group (OffsetCommit v9+)."""
        if not group_id:
            return {key: ErrorCode.invalid_group_id for key in offsets}
        error, group = self.validate_offset_commit(group_id, generation_id, member_id, group_instance_id, api_version)
        if error is not ErrorCode.none:
            return {key: error for key in offsets}
        if group is not None:
            self.classic.keep_alive(group, member_id)
        timestamp_ms = wall_clock_ms()
        expire_ms = timestamp_ms + retention_ms if retention_ms is not None and retention_ms >= 0 else None
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        accepted: list[tuple[tuple[str, int], CommittedOffset]] = []
        for (topic, partition), (offset, leader_epoch, metadata) in offsets.items():
            metadata = metadata or ""
            if len(metadata.encode()) > self.settings.offset_metadata_max_bytes:
                results[(topic, partition)] = ErrorCode.offset_metadata_too_large
                continue
            if group_id == EPOCH_FENCED_GROUP and self._fenced(topic, partition, leader_epoch, metadata):
                results[(topic, partition)] = ErrorCode.fenced_leader_epoch
                continue
            committed = CommittedOffset(offset, leader_epoch, metadata, timestamp_ms, expire_ms)
            records.append((encode_offset_key(OffsetKey(group_id, topic, partition)), encode_offset_value(committed.to_value())))
            accepted.append(((topic, partition), committed))
        if not records:
            return results
        in_flight = [(group_id, topic, partition) for (topic, partition), _ in accepted]
        for key in in_flight:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            base_offset = await self.log.write(records)
        except Exception as e:  # noqa: BLE001 - the commit is not acknowledged
            logger.log(write_failure_level(e), "group %s: cannot store offsets: %s", group_id, e)
            for key, _ in accepted:
                results[key] = write_error(e)
            return results
        finally:
            for key in in_flight:
                remaining = self._in_flight.pop(key) - 1
                if remaining:
                    self._in_flight[key] = remaining
        if not self.registry.known(group_id):
            self.registry.groups[group_id] = ClassicGroup(group_id)
        for i, ((topic, partition), committed) in enumerate(accepted):
            committed.record_offset = -1 if base_offset is None else base_offset + i
            if not self._tombstoned_since(topic, committed.record_offset):
                self.apply_committed(group_id, topic, partition, committed)
            results[(topic, partition)] = ErrorCode.none
        return results

    def _tombstoned_since(self, topic: str, record_offset: int) -> bool:
        """Whether the topic was deleted, and its offsets' tombstones written, after the record at
        ``record_offset`` (a commit in flight while its topic was deleted: replaying the log would
        not keep it either)."""
        fence = self._tombstoned.get(topic)
        if fence is None:
            return False
        if not any(key[1] == topic for key in self._in_flight):
            del self._tombstoned[topic]
        return record_offset < fence

    def _fenced(self, topic: str, partition: int, leader_epoch: int, metadata: str) -> bool:
        """Whether a delay mover's commit at ``leader_epoch`` comes from a deposed leader (an older
        epoch than the same mover's stored commit or one accepted and being written); else its
        epoch is the fence."""
        mover = _mover_of(metadata)
        fence = -1
        stored = self.committed.get(EPOCH_FENCED_GROUP, topic, partition)
        if stored is not None and _mover_of(stored.metadata) == mover:
            fence = stored.leader_epoch
        accepted = self._epochs.get((topic, partition))
        if accepted is not None and accepted[1] == mover:
            fence = max(fence, accepted[0])
        if leader_epoch < fence:
            logger.warning("group %s: refusing a commit of %s-%d at leader epoch %d: its progress was committed at "
                           "leader epoch %d (a deposed leader's delay mover; FENCED_LEADER_EPOCH)", EPOCH_FENCED_GROUP,
                           topic, partition, leader_epoch, fence)
            return True
        self._epochs[(topic, partition)] = (leader_epoch, mover)
        return False

    async def commit_txn_offsets(
        self, group_id: str, producer_id: int, producer_epoch: int, generation_id: int, member_id: str,
        group_instance_id: str | None, offsets: dict[tuple[str, int], tuple[int, int, str | None]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """TxnOffsetCommit: validated as Kafka's validateOffsetCommit(isTransactional=true) (a
        producer with no member id and generation -1 may commit; a rebalance does not stop it),
        written as one transactional batch of the producer, and pending (``pending_txn``) until
        the transaction's marker lands on ``__consumer_offsets`` (``complete_txn``)."""
        if not group_id:
            return {key: ErrorCode.invalid_group_id for key in offsets}
        error = ErrorCode.none
        if generation_id >= 0 or member_id or group_instance_id is not None:
            error, _ = self.validate_offset_commit(group_id, generation_id, member_id, group_instance_id)
            if error is ErrorCode.rebalance_in_progress:
                error = ErrorCode.none
        if error is not ErrorCode.none:
            return {key: error for key in offsets}
        timestamp_ms = wall_clock_ms()
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        accepted: list[tuple[str, int]] = []
        for (topic, partition), (offset, leader_epoch, metadata) in offsets.items():
            metadata = metadata or ""
            if len(metadata.encode()) > self.settings.offset_metadata_max_bytes:
                results[(topic, partition)] = ErrorCode.offset_metadata_too_large
                continue
            value = encode_offset_value(CommittedOffset(offset, leader_epoch, metadata, timestamp_ms).to_value())
            records.append((encode_offset_key(OffsetKey(group_id, topic, partition)), value))
            accepted.append((topic, partition))
        if not records:
            return results
        try:
            base_offset = await self.log.write(records, producer_id=producer_id, producer_epoch=producer_epoch)
        except Exception as e:  # noqa: BLE001 - the commit is not acknowledged
            logger.warning("group %s: cannot store the transactional offsets of producer %d: %s", group_id,
                           producer_id, e)
            for key in accepted:
                results[key] = write_error(e)
            return results
        if not self.registry.known(group_id):
            self.registry.groups[group_id] = ClassicGroup(group_id)
        self.transactional_groups.add(group_id)
        for i, ((topic, partition), (_, value)) in enumerate(zip(accepted, records)):
            if not self._tombstoned_since(topic, base_offset + i):
                self.pending_txn.add(producer_id, group_id, topic, partition, value, base_offset + i)
            results[(topic, partition)] = ErrorCode.none
        return results

    def complete_txn(self, producer_id: int, committed: bool) -> int:
        """A COMMIT/ABORT marker of ``producer_id`` is durable in ``__consumer_offsets``: its
        pending offsets become committed (or are dropped); how many were applied."""
        applied = self.pending_txn.complete(producer_id, committed)
        for pending in applied:
            self.apply_committed(pending.group_id, pending.topic, pending.partition,
                                 CommittedOffset.from_value(decode_offset_value(pending.value), pending.record_offset))
        return len(applied)

    def apply_committed(self, group_id: str, topic: str, partition: int, committed: CommittedOffset) -> bool:
        """Keep ``committed`` unless the partition's current offset was written after it (Kafka's
        OffsetMetadataManager: "we always keep the most recent committed offset" by record offset,
        so a plain OffsetCommit between a TxnOffsetCommit and its COMMIT marker stays, and
        replaying the log brings back what was committed)."""
        current = self.committed.get(group_id, topic, partition)
        if current is not None and current.record_offset > committed.record_offset >= 0:
            return False
        self.committed.put(group_id, topic, partition, committed)
        return True

    def unstable(self, group_id: str, topic: str, partition: int) -> bool:
        """Whether a commit of the partition is being written, or a transaction holds one
        (OffsetFetch with ``require_stable`` answers UNSTABLE_OFFSET_COMMIT)."""
        return (group_id, topic, partition) in self._in_flight or self.pending_txn.has_pending(group_id, topic, partition)

    def validate_offset_fetch(self, group_id: str, member_id: str | None, member_epoch: int) -> ErrorCode:
        """OffsetFetch v9+ names the member of a consumer-protocol group: check its epoch."""
        consumer_group = self.registry.consumer_groups.get(group_id)
        if consumer_group is None:
            return ErrorCode.none
        return self.consumer.validate_offset_fetch(consumer_group, member_id, member_epoch)

    def fetch_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None) -> list[tuple[str, int, CommittedOffset | None]]:
        """Committed offsets of the given partitions (None: every partition the group has committed)."""
        committed = self.committed.group_offsets(group_id)
        if partitions is None:
            return [(t, p, c) for (t, p), c in sorted(committed.items())]
        return [(t, p, committed.get((t, p))) for t, p in partitions]

    async def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]]) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """OffsetDelete: forget offsets of topics the group no longer subscribes to."""
        consumer_group = self.registry.consumer_groups.get(group_id)
        group = self.registry.groups.get(group_id)
        subscribed: set[str] = set()
        if consumer_group is not None:
            if consumer_group.members:
                subscribed = set(consumer_group.subscription_metadata)
                for member in consumer_group.members.values():
                    subscribed.update(member.subscribed_topic_names)
        elif group is None or group.state == DEAD:
            return ErrorCode.group_id_not_found, {}
        elif group.state != EMPTY:
            topics = group.subscribed_topics()
            if topics is None:
                return ErrorCode.non_empty_group, {}
            subscribed = topics
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        for topic, partition in partitions:
            if topic in subscribed:
                results[(topic, partition)] = ErrorCode.group_subscribed_to_topic
                continue
            results[(topic, partition)] = ErrorCode.none
            if self.committed.get(group_id, topic, partition) is not None:
                records.append((encode_offset_key(OffsetKey(group_id, topic, partition)), None))
        if records:
            await self.log.write(records)
            for topic, partition in partitions:
                if results[(topic, partition)] is ErrorCode.none:
                    self.committed.remove(group_id, topic, partition)
        return ErrorCode.none, results

    async def remove_topic(self, topic: str) -> tuple[int, int]:
        """The topic was deleted (Kafka's onPartitionsDeleted): a tombstone for each group's
        committed or pending transactional offset of its partitions goes to ``__consumer_offsets``,
        then they are forgotten here (a commit written after a tombstone stays: the topic created
        again). Returns how many (groups, partitions) lost an offset. Raises what the write raises;
        what was not written stays."""
        self._epochs = {key: value for key, value in self._epochs.items() if key[0] != topic}
        keys = sorted({(group_id, partition) for group_id, partition, _ in self.committed.of_topic(topic)}
                      | self.pending_txn.of_topic(topic))
        for start in range(0, len(keys), TOMBSTONES_PER_WRITE):
            chunk = keys[start:start + TOMBSTONES_PER_WRITE]
            base = await self.log.write([(encode_offset_key(OffsetKey(group_id, topic, partition)), None)
                                         for group_id, partition in chunk])
            if base is not None and any(key[1] == topic for key in self._in_flight):
                self._tombstoned[topic] = base + len(chunk)
            for i, (group_id, partition) in enumerate(chunk):
                current = self.committed.get(group_id, topic, partition)
                if current is not None and (base is None or current.record_offset < base + i):
                    self.committed.remove(group_id, topic, partition)
            self.pending_txn.drop({(group_id, topic, partition) for group_id, partition in chunk})
        return len({group_id for group_id, _ in keys}), len(keys)

    def is_transactional(self, group_id: str) -> bool:
        """Whether the group commits inside transactions (an exactly-once, read_committed
        consumer: its lag counts to the last stable offset)."""
        return group_id in self.transactional_groups or self.pending_txn.has_pending(group_id)

    def lag(self, group_id: str, log_end_offset) -> list[PartitionLag]:
        """Per-partition lag of a group; ``log_end_offset(topic, partition)`` gives None for a missing log."""
        return compute_lag(self.committed.group_offsets(group_id), log_end_offset)
