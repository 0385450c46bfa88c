"""The broker: its configuration, the log manager, the metadata store, the replica manager,
the group coordinator, and the listener.

A single node is a cluster of one: the embedded metadata store registers this broker as the
only broker, controller and replica, and the ReplicaManager leads every partition through the
same code as in a cluster (cluster/replica_manager.py). Only the composition differs: a cluster
has etcd for a store and a Controller. Either registers before it serves Kafka: a cluster of
one so that its partitions are led when it serves; a cluster's broker also waits until its etcd
watch has caught up with what etcd held once it registered and stood for controller, as Kafka's
broker serves only once caught up and unfenced (a broker serving earlier could name a controller
missing from its broker list, and librdkafka's admin then waits for a broker it never learns).
Followers that try to fetch from it in that moment are refused and retry after their backoff.
Also topic administration (explicit and automatic creation with Kafka's validation).
Not thread-safe; everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from pathlib import Path
from typing import Awaitable, Callable, Protocol

from tidelog import __version__
from tidelog.cluster.broker_channel import ChannelSecurity
from tidelog.cluster.controller import Controller
from tidelog.cluster.etcd_store import EtcdMetadataStore, EtcdSecurity, EtcdUnavailable, parse_cluster_url
from tidelog.cluster.fetch_sessions import FetchSessionCache
from tidelog.cluster.metadata import BrokerInfo, ClusterIdMismatch, EmbeddedMetadataStore
from tidelog.cluster.partition import log_config_for
from tidelog.cluster.replica_manager import ReplicaManager
from tidelog.cluster.topics import MAX_PARTITIONS, TopicAdmin
from tidelog.config import BrokerConfig, ConfigError
from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
from tidelog.groups.offsets_topic import ConsumerOffsetsTopic
from tidelog.groups.offsets_topic import PARTITIONS as OFFSETS_PARTITIONS
from tidelog.groups.offsets_topic import TOPIC as OFFSETS_TOPIC
from tidelog.groups.offsets_topic import topic_configs as offsets_topic_configs
from tidelog.groups.topic_deletions import TopicDeletions
from tidelog.queues.delay_topics import DelayTopics
from tidelog.handlers.registry import RequestContext, load_all
from tidelog.metrics import BrokerMetrics
from tidelog.protocol.apis import warm_codecs
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.record_walk import RECORD_WALK
from tidelog.protocol.topics import SHARE_GROUP_STATE
from tidelog.push.delivery import PushDelivery
from tidelog.push.registry import PushSubscriptions
from tidelog.queues.share_groups import ShareGroups, state_topic_configs
from tidelog.security.authorizer import Access
from tidelog.security.principal import ANONYMOUS, Endpoint, KafkaPrincipal
from tidelog.security.records import SecurityRecords
from tidelog.security.sasl_mechanisms import SaslMechanisms
from tidelog.security.settings import SecuritySettings
from tidelog.server.connection import KafkaConnection
from tidelog.server.data_dir import DataDirError, DataDirLock
from tidelog.server.gauges import refresh_gauges
from tidelog.server.listeners import KafkaListeners, ServerTls, inter_broker_security
from tidelog.server.loop_monitor import LoopMonitor
from tidelog.server.request_memory import RequestMemory
from tidelog.server.resources import ResourceMonitor, segment_file_capacity, size_resources
from tidelog.storage.cleaner_manager import CleanerConfig
from tidelog.storage.log import PartitionLog
from tidelog.storage.manager import LogManager
from tidelog.txn.service import TransactionService

logger = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000
# How long a cluster's broker waits at start for its etcd watch to bring the metadata up to what
# etcd holds (normally milliseconds; Kafka's broker likewise waits to be caught up before serving).
METADATA_CATCH_UP_S = 60.0


class StartupError(Exception):
    """Why the broker cannot start: one line naming the cause and the setting (the CLI prints it)."""


class HttpListener(Protocol):
    """The HTTP side (http/server.py), made by the composition (tidelog/node.py) for this broker:
    bound with the Kafka listener, served from the start (health, readiness), stopped with it."""

    host: str
    port: int

    def bind(self) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _stop(component) -> Awaitable[object] | None:
    """``component.stop()`` (a coroutine or not) of a component that may not have been made (None)."""
    return None if component is None else component.stop()


class Broker:
    def __init__(self, config: BrokerConfig, data_dir: Path, host: str = "127.0.0.1", port: int = 9092,
                 cluster: str | None = None, http: Callable[["Broker"], HttpListener] | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.node_id: int = config["node.id"]
        try:  # the listeners, TLS, SASL, ACLs and quotas (docs/security.md)
            self.security = SecuritySettings.from_config(config.values, config.origins, host, port)
        except ConfigError as e:
            raise StartupError(str(e)) from None
        self.listeners: KafkaListeners | None = None
        self.tls: ServerTls | None = None
        self.inter_broker_security: ChannelSecurity | None = None
        self.sasl_mechanisms: SaslMechanisms | None = None  # made at start when a listener uses SASL
        self.authorizer = self.security.authorizer()  # None without authorizer.class.name: no ACLs
        self.quotas = self.security.quota_managers()  # client quotas, from the metadata store
        self._cluster_url = cluster
        self._lock = DataDirLock(self.data_dir)
        # What the start is doing now (/ready reports it); None once started.
        self._phases: list[tuple[str | None, float]] = []  # (startup phase, when it began): the "started" line
        self.startup_phase: str | None = "binding listeners"
        # /ready is 200 when every check returns None; each other answer is a reason it is not.
        self.readiness_checks: list[Callable[[], str | None]] = [lambda: self.startup_phase, self._log_dir_check,
                                                                      self._resources_check]
        self._http_listener = http
        self.http: HttpListener | None = None
        self.metrics = BrokerMetrics(per_partition=config["metrics.per.partition.enable"])
        self.loop_monitor = LoopMonitor(self.metrics.observe_loop_lag, self.metrics.event_loop_stalls.inc)
        self.request_memory = RequestMemory(config["queued.max.request.bytes"],
                                            1 << (config["socket.request.max.bytes"] - 1).bit_length(), self.metrics)
        # A cluster (``cluster`` = etcd://...): metadata in etcd and a controller. A cluster of
        # one: the embedded store, no controller (nothing to elect). Both have a ReplicaManager
        # (made once the logs are open).
        self.controller: Controller | None = None
        if cluster:
            endpoints, prefix = parse_cluster_url(cluster)
            try:  # TLS and user/password to etcd (etcd.* settings)
                self.metadata = EtcdMetadataStore(endpoints, prefix, max(1, round(config["broker.session.timeout.ms"] / 1000)),
                                                  security=EtcdSecurity.from_config(config))
            except ValueError as e:
                raise StartupError(str(e)) from None
            self.controller = Controller(self.node_id, self.metadata, config, self._create_offsets_topic)
        else:
            self.metadata = EmbeddedMetadataStore(self.data_dir, self.node_id)
        # SCRAM credentials, ACLs and client quotas, kept in the metadata store.
        self.security_records = SecurityRecords(self.metadata)
        # Push subscriptions (issue 15), kept in the metadata store beside the security records.
        self.push = PushSubscriptions(self.metadata, config, lambda: self.metadata.topics)
        self.readiness_checks += [self._registration_check, self._metadata_applied_check]
        self.replicas: ReplicaManager | None = None
        self.topics: TopicAdmin | None = None
        self.logs: LogManager | None = None
        self.connections: set = set()
        self.started_at_ms = int(time.time() * 1000)
        self.resources = ResourceMonitor(resource.getrlimit(resource.RLIMIT_NOFILE)[0], self.data_dir, self.metrics)
        self.partition_capacity = MAX_PARTITIONS
        self.groups = GroupCoordinator(GroupSettings.from_config(config),
                                       ConsumerOffsetsTopic(self._offsets_partition, config["offsets.commit.timeout.ms"],
                                                            on_timeout=self.metrics.internal_write_timed_out))
        self._groups_loading: asyncio.Task | None = None
        self.shares: ShareGroups | None = None  # share groups (KIP-932), made with the replicas
        self.fetch_sessions = FetchSessionCache(config["max.incremental.fetch.session.cache.slots"],
                                                config["min.incremental.fetch.session.eviction.ms"], self.metrics)
        self.transactions: TransactionService | None = None
        self._resource_watch: asyncio.Task | None = None
        self.delay_topics: DelayTopics | None = None  # issue 14: delay topics' movers
        self.push_delivery: PushDelivery | None = None  # issue 15: push subscriptions' deliveries from here
        self._producer_ids: range = range(0)
        self._producer_id_lock = asyncio.Lock()
        self._seen_controller = -1
        self._standing: asyncio.Task | None = None  # standing for controller again after a refused election
        self._stopping = False

    def advertised_endpoints(self) -> tuple[Endpoint, ...]:
        """What clients and brokers are told, per listener (``advertised.listeners``, else the
        listeners), with the ports bound listeners got."""
        return self.listeners.advertised() if self.listeners is not None else self.security.listeners.advertised

    @property
    def _inter_broker(self) -> Endpoint:
        name = self.security.listeners.inter_broker_listener_name
        return next(e for e in self.advertised_endpoints() if e.listener_name == name)

    @property
    def advertised_host(self) -> str:
        """The host other brokers reach this one on (the inter-broker listener's advertised host)."""
        return self._inter_broker.host or self.host

    @property
    def advertised_port(self) -> int:
        return self._inter_broker.port

    @property
    def startup_phase(self) -> str | None:
        """What the start is doing (None once it serves); /ready says it."""
        return self._phases[-1][0] if self._phases else None

    @startup_phase.setter
    def startup_phase(self, phase: str | None) -> None:
        self._phases.append((phase, time.monotonic()))

    def _phase_times(self) -> str:
        """How long the start took and each of its phases, as the "started" line says it."""
        times = [(phase, end - began) for (phase, began), (_, end) in zip(self._phases, self._phases[1:])]
        total = self._phases[-1][1] - self._phases[0][1]
        return f"in {total:.2f} s (" + ", ".join(f"{phase} {took:.2f} s" for phase, took in times if phase) + ")"

    @property
    def cluster_id(self) -> str:
        return self.metadata.cluster_id

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Lock the data directory, bind every listener, load metadata, recover the logs, then
        serve Kafka; in a cluster, first register, stand for controller and wait until the
        metadata shows every change etcd held by then (so a client's first Metadata names every
        registered broker and the controller among them). HTTP serves as soon as it is bound, so
        that /health answers and /ready says what the broker waits for while it recovers.

        Raises StartupError (one line naming the cause and the setting) when it cannot start;
        whatever it had opened by then is closed again and the lock released."""
        # The codecs of clients' first requests (~0.2 s of CPU idle, importing kio's modules), made
        # before anything is served or scheduled on the loop, so nothing waits for them: made as
        # those requests came, they stalled the loop at a broker's first clients. (In a thread
        # alongside the start they lengthened it ~0.7 s at load 4, the GIL passing back and forth.)
        warm_codecs()
        try:
            self._lock.acquire()
        except DataDirError as e:
            raise StartupError(f"{e} (--data-dir)") from None
        self.loop_monitor.start()
        try:
            await self._start()
        except BaseException:
            self.loop_monitor.stop()
            await self._abort_start()
            raise

    async def _start(self) -> None:
        await self._bind_listeners()
        self.startup_phase = "loading metadata"
        await self._start_metadata()
        self.quotas.update(self.security_records.client_quotas())
        self.metadata.add_listener(self._on_security_change)
        if self.authorizer is not None:
            self.authorizer.load(self.security_records.acl_bindings())
            logger.info("ACLs on: %d bindings, super users %s", self.authorizer.acl_count,
                        ", ".join(sorted(self.security.super_users)) or "none")
        if any(e.security_protocol.uses_sasl for e in self.security.listeners.listeners):
            try:
                self.sasl_mechanisms = self.security.sasl_mechanisms(self.security_records)
            except ConfigError as e:
                raise StartupError(str(e)) from None
        self.resources, self.partition_capacity = size_resources(self.config["max.broker.partitions"], self.data_dir,
                                                                 self.metrics)
        logger.info("Tidelog %s: broker %d, data dir %s", __version__, self.node_id, self.data_dir.absolute())
        if self.http is not None:
            await self.http.start()
        load_all()
        self.startup_phase = "recovering logs"
        self.logs = LogManager(
            self.data_dir,
            log_config_for(self.config, {}),
            retention_check_interval_ms=self.config["log.retention.check.interval.ms"],
            cleaner_config=self.cleaner_config(),
            max_open_segment_files=segment_file_capacity(self.resources.open_files_limit),
            segment_idle_close_ms=self.config["log.segment.idle.close.ms"],
        )
        self.logs.open_all({name: log_config_for(self.config, t.configs) for name, t in self.metadata.topics.items()})
        self._remove_partitions_unknown_to_metadata()
        self.replicas = ReplicaManager(self.node_id, self.metadata, self.logs, self.config, self.data_dir, self.metrics)
        self.replicas.on_leadership.append(self._on_leadership)
        self.replicas.channel_security = self.inter_broker_security
        self.topics = TopicAdmin(self.node_id, self.config, self.metadata, self.logs, self.replicas, self.resources.report,
                                 self.partition_capacity)
        self.shares = ShareGroups(self.config, self.replicas, self.metadata, self.topics.topic_by_id, lambda: self.metadata.topics,
                                  group_configs=self._group_configs,
                                  create_state_topic=self._create_share_state_topic,
                                  is_other_group=lambda group_id: self.groups.registry.known(group_id),
                                  on_counts=self.metrics.count_share_records,
                                  on_write_timeout=self.metrics.internal_write_timed_out)
        self.replicas.on_leadership.append(self.shares.on_leadership)
        self.topic_deletions = TopicDeletions(self.metadata, self._on_topic_deleted)
        try:
            self.push_delivery = PushDelivery(self.push, self.shares, self.replicas, lambda: self.metadata.topics,
                                              self.config, self.metrics, self.node_id)
        except ConfigError as e:
            raise StartupError(str(e)) from None
        self.transactions = TransactionService(
            self.node_id, self.config, self.metadata, self.replicas, self.topics.create_topic, self.new_producer_id,
            self.config["transaction.state.log.replication.factor"] if self.controller is not None else 1,
            lambda _partition, producer_id, committed: self.groups.offsets.complete_txn(producer_id, committed),
            self.metrics)
        self.replicas.on_leadership.append(self.transactions.on_leadership)
        self.transactions.sender.channel_security = self.inter_broker_security
        self.transactions.start()
        self.logs.cleaner.high_watermark = self.replicas.cleaner_high_watermark
        self.logs.cleaner.active_producers = self.replicas.cleaner_active_producers
        self.logs.on_offline.append(self.resources.log_dir_offline)
        await self.logs.start()
        self._resource_watch = asyncio.create_task(self.resources.watch(), name="tidelog-resource-watch")
        self.shares.start()
        self.logs.fsync_observer = self.metrics.observe_fsync
        self.logs.cleaner.observer = self.metrics.observe_cleaning
        if self.controller is None:  # a cluster of one leads its partitions before it serves
            self.startup_phase = "taking up the replicas"
            await self._join_cluster()
            await self._create_offsets_topic()
            if self._groups_loading is not None:
                self.startup_phase = "loading consumer groups"
                await self._groups_loading
            self.startup_phase = "loading share groups"
            await self.shares.wait_loaded()
        else:  # a cluster's broker serves once registered and caught up, as Kafka's serves once unfenced
            self.startup_phase = "joining the cluster"
            try:
                await self._join_cluster()
            except EtcdUnavailable as e:
                raise StartupError(f"cannot register in the cluster (--cluster): {e}") from None
            self.startup_phase = "catching up with the cluster metadata"
            try:
                await self.metadata.catch_up(METADATA_CATCH_UP_S)
            except EtcdUnavailable as e:
                raise StartupError(f"cannot catch up with the cluster metadata (--cluster): {e}") from None
        await self.listeners.start_serving()
        for bound, advertised in zip(self.listeners.bound.values(), self.advertised_endpoints()):
            logger.info("Kafka listener on %s:%d (%s%s)%s", bound.host or "*", bound.port, bound.listener_name,
                        "" if bound.listener_name == bound.security_protocol.name else f", {bound.security_protocol.name}",
                        "" if advertised == bound else f", advertised as {advertised}")
        self.startup_phase = None
        self.delay_topics = DelayTopics(self.metadata, self.replicas, self.config, self.data_dir, metrics=self.metrics,
                                        groups=lambda: self.groups if self.group_coordinator_error() is None else None)
        self.delay_topics.start()
        self.push_delivery.start()
        logger.info("broker %d started (cluster %s) %s", self.node_id, self.cluster_id, self._phase_times())
        if RECORD_WALK != "C":
            logger.warning("produce validation walks records in Python: the C extension tidelog.protocol._recordwalk "
                           "was not built (no C compiler at install?); expect about twice the CPU per produced byte")

    def _remove_partitions_unknown_to_metadata(self) -> None:
        """Partition directories whose topic the metadata does not have are what a creation or
        deletion cut short by a crash left (or a deletion while this broker was down); they go,
        so disk and metadata agree."""
        for log in self.logs.logs():
            if log.topic not in self.metadata.topics:
                logger.warning("removing %s: topic %s is not in the metadata (a creation or deletion was cut short)",
                               log.dir, log.topic)
                self.logs.delete_partition(log.topic, log.partition)

    async def _bind_listeners(self) -> None:
        """Bind the Kafka and HTTP sockets without serving either, so that a port in use stops
        the start before any client gets an answer."""
        try:  # the TLS of the Kafka listeners and the HTTP side, one certificate
            self.tls = ServerTls(self.security.tls) if self.security.tls is not None else None
            # How this broker reaches the others in a cluster (replication, the HTTP API's forwarding).
            if self._cluster_url:
                self.inter_broker_security = inter_broker_security(self.security, self.config)
        except ConfigError as e:
            raise StartupError(str(e)) from None
        self.listeners = KafkaListeners(self.security.listeners, self.tls, lambda endpoint: KafkaConnection(self, endpoint))
        try:
            await self.listeners.bind()
        except OSError as e:
            endpoint = e.listener
            where = ("--host, --port" if not self.config["listeners"]
                     else f"listener {endpoint.listener_name} of {self.config.describe('listeners')}")
            raise StartupError(f"cannot listen for Kafka on {endpoint.host or '*'}:{endpoint.port} ({where}): "
                               f"{_why(e)}") from None
        first = next(iter(self.listeners.bound.values()))
        self.host, self.port = first.host or self.host, first.port
        if self._http_listener is not None:
            self.http = self._http_listener(self)
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
        if self.listeners is not None:
            self.listeners.close()
        if self.http is not None:
            await self.http.stop()
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
        return self.listeners is not None and self.listeners.is_serving()

    async def _join_cluster(self) -> None:
        """Register (under a lease in a cluster), take up this broker's replicas, stand for controller."""
        rack = self.config["broker.rack"] or None
        endpoints = tuple((e.listener_name, e.host or self.host, e.port) for e in self.advertised_endpoints())
        await self.metadata.register_broker(BrokerInfo(self.node_id, self.advertised_host, self.advertised_port, rack,
                                                       http=self.http_address, endpoints=endpoints))
        self.replicas.start()
        if self.controller is None:
            await self.metadata.elect_controller(self.node_id)  # the only broker: nothing to run for it
            return
        self.metadata.add_listener(self._on_cluster_change)
        await self._stand_for_controller()

    async def _create_offsets_topic(self, live_brokers: int = 1) -> None:
        """``__consumer_offsets``, once ``offsets.topic.replication.factor`` brokers are live (the
        controller asks); a cluster of one creates it at start, with one replica."""
        replication_factor = self.config["offsets.topic.replication.factor"] if self.controller is not None else 1
        if OFFSETS_TOPIC in self.metadata.topics or live_brokers < replication_factor:
            return
        try:
            await self.topics.create_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, replication_factor,
                                           offsets_topic_configs(self.config))
        except KafkaError as e:
            if e.error_code != ErrorCode.topic_already_exists:
                raise

    async def _create_share_state_topic(self) -> None:
        """``__share_group_state``, when share groups are first used (as Kafka creates it), with
        ``share.coordinator.state.topic.replication.factor`` replicas (one on a cluster of one)."""
        replication_factor = self.config["share.coordinator.state.topic.replication.factor"] if self.controller else 1
        try:
            await self.topics.create_topic(SHARE_GROUP_STATE, 1, replication_factor, state_topic_configs())
        except KafkaError as e:
            if e.error_code != ErrorCode.topic_already_exists:
                raise

    async def _stand_for_controller(self) -> None:
        try:
            await self._elect()
        except Exception as e:
            logger.warning("controller election failed: %s; trying again while no broker is the controller", e)
            if not self._stopping and (self._standing is None or self._standing.done()):
                self._standing = asyncio.get_running_loop().create_task(self._stand_again(), name="tidelog-controller-election")

    async def _elect(self) -> None:
        elected = await self.metadata.elect_controller(self.node_id)
        self._note_controller()
        if elected and not self.controller.active:
            self.controller.start(self.metadata.controller_epoch)

    async def _stand_again(self) -> None:
        """Stand for controller again, with back-off, until some broker is: a refused election
        (etcd unreachable, or this broker's lease lapsed and etcd answers "lease not found" until
        it has registered under a new one) is followed by no change of ``controller`` to try again
        on when every broker's try failed alike."""
        backoff_s = 0.1
        while True:
            await asyncio.sleep(backoff_s)
            if self._stopping or self.metadata.controller_id != -1:
                return
            try:
                await self._elect()
                return
            except Exception as e:
                backoff_s = min(backoff_s * 2, 2.0)
                logger.warning("controller election failed again: %s; next try in %.1f s", e, backoff_s)

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
        if topic != OFFSETS_TOPIC or partition != 0:
            return
        self.groups.stop()
        self.groups = GroupCoordinator(GroupSettings.from_config(self.config),
                                       ConsumerOffsetsTopic(self._offsets_partition, self.config["offsets.commit.timeout.ms"],
                                                            on_timeout=self.metrics.internal_write_timed_out))
        if leading:
            logger.info("broker %d is now the group coordinator", self.node_id)
            self._groups_loading = asyncio.get_running_loop().create_task(self.groups.start())

    def _on_topic_deleted(self, record) -> None:
        """A topic is gone (every broker hears it): its share-partitions leave memory here; the
        group coordinator's broker removes every group's offsets and share state of it (tombstones)."""
        self.shares.on_topic_deleted(record.topic_id, record.partitions)
        partition = self._offsets_partition()
        if partition is None or not partition.leading:
            return
        self.groups.on_topic_deleted(record.name, self.metrics.deleted_topic_offsets.labels("consumer").inc)

        async def share_state() -> None:
            removed = await self.shares.remove_topic_state(record.name, record.topic_id)
            if removed:
                self.metrics.deleted_topic_offsets.labels("share").inc(removed)

        self.groups.timers.spawn(share_state())

    def _group_configs(self, group_id: str):
        """A group's config overrides: a push subscription's group takes them from the subscription."""
        derived = self.push.group_configs(group_id)
        return derived if derived is not None else self.metadata.group_configs.get(group_id, {})

    def _offsets_partition(self):
        """``__consumer_offsets`` partition 0 as hosted here, or None."""
        return self.replicas.get(OFFSETS_TOPIC, 0) if self.replicas is not None else None

    def group_coordinator_error(self) -> ErrorCode | None:
        """Why this broker cannot serve a group request now, or None.

        In a cluster the group coordinator lives with the leadership of ``__consumer_offsets``
        partition 0: any other broker answers NOT_COORDINATOR (the client looks the coordinator
        up again), and the leader answers COORDINATOR_LOAD_IN_PROGRESS until it has replayed
        the partition (Kafka's two answers)."""
        partition = self._offsets_partition()
        if partition is None or not partition.leading:
            return ErrorCode.not_coordinator
        if not self.groups.loaded:
            return ErrorCode.coordinator_load_in_progress
        return None

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
        """Stop serving, stop every component, close the logs and the metadata store, release the
        data directory's lock. Every step runs even when an earlier one raises (an ERROR names the
        step that failed): the logs are still closed and the lock is released last whatever
        happened, also when the stop is cancelled, so that a later start in this process (or
        another process) finds the directory free. A cancellation (raised in the step it came in)
        is raised after that, else the first failure."""
        self._stopping = True
        logger.info("shutting down: closing listener and %d connections", len(self.connections))
        failures: list[BaseException] = []
        cancelled: asyncio.CancelledError | None = None
        try:
            for name, step in self._stop_steps():
                try:
                    result = step()
                    if result is not None:
                        await result
                except asyncio.CancelledError as e:  # the steps after it still run; raised after the lock
                    logger.error("shutdown: %s cancelled; the other steps still run", name)
                    cancelled = cancelled or e
                except Exception as e:  # noqa: BLE001 - the other steps must still run; raised below
                    logger.error("shutdown: %s failed: %s", name, e, exc_info=e)
                    failures.append(e)
        finally:
            try:
                self.loop_monitor.stop()
            finally:
                self._lock.release()
        if cancelled is not None:
            raise cancelled
        if failures:
            logger.error("shutdown complete with %d failed step(s); the data directory is unlocked", len(failures))
            raise failures[0]
        logger.info("shutdown complete: logs flushed, checkpoints written")

    def _stop_steps(self) -> list[tuple[str, Callable[[], Awaitable[object] | None]]]:
        """stop()'s steps in order, each named for the ERROR that says it failed. A step's
        condition is read when it runs (an earlier step may change what is left to do)."""

        async def controlled_shutdown() -> None:
            if self.controller is not None and self.config["controlled.shutdown.enable"]:
                await self.controlled_shutdown()

        def stop_controller() -> None:
            if self.controller is not None:
                self.controller.stop()
            if self._standing is not None:
                self._standing.cancel()

        def close_listeners() -> None:
            if self.listeners is not None:
                self.listeners.close()

        async def close_connections() -> None:
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.close()
            if self.listeners is not None:
                await self.listeners.wait_closed()

        def stop_resource_watch() -> None:
            if self._resource_watch is not None:
                self._resource_watch.cancel()

        async def close_logs() -> None:
            if self.logs is not None:
                if self.replicas is not None:
                    self.replicas.close()  # producer states and high watermarks, before the logs close
                await self.logs.close()

        return [("controlled shutdown", controlled_shutdown), ("delay topics", lambda: _stop(self.delay_topics)),
                ("push delivery", lambda: _stop(self.push_delivery)), ("controller", stop_controller),
                ("replica fetchers", lambda: _stop(self.replicas)), ("Kafka listeners", close_listeners),
                ("HTTP", lambda: _stop(self.http)), ("connections", close_connections),
                ("group coordinator", lambda: _stop(self.groups)), ("share groups", lambda: _stop(self.shares)),
                ("transactions", lambda: _stop(self.transactions)), ("resource watch", stop_resource_watch),
                ("logs", close_logs), ("metadata store", lambda: self.metadata.close())]

    # --- topics -----------------------------------------------------------------------
    def cleaner_config(self) -> CleanerConfig:
        config = self.config
        return CleanerConfig(
            enable=config["log.cleaner.enable"], threads=config["log.cleaner.threads"],
            dedupe_buffer_bytes=config["log.cleaner.dedupe.buffer.size"],
            load_factor=config["log.cleaner.io.buffer.load.factor"], io_buffer_bytes=config["log.cleaner.io.buffer.size"],
            io_max_bytes_per_second=config["log.cleaner.io.max.bytes.per.second"], backoff_ms=config["log.cleaner.backoff.ms"],
        )

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get(topic, partition)

    def request_context(self, header, peer: str, flexible: bool, listener: str = "",
                        access: Access | None = None) -> RequestContext:
        """What a handler gets for one request: the parts of the broker it may use, never the broker."""
        return RequestContext(header, peer, flexible, self.node_id, self.config, self.metadata, self.replicas, self.topics,
                              self.groups, self.metrics, self.logs, self.group_coordinator_error, self.new_producer_id,
                              self.shares, self.transactions, listener,
                              access if access is not None else self.access(ANONYMOUS, ""), self.security_records,
                              self.fetch_sessions)

    def connection_closed(self, peer: str) -> None:
        """A client connection closed: its share sessions end (their members' records are released)."""
        if self.shares is not None and self.shares.sessions.sessions():
            asyncio.get_running_loop().create_task(self.shares.connection_closed(peer))

    def access(self, principal: KafkaPrincipal, host: str) -> Access:
        """What ``principal`` connected from ``host`` may do (made once a connection, and again when it
        authenticates)."""
        return Access(self.authorizer, principal, host)

    def _on_security_change(self, kind: str, key: object) -> None:
        """ACLs or client quotas changed in the metadata store (here or on another broker)."""
        if kind == "security" and key == "acls" and self.authorizer is not None:
            self.authorizer.load(self.security_records.acl_bindings())
        elif kind == "security" and key == "quotas":
            self.quotas.update(self.security_records.client_quotas())

    def refresh_gauges(self) -> None:
        """Set the state gauges (server/gauges.py) from this broker's parts, once it serves."""
        is_controller = self.metadata.controller_id == self.node_id and (self.controller is None or self.controller.active)
        refresh_gauges(self.metrics, metadata=self.metadata, logs=self.logs, replicas=self.replicas, groups=self.groups,
                       resources=self.resources, is_controller=is_controller, started_at_ms=self.started_at_ms,
                       transactions=self.transactions)
        self.metrics.backlog_held_connections.set(sum(1 for c in list(self.connections) if c.held_for_replication))
        if self.shares is not None:
            self.shares.refresh_gauges(self.metrics)
        if self.push_delivery is not None:
            self.push_delivery.refresh_gauges(self.metrics)
        if self.delay_topics is not None:
            self.delay_topics.refresh_gauges(self.metrics)

    def high_watermark(self, topic: str, partition: int) -> int:
        """What consumers may read up to (the ISR's, never past the leader's durable end)."""
        return self.replicas.high_watermark(topic, partition)

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
        pending = self.replicas.pending_changes() if self.replicas is not None else 0
        return f"applying {pending} partition changes from the metadata store" if pending else None

    def _log_dir_check(self) -> str | None:
        if self.logs is not None and self.logs.offline:
            return f"log directory offline: {self.logs.offline_reason}"
        return None

    def _resources_check(self) -> str | None:
        for kind, detail in self.resources.exhausted().items():
            return f"out of {kind}: {detail}"
        return None

    # --- producer ids ------------------------------------------------------------------
    async def new_producer_id(self) -> int:
        """A producer id never used before in this cluster (ids are reserved in blocks of 1000)."""
        async with self._producer_id_lock:
            if not self._producer_ids:
                first = await self.metadata.allocate_producer_ids(PRODUCER_ID_BLOCK)
                self._producer_ids = range(first, first + PRODUCER_ID_BLOCK)
            producer_id = self._producer_ids[0]
            self._producer_ids = self._producer_ids[1:]
            return producer_id


def _why(error: OSError) -> str:
    """``Address already in use``: the system's words for a failed bind (asyncio's are longer)."""
    if error.errno and error.errno > 0:
        return os.strerror(error.errno).lower()
    return (error.strerror or str(error)).lower()  # getaddrinfo's: "name or service not known"
