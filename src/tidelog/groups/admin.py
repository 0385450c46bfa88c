"""ListGroups, DescribeGroups and DeleteGroups over both group types of the coordinator.

Lists name each group's type (``classic`` or ``consumer``, KIP-848's ListGroups v5 filter) and
state; DescribeGroups describes classic groups only (consumer-protocol groups are described by
ConsumerGroupDescribe). DeleteGroups deletes empty groups with their committed offsets: the
tombstones are written to ``__consumer_offsets`` first, then the groups are forgotten.
Not thread-safe; the broker's event loop owns it.
"""

from __future__ import annotations

from typing import Iterable

from tidelog.groups.classic_group import DEAD, EMPTY, GROUP_TYPE_CLASSIC, ClassicGroup, GroupDescription
from tidelog.groups.consumer_group import GROUP_TYPE_CONSUMER, PROTOCOL_TYPE_CONSUMER, ConsumerGroup
from tidelog.groups.registry import GroupLog, GroupRegistry
from tidelog.protocol.errors import ErrorCode


class GroupAdmin:
    """The administrative group APIs: list, describe, delete."""

    def __init__(self, registry: GroupRegistry, log: GroupLog) -> None:
        self.registry = registry
        self.log = log

    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()) -> list[tuple[str, str, str, str]]:
        """(group id, protocol type, state, group type) of the groups matching the filters."""
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        listed = []
        if not wanted_types or GROUP_TYPE_CLASSIC in wanted_types:
            listed += [
                (g.group_id, g.protocol_type or "", g.state, GROUP_TYPE_CLASSIC)
                for g in self.registry.groups.values()
                if g.state != DEAD and (not wanted_states or g.state.lower() in wanted_states)
            ]
        if not wanted_types or GROUP_TYPE_CONSUMER in wanted_types:
            listed += [
                (g.group_id, PROTOCOL_TYPE_CONSUMER, g.state, GROUP_TYPE_CONSUMER)
                for g in self.registry.consumer_groups.values()
                if not wanted_states or g.state.lower() in wanted_states
            ]
        return listed

    def describe_group(self, group_id: str) -> GroupDescription | None:
        """A classic group's description (DescribeGroups); None for unknown and consumer-protocol groups."""
        group = self.registry.groups.get(group_id)
        return group.describe() if group is not None and group.state != DEAD else None

    async def delete_groups(self, group_ids: list[str]) -> dict[str, ErrorCode]:
        results: dict[str, ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        deletable: list[ClassicGroup] = []
        consumer_deletable: list[ConsumerGroup] = []
        for group_id in group_ids:
            group = self.registry.groups.get(group_id)
            consumer_group = self.registry.consumer_groups.get(group_id)
            if not group_id:
                results[group_id] = ErrorCode.invalid_group_id
            elif consumer_group is not None:
                if consumer_group.members:
                    results[group_id] = ErrorCode.non_empty_group
                else:
                    consumer_deletable.append(consumer_group)
                    records += self.registry.tombstones(consumer_group)
                    results[group_id] = ErrorCode.none
            elif group is None or group.state == DEAD:
                results[group_id] = ErrorCode.group_id_not_found
            elif group.state != EMPTY:
                results[group_id] = ErrorCode.non_empty_group
            else:
                deletable.append(group)
                records += self.registry.tombstones(group)
                results[group_id] = ErrorCode.none
        if records:
            await self.log.write(records)
        for group in deletable:
            self.registry.remove_classic_group(group)
        for consumer_group in consumer_deletable:
            self.registry.remove_consumer_group(consumer_group)
        return results
