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
import random

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


def _zigzag_varint(n: int, pad: int = 0) -> bytes:
    """``n`` as Kafka's zigzag varint (64 bits), ``pad`` more bytes of continuation than needed."""
    raw = ((n << 1) ^ (n >> 63)) & ((1 << 64) - 1)
    out = bytearray()
    while True:
        out.append(raw & 0x7F)
        raw >>= 7
        if not raw:
            break
        out[-1] |= 0x80
    if pad:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


_LIES = st.sampled_from([-3, -2, -1, 1, 2, 7, 1 << 31, -(1 << 31), 1 << 40])


@st.composite
def _lying_record(draw) -> bytes:
    """One record whose lengths may lie (one of them, off by a little or a lot) and whose varints
    may be longer than their field allows (one of them): what a damaged batch holds, field by field."""
    lie_at, pad_at = draw(st.integers(-1, 120)), draw(st.integers(-1, 120))  # (mostly none: later records read)
    fields = [0]

    def varint(value: int, pad: int) -> bytes:
        fields[0] += 1
        return _zigzag_varint(value, pad if fields[0] - 1 == pad_at else 0)

    def length(true_size: int, null: bool = False) -> bytes:
        lie = draw(_LIES) if fields[0] == lie_at else 0
        return varint((-1 if null else true_size) + lie, draw(st.sampled_from([1, 5, 6])))

    key, value = draw(st.none() | st.binary(max_size=8)), draw(st.none() | st.binary(max_size=8))
    headers = draw(st.lists(st.tuples(st.sampled_from(["type"] * 6 + NAMES),  # (values of one size, often)
                                      st.sampled_from([None, b"x", b"y", b"5", b"x", b"y", b"", *VALUES[:8]])),
                            max_size=4))
    body = bytearray(b"\x00")  # attributes
    body += varint(draw(st.integers(-(1 << 40), 1 << 40)), 9)  # timestamp delta
    body += varint(draw(st.integers(-2, 100)), 4)  # offset delta
    for field in (key, value):
        body += length(len(field or b""), field is None) + (field or b"")
    body += length(len(headers))
    for name, header_value in headers:
        encoded = name.encode()
        body += length(len(encoded)) + encoded
        body += length(len(header_value or b""), header_value is None) + (header_value or b"")
    fields[0] = 0  # (the record's length: lies where the first field would)
    return length(len(body)) + bytes(body)


def _varint(buf, pos: int, end: int, max_bytes: int):
    """(value, next position), or None: past ``end`` or longer than ``max_bytes``."""
    raw = 0
    for i in range(max_bytes):
        if pos >= end:
            return None
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            raw &= (1 << 64) - 1
            return (raw >> 1) ^ -(raw & 1), pos
    return None


def _reference_values(buf, start: int, stop: int, count: int, name: bytes, others: tuple):
    """header_values as its comment in _recordwalk.c says it, in Python (the checks in its order,
    the messages it gives): what the C walk must answer, independent of its helpers."""
    buf = bytes(buf)
    if start < 0 or stop > len(buf) or start > stop:
        raise ValueError(f"bad bounds {start}..{stop} of {len(buf)} bytes")
    pos, values, other_found, index = start, [], False, 0

    def malformed():
        return ValueError(f"record {index} is malformed")

    while index < count and pos < stop:
        read = _varint(buf, pos, stop, 5)
        if read is None:
            raise malformed()
        length, pos = read
        if length < 1 or length > stop - pos:
            raise ValueError(f"record {index} has length {length}")
        record_end = pos + length
        pos += 1  # attributes
        for max_bytes in (10, 5):  # timestamp delta, offset delta
            read = _varint(buf, pos, stop, max_bytes)
            if read is None:
                raise malformed()
            pos = read[1]
        for _ in range(2):  # key, value
            read = _varint(buf, pos, stop, 5)
            if read is None or read[0] < -1 or read[0] > record_end - read[1]:
                raise malformed()
            pos = read[1] + max(read[0], 0)
        read = _varint(buf, pos, stop, 5)
        if read is None or read[0] < 0:
            raise malformed()
        header_count, pos = read
        value = False
        for _ in range(header_count):
            read = _varint(buf, pos, stop, 5)
            if read is None or read[0] < 0 or read[0] > record_end - read[1]:
                raise malformed()
            header_name, pos = buf[read[1]:read[1] + read[0]], read[1] + read[0]
            read = _varint(buf, pos, stop, 5)
            if read is None or read[0] < -1 or read[0] > record_end - read[1]:
                raise malformed()
            size, pos = read
            if header_name == name:
                value = None if size < 0 else buf[pos:pos + size]
            elif header_name in others:
                other_found = True
            pos += max(size, 0)
        values.append(value)
        pos = record_end
        index += 1
    return values, other_found


def _call(function, *args):
    try:
        return "ok", function(*args)
    except ValueError as e:
        return "error", str(e)


