"""Issue 14's selection policy (``QueuePolicy``): priority with aging inside a bounded look-ahead,
delayed records left for their time, expired and filtered-out records set aside to be archived.

Given the candidates (Available records due now inside the read, in offset order) and the
records' attributes (record_attrs.py), ``order`` returns the ranges to acquire, most wanted first:

- a record whose TTL has passed goes to ``discarded`` as ``expired`` (archived, and dead-lettered
  where the group has a dead-letter topic); one the group's filter refuses as ``filtered``
  (archived for this group only);
- a record not yet due goes to ``deferred`` with its due time (the share-partition keeps it
  Available but not acquirable until then, and wakes fetches at that time);
- the rest, with priority on, sorted by effective priority descending then offset ascending. The
  effective priority is the record's priority plus one level per ``tidelog.priority.aging.ms``
  since its timestamp, so a record waits at most (9 - its priority) x aging before it outranks a
  fresh priority-9 record: a flood of high priorities cannot starve it. Without priority: offset
  order (Kafka's).

The guarantee (docs/queues.md): within one share-partition, among the records Available at an
acquisition inside the look-ahead window, a record of higher effective priority is acquired no
later than one of lower; equal ones in offset order; nothing already acquired is preempted;
nothing holds across partitions. Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import compress, repeat
from operator import itemgetter, not_
from typing import Sequence

from tidelog.queues.in_flight import ArchiveReason
from tidelog.queues.record_attrs import AttrRun, QueueSettings
from tidelog.queues.selection import Candidate

__all__ = ["QueuePolicy"]

_FIRST = itemgetter(0)  # an AttrRun's first offset
_LAST = itemgetter(1)  # an AttrRun's last offset (a C key for bisect)
_DUE = itemgetter(4)
_EXPIRE = itemgetter(5)
_MATCHES = itemgetter(6)


class QueuePolicy:
    """A SelectionPolicy over one acquisition's records (build one per acquisition)."""

    def __init__(self, settings: QueueSettings, attrs: Sequence[AttrRun]) -> None:
        self.settings = settings
        self.attrs = attrs
        self.lookahead_records = settings.lookahead_records if settings.reorders else 0
        self.deferred: list[tuple[int, int, int]] = []  # (first, last, due ms)
        self.discarded: list[tuple[int, int, ArchiveReason]] = []

    def order(self, candidates: Sequence[Candidate], now_ms: int) -> list[tuple[int, int]]:
        settings = self.settings
        if not settings.priority_enabled:
            return self._in_offset_order(candidates, now_ms)
        aging = settings.aging_ms
        segments: list[tuple[int, int, int, int]] = []  # (-effective priority, first, last, priority)
        attrs = self.attrs
        j = 0
        for candidate in candidates:
            first, last = candidate.first_offset, candidate.last_offset
            j = bisect_left(attrs, first, j, key=_LAST)
            position = first
            k = j
            while position <= last:
                run = attrs[k] if k < len(attrs) else None
                if run is None or run.first > position:  # no attributes known (not in the read): as is
                    end = last if run is None else min(last, run.first - 1)
                    segments.append((-settings.default_priority, position, end, settings.default_priority))
                    position = end + 1
                    continue
                end = min(last, run.last)
                if run.expire_ms and run.expire_ms <= now_ms:
                    self.discarded.append((position, end, ArchiveReason.EXPIRED))
                elif not run.matches:
                    self.discarded.append((position, end, ArchiveReason.FILTERED))
                elif run.due_ms > now_ms:
                    self.deferred.append((position, end, run.due_ms))
                else:
                    effective = run.priority + (max(0, now_ms - run.timestamp) // aging if aging else 0)
                    segments.append((-effective, position, end, run.priority))
                position = end + 1
                if end == run.last:
                    k += 1
        segments.sort()
        return [(first, last) for _, first, last, _ in segments]

    def _in_offset_order(self, candidates: Sequence[Candidate], now_ms: int) -> list[tuple[int, int]]:
        """``order`` without priority: the ranges to take in offset order, as they are met (a filter
        meets hundreds of attribute runs a fetch, so no tuple to sort each, no second list)."""
        out: list[tuple[int, int]] = []
        discarded, deferred = self.discarded, self.deferred
        expired, filtered = ArchiveReason.EXPIRED, ArchiveReason.FILTERED
        attrs = self.attrs
        count = len(attrs)
        j = 0
        for candidate in candidates:
            first, last = candidate.first_offset, candidate.last_offset
            # (the attributes cover the whole window, the candidates often only its end)
            j = bisect_left(attrs, first, j, key=_LAST)
            if j < count and attrs[j].first <= first and self._judged_alike(candidate, j, now_ms, out):
                continue
            position = first
            k = j
            while position <= last:
                run = attrs[k] if k < count else None
                if run is None or run.first > position:  # no attributes known (not in the read): as is
                    end = last if run is None else min(last, run.first - 1)
                    out.append((position, end))
                    position = end + 1
                    continue
                run_last = run.last
                end = last if last < run_last else run_last
                if not run.matches:  # (the usual one with a filter first)
                    if run.expire_ms and run.expire_ms <= now_ms:
                        discarded.append((position, end, expired))
                    else:
                        discarded.append((position, end, filtered))
                elif run.expire_ms and run.expire_ms <= now_ms:
                    discarded.append((position, end, expired))
                elif run.due_ms > now_ms:
                    deferred.append((position, end, run.due_ms))
                else:
                    out.append((position, end))
                position = end + 1
                if end == run_last:
                    k += 1
        return out

    def _judged_alike(self, candidate: Candidate, j: int, now_ms: int, out: list[tuple[int, int]]) -> bool:
        """``_in_offset_order`` for one candidate whose records the attribute runs from ``attrs[j]``
        (which holds its first record) cover without a gap, none expired nor due later (a filter
        alone: the usual case), without a Python step per run: the matching runs (clipped to the
        candidate) go to ``out``, the others to ``discarded`` as filtered out. False (nothing done)
        where that does not hold: the walk decides then."""
        attrs = self.attrs
        first, last = candidate.first_offset, candidate.last_offset
        m = bisect_right(attrs, last, j, key=_FIRST)  # the runs j..m-1 overlap the candidate
        if attrs[m - 1].last < last:  # (records after the runs: no attributes known)
            return False
        runs = attrs[j:m]
        if max(map(_EXPIRE, runs)) or max(map(_DUE, runs)) > now_ms:
            return False
        firsts = list(map(_FIRST, runs))
        lasts = list(map(_LAST, runs))
        if lasts[-1] - firsts[0] + 1 != sum(lasts) - sum(firsts) + len(runs):  # a gap between two runs
            return False
        firsts[0] = first
        lasts[-1] = last
        matches = list(map(_MATCHES, runs))
        out.extend(zip(compress(firsts, matches), compress(lasts, matches)))
        refused = list(map(not_, matches))
        self.discarded.extend(zip(compress(firsts, refused), compress(lasts, refused), repeat(ArchiveReason.FILTERED)))
        return True
