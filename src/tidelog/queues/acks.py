"""Acknowledgements and acquire modes as ShareFetch and ShareAcknowledge carry them (KIP-932,
KIP-1206): the types, a batch of them, the request-shape checks Kafka's handler makes
(INVALID_REQUEST), and a batch's runs of equal types. The records' states are
share_partition.py's; this module holds no state.
"""

from __future__ import annotations

import enum
import itertools
import operator
from typing import Iterable, Sequence

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.share_requests import AckBatch, AckBatches  # defined with the requests' decoding

__all__ = ["AckBatch", "AcknowledgeType", "AcquireMode", "ack_ranges", "check_ack_batches"]


class AcknowledgeType(enum.IntEnum):
    GAP = 0
    ACCEPT = 1
    RELEASE = 2
    REJECT = 3
    RENEW = 4


class AcquireMode(enum.IntEnum):
    """ShareFetch v2's ShareAcquireMode (KIP-1206); v1 requests are batch_optimized."""

    BATCH_OPTIMIZED = 0
    RECORD_LIMIT = 1


_FIRST, _LAST, _TYPES = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_KNOWN_TYPE = frozenset(int(t) for t in AcknowledgeType if t != AcknowledgeType.RENEW)
_KNOWN_TYPE_OR_RENEW = _KNOWN_TYPE | {int(AcknowledgeType.RENEW)}
_ONE_KNOWN_TYPE = frozenset((t,) for t in _KNOWN_TYPE)
_ONE_KNOWN_TYPE_OR_RENEW = frozenset((t,) for t in _KNOWN_TYPE_OR_RENEW)


def check_ack_batches(acks: Sequence[AckBatch], start_offset: int, next_offset: int, renew_allowed: bool) -> None:
    """The request's shape, as Kafka's handler checks it: batches in order, not overlapping, one
    type or one per offset, known types (RENEW only where ``renew_allowed``), nothing past the
    share-partition's acquired records. Raises KafkaError INVALID_REQUEST.

    Thousands of single-record batches are usual (a filter, priorities): the usual shape (one
    known type a batch, in order, within the acquired records) is checked for all at once; a
    request that fails it, or has a type per offset, is checked batch by batch, which names the
    first problem."""
    if not acks:
        return
    if type(acks) is AckBatches:  # read in bulk: the columns are there
        firsts, lasts = acks.firsts, acks.lasts
        known_types = set(acks.types) <= (_KNOWN_TYPE_OR_RENEW if renew_allowed else _KNOWN_TYPE)
    else:
        firsts, lasts = list(map(_FIRST, acks)), list(map(_LAST, acks))
        known_types = set(map(_TYPES, acks)) <= (_ONE_KNOWN_TYPE_OR_RENEW if renew_allowed else _ONE_KNOWN_TYPE)
    if (known_types and all(map(operator.le, firsts, lasts))
            and all(map(operator.lt, lasts, itertools.islice(firsts, 1, None)))
            and (lasts[-1] < start_offset or lasts[-1] < next_offset)):
        return
    _check_each(acks, start_offset, next_offset, renew_allowed)


def _check_each(acks: Sequence[AckBatch], start_offset: int, next_offset: int, renew_allowed: bool) -> None:
    previous_last = None
    for ack in acks:
        first, last, types = ack.first_offset, ack.last_offset, ack.acknowledge_types
        if last < first:
            raise KafkaError(ErrorCode.invalid_request, f"Acknowledgement batch {first}-{last} ends before it starts.")
        if previous_last is not None and first <= previous_last:
            raise KafkaError(ErrorCode.invalid_request, "Acknowledgement batches overlap or are not in offset order.")
        previous_last = last
        if len(types) != 1 and len(types) != last - first + 1:
            raise KafkaError(ErrorCode.invalid_request,
                             f"Acknowledgement batch {first}-{last} has {len(types)} acknowledge types; 1 or "
                             f"{last - first + 1} expected.")
        for ack_type in types:
            if ack_type not in AcknowledgeType._value2member_map_ or (
                    ack_type == AcknowledgeType.RENEW and not renew_allowed):
                raise KafkaError(ErrorCode.invalid_request, f"Invalid acknowledge type: {ack_type}.")
        if last >= start_offset and last >= next_offset:
            raise KafkaError(ErrorCode.invalid_request,
                             f"Batch record not found. Offsets {first}-{last} are past the acquired records "
                             f"(next offset {next_offset}).")


def ack_ranges(ack: AckBatch) -> Iterable[tuple[int, int, int]]:
    """(first, last, type) sub-ranges of an acknowledgement batch, consecutive equal types joined."""
    types = ack.acknowledge_types
    if len(types) == 1:
        yield ack.first_offset, ack.last_offset, types[0]
        return
    start = ack.first_offset
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[i - 1]:
            yield start, ack.first_offset + i - 1, types[i - 1]
            start = ack.first_offset + i
