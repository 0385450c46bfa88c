"""The share-partition state machine (queues/share_partition.py): acquisition, acknowledgement, locks,
delivery limits, the in-flight bound, durability transitions, and a model-checked random walk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.in_flight import ArchiveReason, DeadLetter, RecordState
from tidelog.queues.log_batches import AcquiredRecords, LogBatch
from tidelog.queues.selection import OFFSET_ORDER, Candidate
from tidelog.queues.share_partition import AckBatch, AcknowledgeType, AcquireMode, SharePartition, SharePartitionConfig
from tidelog.queues.state_records import StateBatch
from tidelog.queues.state_store import combine_state_batches

ACCEPT, RELEASE, REJECT, GAP, RENEW = (AcknowledgeType.ACCEPT, AcknowledgeType.RELEASE, AcknowledgeType.REJECT,
                                       AcknowledgeType.GAP, AcknowledgeType.RENEW)
LOCK_MS = 30_000


def batches(*sizes: int, start: int = 0) -> list[LogBatch]:
    out, offset = [], start
    for size in sizes:
        out.append(LogBatch(offset, offset + size - 1))
        offset += size
    return out


def sp_with(limit: int = 5, max_in_flight: int = 2000, start: int = 0, **kw) -> SharePartition:
    return SharePartition(SharePartitionConfig(limit, LOCK_MS, max_in_flight, **kw), start)


def acquire(sp: SharePartition, member: str, log: list[LogBatch], max_records: int, now: int = 0, **kw):
    """Acquire from what a log read at fetch_offset would return, and commit."""
    offset = sp.fetch_offset(now)
    if offset is None:
        return []
    read = [b for b in log if b.last_offset >= offset]
    t = sp.acquire(member, read, max_records, now, **kw)
    sp.commit(t)
    return t.acquired


def ack(sp: SharePartition, member: str, first: int, last: int, *types: int, now: int = 0, **kw):
    t = sp.acknowledge(member, [AckBatch(first, last, tuple(types))], now, **kw)
    sp.commit(t)
    return t


# --- acquisition ------------------------------------------------------------------------------------
def test_batch_optimized_acquires_whole_log_batches():
    sp = sp_with()
    log = batches(10, 10, 10)
    assert acquire(sp, "a", log, 15) == [AcquiredRecords(0, 19, 1)]  # MaxRecords exceeded to finish a batch
    assert acquire(sp, "b", log, 100) == [AcquiredRecords(20, 29, 1)]
    assert sp.start_offset == 0 and sp.next_offset == 30
    assert acquire(sp, "c", log, 100) == []  # nothing left in what was read


def test_record_limit_acquires_at_most_max_records_and_leaves_the_rest_available():
    sp = sp_with()
    log = batches(10, 10)
    assert acquire(sp, "a", log, 3, mode=AcquireMode.RECORD_LIMIT) == [AcquiredRecords(0, 2, 1)]
    assert sp.state_of(3) == (RecordState.AVAILABLE, 0, "")
    assert sp.fetch_offset(0) == 3
    assert acquire(sp, "b", log, 4, mode=AcquireMode.RECORD_LIMIT) == [AcquiredRecords(3, 6, 1)]


def test_batch_size_cuts_acquired_ranges_at_batch_boundaries():
    sp = sp_with()
    log = batches(*[5] * 8)
    assert acquire(sp, "a", log, 40, batch_size=10) == [
        AcquiredRecords(0, 9, 1), AcquiredRecords(10, 19, 1), AcquiredRecords(20, 29, 1), AcquiredRecords(30, 39, 1)]
    sp = sp_with()
    assert acquire(sp, "a", log, 40, batch_size=12) == [AcquiredRecords(0, 14, 1), AcquiredRecords(15, 29, 1),
                                                        AcquiredRecords(30, 39, 1)]


def test_in_flight_window_is_bounded():
    sp = sp_with(max_in_flight=100)
    log = batches(*[10] * 50)
    assert acquire(sp, "a", log, 60) == [AcquiredRecords(0, 59, 1)]
    assert acquire(sp, "b", log, 60) == [AcquiredRecords(60, 99, 1)]  # only the room left
    assert sp.in_flight_records == 100
    assert sp.fetch_offset(0) is None  # full: nothing to read until records complete
    ack(sp, "a", 0, 9, ACCEPT)
    assert sp.start_offset == 10 and sp.fetch_offset(0) == 100
    assert acquire(sp, "c", log, 60) == [AcquiredRecords(100, 109, 1)]


def test_window_overshoots_by_at_most_one_batch():
    sp = sp_with(max_in_flight=100)  # as Kafka: the room (100) ends inside the second batch, which is taken whole
    assert acquire(sp, "a", batches(95, 500, 10), 500) == [AcquiredRecords(0, 594, 1)]
    assert sp.in_flight_records == 595 and sp.fetch_offset(0) is None


def test_gaps_control_batches_and_aborted_records_are_never_delivered():
    sp = sp_with()
    log = [LogBatch(3, 5), LogBatch(6, 6, control=True), LogBatch(8, 9, aborted=True), LogBatch(10, 12)]
    t = sp.acquire("a", log, 100, 0)
    sp.commit(t)
    assert t.acquired == [AcquiredRecords(3, 5, 1), AcquiredRecords(10, 12, 1)]
    assert sp.start_offset == 3  # 0-2 are not in the log
    assert sp.state_of(6)[0] == RecordState.ARCHIVED and sp.state_of(9)[0] == RecordState.ARCHIVED
    ack(sp, "a", 3, 5, ACCEPT)
    assert sp.start_offset == 10


def test_several_members_share_a_partition_without_overlap():
    sp = sp_with()
    log = batches(*[1] * 30)
    got = {m: acquire(sp, m, log, 10) for m in "abc"}
    assert got == {"a": [AcquiredRecords(0, 9, 1)], "b": [AcquiredRecords(10, 19, 1)], "c": [AcquiredRecords(20, 29, 1)]}
    assert sp.acquired_by("b") == [(10, 19)]


# --- acknowledgement --------------------------------------------------------------------------------
def test_accept_moves_the_start_offset():
    sp = sp_with()
    log = batches(10, 10)
    acquire(sp, "a", log, 20)
    ack(sp, "a", 10, 19, ACCEPT)
    assert sp.start_offset == 0  # 0-9 still acquired
    ack(sp, "a", 0, 9, ACCEPT)
    assert sp.start_offset == 20 and sp.runs() == [] and sp.in_flight_records == 0


def test_per_offset_acknowledgement():
    sp = sp_with()
    acquire(sp, "a", batches(5), 5)
    t = ack(sp, "a", 0, 4, ACCEPT, RELEASE, REJECT, GAP, ACCEPT)
    # 0 is done and the start offset moves past it: the write carries the start offset, not 0's batch
    assert t.start_offset == 1 and t.state_batches == [StateBatch(1, 1, 0, 1), StateBatch(2, 3, 4, 1),
                                                       StateBatch(4, 4, 2, 1)]
    assert t.dead_letters == [DeadLetter(2, 2, 1, ArchiveReason.REJECTED)]  # a gap is not dead-lettered
    assert t.counts == {"acknowledged": 2, "released": 1, "rejected": 1, "archived": 2}
    assert sp.start_offset == 1 and sp.fetch_offset(0) == 1


def test_release_redelivers_with_a_higher_delivery_count():
    sp = sp_with()
    log = batches(10)
    acquire(sp, "a", log, 10)
    ack(sp, "a", 0, 9, RELEASE)
    assert acquire(sp, "b", log, 10) == [AcquiredRecords(0, 9, 2)]


def test_release_with_a_delay():
    sp = sp_with()
    log = batches(10)
    acquire(sp, "a", log, 10, now=0)
    ack(sp, "a", 0, 9, RELEASE, now=100, release_delay_ms=5000)
    assert sp.next_deadline_ms() == 5100
    assert acquire(sp, "b", log, 10, now=5099) == []
    assert acquire(sp, "b", log, 10, now=5100) == [AcquiredRecords(0, 9, 2)]


def test_redelivery_back_off_hook():
    sp = sp_with(redelivery_delay_ms=lambda count: 1000 * count)
    log = batches(4)
    acquire(sp, "a", log, 4, now=0)
    ack(sp, "a", 0, 3, RELEASE, now=10)
    assert sp.next_deadline_ms() == 1010


@pytest.mark.parametrize("acks, error", [
    ([AckBatch(0, 4, (1,))], ErrorCode.invalid_record_state),  # not acquired by b
    ([AckBatch(5, 3, (1,))], ErrorCode.invalid_request),
    ([AckBatch(0, 4, (1, 1))], ErrorCode.invalid_request),  # neither one type nor one per offset
    ([AckBatch(0, 1, (7,))], ErrorCode.invalid_request),
    ([AckBatch(0, 4, (1,)), AckBatch(4, 5, (1,))], ErrorCode.invalid_request),  # overlapping
    ([AckBatch(8, 30, (1,))], ErrorCode.invalid_request),  # past what was ever acquired
])
def test_bad_acknowledgements_change_nothing(acks, error):
    sp = sp_with()
    log = batches(10, 10)
    acquire(sp, "a", log, 10)
    acquire(sp, "b", log, 10)
    before = sp.runs()
    with pytest.raises(KafkaError) as info:
        sp.acknowledge("b", acks, 0)
    assert info.value.error_code == error
    assert sp.runs() == before


def test_renew_only_where_the_request_allows_it():
    sp = sp_with()
    acquire(sp, "a", batches(5), 5)
    with pytest.raises(KafkaError) as info:
        sp.acknowledge("a", [AckBatch(0, 4, (RENEW,))], 0, renew_allowed=False)
    assert info.value.error_code == ErrorCode.invalid_request
    assert sp.acknowledge("a", [AckBatch(0, 4, (RENEW,))], 0).counts == {"renewed": 5}


def test_acknowledging_released_records_is_invalid_record_state():
    sp = sp_with()
    acquire(sp, "a", batches(10), 10)
    ack(sp, "a", 0, 9, RELEASE)
    with pytest.raises(KafkaError) as info:
        sp.acknowledge("a", [AckBatch(0, 9, (1,))], 0)
    assert info.value.error_code == ErrorCode.invalid_record_state


def test_acknowledgements_below_the_start_offset_are_ignored():
    sp = sp_with()
    log = batches(10, 10)
    acquire(sp, "a", log, 20)
    ack(sp, "a", 0, 9, ACCEPT)
    t = ack(sp, "a", 0, 14, ACCEPT)  # 0-9 already done
    assert t.state_batches == [] and t.start_offset == 15  # 10-14 done too: the start offset moves past them


def test_all_or_nothing_across_batches():
    sp = sp_with()
    log = batches(10, 10)
    acquire(sp, "a", log, 10)
    acquire(sp, "b", log, 10)
    with pytest.raises(KafkaError):
        sp.acknowledge("a", [AckBatch(0, 4, (1,)), AckBatch(10, 12, (1,))], 0)
    assert sp.state_of(0) == (RecordState.ACQUIRED, 1, "a")


# --- locks and delivery limits --------------------------------------------------------------------
def test_lock_expiry_makes_records_available_again():
    sp = sp_with()
    log = batches(10)
    acquire(sp, "a", log, 10, now=1000)
    assert sp.next_deadline_ms() == 1000 + LOCK_MS
    t = sp.expire_locks(1000 + LOCK_MS - 1)
    assert t.empty
    sp.commit(t)
    t = sp.expire_locks(1000 + LOCK_MS)
    assert t.state_batches == [StateBatch(0, 9, 0, 1)] and t.counts == {"lock_expired": 10}
    sp.commit(t)
    assert acquire(sp, "b", log, 10, now=1000 + LOCK_MS) == [AcquiredRecords(0, 9, 2)]
    with pytest.raises(KafkaError):  # a's lock is gone
        sp.acknowledge("a", [AckBatch(0, 9, (1,))], 0)


def test_renew_extends_the_lock_without_a_write():
    sp = sp_with()
    acquire(sp, "a", batches(10), 10, now=0)
    t = sp.acknowledge("a", [AckBatch(0, 4, (RENEW,))], 20_000)
    assert t.empty and t.counts == {"renewed": 5}
    sp.commit(t)
    t = sp.expire_locks(LOCK_MS)
    assert t.state_batches == [StateBatch(5, 9, 0, 1)]
    sp.commit(t)
    assert sp.state_of(0) == (RecordState.ACQUIRED, 1, "a")
    assert sp.next_deadline_ms() == 20_000 + LOCK_MS


def test_delivery_limit_archives_and_dead_letters():
    sp = sp_with(limit=2)
    log = batches(4)
    for attempt in (1, 2):
        assert acquire(sp, "a", log, 4, now=attempt * LOCK_MS) == [AcquiredRecords(0, 3, attempt)]
        t = sp.expire_locks((attempt + 1) * LOCK_MS)
        sp.commit(t)
    assert t.dead_letters == [DeadLetter(0, 3, 2, ArchiveReason.DELIVERY_LIMIT)]
    assert t.state_batches == [] and t.start_offset == 4  # archived at the start: the start offset says it
    assert sp.start_offset == 4 and sp.runs() == []


def test_release_at_the_limit_archives():
    sp = sp_with(limit=2)
    log = batches(3)
    acquire(sp, "a", log, 3)
    ack(sp, "a", 0, 2, RELEASE)
    acquire(sp, "a", log, 3)
    t = ack(sp, "a", 0, 2, RELEASE)
    assert t.dead_letters == [DeadLetter(0, 2, 2, ArchiveReason.DELIVERY_LIMIT)]
    assert sp.start_offset == 3


def test_last_attempt_is_delivered_alone_and_much_redelivered_records_in_small_groups():
    sp = sp_with(limit=5)  # as Kafka 4.2: from the 4th delivery in shrinking groups, the 5th alone
    log = batches(8)
    for n in range(1, 6):
        got = []
        while True:
            ranges = acquire(sp, "a", log, 100)
            if not ranges:
                break
            got.append(ranges)
        for ranges in got:
            for r in ranges:
                ack(sp, "a", r.first_offset, r.last_offset, RELEASE)
        if n <= 3:
            assert got == [[AcquiredRecords(0, 7, n)]]
        if n == 4:
            assert got == [[AcquiredRecords(0, 3, 4)], [AcquiredRecords(4, 7, 4)]]  # 8 >> 1
        if n == 5:
            assert got == [[AcquiredRecords(o, o, 5)] for o in range(8)]
    assert sp.start_offset == 8  # archived at the limit


# --- the rest of the lifecycle ----------------------------------------------------------------------
def test_release_member_on_clean_close_does_not_count_the_delivery():
    sp = sp_with()
    log = batches(10)
    acquire(sp, "a", log, 10)
    t = sp.release_member("a", 0, count_delivery=False)
    sp.commit(t)
    assert t.state_batches == [StateBatch(0, 9, 0, 0)]
    assert acquire(sp, "b", log, 10) == [AcquiredRecords(0, 9, 1)]


def test_release_member_after_a_failure_counts_the_delivery():
    sp = sp_with(limit=2)
    log = batches(10)
    acquire(sp, "a", log, 10)
    sp.commit(sp.release_member("a", 0, count_delivery=True))
    assert acquire(sp, "b", log, 10) == [AcquiredRecords(0, 9, 2)]
    t = sp.release_member("b", 0, count_delivery=True)
    assert t.dead_letters == [DeadLetter(0, 9, 2, ArchiveReason.DELIVERY_LIMIT)]
    sp.commit(t)
    assert sp.release_member("nobody", 0, count_delivery=True).empty


def test_log_start_moving_archives_what_was_deleted():
    sp = sp_with()
    log = batches(10, 10, 10)
    acquire(sp, "a", log, 10)
    acquire(sp, "b", log, 10)
    ack(sp, "b", 10, 19, RELEASE)
    sp.move_log_start(15)
    assert sp.start_offset == 15
    assert sp.state_of(12)[0] == RecordState.ARCHIVED and sp.state_of(15)[0] == RecordState.AVAILABLE
    assert sp.state_of(5) == (RecordState.ACQUIRED, 1, "a")  # still held; finishes as archived
    t = sp.expire_locks(LOCK_MS)
    assert t.dead_letters == [] and t.state_batches == [StateBatch(0, 9, 4, 1)]
    sp.commit(t)
    assert sp.runs()[0][0] == 15
    sp.move_log_start(100)
    assert sp.start_offset == 100 and sp.next_offset == 100 and sp.runs() == []


def test_transitions_are_pending_until_committed():
    sp = sp_with()
    log = batches(10)
    t = sp.acquire("a", log, 10, 0)
    with pytest.raises(KafkaError) as info:
        sp.acknowledge("a", [AckBatch(0, 9, (1,))], 0)
    assert info.value.error_code == ErrorCode.invalid_record_state
    assert sp.expire_locks(LOCK_MS).empty  # a pending acquisition does not expire
    sp.rollback(t)
    assert sp.state_of(0) == (RecordState.AVAILABLE, 0, "")
    t = sp.acquire("b", log, 10, 0)
    sp.commit(t)
    t = sp.acknowledge("b", [AckBatch(0, 9, (1,))], 0)
    assert sp.start_offset == 0  # not yet durable
    assert sp.fetch_offset(0) == 10
    sp.rollback(t)
    assert sp.state_of(0) == (RecordState.ACQUIRED, 1, "b")
    with pytest.raises(RuntimeError):
        sp.commit(t)


def test_custom_selection_policy_picks_records_out_of_order():
    class HighestFirst:
        lookahead_records = 100

        def order(self, candidates, now_ms):
            offsets = [o for c in candidates for o in range(c.first_offset, c.last_offset + 1)]
            return [(o, o) for o in sorted(offsets, reverse=True)]

    sp = sp_with()
    log = batches(5, 5)
    t = sp.acquire("a", log, 3, 0, policy=HighestFirst(), mode=AcquireMode.RECORD_LIMIT)
    sp.commit(t)
    assert t.acquired == [AcquiredRecords(7, 9, 1)]
    assert sp.next_offset == 10  # the look-ahead brought the whole read into the window
    t = sp.acquire("b", log, 2, 0, policy=HighestFirst(), mode=AcquireMode.RECORD_LIMIT)
    assert t.acquired == [AcquiredRecords(5, 6, 1)]


def test_candidates_exclude_records_not_due():
    seen = []

    class Spy:
        lookahead_records = 0

        def order(self, candidates, now_ms):
            seen.append(list(candidates))
            return [(c.first_offset, c.last_offset) for c in candidates]

    sp = sp_with()
    log = batches(4, 4)
    acquire(sp, "a", log, 8)
    ack(sp, "a", 0, 3, RELEASE, release_delay_ms=50)
    ack(sp, "a", 4, 7, RELEASE)
    sp.acquire("b", log, 8, 10, policy=Spy())
    assert seen == [[Candidate(4, 7, 1)]]


def test_state_round_trip_through_persisted_batches():
    sp = sp_with()
    log = batches(10, 10, 10)
    acquire(sp, "a", log, 30)
    ack(sp, "a", 0, 4, ACCEPT)
    ack(sp, "a", 10, 19, RELEASE)
    loaded = SharePartition.from_state(sp.config, sp.start_offset, sp.state_batches(), 0, 0)
    assert loaded.start_offset == 5 and loaded.next_offset == 30
    # acquired records come back available with their delivery count kept
    assert loaded.state_of(5) == (RecordState.AVAILABLE, 1, "")
    assert acquire(loaded, "b", log, 100) == [AcquiredRecords(5, 29, 2)]


def test_loading_archives_records_that_used_up_their_deliveries():
    config = SharePartitionConfig(3, LOCK_MS, 2000)
    loaded = SharePartition.from_state(config, 0, [StateBatch(0, 4, 0, 3), StateBatch(5, 9, 0, 2)], 0, now_ms=7)
    assert loaded.next_deadline_ms() == 7
    t = loaded.expire_locks(7)
    assert t.dead_letters == [DeadLetter(0, 4, 3, ArchiveReason.DELIVERY_LIMIT)]
    loaded.commit(t)
    assert loaded.start_offset == 5


def test_loading_fills_gaps_as_never_delivered():
    loaded = SharePartition.from_state(SharePartitionConfig(), 10, [StateBatch(15, 19, 2, 1)], 0, 0)
    assert loaded.state_of(10) == (RecordState.AVAILABLE, 0, "") and loaded.next_offset == 20


class FilterEveryThird:
    """A selection policy like issue 14's filter: records at offsets 1, 4, 7, ... never match (set
    aside to be archived), the others are taken in offset order."""

    lookahead_records = 5

    def __init__(self) -> None:
        self.discarded: list[tuple[int, int, ArchiveReason]] = []

    def order(self, candidates, now_ms):
        out = []
        for c in candidates:
            for o in range(c.first_offset, c.last_offset + 1):
                if o % 3 == 1:
                    self.discarded.append((o, o, ArchiveReason.FILTERED))
                elif out and out[-1][1] + 1 == o:
                    out[-1] = (out[-1][0], o)
                else:
                    out.append((o, o))
        return out


def test_a_filtering_policy_archives_and_acquires_in_one_transition_and_rolls_back_whole():
    sp = sp_with()
    log = batches(10)
    policy = FilterEveryThird()
    t = sp.acquire("a", log, 4, 0, policy=policy, mode=AcquireMode.RECORD_LIMIT)
    assert t.acquired == [AcquiredRecords(0, 0, 1), AcquiredRecords(2, 3, 1), AcquiredRecords(5, 5, 1)]
    # Every record it met that does not match, up to the last one taken and right after it: 7, past 6
    # (matching, not taken: MaxRecords), is judged again when an acquisition gets there.
    assert t.counts == {"acquired": 4, "filtered": 2, "archived": 2}
    assert t.state_batches == [StateBatch(0, 0, 0, 1), StateBatch(1, 1, 4, 0), StateBatch(2, 3, 0, 1),
                               StateBatch(4, 4, 4, 0), StateBatch(5, 5, 0, 1)]
    assert sp.state_of(7) == (RecordState.AVAILABLE, 0, "")
    sp.rollback(t)  # the write failed: all of it back to Available
    assert sp.runs() == [(0, 9, RecordState.AVAILABLE, 0, "")]
    t = sp.acquire("a", log, 10, 0, policy=FilterEveryThird())
    sp.commit(t)
    assert [(r.first_offset, r.last_offset) for r in t.acquired] == [(0, 0), (2, 3), (5, 6), (8, 9)]
    t = sp.acknowledge("a", [AckBatch(r.first_offset, r.last_offset, (ACCEPT,)) for r in t.acquired], 0)
    assert t.counts == {"acknowledged": 7}
    sp.commit(t)
    assert sp.start_offset == 10 and sp.runs() == []


# --- a model-checked random walk --------------------------------------------------------------------
LIMIT = 3
MAX_IN_FLIGHT = 30
MEMBERS = ("a", "b", "c")


class SharePartitionMachine(RuleBasedStateMachine):
    """Random acquisitions, acknowledgements, expiries, member departures, failed writes, log start
    moves and broker crashes (reload from what was made durable) against a model of the promises:
    nothing is delivered after it was durably accepted, nobody holds what someone else holds,
    delivery counts rise by one per delivery and never pass the limit, locks expire, the window
    stays bounded, and when consumers keep accepting, everything ends accepted or archived."""

    @initialize(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=25), filtered=st.booleans())
    def setup(self, sizes, filtered):
        self.filtered = filtered  # every fetch through a policy that archives every third record (a filter)
        self.log = batches(*sizes)
        self.log_end = self.log[-1].last_offset + 1
        self.config = SharePartitionConfig(LIMIT, LOCK_MS, MAX_IN_FLIGHT)
        self.sp = SharePartition(self.config, 0)
        self.now = 0
        self.log_start = 0
        self.persisted_start = 0
        self.persisted: list[StateBatch] = []
        self.accepted: set[int] = set()  # durably acknowledged
        self.archived: set[int] = set()  # durably archived (or deleted from the log)
        self.last_count = {o: 0 for o in range(self.log_end)}  # delivery count of the latest delivery
        self.held: dict[int, tuple[str, int]] = {}  # offset -> (member, lock deadline) as the model sees it

    def _write(self, t):
        """A durable write: what load sees after a crash (as ShareManager and the store write it: the
        start offset the transition leaves, never back)."""
        start = max(self.persisted_start, self.sp.start_offset if t.start_offset is None else t.start_offset)
        self.persisted = combine_state_batches(self.persisted, t.state_batches, start)
        self.persisted_start = start

    def _settle(self, t, fail: bool = False):
        if fail:
            self.sp.rollback(t)
            return False
        self._write(t)
        self.sp.commit(t)
        return True

    @rule(member=st.sampled_from(MEMBERS), max_records=st.integers(1, 12), record_limit=st.booleans(),
          fail=st.integers(0, 9))
    def fetch(self, member, max_records, record_limit, fail):
        offset = self.sp.fetch_offset(self.now)
        if offset is None:
            return
        read = [b for b in self.log if b.last_offset >= offset and b.base_offset >= self.log_start]
        mode = AcquireMode.RECORD_LIMIT if record_limit else AcquireMode.BATCH_OPTIMIZED
        policy = FilterEveryThird() if self.filtered else OFFSET_ORDER
        t = self.sp.acquire(member, read, max_records, self.now, mode=mode, policy=policy)
        if mode == AcquireMode.RECORD_LIMIT:
            assert sum(r.last_offset - r.first_offset + 1 for r in t.acquired) <= max_records
        if not self._settle(t, fail=fail == 0):
            return
        for first, last, _ in getattr(policy, "discarded", ()):  # archived with the acquisition
            self.archived.update(range(first, last + 1))
        for r in t.acquired:
            assert not self.filtered or all(o % 3 != 1 for o in range(r.first_offset, r.last_offset + 1))
            for o in range(r.first_offset, r.last_offset + 1):
                assert o not in self.accepted, f"{o} delivered after it was accepted"
                assert o not in self.archived, f"{o} delivered after it was archived"
                holder = self.held.get(o)
                assert holder is None or holder[1] <= self.now, f"{o} held by {holder} and given to {member}"
                assert r.delivery_count == self.last_count[o] + 1
                assert r.delivery_count <= LIMIT
                self.last_count[o] = r.delivery_count
                self.held[o] = (member, self.now + LOCK_MS)

    @rule(member=st.sampled_from(MEMBERS), data=st.data(), fail=st.integers(0, 9))
    def acknowledge(self, member, data, fail):
        mine = sorted(o for o, (m, deadline) in self.held.items() if m == member and deadline > self.now)
        mine = [o for o in mine if self.sp.state_of(o) == (RecordState.ACQUIRED, self.last_count[o], member)]
        assume(mine)
        first = data.draw(st.sampled_from(mine))
        last = first
        while last + 1 in mine and data.draw(st.booleans()):
            last += 1
        types = data.draw(st.one_of(
            st.tuples(st.sampled_from([ACCEPT, RELEASE, REJECT, GAP, RENEW])),
            st.lists(st.sampled_from([ACCEPT, RELEASE, REJECT, GAP, RENEW]), min_size=last - first + 1,
                     max_size=last - first + 1).map(tuple)))
        t = self.sp.acknowledge(member, [AckBatch(first, last, types)], self.now)
        if not self._settle(t, fail=fail == 0):
            return
        for i, o in enumerate(range(first, last + 1)):
            kind = types[0] if len(types) == 1 else types[i]
            if kind == RENEW:
                self.held[o] = (member, self.now + LOCK_MS)
                continue
            del self.held[o]
            if kind == ACCEPT:
                self.accepted.add(o)
            elif kind in (REJECT, GAP) or self.last_count[o] >= LIMIT:
                self.archived.add(o)
        for d in t.dead_letters:
            assert all(o not in self.accepted for o in range(d.first_offset, d.last_offset + 1))

    @rule(member=st.sampled_from(MEMBERS), data=st.data())
    def acknowledge_what_is_not_mine(self, member, data):
        """Acknowledging records one does not hold (someone else's, available, finished) changes nothing."""
        window = range(self.sp.start_offset, self.sp.next_offset)
        foreign = [o for o in window if self.sp.state_of(o) != (RecordState.ACQUIRED, self.last_count[o], member)]
        assume(foreign)
        offset = data.draw(st.sampled_from(foreign))
        kind = data.draw(st.sampled_from([ACCEPT, RELEASE, REJECT, GAP, RENEW]))
        before = self.sp.runs()
        with pytest.raises(KafkaError) as info:
            self.sp.acknowledge(member, [AckBatch(offset, offset, (kind,))], self.now)
        assert info.value.error_code == ErrorCode.invalid_record_state
        assert self.sp.runs() == before

    @rule(ms=st.integers(1, 2 * LOCK_MS), fail=st.integers(0, 9))
    def time_passes(self, ms, fail):
        self.now += ms
        t = self.sp.expire_locks(self.now)
        if not self._settle(t, fail=fail == 0):
            return
        for o, (member, deadline) in list(self.held.items()):
            if deadline <= self.now:
                del self.held[o]
                if self.last_count[o] >= LIMIT or o < self.log_start:
                    self.archived.add(o)
        assert self.sp.next_deadline_ms() is None or self.sp.next_deadline_ms() > self.now

    @rule(member=st.sampled_from(MEMBERS), failed=st.booleans())
    def member_leaves(self, member, failed):
        t = self.sp.release_member(member, self.now, count_delivery=failed)
        self._settle(t)
        for o, (m, deadline) in list(self.held.items()):
            if m == member and self.sp.state_of(o) is not None and self.sp.state_of(o)[0] != RecordState.ACQUIRED:
                del self.held[o]
                if not failed:
                    self.last_count[o] -= 1
                if o < self.log_start or (failed and self.last_count[o] >= LIMIT):
                    self.archived.add(o)
            elif m == member and self.sp.state_of(o) is None:
                del self.held[o]
                self.archived.add(o)

    @precondition(lambda self: self.log_start < self.log_end)
    @rule(step=st.integers(1, 8))
    def retention_deletes(self, step):
        self.log_start = min(self.log_end, self.log_start + step)
        for o in range(self.log_start):
            if o not in self.accepted and o not in self.held:
                self.archived.add(o)
        self.sp.move_log_start(self.log_start)

    @rule()
    def broker_restarts(self):
        self.sp = SharePartition.from_state(self.config, max(self.persisted_start, 0), self.persisted, 0, self.now)
        self.sp.move_log_start(self.log_start)
        self.held.clear()  # every lock is gone; exhausted records expire at once
        t = self.sp.expire_locks(self.now)
        self._settle(t)
        for d in t.dead_letters:
            for o in range(d.first_offset, d.last_offset + 1):
                self.archived.add(o)

    @invariant()
    def window_is_bounded_and_well_formed(self):
        sp = self.sp
        assert sp.start_offset <= sp.next_offset or not sp.runs()
        assert sp.in_flight_records <= MAX_IN_FLIGHT + 6
        runs = sp.runs()
        window = [r for r in runs if r[1] >= sp.start_offset]  # below the start offset only held records wait
        for (f1, l1, *_), (f2, *_rest) in zip(window, window[1:]):
            assert l1 + 1 == f2
        assert not window or (window[0][0] <= sp.start_offset and window[-1][1] + 1 == sp.next_offset)
        assert all(r[2] != RecordState.AVAILABLE for r in runs if r[1] < sp.start_offset)
        for first, last, state, count, member in runs:
            assert first <= last and 0 <= count <= LIMIT
            assert (state == RecordState.ACQUIRED) == bool(member) or (state == RecordState.ACQUIRED and member == "")
        assert len(window) <= MAX_IN_FLIGHT + 6
        # Below the start offset (retention moved it) records still held wait for their owner or lock,
        # with the finished runs between them: more runs than the window can have, never more than records.
        assert not runs or len(runs) <= sp.next_offset - runs[0][0]

    def teardown(self):
        """Consumers that accept everything drain the partition: every record ends accepted or archived."""
        if not hasattr(self, "sp"):
            return
        for _ in range(4 * (self.log_end + LIMIT) + 10):
            self.now += LOCK_MS
            self._settle(self.sp.expire_locks(self.now))
            offset = self.sp.fetch_offset(self.now)
            if offset is None or offset >= self.log_end:
                break
            read = [b for b in self.log if b.last_offset >= offset]
            t = self.sp.acquire("drain", read, 50, self.now, policy=FilterEveryThird() if self.filtered else OFFSET_ORDER)
            self._settle(t)
            for r in t.acquired:
                assert all(o not in self.accepted for o in range(r.first_offset, r.last_offset + 1))
                assert not self.filtered or all(o % 3 != 1 for o in range(r.first_offset, r.last_offset + 1))
                self._settle(self.sp.acknowledge("drain", [AckBatch(r.first_offset, r.last_offset, (ACCEPT,))], self.now))
        self.now += LOCK_MS
        self._settle(self.sp.expire_locks(self.now))
        assert self.sp.start_offset == self.log_end, self.sp
        assert self.sp.runs() == []


TestSharePartitionMachine = SharePartitionMachine.TestCase
TestSharePartitionMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
