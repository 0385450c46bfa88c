"""The classic group state machine without sockets: a GroupCoordinator over an in-memory record list."""

from __future__ import annotations

import asyncio
import struct

from tidelog.groups.classic_group import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
)
from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
from tidelog.protocol.consumer_protocol import subscription_topics
from tidelog.groups.records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_group_key,
    encode_group_value,
    encode_offset_key,
    encode_offset_value,
)
from tidelog.protocol.errors import ErrorCode


class MemoryLog:
    """A GroupLog keeping records in a list (the real one is the __consumer_offsets partition)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    async def open(self) -> None:
        pass

    async def write(self, records):
        await asyncio.sleep(0)
        self.records.extend(records)

    def replay(self):
        return iter([(offset, key, value) for offset, (key, value) in enumerate(self.records)])


def subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


SETTINGS = dict(initial_rebalance_delay_ms=50, min_session_timeout_ms=10, max_session_timeout_ms=60000)


def run(coro_fn, log: MemoryLog | None = None, **settings):
    async def main():
        coordinator = GroupCoordinator(GroupSettings(**{**SETTINGS, **settings}), log or MemoryLog())
        await coordinator.start()
        try:
            return await asyncio.wait_for(coro_fn(coordinator), 10)
        finally:
            coordinator.stop()

    return asyncio.run(main())


def join(c, group="g", member_id="", instance=None, session_ms=5000, rebalance_ms=2000, protocols=None, v4=False):
    return c.classic.join_group(group, member_id, instance, "client", "/127.0.0.1", session_ms, rebalance_ms, "consumer",
                        protocols or [("range", subscription("t"))], require_known_member_id=v4)


async def form_group(c, n, group="g", **kw):
    results = await asyncio.gather(*(join(c, group, **kw) for _ in range(n)))
    leader = next(r for r in results if r.member_id == r.leader_id)
    assignments = {r.member_id: r.member_id.encode() for r in results}
    syncs = await asyncio.gather(*(
        c.classic.sync_group(group, r.generation_id, r.member_id, None, "consumer", r.protocol_name,
                     assignments if r is leader else {})
        for r in results
    ))
    return results, syncs


def test_members_joining_together_share_one_generation():
    async def scenario(c):
        results, syncs = await form_group(c, 3)
        assert {r.error for r in results} == {ErrorCode.none}
        assert {r.generation_id for r in results} == {1}
        leaders = [r for r in results if r.members]
        assert len(leaders) == 1 and len(leaders[0].members) == 3
        assert all(s.error is ErrorCode.none and s.assignment == r.member_id.encode() for r, s in zip(results, syncs))
        assert c.registry.groups["g"].state == STABLE

    run(scenario)


def test_a_new_groups_first_rebalance_waits_the_initial_delay_for_members_arriving_apart():
    """group.initial.rebalance.delay.ms: a member that arrives within the delay after the first
    lands in the same first generation, and the first waits at least the delay (the test
    brokers set it to 100 ms, tests/conftest.py, so the other tests do not show it)."""
    async def scenario(c):
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(join(c))
        await asyncio.sleep(0.05)  # apart, and well within the delay even on a loaded machine
        assert not first.done() and c.registry.groups["g"].state == PREPARING_REBALANCE
        second = await join(c)
        first = await first
        assert loop.time() - started >= 1.0
        assert first.generation_id == second.generation_id == 1
        assert {r.error for r in (first, second)} == {ErrorCode.none}
        assert len(next(r for r in (first, second) if r.members).members) == 2

    run(scenario, initial_rebalance_delay_ms=1000)


def test_member_id_required_then_join_with_it():
    async def scenario(c):
        first = await join(c, v4=True)
        assert first.error is ErrorCode.member_id_required and first.member_id.startswith("client-")
        assert c.registry.groups["g"].state == EMPTY
        second = await join(c, member_id=first.member_id, v4=True)
        assert second.error is ErrorCode.none and second.member_id == first.member_id and second.generation_id == 1
        unknown = await join(c, member_id="nobody", v4=True)
        assert unknown.error is ErrorCode.unknown_member_id

    run(scenario)


def test_session_timeout_evicts_member_and_rebalances():
    async def scenario(c):
        results, _ = await form_group(c, 2, session_ms=300)
        survivor, dead = results
        # Only the survivor keeps heartbeating; the other is evicted after its session timeout.
        for _ in range(20):
            error = c.classic.heartbeat("g", survivor.generation_id, survivor.member_id, None)
            if error is ErrorCode.rebalance_in_progress:
                break
            await asyncio.sleep(0.05)
        assert error is ErrorCode.rebalance_in_progress
        rejoin = await join(c, member_id=survivor.member_id, session_ms=300)
        assert rejoin.generation_id == 2 and [m[0] for m in rejoin.members] == [survivor.member_id]
        assert c.classic.heartbeat("g", 1, dead.member_id, None) is ErrorCode.unknown_member_id
        assert c.classic.heartbeat("g", 1, survivor.member_id, None) is ErrorCode.illegal_generation

    run(scenario)


def test_leave_group_rebalances_remaining_members():
    async def scenario(c):
        (a, b), _ = await form_group(c, 2)
        error, member_errors = c.classic.leave_group("g", [(b.member_id, None), ("ghost", None)])
        assert error is ErrorCode.none and member_errors == [ErrorCode.none, ErrorCode.unknown_member_id]
        assert c.registry.groups["g"].state == PREPARING_REBALANCE
        rejoin = await join(c, member_id=a.member_id)
        assert rejoin.generation_id == 2 and len(rejoin.members) == 1
        assert c.registry.groups["g"].state == COMPLETING_REBALANCE
        assert c.classic.leave_group("missing", [("x", None)]) == (ErrorCode.none, [ErrorCode.unknown_member_id])

    run(scenario)


def test_last_member_leaving_empties_the_group_at_once():
    """As Kafka's tryCompleteElseWatch: the last member's LeaveGroup completes the rebalance it
    starts (nobody left to wait for) before it is answered, so a ListGroups sent after the answer
    finds the group Empty. It waited for the join timer (a SessionTimer, a poll and five loop
    turns after it fell due): confluent-kafka's admin client listing the groups right after a
    consumer's close found none Empty."""
    async def scenario(c):
        (a,), _ = await form_group(c, 1)
        assert c.registry.groups["g"].state == STABLE
        assert c.classic.leave_group("g", [(a.member_id, None)]) == (ErrorCode.none, [ErrorCode.none])
        assert c.registry.groups["g"].state == EMPTY

    run(scenario)


