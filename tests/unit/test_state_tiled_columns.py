"""An acquisition's alternating state batches kept with their columns (state_records.TiledBatches,
issue 14.5): the records of ``__share_group_state`` written from the columns are the bytes of the
batches packed one by one, whatever is cut from their front; a change to the batches that the
columns do not follow is packed one by one."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.queues.state_records import (
    ShareStateKey,
    ShareUpdateValue,
    StateBatch,
    TiledBatches,
    _state_batches,
    _tiled_batches,
    encode_update_value,
    tiled,
)
from tidelog.queues.state_store import ShareStateStore

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
    assert batches == expected and type(batches) is TiledBatches
    assert _tiled_batches(*batches.columns) == _state_batches(expected) == _state_batches(batches)
    # The start offset passing the first ``done`` batches and cutting into the next one (share_partition._record).
    done = data.draw(st.integers(0, len(firsts)), label="done")
    start = data.draw(st.integers(firsts[done], lasts[done]), label="start") if done < len(firsts) else 0
    kept = batches.after(done, start)
    cut = expected[done:]
    if cut and cut[0].first_offset < start:
        cut[0] = cut[0]._replace(first_offset=start)
    assert kept == cut and type(kept) is TiledBatches and batches == expected  # (the original untouched)
    assert _tiled_batches(*kept.columns) == _state_batches(cut)
    update = ShareUpdateValue(1, 2, 3, kept, 4)
    assert encode_update_value(update) == encode_update_value(ShareUpdateValue(1, 2, 3, cut, 4))


def test_batches_changed_behind_their_columns_are_packed_one_by_one():
    firsts, lasts = [10, 12, 15, 16], [11, 14, 15, 20]
    for change in ("append", "last", "first", "pop"):
        batches = tiled(list(firsts), list(lasts), (0, 4), (1, 0))
        if change == "append":
            batches.append(StateBatch(21, 30, 0, 1))
        elif change == "last":
            batches[-1] = batches[-1]._replace(last_offset=25)
        elif change == "first":
            batches[0] = batches[0]._replace(first_offset=11)
        else:
            batches.pop()
        assert _state_batches(batches) == _state_batches(list(batches)), change


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
