"""A filter's acquired ranges as columns (queues/log_batches.py AcquiredColumns): the same sequence
of AcquiredRecords as the list they stand for, and what ShareFetch reads of them (the records they
hold, the batches holding them, the cut at a batch size) the same as from that list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.queues.log_batches import (
    AcquiredColumns,
    AcquiredRecords,
    BatchBounds,
    LogBatch,
    acquired_record_count,
    batches_holding,
    cut_at_batches,
)


@st.composite
def _layout(draw):
    """Log batches (offsets touching or with gaps) and acquired ranges in them, in offset order,
    not touching one another (as a mosaic's), and a delivery count."""
    batches, position = [], draw(st.integers(0, 1 << 40))
    for _ in range(draw(st.integers(1, 6))):
        position += draw(st.integers(0, 3))
        size = draw(st.integers(1, 12))
        batches.append(LogBatch(position, position + size - 1))
        position += size
    firsts, lasts = [], []
    offset = batches[0].base_offset
    while offset <= batches[-1].last_offset:
        offset += draw(st.integers(0, 4))
        length = draw(st.integers(1, 3))
        if offset + length - 1 > batches[-1].last_offset:
            break
        firsts.append(offset)
        lasts.append(offset + length - 1)
        offset += length + 1
    return batches, firsts, lasts, draw(st.integers(1, 6))


@settings(max_examples=300, deadline=None)
@given(_layout(), st.none() | st.integers(1, 8), st.data())
def test_acquired_columns_are_read_as_the_list_of_their_ranges(layout, batch_size, data):
    batches, firsts, lasts, count = layout
    columns = AcquiredColumns(list(firsts), list(lasts), count)
    listed = [AcquiredRecords(f, l, count) for f, l in zip(firsts, lasts)]
    assert columns == listed and list(columns) == listed and len(columns) == len(listed)
    assert bool(columns) == bool(listed)
    assert all(type(r) is AcquiredRecords for r in columns)
    if listed:
        k = data.draw(st.integers(-len(listed), len(listed) - 1))
        assert columns[k] == listed[k]
        assert columns[k:] == listed[k:] and columns[:k] == listed[:k]
    assert acquired_record_count(columns) == acquired_record_count(listed) == sum(l - f + 1 for f, l in zip(firsts, lasts))
    # the read: batches in a buffer one after another, 10 bytes each
    read = [(10 * i, 10, batch) for i, batch in enumerate(batches)]
    view = memoryview(bytes(range(10 * len(batches))))
    holding = batches_holding(view, read, columns)
    assert [bytes(b) for b in holding] == [bytes(b) for b in batches_holding(view, read, listed)]
    expected, pieces = [], []
    for pos, size, batch in read:  # record by record: a batch holding an acquired offset
        if any(batch.base_offset <= o <= batch.last_offset for f, l in zip(firsts, lasts) for o in range(f, l + 1)):
            if pieces and pieces[-1][1] == pos:
                pieces[-1][1] = pos + size
            else:
                pieces.append([pos, pos + size])
    assert [bytes(b) for b in holding] == [bytes(view[a:b]) for a, b in pieces]
    bounds = BatchBounds(batches)
    assert list(cut_at_batches(columns, bounds, batch_size)) == cut_at_batches(listed, bounds, batch_size)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)), max_size=30),
       st.integers(-(2**15), 2**15 - 1))
def test_acquired_columns_on_the_wire_are_their_ranges_packed_one_by_one(ranges, count):
    import struct

    columns = AcquiredColumns([f for f, _ in ranges], [l for _, l in ranges], count)
    assert columns.wire() == b"".join(struct.pack(">qqhx", f, l, count) for f, l in ranges)
