"""Broker and topic configuration: Kafka's names and defaults, one loader, validation.

Broker settings resolve, later winning: built-in default < TOML file (``--config``) <
``TIDELOG_*`` environment variables (``TIDELOG_NUM_PARTITIONS`` is ``num.partitions``) <
``--set name=value``. A topic config (``retention.ms``) falls back to its broker default
(``log.retention.ms``) unless the topic overrides it.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

# What a setting is (ConfigDef, parsing, rendering) is config_def.py's; importers may keep using this module.
from tidelog.config_def import CONFIG_TYPE_CODES, ConfigDef, ConfigError, render
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security_configs import SECURITY_CONFIGS
from tidelog.storage.log_config import DURABILITY_PROFILES


def _gzip_level(name: str, level: int) -> None:
    """Kafka's GZIP level validator: 1..9, or -1 (Deflater's default)."""
    if not (1 <= level <= 9 or level == -1):
        raise ConfigError(f"{name}: {level} is not in [1,...,9] or -1")


def _throttled_replicas(name: str, value: str) -> None:
    """Kafka's ThrottledReplicaListValidator: "*" or partitionId:brokerId pairs."""
    items = value.split(",") if value else []
    if items == ["*"] or all(re.fullmatch(r"\d+:\d+", item) for item in items):
        return
    raise ConfigError(f"{name} must be the literal '*' or a list of replicas in the following format: "
                      "[partitionId]:[brokerId],[partitionId]:[brokerId],...")


def _no_tiered_storage(name: str, enabled: bool) -> None:
    if enabled:  # Kafka's answer when remote.log.storage.system.enable is false, which Tidelog's always is
        raise ConfigError("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with "
                          "remote log storage.")


_DAY_MS = 24 * 3600 * 1000

