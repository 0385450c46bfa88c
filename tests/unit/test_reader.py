"""protocol/reader.py: the one reader of the hand-encoded internal records and consumer-protocol messages."""

from __future__ import annotations

import struct

import pytest

from tidelog.protocol.reader import Reader
from tidelog.protocol.wire import uvarint


class RecordError(ValueError):
    pass


def test_reads_each_type_front_to_back():
    data = (struct.pack(">bhiq", -1, 2, 3, 4) + struct.pack(">h", 3) + b"abc" + struct.pack(">h", -1)
            + uvarint(3) + b"xy" + struct.pack(">i", -1) + struct.pack(">i", 2) + b"\x00\x01"
            + struct.pack(">ii", 7, 8) + uvarint(1) + uvarint(5) + uvarint(2) + b"tf")
    r = Reader(data, RecordError)
    assert (r.i8(), r.i16(), r.i32(), r.i64()) == (-1, 2, 3, 4)
    assert (r.string(), r.nullable_string(), r.compact_string()) == ("abc", None, "xy")
    assert (r.nullable_bytes(), r.nullable_bytes()) == (None, b"\x00\x01")
    assert r.int32s(2) == [7, 8]
    assert r.tagged_fields() == {5: b"tf"}
    assert r.pos == len(data)


@pytest.mark.parametrize("read", [
    lambda r: r.i64(),
    lambda r: r.raw(9),
    lambda r: r.raw(-2),
    lambda r: r.string(),  # length 0x0102 with one byte left
    lambda r: r.int32s(3),
])
def test_a_short_record_raises_the_callers_error(read):
    with pytest.raises(RecordError, match="ends early"):
        read(Reader(b"\x01\x02\x03", RecordError))


def test_null_where_a_value_is_required_and_a_bad_varint_raise_the_callers_error():
    with pytest.raises(RecordError, match="null string"):
        Reader(struct.pack(">h", -1), RecordError).string()
    with pytest.raises(RecordError, match="null string"):
        Reader(uvarint(0), RecordError).compact_string()
    with pytest.raises(RecordError, match="varint"):
        Reader(b"\xff\xff\xff\xff\xff\xff", RecordError).uvarint()
