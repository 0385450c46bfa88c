"""The broker: its configuration, the log manager, the metadata store, and the listener.

Also the two services handlers share: topic creation (explicit and automatic) with Kafka's
validation, and the fetch wake-up (a fetch waiting for data is woken by the next append to one
of its partitions, not by polling). Not thread-safe; everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Callable

from tidelog import __version__
from tidelog.cluster.etcd_store import EtcdUnavailable
from tidelog.cluster.metadata import BrokerInfo, ClusterIdMismatch, EmbeddedMetadataStore, TopicExists, TopicRecord, new_topic_id
from tidelog.config import BrokerConfig, validate_topic_configs
from tidelog.handlers.registry import load_all
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.server.data_dir import DataDirError, DataDirLock
from tidelog.server.metrics import BrokerMetrics
from tidelog.server.request_memory import RequestMemory
from tidelog.server.resources import (RESOURCES, ResourceMonitor, memory_limit_bytes, open_file_count,
                                      partition_capacity, raise_open_files_limit)
from tidelog.storage.cleaner_manager import CleanerConfig
from tidelog.storage.log import LogConfig, PartitionLog
from tidelog.storage.manager import LogManager
from tidelog.storage.producer_state import ProducerState

logger = logging.getLogger(__name__)

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_NAME_LENGTH = 249
MAX_PARTITIONS = 10000
PRODUCER_ID_BLOCK = 1000
_NO_CONFIGS: dict[str, str] = {}


class StartupError(Exception):
    """Why the broker cannot start: one line naming the cause and the setting (the CLI prints it)."""


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
    def __init__(self, config: BrokerConfig, data_dir: Path, host: str = "127.0.0.1", port: int = 9092,
                 cluster: str | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.node_id: int = config["node.id"]
        self._advertised = parse_advertised_listener(config["advertised.listeners"])
        self._cluster_url = cluster
        self._lock = DataDirLock(self.data_dir)
        # What the start is doing now (/ready reports it); None once started.
        self.startup_phase: str | None = "binding listeners"
        # /ready is 200 when every check returns None; each other answer is a reason it is not.
        self.readiness_checks: list[Callable[[], str | None]] = [lambda: self.startup_phase, self._log_dir_check,
                                                                      self._resources_check]
        self.http = None
        self.metrics = BrokerMetrics()
        self.request_memory = RequestMemory(config["queued.max.request.bytes"],
                                            1 << (config["socket.request.max.bytes"] - 1).bit_length(), self.metrics)
        # Cluster mode (``cluster`` = etcd://...): metadata in etcd, replication, a controller.
        # Single-node mode keeps ``replication`` None, which the hot paths test first.
        self.replication = None
        self.controller = None
        if cluster:
            from tidelog.cluster.controller import Controller
            from tidelog.cluster.etcd_store import EtcdMetadataStore, parse_cluster_url
            from tidelog.server.replica_manager import ReplicaManager

            endpoints, prefix = parse_cluster_url(cluster)
            self.metadata = EtcdMetadataStore(endpoints, prefix, max(1, round(config["broker.session.timeout.ms"] / 1000)))
            self.replication = ReplicaManager(self)
            self.controller = Controller(self)
            self.readiness_checks += [self._registration_check, self._metadata_applied_check]
        else:
            self.metadata = EmbeddedMetadataStore(self.data_dir, self.node_id)
        self.logs: LogManager | None = None
        self.connections: set = set()
        self.started_at_ms = int(time.time() * 1000)
        self._server: asyncio.base_events.Server | None = None
        self._fetch_waiters: dict[tuple[str, int], set[asyncio.Future]] = {}
        self._creating: dict[str, asyncio.Future] = {}
        self._reserved_replicas = 0  # partition replicas being created (counted against the capacity)
        self.resources = ResourceMonitor(resource.getrlimit(resource.RLIMIT_NOFILE)[0], self.data_dir, self.metrics)
        self.partition_capacity = MAX_PARTITIONS
        from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
        from tidelog.groups.offsets_topic import ConsumerOffsetsTopic

        self.groups = GroupCoordinator(GroupSettings.from_config(config), ConsumerOffsetsTopic(self))
        self._producer_states: dict[tuple[str, int], ProducerState] = {}
        self._producer_expiry: asyncio.Task | None = None
        self._resource_watch: asyncio.Task | None = None
        self._topic_values: dict[tuple[str, str], tuple[dict, object]] = {}
        self._topic_names_by_id: dict = {}
        self._producer_ids: range = range(0)
        self._producer_id_lock = asyncio.Lock()
        self._seen_controller = -1

    @property
    def advertised_host(self) -> str:
        """The host clients are told to connect to (``advertised.listeners``, else the listen host)."""
        return self._advertised[0] if self._advertised else self.host

    @property
    def advertised_port(self) -> int:
        return self._advertised[1] if self._advertised else self.port

    @property
    def cluster_id(self) -> str:
        return self.metadata.cluster_id

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Lock the data directory, bind every listener, load metadata, recover the logs, then
        serve Kafka (and, in a cluster, register). HTTP serves as soon as it is bound, so that
        /health answers and /ready says what the broker waits for while it recovers.

        Raises StartupError (one line naming the cause and the setting) when it cannot start;
        whatever it had opened by then is closed again and the lock released."""
        try:
            self._lock.acquire()
        except DataDirError as e:
            raise StartupError(f"{e} (--data-dir)") from None
        try:
            await self._start()
        except BaseException:
            await self._abort_start()
            raise

    async def _start(self) -> None:
        await self._bind_listeners()
        self.startup_phase = "loading metadata"
        await self._start_metadata()
        self._size_resources()
        logger.info("Tidelog %s: broker %d, data dir %s", __version__, self.node_id, self.data_dir.absolute())
        if self.http is not None:
            await self.http.start()
        load_all()
        self.startup_phase = "recovering logs"
        self.logs = LogManager(
            self.data_dir,
            self.log_config({}),
            retention_check_interval_ms=self.config["log.retention.check.interval.ms"],
            cleaner_config=self.cleaner_config(),
        )
        self.logs.cleaner.high_watermark = lambda log: self.high_watermark(log.topic, log.partition)
        self.logs.cleaner.active_producers = self._active_producers
        self.logs.open_all({name: self.log_config(t.configs) for name, t in self.metadata.topics.items()})
        if self.replication is None:
            self._remove_partitions_unknown_to_metadata()
        # A topic whose partition directories are missing (new, or lost) gets empty logs.
        for topic in self.metadata.topics.values():
            for partition in range(topic.partitions):
                if self.logs.get(topic.name, partition) is None and self.hosts_replica(topic.name, partition):
                    self.logs.create(topic.name, partition, self.log_config(topic.configs))
        self.logs.on_offline.append(self.resources.log_dir_offline)
        await self.logs.start()
        self._producer_expiry = asyncio.create_task(self._expire_producers(), name="tidelog-producer-expiry")
        self._resource_watch = asyncio.create_task(self.resources.watch(), name="tidelog-resource-watch")
        self.logs.fsync_observer = self._observe_fsync
        self.logs.cleaner.observer = self._observe_cleaning
        self.logs.on_durable = self._on_durable
        if self.replication is None:
            self.startup_phase = "loading consumer groups"
            await self.groups.start()
        await self._server.start_serving()
        logger.info("Kafka listener on %s:%d%s", self.host, self.port,
                    f" (advertised as {self.advertised_host}:{self.advertised_port})" if self._advertised else "")
        if self.replication is not None:
            self.startup_phase = "joining the cluster"
            try:
                await self._join_cluster()
            except EtcdUnavailable as e:
                raise StartupError(f"cannot register in the cluster (--cluster): {e}") from None
        self.startup_phase = None
        logger.info("broker %d started (cluster %s)", self.node_id, self.cluster_id)
        from tidelog.protocol.record_walk import RECORD_WALK

        if RECORD_WALK != "C":
            logger.warning("produce validation walks records in Python: the C extension tidelog.protocol._recordwalk "
                           "was not built (no C compiler at install?); expect about twice the CPU per produced byte")

    def _size_resources(self) -> None:
        """Raise the open files limit, and size the partition capacity from it and memory."""
        before, open_files = raise_open_files_limit()
        if open_files > before:
            logger.info("open files limit raised from %d to %d (the hard limit)", before, open_files)
        self.resources = ResourceMonitor(open_files, self.data_dir, self.metrics)
        derived, why = partition_capacity(open_files, memory_limit_bytes())
        configured = self.config["max.broker.partitions"]
        if configured < 0:
            self.partition_capacity = derived
            logger.info("partition capacity %d (%s; max.broker.partitions sets it)", derived, why)
        else:
            self.partition_capacity = configured
            if configured > derived:
                logger.warning("max.broker.partitions %d is above the %d partitions the %s allows: creating "
                               "partitions may run out of them", configured, derived, why.split(":")[0])
        metrics = self.metrics
        metrics.open_files_limit.set(open_files)
        metrics.open_files.set_function(open_file_count)
        metrics.partition_capacity.set(self.partition_capacity)

    def _remove_partitions_unknown_to_metadata(self) -> None:
        """Single node: partition directories whose topic the metadata does not have are what a
        creation or deletion cut short by a crash left; they go, so disk and metadata agree."""
        for log in self.logs.logs():
            if log.topic not in self.metadata.topics:
                logger.warning("removing %s: topic %s is not in the metadata (a creation or deletion was cut short)",
                               log.dir, log.topic)
                self.logs.delete_partition(log.topic, log.partition)

    async def _bind_listeners(self) -> None:
        """Bind the Kafka and HTTP sockets without serving either, so that a port in use stops
        the start before any client gets an answer."""
        from tidelog.server.connection import KafkaConnection

        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: KafkaConnection(self), self.host, self.port, reuse_address=True, backlog=1024, start_serving=False
            )
        except OSError as e:
            raise StartupError(f"cannot listen for Kafka on {self.host}:{self.port} (--host, --port): {_why(e)}") from None
        sockets = self._server.sockets or []
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        if self.config["http.port"] >= 0:
            from tidelog.http.server import HttpServer

            self.http = HttpServer(self, self.config["http.host"], self.config["http.port"])
            try:
                self.http.bind()
            except OSError as e:
                settings = ", ".join(self.config.describe(name) for name in ("http.host", "http.port"))
                raise StartupError(f"cannot listen for HTTP on {self.http.host}:{self.http.port} ({settings}): {_why(e)}") from None

    async def _start_metadata(self) -> None:
        try:
            await self.metadata.start(self.config["cluster.id"])
        except EtcdUnavailable as e:
            raise StartupError(f"cannot reach etcd (--cluster {self._cluster_url}): {e}") from None
        except ClusterIdMismatch as e:
            raise StartupError(f"{e} ({self.config.describe('cluster.id')})") from None

    async def _abort_start(self) -> None:
        """Undo a start that failed: stop serving, close the metadata store, release the lock.
        The logs are left as they are (the next start recovers them)."""
        if self._server is not None:
            self._server.close()
        if self.http is not None:
            await self.http.stop()
        if self.replication is not None:
            try:
                await self.metadata.close()
            except Exception as e:  # noqa: BLE001 - the start failed already; say why that did
                logger.debug("closing the metadata store after a failed start: %s", e)
        self._lock.release()

    @property
    def http_address(self) -> str | None:
        """``host:port`` where other brokers and browsers reach this broker's HTTP listener: its
        bound address, or the advertised host when it binds every interface; None without HTTP."""
        if self.http is None:
            return None
        host = self.http.host if self.http.host not in ("", "0.0.0.0", "::") else self.advertised_host
        return f"[{host}]:{self.http.port}" if ":" in host else f"{host}:{self.http.port}"

    @property
    def serving(self) -> bool:
        """The logs are open and the Kafka listener serves (the HTTP API may use the broker)."""
        return self._server is not None and self._server.is_serving()

    async def _join_cluster(self) -> None:
        """Register under a lease, take up this broker's replicas, stand for controller."""
        rack = self.config["broker.rack"] or None
        await self.metadata.register_broker(BrokerInfo(self.node_id, self.advertised_host, self.advertised_port, rack,
                                                       http=self.http_address))
        self.replication.on_leadership.append(self._on_leadership)
        self.replication.start()
        self.metadata.add_listener(self._on_cluster_change)
        await self._stand_for_controller()

    async def _stand_for_controller(self) -> None:
        try:
            elected = await self.metadata.elect_controller(self.node_id)
            self._note_controller()
            if elected and not self.controller.active:
                self.controller.start(self.metadata.controller_epoch)
        except Exception as e:  # etcd unreachable: the next controller change tries again
            logger.warning("controller election failed: %s", e)

    def _note_controller(self) -> None:
        if self.metadata.controller_id != self._seen_controller:
            self._seen_controller = self.metadata.controller_id
            self.metrics.controller_changes.inc()

    def _on_cluster_change(self, kind: str, key: object) -> None:
        if kind == "controller":
            self._note_controller()
        if self.controller.active:
            if kind == "controller" and self.metadata.controller_id != self.node_id:
                self.controller.stop()
            else:
                self.controller.on_change(kind, key)
        if kind == "controller" and self.metadata.controller_id == -1:
            asyncio.get_running_loop().create_task(self._stand_for_controller())

    def _on_leadership(self, topic: str, partition: int, leading: bool) -> None:
        """The group coordinator lives with the leadership of ``__consumer_offsets``."""
        from tidelog.groups.offsets_topic import TOPIC

        if topic != TOPIC or partition != 0:
            return
        from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
        from tidelog.groups.offsets_topic import ConsumerOffsetsTopic

        self.groups.stop()
        self.groups = GroupCoordinator(GroupSettings.from_config(self.config), ConsumerOffsetsTopic(self))
        if leading:
            logger.info("broker %d is now the group coordinator", self.node_id)
            asyncio.get_running_loop().create_task(self.groups.start())

    def group_coordinator_error(self) -> ErrorCode | None:
        """Why this broker cannot serve a group request now, or None.

        In a cluster the group coordinator lives with the leadership of ``__consumer_offsets``
        partition 0: any other broker answers NOT_COORDINATOR (the client looks the coordinator
        up again), and the leader answers COORDINATOR_LOAD_IN_PROGRESS until it has replayed
        the partition (Kafka's two answers)."""
        if self.replication is not None:
            from tidelog.groups.offsets_topic import TOPIC

            if self.replication.leader_error(TOPIC, 0) is not None:
                return ErrorCode.not_coordinator
        if not self.groups.loaded:
            return ErrorCode.coordinator_load_in_progress
        return None

    def hosts_replica(self, topic: str, partition: int) -> bool:
        """Whether this broker keeps a replica of the partition (always, on a single node)."""
        if self.replication is None:
            return True
        state = self.metadata.partitions.get((topic, partition))
        return state is not None and self.node_id in state.replicas

    def live_broker_count(self) -> int:
        return len(self.metadata.brokers) if self.replication is not None else 1

    async def controlled_shutdown(self) -> None:
        """Move this broker's leaderships to other in-sync replicas before stopping (Kafka's
        controlled shutdown): announce it in the metadata store, then keep serving (clients get
        NOT_LEADER_OR_FOLLOWER and look the new leaders up) until this broker leads nothing that
        another live in-sync replica could lead, or ``controlled.shutdown.timeout.ms`` passes."""
        timeout_s = self.config["controlled.shutdown.timeout.ms"] / 1000
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.metadata.announce_shutdown(self.node_id), timeout_s)
        except Exception as e:  # etcd unreachable: stop anyway, the lease will lapse
            logger.warning("controlled shutdown: cannot announce it (%s); stopping", e)
            return
        while time.monotonic() - started < timeout_s:
            movable = self._movable_leaderships()
            if not movable:
                logger.info("controlled shutdown: leaderships moved in %.2f s", time.monotonic() - started)
                return
            await asyncio.sleep(0.05)
        logger.warning("controlled shutdown: still leading %d partitions after %.0f s; stopping",
                       len(self._movable_leaderships()), timeout_s)

    def _movable_leaderships(self) -> list[tuple[str, int]]:
        live = set(self.metadata.brokers) - self.metadata.shutting_down
        return [key for key, state in list(self.metadata.partitions.items())
                if state.leader == self.node_id and any(r != self.node_id and r in live for r in state.isr)]

    async def stop(self) -> None:
        if self.replication is not None and self.config["controlled.shutdown.enable"]:
            await self.controlled_shutdown()
        logger.info("shutting down: closing listener and %d connections", len(self.connections))
        if self.replication is not None:
            self.controller.stop()
            await self.replication.stop()
        if self._server is not None:
            self._server.close()
        if self.http is not None:
            await self.http.stop()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.groups.stop()
        if self._producer_expiry is not None:
            self._producer_expiry.cancel()
        if self._resource_watch is not None:
            self._resource_watch.cancel()
        if self.logs is not None:
            for (topic, partition), state in self._producer_states.items():
                log = self.logs.get(topic, partition)
                if log is not None and not self.logs.offline:  # offline: the next start recovers
                    try:
                        state.save(log.dir, log.log_end_offset)
                    except OSError as e:
                        self.logs.take_offline(e, f"{topic}-{partition}: saving producer state")
            await self.logs.close()
        if self.replication is not None:
            await self.metadata.close()
        self._lock.release()
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

    def cleaner_config(self) -> CleanerConfig:
        config = self.config
        return CleanerConfig(
            enable=config["log.cleaner.enable"], threads=config["log.cleaner.threads"],
            dedupe_buffer_bytes=config["log.cleaner.dedupe.buffer.size"],
            load_factor=config["log.cleaner.io.buffer.load.factor"], io_buffer_bytes=config["log.cleaner.io.buffer.size"],
            io_max_bytes_per_second=config["log.cleaner.io.max.bytes.per.second"], backoff_ms=config["log.cleaner.backoff.ms"],
        )

    def _active_producers(self, log: PartitionLog) -> dict[int, tuple[int, int]]:
        """For the log cleaner: each idempotent producer's last batch (offset of its last record,
        epoch), which must stay for its sequence numbers to go on."""
        producers = {}
        for producer_id, entry in self.producer_state(log).producers.items():
            if entry.batches:
                _, _, base_offset, last_offset_delta = entry.batches[-1]
                producers[producer_id] = (base_offset + last_offset_delta, entry.epoch)
        return producers

    def topic_value(self, topic: str, name: str):
        """A topic config's effective value, cached while the topic's config dict is the same object.

        Produce asks for several per partition per request; parsing them each time showed in
        profiles. Config changes replace a topic's dict (they never mutate it), which the
        identity check notices; the cache holds the dict, so its id cannot be reused meanwhile.
        """
        record = self.metadata.topics.get(topic)
        configs = record.configs if record is not None else _NO_CONFIGS
        cached = self._topic_values.get((topic, name))
        if cached is not None and cached[0] is configs:
            return cached[1]
        value = self.config.topic_value(configs, name)
        self._topic_values[(topic, name)] = (configs, value)
        return value

    def check_new_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str | None]) -> dict[str, str]:
        """Kafka's CreateTopics validation, in its order; returns the normalised configs.

        Order as in Kafka's ReplicationControlManager: name, existence, configs, replication
        factor, partition count, then placement. ``partitions`` / ``replication_factor`` of -1
        mean the broker defaults (``num.partitions`` / ``default.replication.factor``).
        """
        validate_topic_name(name)
        if name == "__cluster_metadata":
            raise KafkaError(ErrorCode.invalid_request, f"Creation of internal topic {name} is prohibited.")
        if name in self.metadata.topics or name in self._creating:
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
        colliding = self._colliding_topic(name)
        if colliding is not None:
            raise KafkaError(ErrorCode.invalid_topic_exception, f"Topic '{name}' collides with existing topic: {colliding}")
        null_configs = [config for config, value in configs.items() if value is None]
        if null_configs:
            raise KafkaError(ErrorCode.invalid_config, f"Null value not supported for topic configs: {','.join(null_configs)}")
        normalised = validate_topic_configs(configs)
        if replication_factor < -1 or replication_factor == 0:
            raise KafkaError(
                ErrorCode.invalid_replication_factor, "Replication factor must be larger than 0, or -1 to use the default value."
            )
        if partitions < -1 or partitions == 0:
            raise KafkaError(ErrorCode.invalid_partitions, "Number of partitions was set to an invalid non-positive value.")
        partitions, replication_factor = self.resolve_topic_defaults(partitions, replication_factor)
        if partitions > MAX_PARTITIONS:
            raise KafkaError(ErrorCode.invalid_partitions, f"Number of partitions must be at most {MAX_PARTITIONS}, got {partitions}.")
        live_brokers = self.live_broker_count()
        if replication_factor > live_brokers:
            raise KafkaError(
                ErrorCode.invalid_replication_factor,
                f"Unable to replicate the partition {replication_factor} time(s): The target replication factor of "
                f"{replication_factor} cannot be reached because only {live_brokers} broker(s) are registered.",
            )
        self.check_partition_capacity(partitions * replication_factor)
        return normalised

    def check_partition_capacity(self, new_replicas: int) -> None:
        """POLICY_VIOLATION when ``new_replicas`` more partition replicas would not fit.

        The capacity (``max.broker.partitions``, else derived from the open-files limit and
        memory, see resources.py) is per broker; a cluster is taken as brokers alike. Kafka 4
        refuses a CreateTopics above its own partition limit with POLICY_VIOLATION too
        (INVALID_PARTITIONS would say the count itself is wrong)."""
        hosted = sum(t.partitions * t.replication_factor for t in self.metadata.topics.values()) + self._reserved_replicas
        capacity = self.partition_capacity * self.live_broker_count()
        if hosted + new_replicas > capacity:
            raise KafkaError(
                ErrorCode.policy_violation,
                f"Adding {new_replicas} partition replica(s) to the {hosted} hosted would exceed the broker capacity of "
                f"{capacity} (max.broker.partitions, derived from the open files limit and memory when unset).",
            )

    validate_topic_name = staticmethod(validate_topic_name)

    def resolve_topic_defaults(self, partitions: int, replication_factor: int) -> tuple[int, int]:
        """Replace -1 (use the default) by ``num.partitions`` / ``default.replication.factor``."""
        if partitions == -1:
            partitions = self.config["num.partitions"]
        if replication_factor == -1:
            replication_factor = self.config["default.replication.factor"]
        return partitions, replication_factor

    def _colliding_topic(self, name: str) -> str | None:
        """Kafka forbids two topics whose names differ only by '.' versus '_' (metric names collide)."""
        if "." not in name and "_" not in name:
            return None
        key = name.replace(".", "_")
        for existing in self.metadata.topics:
            if existing != name and existing.replace(".", "_") == key:
                return existing
        return None

    async def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> TopicRecord:
        """Create a validated topic. Single node: its partition logs first, then the metadata; a
        failure on the way (out of descriptors, a full disk) removes what was made and answers
        KAFKA_STORAGE_ERROR, and a crash on the way leaves logs that the next start removes."""
        record = TopicRecord(name, new_topic_id(), partitions, replication_factor, configs)
        done = asyncio.get_running_loop().create_future()
        self._creating[name] = done
        self._reserved_replicas += partitions * replication_factor
        try:
            if self.replication is None:
                log_config = self.log_config(configs)
                created = []
                try:
                    for partition in range(partitions):
                        created.append(self.logs.create(name, partition, log_config))
                    await self.metadata.create_topic(record)
                except (OSError, KafkaError) as e:
                    self._undo_partitions(created, name, len(created))
                    raise self._creation_error(e, f"creating topic {name} ({len(created)} of {partitions} partitions made)")
            else:
                from tidelog.cluster.controller import assign_replicas

                assignment = assign_replicas(list(self.metadata.brokers.values()), partitions, replication_factor)
                try:
                    await self.metadata.create_topic(record, assignment)
                except TopicExists:
                    raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.") from None
                self.replication.refresh(name)
        finally:
            del self._creating[name]
            self._reserved_replicas -= partitions * replication_factor
            done.set_result(None)
        logger.info("created topic %s (id %s) with %d partitions, configs %s", name, record.topic_id, partitions, configs or "{}")
        return record

    def _undo_partitions(self, logs: list, topic: str, failed: int) -> None:
        """Remove the logs a failed creation made, and the directory of the one it failed in."""
        for log in logs:
            try:
                self.logs.delete_partition(log.topic, log.partition)
            except (OSError, KafkaError) as e:  # the next start removes what is left
                logger.warning("cannot remove %s after a failed creation: %s", log.dir, e)
        if self.logs.get(topic, failed) is None:
            shutil.rmtree(self.data_dir / f"{topic}-{failed}", ignore_errors=True)

    def _creation_error(self, error: BaseException, what: str) -> KafkaError:
        """The error a client gets when creating partitions failed part way (all undone)."""
        cause = error.__cause__ if isinstance(error, KafkaError) and isinstance(error.__cause__, OSError) else error
        if isinstance(error, KafkaError) and cause is error:
            return error
        if self.resources.report(cause, what) is None:
            logger.error("%s failed: %s", what, cause)
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        return KafkaError(ErrorCode.kafka_storage_error, f"{what.split(' (')[0]} failed: {reason}")

    async def auto_create_topic(self, name: str) -> TopicRecord | None:
        """Create a topic on first use when auto.create.topics.enable; None when not allowed."""
        if name in self._creating:
            await self._creating[name]
        record = self.metadata.topics.get(name)
        if record is not None or not self.config["auto.create.topics.enable"]:
            return record
        replication_factor = min(self.config["default.replication.factor"], self.live_broker_count())
        self.check_new_topic(name, self.config["num.partitions"], replication_factor, {})
        return await self.create_topic(name, self.config["num.partitions"], replication_factor, {})

    async def delete_topic(self, name: str) -> None:
        """Remove a topic: metadata first (so it is gone after a crash), then its partition data."""
        record = self.metadata.topics[name]
        await self.metadata.delete_topic(name)
        self._topic_values = {key: value for key, value in self._topic_values.items() if key[0] != name}
        self.logs.delete_topic(name)
        for partition in range(record.partitions):
            self._producer_states.pop((name, partition), None)
        # Fetches parked on the topic's partitions return now rather than at their timeout.
        for partition in range(record.partitions):
            self.notify_append(name, partition)
        logger.info("deleted topic %s (id %s)", name, record.topic_id)

    async def create_partitions(self, name: str, count: int) -> None:
        """Grow a topic to ``count`` partitions (validated by the caller). Single node: the new
        logs, then the metadata; a failure on the way removes the new logs (KAFKA_STORAGE_ERROR)."""
        record = self.metadata.topics[name]
        old_count = record.partitions
        if self.replication is not None:
            from tidelog.cluster.controller import assign_replicas

            new_states = assign_replicas(list(self.metadata.brokers.values()), count - old_count,
                                         record.replication_factor, first_partition=old_count)
            await self.metadata.set_partitions(name, count, new_states)
            self.replication.refresh(name)
            return
        log_config = self.log_config(record.configs)
        created = []
        self._reserved_replicas += count - old_count
        try:
            for partition in range(old_count, count):
                if self.logs.get(name, partition) is None:
                    created.append(self.logs.create(name, partition, log_config))
            await self.metadata.set_partitions(name, count)
        except (OSError, KafkaError) as e:
            self._undo_partitions(created, name, old_count + len(created))
            raise self._creation_error(e, f"adding partitions to {name} ({len(created)} of {count - old_count} made)")
        finally:
            self._reserved_replicas -= count - old_count
        logger.info("topic %s: partitions %d -> %d", name, old_count, count)

    async def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """Replace a topic's config overrides (validated by the caller) and apply them to its live logs."""
        record = self.metadata.topics[name]
        await self.metadata.set_configs(name, configs)
        log_config = self.log_config(configs)
        for partition in range(record.partitions):
            log = self.partition_log(name, partition)
            if log is not None:
                log.set_config(log_config)
        if log_config.compact:
            self.logs.cleaner.wake()
        logger.info("topic %s: configs set to %s", name, configs or "{}")

    def topic_by_id(self, topic_id) -> TopicRecord | None:
        """The topic with this id (Fetch v13+ names topics by id, once per topic per request).

        An id -> name index checked against the store on every hit and rebuilt on a miss, so
        topics created or deleted in either store need no hook to keep it right.
        """
        for attempt in range(2):
            record = self.metadata.topics.get(self._topic_names_by_id.get(topic_id))
            if record is not None and record.topic_id == topic_id:
                return record
            if attempt == 0:
                self._topic_names_by_id = {r.topic_id: r.name for r in self.metadata.topics.values()}
        return None

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get(topic, partition)

    def refresh_gauges(self) -> None:
        """Set the state gauges from the broker's objects (at scrape time); stale label sets are cleared."""
        metrics = self.metrics
        topics = self.metadata.topics
        metrics.topics.set(len(topics))
        metrics.partitions.set(sum(t.partitions for t in topics.values()))
        metrics.uptime.set(time.time() - self.started_at_ms / 1000)
        for gauge in (metrics.log_end_offset, metrics.log_start_offset, metrics.log_size_bytes, metrics.log_segments,
                      metrics.groups, metrics.group_members, metrics.committed_offset, metrics.consumer_lag,
                      metrics.consumer_lag_total, metrics.cleaner_dirty_ratio):
            gauge.clear()
        cleaner = self.logs.cleaner
        metrics.cleaner_uncleanable.set(sum(1 for state in cleaner.states.values() if state.uncleanable))
        metrics.cleaner_last_error.set((cleaner.totals.last_error_ms or 0) / 1000)
        metrics.log_dir_offline.set(1 if self.logs.offline else 0)
        exhausted = self.resources.exhausted()
        for kind in RESOURCES:
            metrics.resource_out.labels(kind).set(1 if kind in exhausted else 0)
        hosted = 0
        for log in self.logs.logs():
            labels = (log.topic, str(log.partition))
            metrics.log_end_offset.labels(*labels).set(log.log_end_offset)
            metrics.log_start_offset.labels(*labels).set(log.log_start_offset)
            metrics.log_size_bytes.labels(*labels).set(log.size_bytes)
            metrics.log_segments.labels(*labels).set(len(log.segments))
            if log.config.compact and not log.closed:
                metrics.cleaner_dirty_ratio.labels(*labels).set(self.logs.cleaner.dirty_ratio(log))
            hosted += log.topic in topics
        if self.replication is None:
            metrics.offline.set(max(sum(t.partitions for t in topics.values()) - hosted, 0))
            metrics.under_replicated.set(0)  # one node: every replica is the leader, always in sync
        else:
            self._refresh_cluster_gauges()
        metrics.fetch_purgatory.set(len({w for waiters in self._fetch_waiters.values() for w in waiters}))
        metrics.producer_ids.set(sum(len(state.producers) for state in self._producer_states.values()))
        metrics.produce_purgatory.set(self.logs.pending_durability_waits())
        states: dict[str, int] = {}
        for group_id, _protocol_type, state, _type in self.groups.admin.list_groups():
            states[state] = states.get(state, 0) + 1
            consumer_group = self.groups.registry.consumer_groups.get(group_id)
            description = self.groups.admin.describe_group(group_id) if consumer_group is None else consumer_group
            metrics.group_members.labels(group_id).set(len(description.members) if description else 0)
            total = 0
            for lag in self.groups.offsets.lag(group_id, self._log_end_offset):
                labels = (group_id, lag.topic, str(lag.partition))
                metrics.committed_offset.labels(*labels).set(lag.committed_offset)
                metrics.consumer_lag.labels(*labels).set(lag.lag)
                total += lag.lag
            metrics.consumer_lag_total.labels(group_id).set(total)
        for state, count in states.items():
            metrics.groups.labels(state).set(count)

    def _refresh_cluster_gauges(self) -> None:
        metrics, store, replication = self.metrics, self.metadata, self.replication
        is_controller = self.controller.active and store.controller_id == self.node_id
        metrics.active_controller.set(1 if is_controller else 0)
        states = list(store.partitions.items())
        metrics.offline.set(sum(1 for key, s in states if s.leader == -1 and key[0] in store.topics) if is_controller else 0)
        led = [s for key, s in states if key in replication.leading]
        metrics.leader_partitions.set(len(led))
        metrics.under_replicated.set(sum(1 for s in led if len(s.isr) < len(s.target_replicas)))
        metrics.replica_lag.clear()
        for topic, partition, replica, lag in replication.replica_lags():
            metrics.replica_lag.labels(topic, str(partition), str(replica)).set(lag)

    def _observe_cleaning(self, result: str, stats) -> None:
        metrics = self.metrics
        metrics.cleaner_runs.labels(result).inc()
        if stats is not None:
            metrics.cleaner_read_bytes.inc(stats.bytes_read)
            metrics.cleaner_written_bytes.inc(stats.bytes_written)
            metrics.cleaner_removed_records.inc(max(stats.records_read - stats.records_written, 0))
            metrics.cleaner_run_seconds.observe(stats.seconds)

    def _observe_fsync(self, seconds: float, ok: bool) -> None:
        self.metrics.fsync_latency.observe(seconds)
        if not ok:
            self.metrics.fsyncs_failed.inc()

    def _log_end_offset(self, topic: str, partition: int) -> int | None:
        """For consumer lag: the end a consumer can read to (the high watermark)."""
        log = self.logs.get(topic, partition)
        return self.high_watermark(topic, partition) if log is not None else None

    def high_watermark(self, topic: str, partition: int) -> int:
        """What consumers may read up to: the ISR's in a cluster; on a single node what the
        durability profile counts as durable (never records not yet acknowledgeable)."""
        if self.replication is not None:
            return self.replication.high_watermark(topic, partition)
        log = self.logs.get(topic, partition)
        return log.durable_end_offset if log is not None else 0

    def _on_durable(self, log: PartitionLog) -> None:
        """A flush moved a log's durable offset: the high watermark may follow, and fetches
        parked for data wake (under balanced and durable, an append alone shows them nothing)."""
        if self.replication is not None:
            self.replication.on_local_flush(log.topic, log.partition)
        self.notify_append(log.topic, log.partition)

    @property
    def ready(self) -> bool:
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[str]:
        """Why /ready says 503 (empty when ready): still starting, or a readiness check's reason.

        Ready means: listeners bound, metadata loaded, logs recovered, (single node) consumer
        groups loaded, Kafka served, the log directory online (an I/O error takes it offline
        until a restart), and in a cluster registered and caught up with the metadata store. A
        component adds a condition by appending to ``readiness_checks``."""
        return [reason for check in self.readiness_checks if (reason := check()) is not None]

    def _registration_check(self) -> str | None:
        return None if self.node_id in self.metadata.brokers else "not registered in the cluster"

    def _metadata_applied_check(self) -> str | None:
        pending = self.replication.pending_changes()
        return f"applying {pending} partition changes from the metadata store" if pending else None

    def _log_dir_check(self) -> str | None:
        if self.logs is not None and self.logs.offline:
            return f"log directory offline: {self.logs.offline_reason}"
        return None

    def _resources_check(self) -> str | None:
        for kind, detail in self.resources.exhausted().items():
            return f"out of {kind}: {detail}"
        return None

    # --- idempotent producers ----------------------------------------------------------
    def producer_state(self, log: PartitionLog) -> ProducerState:
        """The partition's idempotent-producer state, loaded (snapshot + replay) on first use."""
        key = (log.topic, log.partition)
        state = self._producer_states.get(key)
        if state is None:
            state = self._producer_states[key] = ProducerState.load(log, self.config["producer.id.expiration.ms"])
        return state

    async def _expire_producers(self) -> None:
        """Forget idempotent producers idle for ``producer.id.expiration.ms`` (Kafka's check)."""
        while True:
            await asyncio.sleep(self.config["producer.id.expiration.check.interval.ms"] / 1000)
            expiration_ms = self.config["producer.id.expiration.ms"]
            expired = sum(state.remove_expired(now_ms(), expiration_ms) for state in self._producer_states.values())
            if expired:
                logger.info("forgot %d idempotent producer states idle for %d ms", expired, expiration_ms)

    async def new_producer_id(self) -> int:
        """A producer id never used before in this cluster (ids are reserved in blocks of 1000)."""
        async with self._producer_id_lock:
            if not self._producer_ids:
                first = await self.metadata.allocate_producer_ids(PRODUCER_ID_BLOCK)
                self._producer_ids = range(first, first + PRODUCER_ID_BLOCK)
            producer_id = self._producer_ids[0]
            self._producer_ids = self._producer_ids[1:]
            return producer_id

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


def _why(error: OSError) -> str:
    """``Address already in use``: the system's words for a failed bind (asyncio's are longer)."""
    if error.errno and error.errno > 0:
        return os.strerror(error.errno).lower()
    return (error.strerror or str(error)).lower()  # getaddrinfo's: "name or service not known"


def parse_advertised_listener(value: str) -> tuple[str, int] | None:
    """``PLAINTEXT://host:port`` (the first of a comma-separated list) -> (host, port)."""
    if not value:
        return None
    first = value.split(",")[0].strip()
    match = re.fullmatch(r"(?:[A-Za-z_]+://)?\[?([^\]]*)\]?:(\d+)", first)
    if not match:
        raise ValueError(f"advertised.listeners: cannot parse {first!r}, expected PLAINTEXT://host:port")
    return match.group(1), int(match.group(2))


def now_ms() -> int:
    return int(time.time() * 1000)