BROKER_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in (
        ConfigDef("node.id", "INT", 1, "This broker's id.", read_only=True),
        ConfigDef("broker.id", "INT", 1, "Alias of node.id.", read_only=True),
        ConfigDef("cluster.id", "STRING", "", "The cluster id; generated on first start when empty.", read_only=True),
        ConfigDef("advertised.listeners", "STRING", "", "Where clients reach this broker, NAME://host:port,... (host:port alone: the single listener); the listeners when empty.", read_only=True),
        ConfigDef("http.port", "INT", 9644, "HTTP port for the console, the API, /metrics, /health and /ready (0 picks a free one, -1 disables).",
                  minimum=-1, maximum=65535, read_only=True),
        ConfigDef("http.host", "STRING", "127.0.0.1", "Address the HTTP listener binds; loopback unless set (the API asks for credentials only once the broker has users).",
                  read_only=True),
        ConfigDef("metrics.per.partition.enable", "BOOLEAN", True, "/metrics includes the series labelled by partition (log offsets, size and segments, dirty ratio, replica, consumer and last stable offset lag, delay topics' waiting records); false leaves them out, for brokers with many partitions (each scrape's size and CPU then no longer grow with them).",
                  read_only=True),
        ConfigDef("num.partitions", "INT", 1, "Default partition count of auto-created topics.", minimum=1),
        ConfigDef("default.replication.factor", "INT", 1, "Default replication factor of auto-created topics.", minimum=1),
        ConfigDef("auto.create.topics.enable", "BOOLEAN", True, "Create a missing topic (num.partitions, default.replication.factor) when a Metadata request that allows it names it (Kafka producers and consumers do) or an HTTP produce writes to it."),
        ConfigDef("delete.topic.enable", "BOOLEAN", True, "Allow DeleteTopics."),
        ConfigDef("message.max.bytes", "INT", 1048588, "Largest record batch accepted (default for max.message.bytes).", minimum=0),
        ConfigDef("log.segment.bytes", "INT", 1 << 30, "Segment file size before rolling.", minimum=14),
        ConfigDef("log.roll.ms", "LONG", 7 * _DAY_MS, "Roll a segment after this long.", minimum=1),
        ConfigDef("log.retention.ms", "LONG", 14 * _DAY_MS, "Delete segments older than this; -1 keeps forever.", minimum=-1),
        ConfigDef("log.retention.bytes", "LONG", -1, "Delete the oldest segments of a partition above this size; negative for no limit."),
        ConfigDef("log.retention.check.interval.ms", "LONG", 300000, "How often retention runs.", minimum=1),
        ConfigDef("log.index.interval.bytes", "INT", 4096, "Bytes of log between offset index entries.", minimum=0),
        ConfigDef("log.cleanup.policy", "LIST", "delete", "delete (retention), compact (keep the latest record per key), both, or neither (empty: keep everything, KIP-1030).", choices=("delete", "compact")),
        ConfigDef("log.roll.jitter.ms", "LONG", 0, "The most a new segment's roll time is brought forward at random (so a topic's partitions do not all roll at once).", minimum=0),
        ConfigDef("log.index.size.max.bytes", "INT", 10485760, "Most bytes of offset index (and of time index) the cleaner puts in one cleaned segment; Tidelog's indexes grow as needed (not preallocated).", minimum=4),
        ConfigDef("log.segment.idle.close.ms", "LONG", 30000, "A sealed segment's log file not read for this long is closed (reopened at the next read); an active segment's stays open and indexes hold no descriptor, so a partition costs one descriptor.", minimum=0, read_only=True),
        ConfigDef("log.segment.delete.delay.ms", "LONG", 60000, "How long the files of a segment that left the log (retention, DeleteRecords, compaction) stay on disk, renamed .deleted, before they are removed.", minimum=0),
        ConfigDef("log.flush.interval.messages", "LONG", 9223372036854775807, "Accepted for Kafka compatibility, no effect: when records are fsynced is the durability profile's decision.", minimum=1),
        ConfigDef("log.preallocate", "BOOLEAN", False, "Accepted for Kafka compatibility, no effect: segments grow by appends."),
        ConfigDef("log.local.retention.ms", "LONG", -2, "Tiered storage's local retention (-2: retention.ms); no effect, Tidelog has no tiered storage.", minimum=-2),
        ConfigDef("log.local.retention.bytes", "LONG", -2, "Tiered storage's local retention (-2: retention.bytes); no effect, Tidelog has no tiered storage.", minimum=-2),
        ConfigDef("log.cleaner.enable", "BOOLEAN", True, "Run the log cleaner, which compacts cleanup.policy=compact topics (__consumer_offsets among them).", read_only=True),
        ConfigDef("log.cleaner.threads", "INT", 1, "Cleaner worker processes (each cleans one log at a time, off the event loop); 0 disables cleaning.", minimum=0, read_only=True),
        ConfigDef("log.cleaner.dedupe.buffer.size", "LONG", 128 * 1024 * 1024, "Memory of the cleaners' key -> offset maps, all workers together (24 bytes a key: a longer dirty section is cleaned in several passes).", minimum=0, read_only=True),
        ConfigDef("log.cleaner.io.buffer.load.factor", "DOUBLE", 0.9, "How full a cleaner's offset map may get.", minimum=0, maximum=1, read_only=True),
        ConfigDef("log.cleaner.io.buffer.size", "INT", 512 * 1024, "Bytes a cleaner reads and writes at a time.", minimum=0, read_only=True),
        ConfigDef("log.cleaner.io.max.bytes.per.second", "DOUBLE", 1.7976931348623157e308, "Cap on the bytes all cleaners read and write per second (Kafka's default: no cap), so cleaning leaves the disk to producers and consumers.", minimum=0, read_only=True),
        ConfigDef("log.cleaner.backoff.ms", "LONG", 15000, "How long a cleaner with nothing to clean waits before looking again (a rolled segment of a compacted topic wakes it sooner).", minimum=0, read_only=True),
        ConfigDef("log.cleaner.delete.retention.ms", "LONG", 86400000, "How long a tombstone (or a transaction marker) survives once a cleaning has removed what it deletes.", minimum=0),
        ConfigDef("log.cleaner.min.compaction.lag.ms", "LONG", 0, "A record stays uncompacted at least this long.", minimum=0),
        ConfigDef("log.cleaner.max.compaction.lag.ms", "LONG", 9223372036854775807, "A record is compacted at most this long after it was written, whatever the dirty ratio (the active segment rolls for it).", minimum=1),
        ConfigDef("log.cleaner.min.cleanable.ratio", "DOUBLE", 0.5, "A compacted log is cleaned once its dirty bytes are more than this share of its bytes.", minimum=0, maximum=1),
        ConfigDef("log.message.timestamp.type", "STRING", "CreateTime", "CreateTime or LogAppendTime.", choices=("CreateTime", "LogAppendTime")),
        ConfigDef("log.message.timestamp.before.max.ms", "LONG", 9223372036854775807, "CreateTime topics refuse a record whose timestamp is further than this in the past (INVALID_TIMESTAMP).", minimum=0),
        ConfigDef("log.message.timestamp.after.max.ms", "LONG", 3600000, "CreateTime topics refuse a record whose timestamp is further than this in the future (INVALID_TIMESTAMP).", minimum=0),
        ConfigDef("log.durability.profile", "STRING", "balanced", "throughput, balanced (group fsync before acks) or durable (fsync per produce).", choices=DURABILITY_PROFILES),
        ConfigDef("log.flush.interval.ms", "LONG", 0, "balanced profile: how long a group fsync lingers for more writes before it starts (0: at once when none is running; writes made while one runs go in the next).", minimum=0),
        ConfigDef("compression.type", "STRING", "producer", "Topic compression; producer keeps what the producer sent.", choices=("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")),
        ConfigDef("compression.gzip.level", "INT", -1, "gzip level (1..9, -1 for the codec's default) for batches the broker compresses; accepted, no effect: the codec's default level is used.", validator=_gzip_level),
        ConfigDef("compression.lz4.level", "INT", 9, "lz4 level for batches the broker compresses; accepted, no effect: the codec's default level is used.", minimum=1, maximum=17),
        ConfigDef("compression.zstd.level", "INT", 3, "zstd level for batches the broker compresses; accepted, no effect: the codec's default level is used.", minimum=-131072, maximum=22),
        ConfigDef("min.insync.replicas", "INT", 1, "Replicas that must acknowledge acks=all produces.", minimum=1),
        ConfigDef("unclean.leader.election.enable", "BOOLEAN", False, "Cluster: let an out-of-sync replica lead when no in-sync one is left (may lose acknowledged records)."),
        ConfigDef("replica.lag.time.max.ms", "LONG", 30000, "Cluster: a follower that does not hold what the leader held this long ago leaves the ISR (its lag is a time, however many appends behind it is).", minimum=1, read_only=True),
        ConfigDef("replica.fetch.wait.max.ms", "INT", 500, "Cluster: how long a follower's Fetch waits at the leader for new records (a long poll) before it is answered empty.", minimum=0, maximum=60000, read_only=True),
        ConfigDef("replica.fetch.backoff.ms", "INT", 1000, "Cluster: a follower's longest wait before fetching again from a leader it cannot reach, or a partition it could not append.", minimum=0, read_only=True),
        ConfigDef("broker.session.timeout.ms", "INT", 9000, "Cluster: the etcd lease of a broker; it is declared dead this long after its last renewal.", minimum=1000, read_only=True),
        ConfigDef("broker.rack", "STRING", "", "Cluster: this broker's rack, for rack-aware replica placement.", read_only=True),
        ConfigDef("offsets.topic.replication.factor", "INT", 3, "Cluster: replication factor of __consumer_offsets (created once this many brokers are live).", minimum=1, read_only=True),
        ConfigDef("offsets.topic.segment.bytes", "INT", 104857600, "segment.bytes of __consumer_offsets (compacted: only closed segments are cleaned, so this bounds what a start replays uncleaned).", minimum=1, read_only=True),
        ConfigDef("offsets.commit.timeout.ms", "INT", 5000, "An offset commit fails (REQUEST_TIMED_OUT) when __consumer_offsets does not have it durable (and in its ISR) by then.", minimum=1, read_only=True),
        ConfigDef("replica.flush.interval.ms", "LONG", 1000, "Cluster, balanced and durable profiles: how often a follower fsyncs what it copied (nothing waits for a follower's fsync: the high watermark counts the in-sync replicas' copies and the leader's fsync); 0 fsyncs after every fetch that brought records. A follower flushes everything before it leads.", minimum=0, read_only=True),
        ConfigDef("replica.flush.interval.bytes", "LONG", 16 << 20, "Cluster, balanced and durable profiles: a follower fsyncs sooner than replica.flush.interval.ms once it holds this many bytes (all its followed partitions together) no fsync has covered.", minimum=1, read_only=True),
        ConfigDef("replica.page.cache.keep.bytes", "LONG", 8 << 20, "Cluster, balanced and durable profiles with replica.flush.interval.ms above 0: once a follower's flush has made its copies durable, it drops them from the page cache (Linux posix_fadvise DONTNEED) but the last this many bytes of each followed partition, so its next copies are written into pages just freed rather than into memory new to the process (on a VM, often memory the host must fault in first: several times the copy's cost). A follower reads its copies only once it leads. -1: never dropped (the kernel decides).", minimum=-1, read_only=True),
        ConfigDef("replica.write.behind.bytes", "LONG", 64 << 10, "Cluster, balanced and durable profiles: once a followed partition's copies add up to this many bytes, the follower starts their write-back to the disk without waiting for it (Linux sync_file_range), so its scheduled flush finds little left to write and the leaders' fsyncs on the same disk do not queue behind a second's copies; more than four times this in one fetch (a follower catching up) is left to the flush. 0: off. Durability is unchanged: only the flush makes copies durable.", minimum=0, read_only=True),
        ConfigDef("replica.backlog.max.bytes", "LONG", 64 << 20, "Cluster: bytes a partition's leader may hold above its high watermark (appended, not yet in every in-sync replica and its own fsync) before a connection whose acks=all Produce appended there stops reading until the followers have caught up again (Kafka reads a connection's next request only after answering the one before); 0: no bound.", minimum=0, read_only=True),
        ConfigDef("replica.high.watermark.checkpoint.interval.ms", "LONG", 5000, "Cluster: how often each replica's high watermark is written to replication-offset-checkpoint.", minimum=1, read_only=True),
        ConfigDef("controlled.shutdown.enable", "BOOLEAN", True, "Cluster: on SIGTERM, move this broker's leaderships to other in-sync replicas before stopping.", read_only=True),
        ConfigDef("controlled.shutdown.timeout.ms", "LONG", 30000, "Cluster: the longest a controlled shutdown waits for its leaderships to move.", minimum=0, read_only=True),
        ConfigDef("auto.leader.rebalance.enable", "BOOLEAN", True, "Cluster: move leadership back to each partition's preferred (first) replica once it is in sync.", read_only=True),
        ConfigDef("leader.imbalance.check.interval.seconds", "LONG", 300, "Cluster: how often the controller checks for partitions not led by their preferred replica.", minimum=1, read_only=True),
        ConfigDef("socket.request.max.bytes", "INT", 104857600, "Largest request frame accepted; larger closes the connection.", minimum=1),
        ConfigDef("max.broker.partitions", "INT", -1, "Most partition replicas this broker holds; CreateTopics and CreatePartitions beyond it get POLICY_VIOLATION. -1 derives it from the open files limit and memory (KIP-578's name).", minimum=-1, read_only=True),
        ConfigDef("queued.max.request.bytes", "LONG", 128 << 20, "Bytes of requests read and not yet answered, all connections together, before reading pauses (Kafka's default -1, unlimited, is not accepted: memory stays bounded).", minimum=1 << 20),
        ConfigDef("queued.max.requests", "INT", 500, "Requests read ahead of responses per connection before reading pauses.", minimum=1),
        ConfigDef("max.incremental.fetch.session.cache.slots", "INT", 1000, "Incremental fetch sessions (KIP-227) this broker keeps; 0 answers every fetch without a session.", minimum=0),
        ConfigDef("min.incremental.fetch.session.eviction.ms", "INT", 120000, "A full fetch session cache gives a slot to a new session from one idle, or created, at least this long ago.", minimum=0),
        ConfigDef("group.initial.rebalance.delay.ms", "INT", 3000, "Delay of a new group's first rebalance.", minimum=0),
        ConfigDef("offsets.retention.minutes", "INT", 10080, "Committed offsets of empty groups expire after this.", minimum=1),
        ConfigDef("offsets.retention.check.interval.ms", "LONG", 600000, "How often expired offsets are removed.", minimum=1),
        ConfigDef("producer.id.expiration.ms", "INT", 86400000, "An idempotent producer's state on a partition is forgotten this long after its last batch (it may then start at any sequence).", minimum=1),
        ConfigDef("producer.id.expiration.check.interval.ms", "INT", 600000, "How often expired idempotent producer state is removed.", minimum=1, read_only=True),
        # Transactions (Kafka's TransactionLogConfig / TransactionStateManagerConfig); not served yet.
        ConfigDef("transactional.id.expiration.ms", "INT", 604800000, "A transactional id idle this long in a final state is forgotten.", minimum=1),
        ConfigDef("transaction.max.timeout.ms", "INT", 900000, "Largest transaction.timeout.ms a producer may ask for; more gets INVALID_TRANSACTION_TIMEOUT.", minimum=1),
        ConfigDef("transaction.abort.timed.out.transaction.cleanup.interval.ms", "INT", 10000, "How often transactions open longer than their timeout are aborted.", minimum=1),
        ConfigDef("transaction.partition.verification.enable", "BOOLEAN", True, "Before a producer's first transactional batch in a partition, its leader asks the transaction coordinator (here or on another broker) whether the partition is in the transaction (KIP-890 part 1); a batch it does not know of is refused instead of opening a transaction no marker closes.", read_only=True),
        ConfigDef("transaction.remove.expired.transaction.cleanup.interval.ms", "INT", 3600000, "How often expired transactional ids are removed.", minimum=1),
        ConfigDef("transaction.state.log.num.partitions", "INT", 50, "Partitions of __transaction_state (fixed once created).", minimum=1, read_only=True),
        ConfigDef("transaction.state.log.replication.factor", "INT", 3, "Cluster: replication factor of __transaction_state (created once this many brokers are live).", minimum=1, read_only=True),
        ConfigDef("transaction.state.log.min.isr", "INT", 2, "min.insync.replicas of __transaction_state.", minimum=1, read_only=True),
        ConfigDef("transaction.state.log.segment.bytes", "INT", 104857600, "segment.bytes of __transaction_state.", minimum=1, read_only=True),
        ConfigDef("transaction.state.log.load.buffer.size", "INT", 5242880, "Bytes read at a time when a coordinator loads a __transaction_state partition.", minimum=1, read_only=True),
        ConfigDef("offset.metadata.max.bytes", "INT", 4096, "Largest metadata string of a committed offset.", minimum=0),
        ConfigDef("group.max.size", "INT", 2147483647, "Most members a consumer group may have.", minimum=1),
        ConfigDef("group.min.session.timeout.ms", "INT", 6000, "Smallest session timeout a member may ask for.", minimum=0),
        ConfigDef("group.max.session.timeout.ms", "INT", 1800000, "Largest session timeout a member may ask for.", minimum=0),
        ConfigDef("group.consumer.heartbeat.interval.ms", "INT", 5000, "Heartbeat interval given to consumer-protocol (KIP-848) members.", minimum=1),
        ConfigDef("group.consumer.min.heartbeat.interval.ms", "INT", 5000, "Smallest allowed group.consumer.heartbeat.interval.ms.", minimum=1),
        ConfigDef("group.consumer.max.heartbeat.interval.ms", "INT", 15000, "Largest allowed group.consumer.heartbeat.interval.ms.", minimum=1),
        ConfigDef("group.consumer.session.timeout.ms", "INT", 45000, "A consumer-protocol member without a heartbeat for this long is removed.", minimum=1),
        ConfigDef("group.consumer.min.session.timeout.ms", "INT", 45000, "Smallest allowed group.consumer.session.timeout.ms.", minimum=1),
        ConfigDef("group.consumer.max.session.timeout.ms", "INT", 60000, "Largest allowed group.consumer.session.timeout.ms.", minimum=1),
        ConfigDef("group.consumer.max.size", "INT", 2147483647, "Most members a consumer-protocol group may have.", minimum=1),
        ConfigDef("group.consumer.assignors", "LIST", "uniform,range", "Server-side assignors of consumer-protocol groups; the first is the default.", read_only=True),
        # Share groups (KIP-932), Kafka 4.2's names, defaults and ranges; the min/max pairs bound the group configs.
        ConfigDef("group.share.enable", "BOOLEAN", True, "Serve share groups (Kafka 4.2 turns them on with the share.version feature).", read_only=True),
        ConfigDef("group.share.session.timeout.ms", "INT", 45000, "A share group member without a heartbeat for this long is removed (default of share.session.timeout.ms).", minimum=1),
        ConfigDef("group.share.min.session.timeout.ms", "INT", 45000, "Smallest allowed share.session.timeout.ms.", minimum=1),
        ConfigDef("group.share.max.session.timeout.ms", "INT", 60000, "Largest allowed share.session.timeout.ms.", minimum=1),
        ConfigDef("group.share.heartbeat.interval.ms", "INT", 5000, "Heartbeat interval given to share group members (default of share.heartbeat.interval.ms).", minimum=1),
        ConfigDef("group.share.min.heartbeat.interval.ms", "INT", 5000, "Smallest allowed share.heartbeat.interval.ms.", minimum=1),
        ConfigDef("group.share.max.heartbeat.interval.ms", "INT", 15000, "Largest allowed share.heartbeat.interval.ms.", minimum=1),
        ConfigDef("group.share.max.size", "INT", 200, "Most members a share group may have.", minimum=1, maximum=1000),
        ConfigDef("group.share.assignors", "LIST", "simple", "Server-side assignor of share groups (Kafka's SimpleAssignor).", read_only=True, choices=("simple",)),
        ConfigDef("group.share.record.lock.duration.ms", "INT", 30000, "How long a share consumer holds an acquired record before it becomes available again (default of share.record.lock.duration.ms).", minimum=1000, maximum=3600000),
        ConfigDef("group.share.min.record.lock.duration.ms", "INT", 15000, "Smallest allowed share.record.lock.duration.ms.", minimum=1000, maximum=30000),
        ConfigDef("group.share.max.record.lock.duration.ms", "INT", 60000, "Largest allowed share.record.lock.duration.ms.", minimum=30000, maximum=3600000),
        ConfigDef("group.share.delivery.count.limit", "INT", 5, "Delivery attempts of a record before it is archived (default of share.delivery.count.limit).", minimum=2, maximum=10),
        ConfigDef("group.share.min.delivery.count.limit", "INT", 2, "Smallest allowed share.delivery.count.limit.", minimum=2, maximum=10),
        ConfigDef("group.share.max.delivery.count.limit", "INT", 10, "Largest allowed share.delivery.count.limit.", minimum=2, maximum=10),
        ConfigDef("group.share.partition.max.record.locks", "INT", 2000, "Records in flight (acquired or not yet past the start offset) per share-partition (default of share.partition.max.record.locks).", minimum=100, maximum=10000),
        ConfigDef("group.share.max.share.sessions", "INT", 2000, "Share sessions (ShareFetch sessions) this broker keeps; more are refused with SHARE_SESSION_LIMIT_REACHED.", minimum=1),
        ConfigDef("share.coordinator.snapshot.update.records.per.snapshot", "INT", 500, "ShareUpdate records written per share-partition between two ShareSnapshot records of __share_group_state.", minimum=0, maximum=500),
        ConfigDef("share.coordinator.state.topic.replication.factor", "INT", 3, "Cluster: replication factor of __share_group_state (created once this many brokers are live).", minimum=1, read_only=True),
        ConfigDef("share.coordinator.state.topic.prune.interval.ms", "LONG", 300000, "How often the leader of __share_group_state deletes the records no share-partition state needs any more (those before the oldest latest snapshot).", minimum=1),
        ConfigDef("share.coordinator.write.timeout.ms", "INT", 5000, "A share-state write fails when __share_group_state does not have it durable (and in its ISR) by then, a write forwarded to its leader included.", minimum=1, read_only=True),
        ConfigDef("errors.deadletterqueue.topic.name.prefix", "STRING", "dlq.", "KIP-1191: a share group's dead-letter topic must start with this prefix.", read_only=True),
        ConfigDef("push.allowed.hosts", "LIST", "", "Hosts push subscriptions may POST to: names, *.domain, IP addresses or networks (10.0.0.0/8); empty: any. Set it wherever untrusted users can create subscriptions (a broker that POSTs anywhere is a server-side request forgery risk). Checked at create and at every delivery.", read_only=True),
        ConfigDef("push.ssl.ca.location", "STRING", "", "PEM file of the CAs push deliveries trust for https endpoints (their certificates are always verified); empty: the system's CAs.", read_only=True),
        ConfigDef("push.max.in.flight.bytes", "LONG", 64 << 20, "Record bytes this broker's push deliveries hold in flight at once (all subscriptions); more waits.", minimum=1 << 16, read_only=True),
        *SECURITY_CONFIGS,
    )
}

