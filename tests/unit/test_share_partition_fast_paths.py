"""The share-partition's one-walk paths for a filter's fragmented window (issue 14.5) against the
general ones they stand in for: ``_carve`` (an acquisition's pieces made runs of their own with
their final fields) against splitting with ``_isolate_sorted`` and changing each part, and
``_accept_whole_runs`` (acknowledgements that accept whole Acquired runs) against the general
``acknowledge``. The same random walk of fetches, acknowledgements, lock expiries, member
releases and failed writes on both must leave the same runs, the same transitions (state
batches, start offsets, dead letters, counts, acquired ranges) and the same errors."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tidelog.protocol.errors import KafkaError
from tidelog.queues.in_flight import ArchiveReason, RecordState
from tidelog.queues.log_batches import LogBatch
from tidelog.queues.share_partition import _ACQUIRE, AckBatch, AcknowledgeType, SharePartition, SharePartitionConfig

MEMBERS = ("a", "b")
LOCK_MS = 1000


class GeneralPaths(SharePartition):
    """The share-partition as it was before the one-walk paths (the reference)."""

    def _accept_whole_runs(self, member_id, acks):
        return None

    def _carve(self, t, pieces, member_id, deadline):
        taken, redelivered, archived = [], 0, {}
        for part, tag in self._isolate_sorted(pieces):
            if tag is _ACQUIRE:
                self._begin(t, part)
                if part.delivery_count > 0:
                    redelivered += part.last - part.first + 1
                part.state = RecordState.ACQUIRED
                part.delivery_count += 1
                part.member_id = member_id
                part.lock_deadline_ms = deadline
                part.available_at_ms = 0
                taken.append(part)
            elif part.state == RecordState.AVAILABLE and part.pending is None:
                self._begin(t, part)
                archived[tag] = archived.get(tag, 0) + part.last - part.first + 1
                self._archive(t, part, tag, count=False)
        return taken, redelivered, archived


class Discarding:
    """A filter-like policy: offsets in ``filtered`` are archived as filtered out, in ``expired`` as
    expired (dead-lettered), the rest taken in offset order."""

    lookahead_records = 3

    def __init__(self, filtered: frozenset[int], expired: frozenset[int]) -> None:
        self.filtered, self.expired = filtered, expired
        self.discarded: list = []

    def order(self, candidates, now_ms):
        out = []
        for c in candidates:
            for o in range(c.first_offset, c.last_offset + 1):
                if o in self.filtered:
                    self.discarded.append((o, o, ArchiveReason.FILTERED))
                elif o in self.expired:
                    self.discarded.append((o, o, ArchiveReason.EXPIRED))
                elif out and out[-1][1] + 1 == o:
                    out[-1] = (out[-1][0], o)
                else:
                    out.append((o, o))
        return out


def _outcome(sp: SharePartition, call):
    try:
        t = call(sp)
    except (KafkaError, RuntimeError) as e:
        return ("error", type(e).__name__, getattr(e, "error_code", None)), None
    return (sorted(t.state_batches), t.start_offset, list(t.dead_letters), dict(t.counts), list(t.acquired)), t


@settings(max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck))
class FastPathsMatchTheGeneralOnes(RuleBasedStateMachine):
    @initialize(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=12),
                filtered=st.sets(st.integers(0, 90)), expired=st.sets(st.integers(0, 90)))
    def setup(self, sizes, filtered, expired):
        self.log, offset = [], 0
        for size in sizes:
            self.log.append(LogBatch(offset, offset + size - 1))
            offset += size
        config = SharePartitionConfig(3, LOCK_MS, 40)
        self.fast, self.general = SharePartition(config, 0), GeneralPaths(config, 0)
        self.filtered, self.expired = frozenset(filtered), frozenset(expired - filtered)
        self.now = 0

    def _both(self, call, fail: bool):
        fast, t_fast = _outcome(self.fast, call)
        general, t_general = _outcome(self.general, call)
        assert fast == general
        if t_fast is not None:
            for sp, t in ((self.fast, t_fast), (self.general, t_general)):
                (sp.rollback if fail else sp.commit)(t)
        return fast

    @rule(member=st.sampled_from(MEMBERS), max_records=st.integers(1, 10), fail=st.integers(0, 7))
    def fetch(self, member, max_records, fail):
        offset = self.fast.fetch_offset(self.now)
        assert offset == self.general.fetch_offset(self.now)
        if offset is None:
            return
        read = [b for b in self.log if b.last_offset >= offset]
        self._both(lambda sp: sp.acquire(member, read, max_records, self.now,
                                         policy=Discarding(self.filtered, self.expired)), fail == 0)

    @rule(member=st.sampled_from(MEMBERS), data=st.data(), fail=st.integers(0, 7))
    def acknowledge(self, member, data, fail):
        held = [(first, last) for first, last, state, _, owner in self.fast.runs()
                if state == RecordState.ACQUIRED and owner == member]
        picked = data.draw(st.lists(st.sampled_from(held), unique=True), label="ranges") if held else []
        kind = data.draw(st.sampled_from(["accept", "mixed", "join", "stray"]), label="kind")
        acks = []
        for first, last in sorted(picked):
            if kind == "mixed" and first < last:
                types = tuple(data.draw(st.sampled_from(list(AcknowledgeType)[:4])) for _ in range(last - first + 1))
                acks.append(AckBatch(first, last, types))
            elif kind == "join" and acks and acks[-1].last_offset + 1 == first:  # one batch over two runs
                acks[-1] = AckBatch(acks[-1].first_offset, last, (AcknowledgeType.ACCEPT,))
            else:
                acks.append(AckBatch(first, last, (AcknowledgeType.ACCEPT,)))
        if kind == "stray":  # a range that may cover filtered-out, other members' or unacquired records
            first = data.draw(st.integers(0, max(0, self.fast.next_offset - 1)))
            last = data.draw(st.integers(first, max(first, self.fast.next_offset - 1)))
            acks = sorted([a for a in acks if a.last_offset < first or a.first_offset > last]
                          + [AckBatch(first, last, (AcknowledgeType.ACCEPT,))])
        self._both(lambda sp: sp.acknowledge(member, acks, self.now), fail == 0)

    @rule(ms=st.integers(0, 2 * LOCK_MS), fail=st.integers(0, 7))
    def time_passes(self, ms, fail):
        self.now += ms
        self._both(lambda sp: sp.expire_locks(self.now), fail == 0)

    @rule(member=st.sampled_from(MEMBERS), count_delivery=st.booleans())
    def member_leaves(self, member, count_delivery):
        self._both(lambda sp: sp.release_member(member, self.now, count_delivery=count_delivery), False)

    @invariant()
    def same_state(self):
        if not hasattr(self, "fast"):
            return
        assert self.fast.runs() == self.general.runs()
        assert (self.fast.start_offset, self.fast.next_offset) == (self.general.start_offset, self.general.next_offset)
        assert self.fast.state_batches() == self.general.state_batches()
        assert self.fast.delivery_complete_count() == self.general.delivery_complete_count()


TestFastPathsMatchTheGeneralOnes = FastPathsMatchTheGeneralOnes.TestCase
