"""The consumer group protocol (KIP-848) without sockets: assignors, reconciliation, epochs,
static members, timers and persistence, over a GroupCoordinator with an in-memory record list."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from kio.schema.offset_fetch.v9.request import OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics

from tidelog.groups.assignors import MemberSpec, TopicSpec, parse_assignor_list, range_assign, uniform_assign
from tidelog.groups.consumer_group import (
    ASSIGNING,
    EMPTY,
    MEMBER_STABLE,
    MEMBER_UNRELEASED,
    MEMBER_UNREVOKED,
    RECONCILING,
    STABLE,
    ConsumerMember,
    TopicMetadata,
    matching_topics,
    reconcile,
)
from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
from tidelog.handlers import offset_fetch as offset_fetch_handler
from tidelog.handlers.registry import RequestContext
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.wire import RequestHeader

T1 = uuid.UUID(int=1)
T2 = uuid.UUID(int=2)
TOPICS = {"orders": TopicMetadata(T1, 6), "payments": TopicMetadata(T2, 3)}


class MemoryLog:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    async def open(self) -> None:
        pass

    async def write(self, records):
        self.records.extend(records)

    def replay(self):
        return iter([(offset, key, value) for offset, (key, value) in enumerate(self.records)])


def make_coordinator(log: MemoryLog | None = None, **settings) -> GroupCoordinator:
    base = dict(consumer_heartbeat_interval_ms=100, consumer_session_timeout_ms=60000)
    coordinator = GroupCoordinator(GroupSettings(**{**base, **settings}), log or MemoryLog())
    coordinator.load()
    return coordinator


def run(coro):
    return asyncio.run(coro)


async def join(c: GroupCoordinator, member_id: str, topics=("orders",), group="g", topics_meta=TOPICS, **kw):
    return await c.consumer.heartbeat(group, member_id, 0, rebalance_timeout_ms=kw.pop("rebalance_timeout_ms", 30000),
                                      subscribed_topic_names=list(topics), owned={}, topics=topics_meta, **kw)


async def beat(c: GroupCoordinator, member_id: str, epoch: int, owned=None, group="g", topics_meta=TOPICS, **kw):
    return await c.consumer.heartbeat(group, member_id, epoch, owned=owned, topics=topics_meta, **kw)


def parts(assignment, topic_id=T1) -> set[int]:
    return set((assignment or {}).get(topic_id, set()))


async def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- assignors -----------------------------------------------------------------------------

def test_uniform_assignor_balances_and_is_sticky():
    topics = {T1: TopicSpec("orders", 6)}
    members = {m: MemberSpec(frozenset({T1})) for m in ("a", "b", "c")}
    first = uniform_assign(members, topics, {})
    assert sorted(len(a[T1]) for a in first.values()) == [2, 2, 2]
    assert set().union(*(a[T1] for a in first.values())) == set(range(6))
    # A fourth member: only what must move moves.
    members["d"] = MemberSpec(frozenset({T1}))
    second = uniform_assign(members, topics, first)
    assert sorted(len(a.get(T1, ())) for a in second.values()) == [1, 1, 2, 2]
    kept = sum(len(first[m][T1] & second[m].get(T1, set())) for m in ("a", "b", "c"))
    assert kept == 5
    # A member leaves: its partitions spread, the others keep theirs.
    del members["a"], members["d"]
    third = uniform_assign(members, topics, second)
    assert sorted(len(a[T1]) for a in third.values()) == [3, 3]
    assert second["b"].get(T1, set()) <= third["b"][T1] and second["c"].get(T1, set()) <= third["c"][T1]


def test_uniform_assignor_heterogeneous_subscriptions():
    topics = {T1: TopicSpec("orders", 4), T2: TopicSpec("payments", 2)}
    members = {"a": MemberSpec(frozenset({T1, T2})), "b": MemberSpec(frozenset({T1})), "c": MemberSpec(frozenset({T2}))}
    result = uniform_assign(members, topics, {})
    assert T2 not in result["b"] and T1 not in result["c"]
    assert set().union(*(a.get(T1, set()) for a in result.values())) == set(range(4))
    assert set().union(*(a.get(T2, set()) for a in result.values())) == set(range(2))
    counts = sorted(sum(len(ps) for ps in a.values()) for a in result.values())
    assert counts[-1] - counts[0] <= 1


def test_range_assignor_contiguous_and_copartitioned():
    topics = {T1: TopicSpec("orders", 7), T2: TopicSpec("payments", 7)}
    members = {m: MemberSpec(frozenset({T1, T2})) for m in ("b", "a", "c")}
    result = range_assign(members, topics, {})
    assert result["a"][T1] == {0, 1, 2} and result["b"][T1] == {3, 4} and result["c"][T1] == {5, 6}
    assert all(result[m][T1] == result[m][T2] for m in members)


def test_assignor_config_names():
    assert parse_assignor_list("uniform,range") == ["uniform", "range"]
    assert parse_assignor_list("org.apache.kafka.coordinator.group.assignor.RangeAssignor") == ["range"]
    with pytest.raises(ValueError):
        parse_assignor_list("sticky")


def test_regex_matches_whole_names_and_skips_internal_topics():
    names = ["orders", "orders-eu", "my-orders", "__consumer_offsets"]
    assert matching_topics("orders.*", names) == {"orders", "orders-eu"}
    assert matching_topics("^.*", names) == {"orders", "orders-eu", "my-orders"}


# --- reconciliation (pure) --------------------------------------------------------------------

def test_reconcile_revokes_before_assigning():
    member = ConsumerMember("a", member_epoch=1, assigned={T1: {0, 1, 2}})
    owners = {(T1, p): "a" for p in (0, 1, 2)}
    step = reconcile(member, 2, {T1: {0, 3}}, None, lambda t, p: owners.get((t, p)))
    assert (step.member_epoch, step.state) == (1, MEMBER_UNREVOKED)
    assert step.assigned == {T1: {0}} and step.pending_revocation == {T1: {1, 2}}
    # The member reports it gave 1 and 2 up: it moves to epoch 2 and gets partition 3.
    member.state, member.assigned, member.pending_revocation = step.state, step.assigned, step.pending_revocation
    owners = {(T1, 0): "a"}
    step = reconcile(member, 2, {T1: {0, 3}}, {T1: {0}}, lambda t, p: owners.get((t, p)))
    assert (step.member_epoch, step.state, step.assigned) == (2, MEMBER_STABLE, {T1: {0, 3}})


def test_reconcile_waits_for_partitions_held_by_others():
    member = ConsumerMember("b", member_epoch=0)
    owners = {(T1, 0): "a", (T1, 1): None}
    step = reconcile(member, 3, {T1: {0, 1}}, {}, lambda t, p: owners.get((t, p)))
    assert (step.member_epoch, step.state, step.assigned) == (3, MEMBER_UNRELEASED, {T1: {1}})


# --- the heartbeat protocol -------------------------------------------------------------------

def test_two_members_reconcile_without_double_ownership():
    async def scenario():
        c = make_coordinator()
        r = await join(c, "a")
        assert r.error is ErrorCode.none and r.member_epoch == 1 and parts(r.assignment) == set(range(6))
        assert r.heartbeat_interval_ms == 100
        group = c.registry.consumer_groups["g"]
        assert group.state == STABLE

        r = await join(c, "b")
        assert r.member_epoch == 2 and parts(r.assignment) == set()  # a still holds everything
        assert group.members["b"].state == MEMBER_UNRELEASED and group.state == RECONCILING
        target_b = group.target["b"][T1]
        assert len(target_b) == 3

        r = await beat(c, "a", 1)  # a is told to keep only its target: it must revoke
        assert r.member_epoch == 1 and parts(r.assignment) == set(range(6)) - target_b
        assert group.members["a"].state == MEMBER_UNREVOKED
        r = await beat(c, "b", 2)  # b still cannot have them: a has not confirmed
        assert r.assignment is None and group.owner_of(T1, min(target_b)) == "a"

        r = await beat(c, "a", 1, owned={T1: set(range(6)) - target_b})
        assert r.member_epoch == 2 and parts(r.assignment) == set(range(6)) - target_b
        r = await beat(c, "b", 2)
        assert r.member_epoch == 2 and parts(r.assignment) == target_b
        assert group.state == STABLE

        r = await beat(c, "b", 2, owned={T1: target_b})  # owned partitions sent: assignment repeated
        assert parts(r.assignment) == target_b

        # b leaves: the group epoch moves, a gets everything back at its next heartbeat.
        r = await beat(c, "b", LEAVE)
        assert r.error is ErrorCode.none and r.member_epoch == -1
        r = await beat(c, "a", 2)
        assert r.member_epoch == 3 and parts(r.assignment) == set(range(6))
    run(scenario())


LEAVE = -1


def test_epoch_errors():
    async def scenario():
        c = make_coordinator()
        await join(c, "a")
        assert (await beat(c, "a", 5)).error is ErrorCode.fenced_member_epoch
        assert (await beat(c, "zz", 1)).error is ErrorCode.unknown_member_id
        assert (await beat(c, "a", 1, group="nope")).error is ErrorCode.unknown_member_id
        await join(c, "b")
        await beat(c, "a", 1)
        await beat(c, "a", 1, owned={T1: {0, 1, 2}})  # a reaches epoch 2 keeping 0-2
        group = c.registry.consumer_groups["g"]
        assert group.members["a"].member_epoch == 2 and group.members["a"].previous_member_epoch == 1
        # The answer with epoch 2 may have been lost: epoch 1 with a subset of the assignment is accepted.
        assert (await beat(c, "a", 1, owned={T1: {0, 1}})).error is ErrorCode.none
        assert (await beat(c, "a", 1, owned={T1: {5}})).error is ErrorCode.fenced_member_epoch
        assert (await beat(c, "a", 0 + 0, owned=None)).error is ErrorCode.invalid_request  # epoch 0 needs a full join
    run(scenario())


def test_request_validation():
    async def scenario():
        c = make_coordinator(consumer_max_size=2)
        assert (await c.consumer.heartbeat("g", "", 0, rebalance_timeout_ms=1, subscribed_topic_names=["orders"],
                                           owned={}, topics=TOPICS)).error is ErrorCode.invalid_request
        assert (await c.consumer.heartbeat("g", "m", 0, subscribed_topic_names=["orders"], owned={},
                                           topics=TOPICS)).error is ErrorCode.invalid_request  # no rebalance timeout
        assert (await join(c, "m", topics=())).error is ErrorCode.invalid_request
        assert (await c.consumer.heartbeat("g", "m", 0, rebalance_timeout_ms=1, subscribed_topic_names=["orders"],
                                           owned={T1: {0}}, topics=TOPICS)).error is ErrorCode.invalid_request
        assert (await beat(c, "m", -3)).error is ErrorCode.invalid_request
        assert (await beat(c, "m", -2)).error is ErrorCode.invalid_request  # -2 needs an instance id
        assert (await join(c, "m", server_assignor="sticky")).error is ErrorCode.unsupported_assignor
        assert (await c.consumer.heartbeat("g", "m", 0, rebalance_timeout_ms=1, subscribed_topic_regex="(", owned={},
                                           topics=TOPICS)).error is ErrorCode.invalid_regular_expression
        assert (await join(c, "m", group="")).error is ErrorCode.invalid_group_id
        # v0: the coordinator names the member.
        r = await c.consumer.heartbeat("g0", "", 0, rebalance_timeout_ms=1, subscribed_topic_names=["orders"],
                                       owned={}, topics=TOPICS, api_version=0)
        assert r.error is ErrorCode.none and r.member_id
        assert (await join(c, "m1")).error is ErrorCode.none
        assert (await join(c, "m2")).error is ErrorCode.none
        assert (await join(c, "m3")).error is ErrorCode.group_max_size_reached
    run(scenario())


def test_range_assignor_chosen_by_members():
    async def scenario():
        c = make_coordinator()
        await join(c, "a", server_assignor="range")
        r = await join(c, "b", server_assignor="range")
        group = c.registry.consumer_groups["g"]
        assert group.assignor_name == "range"
        assert group.target["a"][T1] == {0, 1, 2} and group.target["b"][T1] == {3, 4, 5}
    run(scenario())


def test_regex_subscription_and_new_topics():
    async def scenario():
        c = make_coordinator()
        r = await c.consumer.heartbeat("g", "a", 0, rebalance_timeout_ms=1000, subscribed_topic_regex="pay.*",
                                       owned={}, topics=TOPICS)
        assert r.error is ErrorCode.none and parts(r.assignment, T2) == {0, 1, 2} and parts(r.assignment) == set()
        # A new matching topic appears: the next heartbeat bumps the group epoch and assigns it.
        t3 = uuid.UUID(int=3)
        topics = {**TOPICS, "payments-eu": TopicMetadata(t3, 2)}
        r = await beat(c, "a", 1, topics_meta=topics)
        assert r.member_epoch == 2 and parts(r.assignment, t3) == {0, 1}
        # More partitions for a subscribed topic.
        topics["payments"] = TopicMetadata(T2, 5)
        r = await beat(c, "a", 2, topics_meta=topics)
        assert r.member_epoch == 3 and parts(r.assignment, T2) == set(range(5))
    run(scenario())


def test_static_member_leaves_temporarily_and_rejoins():
    async def scenario():
        c = make_coordinator()
        r = await join(c, "a1", instance_id="i-a")
        await join(c, "b")
        await beat(c, "a1", 1, instance_id="i-a")
        r = await beat(c, "a1", 1, owned={T1: {0, 1, 2}}, instance_id="i-a")
        group = c.registry.consumer_groups["g"]
        held = set(group.members["a1"].assigned[T1])
        # Another process with the same instance id cannot join while a1 is there.
        assert (await join(c, "a2", instance_id="i-a")).error is ErrorCode.unreleased_instance_id
        assert (await beat(c, "a2", 2, instance_id="i-a")).error is ErrorCode.fenced_instance_id
        r = await beat(c, "a1", -2, instance_id="i-a")
        assert r.error is ErrorCode.none and r.member_epoch == -2
        epoch = group.group_epoch
        # While it is away its partitions stay its own.
        await beat(c, "b", group.members["b"].member_epoch)
        assert all(group.owner_of(T1, p) == "a1" for p in held)
        r = await join(c, "a2", instance_id="i-a")
        assert r.error is ErrorCode.none and parts(r.assignment) == held and group.group_epoch == epoch
        assert "a1" not in group.members and group.static_members["i-a"] == "a2"
    run(scenario())


def test_session_and_rebalance_timeouts_remove_members():
    async def scenario():
        c = make_coordinator(consumer_session_timeout_ms=150)
        await join(c, "a")
        group = c.registry.consumer_groups["g"]
        await wait_for(lambda: "a" not in group.members)
        assert group.state == EMPTY and group.group_epoch == 2
        # A member that never confirms its revocation is removed after its rebalance timeout.
        c2 = make_coordinator()
        await join(c2, "a", rebalance_timeout_ms=100)
        await join(c2, "b")
        await beat(c2, "a", 1)
        group2 = c2.registry.consumer_groups["g"]
        assert group2.members["a"].state == MEMBER_UNREVOKED
        await wait_for(lambda: "a" not in group2.members)
        r = await beat(c2, "b", 2)
        assert parts(r.assignment) == set(range(6))
        c.stop()
        c2.stop()
    run(scenario())


def test_state_survives_a_restart():
    async def scenario():
        log = MemoryLog()
        c = make_coordinator(log)
        await join(c, "a")
        await join(c, "b")
        await beat(c, "a", 1)
        await beat(c, "a", 1, owned={T1: set(c.registry.consumer_groups["g"].members["a"].assigned[T1])})
        await beat(c, "b", 2)
        before = c.registry.consumer_groups["g"].to_json()
        c.stop()
        c2 = make_coordinator(log)
        group = c2.registry.consumer_groups["g"]
        assert group.to_json() == before and group.state == STABLE
        assert all(group.members[m].session_timer is not None for m in ("a", "b"))
        r = await beat(c2, "b", 2)
        assert r.error is ErrorCode.none and r.member_epoch == 2
        c2.stop()
    run(scenario())


def test_offsets_and_classic_interplay():
    async def scenario():
        c = make_coordinator()
        await join(c, "a")
        offsets = {("orders", 0): (10, -1, "")}
        assert await c.offsets.commit_offsets("g", 1, "a", None, offsets, api_version=9) == {("orders", 0): ErrorCode.none}
        assert (await c.offsets.commit_offsets("g", 0, "a", None, offsets, api_version=9))[("orders", 0)] is \
            ErrorCode.stale_member_epoch
        assert (await c.offsets.commit_offsets("g", 1, "x", None, offsets, api_version=9))[("orders", 0)] is \
            ErrorCode.unknown_member_id
        assert (await c.offsets.commit_offsets("g", -1, "", None, offsets, api_version=9))[("orders", 0)] is \
            ErrorCode.unknown_member_id  # not empty: admin commits are refused
        assert (await c.offsets.commit_offsets("nope", 3, "m", None, offsets, api_version=9))[("orders", 0)] is \
            ErrorCode.group_id_not_found
        assert c.offsets.validate_offset_fetch("g", "a", 0) is ErrorCode.stale_member_epoch
        assert c.offsets.validate_offset_fetch("g", None, -1) is ErrorCode.none
        # Classic requests on a consumer group.
        joined = await c.classic.join_group("g", "", None, "cid", "/h", 10000, 10000, "consumer", [("range", b"")])
        assert joined.error is ErrorCode.inconsistent_group_protocol
        assert c.classic.heartbeat("g", 1, "a", None) is ErrorCode.unknown_member_id
        assert c.admin.describe_group("g") is None
        assert c.admin.list_groups(types=["consumer"]) == [("g", "consumer", STABLE, "consumer")]
        assert c.admin.list_groups(types=["classic"]) == []
        assert (await c.admin.delete_groups(["g"]))["g"] is ErrorCode.non_empty_group
        assert (await beat(c, "a", LEAVE)).member_epoch == -1
        assert c.admin.list_groups(states=["empty"]) == [("g", "consumer", EMPTY, "consumer")]
        assert (await c.offsets.commit_offsets("g", -1, "", None, offsets, api_version=9))[("orders", 0)] is ErrorCode.none
        assert (await c.admin.delete_groups(["g"]))["g"] is ErrorCode.none
        assert "g" not in c.registry.consumer_groups and c.offsets.fetch_offsets("g", [("orders", 0)])[0][2] is None
        # A classic group with offsets only becomes a consumer group; one with members does not.
        await c.offsets.commit_offsets("assigned", -1, "", None, offsets)
        assert (await join(c, "m", group="assigned")).error is ErrorCode.none
        assert "assigned" in c.registry.consumer_groups and c.offsets.fetch_offsets("assigned", [("orders", 0)])[0][2].offset == 10
        c.stop()
    run(scenario())


class HeldLog(MemoryLog):
    """A MemoryLog whose next write waits until ``release`` is set (a slow ``__consumer_offsets`` append)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_next = False
        self.release = asyncio.Event()

    async def write(self, records):
        if self.hold_next:
            self.hold_next = False
            await self.release.wait()
        self.records.extend(records)


