"""A transactional id's state at its coordinator, and the transitions Kafka allows between states.

States (ids as ``__transaction_state`` stores them, names as DescribeTransactions shows them)::

    0 Empty           no transaction; a fresh id, or a new epoch from InitProducerId
    1 Ongoing         partitions (or a group's offsets) were added; data may be in flight
    2 PrepareCommit   EndTxn(commit) is durable; markers are being written
    3 PrepareAbort    EndTxn(abort), a timeout or a fence; markers are being written
    4 CompleteCommit  every partition leader wrote its COMMIT marker
    5 CompleteAbort   every partition leader wrote its ABORT marker
    6 Dead            the id expired; only a tombstone is written, never this state
    7 PrepareEpochFence  an Ongoing transaction whose producer is being fenced (a new
                      InitProducerId, or a timeout): the epoch is bumped and the transaction
                      aborted with it; never written either, the abort is

Each change is prepared (``prepare_*`` returns a TxnTransit and sets ``pending_state``, so a
concurrent request sees CONCURRENT_TRANSACTIONS), written to the log, and only then applied
(``complete_transition``) or, if the write failed, dropped (``pending_state = None``). This is
Kafka's TransactionMetadata with the "transaction version 0/1" rules the Python clients use
(the epoch moves on InitProducerId and on fencing only; KIP-890's epoch bump per transaction
is not here). A transit that does not fit the state raises IllegalTransition, a bug, never a
client's error. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from tidelog.protocol.errors import ErrorCode, KafkaError

__all__ = [
    "IllegalTransition",
    "MAX_PRODUCER_EPOCH",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "TopicPartition",
    "TransactionMetadata",
    "TransactionState",
    "TxnTransit",
    "VALID_PREVIOUS_STATES",
    "is_epoch_exhausted",
]

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
MAX_PRODUCER_EPOCH = 32767


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class TransactionState(enum.IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """The name Kafka's admin APIs use (DescribeTransactions, ListTransactions filters)."""
        return _NAMES[self]

    @classmethod
    def from_name(cls, name: str) -> "TransactionState | None":
        return _BY_NAME.get(name)

    @property
    def expiration_allowed(self) -> bool:
        return self in (TransactionState.EMPTY, TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT)


