"""Share group membership (KIP-932) as ShareGroupHeartbeat v1 needs it, shaped like Kafka 4.2's.

A share group's members subscribe to topics by name; the coordinator assigns partitions to them
with Kafka's SimpleAssignor, where several members may share a partition (records, not
partitions, are what members take one at a time). Three epochs, as in KIP-848:

- the **group epoch** grows when what the assignment depends on changes: a member joins, leaves
  or changes its subscription, or a subscribed topic appears or gains partitions;
- the **assignment epoch** is the group epoch the target assignment was computed at;
- a member's **member epoch** is the assignment epoch it has been given. There is no revocation
  step (a partition may be shared, so nobody waits for another member to let go): a heartbeat
  moves its member straight to the target.

A member joins with epoch 0 (its member id is made by the client, KIP-1082) and the subscribed
topic names, heartbeats with its epoch every ``share.heartbeat.interval.ms``, and leaves with -1.
One that sends no heartbeat for ``share.session.timeout.ms`` is removed (its acquired records are
released by ``on_member_removed``). A heartbeat with epoch 0 from a known member rejoins it (Kafka
fences it until its session expires; Tidelog lets it back at once). Before a share-partition can
be assigned its state must exist (Kafka initialises it through the share coordinator, with the
start offset from ``share.auto.offset.reset``): the heartbeat awaits ``initialize`` for partitions
the group has not read before.

Group states: Empty (no members), Stable. Persistence: ``persist`` receives the whole group after
every durable change (``encode_group_snapshot`` gives its bytes). Timers are loop handles reset by
each heartbeat; a session's is a ``SessionTimer`` (tidelog/session_timer.py): after a stall, a heartbeat
waiting unread in its socket is read before the member expires. Not thread-safe; the event loop owns everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Mapping, NamedTuple

from tidelog.clock import wall_clock_ms
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.session_timer import SessionTimer

logger = logging.getLogger(__name__)

LEAVE_GROUP_MEMBER_EPOCH = -1
GROUP_TYPE_SHARE = "share"
PROTOCOL_TYPE_SHARE = "share"
EMPTY = "Empty"
STABLE = "Stable"
DEAD = "Dead"
ASSIGNOR_NAME = "simple"

Assignment = dict[uuid.UUID, set[int]]
TopicPartitionId = tuple[uuid.UUID, int]


class TopicInfo(NamedTuple):
    """A subscribed topic as the assignment sees it."""

    topic_id: uuid.UUID
    partitions: int


@dataclass(frozen=True)
class ShareGroupSettings:
    """Broker-wide share group settings (group.share.*); per-group values come from ``group_config``."""

    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 5000
    max_size: int = 200

    @classmethod
    def from_config(cls, config) -> "ShareGroupSettings":
        return cls(config["group.share.session.timeout.ms"], config["group.share.heartbeat.interval.ms"],
                   config["group.share.max.size"])


@dataclass
class ShareMember:
    member_id: str
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: list[str] = field(default_factory=list)
    member_epoch: int = 0
    previous_member_epoch: int = 0
    assigned: Assignment = field(default_factory=dict)
    session_timer: asyncio.TimerHandle | SessionTimer | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {"member_id": self.member_id, "rack_id": self.rack_id, "client_id": self.client_id,
                "client_host": self.client_host, "topics": list(self.subscribed_topic_names),
                "epoch": self.member_epoch, "previous_epoch": self.previous_member_epoch,
                "assigned": _assignment_to_json(self.assigned)}

    @classmethod
    def from_json(cls, data: dict) -> "ShareMember":
        return cls(data["member_id"], data.get("rack_id"), data.get("client_id", ""), data.get("client_host", ""),
                   list(data.get("topics", [])), data.get("epoch", 0), data.get("previous_epoch", 0),
                   _assignment_from_json(data.get("assigned", {})))


@dataclass
class ShareGroup:
    group_id: str
    group_epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    subscription_metadata: dict[str, TopicInfo] = field(default_factory=dict)
    state_timestamp_ms: int = field(default_factory=wall_clock_ms)
    deleted: bool = False

    @property
    def state(self) -> str:
        if self.deleted:
            return DEAD
        return STABLE if self.members else EMPTY

    def subscribed_topic_names(self) -> set[str]:
        return {name for member in self.members.values() for name in member.subscribed_topic_names}

    def to_json(self) -> dict:
        return {"group_epoch": self.group_epoch, "assignment_epoch": self.assignment_epoch,
                "state_timestamp_ms": self.state_timestamp_ms,
                "metadata": {name: [str(t.topic_id), t.partitions] for name, t in self.subscription_metadata.items()},
                "members": [m.to_json() for m in self.members.values()],
                "target": {m: _assignment_to_json(a) for m, a in self.target.items()}}

    @classmethod
    def from_json(cls, group_id: str, data: dict) -> "ShareGroup":
        group = cls(group_id, data.get("group_epoch", 0), data.get("assignment_epoch", 0))
        group.state_timestamp_ms = data.get("state_timestamp_ms", wall_clock_ms())
        group.subscription_metadata = {name: TopicInfo(uuid.UUID(tid), n) for name, (tid, n) in
                                       data.get("metadata", {}).items()}
        for member in data.get("members", []):
            m = ShareMember.from_json(member)
            group.members[m.member_id] = m
        group.target = {m: _assignment_from_json(a) for m, a in data.get("target", {}).items()}
        return group


def encode_group_snapshot(group: ShareGroup) -> bytes:
    """The whole group as UTF-8 JSON, for a share group record of ``__consumer_offsets``."""
    return json.dumps(group.to_json(), separators=(",", ":")).encode()


def decode_group_snapshot(group_id: str, data: bytes) -> ShareGroup:
    return ShareGroup.from_json(group_id, json.loads(data))


def _assignment_to_json(assignment: Assignment) -> dict[str, list[int]]:
    return {str(tid): sorted(ps) for tid, ps in assignment.items() if ps}


def _assignment_from_json(data: dict[str, list[int]]) -> Assignment:
    return {uuid.UUID(tid): set(ps) for tid, ps in data.items()}


def _copy(assignment: Assignment) -> Assignment:
    return {tid: set(ps) for tid, ps in assignment.items() if ps}


# --- the SimpleAssignor --------------------------------------------------------------------------------
def simple_assign(subscriptions: Mapping[str, frozenset[uuid.UUID]], topics: Mapping[uuid.UUID, int],
                  previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    """Kafka's SimpleAssignor for share groups: every partition of a subscribed topic goes to
    ceil(members / partitions) members, members' counts differ by at most one, and previous
    assignments are kept where balance allows (balance first, then stickiness). When all members
    subscribe to the same topics their partitions are pooled; otherwise each topic is assigned among
    its subscribers."""
    members = sorted(subscriptions)
    result: dict[str, Assignment] = {m: {} for m in members}
    if not members:
        return result
    previous_pairs = {m: {(tid, p) for tid, ps in previous.get(m, {}).items() for p in ps} for m in members}
    if len({subscriptions[m] for m in members}) == 1:
        pools = [(members, sorted(subscriptions[members[0]] & topics.keys(), key=str))]
    else:
        pools = [([m for m in members if tid in subscriptions[m]], [tid]) for tid in sorted(topics, key=str)]
    for pool_members, topic_ids in pools:
        partitions = [(tid, p) for tid in topic_ids for p in range(topics[tid])]
        for member, pairs in _assign_pool(pool_members, partitions, previous_pairs).items():
            for tid, p in pairs:
                result[member].setdefault(tid, set()).add(p)
    return result


def _assign_pool(members: list[str], partitions: list[TopicPartitionId],
                 previous: Mapping[str, set[TopicPartitionId]]) -> dict[str, set[TopicPartitionId]]:
    if not members or not partitions:
        return {m: set() for m in members}
    sharing = math.ceil(len(members) / len(partitions))
    precise = sharing * len(partitions) / len(members)
    quotas = sorted((math.ceil(precise * (i + 1)) - math.ceil(precise * i) for i in range(len(members))), reverse=True)
    holders: dict[TopicPartitionId, list[str]] = {tp: [] for tp in partitions}
    # the larger quotas go to the members that held more, so that balancing moves as little as it can
    by_holdings = sorted(members, key=lambda m: (-len(previous.get(m, set()) & holders.keys()), m))
    desired = dict(zip(by_holdings, quotas))
    result: dict[str, set[TopicPartitionId]] = {m: set() for m in members}
    for member in members:  # keep what a member had, as far as its quota and the sharing allow
        for tp in sorted(previous.get(member, set()) & holders.keys(), key=lambda tp: (str(tp[0]), tp[1])):
            if len(result[member]) < desired[member] and len(holders[tp]) < sharing:
                result[member].add(tp)
                holders[tp].append(member)
    order = {m: i for i, m in enumerate(members)}
    for tp in partitions:  # then fill: each partition up to the sharing, least-loaded members first
        while len(holders[tp]) < sharing:
            candidates = [m for m in members if len(result[m]) < desired[m] and tp not in result[m]]
            if not candidates:
                break  # Kafka tolerates this slight imbalance too
            member = min(candidates, key=lambda m: (len(result[m]), order[m]))
            result[member].add(tp)
            holders[tp].append(member)
    return result


# --- the coordinator side ------------------------------------------------------------------------------
@dataclass
class HeartbeatResult:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None  # None: not sent (unchanged since the last response)


class _Reject(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


# initialize(group_id, {topic id: partitions}) makes sure each share-partition has durable state.
Initializer = Callable[[str, dict[uuid.UUID, set[int]]], Awaitable[None]]
Persister = Callable[[ShareGroup], Awaitable[None]]
# on_member_removed(group_id, member_id, failed): release what it holds (failed: no heartbeat in time).
MemberRemoved = Callable[[str, str, bool], Awaitable[None] | None]


class ShareGroupCoordinator:
    """ShareGroupHeartbeat, leaving, session timers, describe/list/delete of this broker's share groups.

    Collaborators: ``initialize`` (share-partition state), ``persist`` (the group record),
    ``on_member_removed`` (release a member's records), ``group_config(group_id)`` (the group's
    share.session.timeout.ms / share.heartbeat.interval.ms, defaults from the broker), ``is_other_group``
    (a classic or consumer group owns the id), ``has_state`` (the group has durable share-partition
    state: it existed before this coordinator started, so its members get UNKNOWN_MEMBER_ID and
    rejoin rather than GROUP_ID_NOT_FOUND, which clients treat as fatal), ``call_later`` (timers;
    loop.call_later by default).
    """

    def __init__(self, settings: ShareGroupSettings, *, initialize: Initializer | None = None,
                 persist: Persister | None = None, on_member_removed: MemberRemoved | None = None,
                 group_config: Callable[[str], Mapping[str, int]] | None = None,
                 is_other_group: Callable[[str], bool] | None = None,
                 has_state: Callable[[str], bool] | None = None,
                 call_later: Callable[..., asyncio.TimerHandle] | None = None) -> None:
        self.settings = settings
        self.groups: dict[str, ShareGroup] = {}
        self._initialize = initialize
        self._persist = persist
        self._on_member_removed = on_member_removed
        self._group_config = group_config
        self._is_other_group = is_other_group or (lambda group_id: False)
        self._has_state = has_state or (lambda group_id: False)
        self._call_later = call_later
        self._background: set[asyncio.Task] = set()
        self.rebalances = 0

    def session_timeout_ms(self, group_id: str) -> int:
        config = self._group_config(group_id) if self._group_config else {}
        return int(config.get("share.session.timeout.ms", self.settings.session_timeout_ms))

    def heartbeat_interval_ms(self, group_id: str) -> int:
        config = self._group_config(group_id) if self._group_config else {}
        return int(config.get("share.heartbeat.interval.ms", self.settings.heartbeat_interval_ms))

    # --- ShareGroupHeartbeat ------------------------------------------------------------------
    async def heartbeat(self, group_id: str, member_id: str, member_epoch: int, *, rack_id: str | None = None,
                        subscribed_topic_names: list[str] | None = None, client_id: str = "", client_host: str = "",
                        topics: Mapping[str, TopicInfo] | None = None) -> HeartbeatResult:
        """One ShareGroupHeartbeat. ``topics`` maps the existing topics' names to ids and partition counts."""
        try:
            self._validate(group_id, member_id, member_epoch, rack_id, subscribed_topic_names)
            if member_epoch == LEAVE_GROUP_MEMBER_EPOCH:
                return await self._leave(group_id, member_id)
            return await self._heartbeat(group_id, member_id, member_epoch, rack_id, subscribed_topic_names,
                                         client_id, client_host, topics or {})
        except _Reject as e:
            return HeartbeatResult(e.error, e.message)
        except KafkaError as e:  # initialising share-partitions or persisting failed: the client retries
            logger.warning("share group %s: heartbeat of %s failed: %s", group_id, member_id, e)
            return HeartbeatResult(e.error_code, e.message)

    @staticmethod
    def _validate(group_id, member_id, member_epoch, rack_id, subscribed_topic_names) -> None:
        invalid = ErrorCode.invalid_request
        if not member_id or not member_id.strip():
            raise _Reject(invalid, "MemberId can't be empty.")
        if not group_id or not group_id.strip():
            raise _Reject(invalid, "GroupId can't be empty.")
        if rack_id is not None and not rack_id.strip():
            raise _Reject(invalid, "RackId can't be empty.")
        if member_epoch == 0:
            if not subscribed_topic_names:
                raise _Reject(invalid, "SubscribedTopicNames must be set in first request.")
        elif member_epoch < LEAVE_GROUP_MEMBER_EPOCH:
            raise _Reject(invalid, "MemberEpoch is invalid.")

    async def _heartbeat(self, group_id, member_id, member_epoch, rack_id, subscribed_topic_names, client_id,
                         client_host, topics) -> HeartbeatResult:
        group = self.groups.get(group_id)
        if group is None or group.deleted:
            if member_epoch != 0 and self._has_state(group_id) and not self._is_other_group(group_id):
                raise _Reject(ErrorCode.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
            if member_epoch != 0 or self._is_other_group(group_id):
                raise _Reject(ErrorCode.group_id_not_found,
                              f"Group {group_id} is not a share group." if self._is_other_group(group_id)
                              else f"Share group {group_id} not found.")
            group = ShareGroup(group_id)
        member = group.members.get(member_id)
        if member is None:
            if member_epoch != 0:
                raise _Reject(ErrorCode.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
            if len(group.members) >= self.settings.max_size:
                raise _Reject(ErrorCode.group_max_size_reached,
                              f"The share group has reached its maximum capacity of {self.settings.max_size} members.")
        elif member_epoch != 0:
            self._check_epoch(member, member_epoch)

        new_topics = list(subscribed_topic_names) if subscribed_topic_names is not None else None
        names = set(group.subscribed_topic_names())
        if member is not None and new_topics is not None:
            names = {n for m in group.members.values() if m is not member for n in m.subscribed_topic_names}
        if new_topics is not None:
            names |= set(new_topics)
        metadata = {name: topics[name] for name in sorted(names) if name in topics}
        if metadata != group.subscription_metadata:
            await self._initialize_partitions(group_id, metadata, group.subscription_metadata)

        # From here on nothing can fail before the group is persisted.
        self.groups[group_id] = group
        joined = member is None
        if joined:
            member = ShareMember(member_id)
            group.members[member_id] = member
            group.state_timestamp_ms = wall_clock_ms()
            logger.info("share group %s: member %s joins", group_id, member_id)
        rejoined = not joined and member_epoch == 0
        if rejoined:
            logger.info("share group %s: member %s rejoins", group_id, member_id)
        before = member.to_json()
        old_assigned = _copy(member.assigned)
        bump = joined
        if new_topics is not None and sorted(new_topics) != sorted(member.subscribed_topic_names):
            member.subscribed_topic_names = new_topics
            bump = True
            logger.info("share group %s: member %s subscribes to %s", group_id, member_id, sorted(new_topics))
        if rack_id is not None:
            member.rack_id = rack_id
        member.client_id, member.client_host = client_id, client_host
        if metadata != group.subscription_metadata:
            group.subscription_metadata = metadata
            bump = True
        if bump:
            group.group_epoch += 1
            self.rebalances += 1
            logger.info("share group %s: group epoch %d", group_id, group.group_epoch)
        if group.group_epoch > group.assignment_epoch:
            self._compute_target(group)
        if member.member_epoch != group.assignment_epoch or bump or rejoined:
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = group.assignment_epoch
            member.assigned = self._filtered(group, group.target.get(member_id, {}), member)
        self._schedule_session_timeout(group, member)
        if joined or bump or member.to_json() != before:
            await self._save(group)
        send_assignment = member_epoch == 0 or subscribed_topic_names is not None or member.assigned != old_assigned
        return HeartbeatResult(ErrorCode.none, None, member_id, member.member_epoch,
                               self.heartbeat_interval_ms(group_id), _copy(member.assigned) if send_assignment else None)

    @staticmethod
    def _check_epoch(member: ShareMember, member_epoch: int) -> None:
        if member_epoch > member.member_epoch:
            raise _Reject(ErrorCode.fenced_member_epoch,
                          f"The share group member has a greater member epoch ({member_epoch}) than the one known by "
                          f"the group coordinator ({member.member_epoch}). The member must abandon all its partitions "
                          "and rejoin.")
        if member_epoch < member.member_epoch and member_epoch != member.previous_member_epoch:
            raise _Reject(ErrorCode.fenced_member_epoch,
                          f"The share group member has a smaller member epoch ({member_epoch}) than the one known by "
                          f"the group coordinator ({member.member_epoch}), and it does not match the previous member "
                          f"epoch ({member.previous_member_epoch}). The member must abandon all its partitions and "
                          "rejoin.")

    async def _initialize_partitions(self, group_id: str, metadata: Mapping[str, TopicInfo],
                                     known: Mapping[str, TopicInfo]) -> None:
        if self._initialize is None:
            return
        wanted: dict[uuid.UUID, set[int]] = {}
        for name, info in metadata.items():
            old = known.get(name)
            first_new = old.partitions if old is not None and old.topic_id == info.topic_id else 0
            if info.partitions > first_new:
                wanted[info.topic_id] = set(range(first_new, info.partitions))
        if wanted:
            await self._initialize(group_id, wanted)

    @staticmethod
    def _filtered(group: ShareGroup, target: Assignment, member: ShareMember) -> Assignment:
        """The target limited to the member's current subscription (Kafka's ShareGroupAssignmentBuilder)."""
        ids = {group.subscription_metadata[n].topic_id for n in member.subscribed_topic_names
               if n in group.subscription_metadata}
        return {tid: set(ps) for tid, ps in target.items() if tid in ids and ps}

    def _compute_target(self, group: ShareGroup) -> None:
        metadata = group.subscription_metadata
        subscriptions = {m.member_id: frozenset(metadata[n].topic_id for n in m.subscribed_topic_names if n in metadata)
                         for m in group.members.values()}
        topics = {info.topic_id: info.partitions for info in metadata.values()}
        group.target = simple_assign(subscriptions, topics, group.target)
        group.assignment_epoch = group.group_epoch
        names = {info.topic_id: name for name, info in metadata.items()}
        logger.info("share group %s: target assignment of epoch %d: %s", group.group_id, group.assignment_epoch,
                    {m: {names.get(t, str(t)): sorted(ps) for t, ps in a.items()} for m, a in group.target.items()})

    # --- leaving and timers -------------------------------------------------------------------
    async def _leave(self, group_id: str, member_id: str) -> HeartbeatResult:
        group = self.groups.get(group_id)
        if group is None or group.deleted:
            if self._has_state(group_id):
                raise _Reject(ErrorCode.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
            raise _Reject(ErrorCode.group_id_not_found, f"Share group {group_id} not found.")
        member = group.members.get(member_id)
        if member is None:
            raise _Reject(ErrorCode.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
        logger.info("share group %s: member %s left", group_id, member_id)
        await self._remove_member(group, member, failed=False)
        return HeartbeatResult(ErrorCode.none, None, member_id, LEAVE_GROUP_MEMBER_EPOCH, 0)

    async def _remove_member(self, group: ShareGroup, member: ShareMember, failed: bool) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
            member.session_timer = None
        group.members.pop(member.member_id, None)
        group.target.pop(member.member_id, None)
        group.group_epoch += 1
        group.state_timestamp_ms = wall_clock_ms()
        self.rebalances += 1
        if self._on_member_removed is not None:
            try:
                result = self._on_member_removed(group.group_id, member.member_id, failed)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception as e:  # noqa: BLE001 - the member is gone either way; its locks still expire
                logger.warning("share group %s: releasing records of %s failed: %s", group.group_id, member.member_id, e)
        await self._save(group)

    def _schedule_session_timeout(self, group: ShareGroup, member: ShareMember) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
        timeout_s = self.session_timeout_ms(group.group_id) / 1000
        if self._call_later is not None:
            member.session_timer = self._call_later(timeout_s, self._on_session_timeout, group, member)
        else:  # the loop reads its sockets before the expiry: a heartbeat waiting after a stall keeps the member
            member.session_timer = SessionTimer(asyncio.get_running_loop(), timeout_s, self._on_session_timeout,
                                                (group, member))

    def _on_session_timeout(self, group: ShareGroup, member: ShareMember) -> None:
        member.session_timer = None
        if group.members.get(member.member_id) is not member:
            return
        logger.info("share group %s: member %s failed (no heartbeat within %d ms)", group.group_id, member.member_id,
                    self.session_timeout_ms(group.group_id))
        task = asyncio.get_running_loop().create_task(self._remove_member(group, member, failed=True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def start_timers(self, group: ShareGroup) -> None:
        """After loading: every member must heartbeat within its session timeout."""
        for member in group.members.values():
            self._schedule_session_timeout(group, member)

    def stop_timers(self) -> None:
        for group in self.groups.values():
            for member in group.members.values():
                if member.session_timer is not None:
                    member.session_timer.cancel()
                    member.session_timer = None

    async def _save(self, group: ShareGroup) -> None:
        if self._persist is not None and not group.deleted:
            await self._persist(group)

    # --- admin --------------------------------------------------------------------------------
    def load(self, group: ShareGroup) -> None:
        """A group read back from its record (broker start, coordinator failover)."""
        self.groups[group.group_id] = group
        self.start_timers(group)

    def describe(self, group_id: str) -> ShareGroup:
        """ShareGroupDescribe's group; GROUP_ID_NOT_FOUND when it is not a share group here."""
        group = self.groups.get(group_id)
        if group is None or group.deleted:
            raise KafkaError(ErrorCode.group_id_not_found, f"Group {group_id} not found.")
        return group

    def list_groups(self, states: Iterable[str] = ()) -> list[ShareGroup]:
        wanted = {s.lower() for s in states}
        return [g for g in self.groups.values() if not g.deleted and (not wanted or g.state.lower() in wanted)]

    def delete(self, group_id: str) -> ShareGroup:
        """DeleteGroups of a share group: only an empty one (NON_EMPTY_GROUP). The caller then deletes its
        share-partition state and writes the group's tombstone."""
        group = self.describe(group_id)
        if group.members:
            raise KafkaError(ErrorCode.non_empty_group, f"Share group {group_id} is not empty.")
        group.deleted = True
        del self.groups[group_id]
        logger.info("share group %s deleted", group_id)
        return group
