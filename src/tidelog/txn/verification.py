"""Produce verification with a transaction coordinator on another broker (KIP-890 part 1).

Before a partition leader appends a producer's first transactional batch of a transaction, it
asks the producer's transaction coordinator whether the partition is in that transaction; a
batch the coordinator does not know of (a late retry after the transaction ended, a client bug)
would otherwise open a transaction in the partition that no marker ever closes (a "hanging
transaction": the last stable offset stops, read_committed consumers with it). Where the
coordinator is this broker, TransactionService asks it in process; ``CoordinatorVerifier`` asks
one on another broker with AddPartitionsToTxn v5 ``verify_only`` over a BrokerChannel, as Kafka's
AddPartitionsToTxnManager does (``transaction.partition.verification.enable``).

What a failed asking answers (the Produce maps it through ``verification_error``): a coordinator
that does not answer or has moved is NETWORK_EXCEPTION / NOT_COORDINATOR, both retriable by the
producer (NOT_ENOUGH_REPLICAS on the wire), never an append without the answer.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable, Iterable

from tidelog.cluster.broker_channel import BrokerChannel, ChannelSecurity
from tidelog.protocol.apis import build, request_type
from tidelog.protocol.errors import ErrorCode
from tidelog.txn.state import TopicPartition

if TYPE_CHECKING:
    from tidelog.cluster.metadata import BrokerInfo

__all__ = ["CoordinatorVerifier"]

logger = logging.getLogger(__name__)

ADD_PARTITIONS_TO_TXN = 24
VERIFY_VERSION = 5  # v4+: brokers' batched form with verify_only; v5 knows TRANSACTION_ABORTABLE


class CoordinatorVerifier:
    """AddPartitionsToTxn verify_only to the coordinator's broker, one channel per broker (one
    request at a time on each: only a producer's first batch of a transaction in a partition asks)."""

    def __init__(self, node_id: int, security: Callable[[], ChannelSecurity | None], timeout_s: float) -> None:
        self.node_id = node_id
        self._security = security
        self.timeout_s = timeout_s
        self._channels: dict[int, tuple[BrokerChannel, asyncio.Lock]] = {}
        self.requests = 0

    async def verify(self, coordinator: "BrokerInfo", transactional_id: str, producer_id: int, producer_epoch: int,
                     partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        partitions = list(partitions)
        request_cls = request_type(ADD_PARTITIONS_TO_TXN, VERIFY_VERSION)
        module = __import__(request_cls.__module__, fromlist=["x"])
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = build(request_cls, transactions=(build(
            module.AddPartitionsToTxnTransaction, transactional_id=transactional_id, producer_id=producer_id,
            producer_epoch=producer_epoch, verify_only=True,
            topics=tuple(build(module.AddPartitionsToTxnTopic, name=topic, partitions=tuple(indexes))
                         for topic, indexes in by_topic.items())),))
        channel, lock = self._channel(coordinator)
        self.requests += 1
        try:
            async with lock:
                response = await channel.request(ADD_PARTITIONS_TO_TXN, VERIFY_VERSION, request, self.timeout_s)
        except (OSError, EOFError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self._close(coordinator.node_id)
            logger.info("verifying the transaction of %s with broker %d failed: %r", transactional_id,
                        coordinator.node_id, e)
            return dict.fromkeys(partitions, ErrorCode.network_exception)
        if response.error_code != ErrorCode.none:
            return dict.fromkeys(partitions, ErrorCode(response.error_code))
        results = dict.fromkeys(partitions, ErrorCode.unknown_server_error)  # a partition the answer left out
        for transaction in response.results_by_transaction:
            for topic in transaction.topic_results:
                for p in topic.results_by_partition:
                    results[TopicPartition(topic.name, p.partition_index)] = ErrorCode(p.partition_error_code)
        return results

    def _channel(self, broker: "BrokerInfo") -> tuple[BrokerChannel, asyncio.Lock]:
        found = self._channels.get(broker.node_id)
        if found is not None and (found[0].host, found[0].port) == (broker.host, broker.port):
            return found
        self._close(broker.node_id)
        found = self._channels[broker.node_id] = (
            BrokerChannel(broker.host, broker.port, f"tidelog-txn-verify-{self.node_id}", self._security()),
            asyncio.Lock())
        return found

    def _close(self, node_id: int) -> None:
        found = self._channels.pop(node_id, None)
        if found is not None:
            found[0].close()

    def close(self) -> None:
        for node_id in list(self._channels):
            self._close(node_id)
