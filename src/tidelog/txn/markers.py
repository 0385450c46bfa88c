"""Getting a transaction's COMMIT/ABORT markers written by every partition leader, whatever it takes.

Kafka's TransactionMarkerChannelManager and its completion handler, on asyncio. ``write`` takes
one transaction's markers (producer id and epoch, coordinator epoch, result, partitions) and
returns once every partition has its marker, or a partition leader refused it for good:

- partitions are grouped by their leader (``MarkerSender.leader_of``) and queued per broker; one
  drain task per broker sends everything queued for it as one WriteTxnMarkers request (the
  local broker is a broker like any other: the sender appends locally), so concurrent
  transactions share requests;
- NONE: the partition is done (``on_written`` is told, the coordinator drops it from the
  transaction); UNSUPPORTED_FOR_MESSAGE_FORMAT / UNSUPPORTED_VERSION: done as well, the
  producer could not have written there either;
- a partition without a leader in the metadata no longer exists: done, skipped;
- NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS(_AFTER_APPEND),
  REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, an unknown leader or an unreachable broker: retried,
  with the leader looked up again, after a back-off doubling from ``retry_backoff_ms`` up to
  ``max_retry_backoff_ms``; errors Kafka treats as fatal are retried too, logged at ERROR, since
  a transaction without its markers would hold the LSO forever. Each attempt is bounded (the
  leader's write answers REQUEST_TIMED_OUT within ``offsets.commit.timeout.ms``, its flush
  included: txn/marker_writer.py; a request to another broker times out), so a stuck disk costs
  retries, never a stuck channel. A broker's failures are logged once an episode (until a marker
  is written there again, then INFO after a WARNING): a leader that moved at INFO, anything else
  at WARNING; the retries at DEBUG;
- INVALID_PRODUCER_EPOCH / TRANSACTION_COORDINATOR_FENCED: a newer producer or coordinator has
  taken over; ``write`` returns False and the transaction is left to it.

A ``write`` runs until it is done or cancelled: the coordinator cancels it when it stops
coordinating the transaction (resignation, a new coordinator epoch). Bounded: one queue entry
per transaction and broker, and a transaction has a bounded number of partitions.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, NamedTuple, Protocol

from tidelog.protocol.errors import ErrorCode
from tidelog.txn.state import TopicPartition

__all__ = ["MarkerEntry", "MarkerSender", "TransactionMarkerChannel", "NO_LEADER", "UNKNOWN_LEADER"]

logger = logging.getLogger(__name__)

NO_LEADER = None  # leader_of: the partition does not exist (deleted)
UNKNOWN_LEADER = -1  # leader_of: it exists, its leader is not known yet

_DONE = {ErrorCode.none, ErrorCode.unsupported_for_message_format, ErrorCode.unsupported_version}
# The leader moved (or the metadata here is behind): a failover's ordinary course, logged at INFO.
_MOVED = {ErrorCode.unknown_topic_or_partition, ErrorCode.not_leader_or_follower}
_FENCED = {ErrorCode.invalid_producer_epoch, ErrorCode.transaction_coordinator_fenced}
_FATAL_IN_KAFKA = {ErrorCode.corrupt_message, ErrorCode.message_too_large, ErrorCode.record_list_too_large,
                   ErrorCode.invalid_required_acks}


class MarkerEntry(NamedTuple):
    """One transaction's markers for some partitions (a WritableTxnMarker of WriteTxnMarkers)."""

    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    committed: bool
    partitions: tuple[TopicPartition, ...]


class MarkerSender(Protocol):
    """What the channel needs from the cluster (the wiring implements it)."""

    def leader_of(self, partition: TopicPartition) -> int | None:
        """The broker leading ``partition``: NO_LEADER (None) if it does not exist, UNKNOWN_LEADER
        (-1) if it has no leader now."""

    async def send(self, broker_id: int, markers: list[MarkerEntry]) -> dict[tuple[int, TopicPartition], ErrorCode]:
        """Have ``broker_id`` write ``markers`` (WriteTxnMarkers; appended directly when it is this
        broker); the error of each (producer id, partition). Raises OSError (ConnectionError) if
        the broker cannot be reached."""


class _Queued(NamedTuple):
    entry: MarkerEntry
    future: asyncio.Future


