"""Expiry of committed offsets (Kafka's ``offsets.retention.minutes``), checked every
``offsets.retention.check.interval.ms``.

Only groups without members expire offsets: a classic group from when it became Empty (or, for
groups without a protocol, ``assign()`` consumers, from each offset's commit), a
consumer-protocol group from when its last member left; an offset committed with an explicit
retention (OffsetCommit v2-v4) expires at its own time (the rule is ``OffsetStore.expired``).
The tombstones are written to ``__consumer_offsets`` first; a group left with no offset is
removed with them. Times are wall-clock milliseconds, as stored in the records.
Not thread-safe; the broker's event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging

from tidelog.clock import wall_clock_ms
from tidelog.groups.classic_group import EMPTY, ClassicGroup
from tidelog.groups.consumer_group import ConsumerGroup
from tidelog.groups.records import ConsumerGroupKey, GroupKey, OffsetKey, encode_consumer_group_key, encode_group_key, encode_offset_key
from tidelog.groups.registry import GroupLog, GroupRegistry
from tidelog.groups.settings import GroupSettings
from tidelog.groups.timers import GroupTimers

logger = logging.getLogger(__name__)


class OffsetExpiry:
    """The periodic expiry check and the expiry itself."""

    def __init__(self, settings: GroupSettings, registry: GroupRegistry, timers: GroupTimers, log: GroupLog) -> None:
        self.settings = settings
        self.registry = registry
        self.committed = registry.committed
        self.timers = timers
        self.log = log
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = self.timers.call_later(self.settings.offsets_retention_check_interval_ms, self._on_timer)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self.timers.spawn(self.expire_offsets())
        self.start()

    async def expire_offsets(self, at_ms: int | None = None) -> int:
        """Delete expired offsets of empty groups (and the groups left with none); returns how many."""
        at_ms = wall_clock_ms() if at_ms is None else at_ms
        records: list[tuple[bytes, bytes | None]] = []
        expired: list[tuple[str, tuple[str, int]]] = []
        dead: list[ClassicGroup] = []
        for group in list(self.registry.groups.values()):
            if group.state != EMPTY:
                continue
            base = group.state_timestamp_ms if group.protocol_type else None
            keys = self.committed.expired(group.group_id, at_ms, self.settings.offsets_retention_ms, base)
            for topic, partition in keys:
                records.append((encode_offset_key(OffsetKey(group.group_id, topic, partition)), None))
                expired.append((group.group_id, (topic, partition)))
            if len(keys) == len(self.committed.group_offsets(group.group_id)):
                dead.append(group)
                records.append((encode_group_key(GroupKey(group.group_id)), None))
        consumer_dead: list[ConsumerGroup] = []
        for consumer_group in list(self.registry.consumer_groups.values()):
            if consumer_group.members:
                continue
            keys = self.committed.expired(consumer_group.group_id, at_ms, self.settings.offsets_retention_ms,
                                        consumer_group.state_timestamp_ms)
            for topic, partition in keys:
                records.append((encode_offset_key(OffsetKey(consumer_group.group_id, topic, partition)), None))
                expired.append((consumer_group.group_id, (topic, partition)))
            if len(keys) == len(self.committed.group_offsets(consumer_group.group_id)):
                consumer_dead.append(consumer_group)
                records.append((encode_consumer_group_key(ConsumerGroupKey(consumer_group.group_id)), None))
        if not records:
            return 0
        await self.log.write(records)
        for group_id, (topic, partition) in expired:
            self.committed.remove(group_id, topic, partition)
        for group in dead:
            if group.state == EMPTY and not self.committed.has_offsets(group.group_id):
                self.registry.remove_classic_group(group)
        for consumer_group in consumer_dead:
            if not consumer_group.members and not self.committed.has_offsets(consumer_group.group_id):
                self.registry.remove_consumer_group(consumer_group)
        if expired:
            logger.info("expired %d committed offsets; removed %d empty groups", len(expired), len(dead))
        return len(expired)
