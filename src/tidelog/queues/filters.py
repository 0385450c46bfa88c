"""Broker-side filters of share groups (issue 14): the group config ``tidelog.filter`` holds a CEL
expression (Common Expression Language, PyPI ``common-expression-language``) over a record's

- ``key``: bytes, or null;
- ``headers``: a map of header name (string) to value (bytes; null for a null value; the last of
  a repeated name);
- ``timestamp``: int, the record's timestamp in milliseconds;

and a share group never gets a record for which it is not ``true`` (the record is archived for
that group, counted as ``filtered``). An expression that fails on a record (a missing header read
with ``headers["x"]``, a type error) counts as not matching, and as ``filter_errors``; use
``"x" in headers && headers["x"] == b"..."`` to test an optional header.

Cost: evaluating a CEL program from Python is about 10-20 us a record (building the activation
is most of it), so results are memoised by what the expression reads: an expression over
headers only is evaluated once per distinct header set, not per record (a bounded memo, cleared
when full); one reading the timestamp once per distinct (what it reads, timestamp) within a batch
(a producer's batch shares a few timestamps). Records are evaluated once per group as they enter
the window (record_attrs.py's cache), not on every fetch.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

__all__ = ["RecordFilter", "compile_filter"]

logger = logging.getLogger(__name__)

MEMO_ENTRIES = 4096


class RecordFilter:
    """A compiled ``tidelog.filter``: call it with (key, headers, timestamp)."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        import cel  # at the first filter, not at every broker start (it loads its CLI: ~0.6 s)

        self.program = cel.compile(expression)  # ValueError with the compiler's message
        names = set(self.program.variables())
        self._key = "key" in names
        self._headers = "headers" in names
        self._timestamp = "timestamp" in names
        # The header names it reads, when it reads headers only by name (headers["x"], headers.x,
        # "x" in headers): the memo is then keyed by those headers' values alone.
        self._header_names = _header_names(expression) if self._headers else None
        self._memo: dict[tuple, bool] = {}
        # A one-header filter's: that header's value (False: none) -> 1 or 0 (``known_verdicts``).
        self._verdicts: dict = {}
        # What a record walk must decode for it: the key or not, these headers (None: all of them).
        self.reads_key = self._key
        self.reads_timestamp = self._timestamp
        self.header_names = self._header_names if self._headers else ()
        self.evaluations = 0
        self.errors = 0

    def __call__(self, key: bytes | None, headers: dict, timestamp: int) -> bool:
        return self.judge([(0, timestamp, key, headers)])[0]

    def judge(self, records: Sequence[tuple[int, int, bytes | None, dict]]) -> list[bool]:
        """Whether each (offset, timestamp, key, headers) record matches: the memo answers in one
        pass over the batch, CEL runs only for what it has not seen. A filter reading the timestamp
        is memoised within the batch only: across batches a timestamp is nearly unique (a shared
        memo would only churn), but a producer makes a batch in a few milliseconds, so its records
        share a few timestamps."""
        if self._timestamp:
            seen: dict = {}  # bounded by the batch
            results = []
            for (_, timestamp, key, headers), read in zip(records, self._memo_keys(records)):
                found = seen.get((read, timestamp))
                if found is None:
                    found = seen[(read, timestamp)] = self._evaluate(key, headers, timestamp)
                results.append(found)
            return results
        memo = self._memo
        keys = self._memo_keys(records)
        results = list(map(memo.get, keys))
        for i in [i for i, result in enumerate(results) if result is None]:
            found = memo.get(keys[i])
            if found is None:
                _, timestamp, key, headers = records[i]
                found = self._evaluate(key, headers, timestamp)
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[keys[i]] = found
            results[i] = found
        return results

    def judge_values(self, values: Sequence) -> list[bool]:
        """``judge`` for a filter that reads one header (``header_names`` of one name) and neither the
        key nor the timestamp, given that header's value in each record (bytes, None for a null
        value, False where the record has none: protocol/_recordwalk.c ``header_values``)."""
        return list(map(bool, self.verdicts(values)))

    @property
    def known_verdicts(self) -> dict:
        """The verdicts ``verdicts`` has made, by value (bytes, None for a null value, False for no
        such header) -> 1 or 0: what protocol/_recordwalk.c ``header_runs`` looks values up in (a
        value not in it: the caller takes ``verdicts``, which judges it). Bounded as the memo."""
        return self._verdicts

    def verdicts(self, values: Sequence) -> bytes:
        """``judge_values`` as a byte a record (1: matches, 0: not), in C (no Python step per
        record) from the verdicts of the values seen before (bounded as the memo); a value not seen
        yet is evaluated once (through the memo), then the batch is looked up again."""
        verdict = self._verdicts
        try:
            return bytes(map(verdict.__getitem__, values))
        except KeyError:
            pass
        (name,) = self._header_names
        memo = self._memo
        distinct = set(values)  # (False, None and b"" are distinct keys: equality, not hash)
        if len(verdict) + len(distinct) > MEMO_ENTRIES:
            verdict.clear()
        for value in distinct.difference(verdict):
            key = _MISSING if value is False else value
            found = memo.get(key)
            if found is None:
                found = self._evaluate(None, {} if value is False else {name: value}, 0)
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[key] = found
            verdict[value] = 1 if found else 0
        return bytes(map(verdict.__getitem__, values))

    def _memo_keys(self, records) -> list:
        names = self._header_names
        if names is not None and not self._key and not self._timestamp:
            if len(names) == 1:  # the usual filter: one header's value is all it reads
                (name,) = names
                return [headers.get(name, _MISSING) for _, _, _, headers in records]
            return [tuple([headers.get(name, _MISSING) for name in names]) for _, _, _, headers in records]
        keys = []
        for _, _, key, headers in records:  # (the timestamp is not part of it: judge adds it per batch)
            if names is not None:
                read = tuple([headers.get(name, _MISSING) for name in names])
            else:
                read = tuple(headers.items()) if self._headers else None
            keys.append((key if self._key else None, read))
        return keys

    def _evaluate(self, key: bytes | None, headers: dict, timestamp: int) -> bool:
        self.evaluations += 1
        try:
            return self.program.execute({"key": key, "headers": headers, "timestamp": timestamp}) is True
        except Exception as e:  # noqa: BLE001 - a record the expression cannot judge does not match
            self.errors += 1
            if self.errors == 1 or self.errors % 10000 == 0:
                logger.warning("share group filter %r failed on a record (%d failures so far): %s",
                               self.expression, self.errors, e)
            return False


_MISSING = object()
_BY_NAME = re.compile(r"""headers\s*\[\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*\]"""
                      r"""|headers\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()"""
                      r"""|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s+in\s+headers\b""")


def _header_names(expression: str) -> tuple[str, ...] | None:
    """The header names an expression reads, if it reads headers only by literal name; else None."""
    names: set[str] = set()
    for quoted, field_name, tested in _BY_NAME.findall(expression):
        literal = quoted or tested
        if literal:
            if "\\" in literal:
                return None  # an escape: do not guess what it names
            names.add(literal[1:-1])
        else:
            names.add(field_name)
    if re.search(r"\bheaders\b", _BY_NAME.sub("", expression)):
        return None  # headers used some other way (size(headers), headers.exists(...), a variable key)
    return tuple(sorted(names))


def compile_filter(expression: str) -> RecordFilter | None:
    """The filter for a group config value; None for the empty expression (no filter)."""
    if not expression.strip():
        return None
    return RecordFilter(expression)
