"""The group coordinator: every consumer group of this broker, built from ``__consumer_offsets``.

It composes the pieces and owns their lifecycle:

- ``registry`` (groups/registry.py): the groups by id, classic or consumer-protocol, and their
  committed offsets;
- ``classic`` (groups/classic_protocol.py): JoinGroup, SyncGroup, Heartbeat, LeaveGroup;
- ``consumer`` (groups/consumer_protocol.py): ConsumerGroupHeartbeat (KIP-848);
- ``offsets`` (groups/offset_manager.py): OffsetCommit, OffsetFetch, OffsetDelete, lag;
- ``admin`` (groups/admin.py): ListGroups, DescribeGroups, DeleteGroups;
- ``expiry`` (groups/expiry.py): expiry of committed offsets;
- ``timers`` (groups/timers.py): the timers and background writes of all of them.

Every change is written to ``__consumer_offsets`` through a ``GroupLog`` and applied in memory
once durable; ``start`` replays the log (the last record per key wins) to rebuild the groups.
``stop`` answers the requests still parked with NOT_COORDINATOR. ``on_topic_deleted`` removes a
deleted topic's offsets from every group (tombstones).
Not thread-safe; everything runs on the broker's event loop.
"""

from __future__ import annotations

import logging
import struct
from typing import Callable

from tidelog.groups.admin import GroupAdmin
from tidelog.groups.classic_group import ClassicGroup
from tidelog.groups.classic_protocol import ClassicGroupProtocol
from tidelog.groups.consumer_group import decode_group_snapshot
from tidelog.groups.consumer_protocol import ConsumerGroupProtocol
from tidelog.groups.expiry import OffsetExpiry
from tidelog.groups.offset_manager import OffsetManager
from tidelog.groups.offsets import CommittedOffset
from tidelog.groups.records import (
    ConsumerGroupKey,
    GroupKey,
    GroupValue,
    OffsetKey,
    decode_consumer_group_value,
    decode_group_value,
    decode_key,
    decode_offset_value,
)
from tidelog.groups.registry import GroupLog, GroupRegistry
from tidelog.groups.settings import GroupSettings
from tidelog.groups.timers import GroupTimers

__all__ = ["GroupCoordinator", "GroupSettings"]

logger = logging.getLogger(__name__)


class GroupCoordinator:
    """Every group of this broker, their committed offsets, and the records that persist them."""

    def __init__(self, settings: GroupSettings, log: GroupLog) -> None:
        self.settings = settings
        self.log = log
        self.timers = GroupTimers()
        self.registry = GroupRegistry(log, self.timers)
        self.classic = ClassicGroupProtocol(settings, self.registry, self.timers, log)
        self.consumer = ConsumerGroupProtocol(settings, self.registry, self.timers, log)
        self.offsets = OffsetManager(settings, self.registry, self.classic, self.consumer, log)
        self.admin = GroupAdmin(self.registry, log)
        self.expiry = OffsetExpiry(settings, self.registry, self.timers, log)
        self.loaded = False
        self._deleted_while_loading: dict[str, Callable[[int], object] | None] = {}

    async def start(self) -> None:
        """Open the log, load every group and offset from it, and start the expiry timer."""
        await self.log.open()
        self.load()
        self.expiry.start()
        for topic, counted in self._deleted_while_loading.items():
            self.timers.spawn(self._remove_topic(topic, counted))
        self._deleted_while_loading = {}

    def on_topic_deleted(self, topic: str, counted: Callable[[int], object] | None = None) -> None:
        """A topic was deleted (the metadata store says so): every group's offsets of it go, in the
        background (Kafka's onPartitionsDeleted); a deletion told while loading waits for the load.
        ``counted(n)`` is told how many offsets (group and partition) went."""
        if self.loaded:
            self.timers.spawn(self._remove_topic(topic, counted))
        else:
            self._deleted_while_loading[topic] = counted

    async def _remove_topic(self, topic: str, counted: Callable[[int], object] | None) -> None:
        try:
            groups, partitions = await self.offsets.remove_topic(topic)
        except Exception as e:  # noqa: BLE001 - not the coordinator any more, or the write failed
            logger.warning("topic %s deleted: cannot remove its committed offsets: %s", topic, e)
            return
        if counted is not None and partitions:
            counted(partitions)
        logger.info("topic %s deleted: removed the committed offsets of %d groups (%d partitions)", topic, groups,
                    partitions)

    def load(self) -> None:
        """Rebuild groups and offsets from the log (the last record per key wins)."""
        registry, committed = self.registry, self.registry.committed
        group_values: dict[str, GroupValue | None] = {}
        consumer_values: dict[str, bytes | None] = {}
        count = 0
        # where each offset key's last tombstone is: a transaction's offsets written before it and
        # committed after it stay deleted (Kafka drops a key's pending offsets on its tombstone)
        tombstoned: dict[OffsetKey, int] = {}
        for record_offset, key_bytes, value_bytes in self.log.replay():
            if key_bytes is None:
                continue
            try:
                key = decode_key(key_bytes)
                if isinstance(key, OffsetKey):
                    if value_bytes is None:
                        committed.remove(key.group_id, key.topic, key.partition)
                        tombstoned[key] = record_offset
                    elif record_offset < tombstoned.get(key, -1):
                        pass
                    else:
                        self.offsets.apply_committed(key.group_id, key.topic, key.partition,
                                                     CommittedOffset.from_value(decode_offset_value(value_bytes), record_offset))
                elif isinstance(key, GroupKey):
                    group_values[key.group_id] = decode_group_value(value_bytes) if value_bytes is not None else None
                elif isinstance(key, ConsumerGroupKey):
                    consumer_values[key.group_id] = value_bytes
            except (ValueError, UnicodeDecodeError, struct.error) as e:
                logger.warning("skipping an unreadable __consumer_offsets record: %s", e)
            count += 1
        for producer_id, records in getattr(self.log, "open_transactions", {}).items():
            for record_offset, key_bytes, value_bytes in records:  # TxnOffsetCommits awaiting their marker
                key = decode_key(key_bytes) if key_bytes is not None else None
                if isinstance(key, OffsetKey) and value_bytes is not None and record_offset > tombstoned.get(key, -1):
                    self.offsets.transactional_groups.add(key.group_id)
                    self.offsets.pending_txn.add(producer_id, key.group_id, key.topic, key.partition, value_bytes,
                                                 record_offset)
        for group_id, value_bytes in consumer_values.items():
            if value_bytes is None:
                continue
            try:
                consumer_group = decode_group_snapshot(group_id, decode_consumer_group_value(value_bytes))
            except (ValueError, KeyError, TypeError) as e:
                logger.warning("skipping unreadable consumer group %s: %s", group_id, e)
                continue
            registry.consumer_groups[group_id] = consumer_group
            self.consumer.start_timers(consumer_group)
        for group_id, value in group_values.items():
            if value is not None and group_id not in registry.consumer_groups:
                group = registry.groups[group_id] = ClassicGroup.from_value(group_id, value)
                self.classic.start_timers(group)
        for group_id in committed.group_ids():
            if not registry.known(group_id):
                registry.groups[group_id] = ClassicGroup(group_id)
        self.loaded = True
        logger.info("loaded %d groups and %d records from __consumer_offsets", len(registry.groups), count)

    def stop(self) -> None:
        """Stop every timer and background write; parked joins and syncs get NOT_COORDINATOR."""
        self.expiry.stop()
        self.classic.stop()
        for consumer_group in self.registry.consumer_groups.values():
            consumer_group.cancel_timers()
        self.timers.stop()
