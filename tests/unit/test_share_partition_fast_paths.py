"""The share-partition's one-walk paths for a filter's fragmented window (issue 14.5) against the
general ones they stand in for: ``_carve`` (an acquisition's pieces made runs of their own with
their final fields, and their state batches) against splitting with ``_isolate_sorted``, changing
each part and ``_record`` making the batches from the runs, ``_advance_start``'s short cut, and
``_accept_whole_runs`` (acknowledgements that accept whole Acquired runs) against the general
``acknowledge``, ``_take_in_order`` (the policy's ranges inside one Available run, taken without a
walk each) against that walk; the gaps of the window (never-delivered records archived with no run) and the
mosaics (a filter's acquisition as one run: ``_carve_mosaic``, accepted whole, split back into
runs by anything else) against the runs the general paths make. The same random walk of fetches, acknowledgements, lock expiries, member
releases, retention moving the log start and failed writes on both must leave the same runs, the same transitions (state
batches, start offsets, dead letters, counts, acquired ranges) and the same errors. And
QueuePolicy's walk without priority, and the state store's combination onto its own state,
against their general ones."""

from __future__ import annotations

import asyncio
import uuid
from itertools import repeat

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tidelog.protocol.errors import KafkaError
from tidelog.protocol.share_requests import ack_batches
from tidelog.queues.acks import AcquireMode
from tidelog.queues.in_flight import TERMINAL, ArchiveReason, RecordState, finish
from tidelog.queues.log_batches import LogBatch, acquired_ranges
from tidelog.queues.priority import QueuePolicy
from tidelog.queues import record_attrs
from tidelog.queues.record_attrs import AttrRun, QueueSettings
from tidelog.queues.selection import Candidate
from tidelog.queues.share_partition import _ACQUIRE, AckBatch, AcknowledgeType, SharePartition, SharePartitionConfig
from tidelog.queues.state_records import ShareStateKey, StateBatch, TiledBatches, _state_batches
from tidelog.queues.state_store import ShareStateStore, combine_state_batches, expanded

from .share_helpers import FakeStateLog

MEMBERS = ("a", "b")
LOCK_MS = 1000
KEY = ShareStateKey("g", uuid.UUID(int=7), 0)


class GeneralPaths(SharePartition):
    """The share-partition as it was before the one-walk paths (the reference)."""

    def _accept_whole_runs(self, member_id, acks):
        return None

    def _in_one_run(self, *args):
        return False  # the walk over the policy's ranges, one by one

    def _record(self, t, built=False):
        super()._record(t)  # the batches from the transition's runs, whatever _carve built

    def _take_columns(self, *args):
        return False  # the policy's order, range by range

    def _advance_start(self):
        runs = self._runs
        start = self.start_offset
        i = runs.index_of(start)
        while i < len(runs):
            run = runs[i]
            if run.first > start or run.state not in TERMINAL or run.pending is not None:
                break
            start = run.last + 1
            i += 1
        self.start_offset = start
        k = 0
        while k < len(runs) and runs[k].first < start:
            run = runs[k]
            if run.state == RecordState.AVAILABLE and run.pending is None:
                for part in runs.isolate(run.first, min(run.last, start - 1)):
                    finish(part, RecordState.ARCHIVED)
                continue
            k += 1
        done = 0
        for head in runs:
            if head.last >= start or head.state not in TERMINAL or head.pending is not None:
                break
            done += 1
        del runs[:done]
        if not runs:
            self.start_offset = self.next_offset = max(self.start_offset, self.next_offset)
        elif self.next_offset < self.start_offset:
            self.next_offset = self.start_offset

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
        t.acquired = acquired_ranges(((r.first, r.last, r.delivery_count) for r in taken), None, None)
        return taken, redelivered, archived


