"""The internal ``__consumer_offsets`` topic: where the coordinator's records live.

One partition (a single node coordinates every group; Kafka's default is 50 partitions, which
only matter to spread coordinators over brokers), ``cleanup.policy=compact``: the log cleaner
(storage/cleaner.py) keeps the last record per key, so the topic stays bounded and a start
replays only that. Records are built with ``build_batch`` (encoding in
groups/records.py), appended through the topic's PartitionLog, and a write returns only once
``LogManager.wait_durable`` says they are durable. In a cluster a write is acks=all: it raises
KafkaError (with the error a group request answers) when this broker no longer leads the
partition, the ISR is below ``min.insync.replicas``, or the ISR does not get it in time. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, build_batch, iter_records, parse_batch_header, set_partition_leader_epoch
from tidelog.protocol.topics import CONSUMER_OFFSETS

if TYPE_CHECKING:
    from tidelog.server.broker import Broker
    from tidelog.storage.log import PartitionLog

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
    if error in (ErrorCode.request_timed_out, ErrorCode.not_coordinator, ErrorCode.coordinator_load_in_progress):
        return error
    return ErrorCode.coordinator_not_available  # NOT_ENOUGH_REPLICAS(_AFTER_APPEND), UNKNOWN_TOPIC_OR_PARTITION, ...


class ConsumerOffsetsTopic:
    """A GroupLog over partition 0 of ``__consumer_offsets``."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._log: "PartitionLog | None" = None

    async def open(self) -> None:
        """Create the topic on first start (internally, never by auto-creation)."""
        if TOPIC not in self.broker.metadata.topics:
            await self.broker.create_topic(TOPIC, PARTITIONS, 1, topic_configs(self.broker.config))
        self._log = self.broker.partition_log(TOPIC, 0)
        if self._log is None:
            configs = self.broker.metadata.topics[TOPIC].configs
            self._log = self.broker.logs.create(TOPIC, 0, self.broker.log_config(configs))

    @property
    def log(self) -> "PartitionLog":
        if self._log is None:
            raise RuntimeError("ConsumerOffsetsTopic.open() was not called")
        return self._log

    async def write(self, records: list[tuple[bytes, bytes | None]]) -> None:
        batch = bytearray(build_batch([(key, value, []) for key, value in records]))
        view = memoryview(batch)
        info = parse_batch_header(view)
        log = self.log
        replication = self.broker.replication  # cluster mode: written as acks=all
        if replication is not None:
            error = replication.leader_error(TOPIC, 0) or replication.check_min_isr(TOPIC, 0)
            if error:
                raise KafkaError(coordinator_error(error), f"__consumer_offsets not writable here: {error.name}")
            info = set_partition_leader_epoch(view, info, replication.leader_epoch(TOPIC, 0))
        base_offset = log.append(view, info)
        self.broker.notify_append(TOPIC, 0)
        await self.broker.logs.wait_durable(log, base_offset + info.last_offset_delta + 1)
        if replication is not None:
            replication.on_local_append(TOPIC, 0)
            timeout_s = self.broker.config["offsets.commit.timeout.ms"] / 1000
            error = await replication.wait_for_isr(TOPIC, 0, base_offset + info.last_offset_delta + 1, timeout_s)
            if error:
                logger.warning("__consumer_offsets write at %d not replicated: %s", base_offset, error.name)
                raise KafkaError(coordinator_error(error), f"__consumer_offsets write not replicated: {error.name}")

    def replay(self) -> Iterator[tuple[bytes, bytes | None]]:
        log = self.log
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, _READ_BYTES, True)
            if not data:
                break
            view = memoryview(data)
            pos, last = 0, offset - 1
            while len(view) - pos >= BATCH_HEADER_SIZE:
                info = parse_batch_header(view, pos)
                if pos + info.size > len(view):
                    break
                last = info.last_offset
                pos += info.size
            for record in iter_records(data):
                if record.offset >= offset:
                    yield record.key, record.value
            if last < offset:
                break
            offset = last + 1