# topic config name -> broker config that supplies its default (Kafka's ServerTopicConfigSynonyms).
TOPIC_CONFIG_DEFAULTS: dict[str, str] = {
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "segment.jitter.ms": "log.roll.jitter.ms",
    "segment.index.bytes": "log.index.size.max.bytes",
    "max.message.bytes": "message.max.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
    "cleanup.policy": "log.cleanup.policy",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "message.timestamp.type": "log.message.timestamp.type",
    "message.timestamp.before.max.ms": "log.message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms": "log.message.timestamp.after.max.ms",
    "durability.profile": "log.durability.profile",
    "flush.ms": "log.flush.interval.ms",
    "flush.messages": "log.flush.interval.messages",
    "preallocate": "log.preallocate",
    "compression.type": "compression.type",
    "compression.gzip.level": "compression.gzip.level",
    "compression.lz4.level": "compression.lz4.level",
    "compression.zstd.level": "compression.zstd.level",
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "local.retention.ms": "log.local.retention.ms",
    "local.retention.bytes": "log.local.retention.bytes",
}

# Topic configs no broker setting supplies (Kafka's LogConfig.CONFIGS_WITH_NO_SERVER_DEFAULTS).
TOPIC_ONLY_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in (
        ConfigDef("leader.replication.throttled.replicas", "LIST", "", "Replicas whose leader side replication is throttled ('*' or partition:broker pairs); accepted, no effect: Tidelog has no replication quotas.", validator=_throttled_replicas),
        ConfigDef("follower.replication.throttled.replicas", "LIST", "", "Replicas whose follower side replication is throttled ('*' or partition:broker pairs); accepted, no effect: Tidelog has no replication quotas.", validator=_throttled_replicas),
        ConfigDef("remote.storage.enable", "BOOLEAN", False, "Tiered storage; only false is accepted (Tidelog has none, as a Kafka broker without remote.log.storage.system.enable).", validator=_no_tiered_storage),
        ConfigDef("remote.log.copy.disable", "BOOLEAN", False, "Tiered storage; accepted, no effect."),
        ConfigDef("remote.log.delete.on.disable", "BOOLEAN", False, "Tiered storage; accepted, no effect."),
        ConfigDef("errors.deadletterqueue.group.enable", "BOOLEAN", False, "KIP-1191: share groups may use this topic as their dead-letter topic (errors.deadletterqueue.topic.name)."),
    )
}

