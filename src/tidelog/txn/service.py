"""Transactions on this broker: the coordinator composed with the cluster (what the handlers get).

- the TransactionCoordinator (txn/coordinator.py) over ``__transaction_state``
  (txn/state_topic.py), the broker's producer-id allocator and a marker channel whose sender
  appends markers here and sends WriteTxnMarkers to the other leaders (txn/marker_writer.py);
- ``__transaction_state`` is created on first use, as Kafka does (FindCoordinator with key type
  1, or InitProducerId with a transactional id): ``transaction.state.log.num.partitions``
  partitions, ``transaction.state.log.replication.factor`` replicas in a cluster (one on a
  single node); until it exists and its leader has loaded, lookups answer
  COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS;
- leadership of a ``__transaction_state`` partition (``on_leadership``, from the
  ReplicaManager) loads it into the coordinator at the partition's leader epoch (the
  coordinator epoch); losing it unloads it;
- ``write_markers``: the WriteTxnMarkers handler's work (and the local sender's);
- ``verify``: a partition leader's question to the coordinator before a producer's first
  transactional batch there (KIP-890 part 1), in process or to another broker.

Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Awaitable, Callable

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import TRANSACTION_STATE
from tidelog.txn import log_records
from tidelog.txn.config import TransactionConfig
from tidelog.txn.coordinator import TransactionCoordinator
from tidelog.txn.marker_writer import ClusterMarkerSender, OffsetsMarkerListener, write_markers
from tidelog.txn.markers import MarkerEntry, TransactionMarkerChannel
from tidelog.txn.state import TopicPartition
from tidelog.txn.state_topic import TransactionStateTopic
from tidelog.txn.verification import CoordinatorVerifier

if TYPE_CHECKING:
    from tidelog.cluster.metadata import BrokerInfo, MetadataStore
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.metrics import BrokerMetrics

__all__ = ["TransactionService"]

logger = logging.getLogger(__name__)

# create_topic(name, partitions, replication_factor, configs): TopicAdmin.create_topic
TopicCreator = Callable[[str, int, int, dict[str, str]], Awaitable[object]]


class TransactionService:
    """See the module docstring."""

    def __init__(self, node_id: int, config, metadata: "MetadataStore", replicas: "ReplicaManager",
                 create_topic: TopicCreator, allocate_producer_id: Callable[[], Awaitable[int]],
                 replication_factor: int, on_offsets_marker: OffsetsMarkerListener | None = None,
                 metrics: "BrokerMetrics | None" = None) -> None:
        self.node_id = node_id
        self.metadata = metadata
        self.replicas = replicas
        self._create_topic = create_topic
        self.replication_factor = replication_factor
        self.min_isr = min(config["transaction.state.log.min.isr"], replication_factor)
        self.segment_bytes = config["transaction.state.log.segment.bytes"]
        self.request_timeout_s = config["offsets.commit.timeout.ms"] / 1000  # a marker write waits as an offsets write
        self.on_offsets_marker = on_offsets_marker
        self.topic = TransactionStateTopic(replicas, config["transaction.state.log.load.buffer.size"])
        self.sender = ClusterMarkerSender(node_id, metadata, self.write_markers)
        self.coordinator = TransactionCoordinator(TransactionConfig.from_broker_config(config), self._append_state,
                                                  allocate_producer_id, TransactionMarkerChannel(self.sender),
                                                  observer=self._observe if metrics is not None else None)
        self.metrics = metrics
        self.verification_enabled = config["transaction.partition.verification.enable"]
        self.verifier = CoordinatorVerifier(node_id, lambda: self.sender.channel_security, self.request_timeout_s)
        self._creating: asyncio.Task | None = None
        self._loads: dict[int, asyncio.Task] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.coordinator.start()
        for (topic, partition), replica in list(self.replicas.partitions.items()):
            if topic == TRANSACTION_STATE and replica.leading:
                self.on_leadership(topic, partition, True)

    async def stop(self) -> None:
        for task in [*self._loads.values(), *([self._creating] if self._creating else [])]:
            task.cancel()
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
        self._loads.clear()
        await self.coordinator.stop()
        await self.sender.close()
        self.verifier.close()

    # ---- the topic -----------------------------------------------------------------------------
    @property
    def partition_count(self) -> int:
        return self.coordinator.config.state_log_num_partitions

    def partition_for(self, transactional_id: str) -> int:
        return self.coordinator.partition_for(transactional_id)

    def coordinator_for(self, transactional_id: str) -> "tuple[ErrorCode, BrokerInfo | None]":
        """FindCoordinator key type 1: the broker leading the id's ``__transaction_state``
        partition; COORDINATOR_NOT_AVAILABLE while the topic is being created or has no leader."""
        if TRANSACTION_STATE not in self.metadata.topics:
            self.ensure_topic()
            return ErrorCode.coordinator_not_available, None
        state = self.metadata.partitions.get((TRANSACTION_STATE, self.partition_for(transactional_id)))
        leader = self.metadata.brokers.get(state.leader) if state is not None else None
        if leader is None:
            return ErrorCode.coordinator_not_available, None
        return ErrorCode.none, leader

    def ensure_topic(self) -> None:
        """Start creating ``__transaction_state`` unless it exists or is being created."""
        if TRANSACTION_STATE in self.metadata.topics or (self._creating is not None and not self._creating.done()):
            return
        self._creating = asyncio.get_running_loop().create_task(self._create())

    async def _create(self) -> None:
        live = len(self.metadata.brokers)
        if live < self.replication_factor:
            logger.warning("%s not created: %d live brokers, transaction.state.log.replication.factor is %d",
                           TRANSACTION_STATE, live, self.replication_factor)
            return
        try:
            await self._create_topic(TRANSACTION_STATE, self.partition_count, self.replication_factor,
                                     log_records.topic_configs(self.min_isr, self.segment_bytes))
        except KafkaError as e:
            if e.error_code != ErrorCode.topic_already_exists:
                logger.warning("creating %s failed: %s", TRANSACTION_STATE, e)
        except Exception:
            logger.exception("creating %s failed", TRANSACTION_STATE)

    # ---- leadership ----------------------------------------------------------------------------
    def on_leadership(self, topic: str, partition: int, leading: bool) -> None:
        """The ReplicaManager's callback: load or unload a ``__transaction_state`` partition."""
        if topic != TRANSACTION_STATE or not self.coordinator.active:
            return
        previous = self._loads.pop(partition, None)
        if previous is not None:
            previous.cancel()
        replica = self.replicas.get(topic, partition)
        if not leading or replica is None or replica.state is None:
            self.coordinator.on_resignation(partition)
            return
        epoch = replica.state.leader_epoch
        task = asyncio.get_running_loop().create_task(self._load(partition, epoch, replica))
        self._loads[partition] = task
        task.add_done_callback(lambda t: self._loads.pop(partition, None) if self._loads.get(partition) is t else None)

    async def _load(self, partition: int, epoch: int, replica) -> None:
        try:
            await self.coordinator.on_election(partition, epoch, self.topic.records(replica))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s-%d: loading the transaction state failed", TRANSACTION_STATE, partition)
            self.coordinator.on_resignation(partition, epoch)

    async def verify(self, transactional_id: str, producer_id: int, producer_epoch: int,
                     partitions: list[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """Whether each partition is in the producer's transaction (a leader asking before the
        producer's first transactional batch there, KIP-890 part 1): the coordinator is asked
        where it is, here in process or on another broker (txn/verification.py); NONE for all
        when ``transaction.partition.verification.enable`` is false. COORDINATOR_NOT_AVAILABLE /
        COORDINATOR_LOAD_IN_PROGRESS while there is no coordinator to ask."""
        if not self.verification_enabled:
            return dict.fromkeys(partitions, ErrorCode.none)
        if self.partition_for(transactional_id) in self.coordinator.state_manager.partitions:
            return self.coordinator.verify_partitions(transactional_id, producer_id, producer_epoch, partitions)
        error, coordinator = self.coordinator_for(transactional_id)
        if coordinator is None:
            return dict.fromkeys(partitions, error)
        if coordinator.node_id == self.node_id:  # elected here, still loading
            return dict.fromkeys(partitions, ErrorCode.coordinator_load_in_progress)
        return await self.verifier.verify(coordinator, transactional_id, producer_id, producer_epoch, partitions)

    # ---- markers -------------------------------------------------------------------------------
    async def write_markers(self, entries: list[MarkerEntry]) -> dict[tuple[int, TopicPartition], ErrorCode]:
        results = await write_markers(self.replicas, entries, self.request_timeout_s, self.on_offsets_marker)
        timeouts = sum(1 for error in results.values() if error == ErrorCode.request_timed_out)
        if timeouts:
            self._count_timeouts("transaction_marker", timeouts)
        return results

    async def _append_state(self, partition: int, records: list[tuple[bytes, bytes | None]], timeout_ms: int) -> None:
        """The coordinator's StateAppender: ``__transaction_state``'s append, its timeouts counted."""
        try:
            await self.topic.append(partition, records, timeout_ms)
        except KafkaError as e:
            if e.error_code == ErrorCode.request_timed_out:
                self._count_timeouts("transaction_state", 1)
            raise

    def _count_timeouts(self, writer: str, count: int) -> None:
        """tidelog_internal_write_timeouts_total{writer}: writes not durable and in the ISR in time."""
        if self.metrics is not None:
            self.metrics.internal_write_timeouts.labels(writer).inc(count)

    def _observe(self, event: str) -> None:
        """The coordinator's outcomes, counted: commit, abort, timeout."""
        if event == "timeout":
            self.metrics.transaction_timeouts.inc()
        else:
            self.metrics.transactions_completed.labels(event).inc()

    def stats(self) -> dict:
        stats = self.coordinator.stats()
        stats["markers_queued"] = self.coordinator.markers.queued
        stats["marker_retries"] = self.coordinator.markers.retries
        return stats
