"""Reading Kafka's primitive types front to back, for the records this broker stores itself.

The internal topics' records (``__consumer_offsets``, ``__transaction_state``,
``__share_group_state``) and the consumer protocol's embedded subscription and assignment are
written in Kafka's schema encoding by hand, not by the request codec: big-endian integers,
``string`` (int16 length, -1 for null), ``bytes`` (int32 length, -1 for null), and in flexible
versions compact strings and arrays (unsigned varint length + 1, 0 for null) and tagged fields
(a count, then tag, size and data each). A ``Reader`` raises ``error`` (a ValueError, one per
record format) when the data ends early or a length is impossible, so a damaged record is one
known exception for its caller. Not thread-safe: one reader per record.
"""

from __future__ import annotations

import struct

from tidelog.protocol.wire import MalformedFrame, read_uvarint

__all__ = ["Reader"]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class Reader:
    """A position in ``data``; each method reads one value and moves past it."""

    __slots__ = ("data", "pos", "error")

    def __init__(self, data: bytes | bytearray | memoryview, error: type[ValueError] = ValueError) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.error = error

    def take(self, s: struct.Struct) -> tuple:
        if self.pos + s.size > len(self.data):
            raise self.error("record ends early")
        values = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return values

    def i8(self) -> int:
        return self.take(_I8)[0]

    def i16(self) -> int:
        return self.take(_I16)[0]

    def i32(self) -> int:
        return self.take(_I32)[0]

    def i64(self) -> int:
        return self.take(_I64)[0]

    def int32s(self, count: int) -> list[int]:
        return list(struct.unpack(f">{count}i", self.raw(4 * count)))

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.data, self.pos)
        except MalformedFrame as e:
            raise self.error(str(e)) from None
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise self.error("record ends early")
        data = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return data

    def nullable_string(self) -> str | None:
        """int16 length (-1: null), then UTF-8; raises UnicodeDecodeError for other bytes."""
        length = self.i16()
        return None if length < 0 else self.raw(length).decode()

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise self.error("null string")
        return value

    def compact_string(self) -> str:
        length = self.uvarint() - 1
        if length < 0:
            raise self.error("null string")
        return self.raw(length).decode()

    def nullable_bytes(self) -> bytes | None:
        """int32 length (-1: null), then the bytes."""
        length = self.i32()
        return None if length < 0 else self.raw(length)

    def tagged_fields(self) -> dict[int, bytes]:
        fields = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            fields[tag] = self.raw(self.uvarint())
        return fields
