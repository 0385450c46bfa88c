"""A bounds check of a request body against its schema, run before kio decodes it.

kio 0.6.5 sizes arrays from the untrusted count in the frame, so a count of 2**31 makes the
process abort (not raise) inside its native reader. This walks the same schema (kio's
dataclasses and field metadata) without building anything, checking that every array count,
string and byte length fits in the bytes left, and raises MalformedFrame otherwise. Tagged
fields are checked within their declared size. Plans are compiled once per schema class.

A null (a negative length or count) where the schema does not allow one is malformed too:
Kafka's generated readers throw ("non-nullable field X was serialized as null"), the request
fails to parse and the connection is closed. kio let null arrays through to the handlers.

kio also raises on tagged fields it does not know, where Kafka skips them; the walk notes where
such fields are, and ``strip_unknown_tags`` returns a copy of the body without them.
"""

from __future__ import annotations

import dataclasses
import functools
import struct

from kio.serial._introspect import (EntityField, EntityTupleField, PrimitiveTupleField, classify_field, get_field_tag,
                                   is_optional)

from tidelog.protocol.wire import MalformedFrame, read_uvarint
from tidelog.protocol.wire import uvarint as _uvarint

_FIXED = {
    "bool": 1, "int8": 1, "int16": 2, "uint16": 2, "error_code": 2, "int32": 4, "timedelta_i32": 4,
    "int64": 8, "timedelta_i64": 8, "datetime_i64": 8, "float64": 8, "uuid": 16,
}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

# A step: (kind, fixed size or kafka type, nested class or None, nullable, field name)
#   ("fixed", n, None) | ("var", "string"/"bytes", None) | ("array", elem_kind, nested)
#   ("entity", None, nested) | ("nullable_entity", None, nested): an int8 marker (-1 null) first
# ``nullable`` matters for "var" and "array" steps; array elements are never null.


# An unknown tagged-field section to rewrite: (count start, count end, count of known tags,
# [(start, end) of each unknown field]).
Edit = tuple[int, int, int, list[tuple[int, int]]]


def check_request(cls: type, body: memoryview, offset: int) -> list[Edit]:
    """Raise MalformedFrame if ``body[offset:]`` cannot be a ``cls`` without overrunning.

    Returns where unknown tagged fields are (empty almost always), for ``strip_unknown_tags``.
    """
    edits: list[Edit] = []
    end = _walk(_plan(cls), body, offset, len(body), cls.__flexible__, edits)
    if end > len(body):
        raise MalformedFrame("request body truncated")
    return edits


def strip_unknown_tags(body: memoryview, edits: list[Edit]) -> bytes:
    """A copy of ``body`` without the unknown tagged fields found by ``check_request``."""
    out = bytearray()
    pos = 0
    for count_start, count_end, known, spans in sorted(edits):
        out += body[pos:count_start]
        out += _uvarint(known)
        pos = count_end
        for start, end in spans:
            out += body[pos:start]
            pos = end
    out += body[pos:]
    return bytes(out)



@functools.cache
def _plan(cls: type) -> tuple[tuple, dict[int, tuple]]:
    """(steps for the untagged fields in order, {tag: step} for tagged ones)."""
    steps = []
    tagged = {}
    for field in dataclasses.fields(cls):
        step = _step(field)
        tag = get_field_tag(field)
        if tag is None:
            if step[0] == "entity" and step[3]:  # a nullable struct (KIP-893), e.g. a cursor
                step = ("nullable_entity", *step[1:])
            if step[0] == "fixed" and steps and steps[-1][0] == "fixed":  # one skip for a run of them
                step = ("fixed", steps.pop()[1] + step[1], None, False, field.name)
            steps.append(step)
        else:
            tagged[tag] = step
    return tuple(steps), tagged