class Discarding:
    """A filter-like policy: offsets in ``filtered`` are archived as filtered out, in ``expired`` as
    expired (dead-lettered), the rest taken in offset order. ``joined``: neighbours set aside for
    one reason in one candidate are one range (QueuePolicy's, from runs of equal verdicts), else
    one range each. ``split``: each record taken a range of its own (a priority policy's, or a
    filter's over records released again: several ranges in one run, redelivered ones too)."""

    lookahead_records = 3

    def __init__(self, filtered: frozenset[int], expired: frozenset[int], joined: bool = False,
                 split: bool = False, columnar: bool = False) -> None:
        self.filtered, self.expired, self.joined, self.split = filtered, expired, joined, split
        self.columnar = columnar  # QueuePolicy.columns' answer where it has one (a filter alone)
        self.discarded: list = []

    def columns(self, candidates, now_ms):
        """As QueuePolicy.columns: taken and filtered-out ranges tiling candidates that follow one
        another, each kind's neighbours joined, and where ``order``'s ranges end besides; None where
        something would expire."""
        if not self.columnar or not candidates or self.joined == self.split:
            return None  # (its taken and set-aside ranges end at the same places, or not at all)
        first, last = candidates[0].first_offset, candidates[-1].last_offset
        if sum(c.last_offset - c.first_offset + 1 for c in candidates) != last - first + 1 \
                or any(o in self.expired for o in range(first, last + 1)):
            return None
        taken: list[list[int]] = []
        for o in range(first, last + 1):
            if o in self.filtered:
                continue
            if taken and taken[-1][1] + 1 == o:
                taken[-1][1] = o
            else:
                taken.append([o, o])
        if self.split:  # (a range a record)
            breaks = list(range(first, last + 1))
        else:
            breaks = [c.last_offset for c in candidates]
        return [a for a, _ in taken], [b for _, b in taken], first, last, breaks

    def _discard(self, offset: int, reason: ArchiveReason, candidate_first: int) -> None:
        previous = self.discarded[-1] if self.discarded else None
        if self.joined and previous and previous[1] + 1 == offset and previous[2] == reason \
                and previous[0] >= candidate_first:
            self.discarded[-1] = (self.discarded[-1][0], offset, reason)
        else:
            self.discarded.append((offset, offset, reason))

    def order(self, candidates, now_ms):
        out = []
        for c in candidates:
            for o in range(c.first_offset, c.last_offset + 1):
                if o in self.filtered:
                    self._discard(o, ArchiveReason.FILTERED, c.first_offset)
                elif o in self.expired:
                    self._discard(o, ArchiveReason.EXPIRED, c.first_offset)
                elif out and out[-1][1] + 1 == o and not self.split:
                    out[-1] = (out[-1][0], o)
                else:
                    out.append((o, o))
        return out


def _joined(items) -> list[tuple]:
    """(first, last, *rest) items with neighbours alike but for their offsets joined: the same
    records in the same states, however they are cut (a gap of the fast path is an Archived run
    of the general one, which may have merged with an Archived neighbour)."""
    out: list[tuple] = []
    for first, last, *rest in items:
        if out and out[-1][1] + 1 == first and list(out[-1][2:]) == rest:
            out[-1] = (out[-1][0], last, *rest)
        else:
            out.append((first, last, *rest))
    return out


def _described(sp: SharePartition) -> list[tuple]:
    """``runs()`` joined, without the finished ones below the start offset (the general path keeps an
    Archived run there behind a held one; the fast path's gap there is not shown)."""
    return _joined(r for r in sp.runs() if r[1] >= sp.start_offset or r[2] not in TERMINAL)


def _outcome(sp: SharePartition, call):
    try:
        t = call(sp)
    except (KafkaError, RuntimeError) as e:
        return ("error", type(e).__name__, getattr(e, "error_code", None)), None
    if type(t.state_batches) is TiledBatches:
        # (written from the columns: the bytes of the batches packed one by one, issue 14.5)
        assert _state_batches(t.state_batches) == _state_batches(list(t.state_batches))
    return (sorted(t.state_batches), t.start_offset, list(t.dead_letters), dict(t.counts), list(t.acquired)), t