def _expected_runs(body, start, stop, count, name, others, verdicts, base):
    """What header_runs may answer, from header_values (its reference) record by record:
    a list of acceptable outcomes ("ok", result) / ("error", message)."""
    values: list = []
    for k in range(1, max(count, 0) + 1):
        outcome, found = _call(_reference_values, body, start, stop, k, name, others)
        if outcome == "error":
            # (a header of ours before the malformed field of the same record: the C walk stops there)
            return [("error", found), ("ok", (None, None, 0, True))]
        got, ours = found
        if ours:
            return [("ok", (None, None, 0, True))]
        if len(got) < k:  # the batch ends before its count
            return [("ok", None)]
        value = got[-1]
        if value not in verdicts:
            return [("ok", None)]
        values.append(value)
    firsts, lasts, previous = [], [], 0
    for index, value in enumerate(values):
        verdict = 1 if verdicts[value] == 1 else 0  # (2: failed, not matching, counted)
        if verdict != previous:
            (firsts if verdict else lasts).append(base + index if verdict else base + index - 1)
            previous = verdict
    if previous:
        lasts.append(base + len(values) - 1)
    return [("ok", (firsts, lasts, sum(verdicts[value] == 2 for value in values), False))]


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
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    verdicts = {value: rng.randint(0, 2) for value in judged}  # (hypothesis draws 0 mostly; 2: failed)
    start = data.draw(st.integers(0, min(3, len(body))))
    guarded = _guarded(body)
    expected = _expected_runs(body, start, len(body), min(count, len(body) + 1), name, others, verdicts, base)
    got = _call(_recordwalk.header_runs, guarded, start, len(body), count, name, others, verdicts, base)
    assert got in expected
    # header_values reads nothing past the end either, and answers as its reference
    assert _call(_recordwalk.header_values, guarded, start, len(body), count, name, others) == \
        _call(_reference_values, body, start, len(body), min(count, len(body) + 1), name, others)


@given(st.lists(_lying_record(), min_size=1, max_size=12), st.data(), st.sampled_from([b"type", b"type", b"", b"typee"]))
@FUZZ
def test_header_runs_and_header_values_on_records_whose_lengths_lie(records, data, name):
    """Records built field by field, any length off by a little or a lot, any varint too long: both
    walks answer as the reference, and read nothing past the body (it ends at an inaccessible page)."""
    body = b"".join(records)
    count = data.draw(st.sampled_from([len(records), len(records) + 1, 1 << 40]))
    others = data.draw(st.sampled_from([OTHERS, ()]))
    judged = [None, False, *VALUES] if data.draw(st.booleans()) else \
        data.draw(st.lists(st.none() | st.just(False) | st.sampled_from(VALUES), max_size=30))
    rng = random.Random(data.draw(st.integers(0, 1 << 32)))
    verdicts = {value: rng.randint(0, 2) for value in judged}  # (hypothesis draws 0 mostly; 2: failed)
    guarded = _guarded(body)
    bounded = min(count, len(body) + 1)
    assert _call(_recordwalk.header_values, guarded, 0, len(body), count, name, others) == \
        _call(_reference_values, body, 0, len(body), bounded, name, others)
    assert _call(_recordwalk.header_runs, guarded, 0, len(body), count, name, others, verdicts, 7) in \
        _expected_runs(body, 0, len(body), bounded, name, others, verdicts, 7)


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


def _record(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return _zigzag_varint(len(body)) + body


_HEAD = b"\x00\x00\x00"  # attributes, timestamp delta 0, offset delta 0
_NO_KEY = _zigzag_varint(-1)


@pytest.mark.parametrize("body, message", [
    (_record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(1), _zigzag_varint(4), b"type", _zigzag_varint(-2)),
     "record 0 is malformed"),  # a header value of length -2
    (_record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(1), _zigzag_varint(-1), _zigzag_varint(-1)),
     "record 0 is malformed"),  # a header name of length -1
    (_record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(-1)), "record 0 is malformed"),  # -1 headers
    (_record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(1), _zigzag_varint(5), b"type"), "record 0 is malformed"),
    (_record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(1), _zigzag_varint(4), b"ty"),
     "record 0 is malformed"),  # a name as long as the one asked for, past the end (the guard page)
    (_record(_HEAD, _zigzag_varint(-2), _NO_KEY, b"\x00"), "record 0 is malformed"),  # a key of length -2
    (_record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(1), _zigzag_varint(4), b"type", _zigzag_varint(0, pad=5)),
     "record 0 is malformed"),  # a 6-byte varint
    (_zigzag_varint(40) + _HEAD, "record 0 has length 40"),
    (_zigzag_varint(0), "record 0 has length 0"),
])
def test_hand_made_malformed_records_are_value_errors(body, message):
    """One check each, where the fuzz may not reach it every run: every walk says ValueError with the
    message its reference gives, header_runs and header_values alike."""
    for records in ((body,), (_record(_HEAD, _NO_KEY, _NO_KEY, b"\x00"), body)):  # first, and after a good one
        batch = b"".join(records)
        expected = message.replace("record 0", f"record {len(records) - 1}")
        with pytest.raises(ValueError, match=f"^{expected}$"):
            _reference_values(batch, 0, len(batch), len(records), b"type", ())
        with pytest.raises(ValueError, match=f"^{expected}$"):
            _recordwalk.header_values(_guarded(batch), 0, len(batch), len(records), b"type", ())
        with pytest.raises(ValueError, match=f"^{expected}$"):
            _recordwalk.header_runs(_guarded(batch), 0, len(batch), len(records), b"type", (),
                                    {False: 1, None: 0, b"": 0}, 0)


