"""Fuzz of the C record walk's one-header functions (protocol/_recordwalk.c ``header_runs`` and
``header_values``) with malformed record batches: truncated, bytes overwritten, varints too long,
negative lengths, header counts past the end, huge and negative counts, random bytes.

header_runs judges the batch's values as header_values and the filter's verdicts do (the path it
replaces where a value is new, and the one an extension built before it takes): record by record,
it must answer what those answer, raise the ValueError header_values raises (same message), or stop
early where it may (a value not judged yet: None; a header of the queue features: (None, None,
True)) at or before the record header_values fails on. scan_batch through the C walk must equal
scan_batch through the pure-Python walk (the fallback without the extension) on well-formed batches,
compressed ones too, and raise nothing but ValueError on malformed ones.

A body that ends at a page followed by an inaccessible page makes a read past ``stop`` a crash
(SIGSEGV) rather than a silent wrong answer. For out-of-bounds reads inside the buffer, run this
file under an extension built with -fsanitize=address,undefined (see the review10 report of
session 10 for the commands). TIDELOG_FUZZ_EXAMPLES=N runs N examples a test (default 100).
"""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.protocol.records import BATCH_HEADER_SIZE, build_batch, parse_batch_header
from tidelog.queues import record_attrs
from tidelog.queues.filters import compile_filter
from tidelog.queues.record_attrs import QueueSettings, scan_batch

try:
    from tidelog.protocol import _recordwalk
except ImportError:  # built without a C compiler: nothing to fuzz
    _recordwalk = None

pytestmark = pytest.mark.skipif(_recordwalk is None or not hasattr(_recordwalk, "header_runs"),
                                reason="the C extension is not built (or built before header_runs)")

