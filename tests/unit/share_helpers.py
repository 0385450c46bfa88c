"""In-memory stand-ins for the share-group collaborators: a __share_group_state partition that
can fail an append, and topic-partition logs of real record batches (a PartitionSource)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Callable

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch, iter_records
from tidelog.queues.state_records import decode_key
from tidelog.queues.state_store import ShareStateStore


class FakeStateLog:
    """An in-memory __share_group_state partition: appends get offsets; it can be told to fail."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.calls = 0
        self.fail_next = 0
        self.gate: asyncio.Event | None = None  # when set, appends wait for it

    async def append(self, records):
        self.calls += 1
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            self.records.extend(records[: len(records) // 2])  # a torn append: part of it reached the log
            raise KafkaError(ErrorCode.request_timed_out, "not replicated in time")
        base = len(self.records)
        self.records.extend(records)
        return base

    def replay_into(self, store: ShareStateStore) -> ShareStateStore:
        for offset, (key, value) in enumerate(self.records):
            store.replay(key, value, offset)
        return store

    def catch_up_hook(self, store: "Callable[[], ShareStateStore]"):
        """The store's catch_up(until, end) as a broker's: replay what others appended below ``until``."""
        async def catch_up(until: int, end: int) -> None:
            target = store()
            for offset in range(target.end_offset or 0, until):
                target.replay(*self.records[offset], offset)
        return catch_up

    def kinds(self) -> list[int]:
        return [decode_key(key)[0] for key, _ in self.records]


class FakeLogs:
    """Topic-partition logs of real v2 batches, read the way PartitionLog.read reads (whole batches
    from the one holding the offset, at least one, below max_offset)."""

    def __init__(self) -> None:
        self.batches: dict[tuple[uuid.UUID, int], list[tuple[int, bytes]]] = {}
        self.log_start: dict[tuple[uuid.UUID, int], int] = {}
        self.lso: dict[tuple[uuid.UUID, int], int] = {}
        self.aborted: dict[tuple[uuid.UUID, int], list[tuple[int, int]]] = {}
        self.leader_epochs: dict[tuple[uuid.UUID, int], int] = {}  # unset: -1 (not known)
        self.reads = 0
        self.lso_asked = 0  # a real partition computes it from its transactions: a replay of its log the first time
        self.read_offsets: list[tuple[int, int]] = []  # (first, end) offsets of each read's batches

    def produce(self, topic_id: uuid.UUID, partition: int, count: int, *, control: bool = False,
                timestamp_ms: int | None = None, producer_id: int = -1, transactional: bool = False) -> int:
        """Append one batch of ``count`` records (values b"<offset>"); returns its base offset."""
        key = (topic_id, partition)
        base = self.log_end(topic_id, partition)
        records = [(None, str(base + i).encode(), []) for i in range(count)]
        self.batches.setdefault(key, []).append(
            (base, build_batch(records, base_offset=base, timestamp_ms=timestamp_ms, is_control=control,
                               producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                               is_transactional=transactional)))
        return base

    def log_end(self, topic_id: uuid.UUID, partition: int) -> int:
        batches = self.batches.get((topic_id, partition), [])
        if not batches:
            return self.log_start.get((topic_id, partition), 0)
        base, data = batches[-1]
        return base + sum(1 for _ in iter_records(data))

    # PartitionSource
    def log_start_offset(self, topic_id, partition):
        return self.log_start.get((topic_id, partition), 0)

    def high_watermark(self, topic_id, partition):
        return self.log_end(topic_id, partition)

    def leader_epoch(self, topic_id, partition):
        return self.leader_epochs.get((topic_id, partition), -1)

    def last_stable_offset(self, topic_id, partition):
        self.lso_asked += 1
        return self.lso.get((topic_id, partition), self.high_watermark(topic_id, partition))

    def aborted_transactions(self, topic_id, partition, fetch_offset, upper_bound_offset):
        return [(pid, first) for pid, first in self.aborted.get((topic_id, partition), []) if first < upper_bound_offset]

    def offset_for_timestamp(self, topic_id, partition, timestamp_ms):
        for base, data in self.batches.get((topic_id, partition), []):
            for record in iter_records(data):
                if record.timestamp >= timestamp_ms:
                    return record.offset
        return None

    def read(self, topic_id, partition, offset, max_bytes, max_offset):
        self.reads += 1
        out = bytearray()
        for base, data in self.batches.get((topic_id, partition), []):
            last = base + sum(1 for _ in iter_records(data)) - 1
            if last < offset or base >= max_offset or base < self.log_start_offset(topic_id, partition):
                continue
            if out and len(out) + len(data) > max_bytes:
                break
            if not out:
                first = base
            out += data
            end = last + 1
        if out:
            self.read_offsets.append((first, end))
        return bytes(out)
