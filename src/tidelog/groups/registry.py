"""Every group the coordinator holds, by id, and their committed offsets.

A group id names a classic group (``groups``) or a consumer-protocol group
(``consumer_groups``), never both: an empty group of one type becomes the other when a member
of the other protocol joins, keeping its committed offsets (``drop_*``); a group deleted by
DeleteGroups or by offset expiry goes with its offsets (``remove_*``). Group and offset records
go to ``__consumer_offsets`` through a ``GroupLog``; the in-memory state changes only once they
are durable, except for the tombstone of a group changing type, written in the background
(the new group's first write comes after it on the same partition).
Not thread-safe; the broker's event loop owns it.
"""

from __future__ import annotations

import logging
from typing import Iterator, Protocol

from tidelog.groups.classic_group import DEAD, ClassicGroup
from tidelog.groups.consumer_group import ConsumerGroup
from tidelog.groups.offsets import OffsetStore
from tidelog.groups.records import (
    ConsumerGroupKey,
    GroupKey,
    OffsetKey,
    encode_consumer_group_key,
    encode_group_key,
    encode_offset_key,
)
from tidelog.groups.timers import GroupTimers
from tidelog.protocol.errors import ErrorCode, KafkaError

logger = logging.getLogger(__name__)


class GroupLog(Protocol):
    """Where the coordinator persists its records (the ``__consumer_offsets`` topic)."""

    async def open(self) -> None:
        """Make the log ready (create it on first start)."""

    async def write(self, records: list[tuple[bytes, bytes | None]], producer_id: int = -1,
                    producer_epoch: int = -1) -> int:
        """Append the (key, value) records (a transactional batch of ``producer_id`` if given)
        and return their first offset once they are durable."""

    def replay(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """Every record (its offset in the log, key, value) from the start of the log, in order."""


def write_error(e: Exception) -> ErrorCode:
    """The error a group request answers when its ``__consumer_offsets`` write failed."""
    return e.error_code if isinstance(e, KafkaError) else ErrorCode.coordinator_not_available


# Failed writes of a coordinator moving away (NOT_COORDINATOR: the client looks the new one up,
# as with Kafka) or waiting for its ISR (retriable) are routine in a failover, not errors.
_WRITE_FAILURE_LEVELS = {ErrorCode.not_coordinator: logging.INFO, ErrorCode.coordinator_load_in_progress: logging.INFO,
                         ErrorCode.coordinator_not_available: logging.WARNING,
                         ErrorCode.request_timed_out: logging.WARNING}


def write_failure_level(e: Exception) -> int:
    """The level to log a failed ``__consumer_offsets`` write at: INFO when this broker stopped
    coordinating, WARNING when the ISR did not take it (yet), ERROR for anything else."""
    return _WRITE_FAILURE_LEVELS.get(write_error(e), logging.ERROR) if isinstance(e, KafkaError) else logging.ERROR


class GroupRegistry:
    """Classic and consumer-protocol groups by id, and the committed offsets of both."""

    def __init__(self, log: GroupLog, timers: GroupTimers) -> None:
        self.log = log
        self.timers = timers
        self.groups: dict[str, ClassicGroup] = {}
        self.consumer_groups: dict[str, ConsumerGroup] = {}  # a group id is in one of the two
        self.committed = OffsetStore()

    def known(self, group_id: str) -> bool:
        return group_id in self.groups or group_id in self.consumer_groups

    def drop_classic_group(self, group: ClassicGroup) -> None:
        """Forget an empty classic group (its offsets stay) so a consumer group can take the id."""
        group.cancel_timers()
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        if group.protocol_type is not None or group.generation_id:
            self.timers.spawn(self.log.write([(encode_group_key(GroupKey(group.group_id)), None)]))

    def drop_consumer_group(self, group: ConsumerGroup) -> None:
        """Forget an empty consumer group (its offsets stay) so a classic group can take the id."""
        group.cancel_timers()
        group.deleted = True
        if self.consumer_groups.get(group.group_id) is group:
            del self.consumer_groups[group.group_id]
        self.timers.spawn(self.log.write([(encode_consumer_group_key(ConsumerGroupKey(group.group_id)), None)]))

    def tombstones(self, group: ClassicGroup | ConsumerGroup) -> list[tuple[bytes, bytes | None]]:
        """The records that delete a group and every offset it committed."""
        records: list[tuple[bytes, bytes | None]] = [
            (encode_offset_key(OffsetKey(group.group_id, topic, partition)), None)
            for topic, partition in self.committed.group_offsets(group.group_id)
        ]
        if isinstance(group, ConsumerGroup):
            records.append((encode_consumer_group_key(ConsumerGroupKey(group.group_id)), None))
        else:
            records.append((encode_group_key(GroupKey(group.group_id)), None))
        return records

    def remove_classic_group(self, group: ClassicGroup) -> None:
        """The group's tombstones are durable: it is Dead, and its offsets are gone."""
        group.cancel_timers()
        group.transition(DEAD)
        self.committed.drop_group(group.group_id)
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        logger.info("group %s deleted", group.group_id)

    def remove_consumer_group(self, group: ConsumerGroup) -> None:
        """The group's tombstones are durable: it and its offsets are gone."""
        group.cancel_timers()
        group.deleted = True
        self.committed.drop_group(group.group_id)
        if self.consumer_groups.get(group.group_id) is group:
            del self.consumer_groups[group.group_id]
        logger.info("consumer group %s deleted", group.group_id)
