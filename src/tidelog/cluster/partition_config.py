"""What a topic's configs mean for each of its partitions: ``PartitionConfig`` (what an append
as leader checks, and the acks=all bound) and ``log_config_for`` (the storage settings of its
log). Both read a topic's configs the one way, ``BrokerConfig.topic_value`` (the topic's value,
else the broker's default). Built when a replica appears and again when the topic's configs
change; neither is mutated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidelog.protocol.compression import COMPRESSION_CODECS
from tidelog.storage.log_config import LogConfig

if TYPE_CHECKING:
    from tidelog.config import BrokerConfig

__all__ = ["NO_LIMIT_MS", "PartitionConfig", "log_config_for"]

NO_LIMIT_MS = (1 << 63) - 1


@dataclass(frozen=True)
class PartitionConfig:
    """What appends to the partition check, from its topic's configs (replaced, never mutated, on a change)."""

    max_message_bytes: int = 1048588
    compact: bool = False
    log_append_time: bool = False
    timestamp_before_max_ms: int = NO_LIMIT_MS
    timestamp_after_max_ms: int = NO_LIMIT_MS
    compression: int | None = None  # a codec id (COMPRESSION_CODECS), or None: as the producer sent it
    min_insync_replicas: int = 1

    @classmethod
    def from_topic(cls, config: "BrokerConfig", topic_configs: dict[str, str]) -> "PartitionConfig":
        value = lambda name: config.topic_value(topic_configs, name)  # noqa: E731
        codec = value("compression.type")
        return cls(
            max_message_bytes=value("max.message.bytes"),
            compact="compact" in value("cleanup.policy").split(","),
            log_append_time=value("message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms=value("message.timestamp.before.max.ms"),
            timestamp_after_max_ms=value("message.timestamp.after.max.ms"),
            compression=None if codec == "producer" else COMPRESSION_CODECS[codec],
            min_insync_replicas=value("min.insync.replicas"),
        )


def log_config_for(config: "BrokerConfig", topic_configs: dict[str, str]) -> LogConfig:
    """The storage settings of a partition of a topic with ``topic_configs`` (broker defaults below them)."""
    value = lambda name: config.topic_value(topic_configs, name)  # noqa: E731
    return LogConfig(
        segment_bytes=value("segment.bytes"),
        segment_ms=value("segment.ms"),
        index_interval_bytes=value("index.interval.bytes"),
        retention_ms=value("retention.ms"),
        retention_bytes=value("retention.bytes"),
        durability=value("durability.profile"),
        flush_interval_ms=value("flush.ms"),
        segment_jitter_ms=value("segment.jitter.ms"),
        file_delete_delay_ms=value("file.delete.delay.ms"),
        delete="delete" in value("cleanup.policy").split(","),
        compact="compact" in value("cleanup.policy").split(","),
        delete_retention_ms=value("delete.retention.ms"),
        min_compaction_lag_ms=value("min.compaction.lag.ms"),
        max_compaction_lag_ms=value("max.compaction.lag.ms"),
        min_cleanable_dirty_ratio=value("min.cleanable.dirty.ratio"),
        segment_index_bytes=value("segment.index.bytes"),
    )
