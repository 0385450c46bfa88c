"""The share-group filter's CEL subset judged a batch at a time (queues/filters.py ``plan_of``,
``BatchPlan``; protocol/_recordwalk.c ``filter_atoms``; queues/record_attrs.py): for expressions
drawn from the subset and random batches (null and present keys, repeated, null and missing
headers, timestamps around the literals, compressed and LogAppendTime batches, a queue-feature
header sending the batch to the whole walk), the verdicts and the number of records the filter
fails on are what CEL gives record by record, with the C walk and with the Python one. And the
recogniser takes only what it can judge exactly: everything else keeps CEL's path."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.protocol.compression import COMPRESSION_GZIP, COMPRESSION_NONE, decompress
from tidelog.protocol.records import (BATCH_HEADER_SIZE, build_batch, iter_records, parse_batch_header,
                                     set_log_append_time)
from tidelog.queues import record_attrs
from tidelog.queues.filters import compile_filter, plan_of
from tidelog.queues.record_attrs import TTL_MS_HEADER, FlagRuns, QueueSettings

try:
    from tidelog.protocol._recordwalk import filter_atoms
except ImportError:  # built without a compiler: the Python walk's tests still run
    filter_atoms = None

BASE = 1_000  # the batches' first timestamp: the literals sit around it
NAMES = ("type", "kind", "é")

_atoms = st.sampled_from([
    *(f"timestamp {op} {n}" for op in ("<", "<=", ">", ">=", "==", "!=") for n in (999, 1000, 1001, 1003, -1)),
    "1001 < timestamp", "1002 >= timestamp", "timestamp > - 5", "key == null", "key != null", "null == key",
    'key == b"k1"', 'key != b"k1"', 'b"" == key', 'key == "k1"', 'key != "k1"', '"type" in headers',
    "'kind' in headers", '"é" in headers', 'headers["type"] == b"order"', "headers.type != b'order'",
    'headers["kind"] == null', 'null != headers["kind"]', 'headers["type"] == "order"', 'headers["type"] != "order"',
    'b"" == headers["kind"]', 'headers["é"] == b"é"', "true", "false",
])


def _combined(children):
    pair = st.tuples(children, children)
    return (pair.map(lambda p: f"({p[0]} && {p[1]})") | pair.map(lambda p: f"({p[0]} || {p[1]})")
            | pair.map(lambda p: f"{p[0]} && {p[1]}") | pair.map(lambda p: f"{p[0]} || {p[1]}")
            | children.map(lambda c: f"!({c})") | children.map(lambda c: f"!!({c})"))


EXPRESSIONS = st.recursive(_atoms, _combined, max_leaves=6)

_header = st.tuples(st.sampled_from(NAMES + ("other",)),
                    st.sampled_from([None, None, b"order", b"", b"x", "é".encode()]))
_record = st.tuples(st.none() | st.sampled_from([b"k1", b"k2", b""]), st.lists(_header, max_size=4),
                    st.integers(0, 4))
_batch = st.tuples(st.lists(_record, min_size=1, max_size=30), st.sampled_from([COMPRESSION_NONE, COMPRESSION_GZIP]),
                   st.booleans(), st.integers(0, 20))  # (records, compression, LogAppendTime, a TTL header's 1 in n)


def _cel(f, key, headers: dict, timestamp: int) -> bool | None:
    """CEL's verdict on one record: True, False, or None for an error."""
    try:
        return f.program.execute({"key": key, "headers": headers, "timestamp": timestamp}) is True
    except Exception:  # noqa: BLE001 - an error: the record does not match, counted
        return None


def _make_batch(records, compression, log_append, ttl_every, base_offset):
    rows = []
    for i, (key, headers, delta) in enumerate(records):
        headers = list(headers)
        if ttl_every and i % ttl_every == ttl_every - 1:
            headers.append((TTL_MS_HEADER, b"60000"))  # a queue feature's header: the whole walk
        rows.append((key, b"v", headers, BASE + delta))
    data = bytearray(build_batch(rows, base_offset=base_offset, compression=compression))
    info = parse_batch_header(data, 0)
    if log_append:
        info = set_log_append_time(data, info, BASE + 2)
    return bytes(data), info


def _expected(f, data, info):
    """Each record's CEL verdict (True / False / None for an error), by its own decoding."""
    out = []
    for record in iter_records(data):
        headers = {}
        for name, value in record.headers:
            headers[name] = value
        timestamp = info.max_timestamp if info.timestamp_type == 1 else record.timestamp
        out.append(_cel(f, record.key, headers, timestamp))
    return out


def _verdicts_of(scanned, first, last) -> list[bool]:
    runs = scanned.runs() if type(scanned) is FlagRuns else scanned
    out = {}
    for run in runs:
        for offset in range(run.first, run.last + 1):
            out[offset] = run.matches
    return [out[offset] for offset in range(first, last + 1)]