_NAMES = {
    TransactionState.EMPTY: "Empty", TransactionState.ONGOING: "Ongoing",
    TransactionState.PREPARE_COMMIT: "PrepareCommit", TransactionState.PREPARE_ABORT: "PrepareAbort",
    TransactionState.COMPLETE_COMMIT: "CompleteCommit", TransactionState.COMPLETE_ABORT: "CompleteAbort",
    TransactionState.DEAD: "Dead", TransactionState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
_BY_NAME = {name: state for state, name in _NAMES.items()}

S = TransactionState
VALID_PREVIOUS_STATES: dict[TransactionState, frozenset[TransactionState]] = {
    S.EMPTY: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.ONGOING: frozenset({S.ONGOING, S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_COMMIT: frozenset({S.ONGOING}),
    S.PREPARE_ABORT: frozenset({S.ONGOING, S.PREPARE_EPOCH_FENCE}),
    S.COMPLETE_COMMIT: frozenset({S.PREPARE_COMMIT}),
    S.COMPLETE_ABORT: frozenset({S.PREPARE_ABORT}),
    S.DEAD: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_EPOCH_FENCE: frozenset({S.ONGOING}),
}


def is_epoch_exhausted(producer_epoch: int) -> bool:
    """Epochs stop one short of the maximum, so the coordinator can always fence with a bump."""
    return producer_epoch >= MAX_PRODUCER_EPOCH - 1


class IllegalTransition(Exception):
    """A state change that must not happen (Kafka's IllegalStateException): a coordinator bug."""


@dataclass(frozen=True)
class TxnTransit:
    """A prepared state: what is written to the log, applied once it is durable."""

    producer_id: int
    previous_producer_id: int  # the producer id before this transit
    next_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    partitions: frozenset[TopicPartition]
    txn_start_timestamp_ms: int
    txn_last_update_timestamp_ms: int
    client_transaction_version: int = 0


class TransactionMetadata:
    """One transactional id's state at its coordinator; see the module docstring."""

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int = NO_PRODUCER_EPOCH,
                 txn_timeout_ms: int = 60000, state: TransactionState = TransactionState.EMPTY,
                 partitions: set[TopicPartition] | frozenset[TopicPartition] = frozenset(),
                 txn_start_timestamp_ms: int = -1, txn_last_update_timestamp_ms: int = -1,
                 last_producer_epoch: int = NO_PRODUCER_EPOCH, previous_producer_id: int = NO_PRODUCER_ID,
                 next_producer_id: int = NO_PRODUCER_ID, client_transaction_version: int = 0) -> None:
        self.transactional_id = transactional_id
        self.producer_id = producer_id
        self.previous_producer_id = previous_producer_id
        self.next_producer_id = next_producer_id
        self.producer_epoch = producer_epoch
        self.last_producer_epoch = last_producer_epoch
        self.txn_timeout_ms = txn_timeout_ms
        self.state = state
        self.partitions: set[TopicPartition] = set(partitions)
        self.txn_start_timestamp_ms = txn_start_timestamp_ms
        self.txn_last_update_timestamp_ms = txn_last_update_timestamp_ms
        self.client_transaction_version = client_transaction_version
        self.pending_state: TransactionState | None = None
        # A fence whose write failed already bumped the epoch in memory (never told to a client):
        # the next fence reuses that epoch instead of bumping again.
        self.has_failed_epoch_fence = False

    def __repr__(self) -> str:
        return (f"TransactionMetadata({self.transactional_id!r}, producer_id={self.producer_id}, "
                f"epoch={self.producer_epoch}, state={self.state.kafka_name}, pending={self.pending_state and self.pending_state.kafka_name}, "
                f"partitions={sorted(self.partitions)}, timeout_ms={self.txn_timeout_ms})")

    @property
    def pending_transition_in_progress(self) -> bool:
        return self.pending_state is not None

    @property
    def epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    @property
    def has_pending_transaction(self) -> bool:
        return self.state in (S.ONGOING, S.PREPARE_ABORT, S.PREPARE_COMMIT)

    # ---- preparing ---------------------------------------------------------------------------

    def current(self) -> TxnTransit:
        """The state as it is, as a transit (for loading and for tests), without preparing anything."""
        return TxnTransit(self.producer_id, self.previous_producer_id, self.next_producer_id, self.producer_epoch,
                          self.last_producer_epoch, self.txn_timeout_ms, self.state, frozenset(self.partitions),
                          self.txn_start_timestamp_ms, self.txn_last_update_timestamp_ms,
                          self.client_transaction_version)

    def prepare_fence_producer_epoch(self) -> TxnTransit:
        """Bump the epoch of an Ongoing transaction to fence its producer before aborting it."""
        if self.producer_epoch == MAX_PRODUCER_EPOCH:
            raise IllegalTransition(f"{self.transactional_id}: cannot fence epoch {MAX_PRODUCER_EPOCH}, it would overflow")
        bumped = self.producer_epoch if self.has_failed_epoch_fence else self.producer_epoch + 1
        return self._prepare(S.PREPARE_EPOCH_FENCE, self.producer_id, bumped, NO_PRODUCER_EPOCH, self.txn_timeout_ms,
                             frozenset(self.partitions), self.txn_start_timestamp_ms, self.txn_last_update_timestamp_ms)

    def prepare_increment_producer_epoch(self, new_txn_timeout_ms: int, expected_producer_epoch: int | None,
                                         now_ms: int) -> TxnTransit:
        """InitProducerId on an id with no transaction: the next epoch. A producer that names its
        epoch (KIP-360) gets it bumped if it is current, the same one back if it is retrying a
        bump it never heard about, PRODUCER_FENCED otherwise."""
        if self.epoch_exhausted:
            raise IllegalTransition(f"{self.transactional_id}: no producer epochs left for producer {self.producer_id}")
        bumped = self.producer_epoch + 1
        if expected_producer_epoch is None:
            epoch, last_epoch = bumped, NO_PRODUCER_EPOCH
        elif self.producer_epoch == NO_PRODUCER_EPOCH or expected_producer_epoch == self.producer_epoch:
            epoch, last_epoch = bumped, self.producer_epoch
        elif expected_producer_epoch == self.last_producer_epoch:
            epoch, last_epoch = self.producer_epoch, self.last_producer_epoch
        else:
            raise KafkaError(ErrorCode.producer_fenced,
                             f"{self.transactional_id}: expected epoch {expected_producer_epoch} is neither the current "
                             f"{self.producer_epoch} nor the previous {self.last_producer_epoch}")
        return self._prepare(S.EMPTY, self.producer_id, epoch, last_epoch, new_txn_timeout_ms, frozenset(), -1, now_ms)

    def prepare_producer_id_rotation(self, new_producer_id: int, new_txn_timeout_ms: int, now_ms: int,
                                     record_last_epoch: bool) -> TxnTransit:
        """A new producer id at epoch 0, when the epochs of the current one are used up."""
        if self.has_pending_transaction:
            raise IllegalTransition(f"{self.transactional_id}: cannot rotate producer ids with a transaction pending")
        return self._prepare(S.EMPTY, new_producer_id, 0, self.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH,
                             new_txn_timeout_ms, frozenset(), -1, now_ms)

    def prepare_add_partitions(self, partitions: frozenset[TopicPartition] | set[TopicPartition], now_ms: int) -> TxnTransit:
        start_ms = now_ms if self.state in (S.EMPTY, S.COMPLETE_ABORT, S.COMPLETE_COMMIT) else self.txn_start_timestamp_ms
        return self._prepare(S.ONGOING, self.producer_id, self.producer_epoch, self.last_producer_epoch,
                             self.txn_timeout_ms, frozenset(self.partitions | set(partitions)), start_ms, now_ms)

    def prepare_abort_or_commit(self, new_state: TransactionState, now_ms: int) -> TxnTransit:
        if new_state not in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            raise IllegalTransition(f"{self.transactional_id}: {new_state.kafka_name} is not a prepare state")
        return self._prepare(new_state, self.producer_id, self.producer_epoch, self.last_producer_epoch,
                             self.txn_timeout_ms, frozenset(self.partitions), self.txn_start_timestamp_ms, now_ms)

    def prepare_complete(self, now_ms: int) -> TxnTransit:
        """Every marker is written: CompleteCommit or CompleteAbort."""
        new_state = S.COMPLETE_COMMIT if self.state is S.PREPARE_COMMIT else S.COMPLETE_ABORT
        self.has_failed_epoch_fence = False  # the fence (if any) reached the log
        return self._prepare(new_state, self.producer_id, self.producer_epoch, self.producer_epoch,
                             self.txn_timeout_ms, frozenset(), self.txn_start_timestamp_ms, now_ms)

    def prepare_dead(self) -> TxnTransit:
        return self._prepare(S.DEAD, self.producer_id, self.producer_epoch, self.last_producer_epoch,
                             self.txn_timeout_ms, frozenset(), self.txn_start_timestamp_ms,
                             self.txn_last_update_timestamp_ms)

    def _prepare(self, state: TransactionState, producer_id: int, epoch: int, last_epoch: int, timeout_ms: int,
                 partitions: frozenset[TopicPartition], start_ms: int, now_ms: int) -> TxnTransit:
        if self.pending_state is not None:
            raise IllegalTransition(f"{self.transactional_id}: preparing {state.kafka_name} while "
                                    f"{self.pending_state.kafka_name} is pending")
        if producer_id < 0:
            raise IllegalTransition(f"{self.transactional_id}: illegal producer id {producer_id}")
        if state is not S.DEAD and epoch < 0:
            raise IllegalTransition(f"{self.transactional_id}: illegal producer epoch {epoch}")
        if self.state not in VALID_PREVIOUS_STATES[state]:
            raise IllegalTransition(f"{self.transactional_id}: {self.state.kafka_name} -> {state.kafka_name} is not allowed")
        self.pending_state = state
        return TxnTransit(producer_id, self.producer_id, NO_PRODUCER_ID, epoch, last_epoch, timeout_ms, state,
                          partitions, start_ms, now_ms, 0)

    # ---- applying ----------------------------------------------------------------------------

    def complete_transition(self, transit: TxnTransit) -> None:
        """Apply a prepared transit once it is durable (Kafka's completeTransitionTo checks)."""
        to_state = self.pending_state
        if to_state is None or to_state is not transit.state:
            self._fail(transit)
        if to_state is S.EMPTY:  # InitProducerId
            if (self.producer_epoch != transit.producer_epoch and not self._valid_epoch_bump(transit)) \
                    or transit.partitions or transit.txn_start_timestamp_ms != -1:
                self._fail(transit)
            self.txn_timeout_ms = transit.txn_timeout_ms
            self.producer_epoch = transit.producer_epoch
            self.last_producer_epoch = transit.last_producer_epoch
            self.producer_id = transit.producer_id
            self.previous_producer_id = transit.previous_producer_id
        elif to_state is S.ONGOING:  # AddPartitionsToTxn / AddOffsetsToTxn
            if not self._valid_epoch(transit) or not self.partitions <= transit.partitions \
                    or self.txn_timeout_ms != transit.txn_timeout_ms:
                self._fail(transit)
            self.txn_start_timestamp_ms = transit.txn_start_timestamp_ms
            self.partitions |= transit.partitions
        elif to_state in (S.PREPARE_ABORT, S.PREPARE_COMMIT):  # EndTxn, timeout, fence
            if not self._valid_epoch(transit) or self.partitions != transit.partitions \
                    or self.txn_timeout_ms != transit.txn_timeout_ms \
                    or self.txn_start_timestamp_ms != transit.txn_start_timestamp_ms:
                self._fail(transit)
        elif to_state in (S.COMPLETE_ABORT, S.COMPLETE_COMMIT):  # markers written
            if not self._valid_epoch(transit) or self.txn_timeout_ms != transit.txn_timeout_ms \
                    or transit.txn_start_timestamp_ms == -1:
                self._fail(transit)
            self.txn_start_timestamp_ms = transit.txn_start_timestamp_ms
            self.partitions.clear()
        else:  # PrepareEpochFence becomes PrepareAbort before it is written; Dead is a tombstone
            self._fail(transit)
        self.client_transaction_version = transit.client_transaction_version
        self.txn_last_update_timestamp_ms = transit.txn_last_update_timestamp_ms
        self.pending_state = None
        self.state = to_state

    def _valid_epoch(self, transit: TxnTransit) -> bool:
        return transit.producer_epoch == self.producer_epoch and transit.producer_id == self.producer_id

    def _valid_epoch_bump(self, transit: TxnTransit) -> bool:
        return transit.producer_epoch == self.producer_epoch + 1 or (
            transit.producer_epoch == 0 and transit.producer_id != self.producer_id)

    def _fail(self, transit: TxnTransit) -> None:
        raise IllegalTransition(f"{self!r} cannot take {transit}")

    def remove_partition(self, partition: TopicPartition) -> None:
        """A partition's marker is written (or the partition is gone)."""
        if self.state not in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
            raise IllegalTransition(f"{self.transactional_id}: removing {partition} in state {self.state.kafka_name}")
        self.partitions.discard(partition)

    @classmethod
    def from_transit(cls, transactional_id: str, transit: TxnTransit) -> "TransactionMetadata":
        """The state a record read back from the log describes (loading)."""
        return cls(transactional_id, transit.producer_id, transit.producer_epoch, transit.txn_timeout_ms, transit.state,
                   transit.partitions, transit.txn_start_timestamp_ms, transit.txn_last_update_timestamp_ms,
                   NO_PRODUCER_EPOCH, transit.previous_producer_id, transit.next_producer_id,
                   transit.client_transaction_version)

    def fence_in_place(self, producer_epoch: int) -> None:
        """Turn a pending PrepareEpochFence into the state the abort is prepared from: the bumped
        epoch, no last epoch (Kafka does this in memory before writing the abort)."""
        if self.pending_state is not S.PREPARE_EPOCH_FENCE:
            raise IllegalTransition(f"{self.transactional_id}: no epoch fence pending")
        self.pending_state = None
        self.producer_epoch = producer_epoch
        self.last_producer_epoch = NO_PRODUCER_EPOCH