@settings(max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck))
class FastPathsMatchTheGeneralOnes(RuleBasedStateMachine):
    @initialize(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=12),
                filtered=st.sets(st.integers(0, 90)), expired=st.sets(st.integers(0, 90)),
                kept_one_in=st.one_of(st.none(), st.integers(2, 4)), per_snapshot=st.integers(1, 5))
    def setup(self, sizes, filtered, expired, kept_one_in, per_snapshot):
        if kept_one_in:  # a filter keeping 1 record in n, each alone (issue 14.5's worst case: mosaics)
            filtered, expired = {o for o in range(91) if o % kept_one_in}, set()
        self.log, offset = [], 0
        for size in sizes:
            self.log.append(LogBatch(offset, offset + size - 1))
            offset += size
        config = SharePartitionConfig(3, LOCK_MS, 40)
        self.config = config
        self.fast, self.general = SharePartition(config, 0), GeneralPaths(config, 0)
        self.filtered, self.expired = frozenset(filtered), frozenset(expired - filtered)
        self.now = 0
        self.log_start = 0
        # Each side's transitions written to a state store of its own, as ShareManager writes them
        # (the fast side's acquisitions as TiledBatches, kept as columns in its store's state): the
        # same records, byte for byte, and the same state read back after a restart.
        self.loop = asyncio.new_event_loop()
        self.per_snapshot = per_snapshot
        self.logs = {side: FakeStateLog() for side in ("fast", "general")}
        self.stores = {side: self._store(side) for side in self.logs}
        for store in self.stores.values():
            self.loop.run_until_complete(store.initialize(KEY, 0))

    def _store(self, side: str) -> ShareStateStore:
        log = self.logs[side]
        return log.replay_into(ShareStateStore(log.append, lambda: 1_700_000_000_000, self.per_snapshot))

    def teardown(self):
        if hasattr(self, "loop"):
            self.loop.close()

    def _settle(self, side: str, sp: SharePartition, t, fail: bool) -> None:
        """ShareManager._make_durable's steps: the state write (failing when ``fail``), then commit
        or rollback."""
        if t.empty and not t.dead_letters:
            sp.commit(t)
            return
        start = sp.start_offset if t.start_offset is None else max(t.start_offset, sp.start_offset)
        self.logs[side].fail_next = 1 if fail else 0
        try:
            self.loop.run_until_complete(self.stores[side].write(KEY, sp.state_epoch, start, t.state_batches,
                                                                 sp.delivery_complete_count(start)))
        except KafkaError:
            sp.rollback(t)
            return
        sp.commit(t)

    def _both(self, call, fail: bool):
        fast, t_fast = _outcome(self.fast, call)
        general, t_general = _outcome(self.general, call)
        assert fast == general
        if t_fast is not None:
            for side, sp, t in (("fast", self.fast, t_fast), ("general", self.general, t_general)):
                self._settle(side, sp, t, fail)
        return fast

    @rule(member=st.sampled_from(MEMBERS), max_records=st.integers(1, 10), fail=st.integers(0, 7),
          batch_size=st.one_of(st.none(), st.integers(1, 4)), joined=st.booleans(),
          mode=st.sampled_from(AcquireMode), split=st.booleans(), columnar=st.sampled_from([True, True, False]))
    def fetch(self, member, max_records, fail, batch_size, joined, mode, split, columnar):
        if columnar:  # (the columns stand for a policy whose ranges of both kinds end at the same places)
            split = not joined
        offset = self.fast.fetch_offset(self.now)
        assert offset == self.general.fetch_offset(self.now)
        if offset is None:
            return
        read = [b for b in self.log if b.last_offset >= offset and b.base_offset >= self.log_start]
        self._both(lambda sp: sp.acquire(member, read, max_records, self.now, batch_size=batch_size, mode=mode,
                                         policy=Discarding(self.filtered, self.expired, joined, split, columnar)),
                   fail == 0)

    @rule(member=st.sampled_from(MEMBERS), data=st.data(), fail=st.integers(0, 7))
    def acknowledge(self, member, data, fail):
        held = [(first, last) for first, last, state, _, owner in self.fast.runs()
                if state == RecordState.ACQUIRED and owner == member]
        if held and data.draw(st.booleans(), label="all held"):  # what a consumer usually sends: all it got
            picked = held
        else:
            picked = data.draw(st.lists(st.sampled_from(held), unique=True), label="ranges") if held else []
        kind = data.draw(st.sampled_from(["accept", "mixed", "join", "stray", "wide"]), label="kind")
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
        if kind == "wide" and acks:  # one batch reaching into what follows it (filtered-out records, others')
            k = data.draw(st.integers(0, len(acks) - 1), label="widened")
            end = acks[k + 1].first_offset - 1 if k + 1 < len(acks) else self.fast.next_offset - 1
            if end > acks[k].last_offset:
                acks[k] = AckBatch(acks[k].first_offset, data.draw(st.integers(acks[k].last_offset + 1, end)),
                                   acks[k].acknowledge_types)
        if acks and all(len(a.acknowledge_types) == 1 for a in acks) and data.draw(st.booleans(), label="columns"):
            # as the request decoder reads them in bulk (AckBatches, with columns)
            acks = ack_batches([a.first_offset for a in acks], [a.last_offset for a in acks],
                               bytes(a.acknowledge_types[0] for a in acks))
        self._both(lambda sp: sp.acknowledge(member, acks, self.now), fail == 0)

    @rule(ms=st.integers(0, 2 * LOCK_MS), fail=st.integers(0, 7))
    def time_passes(self, ms, fail):
        self.now += ms
        self._both(lambda sp: sp.expire_locks(self.now), fail == 0)

    @rule(step=st.integers(1, 6))
    def retention_deletes(self, step):
        self.log_start = min(self.log[-1].last_offset + 1, self.log_start + step)
        for sp in (self.fast, self.general):
            sp.move_log_start(self.log_start)

    @rule(member=st.sampled_from(MEMBERS), count_delivery=st.booleans())
    def member_leaves(self, member, count_delivery):
        self._both(lambda sp: sp.release_member(member, self.now, count_delivery=count_delivery), False)

    @rule()
    def restart(self):
        """Both brokers stop and load their share-partitions from what their stores wrote."""
        for side, kind in (("fast", SharePartition), ("general", GeneralPaths)):
            store = self.stores[side] = self._store(side)
            state = store.state(KEY)
            setattr(self, side, kind.from_state(self.config, state.start_offset, state.batches, state.state_epoch,
                                                self.now))
            store.snapshot_next(KEY)  # (ShareManager's load without a leader epoch)

    @invariant()
    def same_state(self):
        if not hasattr(self, "fast"):
            return
        assert self.logs["fast"].records == self.logs["general"].records
        assert self.stores["fast"].state(KEY) == self.stores["general"].state(KEY)
        assert _described(self.fast) == _described(self.general)
        assert (self.fast.start_offset, self.fast.next_offset) == (self.general.start_offset, self.general.next_offset)
        assert _joined(self.fast.state_batches()) == _joined(self.general.state_batches())
        for offset in range(self.fast.start_offset, self.fast.next_offset):
            assert self.fast.state_of(offset) == self.general.state_of(offset)
        assert self.fast.delivery_complete_count() == self.general.delivery_complete_count()


