"""An acquisition's alternating state batches kept as columns (state_records.TiledBatches, issue
14.5): a sequence of StateBatch made on demand, packed from its columns into the bytes of the
batches packed one by one whatever is cut from its front; and the state store keeping it as one
entry of its state (queues/state_store.py) writes the records, and keeps the state, that it writes
and keeps when given the same batches one by one, over random writes, cuts, failed appends,
fences and restarts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol.errors import KafkaError
from tidelog.protocol.wire import uvarint
from tidelog.queues.state_records import (
    ShareSnapshotValue,
    ShareStateKey,
    ShareUpdateValue,
    StateBatch,
    TiledBatches,
    _state_batches,
    _tiled_batches,
    encode_snapshot_value,
    encode_update_value,
    tiled,
)
from tidelog.queues.state_store import ShareStateStore, combine_state_batches, expanded

from .share_helpers import FakeStateLog

KEY = ShareStateKey("g", uuid.UUID(int=0xAB), 3)
# (an acquisition's two kinds in turn, as share_partition lays them, and any states and counts)
PATTERNS = st.one_of(st.sampled_from([((0, 4), (1, 0)), ((4, 0), (0, 1))]),
                     st.tuples(st.tuples(st.sampled_from([0, 2, 4]), st.sampled_from([0, 2, 4])),
                               st.tuples(st.integers(-(1 << 15), (1 << 15) - 1), st.integers(0, 300))))


@st.composite
def mosaics(draw):
    first = draw(st.one_of(st.integers(0, 1000), st.integers(0, (1 << 62))))
    firsts, lasts = [], []
    for length in draw(st.lists(st.integers(1, 6), max_size=60)):
        firsts.append(first)
        lasts.append(first + length - 1)
        first += length
    states, counts = draw(PATTERNS)
    return firsts, lasts, states, counts


def _one_by_one(firsts, lasts, states, counts):
    return [StateBatch(f, last, states[i % 2], counts[i % 2]) for i, (f, last) in enumerate(zip(firsts, lasts))]


@settings(max_examples=400, deadline=None)
@given(mosaic=mosaics(), data=st.data())
def test_columns_pack_to_the_bytes_of_the_batches_one_by_one_whatever_is_cut(mosaic, data):
    firsts, lasts, states, counts = mosaic
    batches = tiled(list(firsts), list(lasts), states, counts)
    expected = _one_by_one(firsts, lasts, states, counts)
    assert batches == expected and expected == batches and type(batches) is TiledBatches
    assert len(batches) == len(expected) and list(batches) == expected and bool(batches) == bool(expected)
    assert [batches[k] for k in range(-len(expected), len(expected))] == expected + expected
    assert uvarint(len(expected) + 1) + _tiled_batches(*batches.columns) == _state_batches(expected) \
        == _state_batches(batches)
    # The start offset passing the first ``done`` batches and cutting into the next one (share_partition._record).
    done = data.draw(st.integers(0, len(firsts)), label="done")
    start = data.draw(st.integers(firsts[done], lasts[done]), label="start") if done < len(firsts) else 0
    kept = batches.after(done, start)
    cut = expected[done:]
    if cut and cut[0].first_offset < start:
        cut[0] = cut[0]._replace(first_offset=start)
    assert kept == cut and type(kept) is TiledBatches and batches == expected  # (the original untouched)
    assert _state_batches(kept) == _state_batches(cut)
    if done < len(firsts):
        assert batches.from_offset(start) == cut
    assert batches.before(done) == expected[:done]
    update = ShareUpdateValue(1, 2, 3, kept, 4)
    assert encode_update_value(update) == encode_update_value(ShareUpdateValue(1, 2, 3, cut, 4))


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(mosaics(), st.lists(st.tuples(st.integers(1, 5), st.sampled_from([0, 2, 4]),
                                                              st.integers(0, 5), st.sampled_from([0, 0, 7])),
                                                    min_size=1, max_size=4)),
                      max_size=5))
def test_a_state_of_batches_and_tiled_batches_packs_as_its_batches(parts):
    """The state store's state (StateBatch and TiledBatches in offset order) in a snapshot: the
    bytes of its batches one by one, retry back-off deadlines among them."""
    items, position = [], 0
    for part in parts:
        if isinstance(part, tuple):
            firsts, lasts, states, counts = part
            if firsts:
                shift = position - firsts[0]
                items.append(tiled([f + shift for f in firsts], [x + shift for x in lasts], states, counts))
                position = items[-1].last_offset + 1
        else:
            for size, state, count, at in part:
                items.append(StateBatch(position, position + size - 1, state, count, at if state == 0 else 0))
                position += size
    one_by_one = expanded(items)
    assert _state_batches(items) == _state_batches(one_by_one)
    snapshot = ShareSnapshotValue(1, 2, 3, 4, 5, 6, items, 7)
    assert encode_snapshot_value(snapshot) == encode_snapshot_value(ShareSnapshotValue(1, 2, 3, 4, 5, 6, one_by_one, 7))


def test_the_store_writes_the_same_records_from_the_columns():
    firsts, lasts = list(range(100, 140, 2)), list(range(100, 140, 2))
    firsts, lasts = sorted(firsts + [f + 1 for f in firsts]), sorted(lasts + [x + 1 for x in lasts])
    written = []
    for batches in (tiled(list(firsts), list(lasts), (4, 0), (0, 1)), _one_by_one(firsts, lasts, (4, 0), (0, 1))):
        log = FakeStateLog()

        async def scenario():
            store = ShareStateStore(log.append, lambda: 1_700_000_000_000, updates_per_snapshot=2)
            await store.initialize(KEY, 100)
            await store.write(KEY, 0, 100, batches, 7)  # an update
            await store.write(KEY, 0, 101, batches.after(1, 101) if type(batches) is TiledBatches
                              else batches[1:], 8)  # another
            await store.write(KEY, 0, 103, [], 9)  # a snapshot of the state
            return store

        store = asyncio.run(scenario())
        written.append((log.records, store.state(KEY).batches))
    assert written[0] == written[1]
    assert [key[:2] for key, _ in written[0][0]] == [b"\x00\x00", b"\x00\x01", b"\x00\x01", b"\x00\x00"]


# --- the store keeping TiledBatches as entries of its state, against one given the batches one by one -------
_KINDS = st.one_of(st.sampled_from([((0, 1), (4, 0)), ((4, 0), (0, 1))]),  # an acquisition's, either first
                   st.tuples(st.tuples(st.sampled_from([0, 2, 4]), st.integers(0, 3)),
                             st.tuples(st.sampled_from([0, 2, 4]), st.integers(0, 3))).filter(
                       lambda kinds: kinds[0][0] != kinds[1][0]))
_MOVED = st.sampled_from([None, None, None, 0, 1, 3, 8])  # the start offset a write carries: None (-1) or moved on
_TILE = st.tuples(st.just("tile"), st.sampled_from(["end", "end", "joined", "anywhere"]), st.integers(0, 100),
                  st.lists(st.tuples(st.integers(0, 1), st.integers(1, 4)), min_size=1, max_size=12), _KINDS,
                  _MOVED)
_BATCHES = st.tuples(st.just("batches"), st.lists(
    st.tuples(st.integers(-10, 60), st.integers(1, 6), st.sampled_from([0, 2, 4]), st.integers(0, 3),
              st.sampled_from([0, 0, 9])), max_size=5), st.booleans(), _MOVED)
# (a batch right before or after one of the state's, alike it or in its state only: it joins, or not)
_BESIDE = st.tuples(st.just("beside"), st.integers(0, 1 << 16), st.booleans(), st.integers(1, 4),
                    st.one_of(st.none(), st.integers(0, 3)), _MOVED)
_STEPS = st.lists(st.one_of(_TILE, _TILE, _BATCHES, _BESIDE, st.tuples(st.just("start"), st.integers(0, 12)),
                            st.tuples(st.just("fail")), st.tuples(st.just("restart")),
                            st.tuples(st.just("fence"))), max_size=30)


def _tile(state: list[StateBatch], start: int, where: str, at: int, pieces, kinds) -> TiledBatches:
    """An acquisition's TiledBatches: after the state's end (``joined``: its first kind that of the
    state's last batch, so they join), or anywhere (over batches there: records delivered again)."""
    end = state[-1].last_offset + 1 if state else start + at % 8
    position = end if where in ("end", "joined") else start + at - 40
    if where == "joined" and state:  # (its first batch in the state of the last one: its count too, or not)
        last = state[-1]
        first = (last.delivery_state, last.delivery_count if kinds[0][1] < 2 else kinds[0][1])
        kinds = (first, kinds[1]) if last.delivery_state != kinds[1][0] else (first, kinds[0])
    firsts, lasts = [], []
    for gap, size in pieces:
        position += gap if firsts else 0
        firsts.append(position)
        lasts.append(position + size - 1)
        position += size
    return TiledBatches(firsts, lasts, kinds)


@settings(max_examples=300, deadline=None)
@given(steps=_STEPS, per_snapshot=st.integers(1, 6), initial=st.integers(0, 20))
def test_a_store_keeping_tiled_batches_writes_and_keeps_what_one_given_batches_does(steps, per_snapshot, initial):
    """Two stores, each over its own log: one given an acquisition's TiledBatches (kept as columns
    in its state), the other the same batches as a list of StateBatch. Every record appended (update
    or snapshot) is the same bytes, every state the same (and the general combination's), every
    write fails or succeeds alike, and each log replays to its store's state; across failed
    appends (torn: the next write a snapshot), fences (a snapshot) and restarts (the stores read
    back from their logs)."""
    logs = [FakeStateLog(), FakeStateLog()]
    clocks = [iter(range(1_700_000_000_000, 1_800_000_000_000, 7)) for _ in logs]  # (a clock each: alike)
    nows = [clock.__next__ for clock in clocks]

    async def scenario():
        stores = [ShareStateStore(log.append, now, updates_per_snapshot=per_snapshot) for log, now in zip(logs, nows)]
        for store in stores:
            await store.initialize(KEY, initial)
        reference, start, leader_epoch = [], initial, 0
        for step in steps:
            kind = step[0]
            state = stores[1].state(KEY).batches
            if kind == "fail":
                for log in logs:
                    log.fail_next = 1
                continue
            if kind == "restart":
                stores = [log.replay_into(ShareStateStore(log.append, now, updates_per_snapshot=per_snapshot))
                          for log, now in zip(logs, nows)]
            elif kind == "fence":
                leader_epoch += 1
                outcomes = []
                for store in stores:
                    try:
                        await store.fence(KEY, leader_epoch)
                        outcomes.append(None)
                    except KafkaError as e:
                        outcomes.append(e.error_code)
                assert outcomes[0] == outcomes[1]
            else:
                if kind == "tile":
                    _, where, at, pieces, kinds, moved = step
                    new = _tile(state, start, where, at, pieces, kinds)
                    given = [new, list(new)]
                elif kind == "batches":
                    _, drawn, ordered, moved = step
                    new = [StateBatch(start + first, start + first + size - 1, s, count, at if s == 0 else 0)
                           for first, size, s, count, at in drawn]
                    if ordered:  # (a transition's: sorted, apart)
                        new = [b for i, b in enumerate(sorted(new))
                               if all(b.first_offset > a.last_offset for a in sorted(new)[:i])]
                    given = [new, list(new)]
                elif kind == "beside":
                    _, index, before, size, count, moved = step
                    if not state:
                        continue
                    # (beside the first or last batch of an entry of the store's state: a TiledBatches' edges)
                    entry = stores[0]._states[KEY].batches[index % len(stores[0]._states[KEY].batches)]
                    near = (entry if type(entry) is StateBatch else entry[0] if before else entry[-1]) \
                        if index % 3 else state[index % len(state)]
                    first = near.first_offset - size if before else near.last_offset + 1
                    new = [StateBatch(first, first + size - 1, near.delivery_state,
                                      near.delivery_count if count is None else count, near.available_at_ms)]
                    given = [new, list(new)]
                else:
                    moved = step[1]
                    given = [[], []]
                moved = -1 if moved is None else start + moved
                outcomes = []
                for store, batches in zip(stores, given):
                    try:
                        await store.write(KEY, 0, moved, batches, 5)
                        outcomes.append(None)
                    except KafkaError as e:
                        outcomes.append(e.error_code)
                assert outcomes[0] == outcomes[1]
                if outcomes[0] is None:
                    start = start if moved == -1 else max(moved, start)
                    reference = combine_state_batches(reference, list(given[1]), start)
            assert logs[0].records == logs[1].records
            assert stores[0].state(KEY) == stores[1].state(KEY)
            assert stores[0].state(KEY).batches == reference and stores[0].state(KEY).start_offset == start
            complete = sum(b.last_offset - max(b.first_offset, start) + 1 for b in reference
                           if b.delivery_state in (2, 4) and b.last_offset >= start)
            assert stores[0].completion(KEY) == stores[1].completion(KEY) == (start, complete)
        for log, store, now in zip(logs, stores, nows):
            assert log.replay_into(ShareStateStore(log.append, now)).state(KEY).batches == store.state(KEY).batches

    asyncio.run(scenario())


@pytest.mark.parametrize("kinds", [((0, 1), (4, 0)), ((4, 0), (0, 1))])
def test_an_acquisition_joining_the_states_last_batch_takes_one_batch_off_each(kinds):
    """A state ending in TiledBatches and an acquisition right after it whose first batch is alike
    the state's last one: joined as the batches one by one join, the rest kept as columns."""
    one, other = kinds

    async def scenario():
        store = ShareStateStore(FakeStateLog().append, lambda: 1)
        await store.initialize(KEY, 0)
        await store.write(KEY, 0, 0, TiledBatches([0, 1, 2], [0, 1, 4], (one, other)), -1)
        await store.write(KEY, 0, 0, TiledBatches([5, 7], [6, 7], (one, other)), -1)
        return store

    store = asyncio.run(scenario())
    assert store.state(KEY).batches == [StateBatch(0, 0, *one), StateBatch(1, 1, *other), StateBatch(2, 6, *one),
                                        StateBatch(7, 7, *other)]
    assert [type(item) for item in store._states[KEY].batches] == [TiledBatches, StateBatch, TiledBatches]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)), max_size=40),
       st.tuples(st.sampled_from([0, 2, 4]), st.integers(-(2**15), 2**15 - 1),
                 st.sampled_from([0, 2, 4]), st.integers(-(2**15), 2**15 - 1)))
def test_tiled_columns_are_packed_in_c_as_in_python(offsets, kinds):
    """protocol/_recordwalk.c pack_tiled (the update record's TiledBatches) writes the bytes the
    Python packing writes, which writes each batch as a StateBatch is written."""
    from tidelog.queues import state_records

    if state_records._pack_tiled_in_c is None:
        pytest.skip("the C extension is not built (or built before pack_tiled)")
    firsts, lasts = [f for f, _ in offsets], [l for _, l in offsets]
    fields = state_records._TILE_FIELDS.pack(*kinds)
    packed = state_records._pack_tiled_in_c(firsts, lasts, fields)
    assert packed == state_records._tiled_batches_python(firsts, lasts, fields)
    state0, count0, state1, count1 = kinds
    assert packed == state_records._plain_batches([StateBatch(f, l, *((state0, count0) if i % 2 == 0 else (state1, count1)))
                                                   for i, (f, l) in enumerate(offsets)])
    with pytest.raises(OverflowError):
        state_records._pack_tiled_in_c([2**63], [0], fields)
