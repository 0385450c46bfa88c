"""Acknowledgements and acquire modes as ShareFetch and ShareAcknowledge carry them (KIP-932,
KIP-1206): the types, a batch of them, the request-shape checks Kafka's handler makes
(INVALID_REQUEST), and a batch's runs of equal types. The records' states are
share_partition.py's; this module holds no state.
"""

from __future__ import annotations

import enum
from typing import Iterable, NamedTuple, Sequence

from tidelog.protocol.errors import ErrorCode, KafkaError

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


class AckBatch(NamedTuple):
    """One AcknowledgementBatch of ShareFetch/ShareAcknowledge: one type for the range, or one per offset."""

    first_offset: int
    last_offset: int
    acknowledge_types: tuple[int, ...]


def check_ack_batches(acks: Sequence[AckBatch], start_offset: int, next_offset: int, renew_allowed: bool) -> None:
    """The request's shape, as Kafka's handler checks it: batches in order, not overlapping, one
    type or one per offset, known types (RENEW only where ``renew_allowed``), nothing past the
    share-partition's acquired records. Raises KafkaError INVALID_REQUEST."""
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