def _ttl(name: str, value: int) -> None:
    if value == 0 or value < -1:
        raise ConfigError(f"{name}: {value} is neither -1 (no expiry) nor a positive number of milliseconds")


def _cel_filter(name: str, expression: str) -> None:
    """A share group's filter must compile (INVALID_CONFIG with the CEL compiler's message)."""
    if not expression.strip():
        return
    import cel  # the broker-side filters' engine (queues/filters.py); only loaded where one is set

    try:
        cel.compile(expression)
    except Exception as e:  # noqa: BLE001 - ValueError today; any compiler complaint is the answer
        raise ConfigError(f"{name}: the CEL expression does not compile: {e}") from None


# Tidelog's queue-mode topic configs (issue 14, docs/queues.md): priority, delay, TTL (share groups
# only) and the delay topic (every consumer). Kafka has no such configs, hence the tidelog. prefix.
QUEUE_TOPIC_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in (
        ConfigDef("tidelog.priority.enable", "BOOLEAN", False, "Share groups acquire this topic's records by priority (the priority header, higher first) within the look-ahead window instead of in offset order."),
        ConfigDef("tidelog.priority.header", "STRING", "priority", "The record header holding a record's priority, an integer 0-9 (higher first)."),
        ConfigDef("tidelog.priority.default", "INT", 0, "The priority of a record without a valid priority header.", minimum=0, maximum=9),
        ConfigDef("tidelog.priority.lookahead.records", "INT", 1000, "How many records past a share-partition's start offset priority selection looks at (bounded by share.partition.max.record.locks).", minimum=1, maximum=10000),
        ConfigDef("tidelog.priority.aging.ms", "LONG", 60000, "A waiting record's priority rises one level per this many milliseconds since it was appended, so low priorities are not starved; 0 for no aging.", minimum=0),
        ConfigDef("tidelog.delay.ms", "LONG", 0, "Share groups deliver this topic's records no earlier than this long after their timestamp (a record's tidelog-delay-ms or tidelog-deliver-at header overrides it).", minimum=0),
        ConfigDef("tidelog.ttl.ms", "LONG", -1, "Share groups never deliver this topic's records older than this (archived instead; a record's tidelog-ttl-ms header overrides it); -1: no expiry.", minimum=-1, validator=_ttl),
        ConfigDef("tidelog.delay.target.topic", "STRING", "", "Makes this topic a delay topic: each record is appended to the named topic when due (its tidelog-deliver-at / tidelog-delay-ms header, else tidelog.delay.ms), for every kind of consumer; empty: not a delay topic."),
    )
}
TOPIC_ONLY_CONFIGS.update(QUEUE_TOPIC_CONFIGS)

