"""Replica placement and leader election rules of the controller (pure functions)."""

from __future__ import annotations

import pytest

from tidelog.cluster.controller import assign_replicas, elect, rack_alternated
from tidelog.cluster.metadata import BrokerInfo, PartitionState
from tidelog.protocol.errors import ErrorCode, KafkaError


def brokers(*racks):
    return [BrokerInfo(i + 1, "127.0.0.1", 9092 + i, rack) for i, rack in enumerate(racks)]


def test_round_robin_spreads_leaders_and_replicas():
    states = assign_replicas(brokers(None, None, None), 6, 3, start=0)
    assert [s.leader for s in states] == [1, 2, 3, 1, 2, 3]
    assert all(sorted(s.replicas) == [1, 2, 3] and s.isr == s.replicas for s in states)
    assert all(s.leader_epoch == 0 and s.partition_epoch == 0 for s in states)


def test_rack_aware_placement_puts_replicas_in_distinct_racks():
    live = brokers("a", "a", "b", "b", "c", "c")
    assert [b.rack for b in rack_alternated(live)] == ["a", "b", "c", "a", "b", "c"]
    rack = {b.node_id: b.rack for b in live}
    for state in assign_replicas(live, 12, 3):
        assert len({rack[r] for r in state.replicas}) == 3


def test_replication_factor_above_live_brokers_is_refused():
    with pytest.raises(KafkaError) as e:
        assign_replicas(brokers(None, None), 1, 3)
    assert e.value.error_code == ErrorCode.invalid_replication_factor


def test_dead_leader_replaced_from_isr_with_a_new_epoch():
    state = PartitionState((1, 2, 3), 1, 4, (1, 3), 9, version=17)
    new = elect(state, {2, 3}, unclean_allowed=False)
    assert new.leader == 3 and new.leader_epoch == 5 and new.isr == (3,) and new.partition_epoch == 10
    assert new.version == 17  # the compare-and-swap token of the state it replaces


def test_no_out_of_sync_leader_unless_unclean_allowed():
    state = PartitionState((1, 2, 3), 1, 0, (1,), 0)
    offline = elect(state, {2, 3}, unclean_allowed=False)
    assert offline.leader == -1 and offline.isr == (1,)
    assert elect(offline, {2, 3}, unclean_allowed=False) is None
    unclean = elect(state, {2, 3}, unclean_allowed=True)
    assert unclean.leader == 2 and unclean.isr == (2,)
    back = elect(offline, {1, 2, 3}, unclean_allowed=False)
    assert back.leader == 1 and back.leader_epoch == offline.leader_epoch + 1


def test_dead_follower_leaves_the_isr_and_live_state_is_left_alone():
    state = PartitionState((1, 2, 3), 1, 2, (1, 2, 3), 5)
    shrunk = elect(state, {1, 3}, unclean_allowed=False)
    assert shrunk.leader == 1 and shrunk.leader_epoch == 2 and shrunk.isr == (1, 3)
    assert elect(state, {1, 2, 3}, unclean_allowed=False) is None


def test_controlled_shutdown_hands_leadership_to_another_in_sync_replica():
    from tidelog.cluster.controller import elect

    state = PartitionState((1, 2, 3), 1, 3, (1, 2, 3), 7)
    moved = elect(state, {1, 2, 3}, unclean_allowed=False, shutting_down={1})
    assert moved.leader == 2 and moved.leader_epoch == 4 and moved.isr == (2, 3)
    follower_stopping = elect(state, {1, 2, 3}, unclean_allowed=False, shutting_down={3})
    assert follower_stopping.leader == 1 and follower_stopping.isr == (1, 2) and follower_stopping.leader_epoch == 3
    alone = PartitionState((1, 2), 1, 0, (1,), 0)
    assert elect(alone, {1, 2}, unclean_allowed=False, shutting_down={1}) is None  # nobody else in sync: it stays


def test_preferred_replica_leads_again_once_in_sync():
    from tidelog.cluster.controller import preferred

    state = PartitionState((1, 2, 3), 2, 5, (2, 3), 9)
    assert preferred(state, {1, 2, 3}) is None  # not in sync yet
    back = preferred(state.changed(isr=(2, 3, 1)), {1, 2, 3})
    assert back.leader == 1 and back.leader_epoch == 6
    assert preferred(state.changed(isr=(2, 3, 1)), {1, 2, 3}, shutting_down={1}) is None
    assert preferred(PartitionState((1, 2, 3), 1, 0, (1, 2, 3), 0), {1, 2, 3}) is None
