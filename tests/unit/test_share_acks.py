"""check_ack_batches (queues/acks.py): the shape of a request's acknowledgement batches checked for
all at once in the usual case (from AckBatch tuples, or from the columns of batches the request
decoder read in bulk), with the same verdict and message as the batch-by-batch check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.share_requests import ack_batches
from tidelog.queues import acks
from tidelog.queues.acks import AckBatch, check_ack_batches

_OFFSET = st.integers(0, 60)
_TYPES = st.one_of(st.tuples(st.sampled_from([0, 1, 1, 2, 3, 4, 5, -1])),
                   st.lists(st.sampled_from([0, 1, 2, 3, 4, 7]), max_size=4).map(tuple))


def _verdict(check, batches, start, next_offset, renew_allowed):
    try:
        check(batches, start, next_offset, renew_allowed)
    except KafkaError as e:
        return e.error_code, e.message
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_OFFSET, _OFFSET, _TYPES), max_size=8), _OFFSET, _OFFSET, st.booleans(), st.booleans())
def test_the_bulk_check_says_what_the_batch_by_batch_check_says(raw, start, next_offset, renew_allowed, ordered):
    if ordered:  # mostly well-formed: increasing single records
        raw = [(4 * i, 4 * i, types) for i, (_, _, types) in enumerate(raw)]
    batches = [AckBatch(*b) for b in raw]
    expected = _verdict(acks._check_each, batches, start, next_offset, renew_allowed)
    assert _verdict(check_ack_batches, batches, start, next_offset, renew_allowed) == expected
    if all(len(types) == 1 for _, _, types in raw):  # as the request decoder reads them in bulk
        bulk = ack_batches([b[0] for b in raw], [b[1] for b in raw], bytes(b[2][0] & 0xFF for b in raw))
        assert [bulk[i] for i in range(-len(bulk), len(bulk))] == batches + batches  # made one at a time
        assert list(bulk) == batches and bulk == tuple(batches) and bulk[1:] == tuple(batches[1:])
        assert len(bulk) == len(batches) and bool(bulk) == bool(batches)
        assert _verdict(check_ack_batches, bulk, start, next_offset, renew_allowed) == expected


def test_thousands_of_single_record_batches():
    batches = [AckBatch(4 * i, 4 * i, (1,)) for i in range(5000)]
    check_ack_batches(batches, 0, 20_000, False)
    with pytest.raises(KafkaError) as e:
        check_ack_batches(batches + [AckBatch(19_996, 19_997, (1,))], 0, 20_000, False)
    assert e.value.error_code == ErrorCode.invalid_request and "overlap" in e.value.message
    with pytest.raises(KafkaError, match="Invalid acknowledge type: 4"):
        check_ack_batches(batches[:-1] + [AckBatch(19_996, 19_996, (4,))], 0, 20_000, False)
    check_ack_batches(batches[:-1] + [AckBatch(19_996, 19_996, (4,))], 0, 20_000, True)
    with pytest.raises(KafkaError, match="past the acquired records"):
        check_ack_batches(batches, 0, 19_996, False)