def test_values_of_one_size_keep_their_own_verdicts():
    """The walk's kept values are compared by their bytes, not their size: x and y (one byte each),
    "" and a null value, v1 and v2, each its own verdict, over more distinct values than it keeps."""
    values = [b"x", b"y", b"", None, b"v1", b"v2", False, *(b"w%02d" % n for n in range(20)), b"y", b"x", b"v2"]
    verdicts = {value: n % 3 for n, value in enumerate(dict.fromkeys(values))}  # (2: failed, counted)
    batch = b"".join(_record(_HEAD, _NO_KEY, _NO_KEY, b"\x00") if value is False else
                     _record(_HEAD, _NO_KEY, _NO_KEY, _zigzag_varint(1), _zigzag_varint(4), b"type",
                             _zigzag_varint(-1 if value is None else len(value)), value or b"")
                     for value in values)
    assert _recordwalk.header_runs(batch, 0, len(batch), len(values), b"type", (), verdicts, 100) == \
        _expected_runs(batch, 0, len(batch), len(values), b"type", (), verdicts, 100)[0][1]


# --- has_header (session 13): header_values(..., b"", names)[1] without the values' list ----------

_has_header = getattr(_recordwalk, "has_header", None)
needs_has_header = pytest.mark.skipif(_has_header is None, reason="the C extension is built before has_header")


def _values_found(buffer, start, stop, count, names):
    """has_header's reference: header_values' answer for a name no header of ours has."""
    outcome, answer = _call(_recordwalk.header_values, buffer, start, stop, count, b"", names)
    return (outcome, answer[1]) if outcome == "ok" else (outcome, answer)


@needs_has_header
@given(_records, st.data())
@FUZZ
def test_has_header_answers_and_fails_as_header_values_on_malformed_batches(records, data):
    batch = build_batch([(k, v, h, 1_700_000_000_000) for k, v, h in records], base_offset=0)
    body = _mutate(batch[BATCH_HEADER_SIZE:], data)
    count = data.draw(st.sampled_from([len(records), len(records) + 1, max(0, len(records) - 1), 0, -1, 1 << 40]))
    names = data.draw(st.sampled_from([OTHERS, (), OTHERS[1:], (b"type",), (b"",), (b"typ", b"type")]))
    start = data.draw(st.integers(0, min(3, len(body))))
    guarded = _guarded(body)
    assert _call(_has_header, guarded, start, len(body), count, names) == \
        _values_found(guarded, start, len(body), count, names)


@needs_has_header
@given(st.lists(_lying_record(), min_size=1, max_size=12), st.data())
@FUZZ
def test_has_header_on_records_whose_lengths_lie(records, data):
    body = b"".join(records)
    count = data.draw(st.sampled_from([len(records), len(records) + 1, 1 << 40]))
    names = data.draw(st.sampled_from([OTHERS, (), (b"type",), (b"typee", b"trace")]))
    guarded = _guarded(body)
    assert _call(_has_header, guarded, 0, len(body), count, names) == _values_found(guarded, 0, len(body), count, names)


@needs_has_header
@given(st.binary(max_size=64), st.integers(-2, 70), st.integers(-2, 70), st.integers(-5, 100))
@FUZZ
def test_has_header_of_bad_bounds_and_random_bytes(body, start, stop, count):
    guarded = _guarded(body)
    outcome, answer = _call(_has_header, guarded, start, stop, count, OTHERS)
    assert (outcome, answer) == _values_found(guarded, start, stop, count, OTHERS)
    if not (0 <= start <= stop <= len(body)):
        assert outcome == "error" and answer.startswith("bad bounds")


@needs_has_header
def test_has_header_finds_a_name_in_any_record_and_position():
    plain = (b"k", b"v" * 300, [("trace", b"1")])  # (a two-byte value length: the varint's long path)
    for at in range(3):
        for position in range(2):
            headers = [("trace", b"1"), ("tidelog-ttl-ms", b"5")] if position else [("tidelog-ttl-ms", b"5")]
            records = [plain] * 3
            records[at] = (b"k", b"v", headers)
            batch = build_batch(records, base_offset=0)
            assert _has_header(batch, BATCH_HEADER_SIZE, len(batch), 3, OTHERS) is True
            assert _has_header(batch, BATCH_HEADER_SIZE, len(batch), 3, (b"tidelog-delay-ms",)) is False
    with pytest.raises(TypeError):
        _has_header(b"", 0, 0, 0, (b"a",) * 17)
    with pytest.raises(TypeError):
        _has_header(b"", 0, 0, 0, ("a",))