EXAMPLES = int(os.environ.get("TIDELOG_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

OTHERS = (b"priority", b"tidelog-delay-ms", b"tidelog-deliver-at", b"tidelog-ttl-ms")
NAMES = ["type", "trace", "priority", "tidelog-ttl-ms", "", "typ", "typee"]
VALUES = [b"", b"x", b"y", b"5", b"\x80\xff", *(b"v%d" % n for n in range(20))]

_records = st.lists(st.tuples(st.none() | st.binary(max_size=20), st.none() | st.binary(max_size=40),
                              st.lists(st.tuples(st.sampled_from(NAMES), st.none() | st.sampled_from(VALUES)),
                                       max_size=4)),
                    min_size=1, max_size=30)


def _mutate(body: bytes, data) -> bytes:
    """One of the ways a stored body can be wrong, at a place the test draws."""
    if not body:
        return data.draw(st.binary(max_size=50))
    kind = data.draw(st.sampled_from(["truncate", "byte", "long_varint", "negative", "huge", "insert", "random",
                                      "none"]))
    at = data.draw(st.integers(0, len(body) - 1))
    if kind == "truncate":
        return body[:at]
    if kind == "byte":
        return body[:at] + bytes([data.draw(st.integers(0, 255))]) + body[at + 1:]
    if kind == "long_varint":  # continuation bits past any varint's limit
        return body[:at] + b"\xff" * data.draw(st.integers(1, 12)) + body[at:]
    if kind == "negative":  # zigzag -2, -3, ... (only -1 is a length)
        return body[:at] + bytes([data.draw(st.sampled_from([0x03, 0x05, 0x7F]))]) + body[at + 1:]
    if kind == "huge":  # a 5-byte varint of 2^31 - 1 or -2^31 (zigzag)
        return body[:at] + data.draw(st.sampled_from([b"\xfe\xff\xff\xff\x0f", b"\xff\xff\xff\xff\x0f"])) + body[at + 1:]
    if kind == "insert":
        return body[:at] + data.draw(st.binary(min_size=1, max_size=8)) + body[at:]
    if kind == "random":
        return data.draw(st.binary(max_size=len(body) + 10))
    return body


def _call(function, *args):
    try:
        return "ok", function(*args)
    except ValueError as e:
        return "error", str(e)


def _expected_runs(body, start, stop, count, name, others, verdicts, base):
    """What header_runs may answer, from header_values record by record (the path it replaces):
    a list of acceptable outcomes ("ok", result) / ("error", message)."""
    values: list = []
    for k in range(1, max(count, 0) + 1):
        outcome, found = _call(_recordwalk.header_values, body, start, stop, k, name, others)
        if outcome == "error":
            # (a header of ours before the malformed field of the same record: the C walk stops there)
            return [("error", found), ("ok", (None, None, True))]
        got, ours = found
        if ours:
            return [("ok", (None, None, True))]
        if len(got) < k:  # the batch ends before its count
            return [("ok", None)]
        value = got[-1]
        if value not in verdicts:
            return [("ok", None)]
        values.append(value)
    firsts, lasts, previous = [], [], 0
    for index, value in enumerate(values):
        verdict = 1 if verdicts[value] else 0
        if verdict != previous:
            (firsts if verdict else lasts).append(base + index if verdict else base + index - 1)
            previous = verdict
    if previous:
        lasts.append(base + len(values) - 1)
    return [("ok", (firsts, lasts, False))]


def _guarded(body: bytes):
    """``body`` as a memoryview ending where an inaccessible page begins (a read past it crashes)."""
    page = mmap.PAGESIZE
    size = (len(body) // page + 2) * page
    area = mmap.mmap(-1, size)
    address = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(address + size - page, page, 0) == 0  # PROT_NONE
    begin = size - page - len(body)
    area[begin:size - page] = body
    _KEEP.append(area)  # (exported by ctypes: never closed, so the guard page stays)
    return memoryview(area)[begin:size - page]


_KEEP: list = []


@given(_records, st.data(), st.sampled_from([b"type", b"", b"priority"]), st.integers(0, (1 << 62)))
@FUZZ
def test_header_runs_answers_what_header_values_and_the_verdicts_answer_on_malformed_batches(records, data, name,
                                                                                             base):
    batch = build_batch([(k, v, h, 1_700_000_000_000) for k, v, h in records], base_offset=0)
    body = _mutate(batch[BATCH_HEADER_SIZE:], data)
    count = data.draw(st.sampled_from([len(records), len(records) + 1, max(0, len(records) - 1), 0, -1, 1 << 40]))
    others = data.draw(st.sampled_from([OTHERS, (), OTHERS[1:]]))
    judged = data.draw(st.lists(st.none() | st.just(False) | st.sampled_from(VALUES), max_size=30))
    verdicts = {value: data.draw(st.integers(0, 1)) for value in judged}
    start = data.draw(st.integers(0, min(3, len(body))))
    guarded = _guarded(body)
    expected = _expected_runs(body, start, len(body), min(count, len(body) + 1), name, others, verdicts, base)
    got = _call(_recordwalk.header_runs, guarded, start, len(body), count, name, others, verdicts, base)
    assert got in expected
    # header_values reads nothing past the end either, and says the same of the guarded copy
    assert _call(_recordwalk.header_values, guarded, start, len(body), count, name, others) == \
        _call(_recordwalk.header_values, body, start, len(body), count, name, others)


@given(st.binary(max_size=64), st.integers(-2, 70), st.integers(-2, 70), st.integers(-5, 100))
@FUZZ
def test_bad_bounds_and_random_bytes_are_a_value_error_or_an_answer(body, start, stop, count):
    for function, args in ((_recordwalk.header_runs, (b"type", OTHERS, {False: 1, b"x": 0}, 5)),
                           (_recordwalk.header_values, (b"type", OTHERS))):
        outcome, found = _call(function, _guarded(body), start, stop, count, *args)
        if not (0 <= start <= stop <= len(body)):
            assert outcome == "error" and found.startswith("bad bounds")


def test_a_verdict_dict_that_fails_a_lookup_is_an_exception_not_a_crash():
    class Unequal(bytes):
        def __hash__(self):
            return hash(b"x")

        def __eq__(self, other):
            raise RuntimeError("compared")

    batch = build_batch([(None, b"v", [("type", b"x")])], base_offset=0)
    with pytest.raises(RuntimeError, match="compared"):
        _recordwalk.header_runs(batch, BATCH_HEADER_SIZE, len(batch), 1, b"type", (), {Unequal(b"x"): 1}, 0)


def test_wrong_argument_types_are_type_errors():
    batch = build_batch([(None, b"v", [("type", b"x")])], base_offset=0)
    for args in ((batch, 61, len(batch), 1, b"type", [b"a"], {}, 0),  # others not a tuple
                 (batch, 61, len(batch), 1, b"type", ("a",), {}, 0),  # a name not bytes
                 (batch, 61, len(batch), 1, b"type", (b"a",) * 17, {}, 0),  # more than 16
                 (batch, 61, len(batch), 1, b"type", (), [], 0)):  # verdicts not a dict
        with pytest.raises(TypeError):
            _recordwalk.header_runs(*args)
    with pytest.raises(OverflowError):
        _recordwalk.header_runs(batch, 61, len(batch), 1, b"type", (), {}, 1 << 63)


_EXPRESSIONS = ('"type" in headers && headers.type in [b"x", b"5", b""]',
                '!("type" in headers) || headers["type"] == null || headers["type"] == b"y"',
                'headers["type"] == b"x"')


def _compressions() -> list[int]:
    from tidelog.protocol.compression import compress

    usable = [0]
    for codec in (1, 2, 3, 4):
        try:
            compress(codec, b"probe")
        except Exception:  # (a codec whose library is not installed)
            continue
        usable.append(codec)
    return usable


@given(_records, st.sampled_from(_EXPRESSIONS), st.sampled_from(_compressions()), st.booleans(), st.booleans(),
       st.integers(0, 1 << 40), st.data())
@FUZZ
def test_scan_batch_in_c_is_scan_batch_in_python(records, expression, compression, priority_enabled, judged_first,
                                                 base, data):
    """Well-formed batches (compressed too): the runs through the C walks (header_runs where every
    value was judged before, header_values, fields) are those of the pure-Python walk."""
    batch = build_batch([(k, v, h, 1_700_000_000_000) for k, v, h in records], base_offset=base,
                        compression=compression)
    info = parse_batch_header(batch)
    f = compile_filter(expression)
    if judged_first:  # every value judged: header_runs answers
        f.verdicts([next((v for n, v in reversed(h) if n == "type"), False) for _, _, h in records])
    settings_ = QueueSettings(priority_enabled=priority_enabled, matches=f)
    in_c = scan_batch(batch, 0, info, settings_, c_counts := {})
    saved = record_attrs._header_runs_in_c, record_attrs._header_values_in_c, record_attrs._fields_in_c
    record_attrs._header_runs_in_c = record_attrs._header_values_in_c = record_attrs._fields_in_c = None
    try:
        in_python = scan_batch(batch, 0, info, QueueSettings(priority_enabled=priority_enabled,
                                                             matches=compile_filter(expression)), py_counts := {})
    finally:
        record_attrs._header_runs_in_c, record_attrs._header_values_in_c, record_attrs._fields_in_c = saved
    assert in_c == in_python and c_counts == py_counts


@given(_records, st.sampled_from(_EXPRESSIONS), st.data())
@FUZZ
def test_scan_batch_of_a_malformed_body_raises_a_value_error_or_answers(records, expression, data):
    """A stored batch whose records are damaged (the header, CRC aside, intact): the C walks say
    ValueError or give runs; never another exception, never a crash. (Not checked: that the runs
    stay within the batch's offsets. Where a record has a header of the queue features the full
    walk takes each record's offset delta as it is, as the Python walk does: a damaged one puts a
    run outside the batch. Produce validation checks offset deltas, so only a damaged stored batch
    with a good CRC could do that.)"""
    batch = build_batch([(k, v, h, 1_700_000_000_000) for k, v, h in records], base_offset=1000)
    body = _mutate(batch[BATCH_HEADER_SIZE:], data)
    damaged = batch[:BATCH_HEADER_SIZE] + body
    info = parse_batch_header(batch)
    info = info._replace(batch_length=info.batch_length + len(damaged) - len(batch))
    f = compile_filter(expression)
    f.verdicts([False, None, *VALUES])  # every value judged: header_runs answers
    try:
        runs = scan_batch(damaged, 0, info, QueueSettings(matches=f), {})
    except ValueError:
        return
    assert all(type(run) is record_attrs.AttrRun for run in runs)
