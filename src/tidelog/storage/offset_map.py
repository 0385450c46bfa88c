"""OffsetMap: key -> latest offset for the log cleaner, in memory bounded by a setting.

Kafka's SkimpyOffsetMap: the map stores, per key, the MD5 hash of the key (16 bytes) and the
latest offset seen (8 bytes), never the key itself, in open-addressed slots: 24 bytes an entry
whatever the key's size, so compacting a log does not hold its keys in a dict. Two keys with
the same 128-bit hash would be taken for one (negligible: about n**2 / 2**129 for n keys).

Here the slots are three flat arrays (hash high and low halves, offset; offset -1 marks an
empty slot), probed by double hashing over a power-of-two slot count. The map starts small and
doubles, rehashing, as it fills, up to the largest power of two of slots that fits in
``memory_bytes`` (``log.cleaner.dedupe.buffer.size`` divided among the cleaner workers); past
``load_factor`` of that (``log.cleaner.io.buffer.load.factor``) it is full and the cleaner
stops adding keys, as Kafka's does. Not thread-safe; one cleaning owns one map.
"""

from __future__ import annotations

import hashlib
import struct
from array import array

__all__ = ["OffsetMap", "BYTES_PER_ENTRY"]

BYTES_PER_ENTRY = 24  # 16 bytes of MD5 + an 8-byte offset, as Kafka's SkimpyOffsetMap
_INITIAL_SLOTS = 1 << 12
_HALVES = struct.Struct("<QQ")
_md5 = hashlib.md5


class OffsetMap:
    """See the module docstring."""

    def __init__(self, memory_bytes: int, load_factor: float = 0.9) -> None:
        max_slots = max(memory_bytes // BYTES_PER_ENTRY, 2)
        self.max_slots = 1 << (max_slots.bit_length() - 1)  # the largest power of two that fits
        self.load_factor = load_factor
        self.max_entries = min(int(self.max_slots * load_factor), self.max_slots - 1)  # a probe always meets an empty slot
        if self.max_entries < 1:
            raise ValueError(f"an offset map of {memory_bytes} bytes cannot hold one key at load factor {load_factor}")
        self.latest_offset = -1
        self._allocate(min(_INITIAL_SLOTS, self.max_slots))

    def _allocate(self, slots: int) -> None:
        self._mask = slots - 1
        self._high = array("Q", bytes(8 * slots))
        self._low = array("Q", bytes(8 * slots))
        self._offsets = array("q", [-1]) * slots
        self._grow_at = int(slots * self.load_factor) if slots < self.max_slots else self.max_entries
        self.size = 0

    @property
    def slots(self) -> int:
        return self._mask + 1

    @property
    def full(self) -> bool:
        """No new key may be added (existing keys may still be updated)."""
        return self.size >= self.max_entries

    @property
    def utilization(self) -> float:
        """Entries over the most the map may hold (Kafka's buffer utilization)."""
        return self.size / self.max_slots

    def clear(self) -> None:
        """Forget every key and shrink back to the starting size (the grown arrays are freed)."""
        self.latest_offset = -1
        self._allocate(min(_INITIAL_SLOTS, self.max_slots))

    def put(self, key, offset: int) -> bool:
        """Map ``key`` (a bytes-like) to ``offset``; False, changing nothing, if it is a new key
        and the map is full."""
        high, low = _HALVES.unpack(_md5(key).digest())
        offsets, highs, lows, mask = self._offsets, self._high, self._low, self._mask
        slot = high & mask
        step = low | 1
        while offsets[slot] != -1:
            if highs[slot] == high and lows[slot] == low:
                offsets[slot] = offset
                self.latest_offset = offset
                return True
            slot = (slot + step) & mask
        if self.size >= self.max_entries:
            return False
        highs[slot], lows[slot], offsets[slot] = high, low, offset
        self.size += 1
        self.latest_offset = offset
        if self.size >= self._grow_at and self.slots < self.max_slots:
            self._grow()
        return True

    def get(self, key) -> int:
        """The offset last put for ``key``, or -1."""
        high, low = _HALVES.unpack(_md5(key).digest())
        offsets, highs, lows, mask = self._offsets, self._high, self._low, self._mask
        slot = high & mask
        step = low | 1
        while True:
            offset = offsets[slot]
            if offset == -1 or (highs[slot] == high and lows[slot] == low):
                return offset
            slot = (slot + step) & mask

    def update_latest_offset(self, offset: int) -> None:
        self.latest_offset = offset

    def _grow(self) -> None:
        old = zip(self._high, self._low, self._offsets)
        size = self.size
        self._allocate(min(self.slots * 2, self.max_slots))
        offsets, highs, lows, mask = self._offsets, self._high, self._low, self._mask
        for high, low, offset in old:
            if offset == -1:
                continue
            slot = high & mask
            step = low | 1
            while offsets[slot] != -1:
                slot = (slot + step) & mask
            highs[slot], lows[slot], offsets[slot] = high, low, offset
        self.size = size