def test_static_members_leaving_by_instance_id_empty_the_group_once_the_last_has_left():
    """Kafka's removeMemberAndUpdateGroup for static members: one leaving (by its instance id)
    starts a rebalance that waits for the other to rejoin (hasAllMembersJoined); the other
    leaving too completes it at once (PreparingRebalance: the join's check), Empty before the
    LeaveGroup is answered."""
    async def scenario(c):
        results = await asyncio.gather(join(c, instance="i-1"), join(c, instance="i-2"))
        leader = next(r for r in results if r.members)
        await asyncio.gather(*(
            c.classic.sync_group("g", r.generation_id, r.member_id, None, None, None,
                                 {x.member_id: b"" for x in results} if r is leader else {})
            for r in results
        ))
        group = c.registry.groups["g"]
        assert group.state == STABLE
        assert c.classic.leave_group("g", [("", "i-1")]) == (ErrorCode.none, [ErrorCode.none])
        assert group.state == PREPARING_REBALANCE  # i-2 has not rejoined: nobody completes for it
        assert c.classic.leave_group("g", [("", "i-2")]) == (ErrorCode.none, [ErrorCode.none])
        assert group.state == EMPTY and not group.static_members

    run(scenario)


def test_a_pending_member_keeps_the_group_from_emptying_when_the_last_member_leaves():
    """Kafka's hasAllMembersJoined counts pending members (KIP-394, joined without an id): the
    last member's leave starts a rebalance that waits for the pending member, which then joins
    it alone; the group is not emptied under it."""
    async def scenario(c):
        (a,), _ = await form_group(c, 1)
        pending = await join(c, v4=True)
        assert pending.error is ErrorCode.member_id_required
        group = c.registry.groups["g"]
        assert c.classic.leave_group("g", [(a.member_id, None)]) == (ErrorCode.none, [ErrorCode.none])
        assert group.state == PREPARING_REBALANCE
        joined = await join(c, member_id=pending.member_id, v4=True)
        assert joined.error is ErrorCode.none and joined.member_id == pending.member_id
        assert group.state == COMPLETING_REBALANCE and list(group.members) == [pending.member_id]

    run(scenario)


