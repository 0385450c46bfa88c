"""Property tests: the decoders a client's bytes reach fail only in ways the broker handles.

The connection closes the socket on ``MalformedFrame`` from the header parser and on any
``Exception`` from kio's body readers; a ``BaseException`` that is not an ``Exception`` (a Rust
panic surfaces as pyo3's PanicException) would escape that. Record batches must fail only with
``InvalidBatch`` (its error code goes into the Produce response). Every example is bounded in
size; hypothesis' deadline catches a decoder that spins.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tidelog.protocol import apis
from tidelog.protocol.guard import check_request
from tidelog.protocol.produce import decode_produce_request
from tidelog.protocol.records import InvalidBatch, build_batch, validate_batches
from tidelog.protocol.wire import MalformedFrame, parse_request_header, read_uvarint, skip_tagged_fields

GOLDEN = Path(__file__).parent.parent / "golden"
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

# (api_key, version) pairs whose bodies kio decodes in the connection (not ApiVersions > 4).
DECODED_VERSIONS = [
    (key, version) for key, (_, low, high) in sorted(apis.KAFKA_4_0.items()) for version in range(low, high + 1)
]


def cap_uvarints(data: bytes) -> bytes:
    """Keep every varint in ``data`` to 4 bytes (values < 2**28) by clearing a continuation bit.

    kio 0.6.5 sizes an array's allocation from the untrusted count and aborts the process on a
    count of ~2**32; protocol/guard.py stops such bodies first. In-process fuzzing keeps clear of
    huge counts so that a gap in the guard cannot take pytest down; the guard itself is fuzzed
    in a child process (test_guarded_decode_never_aborts).
    """
    out = bytearray(data)
    run = 0
    for i, byte in enumerate(out):
        run = run + 1 if byte & 0x80 else 0
        if run == 4:
            out[i] &= 0x7F
            run = 0
    return bytes(out)


def decode_body(api_key: int, version: int, data: bytes, cap: bool = True) -> None:
    """Decode as the connection does (bounds guard, then kio); only Exception subclasses may come out."""
    if cap:
        data = cap_uvarints(data)
    view = memoryview(data)
    try:
        check_request(apis.request_type(api_key, version), view, 0)
        apis.request_reader(api_key, version)(view.toreadonly(), 0)
    except Exception:
        pass


# --- wire ----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=64), st.booleans())
@example(b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\x7f", True)
def test_parse_request_header_only_malformed_frame(data, flexible):
    try:
        header, offset = parse_request_header(memoryview(data), flexible)
    except MalformedFrame:
        return
    assert 10 <= offset <= len(data)
    assert header.client_id is None or isinstance(header.client_id, str)


@FUZZ
@given(st.binary(max_size=12), st.integers(min_value=0, max_value=12))
def test_read_uvarint_only_malformed_frame(data, pos):
    try:
        value, end = read_uvarint(data, pos)
    except MalformedFrame:
        return
    assert pos < end <= min(pos + 5, len(data))
    assert 0 <= value < 2**35


@FUZZ
@given(st.binary(max_size=64))
def test_skip_tagged_fields_only_malformed_frame(data):
    try:
        end = skip_tagged_fields(data, 0)
    except MalformedFrame:
        return
    assert 0 < end <= len(data)


def test_skip_tagged_fields_with_huge_count_fails_fast():
    """A count of 2**35-1 fields in a short frame must fail at the frame's end, not loop."""
    with pytest.raises(MalformedFrame):
        skip_tagged_fields(b"\xff\xff\xff\xff\x7f" + b"\x00\x00" * 10, 0)


# --- kio request readers ---------------------------------------------------------------------


@FUZZ
@given(st.sampled_from(DECODED_VERSIONS), st.binary(max_size=200))
def test_kio_readers_on_arbitrary_bytes(key_version, data):
    decode_body(*key_version, data)


def _golden_bodies() -> list[tuple[int, int, bytes]]:
    bodies = []
    for path in sorted(GOLDEN.glob("*.hex")):
        frame = bytes.fromhex(path.read_text().strip())
        api_key, version = struct.unpack_from(">hh", frame)
        _, offset = parse_request_header(memoryview(frame), apis.is_flexible(api_key, version))
        bodies.append((api_key, version, frame[offset:]))
    return bodies


GOLDEN_BODIES = _golden_bodies()


@st.composite
def mutated_body(draw):
    api_key, version, body = draw(st.sampled_from(GOLDEN_BODIES))
    data = bytearray(body)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
    return api_key, version, bytes(data)


