"""The encoded topic entries of Metadata responses, reused while nothing they show changed.

A Metadata request for every topic of a broker with 10,000 partitions built 10,000 partition
objects and encoded them field by field: 130 ms at v1 and several times that at v12 on the
development machine (issue 19, item 4). Clients ask for it at start, on every metadata refresh
(``topic.metadata.refresh.interval.ms``, 5 minutes) and whenever a leader moves; the answer
for one topic only changes with its record, its partitions' states or the set of live brokers.

So each topic entry is encoded once per response version and kept with a stamp of what it was
made from: the topic record, its partition count, each partition's state and the live brokers,
compared by identity first (the metadata stores replace a state object on every change), then
by equality. A response is then the rest of it encoded as usual with an empty topic array, split
around that array, and the cached entries spliced in: the bytes are what kio would have
written (the tests compare them for every version).
"""

from __future__ import annotations

import struct
import weakref
from typing import Any, Callable

from kio.serial import entity_writer

from tidelog.protocol.apis import response_writer

__all__ = ["TopicEntryCache", "cache_for", "splice"]

_INT32 = struct.Struct(">i")
# The fields after the topic array in some versions, and their encoded sizes.
_FIXED_SIZES = {"cluster_authorized_operations": 4, "error_code": 2}


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))


class TopicEntryCache:
    """Encoded ``MetadataResponseTopic`` entries of one metadata store; see the module docstring."""

    def __init__(self) -> None:
        # (version, topic name) -> (stamp, encoded entry)
        self._entries: dict[tuple[int, str], tuple[tuple, bytes]] = {}

    def entry(self, version: int, name: str, stamp: tuple, make: Callable[[], Any], entry_type: type) -> bytes:
        """The encoded entry of topic ``name``, made by ``make`` unless one with the same
        ``stamp`` (compared item by item: identity first, then equality) is cached."""
        key = (version, name)
        cached = self._entries.get(key)
        if cached is not None and len(cached[0]) == len(stamp) and all(a is b or a == b for a, b in zip(cached[0], stamp)):
            return cached[1]
        sink = _Sink()
        entity_writer(entry_type)(sink, make())
        encoded = b"".join(sink.parts)
        self._entries[key] = (stamp, encoded)
        return encoded

    def prune(self, topics: dict) -> None:
        """Forget the entries of topics gone (called when the cache holds many more than exist)."""
        if len(self._entries) > 4 * len(topics) + 64:
            self._entries = {key: value for key, value in self._entries.items() if key[1] in topics}


_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_for(store: object) -> TopicEntryCache:
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = TopicEntryCache()
    return cache


def splice(response: Any, entries: list[bytes]) -> list[bytes] | None:
    """The encoded ``response`` (built with an empty topic array) with ``entries`` as its
    topics, as parts to write one after another; None if its encoding is not laid out as
    expected (the caller then encodes the whole response)."""
    sink = _Sink()
    response_writer(response.__api_key__, response.__version__)(sink, response)
    body = b"".join(sink.parts)
    flexible = type(response).__flexible__
    after = list(type(response).__dataclass_fields__)
    after = after[after.index("topics") + 1:]
    if any(name not in _FIXED_SIZES for name in after):
        return None
    tail = sum(_FIXED_SIZES[name] for name in after) + (1 if flexible else 0)  # and the tagged fields' count
    empty = b"\x01" if flexible else b"\x00\x00\x00\x00"
    split = len(body) - tail - len(empty)
    if split < 0 or body[split : split + len(empty)] != empty:
        return None
    count = _uvarint(len(entries) + 1) if flexible else _INT32.pack(len(entries))
    return [body[:split], count, *entries, body[len(body) - tail :]]