def _step(field: dataclasses.Field) -> tuple:
    kind = classify_field(field)
    nullable = is_optional(field)
    if isinstance(kind, EntityField):
        return ("entity", None, kind.type_, nullable, field.name)
    if isinstance(kind, EntityTupleField):
        return ("array", "entity", kind.type_, nullable, field.name)
    kafka_type = field.metadata["kafka_type"]
    if isinstance(kind, PrimitiveTupleField):
        return ("array", kafka_type, None, nullable, field.name)
    if kafka_type in _FIXED:
        return ("fixed", _FIXED[kafka_type], None, False, field.name)
    return ("var", kafka_type, None, nullable, field.name)


def _length(buf: memoryview, pos: int, limit: int, flexible: bool, wide: bool) -> tuple[int, int]:
    """A length prefix: compact (uvarint n+1) when flexible, else int16 (strings) or int32."""
    if flexible:
        value, pos = read_uvarint(buf, pos)
        return value - 1, pos
    size = 4 if wide else 2
    if pos + size > limit:
        raise MalformedFrame("request body truncated")
    return (_I32 if wide else _I16).unpack_from(buf, pos)[0], pos + size


def _walk(plan: tuple, buf: memoryview, pos: int, limit: int, flexible: bool, edits: list[Edit]) -> int:
    steps, tagged = plan
    for step in steps:
        pos = _walk_step(step, buf, pos, limit, flexible, edits)
        if pos > limit:
            raise MalformedFrame("request body truncated")
    if flexible:
        count_start = pos
        count, pos = read_uvarint(buf, pos)
        count_end = pos
        if count > limit - pos:
            raise MalformedFrame(f"{count} tagged fields in {limit - pos} bytes")
        unknown = []
        for _ in range(count):
            field_start = pos
            tag, pos = read_uvarint(buf, pos)
            size, pos = read_uvarint(buf, pos)
            end = pos + size
            if end > limit:
                raise MalformedFrame("tagged field runs past the end of the request")
            step = tagged.get(tag)
            if step is not None:
                _walk_step(step, buf, pos, end, flexible, edits)
            else:
                unknown.append((field_start, end))
            pos = end
        if unknown:
            edits.append((count_start, count_end, count - len(unknown), unknown))
    return pos


def _walk_step(step: tuple, buf: memoryview, pos: int, limit: int, flexible: bool, edits: list[Edit]) -> int:
    kind, arg, nested, nullable, name = step
    if kind == "fixed":
        return pos + arg
    if kind == "var":
        size, pos = _length(buf, pos, limit, flexible, wide=arg != "string")
        if size < 0 and not nullable:
            raise MalformedFrame(f"non-nullable field {name} was serialized as null")
        if size > limit - pos:
            raise MalformedFrame(f"{arg} of {size} bytes in {limit - pos} bytes left")
        return pos + max(size, 0)
    if kind == "entity":
        return _walk(_plan(nested), buf, pos, limit, flexible, edits)
    if kind == "nullable_entity":
        if pos >= limit:
            raise MalformedFrame("request body truncated")
        if buf[pos] == 0xFF:  # -1: null
            return pos + 1
        return _walk(_plan(nested), buf, pos + 1, limit, flexible, edits)
    # array
    count, pos = _length(buf, pos, limit, flexible, wide=True)
    if count < 0 and not nullable:
        raise MalformedFrame(f"non-nullable field {name} was serialized as null")
    if count > limit - pos:
        raise MalformedFrame(f"array of {count} elements in {limit - pos} bytes left")
    if arg == "entity":
        plan = _plan(nested)
        for _ in range(count):
            pos = _walk(plan, buf, pos, limit, flexible, edits)
            if pos > limit:
                raise MalformedFrame("request body truncated")
        return pos
    if arg in _FIXED:
        return pos + max(count, 0) * _FIXED[arg]
    element = ("var", arg, None, False, name)
    for _ in range(count):
        pos = _walk_step(element, buf, pos, limit, flexible, edits)
    return pos
