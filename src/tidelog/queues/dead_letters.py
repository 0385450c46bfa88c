"""Dead-letter topics of share groups (KIP-1191): writing the records a group gave up on.

A share group names its dead-letter topic with ``errors.deadletterqueue.topic.name`` (it starts
with the broker's ``errors.deadletterqueue.topic.name.prefix``, checked when the config is set);
the topic must exist and opt in with the topic config ``errors.deadletterqueue.group.enable=true``.
A record a consumer REJECTs or that reaches ``share.delivery.count.limit`` is appended there, as
one batch per share-partition change, with headers naming where it came from:

    __dlq.errors.topic, __dlq.errors.partition, __dlq.errors.offset, __dlq.errors.group.id,
    __dlq.errors.delivery.count, __dlq.errors.reason (rejected | delivery_limit | expired)

and, with ``errors.deadletterqueue.copy.record.enable=true``, the record's own key, value,
timestamp and headers; otherwise no key and no value. The write is acks=all through the dead-letter
partition's Partition and returns once acknowledged: durable and in the ISR within
``share.coordinator.write.timeout.ms``, the flush's wait included (REQUEST_TIMED_OUT past it).
The ShareManager makes the archiving durable only after that, so a crash or a timeout in between
dead-letters the record again (a duplicate in the dead-letter topic, never a loss). The partition written is the source partition modulo the
dead-letter topic's partitions, so a source partition's dead letters keep their order.

A group without a dead-letter topic, or whose topic is missing or has not opted in, archives
without writing (a WARNING names why, once per group and topic until it changes). A dead-letter
partition not led by this broker fails the write (NOT_LEADER_OR_FOLLOWER): the acknowledgement
gets that error and lock expiries retry.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Callable, Mapping

from tidelog.cluster.waiters import wait_for_acks
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch, iter_records
from tidelog.queues.in_flight import DeadLetter
from tidelog.queues.state_records import ShareStateKey

if TYPE_CHECKING:
    from tidelog.cluster.metadata import TopicRecord
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.config import BrokerConfig
    from tidelog.queues.manager import ShareConfig

logger = logging.getLogger(__name__)

TOPIC_OPT_IN = "errors.deadletterqueue.group.enable"
HEADER_PREFIX = "__dlq.errors."
_READ_BYTES = 1 << 20


class DeadLetterWriter:
    def __init__(self, config: "BrokerConfig", replicas: "ReplicaManager",
                 topics_by_name: Callable[[], Mapping[str, "TopicRecord"]],
                 topic_by_id: Callable[[uuid.UUID], "TopicRecord | None"],
                 share_config: Callable[[str], "ShareConfig"],
                 on_written: Callable[[str, int], None] | None = None,
                 on_timeout: Callable[[str], None] | None = None) -> None:
        self._config = config
        self._replicas = replicas
        self._topics_by_name = topics_by_name
        self._topic_by_id = topic_by_id
        self._share_config = share_config
        self._on_written = on_written
        self._on_timeout = on_timeout  # a write answered REQUEST_TIMED_OUT: counted as dead_letter
        self._warned: set[tuple[str, str]] = set()
        self.timeout_ms = config["share.coordinator.write.timeout.ms"]

    def target(self, group_id: str) -> "tuple[TopicRecord, bool] | None":
        """The group's dead-letter topic and whether records are copied, or None (archive only)."""
        share_config = self._share_config(group_id)
        name = share_config.dead_letter_topic
        if not name:
            return None
        record = self._topics_by_name().get(name)
        why = None
        if record is None:
            why = "does not exist"
        elif str(record.configs.get(TOPIC_OPT_IN, "false")).lower() != "true":
            why = f"does not allow it ({TOPIC_OPT_IN} is not true)"
        if why is not None:
            if (group_id, name) not in self._warned:
                self._warned.add((group_id, name))
                logger.warning("share group %s: dead-letter topic %s %s; rejected and undeliverable records are "
                               "archived without a dead letter", group_id, name, why)
            return None
        self._warned.discard((group_id, name))
        return record, share_config.dead_letter_copy_record

    async def write(self, key: ShareStateKey, letters: list[DeadLetter]) -> None:
        """Append the dead letters of one share-partition change; returns once acknowledged."""
        target = self.target(key.group_id)
        if target is None or not letters:
            return
        topic, copy_record = target
        source = self._topic_by_id(key.topic_id)
        if source is None:
            return  # the source topic is gone: nothing left to copy or to point at
        source_partition = self._replicas.leader(source.name, key.partition)
        records = []
        for letter in letters:
            originals = self._read(source_partition, letter.first_offset, letter.last_offset) if copy_record else {}
            for offset in range(letter.first_offset, letter.last_offset + 1):
                headers = [(HEADER_PREFIX + "topic", source.name.encode()),
                           (HEADER_PREFIX + "partition", str(key.partition).encode()),
                           (HEADER_PREFIX + "offset", str(offset).encode()),
                           (HEADER_PREFIX + "group.id", key.group_id.encode()),
                           (HEADER_PREFIX + "delivery.count", str(letter.delivery_count).encode()),
                           (HEADER_PREFIX + "reason", letter.reason.value.encode())]
                original = originals.get(offset)
                if original is None:
                    records.append((None, None, headers))
                else:
                    records.append((original.key, original.value, list(original.headers) + headers))
        partition = self._replicas.leader(topic.name, key.partition % max(1, topic.partitions))
        batch = memoryview(bytearray(build_batch(records)))
        appended = partition.append_as_leader(batch, required_acks=-1)
        (error,) = await wait_for_acks([(partition, appended.end_offset)], -1, self.timeout_ms / 1000, partition.logs,
                                       durability_in_timeout=True)
        if error != ErrorCode.none:
            if error == ErrorCode.request_timed_out and self._on_timeout is not None:
                self._on_timeout("dead_letter")
            raise KafkaError(error, f"dead letters to {topic.name} not acknowledged: {error.name}")
        logger.info("share group %s: %d records of %s-%d dead-lettered to %s-%d", key.group_id, len(records),
                    source.name, key.partition, topic.name, partition.index)
        if self._on_written is not None:
            self._on_written(key.group_id, len(records))

    @staticmethod
    def _read(partition, first_offset: int, last_offset: int) -> dict:
        """The records at first..last of the source log (fewer where the log no longer has them)."""
        found = {}
        log = partition.log
        offset = max(first_offset, log.log_start_offset)
        while offset <= last_offset:
            data = log.read(offset, _READ_BYTES, True, last_offset + 1)
            if not data:
                break
            progressed = False
            for record in iter_records(data):
                if first_offset <= record.offset <= last_offset:
                    found[record.offset] = record
                if record.offset >= offset:
                    offset = record.offset + 1
                    progressed = True
            if not progressed:
                break
        return found
