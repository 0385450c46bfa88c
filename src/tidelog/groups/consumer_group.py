"""A consumer group of the new consumer protocol (KIP-848), modelled on Kafka 4.0's ConsumerGroup.

The broker, not a client leader, assigns partitions. Three epochs drive it:

- the **group epoch** grows whenever what the assignment depends on changes: a member joins,
  leaves or changes its subscription, or a subscribed topic gains partitions or appears;
- the **assignment epoch** is the group epoch the current *target assignment* was computed at
  (by the ``uniform`` or ``range`` assignor, see groups/assignors.py);
- each **member epoch** says which target assignment the member has reconciled to.

Reconciliation (``reconcile``, Kafka's CurrentAssignmentBuilder): a member moving to a new
target first gives up what it must lose (state ``unrevoked_partitions``: the heartbeat answer
no longer lists those partitions, the member epoch stays), and only when a later heartbeat's
owned partitions show them released does it advance to the target epoch and receive the new
partitions. A partition still held (assigned or pending revocation) by another member is not
handed out (state ``unreleased_partitions``) until that member releases it.

Group state (``state``): Empty (no members), Assigning (group epoch ahead of the assignment
epoch), Reconciling (a member not yet at the assignment epoch or not stable), Stable.
Not thread-safe; the broker's event loop owns every group.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Callable

from tidelog.clock import wall_clock_ms
from tidelog.groups.assignors import Assignment
from tidelog.session_timer import SessionTimer

EMPTY = "Empty"
ASSIGNING = "Assigning"
RECONCILING = "Reconciling"
STABLE = "Stable"
DEAD = "Dead"

MEMBER_STABLE = "stable"
MEMBER_UNREVOKED = "unrevoked_partitions"
MEMBER_UNRELEASED = "unreleased_partitions"

LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2

GROUP_TYPE_CONSUMER = "consumer"
PROTOCOL_TYPE_CONSUMER = "consumer"


def copy_assignment(assignment: Assignment) -> Assignment:
    return {tid: set(ps) for tid, ps in assignment.items() if ps}


def same_assignment(a: Assignment, b: Assignment) -> bool:
    return copy_assignment(a) == copy_assignment(b)


def is_subset(owned: Assignment | None, assigned: Assignment) -> bool:
    if owned is None:
        return True
    return all(ps <= assigned.get(tid, set()) for tid, ps in owned.items())


@dataclass
class ConsumerMember:
    """One member: what it subscribes to, and where it is in reconciliation."""

    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 300000
    subscribed_topic_names: list[str] = field(default_factory=list)
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: str = MEMBER_STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)
    # Timers are not persisted.
    session_timer: SessionTimer | None = field(default=None, repr=False, compare=False)
    rebalance_timer: SessionTimer | None = field(default=None, repr=False, compare=False)

    def cancel_timers(self) -> None:
        for handle in (self.session_timer, self.rebalance_timer):
            if handle is not None:
                handle.cancel()
        self.session_timer = self.rebalance_timer = None

    def subscription_key(self) -> tuple:
        return (tuple(sorted(self.subscribed_topic_names)), self.subscribed_topic_regex)

    def to_json(self) -> dict:
        return {
            "member_id": self.member_id, "instance_id": self.instance_id, "rack_id": self.rack_id,
            "client_id": self.client_id, "client_host": self.client_host,
            "rebalance_timeout_ms": self.rebalance_timeout_ms, "topics": list(self.subscribed_topic_names),
            "regex": self.subscribed_topic_regex, "server_assignor": self.server_assignor,
            "epoch": self.member_epoch, "previous_epoch": self.previous_member_epoch, "state": self.state,
            "assigned": assignment_to_json(self.assigned), "pending_revocation": assignment_to_json(self.pending_revocation),
        }

    @classmethod
    def from_json(cls, data: dict) -> "ConsumerMember":
        return cls(
            member_id=data["member_id"], instance_id=data.get("instance_id"), rack_id=data.get("rack_id"),
            client_id=data.get("client_id", ""), client_host=data.get("client_host", ""),
            rebalance_timeout_ms=data.get("rebalance_timeout_ms", 300000),
            subscribed_topic_names=list(data.get("topics", [])), subscribed_topic_regex=data.get("regex"),
            server_assignor=data.get("server_assignor"), member_epoch=data.get("epoch", 0),
            previous_member_epoch=data.get("previous_epoch", 0), state=data.get("state", MEMBER_STABLE),
            assigned=assignment_from_json(data.get("assigned", {})),
            pending_revocation=assignment_from_json(data.get("pending_revocation", {})),
        )


def assignment_to_json(assignment: Assignment) -> dict[str, list[int]]:
    return {str(tid): sorted(ps) for tid, ps in assignment.items() if ps}


def assignment_from_json(data: dict[str, list[int]]) -> Assignment:
    return {uuid.UUID(tid): set(ps) for tid, ps in data.items()}


@dataclass(frozen=True)
class TopicMetadata:
    """What the target assignment of a subscribed topic was computed from."""

    topic_id: uuid.UUID
    partitions: int


class ConsumerGroup:
    """Members, epochs, the target assignment, and who holds which partition right now."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerMember] = {}
        self.static_members: dict[str, str] = {}  # instance id -> member id
        self.target: dict[str, Assignment] = {}  # member id -> target assignment
        self.subscription_metadata: dict[str, TopicMetadata] = {}  # topic name -> metadata
        self.assignor_name: str = ""
        self.state_timestamp_ms = wall_clock_ms()
        self.deleted = False
        # Writes of the group's snapshot started, and the latest of them that failed with no later
        # one written since (0: none): a heartbeat then writes the group even when it changed
        # nothing (consumer_protocol.py ``persist``).
        self.writes_started = 0
        self.failed_write = 0
        self.rewriting = False  # the coordinator writes it again after a back-off (``_rewrite``)
        # (topic id, partition) -> member id holding it (assigned or pending revocation).
        self.partition_owners: dict[tuple[uuid.UUID, int], str] = {}

    # --- membership ------------------------------------------------------------------------
    def cancel_timers(self) -> None:
        for member in self.members.values():
            member.cancel_timers()

    def add_member(self, member: ConsumerMember) -> None:
        was_empty = not self.members
        self.members[member.member_id] = member
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id
        self._claim(member)
        if was_empty:
            self.state_timestamp_ms = wall_clock_ms()

    def remove_member(self, member_id: str) -> ConsumerMember | None:
        member = self.members.pop(member_id, None)
        if member is None:
            return None
        member.cancel_timers()
        self._release(member)
        self.target.pop(member_id, None)
        if member.instance_id is not None and self.static_members.get(member.instance_id) == member_id:
            del self.static_members[member.instance_id]
        if not self.members:
            self.state_timestamp_ms = wall_clock_ms()
        return member

    def static_member(self, instance_id: str) -> ConsumerMember | None:
        member_id = self.static_members.get(instance_id)
        return self.members.get(member_id) if member_id is not None else None

    def set_member_assignment(self, member: ConsumerMember, epoch: int, state: str, assigned: Assignment,
                              pending_revocation: Assignment) -> None:
        self._release(member)
        if epoch != member.member_epoch:
            member.previous_member_epoch = member.member_epoch
        member.member_epoch = epoch
        member.state = state
        member.assigned = copy_assignment(assigned)
        member.pending_revocation = copy_assignment(pending_revocation)
        self._claim(member)

    def _claim(self, member: ConsumerMember) -> None:
        for assignment in (member.assigned, member.pending_revocation):
            for tid, ps in assignment.items():
                for p in ps:
                    self.partition_owners[(tid, p)] = member.member_id

    def _release(self, member: ConsumerMember) -> None:
        for assignment in (member.assigned, member.pending_revocation):
            for tid, ps in assignment.items():
                for p in ps:
                    if self.partition_owners.get((tid, p)) == member.member_id:
                        del self.partition_owners[(tid, p)]

    def owner_of(self, topic_id: uuid.UUID, partition: int) -> str | None:
        return self.partition_owners.get((topic_id, partition))

    # --- state -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.deleted:
            return DEAD
        if not self.members:
            return EMPTY
        if self.group_epoch > self.assignment_epoch:
            return ASSIGNING
        for member in self.members.values():
            if member.member_epoch != self.assignment_epoch or member.state != MEMBER_STABLE:
                return RECONCILING
        return STABLE

    def subscribed_topic_names(self, topic_names) -> set[str]:
        """Topic names some member subscribes to, by name or by regex, among ``topic_names``."""
        names: set[str] = set()
        regexes: set[str] = set()
        for member in self.members.values():
            names.update(member.subscribed_topic_names)
            if member.subscribed_topic_regex:
                regexes.add(member.subscribed_topic_regex)
        result = {n for n in names if n in topic_names}
        for regex in regexes:
            result.update(matching_topics(regex, topic_names))
        return result

    def member_topic_names(self, member: ConsumerMember, topic_names) -> set[str]:
        result = {n for n in member.subscribed_topic_names if n in topic_names}
        if member.subscribed_topic_regex:
            result.update(matching_topics(member.subscribed_topic_regex, topic_names))
        return result

    # --- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "group_epoch": self.group_epoch, "assignment_epoch": self.assignment_epoch,
            "assignor": self.assignor_name, "state_timestamp_ms": self.state_timestamp_ms,
            "metadata": {name: [str(m.topic_id), m.partitions] for name, m in self.subscription_metadata.items()},
            "members": [m.to_json() for m in self.members.values()],
            "target": {mid: assignment_to_json(a) for mid, a in self.target.items()},
        }

    @classmethod
    def from_json(cls, group_id: str, data: dict) -> "ConsumerGroup":
        group = cls(group_id)
        group.group_epoch = data.get("group_epoch", 0)
        group.assignment_epoch = data.get("assignment_epoch", 0)
        group.assignor_name = data.get("assignor", "")
        group.subscription_metadata = {
            name: TopicMetadata(uuid.UUID(tid), count) for name, (tid, count) in data.get("metadata", {}).items()
        }
        for member_data in data.get("members", []):
            group.add_member(ConsumerMember.from_json(member_data))
        group.target = {mid: assignment_from_json(a) for mid, a in data.get("target", {}).items()}
        group.state_timestamp_ms = data.get("state_timestamp_ms", wall_clock_ms())
        return group