TestFastPathsMatchTheGeneralOnes = FastPathsMatchTheGeneralOnes.TestCase


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(1, 4), st.sampled_from([0, 0, 0, 1]), st.booleans(),
                               st.sampled_from([0, 0, 0, 1, 2, 3]), st.sampled_from([0, 0, 0, 1, 2, 3])),
                     max_size=20),
       holes=st.sets(st.integers(0, 60)), now=st.integers(0, 3))
def test_offset_order_without_priority_is_the_general_order_with_one_priority(runs, holes, now):
    """QueuePolicy's offset-order walk (priority off) takes, sets aside and defers what the
    general walk does with every record at one priority and no aging (its sort is then by offset),
    its candidates judged by a filter alone (runs without a gap, none expired nor due later:
    ``_judged_alike``'s slices) or not."""
    attrs, offset = [], 0
    for size, gap, matches, due, expire in runs:
        offset += gap
        attrs.append(AttrRun(offset, offset + size - 1, 0, 0, due, expire, matches))
        offset += size
    candidates, first = [], None
    for o in range(offset + 2):
        if o not in holes and o < offset + 1:
            first = o if first is None else first
        elif first is not None:
            candidates.append(Candidate(first, o - 1, 0))
            first = None
    plain = QueuePolicy(QueueSettings(), attrs)
    general = QueuePolicy(QueueSettings(priority_enabled=True, aging_ms=0), attrs)
    assert plain.order(candidates, now) == general.order(candidates, now)
    assert (plain.discarded, plain.deferred) == (general.discarded, general.deferred)


