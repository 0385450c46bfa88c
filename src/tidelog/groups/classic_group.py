"""A group of the classic consumer group protocol, modelled on Kafka 4.0's ClassicGroup.

A group moves through five states::

    Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
      ^                  ^     |                                              | leader's SyncGroup
      |                  |     +-- no member left --> Empty                   v
      |                  +--------------- member joins / leaves / fails --- Stable
    Dead: deleted (DeleteGroups, or expired with no offsets left)

``ClassicGroup`` holds the members, the generation, the selected protocol and the timer
handles of one group; ``Member`` one member with the futures its parked JoinGroup and
SyncGroup requests await. What moves a group between states (JoinGroup, SyncGroup,
Heartbeat, LeaveGroup and their timers) is groups/classic_protocol.py.
Not thread-safe; the broker's event loop owns every group.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from tidelog.clock import wall_clock_ms
from tidelog.groups.records import GroupValue, MemberValue
from tidelog.session_timer import SessionTimer
from tidelog.protocol.consumer_protocol import subscription_topics
from tidelog.protocol.errors import ErrorCode

logger = logging.getLogger(__name__)

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"
STATES = (EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE, DEAD)

_VALID_PREVIOUS = {
    PREPARING_REBALANCE: (STABLE, COMPLETING_REBALANCE, EMPTY),
    COMPLETING_REBALANCE: (PREPARING_REBALANCE,),
    STABLE: (COMPLETING_REBALANCE,),
    EMPTY: (PREPARING_REBALANCE,),
    DEAD: STATES,
}

GROUP_TYPE_CLASSIC = "classic"
CONSUMER_PROTOCOL_TYPE = "consumer"
UNKNOWN_MEMBER_ID = ""
UNKNOWN_GENERATION = -1


@dataclass
class JoinResult:
    error: ErrorCode
    member_id: str = UNKNOWN_MEMBER_ID
    generation_id: int = UNKNOWN_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    skip_assignment: bool = False
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (member id, instance id, metadata)


@dataclass
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    members: list[MemberDescription]


class Member:
    """One member of a classic group."""

    def __init__(
        self, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
        rebalance_timeout_ms: int, session_timeout_ms: int, protocol_type: str, protocols: list[tuple[str, bytes]],
    ) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols
        self.assignment = b""
        self.join_future: asyncio.Future | None = None
        self.sync_future: asyncio.Future | None = None
        self.join_version = 0
        self.heartbeat_timer: SessionTimer | None = None
        self.is_new = True

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def awaiting_join(self) -> bool:
        return self.join_future is not None and not self.join_future.done()

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_future is not None and not self.sync_future.done()

    def metadata(self, protocol_name: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol_name:
                return metadata
        return b""

    def same_protocols(self, protocols: list[tuple[str, bytes]]) -> bool:
        return [(n, bytes(m)) for n, m in self.protocols] == [(n, bytes(m)) for n, m in protocols]

    def complete_join(self, result: JoinResult) -> None:
        if self.join_future is not None and not self.join_future.done():
            self.join_future.set_result(result)
        self.join_future = None

    def complete_sync(self, result: SyncResult) -> None:
        if self.sync_future is not None and not self.sync_future.done():
            self.sync_future.set_result(result)
        self.sync_future = None

    def cancel_heartbeat(self) -> None:
        if self.heartbeat_timer is not None:
            self.heartbeat_timer.cancel()
            self.heartbeat_timer = None


class ClassicGroup:
    """The state of one group: members, generation, selected protocol and timers."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.state = EMPTY
        self.state_timestamp_ms = wall_clock_ms()
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        self.pending_members: dict[str, SessionTimer | None] = {}  # KIP-394 ids not yet joined
        self.pending_sync: set[str] = set()
        self.new_member_added = False
        self.join_timer: SessionTimer | None = None
        self.sync_timer: SessionTimer | None = None
        self.initial_delay_remaining_ms: int | None = None  # set while the first rebalance is delayed

    @classmethod
    def from_value(cls, group_id: str, value: GroupValue) -> "ClassicGroup":
        """The group a ``GroupKey`` record describes (loaded members are Stable; their timers are not started)."""
        group = cls(group_id)
        group.protocol_type = value.protocol_type or None
        group.generation_id = value.generation_id
        group.protocol_name = value.protocol_name
        group.leader_id = value.leader_id
        if value.state_timestamp_ms >= 0:
            group.state_timestamp_ms = value.state_timestamp_ms
        for mv in value.members:
            member = Member(mv.member_id, mv.group_instance_id, mv.client_id, mv.client_host, mv.rebalance_timeout_ms,
                            mv.session_timeout_ms, group.protocol_type or "", [(value.protocol_name or "", mv.subscription)])
            member.assignment = mv.assignment
            member.is_new = False
            group.members[member.member_id] = member
            if member.is_static:
                group.static_members[member.group_instance_id] = member.member_id
        if group.members:
            group.state = STABLE
        return group

    def cancel_timers(self) -> None:
        for member in self.members.values():
            member.cancel_heartbeat()
        for handle in self.pending_members.values():
            if handle is not None:
                handle.cancel()
        for handle in (self.join_timer, self.sync_timer):
            if handle is not None:
                handle.cancel()
        self.join_timer = self.sync_timer = None

    def transition(self, state: str) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise AssertionError(f"group {self.group_id}: illegal transition {self.state} -> {state}")
        logger.debug("group %s: %s -> %s", self.group_id, self.state, state)
        self.state = state
        self.state_timestamp_ms = wall_clock_ms()

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def all_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def supported_protocols(self, excluding: str | None = None) -> set[str] | None:
        """Protocol names every member (but ``excluding``) supports; None when there is no such member."""
        names: set[str] | None = None
        for member in self.members.values():
            if member.member_id == excluding:
                continue
            mine = {name for name, _ in member.protocols}
            names = mine if names is None else names & mine
        return names

    def supports_protocols(self, protocol_type: str, protocols: list[tuple[str, bytes]], member_id: str | None = None) -> bool:
        if not protocol_type or not protocols:
            return False
        if self.state == EMPTY or not self.members:
            return True
        if self.protocol_type is not None and protocol_type != self.protocol_type:
            return False
        common = self.supported_protocols(excluding=member_id)
        return common is None or any(name in common for name, _ in protocols)

    def select_protocol(self) -> str:
        """Each member votes for its most preferred protocol that every member supports."""
        candidates = self.supported_protocols() or set()
        votes: dict[str, int] = {}
        order: list[str] = []
        for member in self.members.values():
            for name, _ in member.protocols:
                if name in candidates:
                    if name not in votes:
                        order.append(name)
                    votes[name] = votes.get(name, 0) + 1
                    break
        if not votes:
            raise AssertionError(f"group {self.group_id}: no protocol supported by every member")
        return max(order, key=lambda name: votes[name])

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to, from the consumer protocol metadata; None if unknown."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            parsed = subscription_topics(member.metadata(self.protocol_name))
            if parsed is None:
                return None
            topics.update(parsed)
        return topics

    def describe(self) -> GroupDescription:
        stable = self.state == STABLE
        members = [
            MemberDescription(
                m.member_id, m.group_instance_id, m.client_id, m.client_host,
                m.metadata(self.protocol_name) if stable else b"", m.assignment if stable else b"",
            )
            for m in self.members.values()
        ]
        return GroupDescription(
            self.group_id, self.state, self.protocol_type or "", (self.protocol_name or "") if stable else "", members
        )

    def to_value(self) -> GroupValue:
        return GroupValue(
            self.protocol_type or "", self.generation_id, self.protocol_name, self.leader_id, self.state_timestamp_ms,
            [
                MemberValue(m.member_id, m.group_instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                            m.session_timeout_ms, m.metadata(self.protocol_name), m.assignment)
                for m in self.members.values()
            ],
        )
