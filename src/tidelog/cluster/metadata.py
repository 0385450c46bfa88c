"""Cluster metadata: brokers, the controller, topics, partition states, producer-id blocks.

``MetadataStore`` is the interface the broker uses, with two implementations that pass one
contract-test suite (tests/integration/test_metadata_store_contract.py):

- ``EmbeddedMetadataStore`` (single node, the default): one JSON file in the data directory
  (``__tidelog_meta/metadata.json``), replaced atomically and durably on every change
  (storage/checkpoint.py: temporary file, fsync, rename, fsync the directory). This broker is
  the only live broker, the controller (epoch 1) and the leader of every partition.
- ``EtcdMetadataStore`` (cluster/etcd_store.py): the same state in etcd v3, brokers registered
  under a lease, the controller elected by create-if-absent.

The reads are plain attributes kept current by the store (``topics``, ``partitions``,
``brokers``, ``controller_id``, ``controller_epoch``); every write is a coroutine. Partition
states change only by compare-and-swap: ``compare_and_set_partition`` succeeds only if the
stored state's ``version`` (the store revision of its last write) is still the caller's, and,
when a controller epoch is given, only while that controller still holds the election.
A broker about to stop (controlled shutdown) says so with ``announce_shutdown``: it joins
``shutting_down`` (until its registration goes) and the controller moves its leaderships away.
A broker whose log directory went offline after an I/O error says so with ``announce_offline``:
it joins ``offline`` (until its registration goes) and its replicas are offline to the
controller: they lead nothing and count in no ISR (Kafka's offline replicas).
The security records (``security``: SCRAM credentials, ACLs, client quotas, as JSON by kind and
key; security/records.py reads them) change with ``alter_security``, all of one call at once.
Listeners (``add_listener``) are called after each change with ``(kind, key)``: kind is
"broker" (key node id; also for a shutdown announcement), "controller" (None), "topic" (name),
"partition" ((topic, index)), "unfenced" (node id: the controller let a registration back into
ISRs, ``mark_unfenced``) or "security" (the record kind).
Not thread-safe; the event loop owns a store.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Protocol

from tidelog.storage.checkpoint import write_checkpoint_file

logger = logging.getLogger(__name__)

META_DIR = "__tidelog_meta"

Listener = Callable[[str, object], None]


@dataclass
class TopicRecord:
    name: str
    topic_id: uuid.UUID
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "topic_id": str(self.topic_id),
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": self.configs,
        }

    @classmethod
    def from_json(cls, data: dict) -> "TopicRecord":
        return cls(
            name=data["name"],
            topic_id=uuid.UUID(data["topic_id"]),
            partitions=int(data["partitions"]),
            replication_factor=int(data.get("replication_factor", 1)),
            configs=dict(data.get("configs", {})),
        )


@dataclass(frozen=True)
class BrokerInfo:
    """A live broker: where clients and followers reach it, and its rack (``broker.rack``).

    ``epoch`` (Kafka's broker epoch) is the store revision of the broker's registration: it
    grows every time the broker registers again (a restart, or a lapsed lease). Not part of
    the stored JSON; the store sets it. ``http`` is where its HTTP listener (console, API) is,
    ``host:port``, or None without one: any broker's API forwards group routes to the group
    coordinator's. ``host``/``port`` are its inter-broker listener's; ``endpoints`` every
    advertised listener's ``(name, host, port)``: Metadata answers a client with the endpoints
    of the listener it came in on."""

    node_id: int
    host: str
    port: int
    rack: str | None = None
    epoch: int = 0
    http: str | None = None
    endpoints: tuple[tuple[str, str, int], ...] = ()

    def endpoint(self, listener: str) -> tuple[str, int] | None:
        """Where a client of ``listener`` reaches this broker; None if it has no such listener
        (a broker registered without endpoints is reached on ``host:port`` by every listener)."""
        if not self.endpoints:
            return self.host, self.port
        return next(((host, port) for name, host, port in self.endpoints if name == listener), None)

    def to_json(self) -> dict:
        data = {"node_id": self.node_id, "host": self.host, "port": self.port, "rack": self.rack}
        if self.http is not None:
            data["http"] = self.http
        if self.endpoints:
            data["endpoints"] = [list(e) for e in self.endpoints]
        return data

    @classmethod
    def from_json(cls, data: dict, epoch: int = 0) -> "BrokerInfo":
        endpoints = tuple((str(name), str(host), int(port)) for name, host, port in data.get("endpoints", ()))
        return cls(int(data["node_id"]), data["host"], int(data["port"]), data.get("rack"), epoch, data.get("http"),
                   endpoints)


@dataclass(frozen=True)
class PartitionState:
    """One partition's replication state. ``leader`` -1 means offline (no eligible replica).

    ``leader_epoch`` grows with every leader change; ``partition_epoch`` with every change at
    all (leader or ISR). ``version`` is the store revision of the write that produced this
    state: the token ``compare_and_set_partition`` compares. During a reassignment (as in
    Kafka) ``replicas`` holds the target replicas followed by those leaving, ``adding`` the
    target replicas that were not replicas before and ``removing`` those leaving.
    """

    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    isr: tuple[int, ...] = ()
    partition_epoch: int = 0
    version: int = 0
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()

    def to_json(self) -> dict:
        data = {"replicas": list(self.replicas), "leader": self.leader, "leader_epoch": self.leader_epoch,
                "isr": list(self.isr), "partition_epoch": self.partition_epoch}
        if self.adding or self.removing:
            data["adding"], data["removing"] = list(self.adding), list(self.removing)
        return data

    @classmethod
    def from_json(cls, data: dict, version: int = 0) -> "PartitionState":
        return cls(tuple(data["replicas"]), int(data["leader"]), int(data.get("leader_epoch", 0)),
                   tuple(data.get("isr", ())), int(data.get("partition_epoch", 0)), version,
                   tuple(data.get("adding", ())), tuple(data.get("removing", ())))

    @property
    def reassigning(self) -> bool:
        return bool(self.adding or self.removing)

    @property
    def target_replicas(self) -> tuple[int, ...]:
        return tuple(r for r in self.replicas if r not in self.removing)

    def reassigned(self, target: list[int] | tuple[int, ...]) -> "PartitionState":
        """Start moving to ``target`` replicas: the new ones join as followers first."""
        original = tuple(r for r in self.replicas if r not in self.adding)  # as before any reassignment
        target = tuple(target)
        if target == original:
            return self.changed(replicas=original, isr=tuple(r for r in self.isr if r in original), adding=(), removing=())
        return self.changed(replicas=target + tuple(r for r in original if r not in target),
                            adding=tuple(r for r in target if r not in original),
                            removing=tuple(r for r in original if r not in target))

    def cancelled_reassignment(self) -> "PartitionState":
        return self.reassigned(tuple(r for r in self.replicas if r not in self.adding))

    def changed(self, **fields) -> "PartitionState":
        """A successor state: the given fields replaced and ``partition_epoch`` bumped."""
        return replace(self, partition_epoch=self.partition_epoch + 1, **fields)

    @classmethod
    def initial(cls, replicas: list[int] | tuple[int, ...]) -> "PartitionState":
        """A new partition: the first replica leads, every replica is in sync (all are empty)."""
        return cls(tuple(replicas), replicas[0], 0, tuple(replicas), 0)


class MetadataStore(Protocol):
    cluster_id: str
    topics: dict[str, TopicRecord]
    partitions: dict[tuple[str, int], PartitionState]
    brokers: dict[int, BrokerInfo]
    broker_epoch: int  # this broker's registration (BrokerInfo.epoch); 0 before it registers
    shutting_down: set[int]  # live brokers in controlled shutdown: they may lead nothing
    offline: set[int]  # live brokers whose log directory is offline: their replicas are offline
    unfenced: dict[int, int]  # broker id -> its registration (epoch) the controller fenced and let back
    controller_id: int  # -1 while there is none
    controller_epoch: int
    group_configs: dict[str, dict[str, str]]  # group id -> its config overrides (the GROUP config resource)
    security: dict[str, dict[str, dict]]  # record kind -> key -> JSON

    async def start(self, cluster_id: str = "") -> None: ...
    async def close(self) -> None: ...
    async def register_broker(self, broker: BrokerInfo) -> None: ...
    async def elect_controller(self, node_id: int) -> bool: ...
    async def announce_shutdown(self, node_id: int) -> None: ...
    async def announce_offline(self, node_id: int) -> None: ...
    async def mark_unfenced(self, epochs: dict[int, int], controller_epoch: int, gone: Iterable[int] = ()) -> bool: ...
    def add_listener(self, listener: Listener) -> None: ...

    async def create_topic(self, record: TopicRecord, assignment: list[PartitionState] | None = None) -> None: ...
    async def delete_topic(self, name: str) -> None: ...
    async def set_partitions(self, name: str, partitions: int, new_states: list[PartitionState] | None = None) -> None: ...
    async def set_configs(self, name: str, configs: dict[str, str]) -> None: ...
    async def set_group_configs(self, group_id: str, configs: dict[str, str]) -> None: ...
    async def compare_and_set_partition(self, topic: str, partition: int, state: PartitionState,
                                        controller_epoch: int | None = None) -> PartitionState | None: ...
    async def allocate_producer_ids(self, count: int) -> int: ...
    async def alter_security(self, kind: str, puts: dict[str, dict], deletes: list[str]) -> None: ...


class TopicExists(Exception):
    """create_topic of a name the store already holds (another broker created it first)."""


class ClusterIdMismatch(RuntimeError):
    """The store (data directory or etcd) belongs to another cluster than ``cluster.id`` says."""


def new_topic_id() -> uuid.UUID:
    """A random, non-zero topic id (Kafka reserves the zero UUID and the 'metadata' id 1)."""
    while True:
        topic_id = uuid.uuid4()
        if topic_id.int > 1:
            return topic_id


class EmbeddedMetadataStore:
    """Single-node metadata in a JSON file: ``{"cluster_id", "revision", "next_producer_id_block",
    "topics": [TopicRecord...], "partitions": {topic: [PartitionState...]}, "group_configs": {group: {...}}}``."""

    def __init__(self, data_dir: Path, node_id: int = 1) -> None:
        self.dir = Path(data_dir) / META_DIR
        self.path = self.dir / "metadata.json"
        self.node_id = node_id
        self.cluster_id = ""
        self.topics: dict[str, TopicRecord] = {}
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self.brokers: dict[int, BrokerInfo] = {}
        self.broker_epoch = 0  # a single node never meets a state from before its registration
        self.shutting_down: set[int] = set()
        self.offline: set[int] = set()
        self.unfenced: dict[int, int] = {}
        self.controller_id = -1
        self.controller_epoch = 0
        self.revision = 0
        self.next_producer_id_block = 0  # ids below this may have been handed out
        self.group_configs: dict[str, dict[str, str]] = {}
        self.security: dict[str, dict[str, dict]] = {}
        self._listeners: list[Listener] = []

    def load(self, cluster_id: str = "") -> None:
        """Read the file; written (durably) only when the start changed something (a new
        cluster, a replica set made this broker's): an unchanged start leaves it as it is."""
        self.dir.mkdir(parents=True, exist_ok=True)
        changed = not self.path.exists()
        if not changed:
            data = json.loads(self.path.read_text())
            self.cluster_id = data["cluster_id"]
            self.topics = {t["name"]: TopicRecord.from_json(t) for t in data.get("topics", [])}
            self.next_producer_id_block = int(data.get("next_producer_id_block", 0))
            self.revision = int(data.get("revision", 0))
            self.group_configs = {g: dict(c) for g, c in data.get("group_configs", {}).items()}
            self.security = data.get("security", {})
            for name, states in data.get("partitions", {}).items():
                for index, state in enumerate(states):
                    self.partitions[(name, index)] = PartitionState.from_json(state, self.revision)
            if cluster_id and cluster_id != self.cluster_id:
                raise ClusterIdMismatch(
                    f"data directory belongs to cluster {self.cluster_id}, not {cluster_id}"
                )
        else:
            self.cluster_id = cluster_id or _new_cluster_id()
        # This broker is the only replica of everything (also of topics from before partition
        # states were kept, or after node.id changed).
        for record in self.topics.values():
            for index in range(record.partitions):
                state = self.partitions.get((record.name, index))
                if state is None or state.replicas != (self.node_id,):
                    self.partitions[(record.name, index)] = PartitionState.initial([self.node_id])
                    changed = True
        if changed:
            self._save()
        logger.info("metadata loaded: cluster %s, %d topics", self.cluster_id, len(self.topics))

    async def start(self, cluster_id: str = "") -> None:
        self.load(cluster_id)

    async def close(self) -> None:
        pass

    async def register_broker(self, broker: BrokerInfo) -> None:
        self.brokers = {broker.node_id: broker}
        self._notify("broker", broker.node_id)

    async def elect_controller(self, node_id: int) -> bool:
        self.controller_id, self.controller_epoch = node_id, 1
        self._notify("controller", None)
        return True

    async def announce_shutdown(self, node_id: int) -> None:
        self.shutting_down.add(node_id)
        self._notify("broker", node_id)

    async def announce_offline(self, node_id: int) -> None:
        self.offline.add(node_id)
        self._notify("broker", node_id)

    async def mark_unfenced(self, epochs: dict[int, int], controller_epoch: int, gone: Iterable[int] = ()) -> bool:
        self.unfenced.update(epochs)
        gone = [node_id for node_id in gone if self.unfenced.pop(node_id, None) is not None]
        for node_id in (*epochs, *gone):
            self._notify("unfenced", node_id)
        return True

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, kind: str, key: object) -> None:
        for listener in self._listeners:
            listener(kind, key)

    async def create_topic(self, record: TopicRecord, assignment: list[PartitionState] | None = None) -> None:
        if record.name in self.topics:
            raise TopicExists(record.name)
        self.revision += 1
        self.topics[record.name] = record
        for index in range(record.partitions):
            state = assignment[index] if assignment else PartitionState.initial([self.node_id])
            self.partitions[(record.name, index)] = replace(state, version=self.revision)
        try:
            self._save()
        except OSError:  # not written (a full disk): the store stays as the file has it
            del self.topics[record.name]
            for index in range(record.partitions):
                del self.partitions[(record.name, index)]
            raise
        self._notify("topic", record.name)

    async def delete_topic(self, name: str) -> None:
        record = self.topics.pop(name)
        for index in range(record.partitions):
            self.partitions.pop((name, index), None)
        self.revision += 1
        self._save()
        self._notify("topic", name)

    async def set_partitions(self, name: str, partitions: int, new_states: list[PartitionState] | None = None) -> None:
        record = self.topics[name]
        self.revision += 1
        old_count = record.partitions
        for i, index in enumerate(range(record.partitions, partitions)):
            state = new_states[i] if new_states else PartitionState.initial([self.node_id])
            self.partitions[(name, index)] = replace(state, version=self.revision)
        record.partitions = partitions
        try:
            self._save()
        except OSError:  # not written (a full disk): the store stays as the file has it
            record.partitions = old_count
            for index in range(old_count, partitions):
                del self.partitions[(name, index)]
            raise
        self._notify("topic", name)

    async def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self.topics[name].configs = dict(configs)
        self.revision += 1
        self._save()
        self._notify("topic", name)

    async def set_group_configs(self, group_id: str, configs: dict[str, str]) -> None:
        """Replace a group's config overrides (none: forget the group's entry)."""
        before = self.group_configs.get(group_id)
        if configs:
            self.group_configs[group_id] = dict(configs)
        else:
            self.group_configs.pop(group_id, None)
        self.revision += 1
        try:
            self._save()
        except OSError:
            if before is None:
                self.group_configs.pop(group_id, None)
            else:
                self.group_configs[group_id] = before
            raise

    async def compare_and_set_partition(self, topic: str, partition: int, state: PartitionState,
                                        controller_epoch: int | None = None) -> PartitionState | None:
        current = self.partitions.get((topic, partition))
        if current is None or current.version != state.version:
            return None
        if controller_epoch is not None and controller_epoch != self.controller_epoch:
            return None
        self.revision += 1
        stored = self.partitions[(topic, partition)] = replace(state, version=self.revision)
        self._save()
        self._notify("partition", (topic, partition))
        return stored

    async def allocate_producer_ids(self, count: int) -> int:
        """Reserve ``count`` producer ids, never handed out before; return the first."""
        first = self.next_producer_id_block
        self.next_producer_id_block = first + count
        self._save()
        return first

    async def alter_security(self, kind: str, puts: dict[str, dict], deletes: list[str]) -> None:
        before = dict(self.security.get(kind, {}))
        records = self.security.setdefault(kind, {})
        for key in deletes:
            records.pop(key, None)
        records.update(puts)
        self.revision += 1
        try:
            self._save()
        except OSError:  # not written: the store stays as the file has it
            self.security[kind] = before
            raise
        self._notify("security", kind)

    def _save(self) -> None:
        partitions: dict[str, list[dict]] = {}
        for record in self.topics.values():
            partitions[record.name] = [self.partitions[(record.name, i)].to_json() for i in range(record.partitions)]
        data = {
            "cluster_id": self.cluster_id,
            "revision": self.revision,
            "next_producer_id_block": self.next_producer_id_block,
            "topics": [t.to_json() for t in self.topics.values()],
            "partitions": partitions,
            "group_configs": self.group_configs,
            "security": self.security,
        }
        write_checkpoint_file(self.path, json.dumps(data, indent=1))


def _new_cluster_id() -> str:
    """Kafka's format: a base64url (no padding) random UUID, 22 characters."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