def test_static_member_restart_keeps_assignment_and_fences_the_old_id():
    async def scenario(c):
        results = await asyncio.gather(join(c, instance="i-1"), join(c, instance="i-2"))
        leader = next(r for r in results if r.members)
        follower = next(r for r in results if not r.members)
        await asyncio.gather(*(
            c.classic.sync_group("g", r.generation_id, r.member_id, None, None, None,
                         {x.member_id: b"A-" + x.member_id.encode() for x in results} if r is leader else {})
            for r in results
        ))
        instance = "i-1" if follower is results[0] else "i-2"
        again = await join(c, instance=instance)
        assert again.error is ErrorCode.none and again.member_id != follower.member_id
        assert again.generation_id == 1 and c.registry.groups["g"].state == STABLE  # no rebalance
        sync = await c.classic.sync_group("g", 1, again.member_id, instance, None, None, {})
        assert sync.assignment == b"A-" + follower.member_id.encode()
        assert c.classic.heartbeat("g", 1, follower.member_id, instance) is ErrorCode.fenced_instance_id
        assert c.classic.heartbeat("g", 1, again.member_id, instance) is ErrorCode.none

    run(scenario)


def test_protocol_selection_and_inconsistent_protocols():
    async def scenario(c):
        both = [("cooperative-sticky", b"1"), ("range", b"2")]
        results = await asyncio.gather(join(c, protocols=both), join(c, protocols=[("range", b"3"), ("cooperative-sticky", b"4")]),
                                       join(c, protocols=both))
        assert {r.protocol_name for r in results} == {"cooperative-sticky"}
        bad = await join(c, protocols=[("roundrobin", b"")])
        assert bad.error is ErrorCode.inconsistent_group_protocol

    run(scenario)


def test_commit_validation():
    async def scenario(c):
        key = ("t", 0)
        assert await c.offsets.commit_offsets("solo", -1, "", None, {key: (5, -1, "m")}) == {key: ErrorCode.none}
        assert c.offsets.fetch_offsets("solo", [key])[0][2].offset == 5
        assert (await c.offsets.commit_offsets("nogroup", 3, "m", None, {key: (1, -1, None)}))[key] is ErrorCode.illegal_generation
        assert (await c.offsets.commit_offsets("solo", -1, "", None, {key: (1, -1, "x" * 5000)}))[key] is ErrorCode.offset_metadata_too_large
        results = await asyncio.gather(join(c), join(c))
        assert c.registry.groups["g"].state == COMPLETING_REBALANCE
        r = results[0]
        assert (await c.offsets.commit_offsets("g", 1, r.member_id, None, {key: (1, -1, None)}))[key] is ErrorCode.rebalance_in_progress
        assert (await c.offsets.commit_offsets("g", -1, "", None, {key: (1, -1, None)}))[key] is ErrorCode.unknown_member_id
        assert (await c.offsets.commit_offsets("g", 7, r.member_id, None, {key: (1, -1, None)}))[key] is ErrorCode.illegal_generation
        assert (await c.offsets.commit_offsets("g", 1, "who", None, {key: (1, -1, None)}))[key] is ErrorCode.unknown_member_id

    run(scenario)


def test_state_reloads_from_the_log():
    log = MemoryLog()

    async def first(c):
        await form_group(c, 2)
        await c.offsets.commit_offsets("plain", -1, "", None, {("t", 0): (42, 3, "meta"), ("t", 1): (7, -1, None)})
        await c.offsets.delete_offsets("plain", [("t", 1)])
        await c.offsets.commit_offsets("gone", -1, "", None, {("t", 0): (1, -1, None)})
        assert await c.admin.delete_groups(["gone", "g", "nope"]) == {
            "gone": ErrorCode.none, "g": ErrorCode.non_empty_group, "nope": ErrorCode.group_id_not_found}

    run(first, log)

    async def second(c):
        assert c.offsets.fetch_offsets("plain", None)[0][2].offset == 42
        assert c.offsets.fetch_offsets("plain", None)[0][2].leader_epoch == 3
        assert len(c.offsets.fetch_offsets("plain", None)) == 1
        assert "gone" not in c.registry.groups
        group = c.registry.groups["g"]
        assert group.state == STABLE and group.generation_id == 1 and len(group.members) == 2
        assert {m.assignment for m in group.members.values()} == {m.encode() for m in group.members}

    run(second, log)


def test_expiry_of_empty_groups_offsets():
    async def scenario(c):
        await c.offsets.commit_offsets("old", -1, "", None, {("t", 0): (1, -1, None)})
        assert await c.expiry.expire_offsets() == 0
        import time

        assert await c.expiry.expire_offsets(int(time.time() * 1000) + 61_000) == 1
        assert "old" not in c.registry.groups and c.offsets.fetch_offsets("old", None) == []

    run(scenario, offsets_retention_ms=60_000)