@pytest.fixture(params=["c", "python"])
def walk(request, monkeypatch):
    """The record walk in C (where built) and in Python (the extension off)."""
    if request.param == "c":
        if filter_atoms is None:
            pytest.skip("the C extension is not built")
    else:
        monkeypatch.setattr(record_attrs, "_filter_atoms_in_c", None)
        monkeypatch.setattr(record_attrs, "_fields_in_c", None)
        monkeypatch.setattr(record_attrs, "_header_values_in_c", None)
        monkeypatch.setattr(record_attrs, "_header_runs_in_c", None)
    return request.param


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EXPRESSIONS, st.lists(_batch, min_size=1, max_size=3))
def test_a_planned_filter_decides_and_fails_as_cel_does_record_by_record(walk, expression, batches):
    f = compile_filter(expression)
    assert f.plan is not None, expression
    settings_ = QueueSettings(matches=f, filter_source=expression)
    # (a filter reading one header and nothing else takes the one-header path first: its errors are
    # counted per distinct value, not per record)
    one_header = (f.header_names is not None and len(f.header_names) == 1 and not f.reads_key
                  and not f.reads_timestamp)
    offset = 0
    for records, compression, log_append, ttl_every in batches:
        data, info = _make_batch(records, compression, log_append, ttl_every, offset)
        expected = _expected(f, data, info)
        f.errors = 0
        scanned = record_attrs._scan(data, 0, info, settings_, {})
        assert _verdicts_of(scanned, info.base_offset, info.last_offset) == [v is True for v in expected], expression
        if not one_header:
            assert f.errors == sum(v is None for v in expected), expression
        offset = info.last_offset + 1


@settings(max_examples=400, deadline=None, database=None)
@given(EXPRESSIONS, _batch)
def test_the_c_walks_atom_codes_are_the_python_walks(expression, batch):
    if filter_atoms is None:
        pytest.skip("the C extension is not built")
    records, compression, log_append, _ = batch
    data, info = _make_batch(records, compression, log_append, 0, 0)
    plan = plan_of(expression)
    if compression:
        body = decompress(compression, memoryview(data)[BATCH_HEADER_SIZE:])
        start, stop = 0, len(body)
    else:
        body, start, stop = data, BATCH_HEADER_SIZE, len(data)
    found = filter_atoms(body, start, stop, info.record_count, info.base_timestamp,
                         info.max_timestamp if log_append else None, plan.atoms, (b"tidelog-ttl-ms",))
    codes, ours = found
    assert not ours
    walked = list(record_attrs._walk_python(body, start, stop, info, log_append, True))
    assert list(codes) == plan.codes_of(walked)


def test_filter_atoms_bounds_and_lies():
    if filter_atoms is None:
        pytest.skip("the C extension is not built")
    data = build_batch([(None, b"v", [("type", b"order")], BASE)] * 3)
    atoms = ((4, b"type", b"order"),)
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, atoms, ()) == ((b"\x01" * 3,), False)
    # more records claimed than the body holds: undecided, no column sized by the claim
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 4, BASE, None, atoms, ()) is None
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 1 << 30, BASE, None, atoms, ()) is None
    # a timestamp past int64: undecided (CEL's conversion of such an int is not ours to guess)
    later = build_batch([(None, b"v", [], BASE + delta) for delta in range(3)])
    assert filter_atoms(later, BATCH_HEADER_SIZE, len(later), 3, (1 << 63) - 2, None, ((0, 2, 0),), ()) is None
    assert filter_atoms(later, BATCH_HEADER_SIZE, len(later), 3, (1 << 63) - 3, None, ((0, 2, 0),), ()) == (
        (b"\x01" * 3,), False)
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, 0, (1 << 63) - 1, ((0, 2, 0),), ()) == ((b"\x01" * 3,),
                                                                                                         False)
    # a queue feature's header: the caller walks the whole batch
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, ((1,),), (b"type",)) == (None, True)
    with pytest.raises(ValueError):
        filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, ((9,),), ())
    with pytest.raises(ValueError):
        filter_atoms(data, BATCH_HEADER_SIZE, len(data) + 1, 3, BASE, None, atoms, ())
    with pytest.raises(ValueError):
        filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, ((0, 7, 1),), ())
    for steps in (b"", b"\x00", b"\x00\x01", b"\x00\x00\x00\x00", b"\x03\x00", b"\x00\x00\x02\x01", b"\x01\x02",
                  b"\x05\x00", b"\x00\x00" * 257):  # unknown steps, or not one verdict left
        with pytest.raises(ValueError):
            filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, atoms, (), steps, 0)
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, atoms, (), b"\x00\x00\x02\x00", 7) == (
        [], [], 0, False)
    assert filter_atoms(data, BATCH_HEADER_SIZE, len(data), 3, BASE, None, atoms, (), b"\x00\x00", 7) == (
        [7], [9], 0, False)
    with pytest.raises(ValueError):  # a malformed record
        filter_atoms(data[:BATCH_HEADER_SIZE] + b"\x7f" * 40, BATCH_HEADER_SIZE, BATCH_HEADER_SIZE + 40, 3, BASE,
                     None, atoms, ())


