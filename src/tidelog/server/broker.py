"""The broker: its configuration, the log manager, the metadata store, and the listener.

Also the two services handlers share: topic creation (explicit and automatic) with Kafka's
validation, and the fetch wake-up (a fetch waiting for data is woken by the next append to one
of its partitions, not by polling). Not thread-safe; everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

from tidelog.cluster.metadata import EmbeddedMetadataStore, TopicRecord, new_topic_id
from tidelog.config import BrokerConfig, validate_topic_configs
from tidelog.handlers.registry import load_all
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.server.metrics import BrokerMetrics
from tidelog.storage.log import LogConfig, PartitionLog
from tidelog.storage.manager import LogManager

logger = logging.getLogger(__name__)

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_NAME_LENGTH = 249
MAX_PARTITIONS = 10000


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate: non-empty, at most 249 chars, [a-zA-Z0-9._-], not '.' or '..'."""
    if not name or name in (".", ".."):
        raise KafkaError(ErrorCode.invalid_topic_exception, f"Topic name {name!r} is illegal")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise KafkaError(ErrorCode.invalid_topic_exception, f"Topic name {name!r} is longer than {MAX_TOPIC_NAME_LENGTH} characters")
    if not _LEGAL_TOPIC.match(name):
        raise KafkaError(
            ErrorCode.invalid_topic_exception,
            f"Topic name {name!r} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'",
        )


class Broker:
    def __init__(self, config: BrokerConfig, data_dir: Path, host: str = "127.0.0.1", port: int = 9092) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.node_id: int = config["node.id"]
        self.advertised_host: str = config["advertised.host"] or host
        self.metrics = BrokerMetrics()
        self.metadata = EmbeddedMetadataStore(self.data_dir)
        self.logs: LogManager | None = None
        self.connections: set = set()
        self.started_at_ms = int(time.time() * 1000)
        self._server: asyncio.base_events.Server | None = None
        self._fetch_waiters: dict[tuple[str, int], set[asyncio.Future]] = {}
        self._creating: dict[str, asyncio.Future] = {}
        from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
        from tidelog.groups.offsets_topic import ConsumerOffsetsTopic

        self.groups = GroupCoordinator(GroupSettings.from_config(config), ConsumerOffsetsTopic(self))

    @property
    def cluster_id(self) -> str:
        return self.metadata.cluster_id

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.metadata.load(self.config["cluster.id"])
        load_all()
        self.logs = LogManager(
            self.data_dir,
            self.log_config({}),
            retention_check_interval_ms=self.config["log.retention.check.interval.ms"],
        )
        self.logs.open_all({name: self.log_config(t.configs) for name, t in self.metadata.topics.items()})
        # A topic whose partition directories are missing (new, or lost) gets empty logs.
        for topic in self.metadata.topics.values():
            for partition in range(topic.partitions):
                if self.logs.get(topic.name, partition) is None:
                    self.logs.create(topic.name, partition, self.log_config(topic.configs))
        await self.logs.start()
        await self.groups.start()
        from tidelog.server.connection import KafkaConnection

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        sockets = self._server.sockets or []
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        logger.info(
            "Tidelog broker %d listening on %s:%d, data in %s, cluster %s",
            self.node_id, self.host, self.port, self.data_dir, self.cluster_id,
        )

    async def stop(self) -> None:
        logger.info("shutting down: closing listener and %d connections", len(self.connections))
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.groups.stop()
        if self.logs is not None:
            await self.logs.close()
        logger.info("shutdown complete: logs flushed, checkpoints written")

    # --- topics -----------------------------------------------------------------------
    def log_config(self, topic_configs: dict[str, str]) -> LogConfig:
        value = lambda name: self.config.topic_value(topic_configs, name)  # noqa: E731
        return LogConfig(
            segment_bytes=value("segment.bytes"),
            segment_ms=value("segment.ms"),
            index_interval_bytes=value("index.interval.bytes"),
            retention_ms=value("retention.ms"),
            retention_bytes=value("retention.bytes"),
            durability=value("durability.profile"),
            flush_interval_ms=value("flush.ms"),
        )

    def topic_value(self, topic: str, name: str):
        record = self.metadata.topics.get(topic)
        return self.config.topic_value(record.configs if record else {}, name)

    def check_new_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str | None]) -> dict[str, str]:
        """Kafka's CreateTopics validation, in its order; returns the normalised configs."""
        validate_topic_name(name)
        if name in self.metadata.topics or name in self._creating:
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
        if partitions < 1 or partitions > MAX_PARTITIONS:
            raise KafkaError(ErrorCode.invalid_partitions, f"Number of partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}.")
        if replication_factor < 1:
            raise KafkaError(ErrorCode.invalid_replication_factor, "Replication factor must be larger than 0.")
        live_brokers = 1
        if replication_factor > live_brokers:
            raise KafkaError(
                ErrorCode.invalid_replication_factor,
                f"Unable to replicate the partition {replication_factor} time(s): The target replication factor of "
                f"{replication_factor} cannot be reached because only {live_brokers} broker(s) are registered.",
            )
        return validate_topic_configs(configs)

    async def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> TopicRecord:
        """Create a validated topic: metadata first, then its partition logs."""
        record = TopicRecord(name, new_topic_id(), partitions, replication_factor, configs)
        done = asyncio.get_running_loop().create_future()
        self._creating[name] = done
        try:
            await self.metadata.create_topic(record)
            log_config = self.log_config(configs)
            for partition in range(partitions):
                self.logs.create(name, partition, log_config)
        finally:
            del self._creating[name]
            done.set_result(None)
        logger.info("created topic %s (id %s) with %d partitions, configs %s", name, record.topic_id, partitions, configs or "{}")
        return record

    async def auto_create_topic(self, name: str) -> TopicRecord | None:
        """Create a topic on first use when auto.create.topics.enable; None when not allowed."""
        if name in self._creating:
            await self._creating[name]
        record = self.metadata.topics.get(name)
        if record is not None or not self.config["auto.create.topics.enable"]:
            return record
        replication_factor = min(self.config["default.replication.factor"], 1)
        self.check_new_topic(name, self.config["num.partitions"], replication_factor, {})
        return await self.create_topic(name, self.config["num.partitions"], replication_factor, {})

    async def delete_topic(self, name: str) -> None:
        record = self.metadata.topics[name]
        await self.metadata.delete_topic(name)
        self.logs.delete_topic(name)
        logger.info("deleted topic %s (id %s)", name, record.topic_id)

    def topic_by_id(self, topic_id) -> TopicRecord | None:
        for record in self.metadata.topics.values():
            if record.topic_id == topic_id:
                return record
        return None

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get(topic, partition)

    # --- fetch wake-up -----------------------------------------------------------------
    def notify_append(self, topic: str, partition: int) -> None:
        waiters = self._fetch_waiters.pop((topic, partition), None)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_for_append(self, partitions: list[tuple[str, int]], timeout_s: float) -> None:
        """Return when one of ``partitions`` gets an append, or after ``timeout_s``."""
        waiter = asyncio.get_running_loop().create_future()
        for key in partitions:
            self._fetch_waiters.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            for key in partitions:
                waiters = self._fetch_waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._fetch_waiters[key]


def now_ms() -> int:
    return int(time.time() * 1000)