async def offset_fetch(c: GroupCoordinator, member_id: str, epoch: int, topic: str, partition: int):
    """OffsetFetch v9 with require_stable (as librdkafka sends it) through its handler: (error, offset)."""
    ctx = RequestContext(header=RequestHeader(offset_fetch_handler.API_KEY, 9, 1, "t"), peer="test", flexible=True,
                         groups=c, group_coordinator_error=lambda: None)
    request = OffsetFetchRequest(require_stable=True, groups=(OffsetFetchRequestGroup(
        group_id="g", member_id=member_id, member_epoch=epoch,
        topics=(OffsetFetchRequestTopics(name=topic, partition_indexes=(partition,)),)),))
    group = (await offset_fetch_handler.handle(ctx, request)).groups[0]
    assert group.error_code is ErrorCode.none
    answer = group.topics[0].partitions[0]
    return answer.error_code, answer.committed_offset


def test_new_owner_never_fetches_an_offset_a_commit_in_flight_replaces():
    """A member's commit may still be being written when its next heartbeat (requests of one
    connection run concurrently) gives the partition up: the new owner's OffsetFetch
    (require_stable) is answered UNSTABLE_OFFSET_COMMIT until the commit is durable, never the
    offset it replaces (the records between would be consumed twice)."""
    async def scenario():
        log = HeldLog()
        c = make_coordinator(log)
        await join(c, "a")
        await beat(c, "a", 1, owned={T1: set(range(6))})
        await join(c, "b")
        group = c.registry.consumer_groups["g"]
        moving = min(group.target["b"][T1])
        assert await c.offsets.commit_offsets("g", 1, "a", None, {("orders", moving): (5, -1, "")}, api_version=9) == \
            {("orders", moving): ErrorCode.none}
        r = await beat(c, "a", 1)  # a must revoke b's partitions
        kept = parts(r.assignment)
        assert moving not in kept

        log.hold_next = True  # a commits what it consumed of the partition before giving it up
        commit = asyncio.ensure_future(
            c.offsets.commit_offsets("g", 1, "a", None, {("orders", moving): (10, -1, "")}, api_version=9))
        await wait_for(lambda: not log.hold_next)
        assert (await beat(c, "a", 1, owned={T1: kept})).member_epoch == 2  # revocation acknowledged
        assert moving in parts((await beat(c, "b", 2)).assignment)
        assert await offset_fetch(c, "b", 2, "orders", moving) == (ErrorCode.unstable_offset_commit, -1)

        log.release.set()
        assert await commit == {("orders", moving): ErrorCode.none}
        assert await offset_fetch(c, "b", 2, "orders", moving) == (ErrorCode.none, 10)
        c.stop()
    run(scenario())


def test_assigning_state_is_transient():
    async def scenario():
        c = make_coordinator()
        await join(c, "a")
        group = c.registry.consumer_groups["g"]
        group.group_epoch += 1
        assert group.state == ASSIGNING
        await beat(c, "a", 1)
        assert group.assignment_epoch == group.group_epoch
        c.stop()
    run(scenario())
