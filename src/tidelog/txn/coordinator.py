"""The transaction coordinator: Kafka's TransactionCoordinator on asyncio.

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

Every state change is prepared here (the id's ``pending_state`` blocks others:
CONCURRENT_TRANSACTIONS), then appended and applied by the ``TransactionStateManager``
(state_manager.py, which holds the ids of the partitions led here): durable in the ISR, or a
KafkaError mapped as Kafka maps it (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, ...); a state
appended under an old coordinator epoch is never applied.

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
from typing import Any, Awaitable, Callable, NamedTuple

from tidelog.clock import wall_clock_ms
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import CONSUMER_OFFSETS
from tidelog.txn import log_records
from tidelog.txn.config import TransactionConfig
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
from tidelog.txn.state_manager import DescribedTransaction, ListedTransactions, StateAppender, TransactionStateManager

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


class InitProducerIdResult(NamedTuple):
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


class TransactionCoordinator:
    """See the module docstring."""

    def __init__(self, config: TransactionConfig, append_state: StateAppender, allocate_producer_id: ProducerIdAllocator,
                 markers: TransactionMarkerChannel, clock_ms: Callable[[], int] = wall_clock_ms,
                 observer: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.state_manager = TransactionStateManager(config, append_state, clock_ms)
        self._allocate_producer_id = allocate_producer_id
        self.markers = markers
        self._clock_ms = clock_ms
        self.active = False
        self._marker_tasks: dict[str, asyncio.Task] = {}  # transactional id -> its markers in flight
        self._background: set[asyncio.Task] = set()
        self._timers: list[asyncio.Task] = []
        self.timed_out_aborts = 0
        self._completions_failing = 0  # CompleteCommit/CompleteAbort writes failed since the last one written
        self._observer = observer  # told "commit" / "abort" when a transaction completes, "timeout" on a timeout abort

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timeout-abort and expiration timers and begin answering requests."""
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.create_task(self._every(self.config.abort_timed_out_transaction_cleanup_interval_ms,
                                         self.abort_timed_out_transactions)),
            loop.create_task(self._every(self.config.remove_expired_transaction_cleanup_interval_ms,
                                         self.state_manager.remove_expired_transactional_ids)),
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
        self.state_manager.clear()

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
        return self.state_manager.partition_for(transactional_id)

    def valid_timeout(self, txn_timeout_ms: int) -> bool:
        return 0 < txn_timeout_ms <= self.config.transaction_max_timeout_ms

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
                coordinator_epoch, metadata = self.state_manager.state(transactional_id)
                if metadata is None:
                    if new_producer_id is None:
                        new_producer_id = await self._allocate_producer_id()
                        continue
                    metadata = TransactionMetadata(transactional_id, new_producer_id, NO_PRODUCER_EPOCH, txn_timeout_ms,
                                                   S.EMPTY, txn_last_update_timestamp_ms=self._clock_ms())
                    self.state_manager.add(transactional_id, metadata)
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
        error = await self.state_manager.append_transit(transactional_id, coordinator_epoch, metadata, decision)
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
            coordinator_epoch, metadata = self.state_manager.state(transactional_id)
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
        return await self.state_manager.append_transit(transactional_id, coordinator_epoch, metadata, transit)

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
            _, metadata = self.state_manager.state(transactional_id)
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
            coordinator_epoch, metadata = self.state_manager.state(transactional_id)
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
        error = await self.state_manager.append_transit(transactional_id, coordinator_epoch, metadata, transit)
        if error is not ErrorCode.none:
            if is_epoch_fence and self.state_manager.coordinates(transactional_id, coordinator_epoch, metadata):
                metadata.has_failed_epoch_fence = True
                logger.warning("%s: the epoch fence (epoch %d) was not written (%s); it is not told to any client",
                               transactional_id, producer_epoch, error.name)
            logger.info("%s: EndTxn(%s) answered %s", transactional_id, result, error.name)
            return error
        # Durable: check the state again, prepare the completion and answer; the markers follow.
        try:
            epoch_now, metadata = self.state_manager.state(transactional_id)
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
            current = self.state_manager.state_or_none(transactional_id)
            if current is None or current[0] != coordinator_epoch or current[1] is not metadata:
                logger.info("%s: no longer coordinated at epoch %d; its completion is left to the new coordinator",
                            transactional_id, coordinator_epoch)
                return
            error = await self.state_manager.append_transit(transactional_id, coordinator_epoch, metadata, complete,
                                       retry_on=ErrorCode.coordinator_not_available)
            if error is ErrorCode.none:
                logger.debug("%s: transaction %s", transactional_id, complete.state.kafka_name)
                if self._completions_failing:
                    logger.info("transaction completions written again after %d failed attempts",
                                self._completions_failing)
                    self._completions_failing = 0
                if self._observer is not None:
                    self._observer("commit" if committed else "abort")
                return
            if error is ErrorCode.coordinator_not_available:
                # One WARNING an episode (a stuck disk fails every transaction's completion), not one a retry.
                logger.log(logging.DEBUG if self._completions_failing else logging.WARNING,
                           "%s: writing %s failed (%s: not durable and in the ISR in time, or the ISR is short); "
                           "retrying with back-off up to 1 s", transactional_id, complete.state.kafka_name,
                           error.name.upper())
                self._completions_failing += 1
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
        loaded = await self.state_manager.load(partition, coordinator_epoch, records)
        if loaded is None:
            return
        resumed = 0
        for transactional_id, metadata in loaded.items():
            if metadata.state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
                committed = metadata.state is S.PREPARE_COMMIT
                complete = metadata.prepare_complete(self._clock_ms())
                self._send_markers(transactional_id, coordinator_epoch, committed, metadata, complete)
                resumed += 1
        if resumed:
            logger.info("%s-%d: %d transactions resumed at epoch %d", log_records.TOPIC, partition, resumed,
                        coordinator_epoch)

    def on_resignation(self, partition: int, coordinator_epoch: int | None = None) -> None:
        """This broker no longer leads ``partition`` (at ``coordinator_epoch``, when known)."""
        self.state_manager.unload(partition, coordinator_epoch)
        self._cancel_markers(partition)

    def _cancel_markers(self, partition: int) -> None:
        for transactional_id in [t for t in self._marker_tasks if self.partition_for(t) == partition]:
            self._marker_tasks.pop(transactional_id).cancel()

    # ---- timers ----------------------------------------------------------------------------------

    async def abort_timed_out_transactions(self) -> None:
        """Fence and abort every transaction open for longer than its timeout (the producer's next
        request is fenced: it must call InitProducerId again)."""
        aborts = [self._abort_timed_out(tid, producer_id)
                  for tid, producer_id, _ in self.state_manager.timed_out_transactions()]
        if aborts:
            await asyncio.gather(*aborts)

    async def _abort_timed_out(self, transactional_id: str, producer_id: int) -> None:
        # No await between the fence and the abort's own checks: nothing may slip in between.
        current = self.state_manager.state_or_none(transactional_id)
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
            if self._observer is not None:
                self._observer("timeout")
        elif error in (ErrorCode.invalid_producer_id_mapping, ErrorCode.producer_fenced,
                       ErrorCode.concurrent_transactions):
            logger.debug("%s: timeout abort cancelled: %s", transactional_id, error.name)
        else:
            logger.warning("%s: timeout abort failed: %s", transactional_id, error.name)

    # ---- admin -----------------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> DescribedTransaction:
        """One TransactionState of DescribeTransactions."""
        if not self.active:
            return DescribedTransaction(transactional_id, ErrorCode.coordinator_not_available)
        return self.state_manager.describe(transactional_id)

    def list_transactions(self, state_filters: Iterable[str] = (), producer_id_filters: Iterable[int] = (),
                          duration_filter_ms: int = -1) -> ListedTransactions:
        """ListTransactions (v1 adds the duration filter: open for longer than that)."""
        if not self.active:
            return ListedTransactions(ErrorCode.coordinator_not_available, [], [])
        return self.state_manager.list_transactions(state_filters, producer_id_filters, duration_filter_ms)

    def stats(self) -> dict[str, Any]:
        """For gauges: ids coordinated by state, partitions led and loading, transactions with markers in flight."""
        state = self.state_manager
        return {"transactions": state.counts_by_state(), "partitions": len(state.partitions),
                "loading_partitions": len(state.loading), "pending_markers": len(self._marker_tasks),
                "timed_out_aborts": self.timed_out_aborts, "expired_ids": state.expired_ids}