TOPIC_CONFIG_NAMES: tuple[str, ...] = tuple(sorted(set(TOPIC_CONFIG_DEFAULTS) | set(TOPIC_ONLY_CONFIGS)))


def topic_config_def(name: str) -> ConfigDef:
    """The definition of a topic config (its broker default's type and checks, the topic's name)."""
    own = TOPIC_ONLY_CONFIGS.get(name)
    if own is not None:
        return own
    broker_name = TOPIC_CONFIG_DEFAULTS.get(name)
    if broker_name is None:
        raise KafkaError(ErrorCode.invalid_config, f"Unknown topic config name: {name}")
    d = BROKER_CONFIGS[broker_name]
    return ConfigDef(name, d.type, d.default, d.doc, d.choices, d.minimum, maximum=d.maximum, validator=d.validator)


def validate_topic_configs(configs: dict[str, str | None]) -> dict[str, str]:
    """Check topic overrides (names and values); return them normalised. Raises INVALID_CONFIG."""
    result = {}
    parsed = {}
    for name, value in configs.items():
        definition = topic_config_def(name)
        if value is None:
            raise KafkaError(ErrorCode.invalid_config, f"Null value for topic config {name}")
        try:
            parsed[name] = definition.parse(value)
        except ConfigError as e:
            raise KafkaError(ErrorCode.invalid_config, f"Invalid value {value} for configuration {name}: {str(e).removeprefix(f'{name}: ')}") from None
        result[name] = render(parsed[name])
    min_lag = parsed.get("min.compaction.lag.ms", topic_config_def("min.compaction.lag.ms").default)
    max_lag = parsed.get("max.compaction.lag.ms", topic_config_def("max.compaction.lag.ms").default)
    if min_lag > max_lag:  # Kafka's LogConfig.validateValues
        raise KafkaError(ErrorCode.invalid_config, f"conflict topic config setting min.compaction.lag.ms ({min_lag}) > "
                                                   f"max.compaction.lag.ms ({max_lag})")
    return result