def encode_group_snapshot(group: ConsumerGroup) -> bytes:
    return json.dumps(group.to_json(), separators=(",", ":"), sort_keys=True).encode()


def decode_group_snapshot(group_id: str, data: bytes) -> ConsumerGroup:
    return ConsumerGroup.from_json(group_id, json.loads(bytes(data).decode()))


_REGEX_CACHE: dict[str, re.Pattern] = {}


def compile_regex(regex: str) -> re.Pattern:
    """Kafka matches RE2/J regexes against whole topic names; Python's ``re`` stands in for RE2/J
    here (the common subset behaves the same; RE2/J rejects backreferences and lookaround, which
    ``re`` accepts). Raises ``re.error`` for an invalid pattern."""
    pattern = _REGEX_CACHE.get(regex)
    if pattern is None:
        pattern = re.compile(regex)
        if len(_REGEX_CACHE) > 1024:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[regex] = pattern
    return pattern


def matching_topics(regex: str, topic_names) -> set[str]:
    """Topics whose whole name matches; internal topics (``__`` prefix) never match, as in Kafka."""
    try:
        pattern = compile_regex(regex)
    except re.error:
        return set()
    return {name for name in topic_names if not name.startswith("__") and pattern.fullmatch(name)}


@dataclass
class Reconciled:
    member_epoch: int
    state: str
    assigned: Assignment
    pending_revocation: Assignment


