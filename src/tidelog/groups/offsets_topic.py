"""The internal ``__consumer_offsets`` topic: where the coordinator's records live.

One partition (a single node coordinates every group; Kafka's default is 50 partitions, which
only matter to spread coordinators over brokers), ``cleanup.policy=compact``: the log cleaner
(storage/cleaner.py) keeps the last record per key, so the topic stays bounded and a start
replays only that. Records are built with ``build_batch`` (encoding in groups/records.py) and
appended through the partition's ``Partition`` as leader, acks=all: a write returns once the
ISR has them (on a single node, once durable) and raises KafkaError (with the error a group
request answers) when this broker no longer leads the partition, the ISR is below
``min.insync.replicas``, or it is not durable and in the ISR within ``offsets.commit.timeout.ms``
(REQUEST_TIMED_OUT, the flush's wait included).
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterator

from tidelog.cluster.waiters import wait_for_acks
from tidelog.protocol.control_records import InvalidControlRecord, read_end_txn_marker
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import InvalidBatch, build_batch, iter_records
from tidelog.protocol.topics import CONSUMER_OFFSETS
from tidelog.storage.log_scan import log_batches

if TYPE_CHECKING:
    from tidelog.cluster.partition import Partition

logger = logging.getLogger(__name__)

TOPIC = CONSUMER_OFFSETS
PARTITIONS = 1
_READ_BYTES = 1 << 20


def topic_configs(broker_config) -> dict[str, str]:
    """The topic's configs when it is created: compacted, segments of ``offsets.topic.segment.bytes``
    (only closed segments are cleaned, so that bounds what stays uncompacted)."""
    return {"cleanup.policy": "compact", "segment.bytes": str(broker_config["offsets.topic.segment.bytes"])}

def coordinator_error(error: ErrorCode) -> ErrorCode:
    """What a group request answers when its ``__consumer_offsets`` write failed with ``error``
    (Kafka's mapping in the group coordinator's append path)."""
    if error in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error, ErrorCode.fenced_leader_epoch):
        return ErrorCode.not_coordinator
    if error in (ErrorCode.request_timed_out, ErrorCode.not_coordinator, ErrorCode.coordinator_load_in_progress,
                 ErrorCode.invalid_producer_epoch, ErrorCode.invalid_txn_state):  # the last two: TxnOffsetCommit
        return error
    return ErrorCode.coordinator_not_available  # NOT_ENOUGH_REPLICAS(_AFTER_APPEND), UNKNOWN_TOPIC_OR_PARTITION, ...


class ConsumerOffsetsTopic:
    """A GroupLog over partition 0 of ``__consumer_offsets`` (``partition()`` finds it as hosted here)."""

    def __init__(self, partition: Callable[[], "Partition | None"], commit_timeout_ms: int, *,
                 on_timeout: Callable[[str], None] | None = None) -> None:
        # A write answered REQUEST_TIMED_OUT: tidelog_internal_write_timeouts_total{writer} (offset_commit or group_metadata)
        self.on_timeout = on_timeout
        self._find = partition
        self.commit_timeout_ms = commit_timeout_ms
        self._partition: "Partition | None" = None
        self.open_transactions: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {}

    async def open(self) -> None:
        partition = self._find()
        if partition is None:
            raise KafkaError(ErrorCode.not_coordinator, f"{TOPIC}-0 is not hosted here")
        self._partition = partition

    @property
    def partition(self) -> "Partition":
        if self._partition is None:
            raise RuntimeError("ConsumerOffsetsTopic.open() was not called")
        return self._partition

    @property
    def log(self):
        return self.partition.log

    async def write(self, records: list[tuple[bytes, bytes | None]], producer_id: int = -1,
                    producer_epoch: int = -1) -> int:
        """Append ``records`` as one batch (a transactional one of ``producer_id`` for
        TxnOffsetCommit) and return its base offset once the ISR has it."""
        partition = self.partition
        sequence = self._next_sequence(partition, producer_id, producer_epoch) if producer_id >= 0 else -1
        batch = memoryview(bytearray(build_batch([(key, value, []) for key, value in records], producer_id=producer_id,
                                                 producer_epoch=producer_epoch, base_sequence=sequence,
                                                 is_transactional=producer_id >= 0)))
        try:
            appended = partition.append_as_leader(batch, required_acks=-1)
        except (KafkaError, InvalidBatch) as e:
            raise KafkaError(coordinator_error(e.error_code), f"{TOPIC} not writable here: {e.error_code.name}") from None
        try:
            (error,) = await wait_for_acks([(partition, appended.end_offset)], -1, self.commit_timeout_ms / 1000,
                                           partition.logs, durability_in_timeout=True)
        except KafkaError as e:  # the flush failed, or the partition was deleted meanwhile
            error = e.error_code
        if error != ErrorCode.none:
            logger.warning("%s write at %d not acknowledged: %s", TOPIC, appended.base_offset, error.name)
            if error == ErrorCode.request_timed_out and self.on_timeout is not None:
                self.on_timeout(_writer(records))
            raise KafkaError(coordinator_error(error), f"{TOPIC} write not replicated: {error.name}")
        return appended.base_offset

    @staticmethod
    def _next_sequence(partition: "Partition", producer_id: int, producer_epoch: int) -> int:
        """The sequence a producer's next offsets batch continues with here (its batches in this
        partition are only the coordinator's, so they are numbered here, as idempotence wants)."""
        entry = partition.producer_state.producers.get(producer_id)
        if entry is None or entry.epoch != producer_epoch or not entry.batches:
            return 0
        return (entry.batches[-1][1] + 1) & 0x7FFFFFFF

    def replay(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """Every record (its offset, key, value) in log order; a transaction's offset records when
        its COMMIT marker comes (an aborted one's never), with their own offsets. Those of
        transactions still open at the log end are left in ``open_transactions`` (producer id ->
        [(record offset, key, value)]), for the coordinator's pending transactional offsets."""
        self.open_transactions = {}
        start = self.log.log_start_offset
        for batch, info in log_batches(self.log, start, _READ_BYTES):
            if info.is_control:
                try:
                    marker = read_end_txn_marker(batch, info)
                except InvalidControlRecord as e:
                    logger.warning("%s: unreadable control batch at %d skipped: %s", TOPIC, info.base_offset, e)
                    continue
                pending = self.open_transactions.pop(info.producer_id, [])
                if marker is not None and marker.committed:
                    yield from pending
            elif info.is_transactional:
                self.open_transactions.setdefault(info.producer_id, []).extend(
                    (record.offset, record.key, record.value) for record in iter_records(batch))
            else:
                for record in iter_records(batch):
                    if record.offset >= start:
                        yield record.offset, record.key, record.value


def _writer(records: list[tuple[bytes, bytes | None]]) -> str:
    """The internal-write-timeout label of a __consumer_offsets write: offset_commit when it holds
    an offset record (key version 0 or 1: OffsetCommit, TxnOffsetCommit, expiry and deletion
    tombstones), else group_metadata (SyncGroup's assignment, a classic or KIP-848 group's state)."""
    return "offset_commit" if any(key[:2] in (b"\x00\x00", b"\x00\x01") for key, _ in records) else "group_metadata"
