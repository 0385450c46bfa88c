"""The consumer protocol's embedded messages: what classic consumer groups carry as opaque bytes.

A classic group's members send a ConsumerProtocolSubscription as their JoinGroup metadata and
the leader hands out ConsumerProtocolAssignments in SyncGroup; the broker reads them only to
describe groups (topics subscribed, partitions assigned). Every version starts the same way::

    ConsumerProtocolSubscription  int16 version | int32 count, then string topic...  (then user
                                  data, owned partitions, generation, rack: not read here)
    ConsumerProtocolAssignment    int16 version | int32 count, then per topic: string topic
                                  | int32 count, then int32 partition...  (then user data)

Both decoders answer None for bytes that are not such a message. Pure functions.
"""

from __future__ import annotations

from tidelog.protocol.reader import Reader

__all__ = ["assignment_partitions", "subscription_topics"]


def subscription_topics(metadata: bytes) -> list[str] | None:
    """The topics of a ConsumerProtocolSubscription; None if unreadable."""
    reader = Reader(metadata)
    try:
        reader.i16()
        return [reader.string() for _ in range(reader.i32())]
    except (ValueError, UnicodeDecodeError):
        return None


def assignment_partitions(data: bytes) -> dict[str, list[int]] | None:
    """Topic -> partitions of a ConsumerProtocolAssignment ({} for empty bytes, a member assigned
    nothing); None if unreadable."""
    if not data:
        return {}
    reader = Reader(data)
    try:
        reader.i16()
        result: dict[str, list[int]] = {}
        for _ in range(max(reader.i32(), 0)):
            topic = reader.string()
            result[topic] = reader.int32s(max(reader.i32(), 0))
        return result
    except (ValueError, UnicodeDecodeError):
        return None
