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
from itertools import compress, islice, repeat
from operator import itemgetter, not_
from typing import Sequence

from tidelog.queues.in_flight import ArchiveReason
from tidelog.queues.record_attrs import AttrRun, AttrView, FlagRuns, QueueSettings
from tidelog.queues.selection import Candidate

__all__ = ["QueuePolicy"]

_FIRST = itemgetter(0)  # an AttrRun's first offset
_LAST = itemgetter(1)  # an AttrRun's last offset (a C key for bisect)
_DUE = itemgetter(4)
_EXPIRE = itemgetter(5)
_MATCHES = itemgetter(6)


class QueuePolicy:
    """A SelectionPolicy over one acquisition's records (build one per acquisition)."""

    def __init__(self, settings: QueueSettings, attrs: Sequence[AttrRun] | AttrView) -> None:
        self.settings = settings
        self._view = attrs if type(attrs) is AttrView else None
        self._attrs = None if self._view is not None else attrs
        self.lookahead_records = settings.lookahead_records if settings.reorders else 0
        self.deferred: list[tuple[int, int, int]] = []  # (first, last, due ms)
        self.discarded: list[tuple[int, int, ArchiveReason]] = []

    @property
    def attrs(self) -> Sequence[AttrRun]:
        """The read's attribute runs (made from the FlagRuns on first use)."""
        if self._attrs is None:
            self._attrs = self._view.runs
        return self._attrs

    def columns(self, candidates: Sequence[Candidate], now_ms: int
                ) -> tuple[list[int], list[int], int, int, list[int]] | None:
        """What ``order`` would take for a filter alone, as columns, without an object per range:
        (firsts, lasts) of the ranges to take, in offset order, neighbours joined (across batches
        and candidates too), between ``first`` and ``last`` (the first candidate's first record,
        the last one's last), every other record there filtered out; and the offsets where
        ``order`` ends a range besides (``breaks``, sorted: each batch's and candidate's last, the
        last of all among them). None (nothing done) unless priority is off, the candidates follow
        one another without a gap, and the batches over them are FlagRuns, without a gap, none
        expired nor due later: ``order`` then. Changes nothing (``deferred`` and ``discarded`` are
        ``order``'s)."""
        view = self._view
        if view is None or self.settings.priority_enabled or not candidates:
            return None
        first, last = candidates[0].first_offset, candidates[-1].last_offset
        if len(candidates) > 1 and sum(map(_LAST, candidates)) - sum(map(_FIRST, candidates)) + len(candidates) \
                != last - first + 1:
            return None  # (a gap between two candidates)
        firsts: list[int] = []
        lasts: list[int] = []
        breaks: list[int] = []
        position = first  # the first record no batch covered yet
        for part in view.parts:  # (a batch each: a few)
            if type(part) is not FlagRuns:
                if part and part[-1].last >= first and part[0].first <= last:
                    return None
                continue
            if part.last < first:
                continue
            if part.first > position:
                return None  # (records without attributes, or a list of runs, before it)
            if (part.expire_ms and part.expire_ms <= now_ms) or part.due_ms > now_ms:
                return None
            if lasts and part.firsts and lasts[-1] + 1 == part.firsts[0]:  # (a match across the batches' border)
                lasts[-1] = part.lasts[0]
                firsts += islice(part.firsts, 1, None)
                lasts += islice(part.lasts, 1, None)
            else:
                firsts += part.firsts
                lasts += part.lasts
            breaks.append(part.last)
            position = part.last + 1
            if position > last:
                break
        if position <= last:
            return None
        breaks[-1] = last
        if len(candidates) > 1:
            breaks = sorted({*breaks, *map(_LAST, candidates)})
        i, j = bisect_left(lasts, first), bisect_right(firsts, last)
        taken_firsts, taken_lasts = firsts[i:j], lasts[i:j]
        if taken_firsts:
            if taken_firsts[0] < first:
                taken_firsts[0] = first
            if taken_lasts[-1] > last:
                taken_lasts[-1] = last
        return taken_firsts, taken_lasts, first, last, breaks

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
