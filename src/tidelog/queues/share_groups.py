"""Share groups on this broker: the composition of the share-group pieces and their lifecycle.

What it holds (each a piece of queues/):

- ``membership`` (share_group.ShareGroupCoordinator): ShareGroupHeartbeat, assignment, session
  timers, describe/list/delete; it lives with the group coordinator (``__consumer_offsets``-0).
- ``sessions`` (share_session.ShareSessionCache): the ShareFetch sessions of this broker.
- ``manager`` (manager.ShareManager): the share-partitions, acquisition, acknowledgements, locks,
  dead letters; None until the state is loaded (``manager_or_error``).
- ``store`` (state_store.ShareStateStore): the durable state over ``__share_group_state``.

The collaborators are narrow: the ReplicaManager (``replicas.get`` / ``leader``: the
Partition objects, for reading the topics' logs and appending the state and dead-letter
records), the topic lookup by id (TopicAdmin), the metadata store's topics by name, the broker
config, and hooks for metrics and for "is this id a classic/consumer group". Through them a
share-partition reads its topic-partition's log as a consumer does (below the high watermark)
and every state write is an acks=all append to ``__share_group_state``-0 through its Partition,
as the group coordinator writes ``__consumer_offsets``.

Loading: when this broker leads ``__share_group_state``-0 (at start on a single node, on a
leadership change in a cluster) a new store replays the partition and a new manager is made;
when it stops leading it the manager is closed (parked fetches wake, nothing is written) and
requests get COORDINATOR_NOT_AVAILABLE until the next load. A share-partition of a
topic-partition this broker stops leading is dropped from memory; its state stays in the topic.

Group configs (IncrementalAlterConfigs on the GROUP resource) are kept in ``group_configs`` by
whoever persists them (the metadata store) and read here on every use.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Mapping

from tidelog.clock import wall_clock_ms
from tidelog.cluster.partition import wait_for_data
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, InvalidBatch, build_batch, iter_records, parse_batch_header
from tidelog.protocol.topics import SHARE_GROUP_STATE
from tidelog.queues.dead_letters import DeadLetterWriter
from tidelog.queues.manager import ShareConfig, ShareManager
from tidelog.queues.share_group import ShareGroup, ShareGroupCoordinator, ShareGroupSettings, TopicInfo
from tidelog.queues.share_session import ShareSessionCache
from tidelog.queues.state_records import ShareStateKey
from tidelog.queues.state_store import TOPIC_CONFIGS as STATE_TOPIC_CONFIGS
from tidelog.queues.state_store import ShareStateStore

if TYPE_CHECKING:
    from tidelog.cluster.metadata import TopicRecord
    from tidelog.cluster.partition import Partition
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.config import BrokerConfig

logger = logging.getLogger(__name__)

STATE_PARTITION = 0
_READ_BYTES = 1 << 20

# on_counts(group_id, {event: records}) for the metrics
CountsHook = Callable[[str, Mapping[str, int]], None]


def state_topic_configs() -> dict[str, str]:
    """``__share_group_state`` when it is created: not compacted (pruned by DeleteRecords, as Kafka's)."""
    return dict(STATE_TOPIC_CONFIGS)


class ReplicaSource:
    """The PartitionSource of the ShareManager over this broker's Partition objects: a
    share-partition is served where its topic-partition is led, and reads as a consumer does."""

    def __init__(self, replicas: "ReplicaManager", topic_by_id: Callable[[uuid.UUID], "TopicRecord | None"]) -> None:
        self._replicas = replicas
        self._topic_by_id = topic_by_id

    def leader(self, topic_id: uuid.UUID, partition: int) -> "Partition":
        record = self._topic_by_id(topic_id)
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_id, f"Topic id {topic_id} is not known.")
        return self._replicas.leader(record.name, partition)

    def log_start_offset(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.leader(topic_id, partition).log.log_start_offset

    def high_watermark(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.leader(topic_id, partition).high_watermark

    def last_stable_offset(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.leader(topic_id, partition).last_stable_offset

    def offset_for_timestamp(self, topic_id: uuid.UUID, partition: int, timestamp_ms: int) -> int | None:
        found = self.leader(topic_id, partition).log.offset_for_timestamp(timestamp_ms)
        return None if found is None else found[0]

    def aborted_transactions(self, topic_id: uuid.UUID, partition: int, fetch_offset: int,
                             upper_bound_offset: int) -> Iterable[tuple[int, int]]:
        partition_object = self.leader(topic_id, partition)
        aborted = getattr(partition_object, "aborted_transactions", None)  # once transactions are wired
        return () if aborted is None else aborted(fetch_offset, upper_bound_offset)

    def read(self, topic_id: uuid.UUID, partition: int, offset: int, max_bytes: int, max_offset: int):
        partition_object = self.leader(topic_id, partition)
        error = partition_object.leader_error()
        if error is not None:
            raise KafkaError(error, f"{partition_object.topic}-{partition} cannot be read here")
        return partition_object.log.read(offset, max_bytes, True, min(max_offset, partition_object.high_watermark))


class StateTopic:
    """Appends to ``__share_group_state``-0 as its leader (acks=all, as Produce) and replays it."""

    def __init__(self, replicas: "ReplicaManager", write_timeout_ms: int) -> None:
        self._replicas = replicas
        self.write_timeout_ms = write_timeout_ms

    def partition(self) -> "Partition":
        try:
            return self._replicas.leader(SHARE_GROUP_STATE, STATE_PARTITION)
        except KafkaError as e:
            raise KafkaError(ErrorCode.not_coordinator, f"{SHARE_GROUP_STATE} not led here: {e.message}") from None

    async def append(self, records: list[tuple[bytes, bytes | None]]) -> int:
        partition = self.partition()
        batch = memoryview(bytearray(build_batch([(key, value, []) for key, value in records])))
        try:
            appended = partition.append_as_leader(batch, required_acks=-1)
        except (KafkaError, InvalidBatch) as e:
            raise KafkaError(ErrorCode.not_coordinator, f"{SHARE_GROUP_STATE} not writable: {e}") from None
        try:
            error = await partition.wait_acknowledged(appended.end_offset, -1, self.write_timeout_ms / 1000)
        except KafkaError as e:
            error = e.error_code
        if error != ErrorCode.none:
            raise KafkaError(ErrorCode.coordinator_not_available if error != ErrorCode.request_timed_out else error,
                             f"{SHARE_GROUP_STATE} write not acknowledged: {error.name}")
        return appended.base_offset

    def replay_into(self, store: ShareStateStore) -> int:
        """Every record of the partition, in order, into ``store``; returns how many."""
        log = self.partition().log
        offset, count = log.log_start_offset, 0
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
                if record.offset >= offset and record.key is not None:
                    store.replay(record.key, record.value, record.offset)
                    count += 1
            if last < offset:
                break
            offset = last + 1
        return count

    def prune(self, before_offset: int) -> None:
        """Records below ``before_offset`` are redundant (every state has a snapshot at or after it)."""
        partition = self.partition()
        if before_offset > partition.log.log_start_offset:
            partition.delete_records_before(before_offset)


class ShareGroups:
    def __init__(self, config: "BrokerConfig", replicas: "ReplicaManager",
                 topic_by_id: Callable[[uuid.UUID], "TopicRecord | None"],
                 topics_by_name: Callable[[], Mapping[str, "TopicRecord"]], *,
                 group_configs: Callable[[str], Mapping[str, str]] = lambda group_id: {},
                 is_other_group: Callable[[str], bool] = lambda group_id: False,
                 create_state_topic: Callable[[], Awaitable[None]] | None = None,
                 on_counts: CountsHook | None = None) -> None:
        self.config = config
        self._replicas = replicas
        self.topic_by_id = topic_by_id
        self.topics_by_name = topics_by_name
        self.group_configs = group_configs
        self._on_counts = on_counts
        self.source = ReplicaSource(replicas, topic_by_id)
        self.state_topic = StateTopic(replicas, config["share.coordinator.write.timeout.ms"])
        self.dead_letters = DeadLetterWriter(config, replicas, topics_by_name, topic_by_id, self.share_config,
                                             on_written=self._count_dead_letters)
        self.sessions = ShareSessionCache(config["group.share.max.share.sessions"])
        self.membership = ShareGroupCoordinator(
            ShareGroupSettings.from_config(config), initialize=self._initialize, on_member_removed=self._member_removed,
            group_config=self._membership_config, is_other_group=is_other_group,
            has_state=lambda group_id: self.store is not None and bool(self.store.keys(group_id)))
        self.store: ShareStateStore | None = None
        self.manager: ShareManager | None = None
        self._loading: asyncio.Task | None = None
        self._create_state_topic = create_state_topic
        self._loaded = asyncio.Event()
        self._totals: dict[str, dict[str, int]] = {}

    # --- configs ------------------------------------------------------------------------------
    def share_config(self, group_id: str) -> ShareConfig:
        return ShareConfig.resolve(self.config, dict(self.group_configs(group_id)))

    def _membership_config(self, group_id: str) -> Mapping[str, int]:
        overrides = dict(self.group_configs(group_id))
        return {name: self.config.group_value(overrides, name)
                for name in ("share.session.timeout.ms", "share.heartbeat.interval.ms")}

    # --- state ----------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.manager is not None

    def manager_or_error(self) -> ShareManager:
        """The manager, or KafkaError COORDINATOR_NOT_AVAILABLE while the state is not loaded here."""
        if self.manager is None:
            raise KafkaError(ErrorCode.coordinator_not_available,
                             f"The share-group state ({SHARE_GROUP_STATE}) is not loaded on this broker.")
        return self.manager

    async def ensure_loaded(self, timeout_s: float = 10.0) -> ShareManager:
        """The manager, creating ``__share_group_state`` first if share groups were never used (as
        Kafka creates it on first use) and waiting for its load; KafkaError COORDINATOR_NOT_AVAILABLE
        when that does not happen in ``timeout_s`` (the client retries)."""
        if self.manager is not None:
            return self.manager
        if SHARE_GROUP_STATE not in self.topics_by_name() and self._create_state_topic is not None:
            try:
                await self._create_state_topic()
            except KafkaError as e:
                logger.warning("cannot create %s yet: %s", SHARE_GROUP_STATE, e)
                raise KafkaError(ErrorCode.coordinator_not_available,
                                 f"{SHARE_GROUP_STATE} cannot be created yet: {e.message}") from None
        try:
            await asyncio.wait_for(self._loaded.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        return self.manager_or_error()

    async def load(self) -> None:
        """Replay ``__share_group_state``-0 (led here) into a new store and manager."""
        await self.unload()
        store = ShareStateStore(self.state_topic.append, wall_clock_ms,
                                self.config["share.coordinator.snapshot.update.records.per.snapshot"])
        count = self.state_topic.replay_into(store)
        self.store = store
        self.manager = ShareManager(store, self.source, self.share_config, dead_letter=self.dead_letters.write,
                                    on_counts=self._count)
        self._loaded.set()
        logger.info("loaded %d share-partition states from %d %s records", len(store.keys()), count,
                    SHARE_GROUP_STATE)

    async def unload(self) -> None:
        manager, self.manager, self.store = self.manager, None, None
        self._loaded.clear()
        if manager is not None:
            await manager.close()

    def on_leadership(self, topic: str, partition: int, leading: bool) -> None:
        """A leadership change of this broker (ReplicaManager.on_leadership)."""
        if topic == SHARE_GROUP_STATE and partition == STATE_PARTITION:
            if self._loading is not None and not self._loading.done():
                self._loading.cancel()
            self._loading = asyncio.get_running_loop().create_task(self.load() if leading else self.unload())
            self._loading.add_done_callback(_log_failure)
            return
        if not leading and self.manager is not None:
            record = self.topics_by_name().get(topic)
            if record is not None:
                self.manager.forget_partition(record.topic_id, partition)

    async def wait_loaded(self) -> None:
        if self._loading is not None:
            await asyncio.shield(self._loading)

    def prune_state_topic(self) -> None:
        """Delete the records of ``__share_group_state`` no state needs any more."""
        if self.store is None:
            return
        offset = self.store.prunable_offset()
        if offset is not None:
            try:
                self.state_topic.prune(offset)
            except KafkaError as e:
                logger.debug("pruning %s: %s", SHARE_GROUP_STATE, e)

    # --- admin ---------------------------------------------------------------------------------
    def group(self, group_id: str) -> ShareGroup | None:
        """The share group: a live one, or an Empty one known only by its share-partition state
        (membership is kept in memory: after a restart members rejoin, the state is durable)."""
        group = self.membership.groups.get(group_id)
        if group is not None and not group.deleted:
            return group
        if self.store is not None and self.store.keys(group_id):
            return ShareGroup(group_id)
        return None

    def list_groups(self, states: Iterable[str] = ()) -> list[ShareGroup]:
        wanted = {s.lower() for s in states}
        ids = set(self.membership.groups) | ({k.group_id for k in self.store.keys()} if self.store else set())
        groups = [g for g in (self.group(i) for i in sorted(ids)) if g is not None]
        return [g for g in groups if not wanted or g.state.lower() in wanted]

    async def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups of a share group: only an Empty one; its share-partition state goes with it."""
        group = self.group(group_id)
        if group is None:
            return ErrorCode.group_id_not_found
        if group.members:
            return ErrorCode.non_empty_group
        if group_id in self.membership.groups:
            self.membership.delete(group_id)
        keys = self.store.keys(group_id) if self.store is not None else []
        if keys:
            await self.manager_or_error().delete_offsets(group_id, [(k.topic_id, k.partition) for k in keys])
        return ErrorCode.none

    # --- membership collaborators ----------------------------------------------------------------
    async def _initialize(self, group_id: str, partitions: dict[uuid.UUID, set[int]]) -> None:
        await self.manager_or_error().initialize(group_id, partitions)

    async def _member_removed(self, group_id: str, member_id: str, failed: bool) -> None:
        self.sessions.remove(group_id, member_id)
        if self.manager is not None:
            await self.manager.release_member(group_id, member_id, count_delivery=failed)

    async def connection_closed(self, connection_id: str) -> None:
        """A client connection closed: its share sessions go and their members' records are
        released (the delivery counts: the member did not close its session)."""
        for session in self.sessions.on_disconnect(connection_id):
            if self.manager is not None:
                await self.manager.release_member(session.group_id, session.member_id, count_delivery=True,
                                                  partitions=list(session.partitions))

    # --- for ShareFetch and the HTTP API ------------------------------------------------------
    def topics_info(self) -> dict[str, TopicInfo]:
        """Topic name -> (id, partitions), as a heartbeat needs them."""
        return {t.name: TopicInfo(t.topic_id, t.partitions) for t in self.topics_by_name().values()}

    async def wait_for_records(self, group_id: str, partitions: Iterable[tuple[uuid.UUID, int]], timeout_s: float) -> None:
        """Until new records reach one of the partitions' logs (here), or records of the group's
        share-partitions of them become available again (released, lock expired), or ``timeout_s``."""
        partitions = list(partitions)
        led = []
        for topic_id, index in partitions:
            record = self.topic_by_id(topic_id)
            found = self._replicas.get(record.name, index) if record is not None else None
            if found is not None:
                led.append(found)
        waits = [asyncio.ensure_future(wait_for_data(led, timeout_s))]
        if self.manager is not None:
            keys = [ShareStateKey(group_id, topic_id, index) for topic_id, index in partitions]
            waits.append(asyncio.ensure_future(self.manager.wait(keys, timeout_s)))
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    # --- metrics ---------------------------------------------------------------------------------
    def group_counts(self, group_id: str) -> dict[str, int]:
        """The group's record events since this broker started (acquired, redelivered, acknowledged,
        released, rejected, renewed, lock_expired, archived, dead_lettered)."""
        return dict(self._totals.get(group_id, {}))

    def _count(self, key: ShareStateKey, counts: Mapping[str, int]) -> None:
        totals = self._totals.setdefault(key.group_id, {})
        for event, records in counts.items():
            totals[event] = totals.get(event, 0) + records
        if self._on_counts is not None:
            self._on_counts(key.group_id, counts)

    def _count_dead_letters(self, group_id: str, records: int) -> None:
        totals = self._totals.setdefault(group_id, {})
        totals["dead_lettered"] = totals.get("dead_lettered", 0) + records
        if self._on_counts is not None:
            self._on_counts(group_id, {"dead_lettered": records})

    def refresh_gauges(self, metrics) -> None:
        """The state gauges (at scrape time): share groups by state, members, sessions, in-flight records."""
        for gauge in (metrics.share_groups, metrics.share_group_members, metrics.share_in_flight):
            gauge.clear()
        states: dict[str, int] = {}
        for group in self.membership.list_groups():
            states[group.state] = states.get(group.state, 0) + 1
            metrics.share_group_members.labels(group.group_id).set(len(group.members))
        for state, count in states.items():
            metrics.share_groups.labels(state).set(count)
        metrics.share_sessions.set(len(self.sessions))
        if self.manager is not None:
            in_flight: dict[str, int] = {}
            for key, sp in self.manager.loaded():
                in_flight[key.group_id] = in_flight.get(key.group_id, 0) + sp.in_flight_records
            for group_id, records in in_flight.items():
                metrics.share_in_flight.labels(group_id).set(records)

    async def stop(self) -> None:
        self.membership.stop_timers()
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.unload()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("loading the share-group state failed: %s", task.exception())
