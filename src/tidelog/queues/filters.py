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
is most of it). An expression in the subset below (``plan_of``) is judged a batch at a time
without CEL: the record walk in C (protocol/_recordwalk.c ``filter_atoms``) judges each of its
comparisons on every record (true, false, or an error, as CEL's) and combines them by ``&&``,
``||`` and ``!`` with CEL's rules for errors (``false && error`` is false, ``true || error`` true,
in either order; otherwise an error stays one, the record does not match and counts in
``filter_errors``, once a record, as on every other path), returning
the runs of matching records; without the extension ``BatchPlan`` does the same over the Python
walk's records, as integers a bit a record. The subset: ``&&``, ``||``, ``!`` (before a
parenthesis, ``!`` or a boolean literal), parentheses, ``true``, ``false``, and the comparisons

- ``timestamp <op> N`` (or ``N <op> timestamp``), ``<op>`` one of < <= > >= == !=, N a decimal
  int literal (maybe negative);
- ``key == null``, ``key != null``, ``key == b"..."``, ``key != b"..."`` (and ``"..."``: CEL's
  bytes and strings are never equal);
- ``"x" in headers``;
- ``headers["x"]`` (or ``headers.x``) ``==`` or ``!=`` a bytes literal, ``null`` or a string
  literal (never equal to a value, as in CEL; an error where there is no header x);

