"""A transactional id's state machine: Kafka's legal transitions, epochs, fencing, pending states."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.txn.state import (
    MAX_PRODUCER_EPOCH,
    VALID_PREVIOUS_STATES,
    IllegalTransition,
    TopicPartition,
    TransactionMetadata,
    TransactionState,
)

S = TransactionState
TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)

# Kafka's TransactionState.validPreviousStates, written out as Kafka declares them.
KAFKA_VALID_PREVIOUS = {
    "Empty": {"Empty", "CompleteCommit", "CompleteAbort"},
    "Ongoing": {"Ongoing", "Empty", "CompleteCommit", "CompleteAbort"},
    "PrepareCommit": {"Ongoing"},
    "PrepareAbort": {"Ongoing", "PrepareEpochFence"},
    "CompleteCommit": {"PrepareCommit"},
    "CompleteAbort": {"PrepareAbort"},
    "Dead": {"Empty", "CompleteAbort", "CompleteCommit"},
    "PrepareEpochFence": {"Ongoing"},
}


def test_states_ids_names_and_transitions_are_kafkas():
    assert [(s.value, s.kafka_name) for s in S] == [
        (0, "Empty"), (1, "Ongoing"), (2, "PrepareCommit"), (3, "PrepareAbort"), (4, "CompleteCommit"),
        (5, "CompleteAbort"), (6, "Dead"), (7, "PrepareEpochFence")]
    assert {s.kafka_name: {p.kafka_name for p in VALID_PREVIOUS_STATES[s]} for s in S} == KAFKA_VALID_PREVIOUS
    assert {s for s in S if s.expiration_allowed} == {S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}
    assert S.from_name("Ongoing") is S.ONGOING and S.from_name("ongoing") is None


def fresh(epoch=-1, state=S.EMPTY, partitions=()):
    return TransactionMetadata("tx", producer_id=7, producer_epoch=epoch, txn_timeout_ms=1000, state=state,
                               partitions=set(partitions), txn_start_timestamp_ms=5 if partitions else -1,
                               txn_last_update_timestamp_ms=1)


def apply(metadata, transit):
    metadata.complete_transition(transit)
    return metadata


def test_a_whole_transaction_walks_empty_ongoing_prepare_complete():
    m = fresh()
    apply(m, m.prepare_increment_producer_epoch(2000, None, now_ms=10))
    assert (m.state, m.producer_epoch, m.txn_timeout_ms, m.last_producer_epoch) == (S.EMPTY, 0, 2000, -1)
    apply(m, m.prepare_add_partitions({TP0}, now_ms=20))
    assert (m.state, m.partitions, m.txn_start_timestamp_ms) == (S.ONGOING, {TP0}, 20)
    apply(m, m.prepare_add_partitions({TP1}, now_ms=30))
    assert m.partitions == {TP0, TP1} and m.txn_start_timestamp_ms == 20, "the start is the first add's"
    apply(m, m.prepare_abort_or_commit(S.PREPARE_COMMIT, now_ms=40))
    assert m.state is S.PREPARE_COMMIT and m.txn_last_update_timestamp_ms == 40
    complete = m.prepare_complete(now_ms=50)
    m.remove_partition(TP0)
    m.remove_partition(TP1)
    apply(m, complete)
    assert (m.state, m.partitions, m.producer_epoch) == (S.COMPLETE_COMMIT, set(), 0)
    apply(m, m.prepare_add_partitions({TP1}, now_ms=60))
    assert m.txn_start_timestamp_ms == 60, "a new transaction starts its clock again"


def test_a_pending_transition_blocks_a_second_one_until_completed_or_dropped():
    m = fresh(epoch=0)
    transit = m.prepare_add_partitions({TP0}, now_ms=1)
    assert m.pending_transition_in_progress and m.pending_state is S.ONGOING
    with pytest.raises(IllegalTransition):
        m.prepare_add_partitions({TP1}, now_ms=2)
    m.pending_state = None  # the write failed
    assert m.state is S.EMPTY and not m.partitions
    m.prepare_add_partitions({TP1}, now_ms=2)
    with pytest.raises(IllegalTransition):
        m.complete_transition(replace(transit, state=S.PREPARE_ABORT))  # not the pending state


def test_illegal_transitions_are_refused():
    with pytest.raises(IllegalTransition):
        fresh(epoch=0).prepare_abort_or_commit(S.PREPARE_COMMIT, 1)  # Empty -> PrepareCommit
    with pytest.raises(IllegalTransition):
        fresh(epoch=0, state=S.PREPARE_ABORT, partitions=[TP0]).prepare_add_partitions({TP1}, 1)
    with pytest.raises(IllegalTransition):
        fresh(epoch=0).prepare_fence_producer_epoch()  # only an Ongoing transaction is fenced
    with pytest.raises(IllegalTransition):
        fresh(epoch=0, state=S.ONGOING, partitions=[TP0]).remove_partition(TP0)
    with pytest.raises(IllegalTransition):
        fresh(epoch=0).prepare_abort_or_commit(S.COMPLETE_ABORT, 1)


@settings(max_examples=300)
@given(st.sampled_from(list(S)), st.sampled_from(["add", "commit", "abort", "fence", "epoch", "complete", "dead"]))
def test_every_prepare_follows_the_valid_previous_states(state, action):
    m = fresh(epoch=3, state=state, partitions=[TP0] if state in (S.ONGOING, S.PREPARE_ABORT, S.PREPARE_COMMIT) else [])
    target = {"add": S.ONGOING, "commit": S.PREPARE_COMMIT, "abort": S.PREPARE_ABORT, "fence": S.PREPARE_EPOCH_FENCE,
              "epoch": S.EMPTY, "dead": S.DEAD,
              "complete": S.COMPLETE_COMMIT if state is S.PREPARE_COMMIT else S.COMPLETE_ABORT}[action]
    call = {"add": lambda: m.prepare_add_partitions({TP1}, 9), "commit": lambda: m.prepare_abort_or_commit(S.PREPARE_COMMIT, 9),
            "abort": lambda: m.prepare_abort_or_commit(S.PREPARE_ABORT, 9), "fence": m.prepare_fence_producer_epoch,
            "epoch": lambda: m.prepare_increment_producer_epoch(1000, None, 9), "complete": lambda: m.prepare_complete(9),
            "dead": m.prepare_dead}[action]
    if state in VALID_PREVIOUS_STATES[target]:
        assert call().state is target and m.pending_state is target
    else:
        with pytest.raises(IllegalTransition):
            call()
        assert m.pending_state is None


def test_init_producer_id_epochs_kip_360():
    m = fresh(epoch=4)
    m.last_producer_epoch = 3
    bumped = m.prepare_increment_producer_epoch(1000, expected_producer_epoch=4, now_ms=1)
    assert (bumped.producer_epoch, bumped.last_producer_epoch) == (5, 4), "current epoch: bump, remember the last"
    m.pending_state = None
    retry = m.prepare_increment_producer_epoch(1000, expected_producer_epoch=3, now_ms=1)
    assert (retry.producer_epoch, retry.last_producer_epoch) == (4, 3), "the previous epoch: a retry, no bump"
    m.pending_state = None
    with pytest.raises(KafkaError) as e:
        m.prepare_increment_producer_epoch(1000, expected_producer_epoch=1, now_ms=1)
    assert e.value.error_code is ErrorCode.producer_fenced
    assert m.pending_state is None
    new = fresh(epoch=-1)
    first = new.prepare_increment_producer_epoch(1000, expected_producer_epoch=9, now_ms=1)
    assert (first.producer_epoch, first.last_producer_epoch) == (0, -1), "no epoch yet: any expected epoch starts at 0"


def test_fencing_bumps_once_even_when_the_fence_is_not_written():
    m = fresh(epoch=4, state=S.ONGOING, partitions=[TP0])
    fence = m.prepare_fence_producer_epoch()
    assert (fence.state, fence.producer_epoch, fence.last_producer_epoch) == (S.PREPARE_EPOCH_FENCE, 5, -1)
    m.fence_in_place(fence.producer_epoch)  # what the abort is prepared from
    abort = m.prepare_abort_or_commit(S.PREPARE_ABORT, 3)
    assert abort.producer_epoch == 5 and m.producer_epoch == 5
    m.pending_state = None
    m.has_failed_epoch_fence = True  # that abort was never written
    again = m.prepare_fence_producer_epoch()
    assert again.producer_epoch == 5, "a failed fence is not bumped a second time"
    m.fence_in_place(again.producer_epoch)
    apply(m, m.prepare_abort_or_commit(S.PREPARE_ABORT, 4))
    m.prepare_complete(5)
    assert not m.has_failed_epoch_fence
    with pytest.raises(IllegalTransition):
        fresh(epoch=MAX_PRODUCER_EPOCH, state=S.ONGOING, partitions=[TP0]).prepare_fence_producer_epoch()


def test_exhausted_epochs_rotate_the_producer_id():
    m = fresh(epoch=MAX_PRODUCER_EPOCH - 1)
    assert m.epoch_exhausted
    with pytest.raises(IllegalTransition):
        m.prepare_increment_producer_epoch(1000, None, 1)
    rotated = m.prepare_producer_id_rotation(99, 1000, now_ms=1, record_last_epoch=True)
    assert (rotated.producer_id, rotated.producer_epoch, rotated.last_producer_epoch, rotated.previous_producer_id) \
        == (99, 0, MAX_PRODUCER_EPOCH - 1, 7)
    apply(m, rotated)
    assert (m.producer_id, m.producer_epoch, m.previous_producer_id) == (99, 0, 7)


def test_complete_transition_checks_what_kafka_checks():
    m = fresh(epoch=0, state=S.ONGOING, partitions=[TP0])
    transit = m.prepare_abort_or_commit(S.PREPARE_ABORT, 9)
    m.partitions.add(TP1)  # the partitions changed under the prepared transit
    with pytest.raises(IllegalTransition):
        m.complete_transition(transit)
    m = fresh(epoch=0, state=S.ONGOING, partitions=[TP0])
    transit = m.prepare_add_partitions({TP1}, 9)
    m.producer_epoch = 1  # the epoch moved
    with pytest.raises(IllegalTransition):
        m.complete_transition(transit)
    m = fresh(epoch=0)
    dead = m.prepare_dead()
    with pytest.raises(IllegalTransition):
        m.complete_transition(dead)  # Dead is a tombstone, never applied


def test_a_random_walk_never_breaks_the_invariants():
    """Every allowed sequence of prepares and completions keeps Kafka's invariants."""
    actions = ["add", "commit", "abort", "fence", "epoch", "complete", "fail"]
    for walk in itertools.islice(itertools.product(actions, repeat=5), 0, None, 7):
        m = fresh(epoch=0)
        for action in walk:
            try:
                if action == "fail":
                    m.pending_state = None
                    continue
                if action == "complete" and m.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                    transit = m.prepare_complete(1)
                    m.partitions.clear()
                elif action == "fence":
                    fence = m.prepare_fence_producer_epoch()
                    m.fence_in_place(fence.producer_epoch)
                    transit = m.prepare_abort_or_commit(S.PREPARE_ABORT, 1)
                else:
                    transit = {"add": lambda: m.prepare_add_partitions({TP0}, 1),
                               "commit": lambda: m.prepare_abort_or_commit(S.PREPARE_COMMIT, 1),
                               "abort": lambda: m.prepare_abort_or_commit(S.PREPARE_ABORT, 1),
                               "epoch": lambda: m.prepare_increment_producer_epoch(1000, None, 1),
                               "complete": lambda: m.prepare_complete(1)}[action]()
                m.complete_transition(transit)
            except IllegalTransition:
                m.pending_state = None
            assert m.state not in (S.DEAD, S.PREPARE_EPOCH_FENCE) and m.pending_state is None
            assert bool(m.partitions) == (m.state in (S.ONGOING, S.PREPARE_ABORT, S.PREPARE_COMMIT))
            assert m.state is S.EMPTY or m.txn_start_timestamp_ms != -1
