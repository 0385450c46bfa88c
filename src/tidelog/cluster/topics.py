"""Topic administration: creating topics and partitions with Kafka's validation, deleting
topics, changing their configs, and finding them (by name, by id, a config's effective value).

A creation writes the logs of the partitions this broker keeps first, then the metadata; a
failure on the way (out of descriptors, a full disk) removes what was made and answers
KAFKA_STORAGE_ERROR, and a crash on the way leaves logs that the next start removes. This
broker's replicas of a topic it created, grew, reconfigured or deleted are updated before the
call returns (the ReplicaManager applies the store's new state at once); the other brokers'
when the store tells them. Serves CreateTopics, CreatePartitions, DeleteTopics, the config
APIs, Metadata's auto-creation and the HTTP API. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from typing import TYPE_CHECKING, Callable

from tidelog.cluster.controller import assign_replicas
from tidelog.cluster.metadata import TopicExists, TopicRecord, new_topic_id
from tidelog.cluster.partition import log_config_for
from tidelog.config import validate_topic_configs
from tidelog.protocol.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.config import BrokerConfig
    from tidelog.storage.log import PartitionLog
    from tidelog.storage.manager import LogManager

logger = logging.getLogger(__name__)

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_NAME_LENGTH = 249
MAX_PARTITIONS = 10000
_NO_CONFIGS: dict[str, str] = {}


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


class TopicAdmin:
    """See the module docstring. ``report(error, what)`` tells the resource monitor about an
    OSError (out of descriptors, of disk) and returns None when it is not about resources."""

    def __init__(self, node_id: int, config: "BrokerConfig", store: "MetadataStore", logs: "LogManager",
                 replicas: "ReplicaManager", report: Callable[[BaseException, str], object],
                 partition_capacity: int = MAX_PARTITIONS) -> None:
        self.node_id = node_id
        self.config = config
        self.metadata = store
        self.logs = logs
        self.replicas = replicas
        self.report = report
        self.partition_capacity = partition_capacity  # per broker (max.broker.partitions, or derived)
        self._creating: dict[str, asyncio.Future] = {}
        self._reserved_replicas = 0  # partition replicas being created (counted against the capacity)
        self._topic_values: dict[tuple[str, str], tuple[dict, object]] = {}
        self._topic_names_by_id: dict = {}

    def live_broker_count(self) -> int:
        return max(len(self.metadata.brokers), 1)  # 1: this broker, before it registers

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
        """Create a validated topic: the logs of the partitions this broker keeps first, then the
        metadata; a failure on the way (out of descriptors, a full disk) removes what was made
        and answers KAFKA_STORAGE_ERROR, and a crash on the way leaves logs that the next start
        removes. This broker's replicas are taken up before it returns."""
        record = TopicRecord(name, new_topic_id(), partitions, replication_factor, configs)
        done = asyncio.get_running_loop().create_future()
        self._creating[name] = done
        self._reserved_replicas += partitions * replication_factor
        try:
            assignment = assign_replicas(list(self.metadata.brokers.values()), partitions, replication_factor)
            what = f"creating topic {name}"
            created = self._create_logs(name, list(enumerate(assignment)), configs, what)
            try:
                await self.metadata.create_topic(record, assignment)
            except TopicExists:
                # Another broker created it first. Its topic may already have this broker's
                # replicas following on the logs just made (looked up by name): those stay.
                self._undo_partitions([log for log in created if not self._placed_here(name, log.partition)], name, None)
                raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.") from None
            except (OSError, KafkaError) as e:
                self._undo_partitions(created, name, None)
                raise self._creation_error(e, f"{what} ({len(created)} of {partitions} partitions made)")
            self.replicas.refresh(name)
        finally:
            del self._creating[name]
            self._reserved_replicas -= partitions * replication_factor
            done.set_result(None)
        logger.info("created topic %s (id %s) with %d partitions, configs %s", name, record.topic_id, partitions, configs or "{}")
        return record

    def _create_logs(self, name: str, states: list, configs: dict[str, str], what: str) -> list[PartitionLog]:
        """The logs of the new partitions (index, PartitionState) this broker keeps; on a failure
        the ones made are removed and the creation error raised."""
        log_config = log_config_for(self.config, configs)
        created: list[PartitionLog] = []
        for index, state in states:
            if self.node_id not in state.replicas or self.logs.get(name, index) is not None:
                continue
            try:
                created.append(self.logs.create(name, index, log_config))
            except (OSError, KafkaError) as e:
                self._undo_partitions(created, name, index)
                raise self._creation_error(e, f"{what} ({len(created)} of {len(states)} partitions made)")
        return created

    def _placed_here(self, topic: str, partition: int) -> bool:
        """Whether the store's topic of this name keeps a replica of the partition on this broker."""
        state = self.metadata.partitions.get((topic, partition)) if topic in self.metadata.topics else None
        return state is not None and self.node_id in state.replicas

    def _undo_partitions(self, logs: list, topic: str, failed: int | None) -> None:
        """Remove the logs a failed creation made, and the directory of the one it failed in."""
        for log in logs:
            try:
                self.logs.delete_partition(log.topic, log.partition)
            except (OSError, KafkaError) as e:  # the next start removes what is left
                logger.warning("cannot remove %s after a failed creation: %s", log.dir, e)
        if failed is not None and self.logs.get(topic, failed) is None:
            shutil.rmtree(self.logs.data_dir / f"{topic}-{failed}", ignore_errors=True)

    def _creation_error(self, error: BaseException, what: str) -> KafkaError:
        """The error a client gets when creating partitions failed part way (all undone)."""
        cause = error.__cause__ if isinstance(error, KafkaError) and isinstance(error.__cause__, OSError) else error
        if isinstance(error, KafkaError) and cause is error:
            return error
        if self.report(cause, what) is None:
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
        """Remove a topic: metadata first (so it is gone after a crash), then this broker's
        replicas of it (their waiting acknowledgements and parked fetches answer now)."""
        record = self.metadata.topics[name]
        await self.metadata.delete_topic(name)
        self._topic_values = {key: value for key, value in self._topic_values.items() if key[0] != name}
        self.replicas.refresh(name)
        logger.info("deleted topic %s (id %s)", name, record.topic_id)

    async def create_partitions(self, name: str, count: int) -> None:
        """Grow a topic to ``count`` partitions (validated by the caller): the new logs this
        broker keeps, then the metadata; a failure on the way removes the new logs
        (KAFKA_STORAGE_ERROR)."""
        record = self.metadata.topics[name]
        old_count = record.partitions
        new_states = assign_replicas(list(self.metadata.brokers.values()), count - old_count,
                                     record.replication_factor, first_partition=old_count)
        what = f"adding partitions to {name}"
        self._reserved_replicas += (count - old_count) * record.replication_factor
        try:
            created = self._create_logs(name, list(enumerate(new_states, old_count)), record.configs, what)
            try:
                await self.metadata.set_partitions(name, count, new_states)
            except (OSError, KafkaError) as e:
                self._undo_partitions(created, name, None)
                raise self._creation_error(e, f"{what} ({len(created)} of {count - old_count} made)")
        finally:
            self._reserved_replicas -= (count - old_count) * record.replication_factor
        self.replicas.refresh(name)
        logger.info("topic %s: partitions %d -> %d", name, old_count, count)

    async def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """Replace a topic's config overrides (validated by the caller); this broker's replicas
        of it apply them at once (the others when the store tells their brokers)."""
        await self.metadata.set_configs(name, configs)
        self.replicas.refresh(name)
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
