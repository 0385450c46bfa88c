"""Writing COMMIT/ABORT markers as partition leader, and sending them to the other leaders.

- ``write_markers(replicas, entries, timeout_s, on_offsets_marker)``: what a broker does with a
  WriteTxnMarkers request (from a coordinator elsewhere, or its own coordinator in process):
  each partition's marker is appended as leader (``Partition.append_marker``: the epoch and
  coordinator-epoch checks, the control batch, the partition's transaction state and
  ``.txnindex``), then all are awaited acks=all, durable and in the ISR within ``timeout_s``
  (``offsets.commit.timeout.ms``; the flush included, so a stuck disk answers REQUEST_TIMED_OUT,
  which the coordinator's channel retries). A ``__consumer_offsets`` marker also completes
  the producer's pending transactional offset commits (``on_offsets_marker``) once durable.
  Returns the error of each (producer id, partition): UNKNOWN_TOPIC_OR_PARTITION /
  NOT_LEADER_OR_FOLLOWER when not led here, INVALID_PRODUCER_EPOCH,
  TRANSACTION_COORDINATOR_FENCED, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT,
  KAFKA_STORAGE_ERROR.
- ``ClusterMarkerSender``: the ``MarkerSender`` of txn/markers.py over the metadata store (who
  leads a partition) and, for other brokers, WriteTxnMarkers v1 over a BrokerChannel each.

Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.cluster.waiters import wait_for_acks
from tidelog.protocol.apis import build, request_type
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import CONSUMER_OFFSETS
from tidelog.txn.markers import NO_LEADER, UNKNOWN_LEADER, MarkerEntry
from tidelog.txn.state import TopicPartition

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.cluster.replica_manager import ReplicaManager

__all__ = ["ClusterMarkerSender", "write_markers"]

logger = logging.getLogger(__name__)

WRITE_TXN_MARKERS = 27
WRITE_TXN_MARKERS_VERSION = 1

# (``__consumer_offsets`` partition, producer id, committed): a marker there is durable.
OffsetsMarkerListener = Callable[[int, int, bool], None]


async def write_markers(replicas: "ReplicaManager", entries: list[MarkerEntry], timeout_s: float,
                        on_offsets_marker: OffsetsMarkerListener | None = None
                        ) -> dict[tuple[int, TopicPartition], ErrorCode]:
    """See the module docstring."""
    results: dict[tuple[int, TopicPartition], ErrorCode] = {}
    appended = []  # (producer id, committed, tp, partition, end offset)
    for entry in entries:
        for tp in entry.partitions:
            tp = TopicPartition(*tp)
            try:
                partition = replicas.leader(tp.topic, tp.partition)
                result = partition.append_marker(entry.producer_id, entry.producer_epoch, entry.coordinator_epoch,
                                                 entry.committed)
            except KafkaError as e:
                results[(entry.producer_id, tp)] = e.error_code
                if e.error_code not in (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition):
                    logger.info("marker for producer %d on %s-%d refused: %s (%s)", entry.producer_id, tp.topic,
                                tp.partition, e.error_code.name, e)
                continue
            appended.append((entry.producer_id, entry.committed, tp, partition, result.end_offset))
    if not appended:
        return results
    try:
        # The flush within the timeout too: a marker whose flush does not end (a stuck disk) is
        # answered REQUEST_TIMED_OUT, which the coordinator's channel retries, instead of holding
        # its request (and the transactions queued behind it) until the disk comes back.
        errors = await wait_for_acks([(p, end) for _, _, _, p, end in appended], -1, timeout_s, replicas.logs,
                                     durability_in_timeout=True)
    except KafkaError as e:
        errors = [e.error_code] * len(appended)
    for (producer_id, committed, tp, _, _), error in zip(appended, errors):
        results[(producer_id, tp)] = error
        if error is ErrorCode.none and tp.topic == CONSUMER_OFFSETS and on_offsets_marker is not None:
            on_offsets_marker(tp.partition, producer_id, committed)
    return results


class ClusterMarkerSender:
    """The MarkerSender of this broker (see the module docstring)."""

    def __init__(self, node_id: int, metadata: "MetadataStore", write_locally, request_timeout_s: float = 30.0) -> None:
        self.node_id = node_id
        self.metadata = metadata
        self._write_locally = write_locally  # async (entries) -> {(pid, tp): ErrorCode}
        self.request_timeout_s = request_timeout_s
        self._channels: dict[int, BrokerChannel] = {}
        self.channel_security = None  # TLS/SASL to the other brokers (ChannelSecurity), set by the broker

    def leader_of(self, partition: TopicPartition) -> int | None:
        topic = self.metadata.topics.get(partition.topic)
        if topic is None or not 0 <= partition.partition < topic.partitions:
            return NO_LEADER
        state = self.metadata.partitions.get((partition.topic, partition.partition))
        if state is None or state.leader < 0:
            return UNKNOWN_LEADER
        return state.leader

    async def send(self, broker_id: int, markers: list[MarkerEntry]) -> dict[tuple[int, TopicPartition], ErrorCode]:
        if broker_id == self.node_id:
            return await self._write_locally(markers)
        info = self.metadata.brokers.get(broker_id)
        if info is None:
            raise ConnectionError(f"broker {broker_id} is not registered")
        channel = self._channels.get(broker_id)
        if channel is None or (channel.host, channel.port) != (info.host, info.port):
            if channel is not None:
                channel.close()
            channel = self._channels[broker_id] = BrokerChannel(info.host, info.port, f"tidelog-txn-{self.node_id}",
                                                                self.channel_security)
        request_cls = request_type(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION)
        module = __import__(request_cls.__module__, fromlist=["x"])
        request = build(request_cls, markers=tuple(
            build(module.WritableTxnMarker, producer_id=entry.producer_id, producer_epoch=entry.producer_epoch,
                  transaction_result=entry.committed, coordinator_epoch=entry.coordinator_epoch,
                  topics=tuple(build(module.WritableTxnMarkerTopic, name=topic, partition_indexes=tuple(indexes))
                               for topic, indexes in _by_topic(entry.partitions).items()))
            for entry in markers))
        try:
            response = await channel.request(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION, request,
                                             self.request_timeout_s)
        except (OSError, EOFError, TimeoutError) as e:
            channel.close()
            del self._channels[broker_id]
            raise ConnectionError(f"WriteTxnMarkers to broker {broker_id}: {e!r}") from None
        results: dict[tuple[int, TopicPartition], ErrorCode] = {}
        for marker in response.markers:
            for topic in marker.topics:
                for p in topic.partitions:
                    results[(marker.producer_id, TopicPartition(topic.name, p.partition_index))] = ErrorCode(p.error_code)
        return results

    async def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def _by_topic(partitions) -> dict[str, list[int]]:
    topics: dict[str, list[int]] = {}
    for topic, index in partitions:
        topics.setdefault(topic, []).append(index)
    return topics
