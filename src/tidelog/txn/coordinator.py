"""The transaction coordinator: Kafka's TransactionCoordinator and TransactionStateManager on asyncio.

Each ``__transaction_state`` partition this broker leads makes it the coordinator of the
transactional ids that hash to it (``partition_for``, FindCoordinator key type 1). Requests
(handled as Kafka 4.x does for the request versions below KIP-890's "transaction version 2",
the ones the Python clients send):

- ``init_producer_id``: a new id gets a producer id at epoch 0; a known one the next epoch (an
  Ongoing transaction is first fenced and aborted, and the client told CONCURRENT_TRANSACTIONS
  so it retries); with producer id and epoch (KIP-360) a retry gets its epoch back, a zombie
  PRODUCER_FENCED; exhausted epochs move to a new producer id. INVALID_TRANSACTION_TIMEOUT
  unless 0 < timeout <= transaction.max.timeout.ms.
- ``add_partitions`` (AddPartitionsToTxn v0-3) and ``add_offsets`` (AddOffsetsToTxn: the
  group's ``__consumer_offsets`` partition joins the transaction): Ongoing.
- ``end_txn`` (EndTxn v0-4): PrepareCommit/PrepareAbort is written and answered, then the
  markers go out (txn/markers.py) and, once every leader wrote its marker, CompleteCommit /
  CompleteAbort is written. A retried EndTxn of a completed transaction is answered NONE.
- ``describe`` (DescribeTransactions) and ``list_transactions`` (ListTransactions v0-1 filters).
- ``verify_partitions`` (AddPartitionsToTxn v4 verify_only, KIP-890 part 1): whether partitions
  are in the transaction, asked by a partition leader before a producer's first transactional
  batch there (``verification_error`` maps the answer for the Produce response).

Every state change is prepared (the id's ``pending_state`` blocks others: CONCURRENT_TRANSACTIONS),
appended to the id's partition through the injected ``append_state`` (durable in the ISR, or a
KafkaError mapped as Kafka maps it: NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, ...), and only
then applied. A state appended under an old coordinator epoch is never applied.

Leadership: ``on_election(partition, coordinator_epoch, records)`` loads the partition's records
(requests for its ids get COORDINATOR_LOAD_IN_PROGRESS meanwhile) and resumes every transaction
left in PrepareCommit/PrepareAbort by sending its markers again; ``on_resignation`` drops the
partition and cancels its marker writes. Timers (``start``): transactions Ongoing for longer
than their timeout are fenced and aborted every
transaction.abort.timed.out.transaction.cleanup.interval.ms; ids idle in a final state for
transactional.id.expiration.ms get a tombstone every
transaction.remove.expired.transaction.cleanup.interval.ms.

Collaborators: ``append_state(partition, records, timeout_ms)``, ``allocate_producer_id()``, a
TransactionMarkerChannel and ``clock_ms``. Nothing here imports the server, handlers or storage.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, NamedTuple

from tidelog.clock import wall_clock_ms
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import CONSUMER_OFFSETS
from tidelog.txn import log_records
from tidelog.txn.log_records import TransactionLogError, TransactionLogValue
from tidelog.txn.markers import MarkerEntry, TransactionMarkerChannel
from tidelog.txn.state import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    IllegalTransition,
    TopicPartition,
    TransactionMetadata,
    TransactionState,
    TxnTransit,
    is_epoch_exhausted,
)

__all__ = [
    "DescribedTransaction",
    "InitProducerIdResult",
    "ListedTransactions",
    "StateAppender",
    "TransactionConfig",
    "TransactionCoordinator",
    "client_error",
    "verification_error",
]

logger = logging.getLogger(__name__)

S = TransactionState

# append_state(partition of __transaction_state, [(key, value or None)], timeout_ms): returns once
# the records are durable (in the ISR, acks=all); raises KafkaError with the append's error.
StateAppender = Callable[[int, list[tuple[bytes, bytes | None]], int], Awaitable[Any]]
ProducerIdAllocator = Callable[[], Awaitable[int]]

# The first request version that understands PRODUCER_FENCED; older ones get INVALID_PRODUCER_EPOCH.
_PRODUCER_FENCED_SINCE = {22: 4, 24: 2, 25: 2, 26: 2}


def client_error(error: ErrorCode, api_key: int, api_version: int) -> ErrorCode:
    """The error a response of this API version carries (Kafka's KafkaApis mapping for old clients)."""
    if error is ErrorCode.producer_fenced and api_version < _PRODUCER_FENCED_SINCE.get(api_key, 0):
        return ErrorCode.invalid_producer_epoch
    return error


def verification_error(error: ErrorCode, produce_version: int) -> ErrorCode:
    """What a Produce answers for a partition whose transaction verification failed with ``error``
    (Kafka's ReplicaManager and AddPartitionsToTxnManager mapping; v11+ clients know the new codes)."""
    if error is ErrorCode.producer_fenced:
        return ErrorCode.invalid_producer_epoch
    if error is ErrorCode.transaction_abortable and produce_version <= 10:
        return ErrorCode.invalid_txn_state
    if error in (ErrorCode.concurrent_transactions, ErrorCode.network_exception, ErrorCode.coordinator_load_in_progress,
                 ErrorCode.coordinator_not_available, ErrorCode.not_coordinator):
        return ErrorCode.not_enough_replicas  # retried by every client without a metadata refresh
    return error


@dataclass(frozen=True)
class TransactionConfig:
    """The coordinator's settings, Kafka's names and defaults."""

    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 604_800_000
    state_log_num_partitions: int = 50
    abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    request_timeout_ms: int = 30_000  # tombstone appends
    state_log_value_version: int = 0  # 1 once transaction.version 1 is served
    max_tombstones_per_append: int = 1000

    @classmethod
    def from_broker_config(cls, config) -> "TransactionConfig":
        """From tidelog.config.BrokerConfig (anything with ``[name]``)."""
        return cls(
            transaction_max_timeout_ms=config["transaction.max.timeout.ms"],
            transactional_id_expiration_ms=config["transactional.id.expiration.ms"],
            state_log_num_partitions=config["transaction.state.log.num.partitions"],
            abort_timed_out_transaction_cleanup_interval_ms=config["transaction.abort.timed.out.transaction.cleanup.interval.ms"],
            remove_expired_transaction_cleanup_interval_ms=config["transaction.remove.expired.transaction.cleanup.interval.ms"],
        )


class InitProducerIdResult(NamedTuple):
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


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


class _Partition:
    """The ids of one ``__transaction_state`` partition this broker coordinates."""

    __slots__ = ("coordinator_epoch", "transactions")

    def __init__(self, coordinator_epoch: int, transactions: dict[str, TransactionMetadata]) -> None:
        self.coordinator_epoch = coordinator_epoch
        self.transactions = transactions


class TransactionCoordinator:
    """See the module docstring."""

    def __init__(self, config: TransactionConfig, append_state: StateAppender, allocate_producer_id: ProducerIdAllocator,
                 markers: TransactionMarkerChannel, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.config = config
        self._append_state = append_state
        self._allocate_producer_id = allocate_producer_id
        self.markers = markers
        self._clock_ms = clock_ms
        self.active = False
        self._partitions: dict[int, _Partition] = {}
        self._loading: dict[int, int] = {}  # partition -> coordinator epoch being loaded
        self._marker_tasks: dict[str, asyncio.Task] = {}  # transactional id -> its markers in flight
        self._background: set[asyncio.Task] = set()
        self._timers: list[asyncio.Task] = []
        self.last_load_ms: dict[int, int] = {}
        self.timed_out_aborts = 0
        self.expired_ids = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timeout-abort and expiration timers and begin answering requests."""
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.create_task(self._every(self.config.abort_timed_out_transaction_cleanup_interval_ms,
                                         self.abort_timed_out_transactions)),
            loop.create_task(self._every(self.config.remove_expired_transaction_cleanup_interval_ms,
                                         self.remove_expired_transactional_ids)),
        ]
        self.active = True

    async def stop(self) -> None:
        self.active = False
        tasks = [*self._timers, *self._marker_tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        self._marker_tasks.clear()
        self._background.clear()
        await self.markers.close()
        self._partitions.clear()
        self._loading.clear()

    async def _every(self, interval_ms: int, action: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                await action()
            except Exception:
                logger.exception("transaction coordinator: %s failed", action.__name__)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ---- lookups -------------------------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return log_records.partition_for(transactional_id, self.config.state_log_num_partitions)

    def valid_timeout(self, txn_timeout_ms: int) -> bool:
        return 0 < txn_timeout_ms <= self.config.transaction_max_timeout_ms

    def _state(self, transactional_id: str) -> tuple[int, TransactionMetadata | None]:
        """(coordinator epoch, metadata or None); raises KafkaError when this broker cannot answer."""
        partition = self.partition_for(transactional_id)
        if partition in self._loading:
            raise KafkaError(ErrorCode.coordinator_load_in_progress)
        entry = self._partitions.get(partition)
        if entry is None:
            raise KafkaError(ErrorCode.not_coordinator)
        return entry.coordinator_epoch, entry.transactions.get(transactional_id)

    def _state_or_none(self, transactional_id: str) -> tuple[int, TransactionMetadata | None] | None:
        try:
            return self._state(transactional_id)
        except KafkaError:
            return None

    # ---- appending a transit ---------------------------------------------------------------------

    async def _append(self, transactional_id: str, coordinator_epoch: int, metadata: TransactionMetadata,
                      transit: TxnTransit, retry_on: ErrorCode | None = None) -> ErrorCode:
        """Write a transit ``metadata`` prepared and apply it (Kafka's appendTransactionToLog). With
        ``retry_on``, a failure with that error keeps the pending state for the caller's retry."""
        if not self._coordinates(transactional_id, coordinator_epoch, metadata):
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
        if not self._coordinates(transactional_id, coordinator_epoch, metadata):
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

    def _coordinates(self, transactional_id: str, coordinator_epoch: int, metadata: TransactionMetadata) -> bool:
        """Whether ``metadata`` is still this id's state here, at ``coordinator_epoch``."""
        entry = self._partitions.get(self.partition_for(transactional_id))
        return entry is not None and entry.coordinator_epoch == coordinator_epoch \
            and entry.transactions.get(transactional_id) is metadata

    # ---- InitProducerId ------------------------------------------------------------------------

    async def init_producer_id(self, transactional_id: str | None, txn_timeout_ms: int,
                               producer_id: int = NO_PRODUCER_ID,
                               producer_epoch: int = NO_PRODUCER_EPOCH) -> InitProducerIdResult:
        """InitProducerId (key 22). ``producer_id``/``producer_epoch`` are the v3+ fields (KIP-360)."""
        if (producer_id == NO_PRODUCER_ID) != (producer_epoch == NO_PRODUCER_EPOCH):
            return InitProducerIdResult(ErrorCode.invalid_request)
        expected = None if producer_id == NO_PRODUCER_ID else (producer_id, producer_epoch)
        if transactional_id is None:
            try:
                return InitProducerIdResult(ErrorCode.none, await self._allocate_producer_id(), 0)
            except KafkaError as e:
                return InitProducerIdResult(e.error_code)
        if not transactional_id:
            return InitProducerIdResult(ErrorCode.invalid_request)
        if not self.valid_timeout(txn_timeout_ms):
            return InitProducerIdResult(ErrorCode.invalid_transaction_timeout)
        new_producer_id: int | None = None
        for _ in range(3):  # an allocation is awaited outside the decision; decide again after it
            try:
                coordinator_epoch, metadata = self._state(transactional_id)
                if metadata is None:
                    if new_producer_id is None:
                        new_producer_id = await self._allocate_producer_id()
                        continue
                    metadata = TransactionMetadata(transactional_id, new_producer_id, NO_PRODUCER_EPOCH, txn_timeout_ms,
                                                   S.EMPTY, txn_last_update_timestamp_ms=self._clock_ms())
                    self._partitions[self.partition_for(transactional_id)].transactions[transactional_id] = metadata
                    new_producer_id = None
                decision = self._prepare_init(metadata, txn_timeout_ms, expected, new_producer_id)
            except KafkaError as e:
                return InitProducerIdResult(e.error_code)
            if decision is None:
                new_producer_id = await self._allocate_producer_id()
                continue
            break
        else:
            return InitProducerIdResult(ErrorCode.concurrent_transactions)
        if decision.state is S.PREPARE_EPOCH_FENCE:
            error = await self._end_transaction(transactional_id, decision.producer_id, decision.producer_epoch,
                                                committed=False, from_client=False)
            return InitProducerIdResult(ErrorCode.concurrent_transactions if error is ErrorCode.none else error)
        error = await self._append(transactional_id, coordinator_epoch, metadata, decision)
        if error is not ErrorCode.none:
            logger.info("%s: InitProducerId answered %s", transactional_id, error.name)
            return InitProducerIdResult(error)
        logger.info("%s: producer id %d epoch %d (%s-%d)", transactional_id, decision.producer_id,
                    decision.producer_epoch, log_records.TOPIC, self.partition_for(transactional_id))
        return InitProducerIdResult(ErrorCode.none, decision.producer_id, decision.producer_epoch)

    def _prepare_init(self, metadata: TransactionMetadata, txn_timeout_ms: int, expected: tuple[int, int] | None,
                      new_producer_id: int | None) -> TxnTransit | None:
        """Kafka's prepareInitProducerIdTransit; None when a new producer id is needed first."""
        if metadata.pending_transition_in_progress:
            raise KafkaError(ErrorCode.concurrent_transactions)
        if expected is not None and not (
                metadata.producer_epoch == NO_PRODUCER_EPOCH or expected[0] == metadata.producer_id
                or (expected[0] == metadata.previous_producer_id and is_epoch_exhausted(expected[1]))):
            raise KafkaError(ErrorCode.producer_fenced)
        if metadata.state in (S.PREPARE_ABORT, S.PREPARE_COMMIT):
            raise KafkaError(ErrorCode.concurrent_transactions)
        if metadata.state in (S.COMPLETE_ABORT, S.COMPLETE_COMMIT, S.EMPTY):
            if metadata.epoch_exhausted and (expected is None or expected[1] == metadata.producer_epoch):
                if new_producer_id is None:
                    return None
                return metadata.prepare_producer_id_rotation(new_producer_id, txn_timeout_ms, self._clock_ms(),
                                                             record_last_epoch=expected is not None)
            return metadata.prepare_increment_producer_epoch(txn_timeout_ms, None if expected is None else expected[1],
                                                             self._clock_ms())
        if metadata.state is S.ONGOING:
            # Fence the producer and abort its transaction; the client retries after CONCURRENT_TRANSACTIONS
            # and then gets the epoch bumped once more (a new producer id if that exhausts the epochs).
            return metadata.prepare_fence_producer_epoch()
        raise IllegalTransition(f"{metadata.transactional_id}: found in state {metadata.state.kafka_name}")

    # ---- AddPartitionsToTxn / AddOffsetsToTxn ------------------------------------------------------

    async def add_partitions(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                             partitions: Iterable[TopicPartition]) -> ErrorCode:
        """AddPartitionsToTxn v0-3 for partitions that exist and the client may write (the handler
        answers the others itself, with OPERATION_NOT_ATTEMPTED for these)."""
        if not transactional_id:
            return ErrorCode.invalid_request
        partitions = frozenset(TopicPartition(*tp) for tp in partitions)
        try:
            coordinator_epoch, metadata = self._state(transactional_id)
            if metadata is None or metadata.producer_id != producer_id:
                return ErrorCode.invalid_producer_id_mapping
            if metadata.producer_epoch != producer_epoch:
                return ErrorCode.producer_fenced
            if metadata.pending_transition_in_progress or metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                return ErrorCode.concurrent_transactions
            if metadata.state is S.ONGOING and partitions <= metadata.partitions:
                return ErrorCode.none
            transit = metadata.prepare_add_partitions(partitions, self._clock_ms())
        except KafkaError as e:
            return e.error_code
        return await self._append(transactional_id, coordinator_epoch, metadata, transit)

    async def add_offsets(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                          offsets_partition: int) -> ErrorCode:
        """AddOffsetsToTxn: the group's ``__consumer_offsets`` partition (the group coordinator's
        partition_for(group_id)) joins the transaction, so its offsets get a marker too."""
        return await self.add_partitions(transactional_id, producer_id, producer_epoch,
                                         [TopicPartition(CONSUMER_OFFSETS, offsets_partition)])

    def verify_partitions(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                          partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """AddPartitionsToTxn v4+ with verify_only (KIP-890 part 1, a leader asking before it appends
        the first transactional batch of a producer): NONE for a partition in the transaction,
        TRANSACTION_ABORTABLE for one that is not; one error for all when the transaction does not
        match. Changes nothing."""
        partitions = [TopicPartition(*tp) for tp in partitions]
        if not transactional_id:
            return dict.fromkeys(partitions, ErrorCode.invalid_request)
        try:
            _, metadata = self._state(transactional_id)
        except KafkaError as e:
            return dict.fromkeys(partitions, e.error_code)
        if metadata is None or metadata.producer_id != producer_id:
            error = ErrorCode.invalid_producer_id_mapping
        elif metadata.producer_epoch != producer_epoch:
            error = ErrorCode.producer_fenced
        elif metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            error = ErrorCode.concurrent_transactions
        else:
            return {tp: ErrorCode.none if tp in metadata.partitions else ErrorCode.transaction_abortable
                    for tp in partitions}
        return dict.fromkeys(partitions, error)

    # ---- EndTxn ------------------------------------------------------------------------------

    async def end_txn(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                      committed: bool) -> ErrorCode:
        """EndTxn v0-4 (the response's producer id and epoch stay -1 below v5)."""
        return await self._end_transaction(transactional_id, producer_id, producer_epoch, committed, from_client=True)

    async def _end_transaction(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                               committed: bool, from_client: bool) -> ErrorCode:
        """Kafka's endTransactionWithTV1: also the abort of a fence (InitProducerId, timeout)."""
        if not transactional_id:
            return ErrorCode.invalid_request
        result = "commit" if committed else "abort"
        is_epoch_fence = False
        try:
            coordinator_epoch, metadata = self._state(transactional_id)
            if metadata is None or metadata.producer_id != producer_id:
                return ErrorCode.invalid_producer_id_mapping
            if (from_client and producer_epoch != metadata.producer_epoch) or producer_epoch < metadata.producer_epoch:
                return ErrorCode.producer_fenced
            if metadata.pending_transition_in_progress and metadata.pending_state is not S.PREPARE_EPOCH_FENCE:
                return ErrorCode.concurrent_transactions
            state = metadata.state
            if state is S.ONGOING:
                if not committed and metadata.pending_state is S.PREPARE_EPOCH_FENCE:
                    is_epoch_fence = True
                    metadata.fence_in_place(producer_epoch)
                transit = metadata.prepare_abort_or_commit(S.PREPARE_COMMIT if committed else S.PREPARE_ABORT,
                                                           self._clock_ms())
            elif (state is S.COMPLETE_COMMIT and committed) or (state is S.COMPLETE_ABORT and not committed):
                return ErrorCode.none  # a retry of an EndTxn that went through
            elif (state is S.PREPARE_COMMIT and committed) or (state is S.PREPARE_ABORT and not committed):
                return ErrorCode.concurrent_transactions
            elif state in (S.DEAD, S.PREPARE_EPOCH_FENCE):
                raise IllegalTransition(f"{transactional_id}: found in state {state.kafka_name}")
            else:
                logger.warning("%s: EndTxn(%s) in state %s: INVALID_TXN_STATE", transactional_id, result,
                               state.kafka_name)
                return ErrorCode.invalid_txn_state
        except KafkaError as e:
            return e.error_code
        error = await self._append(transactional_id, coordinator_epoch, metadata, transit)
        if error is not ErrorCode.none:
            if is_epoch_fence and self._coordinates(transactional_id, coordinator_epoch, metadata):
                metadata.has_failed_epoch_fence = True
                logger.warning("%s: the epoch fence (epoch %d) was not written (%s); it is not told to any client",
                               transactional_id, producer_epoch, error.name)
            logger.info("%s: EndTxn(%s) answered %s", transactional_id, result, error.name)
            return error
        # Durable: check the state again, prepare the completion and answer; the markers follow.
        try:
            epoch_now, metadata = self._state(transactional_id)
        except KafkaError as e:
            return e.error_code
        if metadata is None or epoch_now != coordinator_epoch:
            return ErrorCode.not_coordinator
        if metadata.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if metadata.producer_epoch != producer_epoch:
            return ErrorCode.producer_fenced
        if metadata.pending_transition_in_progress:
            return ErrorCode.concurrent_transactions
        if metadata.state is not (S.PREPARE_COMMIT if committed else S.PREPARE_ABORT):
            logger.warning("%s: EndTxn(%s) written but the state is %s: INVALID_TXN_STATE", transactional_id, result,
                           metadata.state.kafka_name)
            return ErrorCode.invalid_txn_state
        complete = metadata.prepare_complete(self._clock_ms())
        self._send_markers(transactional_id, coordinator_epoch, committed, metadata, complete)
        return ErrorCode.none

    # ---- markers and completion ----------------------------------------------------------------

    def _send_markers(self, transactional_id: str, coordinator_epoch: int, committed: bool,
                      metadata: TransactionMetadata, complete: TxnTransit) -> None:
        previous = self._marker_tasks.pop(transactional_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(
            self._complete_transaction(transactional_id, coordinator_epoch, committed, metadata, complete))
        self._marker_tasks[transactional_id] = task
        task.add_done_callback(lambda t: self._marker_tasks.pop(transactional_id, None)
                               if self._marker_tasks.get(transactional_id) is t else None)

    async def _complete_transaction(self, transactional_id: str, coordinator_epoch: int, committed: bool,
                                    metadata: TransactionMetadata, complete: TxnTransit) -> None:
        entry = MarkerEntry(metadata.producer_id, metadata.producer_epoch, coordinator_epoch, committed,
                            tuple(sorted(metadata.partitions)))

        def written(tp: TopicPartition) -> None:
            if metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                metadata.remove_partition(tp)

        if not await self.markers.write(entry, written):
            return
        backoff_s = 0.05
        while True:
            current = self._state_or_none(transactional_id)
            if current is None or current[0] != coordinator_epoch or current[1] is not metadata:
                logger.info("%s: no longer coordinated at epoch %d; its completion is left to the new coordinator",
                            transactional_id, coordinator_epoch)
                return
            error = await self._append(transactional_id, coordinator_epoch, metadata, complete,
                                       retry_on=ErrorCode.coordinator_not_available)
            if error is ErrorCode.none:
                logger.debug("%s: transaction %s", transactional_id, complete.state.kafka_name)
                return
            if error is ErrorCode.coordinator_not_available:
                logger.info("%s: writing %s failed (%s); retrying", transactional_id, complete.state.kafka_name,
                            error.name)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 1.0)
                continue
            if error not in (ErrorCode.not_coordinator, ErrorCode.coordinator_load_in_progress):
                logger.error("%s: writing %s failed with %s", transactional_id, complete.state.kafka_name, error.name)
            return

    # ---- leadership ------------------------------------------------------------------------------

    async def on_election(self, partition: int, coordinator_epoch: int,
                          records: Iterable[tuple[bytes | None, bytes | None]]
                          | AsyncIterable[tuple[bytes | None, bytes | None]]) -> None:
        """This broker leads ``__transaction_state`` partition ``partition`` at ``coordinator_epoch``
        (its leader epoch): load it from ``records`` (key, value) in log order, then resume the
        transactions it left between a prepare and its completion."""
        self._cancel_markers(partition)
        self._partitions.pop(partition, None)
        self._loading[partition] = coordinator_epoch
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
                    if self._loading.get(partition) != coordinator_epoch:
                        break
        if self._loading.get(partition) != coordinator_epoch:
            logger.info("%s-%d: load at epoch %d abandoned (leadership moved)", log_records.TOPIC, partition,
                        coordinator_epoch)
            return
        del self._loading[partition]
        self._partitions[partition] = _Partition(coordinator_epoch, loaded)
        self.last_load_ms[partition] = self._clock_ms() - started_ms
        resumed = 0
        for transactional_id, metadata in loaded.items():
            if metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                committed = metadata.state is S.PREPARE_COMMIT
                complete = metadata.prepare_complete(self._clock_ms())
                self._send_markers(transactional_id, coordinator_epoch, committed, metadata, complete)
                resumed += 1
        logger.info("%s-%d: coordinating %d transactional ids at epoch %d (%d records, %d ms), %d transactions "
                    "resumed", log_records.TOPIC, partition, len(loaded), coordinator_epoch, count,
                    self.last_load_ms[partition], resumed)

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

    def on_resignation(self, partition: int, coordinator_epoch: int | None = None) -> None:
        """This broker no longer leads ``partition`` (at ``coordinator_epoch``, when known)."""
        if partition in self._loading and (coordinator_epoch is None or self._loading[partition] == coordinator_epoch):
            del self._loading[partition]
        entry = self._partitions.get(partition)
        if entry is not None and (coordinator_epoch is None or entry.coordinator_epoch <= coordinator_epoch):
            del self._partitions[partition]
            logger.info("%s-%d: no longer coordinating its %d transactional ids", log_records.TOPIC, partition,
                        len(entry.transactions))
        self._cancel_markers(partition)

    def _cancel_markers(self, partition: int) -> None:
        for transactional_id in [t for t in self._marker_tasks if self.partition_for(t) == partition]:
            self._marker_tasks.pop(transactional_id).cancel()

    # ---- timers ----------------------------------------------------------------------------------

    def timed_out_transactions(self) -> list[tuple[str, int, int]]:
        """(transactional id, producer id, epoch) of the Ongoing transactions past their timeout."""
        now = self._clock_ms()
        return [(tid, m.producer_id, m.producer_epoch)
                for entry in self._partitions.values() for tid, m in entry.transactions.items()
                if not m.pending_transition_in_progress and m.state is S.ONGOING
                and m.txn_start_timestamp_ms + m.txn_timeout_ms < now]

    async def abort_timed_out_transactions(self) -> None:
        """Fence and abort every transaction open for longer than its timeout (the producer's next
        request is fenced: it must call InitProducerId again)."""
        aborts = [self._abort_timed_out(tid, producer_id) for tid, producer_id, _ in self.timed_out_transactions()]
        if aborts:
            await asyncio.gather(*aborts)

    async def _abort_timed_out(self, transactional_id: str, producer_id: int) -> None:
        # No await between the fence and the abort's own checks: nothing may slip in between.
        current = self._state_or_none(transactional_id)
        if current is None or current[1] is None:
            return
        metadata = current[1]
        if metadata.producer_id != producer_id or metadata.pending_transition_in_progress \
                or metadata.state is not S.ONGOING:
            return
        fence = metadata.prepare_fence_producer_epoch()
        logger.info("%s: transaction open for %d ms, longer than its timeout of %d ms: aborting it (producer %d "
                    "fenced at epoch %d)", transactional_id, self._clock_ms() - metadata.txn_start_timestamp_ms,
                    metadata.txn_timeout_ms, producer_id, fence.producer_epoch)
        error = await self._end_transaction(transactional_id, fence.producer_id, fence.producer_epoch,
                                            committed=False, from_client=False)
        if error is ErrorCode.none:
            self.timed_out_aborts += 1
        elif error in (ErrorCode.invalid_producer_id_mapping, ErrorCode.producer_fenced,
                       ErrorCode.concurrent_transactions):
            logger.debug("%s: timeout abort cancelled: %s", transactional_id, error.name)
        else:
            logger.warning("%s: timeout abort failed: %s", transactional_id, error.name)

    async def remove_expired_transactional_ids(self) -> None:
        """Tombstone the ids idle in Empty/CompleteCommit/CompleteAbort for transactional.id.expiration.ms."""
        now = self._clock_ms()
        deadline = now - self.config.transactional_id_expiration_ms
        for partition, entry in list(self._partitions.items()):
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
        entry = self._partitions.get(partition)
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
        if not self.active:
            return DescribedTransaction(transactional_id, ErrorCode.coordinator_not_available)
        if not transactional_id:
            return DescribedTransaction(transactional_id, ErrorCode.invalid_request)
        try:
            _, metadata = self._state(transactional_id)
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
        if not self.active:
            return ListedTransactions(ErrorCode.coordinator_not_available, [], [])
        if self._loading:
            return ListedTransactions(ErrorCode.coordinator_load_in_progress, [], [])
        state_names = list(state_filters)
        states = {TransactionState.from_name(name) for name in state_names} - {None}
        unknown = [name for name in state_names if TransactionState.from_name(name) is None]
        producer_ids = set(producer_id_filters)
        now = self._clock_ms()
        listed = []
        for entry in self._partitions.values():
            for tid, m in entry.transactions.items():
                if m.state is S.DEAD or (producer_ids and m.producer_id not in producer_ids) \
                        or (state_names and m.state not in states) \
                        or (duration_filter_ms >= 0 and now - m.txn_start_timestamp_ms <= duration_filter_ms):
                    continue
                listed.append((tid, m.producer_id, m.state.kafka_name))
        return ListedTransactions(ErrorCode.none, unknown, listed)

    def stats(self) -> dict[str, Any]:
        """For gauges: ids coordinated by state, partitions led and loading, transactions with markers in flight."""
        by_state = {state.kafka_name: 0 for state in TransactionState}
        for entry in self._partitions.values():
            for m in entry.transactions.values():
                by_state[m.state.kafka_name] += 1
        return {"transactions": by_state, "partitions": len(self._partitions), "loading_partitions": len(self._loading),
                "pending_markers": len(self._marker_tasks), "timed_out_aborts": self.timed_out_aborts,
                "expired_ids": self.expired_ids}


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