# --- group configs (the GROUP config resource of DescribeConfigs / IncrementalAlterConfigs) ---------------
# group config name -> broker config that supplies its default (None: the group config's own default). The
# share.* names are Kafka's (share.delivery.count.limit and share.partition.max.record.locks are Kafka 4.3's,
# KIP-1240); errors.deadletterqueue.* are KIP-1191's dead-letter settings of a share group.
GROUP_CONFIG_DEFAULTS: dict[str, str | None] = {
    "share.auto.offset.reset": None,
    "share.isolation.level": None,
    "share.record.lock.duration.ms": "group.share.record.lock.duration.ms",
    "share.session.timeout.ms": "group.share.session.timeout.ms",
    "share.heartbeat.interval.ms": "group.share.heartbeat.interval.ms",
    "share.delivery.count.limit": "group.share.delivery.count.limit",
    "share.partition.max.record.locks": "group.share.partition.max.record.locks",
    "errors.deadletterqueue.topic.name": None,
    "errors.deadletterqueue.copy.record.enable": None,
}


def _at_least_one(name: str, value: float) -> None:
    if not value >= 1.0:
        raise ConfigError(f"{name}: {value} is below the minimum 1.0")


# Tidelog's queue-mode group configs (issue 14): retry back-off of released and lock-expired records,
# and the broker-side CEL filter. Kafka has no such configs, hence the tidelog. prefix.
QUEUE_GROUP_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in (
        ConfigDef("tidelog.retry.backoff.initial.ms", "LONG", 0, "A released or lock-expired record is available again only this long after its first delivery (0: at once, as Kafka); later deliveries wait longer (multiplier).", minimum=0, maximum=86400000),
        ConfigDef("tidelog.retry.backoff.multiplier", "DOUBLE", 2.0, "The retry back-off grows by this factor per further delivery of a record.", validator=_at_least_one),
        ConfigDef("tidelog.retry.backoff.max.ms", "LONG", 300000, "The longest retry back-off.", minimum=0, maximum=86400000),
        ConfigDef("tidelog.filter", "STRING", "", "A CEL expression over a record's key (bytes), headers (map of string to bytes) and timestamp (ms): records for which it is not true are never delivered to the group (archived for it); empty: no filter.", validator=_cel_filter),
    )
}
GROUP_CONFIG_DEFAULTS.update(dict.fromkeys(QUEUE_GROUP_CONFIGS))