_BATCH = st.builds(lambda first, size, state, count, at: StateBatch(first, first + size - 1, state, count,
                                                                    at if state == 0 else 0),
                   st.integers(0, 60), st.integers(1, 8), st.sampled_from([0, 2, 4]), st.integers(0, 3),
                   st.sampled_from([0, 0, 5]))


@settings(max_examples=400, deadline=None)
@given(writes=st.lists(st.tuples(st.lists(_BATCH, max_size=6), st.integers(0, 40), st.integers(-2, 2), st.booleans(),
                                 st.booleans()),
                       min_size=1, max_size=6),
       sort_new=st.booleans())
def test_combining_onto_a_combined_state_is_the_general_combination(writes, sort_new):
    """The store's writes onto its own (combined) state give what the general combination gives;
    ``after``: a write's batches moved to begin around the state's end (an acquisition's, records
    entering the window: appended, joined with the last batch when ``alike``); ``tiled``: a write's
    batches one after another without a gap (an acquisition's, alike neighbours among them or not)."""
    fast = general = []
    start = 0
    for new, moved, after, alike, tiled in writes:
        start = max(start, moved)
        if sort_new:  # (a transition's batches are sorted and apart; the general ones may be anything)
            new = [b for i, b in enumerate(sorted(new)) if all(b.first_offset > a.last_offset for a in sorted(new)[:i])]
            if tiled:
                for i in range(1, len(new)):
                    size = new[i].last_offset - new[i].first_offset
                    new[i] = new[i]._replace(first_offset=new[i - 1].last_offset + 1,
                                             last_offset=new[i - 1].last_offset + 1 + size)
                if len(new) > 1 and new[0].delivery_state != new[1].delivery_state \
                        and all(b[2:] == new[k % 2][2:] for k, b in enumerate(new)) \
                        and not any(b.available_at_ms for b in new):
                    # (as an acquisition of a filter's matches makes them: two kinds in turn, columns)
                    new = TiledBatches([b.first_offset for b in new], [b.last_offset for b in new],
                                       (new[0][2:4], new[1][2:4]))
            if new and fast and after is not None:
                shift = fast[-1].last_offset + 1 + after - new[0].first_offset
                new = [b._replace(first_offset=b.first_offset + shift, last_offset=b.last_offset + shift) for b in new]
                if alike:
                    new[0] = StateBatch(new[0].first_offset, new[0].last_offset, *expanded(fast)[-1][2:])
        fast = combine_state_batches(fast, new, start, combined=True)
        general = combine_state_batches(general, new, start)
        assert expanded(fast) == general


def test_records_on_their_last_delivery_are_taken_alone_from_several_ranges_of_one_run():
    """Several ranges of the policy inside one Available run of records delivered twice (with a
    delivery count limit of 3: the last attempt) are not taken as one piece each: one record, alone,
    as the walk over the ranges takes it."""
    config = SharePartitionConfig(3, LOCK_MS, 40)
    log = [LogBatch(0, 9)]
    outcomes = []
    for sp in (SharePartition(config, 0), GeneralPaths(config, 0)):
        for _ in range(2):  # delivered twice, released each time
            sp.commit(sp.acquire("a", log, 10, 0))
            sp.commit(sp.acknowledge("a", [AckBatch(0, 9, (AcknowledgeType.RELEASE,))], 0))
        t = sp.acquire("a", log, 10, 0, policy=Discarding(frozenset(), frozenset(), split=True))
        outcomes.append(list(t.acquired))
    assert outcomes[0] == outcomes[1]
    assert [(a.first_offset, a.last_offset, a.delivery_count) for a in outcomes[0]] == [(0, 0, 3)]