@pytest.mark.parametrize("expression", [
    'timestamp > 0 && headers["type"] == b"order"',
    'key == null && headers["type"] == b"order"',
    '!(key != b"x") || "a" in headers',
    "5 < timestamp",
    "timestamp > -3",
    "headers.x != null",
    'key == "k"',
    "!true || !!(false)",
    "(((timestamp == 1)))",
    "timestamp > - 9223372036854775808",
])
def test_the_subset_is_recognised(expression):
    assert plan_of(expression) is not None


@pytest.mark.parametrize("expression", [
    'headers["x"] == b"a\\x61"',  # an escape: not guessed
    'headers["x\\"y"] == b"a"',
    'headers["\ufffd"] == b"a"',  # may name other bytes (names decoded with replacement)
    "timestamp > 0x10",
    "timestamp > 3u",
    "timestamp > 3.0",
    "timestamp > 010",
    "timestamp - 3 > 0",
    "timestamp > --3",
    '!headers["x"] == b"a"',  # (!headers["x"]) == b"a" in CEL
    '(headers["x"] == b"a") == true',
    'key == null == true',
    'headers[b"x"] == b"a"',
    'headers["x"]',
    'has(headers.x)',
    'size(key) > 0',
    'headers.x.y == b"a"',
    'headers["x"] == b"a" // a comment',
    'r"x" in headers',
    'br"a" == key',
    '"""x""" in headers',
    '"x" in headers.y',
    'timestamp in [1, 2]',
    'timestamp > 1 ? true : false',
    'key == key',
    'timestamp == b"x"',
    'key > b"a"',
    'headers["x"] < b"a"',
    'size(headers) > 1',
    '"x" in headers["y"]',
])
def test_what_is_not_in_the_subset_keeps_cels_path(expression):
    assert plan_of(expression) is None


@pytest.mark.parametrize("expression,headers,key,timestamp", [
    ('headers["x"] == "a"', {"x": b"a"}, None, 1),  # bytes never equal a string in CEL: false
    ('headers["x"] != "a"', {"x": b"a"}, None, 1),
    ('headers["x"] == "a"', {}, None, 1),  # no header: an error
    ('headers["x"] == b"a"', {"x": None}, None, 1),  # a null value: false, not an error
    ('headers["x"] == null', {"x": None}, None, 1),
    ('headers["x"] == b"a" && false', {}, None, 1),  # error && false: false, either way round
    ('false && headers["x"] == b"a"', {}, None, 1),
    ('headers["x"] == b"a" || true', {}, None, 1),
    ('!(headers["x"] == b"a")', {}, None, 1),  # !error: an error
    ('headers["x"] == b"a" || headers["y"] == b"a"', {"y": b"a"}, None, 1),
    ('key == b"k" && timestamp >= 5', {}, b"k", 5),
    ('key == "k"', {}, b"k", 5),
    ('headers.x == b"\xc3\xa9"', {"x": "é".encode()}, None, 1),
])
def test_hand_picked_records_as_cel(expression, headers, key, timestamp):
    f = compile_filter(expression)
    assert f.plan is not None
    expected = _cel(f, key, headers, timestamp)
    f.errors = 0
    assert f.judge([(0, timestamp, key, headers)]) == [expected is True]
    assert f.errors == (expected is None)


def test_a_timestamp_past_int64_is_cels_to_judge():
    f = compile_filter("timestamp == 9223372036854775807 || timestamp < 0")
    assert f.plan is not None
    records = [(0, 1 << 63, None, {}), (1, (1 << 63) - 1, None, {}), (2, -(1 << 63) - 1, None, {})]
    assert f.judge(records) == [_cel(f, None, {}, t) is True for _, t, _, _ in records]


@settings(max_examples=300, deadline=None, database=None)
@given(EXPRESSIONS, _batch, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       st.integers(-2, 3), st.booleans())
def test_filter_atoms_on_damaged_bodies_answers_or_raises_value_error(expression, batch, flips, extra, runs):
    """Bytes changed, counts that lie: a result, None or a ValueError, never a read out of bounds
    (run it under an extension built with -fsanitize=address,undefined to see those)."""
    if filter_atoms is None:
        pytest.skip("the C extension is not built")
    records, _, log_append, ttl_every = batch
    data, info = _make_batch(records, COMPRESSION_NONE, log_append, ttl_every, 0)
    body = bytearray(data[BATCH_HEADER_SIZE:])
    for at, value in flips:
        body[at % len(body)] = value
    plan = plan_of(expression)
    more = (plan.steps, 5) if runs else ()
    try:
        found = filter_atoms(bytes(body), 0, len(body), max(0, info.record_count + extra), BASE, None, plan.atoms,
                             (b"tidelog-ttl-ms",), *more)
    except ValueError:
        return
    assert found is None or isinstance(found, tuple)