_GROUP_ONLY_CONFIGS = {
    d.name: d
    for d in (
        ConfigDef("share.auto.offset.reset", "STRING", "latest", "Where a share group starts on a partition it has no state for: latest, earliest or by_duration:<ISO 8601 duration>."),
        ConfigDef("share.isolation.level", "STRING", "read_uncommitted", "read_committed delivers only committed transactional records.", choices=("read_uncommitted", "read_committed")),
        ConfigDef("errors.deadletterqueue.topic.name", "STRING", "", "The share group's dead-letter topic (KIP-1191); empty for none."),
        ConfigDef("errors.deadletterqueue.copy.record.enable", "BOOLEAN", False, "Copy the record's key, value and headers into its dead-letter record, not only the context headers."),
    )
}

# group config -> (broker config of its smallest, of its largest allowed value)
_GROUP_CONFIG_BOUNDS = {
    "share.record.lock.duration.ms": ("group.share.min.record.lock.duration.ms", "group.share.max.record.lock.duration.ms"),
    "share.session.timeout.ms": ("group.share.min.session.timeout.ms", "group.share.max.session.timeout.ms"),
    "share.heartbeat.interval.ms": ("group.share.min.heartbeat.interval.ms", "group.share.max.heartbeat.interval.ms"),
    "share.delivery.count.limit": ("group.share.min.delivery.count.limit", "group.share.max.delivery.count.limit"),
}


def group_config_def(name: str) -> ConfigDef:
    """The definition of a group config. Raises INVALID_CONFIG for an unknown name."""
    if name not in GROUP_CONFIG_DEFAULTS:
        raise KafkaError(ErrorCode.invalid_config, f"Unknown group config name: {name}")
    broker_name = GROUP_CONFIG_DEFAULTS[name]
    if broker_name is None:
        return _GROUP_ONLY_CONFIGS.get(name) or QUEUE_GROUP_CONFIGS[name]
    d = BROKER_CONFIGS[broker_name]
    return ConfigDef(name, d.type, d.default, d.doc, d.choices, d.minimum, maximum=d.maximum)


def parse_share_auto_offset_reset(value: str) -> tuple[str, int]:
    """``latest`` / ``earliest`` -> (strategy, 0); ``by_duration:PnDTnHnMn.nS`` -> ("by_duration", ms)."""
    text = value.strip().lower()
    if text in ("latest", "earliest"):
        return text, 0
    if text.startswith("by_duration:"):
        return "by_duration", _iso8601_duration_ms(value.strip()[len("by_duration:"):])
    raise ConfigError(f"{value!r} is not latest, earliest or by_duration:<ISO 8601 duration>")


def _iso8601_duration_ms(text: str) -> int:
    """Java's Duration.parse subset Kafka accepts: PnDTnHnMn.nS (days, hours, minutes, seconds), not negative."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d{1,9})?)S)?)?", text.strip().upper())
    if match is None or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ConfigError(f"{text!r} is not an ISO 8601 duration like P1DT2H3M4.5S (a negative one is not allowed)")
    days, hours, minutes, seconds = match.groups()
    total_s = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
    return total_s * 1000 + int(round(float(seconds or 0) * 1000))


def validate_group_configs(configs: dict[str, str | None], broker: "BrokerConfig") -> dict[str, str]:
    """Check group config overrides (names, values, and the broker's min/max bounds, as Kafka's
    GroupConfig.validate does); return them normalised. Raises INVALID_CONFIG with the reason."""
    result: dict[str, str] = {}
    for name, value in configs.items():
        definition = group_config_def(name)
        if value is None:
            raise KafkaError(ErrorCode.invalid_config, f"Null value for group config {name}")
        try:
            parsed = definition.parse(value)
            if name == "share.auto.offset.reset":
                parse_share_auto_offset_reset(parsed)
        except ConfigError as e:
            raise KafkaError(ErrorCode.invalid_config, f"Invalid value {value} for configuration {name}: {str(e).removeprefix(f'{name}: ')}") from None
        prefix = broker["errors.deadletterqueue.topic.name.prefix"]
        if name == "errors.deadletterqueue.topic.name" and parsed and not parsed.startswith(prefix):
            raise KafkaError(ErrorCode.invalid_config, f"{name} must start with {prefix!r} "
                                                       "(errors.deadletterqueue.topic.name.prefix)")
        bounds = _GROUP_CONFIG_BOUNDS.get(name)
        if bounds is not None:
            low, high = broker[bounds[0]], broker[bounds[1]]
            if parsed < low:
                raise KafkaError(ErrorCode.invalid_config, f"{name} must be greater than or equal to {bounds[0]} ({low})")
            if parsed > high:
                raise KafkaError(ErrorCode.invalid_config, f"{name} must be less than or equal to {bounds[1]} ({high})")
        result[name] = render(parsed)
    session = broker.group_value(result, "share.session.timeout.ms")
    heartbeat = broker.group_value(result, "share.heartbeat.interval.ms")
    if session <= heartbeat:
        raise KafkaError(ErrorCode.invalid_config,
                         "share.session.timeout.ms must be greater than share.heartbeat.interval.ms")
    return result


def _validate_share_settings(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Kafka's cross-checks of the group.share.* broker settings (ShareGroupConfig / GroupCoordinatorConfig)."""
    def where(name: str) -> str:
        return f"{name} (from {sources.get(name, 'default')})"

    for base, low, high in (
        ("group.share.record.lock.duration.ms", "group.share.min.record.lock.duration.ms", "group.share.max.record.lock.duration.ms"),
        ("group.share.session.timeout.ms", "group.share.min.session.timeout.ms", "group.share.max.session.timeout.ms"),
        ("group.share.heartbeat.interval.ms", "group.share.min.heartbeat.interval.ms", "group.share.max.heartbeat.interval.ms"),
        ("group.share.delivery.count.limit", "group.share.min.delivery.count.limit", "group.share.max.delivery.count.limit"),
    ):
        if values[base] < values[low]:
            raise ConfigError(f"{where(base)} must be greater than or equal to {where(low)}")
        if values[base] > values[high]:
            raise ConfigError(f"{where(base)} must be less than or equal to {where(high)}")
    if values["group.share.heartbeat.interval.ms"] >= values["group.share.session.timeout.ms"]:
        raise ConfigError(f"{where('group.share.heartbeat.interval.ms')} must be less than "
                          f"{where('group.share.session.timeout.ms')}")
    if values["group.share.max.share.sessions"] < values["group.share.max.size"]:
        raise ConfigError(f"{where('group.share.max.share.sessions')} must be greater than or equal to "
                          f"{where('group.share.max.size')}")


