"""Reading a partition's records for the HTTP API, as JSON, below the high watermark, at its leader.

Here when this broker leads the partition (``log.read`` up to the high watermark, waiting up to
``timeout_ms`` for records as a Fetch does), else asked of the leader over Kafka's protocol
(peers.py); at most ``MAX_READ_BYTES`` per read. Control batches (transaction markers) are
skipped. Records are JSON as http/codec.py writes them.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tidelog.cluster.partition import wait_for_data
from tidelog.http.cluster_view import ClusterView
from tidelog.http.codec import TIMESTAMP_TYPES, record_to_json
from tidelog.http.peers import PeerClient
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, iter_records, parse_batch_header

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["MAX_READ_BYTES", "RecordReader"]

MAX_READ_BYTES = 4 * 1024 * 1024


class RecordReader:
    """Offsets and records of partitions, at their leaders."""

    def __init__(self, broker: "Broker", view: ClusterView, peers: PeerClient) -> None:
        self.broker = broker
        self.view = view
        self.peers = peers

    async def offsets(self, record, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of a partition, at its leader."""
        leader = self.view.leader(record, partition)
        if leader == self.broker.node_id:
            log = self.broker.partition_log(record.name, partition)
            return log.log_start_offset, self.view.high_watermark(log)
        found = (await self.peers.offsets(leader, [(record.name, partition)])).get((record.name, partition))
        if found is None:
            raise KafkaError(ErrorCode.not_leader_or_follower, f"broker {leader} does not lead {record.name}-{partition} (any more)")
        return found

    async def offset_for_timestamp(self, record, partition: int, timestamp: int) -> int:
        """The first offset whose timestamp is at or after ``timestamp``; the high watermark if none."""
        leader = self.view.leader(record, partition)
        if leader == self.broker.node_id:
            log = self.broker.partition_log(record.name, partition)
            found = log.offset_for_timestamp(timestamp)
            offset = found[0] if found is not None and found[0] < self.view.high_watermark(log) else None
        else:
            offset = await self.peers.offset_for_timestamp(leader, record.name, partition, timestamp)
        return offset if offset is not None else (await self.offsets(record, partition))[1]

    async def read_records(self, record, partition: int, offset: int, limit: int, force_base64: bool,
                           timeout_ms: int = 0) -> tuple[list[dict], int, int, int]:
        """Up to ``limit`` records from ``offset`` below the high watermark, read at the leader
        (here or over Kafka's Fetch); waits up to ``timeout_ms`` for a first one. Returns
        (records, next offset to read, log start offset, high watermark)."""
        leader = self.view.leader(record, partition)
        if leader != self.broker.node_id:
            return await self._read_remote(leader, record.name, partition, offset, limit, force_base64, timeout_ms)
        log = self.broker.partition_log(record.name, partition)
        if not log.log_start_offset <= offset <= self.view.high_watermark(log):
            raise KafkaError(ErrorCode.offset_out_of_range, f"offset {offset} is outside [{log.log_start_offset}, "
                             f"{self.view.high_watermark(log)}] of {record.name}-{partition}")
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            out: list[dict] = []
            position = offset
            budget = MAX_READ_BYTES
            while len(out) < limit and budget > 0:
                data = log.read(position, min(budget, 1024 * 1024), min_one_batch=True, max_offset=self.view.high_watermark(log))
                if not data:
                    break
                budget -= len(data)
                self.broker.metrics.count_fetched(record.name, data)
                next_position = self._parse_records(memoryview(data), position, limit, out, force_base64)
                if next_position == position:
                    break
                position = next_position
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or record.name not in self.broker.metadata.topics:
                return out, position, log.log_start_offset, self.view.high_watermark(log)
            await wait_for_data(self.view.hosted([(record.name, partition)]), remaining)

    async def _read_remote(self, leader: int, topic: str, partition: int, offset: int, limit: int, force_base64: bool,
                           timeout_ms: int) -> tuple[list[dict], int, int, int]:
        out: list[dict] = []
        position = offset
        budget = MAX_READ_BYTES
        wait_ms = timeout_ms
        while True:
            read = await self.peers.fetch(leader, topic, partition, position, min(budget, 1024 * 1024), wait_ms)
            budget -= len(read.records)
            next_position = self._parse_records(memoryview(read.records), position, limit, out, force_base64)
            if len(out) >= limit or budget <= 0 or next_position == position or next_position >= read.high_watermark:
                return out, next_position, read.log_start_offset, read.high_watermark
            position, wait_ms = next_position, 0

    def _parse_records(self, data: memoryview, position: int, limit: int, out: list[dict], force_base64: bool) -> int:
        """Append the records of ``data`` (whole batches; control batches skipped) at or after
        ``position`` to ``out``, up to ``limit`` in all; return the next offset to read."""
        pos = 0
        while pos + BATCH_HEADER_SIZE <= len(data) and len(out) < limit:
            info = parse_batch_header(data, pos)
            if pos + info.size > len(data):
                break
            if not info.is_control:
                for r in iter_records(data[pos : pos + info.size]):
                    if r.offset < position:
                        continue
                    out.append(self._record_json(r, info.timestamp_type, force_base64))
                    position = r.offset + 1
                    if len(out) >= limit:
                        break
            if len(out) < limit:
                position = max(position, info.last_offset + 1)
            pos += info.size
        return position

    def _record_json(self, r, timestamp_type: int, force_base64: bool) -> dict:
        return record_to_json(r.offset, r.timestamp, TIMESTAMP_TYPES[timestamp_type], r.key, r.value, r.headers, force_base64)