each side either way round; literals without escapes (an expression with a backslash in a literal,
a ``//`` comment, ``headers[b"x"]``, a double, a uint, a macro or a function takes CEL's path).
Other expressions are memoised by what they read: an expression over headers only is evaluated
once per distinct header set, not per record (a bounded memo, cleared when full); one reading the
timestamp once per distinct (what it reads, timestamp) within a batch (a producer's batch shares a
few timestamps). Records are evaluated once per group as they enter the window (record_attrs.py's
cache), not on every fetch.
"""

from __future__ import annotations

import logging
import re
from operator import itemgetter
from typing import Sequence

__all__ = ["BatchPlan", "RecordFilter", "compile_filter", "plan_of"]

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
        self.errors = 0  # records the expression failed on (each record of each batch judged: filter_errors)
        self.last_error = ""  # CEL's message of the last failure (in the WARNING)
        # The expression as comparisons judged a batch at a time (the subset above), else None.
        self.plan = plan_of(expression)

    def __call__(self, key: bytes | None, headers: dict, timestamp: int) -> bool:
        return self.judge([(0, timestamp, key, headers)])[0]

    def judge(self, records: Sequence[tuple[int, int, bytes | None, dict]]) -> list[bool]:
        """Whether each (offset, timestamp, key, headers) record matches: the memo answers in one
        pass over the batch, CEL runs only for what it has not seen. A filter reading the timestamp
        is memoised within the batch only: across batches a timestamp is nearly unique (a shared
        memo would only churn), but a producer makes a batch in a few milliseconds, so its records
        share a few timestamps."""
        if self.plan is not None and (not self._timestamp or not records or (
                min(map(_timestamp_of, records)) in _INT64 and max(map(_timestamp_of, records)) in _INT64)):
            # (without the C walk, or a record the whole walk judges; a timestamp past int64, which
            # CEL converts its own way, is CEL's to judge)
            return list(map(bool, self.batch_verdicts(self.plan.codes_of(records), len(records))))
        if self._timestamp:
            seen: dict = {}  # bounded by the batch
            results = []
            for (_, timestamp, key, headers), read in zip(records, self._memo_keys(records)):
                found = seen.get((read, timestamp))
                if found is None:
                    found = seen[(read, timestamp)] = self._evaluate(key, headers, timestamp)
                results.append(found)
            return self._matched(results)
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
        return self._matched(results)

    def _matched(self, verdicts: list[int]) -> list[bool]:
        """Verdicts (1, 0, ``FAILED``) as whether each record matches; the failed ones counted, each
        record (a verdict the memo remembers counts again on every record that has it)."""
        self.count_errors(verdicts.count(FAILED))
        return list(map(_MATCHES, verdicts))

    def batch_verdicts(self, codes: Sequence[bytes], count: int) -> bytes:
        """The verdicts of ``count`` records as a byte a record (1: matches) from the codes of the
        plan's atoms (``BatchPlan.atoms``: a byte a record each, 0 false, 1 true, 2 an error); the
        records the expression fails on count as ``errors``."""
        verdicts, failed = self.plan.combine(codes, count)
        self.count_errors(failed)
        return verdicts

    def count_errors(self, failed: int) -> None:
        """``failed`` more records the expression failed on (a batch's, judged by its plan)."""
        if failed:
            before = self.errors
            self.errors += failed
            if before == 0 or before // 10000 != self.errors // 10000:
                logger.warning("share group filter %r failed on %d records of a batch (%d failures so far)%s",
                               self.expression, failed, self.errors,
                               f"; the last: {self.last_error}" if self.last_error else "")

    def judge_values(self, values: Sequence) -> list[bool]:
        """``judge`` for a filter that reads one header (``header_names`` of one name) and neither the
        key nor the timestamp, given that header's value in each record (bytes, None for a null
        value, False where the record has none: protocol/_recordwalk.c ``header_values``)."""
        return list(map(bool, self.verdicts(values)))

    @property
    def known_verdicts(self) -> dict:
        """The verdicts ``verdicts`` has made, by value (bytes, None for a null value, False for no
        such header) -> 1, 0 or ``FAILED``: what protocol/_recordwalk.c ``header_runs`` looks values
        up in (a value not in it: the caller takes ``verdicts``, which judges it; it counts the
        records whose value has ``FAILED``). Bounded as the memo."""
        return self._verdicts

    def verdicts(self, values: Sequence) -> bytes:
        """``judge_values`` as a byte a record (1: matches, 0: not), in C (no Python step per
        record) from the verdicts of the values seen before (bounded as the memo); a value not seen
        yet is evaluated once (through the memo), then the batch is looked up again."""
        verdict = self._verdicts
        try:
            return self._flags(bytes(map(verdict.__getitem__, values)))
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
            verdict[value] = found
        return self._flags(bytes(map(verdict.__getitem__, values)))

    def _flags(self, verdicts: bytes) -> bytes:
        """A byte a record of verdicts (1, 0, ``FAILED``) as 1 (matches) or 0, the failed ones counted."""
        failed = verdicts.count(FAILED)
        if not failed:
            return verdicts
        self.count_errors(failed)
        return verdicts.translate(_FAILED_AS_0)

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

    def _evaluate(self, key: bytes | None, headers: dict, timestamp: int) -> int:
        """CEL's verdict: 1 (matches), 0 or ``FAILED`` (the caller counts each record it stands for)."""
        self.evaluations += 1
        try:
            return 1 if self.program.execute({"key": key, "headers": headers, "timestamp": timestamp}) is True else 0
        except Exception as e:  # noqa: BLE001 - a record the expression cannot judge does not match
            self.last_error = str(e) or type(e).__name__
            return FAILED


FAILED = 2  # a verdict: the expression failed on the record (it does not match; counted in ``errors``);
# protocol/_recordwalk.c HEADER_RUNS_FAILED
_FAILED_AS_0 = bytes([0, 1, 0]) + bytes(253)  # (bytes.translate: verdicts to match flags)
_MATCHES = (1).__eq__  # (a verdict -> whether the record matches, mapped in C)
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


# BatchPlan: what the record walk judges (atoms) and how their verdicts combine (a postfix program).
_ATOM, _CONST, _NOT, _AND, _OR = range(5)
_TRUE_CODES = bytes([0, 1, 0]) + bytes(253)  # (bytes.translate tables: code -> a bit at the byte's bottom)
_FALSE_CODES = bytes([1, 0, 0]) + bytes(253)
_TIMESTAMP_OPS = {"<": 0, "<=": 1, ">": 2, ">=": 3, "==": 4, "!=": 5}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_INT64 = range(-(1 << 63), 1 << 63)
# The atoms' header names at most, as _recordwalk.c's (FIELDS_MAX_NAMES, ATOMS_MAX).
_MAX_NAMES, _MAX_ATOMS, _MAX_STEPS = 16, 64, 256


class BatchPlan:
    """An expression of the subset (``plan_of``) as ``atoms``, the comparisons the record walk
    judges (the tuples protocol/_recordwalk.c ``filter_atoms`` takes), and a postfix program
    combining their verdicts (``steps``: the same as the C walk takes it, 2 bytes a step).
    ``header_names``: the header names the atoms read (str)."""

    __slots__ = ("atoms", "program", "steps", "header_names")

    def __init__(self, atoms: tuple[tuple, ...], program: tuple[tuple, ...]) -> None:
        self.atoms = atoms
        self.program = program
        self.steps = bytes(b for step in program for b in (step[0], int(step[1]) if len(step) > 1 else 0))
        self.header_names = frozenset(atom[1].decode() for atom in atoms if atom[0] >= 3)

    def combine(self, codes: Sequence[bytes], count: int) -> tuple[bytes, int]:
        """(a byte a record, 1 where the expression is true; how many records it fails on) from
        the atoms' codes. Each atom's verdicts are two integers, a bit a record (the bottom bit of
        its byte) where it is true and where it is false (neither: an error), combined as CEL
        does: a && b is true where both are, false where either is; a || b the other way round;
        !a swaps them. No Python step a record."""
        ones = None
        stack: list[tuple[int, int]] = []
        pairs: dict[int, tuple[int, int]] = {}
        for step in self.program:
            op = step[0]
            if op == _ATOM:
                pair = pairs.get(step[1])
                if pair is None:
                    column = codes[step[1]]
                    pair = pairs[step[1]] = (int.from_bytes(column.translate(_TRUE_CODES), "big"),
                                             int.from_bytes(column.translate(_FALSE_CODES), "big"))
                stack.append(pair)
            elif op == _CONST:
                if ones is None:
                    ones = int.from_bytes(b"\x01" * count, "big")
                stack.append((ones, 0) if step[1] else (0, ones))
            elif op == _NOT:
                true, false = stack.pop()
                stack.append((false, true))
            else:
                true_b, false_b = stack.pop()
                true_a, false_a = stack.pop()
                if op == _AND:
                    stack.append((true_a & true_b, false_a | false_b))
                else:
                    stack.append((true_a | true_b, false_a & false_b))
        (true, false), = stack
        return true.to_bytes(count, "big"), count - (true | false).bit_count()

    def codes_of(self, records: Sequence[tuple[int, int, bytes | None, dict]]) -> list[bytes]:
        """The atoms' codes of (offset, timestamp, key, headers) records, in Python (the walk
        without the C extension; the C walk's reference in tests)."""
        columns = []
        for atom in self.atoms:
            kind = atom[0]
            if kind == 0:
                compare = _COMPARE[atom[1]]
                number = atom[2]
                column = [compare(timestamp, number) for _, timestamp, _, _ in records]
            elif kind == 1:
                column = [key is None for _, _, key, _ in records]
            elif kind == 2:
                column = [key == atom[1] for _, _, key, _ in records]
            else:
                name = atom[1].decode()
                if kind == 3:
                    column = [name in headers for _, _, _, headers in records]
                else:
                    column = []
                    for _, _, _, headers in records:
                        if name not in headers:
                            column.append(2)
                        elif kind == 4:
                            column.append(headers[name] == atom[2])
                        elif kind == 5:
                            column.append(headers[name] is None)
                        else:
                            column.append(0)
            columns.append(bytes(map(int, column)))
        return columns


_timestamp_of = itemgetter(1)
_COMPARE = (int.__lt__, int.__le__, int.__gt__, int.__ge__, int.__eq__, int.__ne__)
_TOKEN = re.compile(r"""\s*(?:(?P<bytes>[bB](?:"[^"\\\n]*"|'[^'\\\n]*'))"""
                    r"""|(?P<string>"[^"\\\n]*"|'[^'\\\n]*')"""
                    r"""|(?P<int>0|[1-9][0-9]*)(?![\w.])"""
                    r"""|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"""
                    r"""|(?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|\[|\]|\.|-))""")
_RESERVED = {"in", "null", "true", "false", "as", "break", "const", "continue", "else", "for", "function", "if",
             "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}


class _NotInSubset(Exception):
    pass


def plan_of(expression: str) -> BatchPlan | None:
    """The expression (already compiled by CEL: valid) as a BatchPlan, or None where it is not in
    the subset the module docstring lists: then CEL judges it."""
    tokens: list[tuple[str, str]] = []
    pos, text = 0, expression.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return None
        pos = match.end()
        tokens.append(next((kind, value) for kind, value in match.groupdict().items() if value is not None))
    try:
        return _Parser(tokens).plan()
    except (_NotInSubset, RecursionError, IndexError):
        return None


class _Parser:
    """Recursive descent over the subset's tokens, into BatchPlan's atoms and postfix program."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0
        self.atoms: list[tuple] = []
        self.program: list[tuple] = []

    def plan(self) -> BatchPlan:
        self.disjunction()
        if self.at != len(self.tokens) or len(self.atoms) > _MAX_ATOMS or len(self.program) > _MAX_STEPS:
            raise _NotInSubset
        plan = BatchPlan(tuple(self.atoms), tuple(self.program))
        if len(plan.header_names) > _MAX_NAMES:
            raise _NotInSubset
        return plan

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def expect(self, value: str) -> None:
        if self.take() != ("op", value):
            raise _NotInSubset

    def disjunction(self) -> None:
        self.conjunction()
        while self.peek() == ("op", "||"):
            self.take()
            self.conjunction()
            self.program.append((_OR,))

    def conjunction(self) -> None:
        self.unary()
        while self.peek() == ("op", "&&"):
            self.take()
            self.unary()
            self.program.append((_AND,))

    def unary(self) -> None:
        token = self.peek()
        if token == ("op", "!"):
            self.take()
            # (``!`` binds tighter than a comparison: only before these is it the whole operand's)
            if self.peek() not in (("op", "!"), ("op", "("), ("name", "true"), ("name", "false")):
                raise _NotInSubset
            self.unary()
            self.program.append((_NOT,))
        elif token == ("op", "("):
            self.take()
            self.disjunction()
            self.expect(")")
        elif token in (("name", "true"), ("name", "false")):
            self.take()
            self.program.append((_CONST, token[1] == "true"))
        else:
            self.comparison()
        if self.peek() is not None and self.peek()[0] == "op" and self.peek()[1] in _TIMESTAMP_OPS:
            raise _NotInSubset  # ((a) == b, true == x: comparisons of booleans are CEL's)

    def operand(self) -> tuple:
        kind, value = self.take()
        if kind == "name":
            if value in ("timestamp", "key", "null"):
                return (value,)
            if value == "headers":
                if self.peek() == ("op", "["):
                    self.take()
                    name_kind, name = self.take()
                    if name_kind != "string":
                        raise _NotInSubset
                    self.expect("]")
                    return ("header", name[1:-1])
                if self.peek() == ("op", "."):
                    self.take()
                    name_kind, name = self.take()
                    if name_kind != "name" or name in _RESERVED or self.peek() == ("op", "("):
                        raise _NotInSubset
                    return ("header", name)
            raise _NotInSubset
        if kind == "int":
            return ("int", int(value))
        if kind == "op" and value == "-":
            kind, value = self.take()
            if kind != "int":
                raise _NotInSubset
            return ("int", -int(value))
        if kind == "bytes":
            return ("bytes", value[2:-1].encode())
        if kind == "string":
            return ("string", value[1:-1])
        raise _NotInSubset

    def comparison(self) -> None:
        left = self.operand()
        kind, op = self.take()
        if kind == "name" and op == "in" and left[0] == "string":
            if self.take() != ("name", "headers") or self.peek() in (("op", "["), ("op", ".")):
                raise _NotInSubset
            self.atom((3, _header_name(left[1])))
            return
        if kind != "op" or op not in _TIMESTAMP_OPS:
            raise _NotInSubset
        right = self.operand()
        if right[0] in ("timestamp", "key", "header") and left[0] not in ("timestamp", "key", "header"):
            left, right, op = right, left, _FLIPPED[op]
        subject, other = left[0], right[0]
        if subject == "timestamp" and other == "int":
            if right[1] not in _INT64:
                raise _NotInSubset
            self.atom((0, _TIMESTAMP_OPS[op], right[1]))
            return
        if op not in ("==", "!="):
            raise _NotInSubset
        if subject == "key" and other == "null":
            self.atom((1,))
        elif subject == "key" and other == "bytes":
            self.atom((2, right[1]))
        elif subject == "key" and other == "string":
            self.program.append((_CONST, False))  # (CEL: a key, bytes or null, never equals a string)
        elif subject == "header" and other == "bytes":
            self.atom((4, _header_name(left[1]), right[1]))
        elif subject == "header" and other == "null":
            self.atom((5, _header_name(left[1])))
        elif subject == "header" and other == "string":
            self.atom((6, _header_name(left[1])))
        else:
            raise _NotInSubset
        if op == "!=":
            self.program.append((_NOT,))

    def atom(self, atom: tuple) -> None:
        if atom not in self.atoms:
            self.atoms.append(atom)
        self.program.append((_ATOM, self.atoms.index(atom)))


def _header_name(name: str) -> bytes:
    """A header name as the walk compares it (UTF-8 bytes); not one with U+FFFD, which the map's
    names (decoded with replacement) may hold for other bytes."""
    if "\ufffd" in name:
        raise _NotInSubset
    return name.encode()


def compile_filter(expression: str) -> RecordFilter | None:
    """The filter for a group config value; None for the empty expression (no filter)."""
    if not expression.strip():
        return None
    return RecordFilter(expression)
