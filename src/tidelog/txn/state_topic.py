"""The ``__transaction_state`` topic as the coordinator uses it: appends and loads through the Partition.

- ``append(partition, records, timeout_ms)`` is the coordinator's ``StateAppender``: one
  uncompressed batch of (key, value) records appended as leader of ``__transaction_state-N``
  (``Partition.append_as_leader``, acks=all) and awaited until it is durable and the ISR has it,
  both within ``timeout_ms`` (``wait_for_acks``, the flush's wait included: a flush that does not
  end answers REQUEST_TIMED_OUT); a failure raises KafkaError with the append's error
  (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT,
  KAFKA_STORAGE_ERROR, UNKNOWN_TOPIC_OR_PARTITION), which the coordinator maps as Kafka does.
- ``records(partition)``: every (key, value) of a partition's log from its start to its end, read
  ``load_buffer_bytes`` at a time, for the coordinator's load on election.

``groups/offsets_topic.py`` is the same for ``__consumer_offsets``. Not thread-safe; the event
loop owns it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

from tidelog.cluster.waiters import wait_for_acks
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import InvalidBatch, build_batch, iter_records
from tidelog.protocol.topics import TRANSACTION_STATE
from tidelog.storage.log_scan import log_batches

if TYPE_CHECKING:
    from tidelog.cluster.partition import Partition
    from tidelog.cluster.replica_manager import ReplicaManager

__all__ = ["TransactionStateTopic"]

logger = logging.getLogger(__name__)


class TransactionStateTopic:
    """See the module docstring."""

    def __init__(self, replicas: "ReplicaManager", load_buffer_bytes: int = 5 << 20) -> None:
        self.replicas = replicas
        self.load_buffer_bytes = load_buffer_bytes

    async def append(self, partition: int, records: list[tuple[bytes, bytes | None]], timeout_ms: int) -> None:
        leader = self.replicas.leader(TRANSACTION_STATE, partition)  # raises KafkaError
        batch = memoryview(bytearray(build_batch([(key, value, []) for key, value in records])))
        try:
            appended = leader.append_as_leader(batch, required_acks=-1)
        except InvalidBatch as e:  # a record above max.message.bytes
            raise KafkaError(e.error_code, str(e)) from None
        try:
            (error,) = await wait_for_acks([(leader, appended.end_offset)], -1, timeout_ms / 1000, leader.logs,
                                           durability_in_timeout=True)
        except KafkaError as e:  # the flush failed, or the partition went meanwhile
            error = e.error_code
        if error != ErrorCode.none:
            logger.info("%s-%d: state write at %d not acknowledged: %s", TRANSACTION_STATE, partition,
                        appended.base_offset, error.name)
            raise KafkaError(error, f"{TRANSACTION_STATE}-{partition} write not acknowledged: {error.name}")

    def records(self, partition: "Partition") -> Iterator[tuple[bytes | None, bytes | None]]:
        """Every record of ``partition``'s log in order (the coordinator's load)."""
        start = partition.log.log_start_offset
        for batch, _ in log_batches(partition.log, start, self.load_buffer_bytes):
            for record in iter_records(batch):
                if record.offset >= start:
                    yield record.key, record.value
