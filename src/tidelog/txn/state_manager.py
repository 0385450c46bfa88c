"""The state of the transactional ids this broker coordinates (Kafka's TransactionStateManager).

Each ``__transaction_state`` partition this broker leads is loaded (``load``, from its records in
log order: the last record per id wins, a tombstone removes it) into a map transactional id ->
TransactionMetadata under the partition's coordinator epoch (its leader epoch). Requests for its
ids get COORDINATOR_LOAD_IN_PROGRESS while it loads (``state``), NOT_COORDINATOR for partitions
not led here. A state change is written through the injected ``append_state`` (durable in the
ISR, or a KafkaError mapped as Kafka maps it) and applied only if the id is still coordinated
here at the same epoch (``append_transit``). Ids idle in a final state for
transactional.id.expiration.ms are removed with tombstones (``remove_expired_transactional_ids``).
``describe``, ``list_transactions`` and ``timed_out_transactions`` read the map.
The transaction coordinator (coordinator.py) decides the changes; this module keeps the state.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Iterable
from typing import Any, Awaitable, Callable, NamedTuple

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.txn import log_records
from tidelog.txn.config import TransactionConfig
from tidelog.txn.log_records import TransactionLogError, TransactionLogValue
from tidelog.txn.state import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, TransactionMetadata, TransactionState, TxnTransit

__all__ = ["DescribedTransaction", "ListedTransactions", "StateAppender", "TransactionStateManager"]

logger = logging.getLogger(__name__)

S = TransactionState

# append_state(partition of __transaction_state, [(key, value or None)], timeout_ms): returns once
# the records are durable (in the ISR, acks=all); raises KafkaError with the append's error.
StateAppender = Callable[[int, list[tuple[bytes, bytes | None]], int], Awaitable[Any]]


class DescribedTransaction(NamedTuple):
    """A TransactionState of DescribeTransactions."""

    transactional_id: str
    error: ErrorCode
    state: str = ""
    txn_timeout_ms: int = 0
    txn_start_timestamp_ms: int = -1
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    topics: dict[str, list[int]] = {}


class ListedTransactions(NamedTuple):
    """A ListTransactions response: (transactional id, producer id, state name) each."""

    error: ErrorCode
    unknown_state_filters: list[str]
    transactions: list[tuple[str, int, str]]


class TxnPartition:
    """The ids of one ``__transaction_state`` partition this broker coordinates."""

    __slots__ = ("coordinator_epoch", "transactions")

    def __init__(self, coordinator_epoch: int, transactions: dict[str, TransactionMetadata]) -> None:
        self.coordinator_epoch = coordinator_epoch
        self.transactions = transactions


class TransactionStateManager:
    """See the module docstring."""

    def __init__(self, config: TransactionConfig, append_state: StateAppender, clock_ms: Callable[[], int]) -> None:
        self.config = config
        self._append_state = append_state
        self._clock_ms = clock_ms
        self.partitions: dict[int, TxnPartition] = {}
        self.loading: dict[int, int] = {}  # partition -> coordinator epoch being loaded
        self.last_load_ms: dict[int, int] = {}
        self.expired_ids = 0

    def clear(self) -> None:
        self.partitions.clear()
        self.loading.clear()

    # ---- lookups -------------------------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return log_records.partition_for(transactional_id, self.config.state_log_num_partitions)

    def state(self, transactional_id: str) -> tuple[int, TransactionMetadata | None]:
        """(coordinator epoch, metadata or None); raises KafkaError when this broker cannot answer."""
        partition = self.partition_for(transactional_id)
        if partition in self.loading:
            raise KafkaError(ErrorCode.coordinator_load_in_progress)
        entry = self.partitions.get(partition)
        if entry is None:
            raise KafkaError(ErrorCode.not_coordinator)
        return entry.coordinator_epoch, entry.transactions.get(transactional_id)

    def state_or_none(self, transactional_id: str) -> tuple[int, TransactionMetadata | None] | None:
        try:
            return self.state(transactional_id)
        except KafkaError:
            return None

    async def append_transit(self, transactional_id: str, coordinator_epoch: int, metadata: TransactionMetadata,
                      transit: TxnTransit, retry_on: ErrorCode | None = None) -> ErrorCode:
        """Write a transit ``metadata`` prepared and apply it (Kafka's appendTransactionToLog). With
        ``retry_on``, a failure with that error keeps the pending state for the caller's retry."""
        if not self.coordinates(transactional_id, coordinator_epoch, metadata):
            return ErrorCode.not_coordinator
        value = TransactionLogValue(transit.producer_id, transit.producer_epoch, transit.txn_timeout_ms, transit.state,
                                    transit.partitions, transit.txn_last_update_timestamp_ms,
                                    transit.txn_start_timestamp_ms)
        records = [(log_records.encode_key(transactional_id),
                    log_records.encode_value(value, self.config.state_log_value_version))]
        error = ErrorCode.none
        try:
            await self._append_state(self.partition_for(transactional_id), records, transit.txn_timeout_ms)
        except KafkaError as e:
            error = _coordinator_error(e.error_code)
            logger.debug("%s: writing %s failed with %s (%s)", transactional_id, transit.state.kafka_name,
                         e.error_code.name, e)
        if not self.coordinates(transactional_id, coordinator_epoch, metadata):
            # Moved while the record was written (resigned, reloaded): the new owner decides from the log.
            if error is ErrorCode.none:
                logger.info("%s: no longer coordinated at epoch %d after writing %s; not applied", transactional_id,
                            coordinator_epoch, transit.state.kafka_name)
                return ErrorCode.not_coordinator
            return error
        if error is ErrorCode.none:
            metadata.complete_transition(transit)
        elif error is not retry_on:
            metadata.pending_state = None
        return error

    def coordinates(self, transactional_id: str, coordinator_epoch: int, metadata: TransactionMetadata) -> bool:
        """Whether ``metadata`` is still this id's state here, at ``coordinator_epoch``."""
        entry = self.partitions.get(self.partition_for(transactional_id))
        return entry is not None and entry.coordinator_epoch == coordinator_epoch \
            and entry.transactions.get(transactional_id) is metadata

    def add(self, transactional_id: str, metadata: TransactionMetadata) -> None:
        """A new id (InitProducerId), in the partition ``state`` found coordinated here."""
        self.partitions[self.partition_for(transactional_id)].transactions[transactional_id] = metadata

    # ---- loading ---------------------------------------------------------------------------------

    async def load(self, partition: int, coordinator_epoch: int,
                   records: Iterable[tuple[bytes | None, bytes | None]]
                   | AsyncIterable[tuple[bytes | None, bytes | None]]) -> dict[str, TransactionMetadata] | None:
        """Load ``partition`` at ``coordinator_epoch`` from its ``records`` (key, value) in log order;
        the ids loaded, or None when the load was abandoned (another election or a resignation)."""
        self.partitions.pop(partition, None)
        self.loading[partition] = coordinator_epoch
        started_ms = self._clock_ms()
        loaded: dict[str, TransactionMetadata] = {}
        count = 0
        if isinstance(records, AsyncIterable):
            async for key, value in records:
                self._load_record(partition, loaded, key, value)
                count += 1
        else:
            for key, value in records:
                self._load_record(partition, loaded, key, value)
                count += 1
                if count % 1000 == 0:
                    await asyncio.sleep(0)
                    if self.loading.get(partition) != coordinator_epoch:
                        break
        if self.loading.get(partition) != coordinator_epoch:
            logger.info("%s-%d: load at epoch %d abandoned (leadership moved)", log_records.TOPIC, partition,
                        coordinator_epoch)
            return None
        del self.loading[partition]
        self.partitions[partition] = TxnPartition(coordinator_epoch, loaded)
        self.last_load_ms[partition] = self._clock_ms() - started_ms
        logger.log(logging.INFO if count else logging.DEBUG,
                   "%s-%d: coordinating %d transactional ids at epoch %d (%d records, %d ms)", log_records.TOPIC,
                    partition, len(loaded), coordinator_epoch, count, self.last_load_ms[partition])
        return loaded

    def _load_record(self, partition: int, loaded: dict[str, TransactionMetadata], key: bytes | None,
                     value: bytes | None) -> None:
        try:
            if key is None:
                raise TransactionLogError("record without a key")
            transactional_id = log_records.decode_key(key)
            if transactional_id is None:
                logger.warning("%s-%d: record with an unknown key version skipped", log_records.TOPIC, partition)
                return
            if value is None:
                loaded.pop(transactional_id, None)
                return
            decoded = log_records.decode_value(value)
        except TransactionLogError as e:
            logger.warning("%s-%d: unreadable record skipped: %s", log_records.TOPIC, partition, e)
            return
        loaded[transactional_id] = TransactionMetadata.from_transit(transactional_id, TxnTransit(
            decoded.producer_id, decoded.previous_producer_id, decoded.next_producer_id, decoded.producer_epoch,
            NO_PRODUCER_EPOCH, decoded.txn_timeout_ms, decoded.state, decoded.partitions,
            decoded.txn_start_timestamp_ms, decoded.txn_last_update_timestamp_ms, decoded.client_transaction_version))

    def unload(self, partition: int, coordinator_epoch: int | None = None) -> None:
        """This broker no longer leads ``partition`` (at ``coordinator_epoch``, when known)."""
        if partition in self.loading and (coordinator_epoch is None or self.loading[partition] == coordinator_epoch):
            del self.loading[partition]
        entry = self.partitions.get(partition)
        if entry is not None and (coordinator_epoch is None or entry.coordinator_epoch <= coordinator_epoch):
            del self.partitions[partition]
            logger.info("%s-%d: no longer coordinating its %d transactional ids", log_records.TOPIC, partition,
                        len(entry.transactions))

    # ---- expiry ----------------------------------------------------------------------------------

    def timed_out_transactions(self) -> list[tuple[str, int, int]]:
        """(transactional id, producer id, epoch) of the Ongoing transactions past their timeout."""
        now = self._clock_ms()
        return [(tid, m.producer_id, m.producer_epoch)
                for entry in self.partitions.values() for tid, m in entry.transactions.items()
                if not m.pending_transition_in_progress and m.state is S.ONGOING
                and m.txn_start_timestamp_ms + m.txn_timeout_ms < now]

    async def remove_expired_transactional_ids(self) -> None:
        """Tombstone the ids idle in Empty/CompleteCommit/CompleteAbort for transactional.id.expiration.ms."""
        now = self._clock_ms()
        deadline = now - self.config.transactional_id_expiration_ms
        for partition, entry in list(self.partitions.items()):
            expired = [(tid, m, m.prepare_dead()) for tid, m in entry.transactions.items()
                       if m.pending_state is None and m.state.expiration_allowed
                       and m.txn_last_update_timestamp_ms <= deadline]
            for start in range(0, len(expired), self.config.max_tombstones_per_append):
                chunk = expired[start: start + self.config.max_tombstones_per_append]
                await self._write_tombstones(partition, entry.coordinator_epoch, chunk)

    async def _write_tombstones(self, partition: int, coordinator_epoch: int,
                                expired: list[tuple[str, TransactionMetadata, TxnTransit]]) -> None:
        error = ErrorCode.none
        try:
            await self._append_state(partition, [(log_records.encode_key(tid), None) for tid, _, _ in expired],
                                     self.config.request_timeout_ms)
        except KafkaError as e:
            error = e.error_code
        entry = self.partitions.get(partition)
        removed = 0
        for transactional_id, metadata, dead in expired:
            if entry is not None and error is ErrorCode.none and entry.coordinator_epoch == coordinator_epoch \
                    and entry.transactions.get(transactional_id) is metadata and metadata.pending_state is S.DEAD \
                    and metadata.producer_epoch == dead.producer_epoch:
                del entry.transactions[transactional_id]
                removed += 1
            else:
                metadata.pending_state = None
        self.expired_ids += removed
        if removed:
            logger.info("%s-%d: %d transactional ids expired", log_records.TOPIC, partition, removed)
        if error is not ErrorCode.none:
            logger.warning("%s-%d: expiring %d transactional ids failed: %s", log_records.TOPIC, partition,
                           len(expired), error.name)

    # ---- admin -----------------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> DescribedTransaction:
        """One TransactionState of DescribeTransactions."""
        if not transactional_id:
            return DescribedTransaction(transactional_id, ErrorCode.invalid_request)
        try:
            _, metadata = self.state(transactional_id)
        except KafkaError as e:
            return DescribedTransaction(transactional_id, e.error_code)
        if metadata is None or metadata.state is S.DEAD:
            return DescribedTransaction(transactional_id, ErrorCode.transactional_id_not_found)
        topics: dict[str, list[int]] = {}
        for tp in sorted(metadata.partitions):
            topics.setdefault(tp.topic, []).append(tp.partition)
        return DescribedTransaction(transactional_id, ErrorCode.none, metadata.state.kafka_name, metadata.txn_timeout_ms,
                                    metadata.txn_start_timestamp_ms, metadata.producer_id, metadata.producer_epoch,
                                    topics)

    def list_transactions(self, state_filters: Iterable[str] = (), producer_id_filters: Iterable[int] = (),
                          duration_filter_ms: int = -1) -> ListedTransactions:
        """ListTransactions (v1 adds the duration filter: open for longer than that)."""
        if self.loading:
            return ListedTransactions(ErrorCode.coordinator_load_in_progress, [], [])
        state_names = list(state_filters)
        states = {TransactionState.from_name(name) for name in state_names} - {None}
        unknown = [name for name in state_names if TransactionState.from_name(name) is None]
        producer_ids = set(producer_id_filters)
        now = self._clock_ms()
        listed = []
        for entry in self.partitions.values():
            for tid, m in entry.transactions.items():
                if m.state is S.DEAD or (producer_ids and m.producer_id not in producer_ids) \
                        or (state_names and m.state not in states) \
                        or (duration_filter_ms >= 0 and now - m.txn_start_timestamp_ms <= duration_filter_ms):
                    continue
                listed.append((tid, m.producer_id, m.state.kafka_name))
        return ListedTransactions(ErrorCode.none, unknown, listed)

    def counts_by_state(self) -> dict[str, int]:
        by_state = {state.kafka_name: 0 for state in TransactionState}
        for entry in self.partitions.values():
            for m in entry.transactions.values():
                by_state[m.state.kafka_name] += 1
        return by_state


def _coordinator_error(error: ErrorCode) -> ErrorCode:
    """What a request answers when its ``__transaction_state`` append failed with ``error``."""
    if error in (ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
                 ErrorCode.not_enough_replicas_after_append, ErrorCode.request_timed_out):
        return ErrorCode.coordinator_not_available
    if error in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if error in (ErrorCode.message_too_large, ErrorCode.record_list_too_large):
        return ErrorCode.unknown_server_error
    return error
