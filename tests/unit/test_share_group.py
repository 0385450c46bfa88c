"""Share group membership (ShareGroupHeartbeat), Kafka's SimpleAssignor for share groups, and the
ShareFetch session cache."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.share_group import (
    ShareGroupCoordinator,
    ShareGroupSettings,
    TopicInfo,
    decode_group_snapshot,
    encode_group_snapshot,
    simple_assign,
)
from tidelog.queues.share_session import ContextKind, ShareSessionCache, next_epoch

T1 = uuid.UUID(int=1)
T2 = uuid.UUID(int=2)
TOPICS = {"orders": TopicInfo(T1, 6), "audit": TopicInfo(T2, 1)}


class FakeTimers:
    """call_later that only records; tests fire the callbacks themselves."""

    def __init__(self) -> None:
        self.handles: list[tuple[float, object, tuple, asyncio.Handle]] = []

    def call_later(self, delay, callback, *args):
        handle = asyncio.get_running_loop().call_later(3600, lambda: None)
        self.handles.append((delay, callback, args, handle))
        return handle

    def fire_live(self):
        for delay, callback, args, handle in list(self.handles):
            if not handle.cancelled():
                handle.cancel()
                callback(*args)


class Harness:
    def __init__(self, **settings) -> None:
        self.timers = FakeTimers()
        self.initialized: list[tuple[str, dict]] = []
        self.persisted: list[bytes] = []
        self.removed: list[tuple[str, str, bool]] = []
        self.fail_initialize = False
        self.coordinator = ShareGroupCoordinator(
            ShareGroupSettings(**settings), initialize=self.initialize, persist=self.persist,
            on_member_removed=self.on_removed, call_later=self.timers.call_later,
            is_other_group=lambda g: g == "classic-group", has_state=lambda g: g in self.with_state)
        self.with_state: set[str] = set()

    async def initialize(self, group_id, partitions):
        if self.fail_initialize:
            raise KafkaError(ErrorCode.coordinator_not_available, "state topic not writable")
        self.initialized.append((group_id, {t: sorted(ps) for t, ps in partitions.items()}))

    async def persist(self, group):
        self.persisted.append(encode_group_snapshot(group))

    def on_removed(self, group_id, member_id, failed):
        self.removed.append((group_id, member_id, failed))

    async def beat(self, member, epoch, topics=None, group="g", metadata=TOPICS, **kw):
        return await self.coordinator.heartbeat(group, member, epoch, subscribed_topic_names=topics, topics=metadata, **kw)


def run(coro):
    return asyncio.run(coro)


def total(assignment):
    return sum(len(ps) for ps in assignment.values())


def test_join_assigns_and_initialises_the_share_partitions():
    async def scenario():
        h = Harness()
        r = await h.beat("m1", 0, ["orders"])
        assert (r.error, r.member_id, r.member_epoch, r.heartbeat_interval_ms) == (ErrorCode.none, "m1", 1, 5000)
        assert r.assignment == {T1: set(range(6))}
        assert h.initialized == [("g", {T1: [0, 1, 2, 3, 4, 5]})]
        r = await h.beat("m1", 1)
        assert (r.member_epoch, r.assignment) == (1, None)  # unchanged: not sent again
        assert h.coordinator.describe("g").state == "Stable"
        return h

    h = run(scenario())
    assert len(h.persisted) == 1


def test_members_share_partitions_when_there_are_more_members_than_partitions():
    async def scenario():
        h = Harness()
        a = await h.beat("a", 0, ["audit"])
        b = await h.beat("b", 0, ["audit"])
        a2 = await h.beat("a", a.member_epoch)
        assert b.assignment == {T2: {0}} and a2.assignment is None and a2.member_epoch == b.member_epoch == 2
        assert h.initialized == [("g", {T2: [0]})]  # once

    run(scenario())


def test_three_members_split_six_partitions_and_rebalance_when_one_leaves():
    async def scenario():
        h = Harness()
        epochs = {}
        for m in "abc":
            epochs[m] = (await h.beat(m, 0, ["orders"])).member_epoch
        results = {m: await h.beat(m, epochs[m]) for m in "abc"}
        group = h.coordinator.describe("g")
        assert [total(group.members[m].assigned) for m in "abc"] == [2, 2, 2]
        assert all(r.member_epoch == group.assignment_epoch == 3 for r in results.values())
        left = await h.coordinator.heartbeat("g", "c", -1)
        assert (left.error, left.member_epoch) == (ErrorCode.none, -1)
        assert h.removed == [("g", "c", False)]
        a = await h.beat("a", 3)
        b = await h.beat("b", 3)
        assert total(a.assignment) == total(b.assignment) == 3
        assert group.group_epoch == 4

    run(scenario())


def test_session_timeout_removes_a_silent_member():
    async def scenario():
        h = Harness(session_timeout_ms=1000)
        await h.beat("a", 0, ["orders"])
        r = await h.beat("b", 0, ["orders"])
        await h.beat("b", r.member_epoch)
        assert h.timers.handles[-1][0] == 1.0
        # only b's latest timer and a's first are live; fire them all: both silent members go
        h.timers.fire_live()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sorted(h.removed) == [("g", "a", True), ("g", "b", True)]
        assert h.coordinator.describe("g").state == "Empty"
        r = await h.beat("a", 1)
        assert r.error == ErrorCode.unknown_member_id

    run(scenario())


@pytest.mark.parametrize("member, epoch, topics, rack, error, message", [
    ("", 0, ["orders"], None, ErrorCode.invalid_request, "MemberId can't be empty."),
    ("m", 0, None, None, ErrorCode.invalid_request, "SubscribedTopicNames must be set in first request."),
    ("m", 0, [], None, ErrorCode.invalid_request, "SubscribedTopicNames must be set in first request."),
    ("m", 0, ["orders"], " ", ErrorCode.invalid_request, "RackId can't be empty."),
    ("m", -2, None, None, ErrorCode.invalid_request, "MemberEpoch is invalid."),
    ("m", 3, None, None, ErrorCode.group_id_not_found, "Share group g not found."),
    ("m", -1, None, None, ErrorCode.group_id_not_found, "Share group g not found."),
])
def test_invalid_heartbeats(member, epoch, topics, rack, error, message):
    async def scenario():
        h = Harness()
        r = await h.beat(member, epoch, topics, rack_id=rack)
        assert (r.error, r.message) == (error, message)
        assert "g" not in h.coordinator.groups

    run(scenario())


def test_a_group_known_only_by_its_state_answers_unknown_member_so_members_rejoin():
    """After a restart membership is gone but the share-partition state is not: a member's heartbeat
    gets UNKNOWN_MEMBER_ID (it rejoins with epoch 0), not GROUP_ID_NOT_FOUND (fatal to clients)."""
    async def scenario():
        h = Harness()
        h.with_state.add("g")
        assert (await h.beat("m", 3)).error == ErrorCode.unknown_member_id
        assert (await h.beat("m", -1)).error == ErrorCode.unknown_member_id
        assert (await h.beat("m", 0, ["orders"])).error == ErrorCode.none

    run(scenario())


def test_epoch_fencing_and_unknown_members():
    async def scenario():
        h = Harness()
        await h.beat("a", 0, ["orders"])
        r = await h.beat("a", 5)
        assert r.error == ErrorCode.fenced_member_epoch
        await h.beat("b", 0, ["orders"])  # epoch 2
        r = await h.beat("a", 1)  # the previous epoch: its last answer may have been lost
        assert (r.error, r.member_epoch) == (ErrorCode.none, 2)
        r = await h.beat("a", 0, ["orders"])  # a rejoin (the client lost its state)
        assert (r.error, r.member_epoch, total(r.assignment)) == (ErrorCode.none, 2, 3)
        assert (await h.beat("zz", 2)).error == ErrorCode.unknown_member_id
        assert (await h.coordinator.heartbeat("g", "zz", -1)).error == ErrorCode.unknown_member_id
        assert (await h.beat("x", 0, ["orders"], group="classic-group")).error == ErrorCode.group_id_not_found

    run(scenario())


def test_group_max_size():
    async def scenario():
        h = Harness(max_size=2)
        await h.beat("a", 0, ["orders"])
        await h.beat("b", 0, ["orders"])
        r = await h.beat("c", 0, ["orders"])
        assert r.error == ErrorCode.group_max_size_reached

    run(scenario())


def test_failed_initialisation_changes_nothing_and_the_client_retries():
    async def scenario():
        h = Harness()
        h.fail_initialize = True
        r = await h.beat("a", 0, ["orders"])
        assert r.error == ErrorCode.coordinator_not_available
        assert "g" not in h.coordinator.groups and not h.persisted
        h.fail_initialize = False
        r = await h.beat("a", 0, ["orders"])
        assert r.error == ErrorCode.none and total(r.assignment) == 6

    run(scenario())


def test_new_partitions_and_new_topics_are_initialised_and_assigned():
    async def scenario():
        h = Harness()
        r = await h.beat("a", 0, ["orders", "missing"])
        assert total(r.assignment) == 6
        grown = {"orders": TopicInfo(T1, 8), "missing": TopicInfo(T2, 2)}
        r = await h.beat("a", 1, metadata=grown)
        assert r.member_epoch == 2 and r.assignment == {T1: set(range(8)), T2: {0, 1}}
        assert h.initialized[1] == ("g", {T1: [6, 7], T2: [0, 1]})
        r = await h.beat("a", 2, ["missing"], metadata=grown)  # subscription change drops orders
        assert r.assignment == {T2: {0, 1}}

    run(scenario())


def test_snapshot_round_trip_and_reload():
    async def scenario():
        h = Harness()
        await h.beat("a", 0, ["orders"], rack_id="r1", client_id="cid", client_host="/127.0.0.1")
        await h.beat("b", 0, ["orders", "audit"])
        group = h.coordinator.describe("g")
        copy = decode_group_snapshot("g", encode_group_snapshot(group))
        assert copy.to_json() == group.to_json()
        assert copy.members["a"].rack_id == "r1" and copy.members["a"].client_host == "/127.0.0.1"
        other = Harness()
        other.coordinator.load(copy)
        r = await other.beat("b", copy.members["b"].member_epoch)
        assert r.error == ErrorCode.none and r.member_epoch == group.members["b"].member_epoch
        assert len(other.timers.handles) == 3  # two members' session timers after loading, then b's

    run(scenario())


def test_describe_list_delete():
    async def scenario():
        h = Harness()
        await h.beat("a", 0, ["orders"])
        with pytest.raises(KafkaError) as info:
            h.coordinator.delete("g")
        assert info.value.error_code == ErrorCode.non_empty_group
        assert [g.group_id for g in h.coordinator.list_groups(["stable"])] == ["g"]
        assert h.coordinator.list_groups(["empty"]) == []
        await h.coordinator.heartbeat("g", "a", -1)
        assert h.coordinator.delete("g").state == "Dead"
        with pytest.raises(KafkaError) as info:
            h.coordinator.describe("g")
        assert info.value.error_code == ErrorCode.group_id_not_found

    run(scenario())


def test_group_config_overrides_heartbeat_interval_and_session_timeout():
    async def scenario():
        timers = FakeTimers()
        coordinator = ShareGroupCoordinator(
            ShareGroupSettings(), call_later=timers.call_later,
            group_config=lambda g: {"share.heartbeat.interval.ms": 7000, "share.session.timeout.ms": 50000})
        r = await coordinator.heartbeat("g", "a", 0, subscribed_topic_names=["orders"], topics=TOPICS)
        assert r.heartbeat_interval_ms == 7000 and timers.handles[-1][0] == 50.0

    run(scenario())


# --- SimpleAssignor ----------------------------------------------------------------------------------
def test_simple_assignor_examples():
    subs = {m: frozenset({T1}) for m in "abc"}
    result = simple_assign(subs, {T1: 6}, {})
    assert [total(result[m]) for m in "abc"] == [2, 2, 2]
    # five members, two partitions: each partition shared by three, members get one each (6 slots, 5 members)
    subs5 = {m: frozenset({T1}) for m in "abcde"}
    result = simple_assign(subs5, {T1: 2}, {})
    holders = Counter(p for a in result.values() for p in a[T1])
    assert all(total(result[m]) >= 1 for m in "abcde") and set(holders) == {0, 1} and max(holders.values()) <= 3
    # heterogeneous: each topic among its own subscribers
    result = simple_assign({"a": frozenset({T1}), "b": frozenset({T1, T2})}, {T1: 2, T2: 1}, {})
    assert result["b"].get(T2) == {0} and total(result["a"]) == 1 and len(result["b"].get(T1, ())) == 1


@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 3))
def test_simple_assignor_is_balanced_complete_and_sticky(n_members, n_partitions, seed):
    members = [f"m{i}" for i in range(n_members)]
    subs = {m: frozenset({T1}) for m in members}
    first = simple_assign(subs, {T1: n_partitions}, {})
    counts = [total(first[m]) for m in members]
    holders = Counter(p for a in first.values() for p in a.get(T1, ()))
    assert set(holders) == set(range(n_partitions))  # every partition has someone
    sharing = -(-n_members // n_partitions)
    assert max(holders.values()) <= sharing
    assert max(counts) - min(counts) <= 1
    assert simple_assign(subs, {T1: n_partitions}, first) == first  # nothing changed: nothing moves
    # one member more: only what balance needs moves
    subs[f"m{n_members}"] = frozenset({T1})
    second = simple_assign(subs, {T1: n_partitions}, first)
    kept = sum(len(first[m].get(T1, set()) & second[m].get(T1, set())) for m in members)
    if n_members + 1 <= n_partitions:  # no sharing: only what the newcomer takes moves
        assert kept == n_partitions - total(second[f"m{n_members}"])


# --- the share session cache ---------------------------------------------------------------------------
P0, P1, P2 = (T1, 0), (T1, 1), (T2, 0)


def test_share_session_epochs():
    cache = ShareSessionCache(10)
    context = cache.share_fetch("g", "m", 0, [P0, P1], connection_id="c1")
    assert context.kind == ContextKind.INITIAL and context.partitions == [P0, P1] and context.session.epoch == 1
    context = cache.share_fetch("g", "m", 1, [P2], forgotten=[P0], has_acknowledgements=True)
    assert context.kind == ContextKind.SUBSEQUENT and context.partitions == [P1, P2]
    for epoch, error in ((1, ErrorCode.invalid_share_session_epoch), (5, ErrorCode.invalid_share_session_epoch),
                         (-7, ErrorCode.invalid_share_session_epoch)):
        with pytest.raises(KafkaError) as info:
            cache.share_fetch("g", "m", epoch, [])
        assert info.value.error_code == error
    assert cache.share_acknowledge("g", "m", 2).epoch == 3
    with pytest.raises(KafkaError) as info:
        cache.share_acknowledge("g", "m", 0)
    assert info.value.error_code == ErrorCode.invalid_share_session_epoch
    final = cache.share_fetch("g", "m", -1, [])
    assert final.kind == ContextKind.FINAL and final.partitions == []
    assert cache.remove("g", "m") is final.session and len(cache) == 0
    for call in (lambda: cache.share_fetch("g", "m", 4, []), lambda: cache.share_fetch("g", "m", -1, []),
                 lambda: cache.share_acknowledge("g", "m", 4)):
        with pytest.raises(KafkaError) as info:
            call()
        assert info.value.error_code == ErrorCode.share_session_not_found


def test_initial_fetch_replaces_the_old_session_and_refuses_acknowledgements():
    cache = ShareSessionCache(10)
    cache.share_fetch("g", "m", 0, [P0])
    with pytest.raises(KafkaError) as info:
        cache.share_fetch("g", "m", 0, [P1], has_acknowledgements=True)
    assert info.value.error_code == ErrorCode.invalid_request
    context = cache.share_fetch("g", "m", 0, [P1])
    assert context.partitions == [P1] and len(cache) == 1 and cache.total_partitions() == 1


def test_share_session_limit_and_disconnects():
    cache = ShareSessionCache(2)
    cache.share_fetch("g", "a", 0, [P0], connection_id="c1")
    cache.share_fetch("g", "b", 0, [P0], connection_id="c1")
    with pytest.raises(KafkaError) as info:
        cache.share_fetch("g", "c", 0, [P0], connection_id="c2")
    assert info.value.error_code == ErrorCode.share_session_limit_reached
    removed = cache.on_disconnect("c1")
    assert sorted(s.member_id for s in removed) == ["a", "b"] and len(cache) == 0 and cache.evictions == 2
    assert cache.on_disconnect("c1") == []
    cache.share_fetch("g", "c", 0, [P0], connection_id="c2")


def test_epochs_wrap():
    assert next_epoch(0) == 1 and next_epoch(2**31 - 1) == 1 and next_epoch(-1) == -1