def test_offset_delete_refuses_subscribed_topics():
    async def scenario(c):
        await form_group(c, 1)
        await c.offsets.commit_offsets("g", -1, "", None, {})
        error, results = await c.offsets.delete_offsets("g", [("t", 0), ("other", 0)])
        assert error is ErrorCode.none
        assert results == {("t", 0): ErrorCode.group_subscribed_to_topic, ("other", 0): ErrorCode.none}
        assert (await c.offsets.delete_offsets("missing", []))[0] is ErrorCode.group_id_not_found

    run(scenario)


def test_list_and_describe():
    async def scenario(c):
        await form_group(c, 2)
        await c.offsets.commit_offsets("simple", -1, "", None, {("t", 0): (1, -1, None)})
        assert sorted(c.admin.list_groups()) == [("g", "consumer", "Stable", "classic"), ("simple", "", "Empty", "classic")]
        assert c.admin.list_groups(states=["stable"]) == [("g", "consumer", "Stable", "classic")]
        assert c.admin.list_groups(types=["consumer"]) == []
        d = c.admin.describe_group("g")
        assert d.state == "Stable" and d.protocol_name == "range" and len(d.members) == 2
        assert c.admin.describe_group("nope") is None

    run(scenario)


def test_records_round_trip():
    assert decode_key(encode_offset_key(OffsetKey("g", "t", 3))) == OffsetKey("g", "t", 3)
    assert decode_key(encode_group_key(GroupKey("g"))) == GroupKey("g")
    for value in (OffsetValue(10, 2, "m", 1000), OffsetValue(10, -1, "", 1000, 5000)):
        assert decode_offset_value(encode_offset_value(value)) == value
    group = GroupValue("consumer", 4, "range", "m1", 123,
                       [MemberValue("m1", "i1", "c", "/h", 300, 6000, b"sub", b"asg"), MemberValue("m2", None, "c", "/h", 1, 2, b"", b"")])
    assert decode_group_value(encode_group_value(group)) == group
    assert subscription_topics(subscription("a", "bb")) == ["a", "bb"]


def test_lag_is_log_end_minus_committed():
    async def scenario(c):
        await c.offsets.commit_offsets("lagging", -1, "", None, {("t", 0): (4, -1, None), ("t", 1): (10, -1, None), ("gone", 0): (1, -1, None)})
        ends = {("t", 0): 10, ("t", 1): 10}
        lag = c.offsets.lag("lagging", lambda topic, partition: ends.get((topic, partition)))
        assert [(x.topic, x.partition, x.committed_offset, x.log_end_offset, x.lag) for x in lag] == [
            ("t", 0, 4, 10, 6), ("t", 1, 10, 10, 0)]

    run(scenario)


def test_only_member_rejoining_a_stable_group_completes_at_once():
    """The leader rejoining its stable one-member group gets a new generation right away, not
    after the rebalance timeout (found by kafka-python's suite: consumers re-subscribing)."""

    async def scenario(c):
        (result,), _ = await form_group(c, 1, rebalance_ms=5000)
        assert c.registry.groups["g"].state == STABLE
        loop = asyncio.get_running_loop()
        started = loop.time()
        rejoin = await join(c, member_id=result.member_id, rebalance_ms=5000)
        assert rejoin.error is ErrorCode.none and rejoin.generation_id == result.generation_id + 1
        assert loop.time() - started < 1.0, "waited for the rebalance timeout"

    run(scenario)


class FailingLog(MemoryLog):
    """A GroupLog whose writes fail with ``error`` (the coordinator moving away, the disk)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def write(self, records):
        await asyncio.sleep(0)
        raise self.error


def test_a_write_failing_because_the_coordinator_moved_is_logged_at_info_not_error(caplog):
    """A commit while this broker stops leading __consumer_offsets answers NOT_COORDINATOR and
    logs it as the routine it is in a failover; a write failing otherwise is still an ERROR."""
    import logging

    from tidelog.protocol.errors import KafkaError

    key = ("t", 0)

    async def commit(c):
        return await c.offsets.commit_offsets("solo", -1, "", None, {key: (5, -1, None)})

    cases = [(KafkaError(ErrorCode.not_coordinator, "__consumer_offsets write not replicated: not_leader_or_follower"),
              ErrorCode.not_coordinator, logging.INFO),
             (KafkaError(ErrorCode.coordinator_not_available, "the ISR is short"), ErrorCode.coordinator_not_available,
              logging.WARNING),
             (OSError(5, "Input/output error"), ErrorCode.coordinator_not_available, logging.ERROR)]
    for error, answer, level in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tidelog.groups"):
            assert run(commit, FailingLog(error)) == {key: answer}
        failures = [r for r in caplog.records if "cannot store offsets" in r.getMessage()]
        assert [r.levelno for r in failures] == [level], (error, failures)