@FUZZ
@given(mutated_body())
def test_kio_readers_on_mutated_client_frames(case):
    decode_body(*case)


@pytest.mark.parametrize("api_key, version, body", GOLDEN_BODIES)
def test_kio_readers_on_every_truncation_of_client_frames(api_key, version, body):
    for end in range(len(body)):
        decode_body(api_key, version, body[:end])


GUARDED_CHILD = """
import random, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a 4 GiB broker host
sys.path.insert(0, sys.argv[1])
from tests.unit.test_fuzz_decoder import DECODED_VERSIONS, decode_body
for api_key, version, body in [(3, 9, "ffffffff0f0261"), (3, 1, "7fffffff000161"),
                               (37, 3, "e8f882a663174f3fa0abcf2ae79cbf6b71")]:
    decode_body(api_key, version, bytes.fromhex(body), cap=False)
rng = random.Random(int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    api_key, version = rng.choice(DECODED_VERSIONS)
    body = bytes(rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.getrandbits(8))) for _ in range(rng.randint(0, 120)))
    decode_body(api_key, version, body, cap=False)
print("ok")
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_guarded_decode_never_aborts(seed):
    """Huge array counts (which make kio 0.6.5 abort the process) are stopped by the guard:
    known killers plus random bodies rich in 0xff/0x80 bytes, in a child with a 4 GiB limit."""
    root = str(Path(__file__).parent.parent.parent)
    child = subprocess.run(
        [sys.executable, "-c", GUARDED_CHILD, root, str(seed), "4000"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0 and child.stdout.strip() == "ok", child.stderr[-500:]


# --- the hand-written Produce decoder (the connection passes Produce bodies raw) --------------


@FUZZ
@given(st.sampled_from([b for b in GOLDEN_BODIES if b[0] == 0]), st.data())
def test_produce_decoder_on_mutated_bodies(case, data):
    _, version, body = case
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        pos = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(min_value=0, max_value=255))
    mutated = mutated[: data.draw(st.integers(min_value=0, max_value=len(mutated)))]
    try:
        decode_produce_request(memoryview(mutated), version)
    except MalformedFrame:
        pass


@FUZZ
@given(st.integers(min_value=0, max_value=12), st.binary(max_size=200))
def test_produce_decoder_on_arbitrary_bytes(version, data):
    try:
        decode_produce_request(memoryview(bytearray(data)), version)
    except MalformedFrame:
        pass


def test_produce_decoder_invalid_utf8_topic():
    """A topic name that is not UTF-8 is a malformed request, like any other decode failure."""
    # transactional_id null, acks 1, timeout 1000, one topic named b"\xff\xfe" with no partitions
    body = bytearray(bytes.fromhex("ffff" "0001" "000003e8" "00000001" "0002fffe" "00000000"))
    with pytest.raises(MalformedFrame):
        decode_produce_request(memoryview(body), 3)


# --- record batches -------------------------------------------------------------------------

VALID_BATCH = build_batch([(b"key", b"value" * 20, [("h", b"x")]), (None, b"v2", [])], timestamp_ms=1_700_000_000_000)


@FUZZ
@given(st.binary(max_size=300))
def test_validate_batches_on_arbitrary_bytes(data):
    try:
        validate_batches(data, 1 << 20)
    except InvalidBatch as e:
        assert e.error_code in (2, 10, 87)  # CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD


@FUZZ
@given(st.data())
def test_validate_batches_on_mutated_batch(data):
    batch = bytearray(VALID_BATCH)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        pos = data.draw(st.integers(min_value=0, max_value=len(batch) - 1))
        batch[pos] = data.draw(st.integers(min_value=0, max_value=255))
    batch = batch[: data.draw(st.integers(min_value=0, max_value=len(batch)))]
    exactly_one = data.draw(st.booleans())
    try:
        validate_batches(memoryview(batch), data.draw(st.sampled_from([1 << 20, 100])), exactly_one)
    except InvalidBatch as e:
        assert e.error_code in (2, 10, 87)


def test_validate_batches_catches_any_crc_covered_change():
    """Flipping any byte the CRC covers (from attributes on) is CORRUPT_MESSAGE or caught earlier."""
    for pos in range(21, len(VALID_BATCH)):
        batch = bytearray(VALID_BATCH)
        batch[pos] ^= 0x01
        with pytest.raises(InvalidBatch):
            validate_batches(batch, 1 << 20)
