"""What the HTTP API asks other brokers of a cluster, over the Kafka protocol.

Any broker's API and console show the same picture of the cluster: a partition's offsets and
size are the leader's, and its records are read from the leader, wherever it is. Partitions led
here are read locally (record_reader.py, topic_routes.py); for the others this module asks the
leader as a Kafka client would (ListOffsets v5, DescribeLogDirs v1, Fetch v11, and Produce v8
with acks=all for records produced over HTTP: non-flexible versions, as ``BrokerChannel``
speaks them), on the leader's advertised Kafka address, which every broker can reach (the HTTP
listeners bind loopback by default).

A ``PeerClient`` keeps a few idle connections per broker; at most ``MAX_CONNECTIONS_PER_BROKER``
requests to one broker run at once. A broker that does not answer within the timeout makes the
request fail with NETWORK_EXCEPTION (HTTP 503), never the whole page: callers ask per leader and
show what they got. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)

PRODUCE, PRODUCE_VERSION = 0, 8
LIST_OFFSETS, LIST_OFFSETS_VERSION = 2, 5
DESCRIBE_LOG_DIRS, DESCRIBE_LOG_DIRS_VERSION = 35, 1
FETCH, FETCH_VERSION = 1, 11
EARLIEST, LATEST = -2, -1
REQUEST_TIMEOUT_S = 5.0
MAX_CONNECTIONS_PER_BROKER = 4

Key = tuple[str, int]


@dataclass
class RemoteAppend:
    """A Produce answer for one partition: its error (with Kafka's message), else where the batch went."""

    error_code: ErrorCode
    message: str | None
    base_offset: int
    log_append_time_ms: int


@dataclass
class RemoteRead:
    """A Fetch of one partition from its leader: record batches as stored, and the offsets."""

    records: bytes
    high_watermark: int
    log_start_offset: int


class PeerClient:
    """Kafka requests from this broker's HTTP API to the other brokers; see the module docstring."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._idle: dict[int, list[BrokerChannel]] = {}
        self._limits: dict[int, asyncio.Semaphore] = {}

    async def request(self, node_id: int, api_key: int, version: int, request, timeout_s: float = REQUEST_TIMEOUT_S):
        """One request to broker ``node_id``; KafkaError(NETWORK_EXCEPTION) when it cannot be had."""
        info = self.broker.metadata.brokers.get(node_id)
        if info is None:
            raise KafkaError(ErrorCode.broker_not_available, f"broker {node_id} is not live")
        limit = self._limits.setdefault(node_id, asyncio.Semaphore(MAX_CONNECTIONS_PER_BROKER))
        async with limit:
            idle = self._idle.setdefault(node_id, [])
            # A kept connection may have been closed by the other side (a restart): one more try
            # on a new one before giving up.
            for attempt in range(2):
                channel = idle.pop() if idle else None
                reused = channel is not None and (channel.host, channel.port) == (info.host, info.port)
                if not reused:
                    if channel is not None:
                        channel.close()
                    channel = BrokerChannel(info.host, info.port, f"tidelog-http-{self.broker.node_id}",
                                            self.broker.inter_broker_security)
                try:
                    response = await channel.request(api_key, version, request, timeout_s)
                except BaseException as e:
                    channel.close()  # a request cut short leaves the connection mid-frame
                    if not isinstance(e, (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError)):
                        raise
                    if reused and attempt == 0 and not isinstance(e, asyncio.TimeoutError):
                        continue
                    raise KafkaError(ErrorCode.network_exception,
                                     f"broker {node_id} at {info.host}:{info.port} did not answer: {e or type(e).__name__}") from None
                if len(idle) < MAX_CONNECTIONS_PER_BROKER:
                    idle.append(channel)
                else:
                    channel.close()
                return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        for channels in self._idle.values():
            for channel in channels:
                channel.close()
        self._idle.clear()

    async def offsets(self, node_id: int, keys: list[Key]) -> dict[Key, tuple[int, int]]:
        """(log start offset, high watermark) of partitions led by ``node_id``; those it did not
        answer for are missing."""
        from kio.schema.list_offsets.v5 import request as schema

        found: dict[Key, list[int]] = {}
        for timestamp in (EARLIEST, LATEST):
            by_topic: dict[str, list] = {}
            for topic, partition in keys:
                by_topic.setdefault(topic, []).append(
                    schema.ListOffsetsPartition(partition_index=partition, current_leader_epoch=-1, timestamp=timestamp))
            request = schema.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=tuple(
                schema.ListOffsetsTopic(name=topic, partitions=tuple(ps)) for topic, ps in by_topic.items()))
            response = await self.request(node_id, LIST_OFFSETS, LIST_OFFSETS_VERSION, request)
            for topic in response.topics:
                for p in topic.partitions:
                    if p.error_code == ErrorCode.none:
                        found.setdefault((topic.name, p.partition_index), []).append(p.offset)
        return {key: (values[0], values[1]) for key, values in found.items() if len(values) == 2}

    async def offset_for_timestamp(self, node_id: int, topic: str, partition: int, timestamp: int) -> int | None:
        """The first offset at or after ``timestamp`` at the leader; None when there is none."""
        from kio.schema.list_offsets.v5 import request as schema

        request = schema.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(schema.ListOffsetsTopic(
            name=topic, partitions=(schema.ListOffsetsPartition(partition_index=partition, current_leader_epoch=-1,
                                                               timestamp=timestamp),)),))
        response = await self.request(node_id, LIST_OFFSETS, LIST_OFFSETS_VERSION, request)
        p = response.topics[0].partitions[0]
        if p.error_code != ErrorCode.none:
            raise KafkaError(p.error_code, f"{topic}-{partition}: broker {node_id} answered {p.error_code.name}")
        return p.offset if p.offset >= 0 else None

    async def sizes(self, node_id: int, keys: list[Key]) -> dict[Key, int]:
        """Bytes on disk of partitions at broker ``node_id`` (DescribeLogDirs)."""
        from kio.schema.describe_log_dirs.v1 import request as schema

        by_topic: dict[str, list[int]] = {}
        for topic, partition in keys:
            by_topic.setdefault(topic, []).append(partition)
        request = schema.DescribeLogDirsRequest(topics=tuple(
            schema.DescribableLogDirTopic(topic=topic, partitions=tuple(ps)) for topic, ps in by_topic.items()))
        response = await self.request(node_id, DESCRIBE_LOG_DIRS, DESCRIBE_LOG_DIRS_VERSION, request)
        sizes: dict[Key, int] = {}
        for result in response.results:
            if result.error_code != ErrorCode.none:
                continue
            for topic in result.topics:
                for p in topic.partitions:
                    if not p.is_future_key:
                        sizes[(topic.name, p.partition_index)] = p.partition_size
        return sizes

    async def fetch(self, node_id: int, topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int) -> RemoteRead:
        """Records from ``offset`` as a consumer reads them (up to the high watermark)."""
        from kio.schema.fetch.v11 import request as schema

        request = schema.FetchRequest(
            replica_id=-1, max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1, max_bytes=max_bytes,
            isolation_level=0, session_id=0, session_epoch=-1,
            topics=(schema.FetchTopic(topic=topic, partitions=(schema.FetchPartition(
                partition=partition, current_leader_epoch=-1, fetch_offset=offset, log_start_offset=-1,
                partition_max_bytes=max_bytes),)),),
            forgotten_topics_data=(), rack_id="")
        response = await self.request(node_id, FETCH, FETCH_VERSION, request, REQUEST_TIMEOUT_S + max_wait_ms / 1000)
        if response.error_code != ErrorCode.none:
            raise KafkaError(response.error_code, f"fetch from broker {node_id}: {response.error_code.name}")
        p = response.responses[0].partitions[0]
        if p.error_code != ErrorCode.none:
            raise KafkaError(p.error_code, f"{topic}-{partition} at offset {offset}: broker {node_id} answered {p.error_code.name}")
        return RemoteRead(bytes(p.records or b""), p.high_watermark, p.log_start_offset)

    async def produce(self, node_id: int, topic: str, batches: dict[int, bytes], timeout_ms: int) -> dict[int, RemoteAppend]:
        """Record batches appended by their leader as a Kafka producer's acks=all request is: the
        leader's answer for each partition (it checks, appends and waits for its ISR)."""
        from kio.schema.produce.v8 import request as schema

        request = schema.ProduceRequest(
            transactional_id=None, acks=-1, timeout=datetime.timedelta(milliseconds=timeout_ms),
            topic_data=(schema.TopicProduceData(name=topic, partition_data=tuple(
                schema.PartitionProduceData(index=partition, records=batch) for partition, batch in sorted(batches.items()))),))
        response = await self.request(node_id, PRODUCE, PRODUCE_VERSION, request, REQUEST_TIMEOUT_S + timeout_ms / 1000)
        appended = {}
        for topic_response in response.responses:
            for p in topic_response.partition_responses:
                append_time = int(p.log_append_time.timestamp() * 1000) if p.log_append_time is not None else -1
                appended[p.index] = RemoteAppend(p.error_code, p.error_message, p.base_offset, append_time)
        return appended