class TransactionMarkerChannel:
    """See the module docstring."""

    def __init__(self, sender: MarkerSender, retry_backoff_ms: int = 50, max_retry_backoff_ms: int = 1000) -> None:
        self.sender = sender
        self.retry_backoff_ms = retry_backoff_ms
        self.max_retry_backoff_ms = max_retry_backoff_ms
        self._queues: dict[int, list[_Queued]] = {}
        self._drains: dict[int, asyncio.Task] = {}
        self.requests_sent = 0
        self.retries = 0
        # broker -> [markers failed there since its last success (an episode), whether it was WARNED]
        self._failing: dict[int, list] = {}

    @property
    def queued(self) -> int:
        """Marker entries waiting for a request (a gauge)."""
        return sum(len(q) for q in self._queues.values())

    async def write(self, entry: MarkerEntry, on_written: Callable[[TopicPartition], None] | None = None) -> bool:
        """Write ``entry``'s markers until each partition is done; False if fenced (see the module docstring)."""
        remaining = list(dict.fromkeys(entry.partitions))
        backoff_ms = self.retry_backoff_ms
        while remaining:
            by_broker: dict[int, list[TopicPartition]] = {}
            retry: list[TopicPartition] = []
            for tp in remaining:
                leader = self.sender.leader_of(tp)
                if leader is NO_LEADER:
                    logger.info("markers for producer %d: %s-%d no longer exists, skipped", entry.producer_id, *tp)
                    self._written(on_written, tp)
                elif leader == UNKNOWN_LEADER:
                    retry.append(tp)
                else:
                    by_broker.setdefault(leader, []).append(tp)
            results = await asyncio.gather(*(self._send(broker, entry._replace(partitions=tuple(tps)))
                                             for broker, tps in by_broker.items()))
            for (broker, tps), errors in zip(by_broker.items(), results):
                if errors is None:  # unreachable
                    self._failed(broker, entry, tps[0], None)
                    retry.extend(tps)
                    continue
                for tp in tps:
                    error = errors.get((entry.producer_id, tp), ErrorCode.unknown_server_error)
                    if error in _DONE:
                        self._succeeded(broker)
                        self._written(on_written, tp)
                    elif error in _FENCED:
                        logger.info("markers for producer %d epoch %d: %s-%d answered %s; a newer producer or "
                                    "coordinator owns the transaction, no more markers sent", entry.producer_id,
                                    entry.producer_epoch, tp.topic, tp.partition, error.name)
                        return False
                    else:
                        if error in _FATAL_IN_KAFKA:
                            logger.error("marker for producer %d on %s-%d failed on broker %d with %s; retrying",
                                         entry.producer_id, tp.topic, tp.partition, broker, error.name)
                        self._failed(broker, entry, tp, error)
                        retry.append(tp)
            remaining = retry
            if remaining:
                self.retries += 1
                await asyncio.sleep(backoff_ms / 1000)
                backoff_ms = min(backoff_ms * 2, self.max_retry_backoff_ms)
        return True

    def _failed(self, broker: int, entry: MarkerEntry, tp: TopicPartition, error: ErrorCode | None) -> None:
        """A marker not written on ``broker`` (``error``; None: unreachable), to be retried. Logged
        once an episode (from the first failure after a success there), whatever the number of
        retries and transactions: a leader that moved at INFO, anything else (a timeout, a storage
        error, a short ISR, an unreachable broker) at WARNING, once; the rest at DEBUG."""
        episode = self._failing.setdefault(broker, [0, False])
        episode[0] += 1
        why = error.name.upper() if error is not None else "unreachable"
        if not episode[1] and error not in _MOVED:
            episode[1] = True
            logger.warning("transaction markers are not being written on broker %d: %s (first: producer %d on %s-%d); "
                           "retrying with back-off up to %d ms until they are", broker, why, entry.producer_id,
                           tp.topic, tp.partition, self.max_retry_backoff_ms)
        elif episode[0] == 1:
            logger.info("marker for producer %d on %s-%d failed on broker %d with %s; retrying", entry.producer_id,
                        tp.topic, tp.partition, broker, why)
        else:
            logger.debug("marker for producer %d on %s-%d failed on broker %d with %s; retrying", entry.producer_id,
                         tp.topic, tp.partition, broker, why)

    def _succeeded(self, broker: int) -> None:
        episode = self._failing.pop(broker, None)
        if episode is not None:
            (logger.info if episode[1] else logger.debug)(
                "transaction markers written again on broker %d after %d failed attempts", broker, episode[0])

    @staticmethod
    def _written(on_written: Callable[[TopicPartition], None] | None, tp: TopicPartition) -> None:
        if on_written is not None:
            on_written(tp)

    def _send(self, broker_id: int, entry: MarkerEntry) -> Awaitable[dict | None]:
        future = asyncio.get_running_loop().create_future()
        self._queues.setdefault(broker_id, []).append(_Queued(entry, future))
        drain = self._drains.get(broker_id)
        if drain is None or drain.done():
            self._drains[broker_id] = asyncio.get_running_loop().create_task(self._drain(broker_id))
        return future

    async def _drain(self, broker_id: int) -> None:
        while self._queues.get(broker_id):
            batch = [q for q in self._queues.pop(broker_id) if not q.future.done()]
            if not batch:
                continue
            try:
                self.requests_sent += 1
                errors = await self.sender.send(broker_id, [q.entry for q in batch])
            except OSError as e:  # the WARNING is the episode's (_failed)
                logger.debug("cannot reach broker %d to write %d transaction markers: %s", broker_id, len(batch), e)
                errors = None
            except asyncio.CancelledError:
                for q in batch:
                    if not q.future.done():
                        q.future.cancel()
                raise
            except Exception as e:  # a bug in the sender must not strand the transactions
                logger.exception("writing transaction markers on broker %d failed: %s", broker_id, e)
                errors = None
            for q in batch:
                if not q.future.done():
                    q.future.set_result(errors)

    async def close(self) -> None:
        for task in self._drains.values():
            task.cancel()
        for task in self._drains.values():
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._drains.clear()
        for queue in self._queues.values():
            for q in queue:
                q.future.cancel()
        self._queues.clear()
