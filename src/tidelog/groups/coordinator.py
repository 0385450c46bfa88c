"""The group coordinator for the classic consumer group protocol, modelled on Kafka 4.0's ClassicGroup.

A group moves through five states::

    Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
      ^                  ^     |                                              | leader's SyncGroup
      |                  |     +-- no member left --> Empty                   v
      |                  +--------------- member joins / leaves / fails --- Stable
    Dead: deleted (DeleteGroups, or expired with no offsets left)

JoinGroup requests wait (their handlers await a future) until the join phase completes: when
every known member has rejoined, or when the rebalance timeout (the largest of the members')
fires. A new group's first rebalance waits ``group.initial.rebalance.delay.ms`` more, extended
by each new member up to the rebalance timeout, so consumers starting together land in one
generation. Session timeouts, the join phase, the initial delay and the sync phase are asyncio
timers (``loop.call_later``) reset by each heartbeat; nothing polls.

Members: JoinGroup v4+ without a member id gets MEMBER_ID_REQUIRED and a fresh id it must
join with (KIP-394); until then it is a pending member, expired after its session timeout.
Static members (``group.instance.id``, KIP-345) keep their instance id across restarts: a
rejoin with a new member id replaces the old one (whose pending requests get
FENCED_INSTANCE_ID), and in a Stable group without a protocol change it gets the current
assignment back without a rebalance. A static member that stops heartbeating is removed after
its session timeout; a dynamic one that misses a rebalance is dropped at the end of the join
phase.

Group metadata (after each completed rebalance) and committed offsets are written to
``__consumer_offsets`` through a ``GroupLog`` and applied in memory once durable.
Not thread-safe; everything runs on the broker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

from tidelog.groups.assignors import parse_assignor_list
from tidelog.groups.consumer_group import GROUP_TYPE_CONSUMER, PROTOCOL_TYPE_CONSUMER, ConsumerGroup
from tidelog.groups.consumer_protocol import ConsumerGroupProtocol
from tidelog.groups.offsets import CommittedOffset, OffsetStore, PartitionLag, compute_lag
from tidelog.groups.records import (
    ConsumerGroupKey,
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    decode_consumer_group_value,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_consumer_group_key,
    encode_group_key,
    encode_group_value,
    encode_offset_key,
    encode_offset_value,
)
from tidelog.protocol.errors import ErrorCode, KafkaError

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


def now_ms() -> int:
    return int(time.time() * 1000)


def _write_error(e: Exception) -> ErrorCode:
    """The error a group request answers when its ``__consumer_offsets`` write failed."""
    return e.error_code if isinstance(e, KafkaError) else ErrorCode.coordinator_not_available


class GroupLog(Protocol):
    """Where the coordinator persists its records (the ``__consumer_offsets`` topic)."""

    async def open(self) -> None:
        """Make the log ready (create it on first start)."""

    async def write(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Append the (key, value) records and return once they are durable."""

    def replay(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every record from the start of the log, in order."""


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
        self.heartbeat_timer: asyncio.TimerHandle | None = None
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
        self.state_timestamp_ms = now_ms()
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        self.pending_members: dict[str, asyncio.TimerHandle | None] = {}  # KIP-394 ids not yet joined
        self.pending_sync: set[str] = set()
        self.new_member_added = False
        self.join_timer: asyncio.TimerHandle | None = None
        self.sync_timer: asyncio.TimerHandle | None = None
        self.initial_delay_remaining_ms: int | None = None  # set while the first rebalance is delayed

    def transition(self, state: str) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise AssertionError(f"group {self.group_id}: illegal transition {self.state} -> {state}")
        logger.debug("group %s: %s -> %s", self.group_id, self.state, state)
        self.state = state
        self.state_timestamp_ms = now_ms()

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
            parsed = parse_consumer_subscription(member.metadata(self.protocol_name))
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


def parse_consumer_subscription(metadata: bytes) -> list[str] | None:
    """Topics of a ConsumerProtocolSubscription (any version: int16 version, then the topic array)."""
    try:
        pos = 2
        (count,) = struct.unpack_from(">i", metadata, pos)
        pos += 4
        topics = []
        for _ in range(count):
            (length,) = struct.unpack_from(">h", metadata, pos)
            pos += 2
            topics.append(bytes(metadata[pos : pos + length]).decode())
            pos += length
        return topics
    except (struct.error, UnicodeDecodeError):
        return None


@dataclass
class GroupSettings:
    initial_rebalance_delay_ms: int = 3000
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1800000
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600000
    offset_metadata_max_bytes: int = 4096
    # The consumer protocol (KIP-848).
    consumer_heartbeat_interval_ms: int = 5000
    consumer_session_timeout_ms: int = 45000
    consumer_max_size: int = 2147483647
    consumer_assignors: tuple[str, ...] = ("uniform", "range")

    @classmethod
    def from_config(cls, config) -> "GroupSettings":
        values = config.values
        defaults = cls()

        def bounded(name: str, default: int) -> int:
            value = values.get(name, default)
            low = values.get(name.replace("group.consumer.", "group.consumer.min."), value)
            high = values.get(name.replace("group.consumer.", "group.consumer.max."), value)
            if not low <= value <= high:
                raise ValueError(f"{name}={value} must be between {low} and {high} "
                                 f"(group.consumer.min/max.{name[len('group.consumer.'):]})")
            return value

        heartbeat_ms = bounded("group.consumer.heartbeat.interval.ms", defaults.consumer_heartbeat_interval_ms)
        session_ms = bounded("group.consumer.session.timeout.ms", defaults.consumer_session_timeout_ms)
        if heartbeat_ms >= session_ms:
            raise ValueError("group.consumer.heartbeat.interval.ms must be less than group.consumer.session.timeout.ms")
        return cls(
            consumer_heartbeat_interval_ms=heartbeat_ms,
            consumer_session_timeout_ms=session_ms,
            consumer_max_size=values.get("group.consumer.max.size", defaults.consumer_max_size),
            consumer_assignors=tuple(parse_assignor_list(values.get("group.consumer.assignors", "uniform,range"))),
            initial_rebalance_delay_ms=values.get("group.initial.rebalance.delay.ms", defaults.initial_rebalance_delay_ms),
            min_session_timeout_ms=values.get("group.min.session.timeout.ms", defaults.min_session_timeout_ms),
            max_session_timeout_ms=values.get("group.max.session.timeout.ms", defaults.max_session_timeout_ms),
            offsets_retention_ms=values.get("offsets.retention.minutes", 10080) * 60 * 1000,
            offsets_retention_check_interval_ms=values.get(
                "offsets.retention.check.interval.ms", defaults.offsets_retention_check_interval_ms),
            offset_metadata_max_bytes=values.get("offset.metadata.max.bytes", defaults.offset_metadata_max_bytes),
        )


class GroupCoordinator:
    """Every group of this broker, their committed offsets, and the records that persist them."""

    def __init__(self, settings: GroupSettings, log: GroupLog) -> None:
        self.settings = settings
        self.log = log
        self.groups: dict[str, ClassicGroup] = {}
        self.consumer_groups: dict[str, ConsumerGroup] = {}  # a group id is in one of the two
        self.consumer = ConsumerGroupProtocol(self)
        self.offsets = OffsetStore()
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self.loaded = False

    # --- lifecycle ----------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild groups and offsets from the log (the last record per key wins)."""
        self._loop = asyncio.get_running_loop()
        group_values: dict[str, GroupValue | None] = {}
        consumer_values: dict[str, bytes | None] = {}
        count = 0
        for key_bytes, value_bytes in self.log.replay():
            if key_bytes is None:
                continue
            try:
                key = decode_key(key_bytes)
                if isinstance(key, OffsetKey):
                    if value_bytes is None:
                        self.offsets.remove(key.group_id, key.topic, key.partition)
                    else:
                        self.offsets.put(key.group_id, key.topic, key.partition,
                                         CommittedOffset.from_value(decode_offset_value(value_bytes)))
                elif isinstance(key, GroupKey):
                    group_values[key.group_id] = decode_group_value(value_bytes) if value_bytes is not None else None
                elif isinstance(key, ConsumerGroupKey):
                    consumer_values[key.group_id] = value_bytes
            except (ValueError, UnicodeDecodeError, struct.error) as e:
                logger.warning("skipping an unreadable __consumer_offsets record: %s", e)
            count += 1
        for group_id, value_bytes in consumer_values.items():
            if value_bytes is None:
                continue
            try:
                group = decode_consumer_group_value(group_id, value_bytes)
            except (ValueError, KeyError, TypeError) as e:
                logger.warning("skipping unreadable consumer group %s: %s", group_id, e)
                continue
            self.consumer_groups[group_id] = group
            self.consumer.start_timers(group)
        for group_id, value in group_values.items():
            if value is not None and group_id not in self.consumer_groups:
                self.groups[group_id] = self._group_from_value(group_id, value)
        for group_id in self.offsets.group_ids():
            if group_id not in self.groups and group_id not in self.consumer_groups:
                self.groups[group_id] = ClassicGroup(group_id)
        self.loaded = True
        logger.info("loaded %d groups and %d records from __consumer_offsets", len(self.groups), count)

    def _group_from_value(self, group_id: str, value: GroupValue) -> ClassicGroup:
        group = ClassicGroup(group_id)
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
            # Loaded members must heartbeat within their session timeout, as after a failover.
            for member in group.members.values():
                self._schedule_heartbeat(group, member, member.session_timeout_ms)
        return group

    async def start(self) -> None:
        """Open the log, load every group and offset from it, and start the expiry timer."""
        self._loop = asyncio.get_running_loop()
        await self.log.open()
        self.load()
        self._schedule_expiry()

    def stop(self) -> None:
        """Stop the timers and answer the joins and syncs still waiting NOT_COORDINATOR (this
        broker no longer coordinates: the members look the new coordinator up, as Kafka's
        group unload answers them), rather than leaving them waiting with no timer to end it."""
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        for group in self.groups.values():
            self._cancel_group_timers(group)
            for member in group.members.values():
                member.complete_join(JoinResult(ErrorCode.not_coordinator, member.member_id))
                member.complete_sync(SyncResult(ErrorCode.not_coordinator))
        for consumer_group in self.consumer_groups.values():
            self.consumer.stop_timers(consumer_group)
        for task in self._tasks:
            task.cancel()

    def _call_later(self, delay_ms: int, callback, *args) -> asyncio.TimerHandle:
        loop = self._loop or asyncio.get_running_loop()
        return loop.call_later(max(delay_ms, 0) / 1000, callback, *args)

    def _cancel_group_timers(self, group: ClassicGroup) -> None:
        for member in group.members.values():
            member.cancel_heartbeat()
        for handle in group.pending_members.values():
            if handle is not None:
                handle.cancel()
        for handle in (group.join_timer, group.sync_timer):
            if handle is not None:
                handle.cancel()
        group.join_timer = group.sync_timer = None

    # --- JoinGroup ------------------------------------------------------------------------
    async def join_group(
        self, group_id: str, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
        session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str, protocols: list[tuple[str, bytes]],
        require_known_member_id: bool = False,
    ) -> JoinResult:
        if not group_id:
            return JoinResult(ErrorCode.invalid_group_id, member_id)
        if not self.settings.min_session_timeout_ms <= session_timeout_ms <= self.settings.max_session_timeout_ms:
            return JoinResult(ErrorCode.invalid_session_timeout, member_id)
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            if consumer_group.members:
                # Kafka 4.0 could migrate classic members into it; Tidelog keeps the protocols apart.
                return JoinResult(ErrorCode.inconsistent_group_protocol, member_id)
            self.drop_consumer_group(consumer_group)  # empty: it becomes a classic group, offsets kept
        group = self.groups.get(group_id)
        if group is None:
            if member_id != UNKNOWN_MEMBER_ID:
                return JoinResult(ErrorCode.unknown_member_id, member_id)
            group = self.groups[group_id] = ClassicGroup(group_id)
        if group.state == DEAD:
            return JoinResult(ErrorCode.coordinator_not_available, member_id)
        if not group.supports_protocols(protocol_type, protocols, member_id or None):
            return JoinResult(ErrorCode.inconsistent_group_protocol, member_id)
        if member_id == UNKNOWN_MEMBER_ID:
            future = self._new_member_join(group, group_instance_id, client_id, client_host, session_timeout_ms,
                                           rebalance_timeout_ms, protocol_type, protocols, require_known_member_id)
        else:
            future = self._current_member_join(group, member_id, group_instance_id, client_id, client_host,
                                               session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)
        return await future

    def _resolved(self, result: JoinResult) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    def _new_member_join(self, group, group_instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                         protocol_type, protocols, require_known_member_id) -> asyncio.Future:
        new_member_id = f"{client_id}-{uuid.uuid4()}"
        if group_instance_id is not None:
            old_member_id = group.static_members.get(group_instance_id)
            if old_member_id is not None and old_member_id in group.members:
                return self._static_member_rejoin(group, old_member_id, new_member_id, group_instance_id, client_id,
                                                  client_host, session_timeout_ms, rebalance_timeout_ms, protocol_type,
                                                  protocols)
            return self._add_member_and_rebalance(group, new_member_id, group_instance_id, client_id, client_host,
                                                  session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)
        if require_known_member_id:
            # KIP-394: hand out the id first; the member is pending until it joins with it.
            group.pending_members[new_member_id] = self._call_later(
                session_timeout_ms, self._expire_pending_member, group, new_member_id)
            return self._resolved(JoinResult(ErrorCode.member_id_required, new_member_id))
        return self._add_member_and_rebalance(group, new_member_id, None, client_id, client_host, session_timeout_ms,
                                              rebalance_timeout_ms, protocol_type, protocols)

    def _static_member_rejoin(self, group, old_member_id, new_member_id, group_instance_id, client_id, client_host,
                              session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols) -> asyncio.Future:
        old = group.members[old_member_id]
        protocols_changed = not old.same_protocols(protocols)
        member = self._replace_static_member(group, old, new_member_id)
        member.client_id, member.client_host = client_id, client_host
        logger.info("group %s: static member %s rejoined as %s (was %s)", group.group_id, group_instance_id,
                    new_member_id, old_member_id)
        if group.state == STABLE and not protocols_changed:
            member.session_timeout_ms, member.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            self._spawn(self._persist_group(group))
            is_leader = group.is_leader(member.member_id)
            return self._resolved(JoinResult(
                ErrorCode.none, member.member_id, group.generation_id, group.protocol_type, group.protocol_name,
                group.leader_id or "", skip_assignment=is_leader,
                members=self._member_list(group) if is_leader else [],
            ))
        return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                                 f"static member {group_instance_id} rejoined")

    def _replace_static_member(self, group: ClassicGroup, old: Member, new_member_id: str) -> Member:
        """Give ``old``'s place (and assignment) to ``new_member_id``, fencing the old member's requests."""
        old.complete_join(JoinResult(ErrorCode.fenced_instance_id, old.member_id))
        old.complete_sync(SyncResult(ErrorCode.fenced_instance_id))
        old.cancel_heartbeat()
        del group.members[old.member_id]
        group.pending_sync.discard(old.member_id)
        old.member_id = new_member_id
        group.members[new_member_id] = old
        group.static_members[old.group_instance_id] = new_member_id
        if group.leader_id is not None and group.leader_id not in group.members:
            group.leader_id = new_member_id
        return old

    def _current_member_join(self, group, member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                             rebalance_timeout_ms, protocol_type, protocols) -> asyncio.Future:
        if member_id in group.pending_members:
            handle = group.pending_members.pop(member_id)
            if handle is not None:
                handle.cancel()
            return self._add_member_and_rebalance(group, member_id, group_instance_id, client_id, client_host,
                                                  session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)
        error = self._validate_member(group, member_id, group_instance_id)
        if error is not ErrorCode.none:
            return self._resolved(JoinResult(error, member_id))
        member = group.members[member_id]
        if group.state == PREPARING_REBALANCE:
            return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                                     f"member {member_id} rejoined")
        if group.state == COMPLETING_REBALANCE:
            if member.same_protocols(protocols):
                # A retried join of this generation: answer it again.
                is_leader = group.is_leader(member_id)
                return self._resolved(JoinResult(
                    ErrorCode.none, member_id, group.generation_id, group.protocol_type, group.protocol_name,
                    group.leader_id or "", members=self._member_list(group) if is_leader else [],
                ))
            return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                                     f"member {member_id} changed its protocols")
        if group.state == STABLE:
            if group.is_leader(member_id) or not member.same_protocols(protocols):
                return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms,
                                                         protocols, f"member {member_id} rejoined a stable group")
            return self._resolved(JoinResult(
                ErrorCode.none, member_id, group.generation_id, group.protocol_type, group.protocol_name,
                group.leader_id or "",
            ))
        return self._resolved(JoinResult(ErrorCode.unknown_member_id, member_id))

    def _validate_member(self, group: ClassicGroup, member_id: str, group_instance_id: str | None) -> ErrorCode:
        if group_instance_id is not None:
            known = group.static_members.get(group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.fenced_instance_id
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if group_instance_id is not None and member.group_instance_id not in (None, group_instance_id):
            return ErrorCode.fenced_instance_id
        return ErrorCode.none

    def _member_list(self, group: ClassicGroup) -> list[tuple[str, str | None, bytes]]:
        return [(m.member_id, m.group_instance_id, m.metadata(group.protocol_name)) for m in group.members.values()]

    def _add_member_and_rebalance(self, group, member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                                  rebalance_timeout_ms, protocol_type, protocols) -> asyncio.Future:
        member = Member(member_id, group_instance_id, client_id, client_host, rebalance_timeout_ms, session_timeout_ms,
                        protocol_type, list(protocols))
        member.join_future = asyncio.get_running_loop().create_future()
        future = member.join_future
        if group.state == PREPARING_REBALANCE and group.initial_delay_remaining_ms is not None:
            group.new_member_added = True
        if not group.members:
            group.protocol_type = protocol_type
        group.members[member_id] = member
        if group_instance_id is not None:
            group.static_members[group_instance_id] = member_id
        self._schedule_heartbeat(group, member, session_timeout_ms)
        self._maybe_prepare_rebalance(group, f"member {member_id} joined")
        return future

    def _update_member_and_rebalance(self, group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                     reason) -> asyncio.Future:
        if member.awaiting_join:
            # A duplicate join of the same member: the older request is answered as superseded.
            member.complete_join(JoinResult(ErrorCode.unknown_member_id, member.member_id))
        member.protocols = list(protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.join_future = asyncio.get_running_loop().create_future()
        future = member.join_future
        self._schedule_heartbeat(group, member, session_timeout_ms)
        self._maybe_prepare_rebalance(group, reason)
        return future

    def _maybe_prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.state in (STABLE, COMPLETING_REBALANCE, EMPTY):
            self._prepare_rebalance(group, reason)
        # Complete at once when every member has already joined (a group's only member
        # rejoining), as Kafka's tryCompleteElseWatch does, rather than at the rebalance timeout.
        self._try_complete_join(group)

    def _prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.state == COMPLETING_REBALANCE:
            for member in group.members.values():
                member.complete_sync(SyncResult(ErrorCode.rebalance_in_progress))
        if group.sync_timer is not None:
            group.sync_timer.cancel()
            group.sync_timer = None
        group.pending_sync.clear()
        if group.join_timer is not None:
            group.join_timer.cancel()
        rebalance_timeout_ms = group.rebalance_timeout_ms()
        if group.state == EMPTY:
            delay = self.settings.initial_rebalance_delay_ms
            group.initial_delay_remaining_ms = max(rebalance_timeout_ms - delay, 0)
            group.new_member_added = False
            group.join_timer = self._call_later(delay, self._on_initial_delay, group, delay)
        else:
            group.initial_delay_remaining_ms = None
            group.join_timer = self._call_later(rebalance_timeout_ms, self._complete_join, group)
        group.transition(PREPARING_REBALANCE)
        logger.info("group %s: preparing to rebalance (generation %d): %s", group.group_id, group.generation_id, reason)

    def _on_initial_delay(self, group: ClassicGroup, delay_ms: int) -> None:
        remaining = group.initial_delay_remaining_ms or 0
        if group.new_member_added and remaining > 0:
            # Members are still arriving: wait another delay, bounded by the rebalance timeout.
            group.new_member_added = False
            next_delay = min(delay_ms, remaining)
            group.initial_delay_remaining_ms = max(remaining - delay_ms, 0)
            group.join_timer = self._call_later(next_delay, self._on_initial_delay, group, next_delay)
            return
        self._complete_join(group)

    def _try_complete_join(self, group: ClassicGroup) -> None:
        if group.state == PREPARING_REBALANCE and group.initial_delay_remaining_ms is None and group.all_joined():
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        if group.state != PREPARING_REBALANCE:
            return
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        group.initial_delay_remaining_ms = None
        group.new_member_added = False
        for member in [m for m in group.members.values() if not m.awaiting_join and not m.is_static]:
            logger.info("group %s: removing member %s, which did not rejoin in time", group.group_id, member.member_id)
            self._remove_member(group, member)
        for member_id, handle in list(group.pending_members.items()):
            if handle is not None:
                handle.cancel()
        group.pending_members.clear()
        joined = [m for m in group.members.values() if m.awaiting_join]
        if group.members and not joined:
            # Only static members that have not rejoined: wait for them another round.
            group.join_timer = self._call_later(group.rebalance_timeout_ms(), self._complete_join, group)
            return
        if group.leader_id not in group.members or not group.members[group.leader_id].awaiting_join:
            group.leader_id = joined[0].member_id if joined else None
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.transition(EMPTY)
            logger.info("group %s: generation %d is empty", group.group_id, group.generation_id)
            self._spawn(self._persist_group(group))
            return
        group.protocol_name = group.select_protocol()
        group.transition(COMPLETING_REBALANCE)
        logger.info("group %s: generation %d with %d members, protocol %s, leader %s", group.group_id,
                    group.generation_id, len(group.members), group.protocol_name, group.leader_id)
        member_list = self._member_list(group)
        for member in list(group.members.values()):
            is_leader = group.is_leader(member.member_id)
            if member.awaiting_join:
                member.complete_join(JoinResult(
                    ErrorCode.none, member.member_id, group.generation_id, group.protocol_type, group.protocol_name,
                    group.leader_id or "", members=member_list if is_leader else [],
                ))
                member.is_new = False
                group.pending_sync.add(member.member_id)
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
        group.sync_timer = self._call_later(group.rebalance_timeout_ms(), self._on_sync_timeout, group,
                                            group.generation_id)

    def _on_sync_timeout(self, group: ClassicGroup, generation_id: int) -> None:
        group.sync_timer = None
        if generation_id != group.generation_id or group.state not in (COMPLETING_REBALANCE, STABLE):
            return
        missing = [group.members[m] for m in group.pending_sync if m in group.members]
        group.pending_sync.clear()
        if not missing:
            return
        for member in missing:
            logger.info("group %s: removing member %s, which did not sync in time", group.group_id, member.member_id)
            self._remove_member(group, member)
        self._prepare_rebalance(group, "members did not send SyncGroup in time")

    # --- SyncGroup ------------------------------------------------------------------------
    async def sync_group(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
        protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes],
    ) -> SyncResult:
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            return SyncResult(ErrorCode.unknown_member_id if group is None else ErrorCode.coordinator_not_available)
        error = self._validate_member(group, member_id, group_instance_id)
        if error is not ErrorCode.none:
            return SyncResult(error)
        if generation_id != group.generation_id:
            return SyncResult(ErrorCode.illegal_generation)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult(ErrorCode.inconsistent_group_protocol)
        if group.state == EMPTY:
            return SyncResult(ErrorCode.unknown_member_id)
        if group.state == PREPARING_REBALANCE:
            return SyncResult(ErrorCode.rebalance_in_progress)
        member = group.members[member_id]
        group.pending_sync.discard(member_id)
        self._schedule_heartbeat(group, member, member.session_timeout_ms)
        if group.state == STABLE:
            return SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment)
        # CompletingRebalance: wait for the leader's assignment.
        if member.awaiting_sync:
            member.complete_sync(SyncResult(ErrorCode.rebalance_in_progress))
        member.sync_future = asyncio.get_running_loop().create_future()
        future = member.sync_future
        if group.is_leader(member_id):
            await self._complete_sync(group, generation_id, assignments)
        return await future

    async def _complete_sync(self, group: ClassicGroup, generation_id: int, assignments: dict[str, bytes]) -> None:
        pending_assignment = {m: assignments.get(m, b"") for m in group.members}
        value = group.to_value()
        for mv in value.members:
            mv.assignment = pending_assignment.get(mv.member_id, b"")
        error = ErrorCode.none
        try:
            await self.log.write([(encode_group_key(GroupKey(group.group_id)), encode_group_value(value))])
        except Exception as e:  # noqa: BLE001 - any storage failure fails this generation's sync
            logger.error("group %s: cannot store group metadata: %s", group.group_id, e)
            error = _write_error(e)
        if group.state != COMPLETING_REBALANCE or group.generation_id != generation_id:
            return  # a rebalance started meanwhile; the members were told
        if error is not ErrorCode.none:
            for member in group.members.values():
                member.assignment = b""
                member.complete_sync(SyncResult(error))
            self._prepare_rebalance(group, "storing the group metadata failed")
            return
        for member in group.members.values():
            member.assignment = pending_assignment.get(member.member_id, b"")
        group.transition(STABLE)
        for member in group.members.values():
            member.complete_sync(SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment))
        logger.info("group %s: generation %d is stable", group.group_id, generation_id)

    # --- Heartbeat and LeaveGroup ---------------------------------------------------------
    def heartbeat(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        if group.state == DEAD:
            return ErrorCode.coordinator_not_available
        error = self._validate_member(group, member_id, group_instance_id)
        if error is not ErrorCode.none:
            return error
        if generation_id != group.generation_id:
            return ErrorCode.illegal_generation
        if group.state == EMPTY:
            return ErrorCode.unknown_member_id
        member = group.members[member_id]
        self._schedule_heartbeat(group, member, member.session_timeout_ms)
        if group.state == PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """Remove members ``(member_id, group_instance_id)``; returns the group error and one error per member."""
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id for _ in members]
        if group.state == DEAD:
            return ErrorCode.coordinator_not_available, [ErrorCode.coordinator_not_available for _ in members]
        errors = []
        for member_id, group_instance_id in members:
            if member_id in group.pending_members and group_instance_id is None:
                handle = group.pending_members.pop(member_id)
                if handle is not None:
                    handle.cancel()
                self._try_complete_join(group)
                errors.append(ErrorCode.none)
                continue
            if member_id == UNKNOWN_MEMBER_ID and group_instance_id is not None:
                member_id = group.static_members.get(group_instance_id, "")
                if not member_id:
                    errors.append(ErrorCode.unknown_member_id)
                    continue
            error = self._validate_member(group, member_id, group_instance_id)
            if error is not ErrorCode.none:
                errors.append(error)
                continue
            member = group.members[member_id]
            logger.info("group %s: member %s left", group.group_id, member_id)
            self._remove_member_and_update(group, member, f"member {member_id} left the group")
            errors.append(ErrorCode.none)
        return ErrorCode.none, errors

    def _schedule_heartbeat(self, group: ClassicGroup, member: Member, timeout_ms: int) -> None:
        member.cancel_heartbeat()
        member.heartbeat_timer = self._call_later(timeout_ms, self._on_heartbeat_expired, group, member)

    def _on_heartbeat_expired(self, group: ClassicGroup, member: Member) -> None:
        member.heartbeat_timer = None
        if group.members.get(member.member_id) is not member:
            return
        if member.awaiting_join or member.awaiting_sync:
            # Requests parked in a rebalance keep the member alive; the rebalance timeout bounds them.
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            return
        logger.info("group %s: member %s failed (no heartbeat within %d ms)", group.group_id, member.member_id,
                    member.session_timeout_ms)
        self._remove_member_and_update(group, member, f"member {member.member_id} session timed out")

    def _expire_pending_member(self, group: ClassicGroup, member_id: str) -> None:
        if group.pending_members.pop(member_id, None) is not None:
            logger.info("group %s: pending member %s expired", group.group_id, member_id)
            self._try_complete_join(group)

    def _remove_member(self, group: ClassicGroup, member: Member) -> None:
        member.cancel_heartbeat()
        member.complete_join(JoinResult(ErrorCode.unknown_member_id, member.member_id))
        member.complete_sync(SyncResult(ErrorCode.unknown_member_id))
        group.members.pop(member.member_id, None)
        group.pending_sync.discard(member.member_id)
        if member.is_static and group.static_members.get(member.group_instance_id) == member.member_id:
            del group.static_members[member.group_instance_id]
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    def _remove_member_and_update(self, group: ClassicGroup, member: Member, reason: str) -> None:
        self._remove_member(group, member)
        if group.state in (STABLE, COMPLETING_REBALANCE):
            self._prepare_rebalance(group, reason)
        elif group.state == PREPARING_REBALANCE:
            self._try_complete_join(group)

    # --- offsets --------------------------------------------------------------------------
    def validate_offset_commit(self, group_id: str, generation_id: int, member_id: str,
                               group_instance_id: str | None, api_version: int | None = None
                               ) -> tuple[ErrorCode, ClassicGroup | None]:
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            return self.consumer.validate_offset_commit(consumer_group, member_id, generation_id, api_version), None
        group = self.groups.get(group_id)
        if group is None:
            if generation_id < 0:
                return ErrorCode.none, None  # an assign() consumer: the group is created on commit
            if api_version is not None and api_version >= 9:
                return ErrorCode.group_id_not_found, None
            return ErrorCode.illegal_generation, None
        if group.state == DEAD:
            return ErrorCode.coordinator_not_available, group
        if generation_id < 0 and group.state == EMPTY:
            return ErrorCode.none, group
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            error = self._validate_member(group, member_id, group_instance_id)
            if error is not ErrorCode.none:
                return error, group
            if generation_id != group.generation_id:
                return ErrorCode.illegal_generation, group
        elif group.state != EMPTY:
            return ErrorCode.unknown_member_id, group
        if group.state == COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress, group
        return ErrorCode.none, group

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
        if group is not None and member_id in group.members:
            self._schedule_heartbeat(group, group.members[member_id], group.members[member_id].session_timeout_ms)
        timestamp_ms = now_ms()
        expire_ms = timestamp_ms + retention_ms if retention_ms is not None and retention_ms >= 0 else None
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        accepted: list[tuple[tuple[str, int], CommittedOffset]] = []
        for (topic, partition), (offset, leader_epoch, metadata) in offsets.items():
            metadata = metadata or ""
            if len(metadata.encode()) > self.settings.offset_metadata_max_bytes:
                results[(topic, partition)] = ErrorCode.offset_metadata_too_large
                continue
            committed = CommittedOffset(offset, leader_epoch, metadata, timestamp_ms, expire_ms)
            records.append((encode_offset_key(OffsetKey(group_id, topic, partition)), encode_offset_value(committed.to_value())))
            accepted.append(((topic, partition), committed))
        if not records:
            return results
        try:
            await self.log.write(records)
        except Exception as e:  # noqa: BLE001 - the commit is not acknowledged
            logger.error("group %s: cannot store offsets: %s", group_id, e)
            for key, _ in accepted:
                results[key] = _write_error(e)
            return results
        if group_id not in self.groups and group_id not in self.consumer_groups:
            self.groups[group_id] = ClassicGroup(group_id)
        for (topic, partition), committed in accepted:
            self.offsets.put(group_id, topic, partition, committed)
            results[(topic, partition)] = ErrorCode.none
        return results

    def validate_offset_fetch(self, group_id: str, member_id: str | None, member_epoch: int) -> ErrorCode:
        """OffsetFetch v9+ names the member of a consumer-protocol group: check its epoch."""
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is None:
            return ErrorCode.none
        return self.consumer.validate_offset_fetch(consumer_group, member_id, member_epoch)

    def fetch_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None) -> list[tuple[str, int, CommittedOffset | None]]:
        """Committed offsets of the given partitions (None: every partition the group has committed)."""
        committed = self.offsets.group_offsets(group_id)
        if partitions is None:
            return [(t, p, c) for (t, p), c in sorted(committed.items())]
        return [(t, p, committed.get((t, p))) for t, p in partitions]

    async def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]]) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """OffsetDelete: forget offsets of topics the group no longer subscribes to."""
        consumer_group = self.consumer_groups.get(group_id)
        group = self.groups.get(group_id)
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
            if self.offsets.get(group_id, topic, partition) is not None:
                records.append((encode_offset_key(OffsetKey(group_id, topic, partition)), None))
        if records:
            await self.log.write(records)
            for topic, partition in partitions:
                if results[(topic, partition)] is ErrorCode.none:
                    self.offsets.remove(group_id, topic, partition)
        return ErrorCode.none, results

    def lag(self, group_id: str, log_end_offset) -> list[PartitionLag]:
        """Per-partition lag of a group; ``log_end_offset(topic, partition)`` gives None for a missing log."""
        return compute_lag(self.offsets.group_offsets(group_id), log_end_offset)

    # --- ListGroups, DescribeGroups, DeleteGroups ------------------------------------------
    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()) -> list[tuple[str, str, str, str]]:
        """(group id, protocol type, state, group type) of the groups matching the filters."""
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        listed = []
        if not wanted_types or GROUP_TYPE_CLASSIC in wanted_types:
            listed += [
                (g.group_id, g.protocol_type or "", g.state, GROUP_TYPE_CLASSIC)
                for g in self.groups.values()
                if g.state != DEAD and (not wanted_states or g.state.lower() in wanted_states)
            ]
        if not wanted_types or GROUP_TYPE_CONSUMER in wanted_types:
            listed += [
                (g.group_id, PROTOCOL_TYPE_CONSUMER, g.state, GROUP_TYPE_CONSUMER)
                for g in self.consumer_groups.values()
                if not wanted_states or g.state.lower() in wanted_states
            ]
        return listed

    def describe_group(self, group_id: str) -> GroupDescription | None:
        """A classic group's description (DescribeGroups); None for unknown and consumer-protocol groups."""
        group = self.groups.get(group_id)
        return group.describe() if group is not None and group.state != DEAD else None

    async def delete_groups(self, group_ids: list[str]) -> dict[str, ErrorCode]:
        results: dict[str, ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        deletable: list[ClassicGroup] = []
        consumer_deletable: list[ConsumerGroup] = []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            consumer_group = self.consumer_groups.get(group_id)
            if not group_id:
                results[group_id] = ErrorCode.invalid_group_id
            elif consumer_group is not None:
                if consumer_group.members:
                    results[group_id] = ErrorCode.non_empty_group
                else:
                    consumer_deletable.append(consumer_group)
                    records += self._consumer_tombstones(consumer_group)
                    results[group_id] = ErrorCode.none
            elif group is None or group.state == DEAD:
                results[group_id] = ErrorCode.group_id_not_found
            elif group.state != EMPTY:
                results[group_id] = ErrorCode.non_empty_group
            else:
                deletable.append(group)
                records += self._tombstones(group)
                results[group_id] = ErrorCode.none
        if records:
            await self.log.write(records)
        for group in deletable:
            self._remove_group(group)
        for consumer_group in consumer_deletable:
            self._remove_consumer_group(consumer_group)
        return results

    def _consumer_tombstones(self, group: ConsumerGroup) -> list[tuple[bytes, bytes | None]]:
        records: list[tuple[bytes, bytes | None]] = [
            (encode_offset_key(OffsetKey(group.group_id, topic, partition)), None)
            for topic, partition in self.offsets.group_offsets(group.group_id)
        ]
        records.append((encode_consumer_group_key(ConsumerGroupKey(group.group_id)), None))
        return records

    def _remove_consumer_group(self, group: ConsumerGroup) -> None:
        self.consumer.stop_timers(group)
        group.deleted = True
        self.offsets.drop_group(group.group_id)
        if self.consumer_groups.get(group.group_id) is group:
            del self.consumer_groups[group.group_id]
        logger.info("consumer group %s deleted", group.group_id)

    def drop_classic_group(self, group: ClassicGroup) -> None:
        """Forget an empty classic group (its offsets stay) so a consumer group can take the id."""
        self._cancel_group_timers(group)
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        if group.protocol_type is not None or group.generation_id:
            self._spawn(self.log.write([(encode_group_key(GroupKey(group.group_id)), None)]))

    def drop_consumer_group(self, group: ConsumerGroup) -> None:
        """Forget an empty consumer group (its offsets stay) so a classic group can take the id."""
        self.consumer.stop_timers(group)
        group.deleted = True
        if self.consumer_groups.get(group.group_id) is group:
            del self.consumer_groups[group.group_id]
        self._spawn(self.log.write([(encode_consumer_group_key(ConsumerGroupKey(group.group_id)), None)]))

    def _tombstones(self, group: ClassicGroup) -> list[tuple[bytes, bytes | None]]:
        records: list[tuple[bytes, bytes | None]] = [
            (encode_offset_key(OffsetKey(group.group_id, topic, partition)), None)
            for topic, partition in self.offsets.group_offsets(group.group_id)
        ]
        records.append((encode_group_key(GroupKey(group.group_id)), None))
        return records

    def _remove_group(self, group: ClassicGroup) -> None:
        self._cancel_group_timers(group)
        group.transition(DEAD)
        self.offsets.drop_group(group.group_id)
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        logger.info("group %s deleted", group.group_id)

    # --- persistence of group metadata and expiry -------------------------------------------
    async def _persist_group(self, group: ClassicGroup) -> None:
        try:
            await self.log.write([(encode_group_key(GroupKey(group.group_id)), encode_group_value(group.to_value()))])
        except Exception as e:  # noqa: BLE001 - metadata is rewritten at the next rebalance
            logger.error("group %s: cannot store group metadata: %s", group.group_id, e)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_expiry(self) -> None:
        self._expiry_timer = self._call_later(self.settings.offsets_retention_check_interval_ms, self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._spawn(self.expire_offsets())
        self._schedule_expiry()

    async def expire_offsets(self, at_ms: int | None = None) -> int:
        """Delete expired offsets of empty groups (and the groups left with none); returns how many."""
        at_ms = now_ms() if at_ms is None else at_ms
        records: list[tuple[bytes, bytes | None]] = []
        expired: list[tuple[str, tuple[str, int]]] = []
        dead: list[ClassicGroup] = []
        for group in list(self.groups.values()):
            if group.state != EMPTY:
                continue
            base = group.state_timestamp_ms if group.protocol_type else None
            keys = self.offsets.expired(group.group_id, at_ms, self.settings.offsets_retention_ms, base)
            for topic, partition in keys:
                records.append((encode_offset_key(OffsetKey(group.group_id, topic, partition)), None))
                expired.append((group.group_id, (topic, partition)))
            if len(keys) == len(self.offsets.group_offsets(group.group_id)):
                dead.append(group)
                records.append((encode_group_key(GroupKey(group.group_id)), None))
        consumer_dead: list[ConsumerGroup] = []
        for consumer_group in list(self.consumer_groups.values()):
            if consumer_group.members:
                continue
            keys = self.offsets.expired(consumer_group.group_id, at_ms, self.settings.offsets_retention_ms,
                                        consumer_group.state_timestamp_ms)
            for topic, partition in keys:
                records.append((encode_offset_key(OffsetKey(consumer_group.group_id, topic, partition)), None))
                expired.append((consumer_group.group_id, (topic, partition)))
            if len(keys) == len(self.offsets.group_offsets(consumer_group.group_id)):
                consumer_dead.append(consumer_group)
                records.append((encode_consumer_group_key(ConsumerGroupKey(consumer_group.group_id)), None))
        if not records:
            return 0
        await self.log.write(records)
        for group_id, (topic, partition) in expired:
            self.offsets.remove(group_id, topic, partition)
        for group in dead:
            if group.state == EMPTY and not self.offsets.has_offsets(group.group_id):
                self._remove_group(group)
        for consumer_group in consumer_dead:
            if not consumer_group.members and not self.offsets.has_offsets(consumer_group.group_id):
                self._remove_consumer_group(consumer_group)
        if expired:
            logger.info("expired %d committed offsets; removed %d empty groups", len(expired), len(dead))
        return len(expired)
