"""Broker and topic configuration: Kafka's names and defaults, one loader, validation.

Broker settings resolve, later winning: built-in default < TOML file (``--config``) <
``TIDELOG_*`` environment variables (``TIDELOG_NUM_PARTITIONS`` is ``num.partitions``) <
``--set name=value``. A topic config (``retention.ms``) falls back to its broker default
(``log.retention.ms``) unless the topic overrides it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tidelog.protocol.errors import ErrorCode, KafkaError

DURABILITY_PROFILES = ("throughput", "balanced", "durable")


class ConfigError(ValueError):
    pass


def _parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"expected a boolean, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"expected an integer, got {text!r}") from None


def _parse_str(text: str) -> str:
    return str(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "BOOLEAN": _parse_bool,
    "INT": _parse_int,
    "LONG": _parse_int,
    "STRING": _parse_str,
    "LIST": _parse_str,
    "DOUBLE": float,
    "PASSWORD": _parse_str,
    "CLASS": _parse_str,
}

# DescribeConfigs config_type codes (KIP-569).
CONFIG_TYPE_CODES = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7, "CLASS": 8, "PASSWORD": 9}


@dataclass(frozen=True)
class ConfigDef:
    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    read_only: bool = False

    def parse(self, value: Any) -> Any:
        parsed = _PARSERS[self.type](value) if isinstance(value, str) else value
        if self.type in ("INT", "LONG") and not isinstance(parsed, int):
            parsed = _parse_int(str(parsed))
        if self.type == "BOOLEAN" and not isinstance(parsed, bool):
            parsed = _parse_bool(str(parsed))
        if self.choices is not None and parsed not in self.choices:
            raise ConfigError(f"{self.name}: {parsed!r} is not one of {', '.join(self.choices)}")
        if self.minimum is not None and parsed < self.minimum:
            raise ConfigError(f"{self.name}: {parsed} is below the minimum {self.minimum}")
        return parsed


def render(value: Any) -> str:
    """A config value as Kafka shows it in DescribeConfigs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_DAY_MS = 24 * 3600 * 1000

BROKER_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in (
        ConfigDef("node.id", "INT", 1, "This broker's id.", read_only=True),
        ConfigDef("broker.id", "INT", 1, "Alias of node.id.", read_only=True),
        ConfigDef("cluster.id", "STRING", "", "The cluster id; generated on first start when empty.", read_only=True),
        ConfigDef("advertised.listeners", "STRING", "", "Where clients reach this broker, PLAINTEXT://host:port; the listener when empty.", read_only=True),
        ConfigDef("http.port", "INT", 9644, "HTTP port for /metrics and /health (0 picks a free one, -1 disables).", minimum=-1, read_only=True),
        ConfigDef("num.partitions", "INT", 1, "Default partition count of auto-created topics.", minimum=1),
        ConfigDef("default.replication.factor", "INT", 1, "Default replication factor of auto-created topics.", minimum=1),
        ConfigDef("auto.create.topics.enable", "BOOLEAN", True, "Create a topic on first Metadata or Produce request."),
        ConfigDef("delete.topic.enable", "BOOLEAN", True, "Allow DeleteTopics."),
        ConfigDef("message.max.bytes", "INT", 1048588, "Largest record batch accepted (default for max.message.bytes).", minimum=0),
        ConfigDef("log.segment.bytes", "INT", 1 << 30, "Segment file size before rolling.", minimum=14),
        ConfigDef("log.roll.ms", "LONG", 7 * _DAY_MS, "Roll a segment after this long.", minimum=1),
        ConfigDef("log.retention.ms", "LONG", 14 * _DAY_MS, "Delete segments older than this; -1 keeps forever.", minimum=-1),
        ConfigDef("log.retention.bytes", "LONG", -1, "Delete the oldest segments of a partition above this size; -1 for no limit.", minimum=-1),
        ConfigDef("log.retention.check.interval.ms", "LONG", 300000, "How often retention runs.", minimum=1),
        ConfigDef("log.index.interval.bytes", "INT", 4096, "Bytes of log between offset index entries.", minimum=0),
        ConfigDef("log.cleanup.policy", "LIST", "delete", "delete or compact.", choices=("delete", "compact", "compact,delete", "delete,compact")),
        ConfigDef("log.message.timestamp.type", "STRING", "CreateTime", "CreateTime or LogAppendTime.", choices=("CreateTime", "LogAppendTime")),
        ConfigDef("log.durability.profile", "STRING", "balanced", "throughput, balanced (group fsync before acks) or durable (fsync per produce).", choices=DURABILITY_PROFILES),
        ConfigDef("log.flush.interval.ms", "LONG", 5, "Group-commit window of the balanced profile.", minimum=0),
        ConfigDef("compression.type", "STRING", "producer", "Topic compression; producer keeps what the producer sent.", choices=("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")),
        ConfigDef("min.insync.replicas", "INT", 1, "Replicas that must acknowledge acks=all produces.", minimum=1),
        ConfigDef("unclean.leader.election.enable", "BOOLEAN", False, "Cluster: let an out-of-sync replica lead when no in-sync one is left (may lose acknowledged records)."),
        ConfigDef("replica.lag.time.max.ms", "LONG", 30000, "Cluster: a follower not caught up for this long leaves the ISR.", minimum=1, read_only=True),
        ConfigDef("broker.session.timeout.ms", "INT", 9000, "Cluster: the etcd lease of a broker; it is declared dead this long after its last renewal.", minimum=1000, read_only=True),
        ConfigDef("broker.rack", "STRING", "", "Cluster: this broker's rack, for rack-aware replica placement.", read_only=True),
        ConfigDef("offsets.topic.replication.factor", "INT", 3, "Cluster: replication factor of __consumer_offsets (created once this many brokers are live).", minimum=1, read_only=True),
        ConfigDef("offsets.commit.timeout.ms", "INT", 5000, "Cluster: an offset commit fails (REQUEST_TIMED_OUT) when the ISR of __consumer_offsets does not have it by then.", minimum=1, read_only=True),
        ConfigDef("replica.high.watermark.checkpoint.interval.ms", "LONG", 5000, "Cluster: how often each replica's high watermark is written to replication-offset-checkpoint.", minimum=1, read_only=True),
        ConfigDef("controlled.shutdown.enable", "BOOLEAN", True, "Cluster: on SIGTERM, move this broker's leaderships to other in-sync replicas before stopping.", read_only=True),
        ConfigDef("controlled.shutdown.timeout.ms", "LONG", 30000, "Cluster: the longest a controlled shutdown waits for its leaderships to move.", minimum=0, read_only=True),
        ConfigDef("auto.leader.rebalance.enable", "BOOLEAN", True, "Cluster: move leadership back to each partition's preferred (first) replica once it is in sync.", read_only=True),
        ConfigDef("leader.imbalance.check.interval.seconds", "LONG", 300, "Cluster: how often the controller checks for partitions not led by their preferred replica.", minimum=1, read_only=True),
        ConfigDef("socket.request.max.bytes", "INT", 104857600, "Largest request frame accepted; larger closes the connection.", minimum=1),
        ConfigDef("queued.max.requests", "INT", 500, "Requests read ahead of responses per connection before reading pauses.", minimum=1),
        ConfigDef("group.initial.rebalance.delay.ms", "INT", 3000, "Delay of a new group's first rebalance.", minimum=0),
        ConfigDef("offsets.retention.minutes", "INT", 10080, "Committed offsets of empty groups expire after this.", minimum=1),
        ConfigDef("offsets.retention.check.interval.ms", "LONG", 600000, "How often expired offsets are removed.", minimum=1),
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
    )
}