def reconcile(
    member: ConsumerMember,
    target_epoch: int,
    target: Assignment,
    owned: Assignment | None,
    owner_of: Callable[[uuid.UUID, int], str | None],
) -> Reconciled:
    """The member's next step towards ``target`` (Kafka's CurrentAssignmentBuilder).

    ``owned`` is what the member's heartbeat says it holds (None: not sent, assume unchanged);
    ``owner_of`` says which member holds a partition now.
    """
    current = Reconciled(member.member_epoch, member.state, copy_assignment(member.assigned),
                         copy_assignment(member.pending_revocation))

    def owns_any(partitions: Assignment) -> bool:
        if owned is None:
            return True
        return any(ps & owned.get(tid, set()) for tid, ps in partitions.items())

    def next_assignment(member_epoch: int, assigned: Assignment) -> Reconciled:
        new_assigned: Assignment = {}
        pending_revocation: Assignment = {}
        pending_assignment: Assignment = {}
        unreleased = False
        for tid in set(target) | set(assigned):
            wanted = target.get(tid, set())
            held = assigned.get(tid, set())
            keep = held & wanted
            revoke = held - wanted
            acquire = set()
            for p in wanted - keep:
                holder = owner_of(tid, p)
                if holder is not None and holder != member.member_id:
                    unreleased = True
                else:
                    acquire.add(p)
            if keep:
                new_assigned[tid] = keep
            if revoke:
                pending_revocation[tid] = revoke
            if acquire:
                pending_assignment[tid] = acquire
        if pending_revocation and owns_any(pending_revocation):
            # Revoke first: the member keeps its epoch until it confirms the release.
            return Reconciled(member_epoch, MEMBER_UNREVOKED, new_assigned, pending_revocation)
        for tid, ps in pending_assignment.items():
            new_assigned.setdefault(tid, set()).update(ps)
        return Reconciled(target_epoch, MEMBER_UNRELEASED if unreleased else MEMBER_STABLE, new_assigned, {})

    if current.state == MEMBER_STABLE:
        if member.member_epoch != target_epoch:
            return next_assignment(member.member_epoch, member.assigned)
        return current
    if current.state == MEMBER_UNREVOKED:
        if owns_any(member.pending_revocation):
            return current
        return next_assignment(member.member_epoch, member.assigned)
    # Unreleased partitions: try again to acquire what others have released meanwhile.
    return next_assignment(member.member_epoch, member.assigned)
