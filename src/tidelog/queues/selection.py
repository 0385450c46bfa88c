"""Which Available records an acquisition takes, and in what order: the share-partition's selection policy.

A ``SelectionPolicy`` gets the ``Candidate`` ranges (Available, due now, inside what was read from
the log) in offset order and yields the ranges to take, most wanted first; the share-partition
takes them until MaxRecords, applying the acquire mode's cut rules and the delivery-count
throttling. ``OffsetOrder`` is Kafka's (lowest offsets first). Issue 14's priority, delay, TTL
and filters plug in here. Policies are pure: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Protocol, Sequence

__all__ = ["OFFSET_ORDER", "Candidate", "OffsetOrder", "SelectionPolicy"]


class Candidate(NamedTuple):
    """Available records a selection policy may choose from: due now, inside what was read."""

    first_offset: int
    last_offset: int
    delivery_count: int


class SelectionPolicy(Protocol):
    """Chooses which Available records an acquisition takes, and in what order.

    ``order`` gets the candidates in offset order and yields (first, last) ranges inside them, most
    wanted first; acquisition takes them in that order until MaxRecords, applying the mode's cut
    rules and the delivery-count throttling. A policy may leave records out (a record not yet due,
    filtered out, ...); they stay Available. ``lookahead_records`` is how many records past the
    ones MaxRecords needs should enter the window, so that the policy has a choice (bounded by the
    in-flight limit). Issue 14's priority/delay/TTL/filters plug in here.
    """

    lookahead_records: int

    def order(self, candidates: Sequence[Candidate], now_ms: int) -> Iterable[tuple[int, int]]: ...


class OffsetOrder:
    """Kafka's order: the lowest offsets first."""

    lookahead_records = 0

    def order(self, candidates: Sequence[Candidate], now_ms: int) -> Iterable[tuple[int, int]]:
        return ((c.first_offset, c.last_offset) for c in candidates)


OFFSET_ORDER = OffsetOrder()
