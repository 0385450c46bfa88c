"""Topic configs: Kafka 4's whole list, with Kafka's types, ranges and defaults, and the ones that act."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.config import (QUEUE_TOPIC_CONFIGS, TOPIC_CONFIG_DEFAULTS, TOPIC_CONFIG_NAMES, BrokerConfig, render, topic_config_def,
                            validate_topic_configs)
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.log import LogConfig, PartitionLog

from .storage_helpers import append

# Kafka's topic configs: the *_CONFIG names of org.apache.kafka.common.config.TopicConfig and the
# topic ConfigDef of org.apache.kafka.storage.internals.log.LogConfig (apache/kafka, fetched at
# 1eb7644349cb), without the three Kafka 4.0 removed (KIP-724: message.format.version,
# message.timestamp.difference.max.ms, message.downconversion.enable).
KAFKA_4_TOPIC_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type", "compression.zstd.level",
    "delete.retention.ms", "file.delete.delay.ms", "flush.messages", "flush.ms", "follower.replication.throttled.replicas",
    "index.interval.bytes", "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms", "message.timestamp.before.max.ms",
    "message.timestamp.type", "min.cleanable.dirty.ratio", "min.compaction.lag.ms", "min.insync.replicas", "preallocate",
    "remote.log.copy.disable", "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms", "unclean.leader.election.enable",
}
TIDELOG_TOPIC_CONFIGS = {"durability.profile"} | set(QUEUE_TOPIC_CONFIGS)  # and issue 14's tidelog.*
KIP_1191_TOPIC_CONFIGS = {"errors.deadletterqueue.group.enable"}  # share group dead-letter topics (Kafka 4.3+)

# Kafka's type, default and, where it has one, the range its validator accepts (LogConfig).
KAFKA_TYPES_AND_DEFAULTS = {
    "cleanup.policy": ("LIST", "delete"), "compression.gzip.level": ("INT", -1), "compression.lz4.level": ("INT", 9),
    "compression.type": ("STRING", "producer"), "compression.zstd.level": ("INT", 3),
    "delete.retention.ms": ("LONG", 86400000), "file.delete.delay.ms": ("LONG", 60000),
    "flush.messages": ("LONG", 9223372036854775807), "follower.replication.throttled.replicas": ("LIST", ""),
    "index.interval.bytes": ("INT", 4096), "leader.replication.throttled.replicas": ("LIST", ""),
    "local.retention.bytes": ("LONG", -2), "local.retention.ms": ("LONG", -2),
    "max.compaction.lag.ms": ("LONG", 9223372036854775807), "max.message.bytes": ("INT", 1048588),
    "message.timestamp.after.max.ms": ("LONG", 3600000), "message.timestamp.before.max.ms": ("LONG", 9223372036854775807),
    "message.timestamp.type": ("STRING", "CreateTime"), "min.cleanable.dirty.ratio": ("DOUBLE", 0.5),
    "min.compaction.lag.ms": ("LONG", 0), "min.insync.replicas": ("INT", 1), "preallocate": ("BOOLEAN", False),
    "remote.log.copy.disable": ("BOOLEAN", False), "remote.log.delete.on.disable": ("BOOLEAN", False),
    "remote.storage.enable": ("BOOLEAN", False), "retention.bytes": ("LONG", -1), "segment.bytes": ("INT", 1 << 30),
    "segment.index.bytes": ("INT", 10485760), "segment.jitter.ms": ("LONG", 0), "segment.ms": ("LONG", 604800000),
    "unclean.leader.election.enable": ("BOOLEAN", False),
}
# (config, refused value, accepted value at the edge of Kafka's range)
KAFKA_RANGES = [
    ("segment.jitter.ms", "-1", "0"), ("segment.index.bytes", "3", "4"), ("flush.messages", "0", "1"),
    ("flush.ms", "-1", "0"), ("retention.ms", "-2", "-1"), ("max.message.bytes", "-1", "0"),
    ("index.interval.bytes", "-1", "0"), ("delete.retention.ms", "-1", "0"), ("min.compaction.lag.ms", "-1", "0"),
    ("max.compaction.lag.ms", "0", "1"), ("file.delete.delay.ms", "-1", "0"), ("min.cleanable.dirty.ratio", "1.01", "1"),
    ("min.cleanable.dirty.ratio", "-0.1", "0"), ("min.insync.replicas", "0", "1"), ("compression.gzip.level", "0", "9"),
    ("compression.gzip.level", "10", "-1"), ("compression.lz4.level", "18", "17"), ("compression.lz4.level", "0", "1"),
    ("compression.zstd.level", "23", "22"), ("compression.zstd.level", "-131073", "-131072"),
    ("local.retention.ms", "-3", "-2"), ("local.retention.bytes", "-3", "-2"), ("segment.ms", "0", "1"),
    ("message.timestamp.after.max.ms", "-1", "0"), ("message.timestamp.before.max.ms", "-1", "0"),
    ("cleanup.policy", "compact,shred", "delete,compact"), ("compression.type", "brotli", "zstd"),
    ("message.timestamp.type", "WallClock", "LogAppendTime"), ("preallocate", "maybe", "true"),
    ("leader.replication.throttled.replicas", "0:a", "0:1,1:2"), ("follower.replication.throttled.replicas", "all", "*"),
    ("remote.storage.enable", "true", "false"), ("retention.bytes", "ten", "-5"),
]


def test_every_kafka_4_topic_config_is_known_and_no_other():
    assert set(TOPIC_CONFIG_NAMES) == KAFKA_4_TOPIC_CONFIGS | TIDELOG_TOPIC_CONFIGS | KIP_1191_TOPIC_CONFIGS


@pytest.mark.parametrize("name", sorted(KAFKA_TYPES_AND_DEFAULTS))
def test_kafka_types_and_defaults(name):
    definition = topic_config_def(name)
    config = BrokerConfig.load(env={})
    assert (definition.type, config.topic_value({}, name)) == KAFKA_TYPES_AND_DEFAULTS[name]


@pytest.mark.parametrize("name,refused,accepted", KAFKA_RANGES)
def test_kafka_ranges(name, refused, accepted):
    with pytest.raises(KafkaError) as info:
        validate_topic_configs({name: refused})
    assert info.value.error_code == ErrorCode.invalid_config
    assert name in info.value.message or "Tiered Storage" in info.value.message
    validate_topic_configs({name: accepted})


def test_cleanup_policy_may_be_empty_or_either_or_both_and_is_normalised():
    for value, expected in (("", ""), ("compact", "compact"), (" compact , delete ", "compact,delete"), ("delete", "delete")):
        assert validate_topic_configs({"cleanup.policy": value}) == {"cleanup.policy": expected}


def test_min_compaction_lag_may_not_exceed_max():
    with pytest.raises(KafkaError) as info:
        validate_topic_configs({"min.compaction.lag.ms": "100", "max.compaction.lag.ms": "99"})
    assert info.value.message == "conflict topic config setting min.compaction.lag.ms (100) > max.compaction.lag.ms (99)"
    validate_topic_configs({"min.compaction.lag.ms": "100", "max.compaction.lag.ms": "100"})


def test_broker_synonyms_are_kafkas():
    assert {name: TOPIC_CONFIG_DEFAULTS[name] for name in (
        "segment.jitter.ms", "segment.index.bytes", "file.delete.delay.ms", "delete.retention.ms", "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms", "max.compaction.lag.ms", "flush.messages", "preallocate", "local.retention.ms")} == {
        "segment.jitter.ms": "log.roll.jitter.ms", "segment.index.bytes": "log.index.size.max.bytes",
        "file.delete.delay.ms": "log.segment.delete.delay.ms", "delete.retention.ms": "log.cleaner.delete.retention.ms",
        "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
        "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
        "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms", "flush.messages": "log.flush.interval.messages",
        "preallocate": "log.preallocate", "local.retention.ms": "log.local.retention.ms"}
    config = BrokerConfig.load(env={}, overrides={"log.cleaner.delete.retention.ms": "5"})
    assert config.topic_value({}, "delete.retention.ms") == 5


def test_doubles_render_as_java_does():
    assert [render(v) for v in (0.5, 1.0, 1.7976931348623157e308, 1e-4)] == ["0.5", "1.0", "1.7976931348623157E308", "1.0E-4"]


def test_segment_jitter_brings_a_roll_forward(tmp_path, monkeypatch):
    import random

    monkeypatch.setattr(random, "randrange", lambda n: n - 1)  # the most jitter there can be
    config = LogConfig(segment_ms=10_000, segment_jitter_ms=4_000, index_interval_bytes=64)
    log = PartitionLog.open(tmp_path / "t-0", "t", 0, config, recover=False)
    append(log, now_ms=1_000_000)
    log.segments[-1].created_ms = 1_000_000
    append(log, now_ms=1_006_000)  # 6 s: under segment.ms, and under segment.ms - jitter too
    assert len(log.segments) == 1
    append(log, now_ms=1_006_001)  # past segment.ms - jitter (10 s - 3.999 s)
    assert len(log.segments) == 2
    unjittered = PartitionLog.open(tmp_path / "u-0", "u", 0, LogConfig(segment_ms=10_000), recover=False)
    append(unjittered, now_ms=1_000_000)
    unjittered.segments[-1].created_ms = 1_000_000
    append(unjittered, now_ms=1_009_999)
    assert len(unjittered.segments) == 1
    log.close()
    unjittered.close()


def test_a_compacted_log_rolls_by_max_compaction_lag(tmp_path):
    config = LogConfig(segment_ms=10_000, compact=True, max_compaction_lag_ms=2_000)
    assert config.max_segment_ms == 2_000 and LogConfig(segment_ms=10_000, max_compaction_lag_ms=2_000).max_segment_ms == 10_000


def test_deleted_segments_wait_file_delete_delay_ms_before_they_are_removed(tmp_path):
    async def run():
        config = LogConfig(segment_bytes=300, retention_ms=1000, file_delete_delay_ms=200, index_interval_bytes=64)
        log = PartitionLog.open(tmp_path / "t-0", "t", 0, config, recover=False)
        for i in range(8):
            append(log, tag=i, timestamp_ms=1_000)
        sealed = {p.name for p in log.dir.glob("*.log")} - {"%020d.log" % log.segments[-1].base_offset}
        assert log.apply_retention(now_ms=10_000) > 0
        retired = {p.name for p in log.dir.glob("*.deleted")}
        assert {name + ".deleted" for name in sealed} <= retired  # out of the log, still on disk
        assert not sealed & {p.name for p in log.dir.glob("*.log")}
        await asyncio.sleep(0.35)
        assert not list(log.dir.glob("*.deleted"))
        log.close()

    asyncio.run(run())


def test_retention_applies_only_with_the_delete_policy(tmp_path):
    for delete, kept in ((False, True), (True, False)):
        config = LogConfig(segment_bytes=300, retention_ms=1000, delete=delete, compact=not delete, file_delete_delay_ms=0)
        log = PartitionLog.open(tmp_path / f"{delete}-0", str(delete), 0, config, recover=False)
        for i in range(8):
            append(log, tag=i, timestamp_ms=1_000)
        freed = log.apply_retention(now_ms=10_000)
        assert (freed == 0) == kept
        log.close()