# topic config name -> broker config that supplies its default.
TOPIC_CONFIG_DEFAULTS: dict[str, str] = {
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "max.message.bytes": "message.max.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "cleanup.policy": "log.cleanup.policy",
    "message.timestamp.type": "log.message.timestamp.type",
    "durability.profile": "log.durability.profile",
    "flush.ms": "log.flush.interval.ms",
    "compression.type": "compression.type",
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
}


def topic_config_def(name: str) -> ConfigDef:
    """The definition of a topic config (its broker default's type and checks, the topic's name)."""
    broker_name = TOPIC_CONFIG_DEFAULTS.get(name)
    if broker_name is None:
        raise KafkaError(ErrorCode.invalid_config, f"Unknown topic config name: {name}")
    d = BROKER_CONFIGS[broker_name]
    return ConfigDef(name, d.type, d.default, d.doc, d.choices, d.minimum)


def validate_topic_configs(configs: dict[str, str | None]) -> dict[str, str]:
    """Check topic overrides (names and values); return them normalised. Raises INVALID_CONFIG."""
    result = {}
    for name, value in configs.items():
        definition = topic_config_def(name)
        if value is None:
            raise KafkaError(ErrorCode.invalid_config, f"Null value for topic config {name}")
        try:
            result[name] = render(definition.parse(value))
        except ConfigError as e:
            raise KafkaError(ErrorCode.invalid_config, f"Invalid value {value} for configuration {name}: {e}") from None
    return result


class BrokerConfig:
    """The broker's resolved settings; ``sources`` says where each non-default value came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]) -> None:
        self.values = values
        self.sources = sources  # name -> "file" | "env" | "flag" | "dynamic"

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        env: dict[str, str] | None = None,
        overrides: dict[str, str] | None = None,
    ) -> "BrokerConfig":
        values = {name: d.default for name, d in BROKER_CONFIGS.items()}
        sources: dict[str, str] = {}

        def apply(name: str, raw: Any, source: str) -> None:
            definition = BROKER_CONFIGS.get(name)
            if definition is None:
                raise ConfigError(f"unknown broker setting {name!r} (from {source})")
            values[name] = definition.parse(raw)
            sources[name] = source

        if config_file is not None:
            with open(config_file, "rb") as f:
                for name, raw in _flatten(tomllib.load(f)).items():
                    apply(name, raw, "file")
        for key, raw in (os.environ if env is None else env).items():
            if key.startswith("TIDELOG_") and key not in _NON_CONFIG_ENV:
                apply(key[len("TIDELOG_"):].lower().replace("_", "."), raw, "env")
        for name, raw in (overrides or {}).items():
            apply(name, raw, "flag")
        if "node.id" not in sources and "broker.id" in sources:
            values["node.id"] = values["broker.id"]
        values["broker.id"] = values["node.id"]
        return cls(values, sources)

    def topic_value(self, topic_configs: dict[str, str], name: str) -> Any:
        """A topic config's effective value: the topic override, else the broker default."""
        definition = topic_config_def(name)
        if name in topic_configs:
            return definition.parse(topic_configs[name])
        return self.values[TOPIC_CONFIG_DEFAULTS[name]]


# Environment variables of ours that are not broker settings.
_NON_CONFIG_ENV = {"TIDELOG_FAULTS", "TIDELOG_LOG_LEVEL", "TIDELOG_LOG_FORMAT", "TIDELOG_DATA_DIR", "TIDELOG_VENV", "TIDELOG_BOOTSTRAP_SERVER",
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