class BrokerConfig:
    """The broker's resolved settings; ``sources`` says where each non-default value came from
    ("file" | "env" | "flag" | "dynamic", as DescribeConfigs reports it) and ``origins`` how an
    operator would find it (the file's name, the environment variable, the flag)."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str], origins: dict[str, str] | None = None) -> None:
        self.values = values
        self.sources = sources
        self.origins = origins or {}

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def describe(self, name: str) -> str:
        """``http.port=9644 from --http-port``: a setting's value and where it came from, for errors."""
        return f"{name}={render(self.values[name])} {self.origins.get(name, 'by default')}"

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        env: dict[str, str] | None = None,
        overrides: dict[str, str] | None = None,
        flags: dict[str, str] | None = None,
    ) -> "BrokerConfig":
        """Resolve the settings (see the module docstring). ``flags`` names the command-line option
        that gave an override (default ``--set``). Raises ConfigError, one line naming the
        setting and where its value came from."""
        values = {name: d.default for name, d in BROKER_CONFIGS.items()}
        sources: dict[str, str] = {}
        origins: dict[str, str] = {}

        def apply(name: str, raw: Any, source: str, origin: str) -> None:
            definition = BROKER_CONFIGS.get(name)
            if definition is None:
                raise ConfigError(f"unknown broker setting {name!r} ({origin})")
            try:
                values[name] = definition.parse(raw)
            except ConfigError as e:
                raise ConfigError(f"{e} ({origin})") from None
            sources[name] = source
            origins[name] = origin

        if config_file is not None:
            for name, raw in _flatten(read_toml(config_file)).items():
                apply(name, raw, "file", f"in {config_file}")
        for key, raw in (os.environ if env is None else env).items():
            if key.startswith("TIDELOG_") and key not in _NON_CONFIG_ENV:
                apply(key[len("TIDELOG_"):].lower().replace("_", "."), raw, "env", f"from environment variable {key}")
        for name, raw in (overrides or {}).items():
            apply(name, raw, "flag", f"from {(flags or {}).get(name, '--set')}")
        if "node.id" not in sources and "broker.id" in sources:
            values["node.id"] = values["broker.id"]
        values["broker.id"] = values["node.id"]
        _validate_share_settings(values, sources)
        return cls(values, sources, origins)

    def topic_value(self, topic_configs: dict[str, str], name: str) -> Any:
        """A topic config's effective value: the topic override, else the broker default."""
        definition = topic_config_def(name)
        if name in topic_configs:
            return definition.parse(topic_configs[name])
        if name in TOPIC_ONLY_CONFIGS:
            return definition.default
        return self.values[TOPIC_CONFIG_DEFAULTS[name]]

    def group_value(self, group_configs: dict[str, str], name: str) -> Any:
        """A group config's effective value: the group override, else its broker default."""
        definition = group_config_def(name)
        if name in group_configs:
            return definition.parse(group_configs[name])
        broker_name = GROUP_CONFIG_DEFAULTS[name]
        return definition.default if broker_name is None else self.values[broker_name]


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML settings file; ConfigError (naming the file, the line and column) if unreadable."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None


# Environment variables of ours that are not broker settings.
_NON_CONFIG_ENV = {"TIDELOG_FAULTS", "TIDELOG_LOG_LEVEL", "TIDELOG_LOG_FORMAT", "TIDELOG_DATA_DIR", "TIDELOG_VENV", "TIDELOG_BOOTSTRAP_SERVER",
                   "TIDELOG_HOST", "TIDELOG_PORT", "TIDELOG_CLUSTER", "TIDELOG_CLOCK_SKEW_MS",
                   "TIDELOG_UPDATE_SCREENSHOTS"}


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML tables become dotted names: ``[log] retention.ms = 1`` is ``log.retention.ms``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