@settings(max_examples=400, deadline=None)
@given(flags=st.lists(st.integers(0, 1), min_size=1, max_size=60), base=st.integers(0, 50))
def test_a_batchs_flag_columns_stand_for_its_runs_of_equal_verdicts(flags, base):
    """A batch judged by a filter alone, as columns (FlagRuns: the matching runs' first and last
    offsets), against a walk record by record, and its ``runs()`` against ``_flag_runs``."""
    columns = record_attrs.flag_columns(bytes(flags), base, 3, 5, 7, 9)
    matching: list[list[int]] = []
    for offset, flag in enumerate(flags, base):
        if flag and matching and matching[-1][1] == offset - 1:
            matching[-1][1] = offset
        elif flag:
            matching.append([offset, offset])
    assert (columns.first, columns.last) == (base, base + len(flags) - 1)
    assert list(zip(columns.firsts, columns.lasts)) == [tuple(m) for m in matching]
    runs = columns.runs()
    assert runs == record_attrs._flag_runs(bytes(flags), None, base, base + len(flags) - 1, 3, 5, 7, 9)
    assert all(type(r) is AttrRun for r in runs)


_PART = st.tuples(st.lists(st.integers(0, 1), min_size=1, max_size=12), st.integers(0, 1),
                  st.sampled_from(["flags", "flags", "flags", "runs", "due", "expired", "expires later"]))


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_PART, min_size=1, max_size=6), holes=st.sets(st.integers(0, 80)),
       span=st.tuples(st.integers(0, 80), st.integers(0, 80)))
def test_the_policys_columns_are_its_order_of_a_filter_alone(parts, holes, span):
    """QueuePolicy.columns (the batches' FlagRuns sliced) against its order (the walk over their
    AttrRuns): where it answers, the ranges taken and the filtered-out ones are those of ``order``
    (joined), nothing deferred; it answers for batches judged by the filter alone, one after
    another, under candidates without a gap."""
    now = 10
    view_parts, offset, simple = [], 0, True
    for flags, gap, kind in parts:
        offset += gap
        simple = simple and gap == 0 and kind in ("flags", "expires later")
        due, expire = (now + 1 if kind == "due" else 0), {"expired": now, "expires later": now + 1}.get(kind, 0)
        columns = record_attrs.flag_columns(bytes(flags), offset, 0, 0, due, expire)
        view_parts.append(columns.runs() if kind == "runs" else columns)
        offset += len(flags)
    low, high = min(span), min(max(span), offset - 1)
    candidates, first = [], None
    for o in range(low, high + 2):
        if o <= high and o not in holes:
            first = o if first is None else first
        elif first is not None:
            candidates.append(Candidate(first, o - 1, 0))
            first = None
    columnar = QueuePolicy(QueueSettings(), record_attrs.AttrView(view_parts))
    walked = QueuePolicy(QueueSettings(), record_attrs.AttrView(view_parts))
    answer = columnar.columns(candidates, now)
    if simple and candidates and len(candidates) == 1 and parts[0][1] == 0:
        assert answer is not None
    order = walked.order(candidates, now)
    if answer is None:
        return
    taken_firsts, taken_lasts, first, last, breaks = answer
    assert (first, last) == (candidates[0].first_offset, candidates[-1].last_offset)
    assert list(zip(taken_firsts, taken_lasts)) == _joined(order)
    taken = {o for a, b in zip(taken_firsts, taken_lasts) for o in range(a, b + 1)}
    assert _joined((o, o, ArchiveReason.FILTERED) for o in range(first, last + 1) if o not in taken) \
        == _joined(walked.discarded)
    assert walked.deferred == [] and columnar.discarded == columnar.deferred == []
    # where order's ranges end: at a break or where the verdict changes
    ends = {last for _, last in order} | {last for _, last, _ in walked.discarded}
    changes = {o for o in range(first, last) if (o in taken) != (o + 1 in taken)}
    assert ends == set(breaks) | changes


def test_flag_columns_of_a_batch_longer_than_the_kept_positions():
    """A batch of more records than record_attrs keeps positions for: the same columns (a range
    of positions then)."""
    flags = bytes((i * 7919) % 5 == 0 for i in range(20_000))
    columns = record_attrs.flag_columns(flags, 1_000, 0, 0, 0, 0)
    assert columns.runs() == record_attrs._flag_runs(flags, None, 1_000, 20_999, 0, 0, 0, 0)
    assert columns.firsts == [1_000 + i for i in range(20_000) if flags[i] and (i == 0 or not flags[i - 1])]
