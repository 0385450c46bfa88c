"""Share groups on this broker: the composition of the share-group pieces and their lifecycle.

What it holds (each a piece of queues/):

- ``membership`` (share_group.ShareGroupCoordinator): ShareGroupHeartbeat, assignment, session
  timers, describe/list/delete; it lives with the group coordinator (``__consumer_offsets``-0).
- ``sessions`` (share_session.ShareSessionCache): the ShareFetch sessions of this broker.
- ``manager`` (manager.ShareManager): the share-partitions, acquisition, acknowledgements, locks,
  dead letters (``ensure_loaded`` / ``manager_or_error`` check that the state is reachable here).
- ``store`` (state_store.ShareStateStore): the durable state over ``__share_group_state``.

The collaborators are narrow: the ReplicaManager (``replicas.get`` / ``leader``: the
Partition objects, for reading the topics' logs and appending the state and dead-letter
records), the topic lookup by id (TopicAdmin), the metadata store's topics by name, the broker
config, and hooks for metrics and for "is this id a classic/consumer group". Through them a
share-partition reads its topic-partition's log as a consumer does (below the high watermark)
and every state write is an acks=all append to ``__share_group_state``-0: through its Partition
where it is led here (as the group coordinator writes ``__consumer_offsets``), else as a Produce to
its leader. A cluster of one is the same code with every leader here.

Loading: ``__share_group_state`` is created on first use (as Kafka does). Every broker's store
catches up from its own replica of the topic, or from the leader's where it has none
(``StateTopic.catch_up``), before a share-partition is
loaded or initialised there, so the broker that takes over a topic-partition continues from the
state its previous leader made durable. A share-partition of a topic-partition this broker stops
leading is dropped from memory; its state stays in the topic. The leader that loads a
share-partition first writes a snapshot under the topic-partition's leader epoch
(``ShareStateStore.fence``): a paused old leader that resumes and still writes is ignored by every
replayer, and its own write fails (the store replays what other brokers appended before its
append, through ``_catch_up_before``), so its client is answered NOT_LEADER_OR_FOLLOWER instead of
an acknowledgement that would not count (Kafka's share coordinator refuses such writes).

Group configs (IncrementalAlterConfigs on the GROUP resource) are kept in ``group_configs`` by
whoever persists them (the metadata store) and read here on every use.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Mapping

from kio.schema.fetch.v11 import request as fetch_v11
from kio.schema.produce.v8 import request as produce_v8

from tidelog.clock import wall_clock_ms
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.cluster.partition import wait_for_acks, wait_for_data
from tidelog.config import QUEUE_GROUP_CONFIGS
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import InvalidBatch, build_batch, iter_records
from tidelog.protocol.topics import SHARE_GROUP_STATE
from tidelog.queues.dead_letters import DeadLetterWriter
from tidelog.queues.manager import ShareConfig, ShareConfigs, ShareManager
from tidelog.queues.queue_features import QueueFeatures
from tidelog.queues.share_group import ShareGroup, ShareGroupCoordinator, ShareGroupSettings, TopicInfo
from tidelog.queues.share_session import ShareSessionCache
from tidelog.queues.state_records import ShareStateKey
from tidelog.queues.state_store import TOPIC_CONFIGS as STATE_TOPIC_CONFIGS
from tidelog.queues.state_store import ShareStateStore
from tidelog.storage.log_scan import log_batches

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore, TopicRecord
    from tidelog.cluster.partition import Partition
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.config import BrokerConfig

logger = logging.getLogger(__name__)

STATE_PARTITION = 0
_READ_BYTES = 1 << 20
# a state topic leader that does not know it leads yet (its watch lags): asked again, backing off
_LEADER_NOT_READY = frozenset({ErrorCode.unknown_topic_or_partition, ErrorCode.not_leader_or_follower})
_LEADER_RETRY_BACKOFF_S = 0.02
_LEADER_RETRY_BACKOFF_MAX_S = 0.5
_LEADER_ANSWER_MARGIN_S = 0.2  # of a forwarded write's time left, kept for the leader's answer to come back

# on_counts(group_id, {event: records}) for the metrics
CountsHook = Callable[[str, Mapping[str, int]], None]


def state_topic_configs() -> dict[str, str]:
    """``__share_group_state`` when it is created: not compacted (pruned by DeleteRecords, as Kafka's)."""
    return dict(STATE_TOPIC_CONFIGS)


class ReplicaSource:
    """The PartitionSource of the ShareManager over this broker's Partition objects: a
    share-partition is served where its topic-partition is led, and reads as a consumer does
    (``read``, ``last_stable_offset``: the leader only). The offsets a new share-partition starts
    from (log start, high watermark, offset for a timestamp) may come from a follower here: the
    group coordinator initialises share-partitions it does not lead, and a follower's high
    watermark is at most the leader's (``latest`` then starts a little early, never late)."""

    def __init__(self, replicas: "ReplicaManager", topic_by_id: Callable[[uuid.UUID], "TopicRecord | None"]) -> None:
        self._replicas = replicas
        self._topic_by_id = topic_by_id

    def leader(self, topic_id: uuid.UUID, partition: int) -> "Partition":
        record = self._topic_by_id(topic_id)
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_id, f"Topic id {topic_id} is not known.")
        return self._replicas.leader(record.name, partition)

    def replica(self, topic_id: uuid.UUID, partition: int) -> "Partition":
        """The leader here, else a follower here; else the leader's KafkaError."""
        try:
            return self.leader(topic_id, partition)
        except KafkaError:
            record = self._topic_by_id(topic_id)
            found = self._replicas.get(record.name, partition) if record is not None else None
            if found is None or found.log.log_dir.offline:
                raise
            return found

    def hosts(self, topic_id: uuid.UUID, partition: int) -> bool:
        """This broker has a usable replica (leader or follower) of the topic-partition."""
        try:
            self.replica(topic_id, partition)
        except KafkaError:
            return False
        return True

    def log_start_offset(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.replica(topic_id, partition).log.log_start_offset

    def high_watermark(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.replica(topic_id, partition).high_watermark

    def last_stable_offset(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.leader(topic_id, partition).last_stable_offset

    def leader_epoch(self, topic_id: uuid.UUID, partition: int) -> int:
        state = self.leader(topic_id, partition).state
        return -1 if state is None else state.leader_epoch

    def offset_for_timestamp(self, topic_id: uuid.UUID, partition: int, timestamp_ms: int) -> int | None:
        found = self.replica(topic_id, partition).log.offset_for_timestamp(timestamp_ms)
        return None if found is None else found[0]

    def aborted_transactions(self, topic_id: uuid.UUID, partition: int, fetch_offset: int,
                             upper_bound_offset: int) -> Iterable[tuple[int, int]]:
        aborted = self.leader(topic_id, partition).transactions.aborted_transactions(fetch_offset, upper_bound_offset)
        return [(entry.producer_id, entry.first_offset) for entry in aborted]

    def read(self, topic_id: uuid.UUID, partition: int, offset: int, max_bytes: int, max_offset: int):
        partition_object = self.leader(topic_id, partition)
        error = partition_object.leader_error()
        if error is not None:
            raise KafkaError(error, f"{partition_object.topic}-{partition} cannot be read here")
        # The batches' range from their headers first, then one read of exactly that range: a plain
        # read takes max_bytes from the file whatever max_offset leaves of it.
        found = partition_object.log.read(offset, max_bytes, True, min(max_offset, partition_object.high_watermark),
                                          as_slice=True)
        if not found:
            return b""
        try:
            return found.read()
        except OSError as e:
            raise KafkaError(ErrorCode.kafka_storage_error,
                             f"{partition_object.topic}-{partition}: read at offset {offset} failed: {e}") from e


class StateTopic:
    """``__share_group_state``-0 as every broker uses it. ``append``: through the Partition as its
    leader here (acks=all, as Produce), else as a Produce with acks=all to its leader (Kafka's
    WriteShareGroupState, in the topic's own records). ``catch_up``: replay into a store what this
    broker's replica (leader or follower) has that the store has not seen, so a broker taking over a
    topic-partition loads the state its previous leader wrote. Records this broker appended when
    nothing else was appended before them count as seen."""

    def __init__(self, replicas: "ReplicaManager", metadata: "MetadataStore", node_id: int, write_timeout_ms: int,
                 on_timeout: Callable[[str], None] | None = None) -> None:
        self.on_timeout = on_timeout  # a local write answered REQUEST_TIMED_OUT: counted as share_state
        self._replicas = replicas
        self._metadata = metadata
        self._node_id = node_id
        self.write_timeout_ms = write_timeout_ms
        self.replayed_offset = 0  # the next offset of the topic a store has not replayed
        self._channel: BrokerChannel | None = None
        self._channel_node = -1
        self._remote = asyncio.Lock()  # one request at a time on the channel

    def hosted(self) -> "Partition | None":
        return self._replicas.get(SHARE_GROUP_STATE, STATE_PARTITION)

    async def append(self, records: list[tuple[bytes, bytes | None]]) -> int:
        batch = build_batch([(key, value, []) for key, value in records])
        local = self.hosted()
        if local is not None and local.leading:
            base_offset = await self._append_here(local, batch)
        else:
            base_offset = await self._append_at_leader(batch)
        if base_offset == self.replayed_offset:
            self.replayed_offset = base_offset + len(records)
        return base_offset

    async def _append_here(self, partition: "Partition", batch: bytes) -> int:
        try:
            appended = partition.append_as_leader(memoryview(bytearray(batch)), required_acks=-1)
        except (KafkaError, InvalidBatch) as e:
            raise KafkaError(ErrorCode.not_coordinator, f"{SHARE_GROUP_STATE} not writable: {e}") from None
        try:
            (error,) = await wait_for_acks([(partition, appended.end_offset)], -1, self.write_timeout_ms / 1000,
                                           partition.logs, durability_in_timeout=True)  # the flush within it too
        except KafkaError as e:
            error = e.error_code
        if error != ErrorCode.none:
            if error == ErrorCode.request_timed_out and self.on_timeout is not None:
                self.on_timeout("share_state")
            raise KafkaError(_state_write_error(error), f"{SHARE_GROUP_STATE} write not acknowledged: {error.name}")
        return appended.base_offset

    async def _ask_leader(self, api_key: int, version: int, request, timeout_s: float):
        """One request to the leader of ``__share_group_state``-0 (another broker)."""
        state = self._metadata.partitions.get((SHARE_GROUP_STATE, STATE_PARTITION))
        leader = self._metadata.brokers.get(state.leader) if state is not None else None
        if leader is None or leader.node_id == self._node_id:
            raise KafkaError(ErrorCode.coordinator_not_available, f"{SHARE_GROUP_STATE} has no leader now")
        async with self._remote:
            if self._channel is None or self._channel_node != leader.node_id:
                self._close_channel()
                self._channel = BrokerChannel(leader.host, leader.port, f"tidelog-share-state-{self._node_id}",
                                              self._replicas.channel_security)  # TLS/SASL between brokers
                self._channel_node = leader.node_id
            try:
                return await self._channel.request(api_key, version, request, timeout_s)
            except (OSError, EOFError, ConnectionError, asyncio.TimeoutError) as e:
                self._close_channel()
                raise KafkaError(ErrorCode.coordinator_not_available,
                                 f"{SHARE_GROUP_STATE} request to broker {leader.node_id} failed: {e!r}") from None

    async def _at_leader(self, api_key: int, version: int, request_for: Callable[[float], object],
                         error_of: Callable[[object], int]):
        """``_ask_leader``, asked again while the leader answers that it does not lead the state
        topic yet: a broker learns of a new topic (or of its leadership) through its etcd watch,
        so a write forwarded the moment ``__share_group_state`` was created can reach its leader
        first (it then appended nothing). Kafka's persister retries such retriable errors with a
        backoff too. The whole of it, each attempt included, ends by the write timeout
        (``share.coordinator.write.timeout.ms``): an attempt waits for what is left of it
        (COORDINATOR_NOT_AVAILABLE when the leader has not answered by then), and
        ``request_for(seconds left)`` gives the leader a little less for its own wait, so that
        its answer (REQUEST_TIMED_OUT for a write its ISR did not have in time) comes back first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_timeout_ms / 1000
        backoff_s = _LEADER_RETRY_BACKOFF_S
        while True:
            left_s = max(deadline - loop.time(), 0.0)
            response = await self._ask_leader(api_key, version, request_for(left_s), left_s)
            error = error_of(response)
            if error not in _LEADER_NOT_READY or loop.time() + backoff_s >= deadline:
                return response
            logger.debug("%s: its leader answered %s; asking again in %.2f s", SHARE_GROUP_STATE,
                         ErrorCode(error).name, backoff_s)
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, _LEADER_RETRY_BACKOFF_MAX_S)

    async def _append_at_leader(self, batch: bytes) -> int:
        def request_for(left_s: float) -> produce_v8.ProduceRequest:
            wait_ms = max(int((left_s - _LEADER_ANSWER_MARGIN_S) * 1000), 0)
            return produce_v8.ProduceRequest(transactional_id=None, acks=-1, timeout=datetime.timedelta(
                milliseconds=wait_ms), topic_data=(produce_v8.TopicProduceData(name=SHARE_GROUP_STATE, partition_data=(
                    produce_v8.PartitionProduceData(index=STATE_PARTITION, records=batch),)),))

        response = await self._at_leader(0, 8, request_for, lambda r: r.responses[0].partition_responses[0].error_code)
        result = response.responses[0].partition_responses[0]
        if result.error_code != ErrorCode.none:
            raise KafkaError(_state_write_error(ErrorCode(result.error_code)),
                             f"{SHARE_GROUP_STATE} write at its leader: {ErrorCode(result.error_code).name}")
        return result.base_offset

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel, self._channel_node = None, -1

    async def catch_up(self, store: ShareStateStore, until: int | None = None) -> int:
        """Replay into ``store`` what the state topic got from ``replayed_offset`` on (below
        ``until`` if given): from this broker's replica (``catch_up_here``), or, where it has none,
        fetched from the leader up to its high watermark; how many records."""
        count = 0
        if self.hosted() is not None:
            count = self.catch_up_here(store, until)
            if until is None or self.replayed_offset >= until or self.hosted().leading:
                return count
            # a follower here behind the offset of this broker's own append (e.g. it was paused): the
            # records before it are all at the leader (the append was acknowledged by the ISR)
        while True:
            request = fetch_v11.FetchRequest(
                replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=_READ_BYTES, isolation_level=0,
                session_id=0, session_epoch=-1, topics=(fetch_v11.FetchTopic(topic=SHARE_GROUP_STATE, partitions=(
                    fetch_v11.FetchPartition(partition=STATE_PARTITION, current_leader_epoch=-1,
                                             fetch_offset=self.replayed_offset, log_start_offset=-1,
                                             partition_max_bytes=_READ_BYTES),)),), forgotten_topics_data=(), rack_id="")
            response = await self._at_leader(1, 11, lambda _: request, lambda r: r.responses[0].partitions[0].error_code)
            data = response.responses[0].partitions[0]
            if data.error_code == ErrorCode.offset_out_of_range and data.log_start_offset > self.replayed_offset:
                self.replayed_offset = data.log_start_offset  # pruned: the snapshots after it supersede the rest
                continue
            if data.error_code != ErrorCode.none:
                raise KafkaError(ErrorCode.coordinator_not_available,
                                 f"reading {SHARE_GROUP_STATE} at its leader: {ErrorCode(data.error_code).name}")
            next_offset = self.replayed_offset
            for record in iter_records(data.records or b""):
                if until is not None and record.offset >= until:
                    break
                if record.offset >= self.replayed_offset and record.key is not None:
                    store.replay(record.key, record.value, record.offset)
                    count += 1
                next_offset = max(next_offset, record.offset + 1)
            if until is not None and next_offset >= until:
                self.replayed_offset = max(self.replayed_offset, next_offset)
                return count
            if next_offset <= self.replayed_offset or next_offset >= data.high_watermark:
                self.replayed_offset = max(self.replayed_offset, next_offset)
                return count
            self.replayed_offset = next_offset

    def catch_up_here(self, store: ShareStateStore, until: int | None = None) -> int:
        """Replay the records of this broker's replica from ``replayed_offset`` to its log end, or
        to ``until`` (an acks=all write is in every in-sync replica's log before it is
        acknowledged, while a new leader's high watermark may still be behind it); how many."""
        partition = self.hosted()
        if partition is None:
            raise KafkaError(ErrorCode.coordinator_not_available, f"no replica of {SHARE_GROUP_STATE} on this broker")
        start, count, end = self.replayed_offset, 0, self.replayed_offset
        for batch, info in log_batches(partition.log, start):
            if until is not None and info.base_offset >= until:
                break
            for record in iter_records(batch):
                if until is not None and record.offset >= until:
                    break
                if record.offset >= start and record.key is not None:
                    store.replay(record.key, record.value, record.offset)
                    count += 1
            end = info.last_offset + 1 if until is None else min(info.last_offset + 1, until)
        self.replayed_offset = max(self.replayed_offset, end)
        return count

    def prune(self, before_offset: int) -> None:
        """Records below ``before_offset`` are redundant (every state has a snapshot at or after it)."""
        partition = self.hosted()
        if partition is not None and partition.leading and before_offset > partition.log.log_start_offset:
            partition.delete_records_before(before_offset)

    def close(self) -> None:
        self._close_channel()


def _state_write_error(error: ErrorCode) -> ErrorCode:
    """What a share request answers when its state write failed with ``error``."""
    if error in (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch, ErrorCode.unknown_topic_or_partition):
        return ErrorCode.not_coordinator
    if error in (ErrorCode.request_timed_out, ErrorCode.not_coordinator):
        return error
    return ErrorCode.coordinator_not_available


class ShareGroups:
    def __init__(self, config: "BrokerConfig", replicas: "ReplicaManager", metadata: "MetadataStore",
                 topic_by_id: Callable[[uuid.UUID], "TopicRecord | None"],
                 topics_by_name: Callable[[], Mapping[str, "TopicRecord"]], *,
                 group_configs: Callable[[str], Mapping[str, str]] = lambda group_id: {},
                 is_other_group: Callable[[str], bool] = lambda group_id: False,
                 create_state_topic: Callable[[], Awaitable[None]] | None = None,
                 on_counts: CountsHook | None = None, on_write_timeout: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._replicas = replicas
        self.topic_by_id = topic_by_id
        self.topics_by_name = topics_by_name
        self.group_configs = group_configs
        self._on_counts = on_counts
        self._share_configs = ShareConfigs(config, lambda group_id: self.group_configs(group_id))
        self.source = ReplicaSource(replicas, topic_by_id)
        self._metadata = metadata
        self.state_topic = StateTopic(replicas, metadata, config["node.id"], config["share.coordinator.write.timeout.ms"],
                                      on_timeout=on_write_timeout)
        self.dead_letters = DeadLetterWriter(config, replicas, topics_by_name, topic_by_id, self.share_config,
                                             on_written=self._count_dead_letters, on_timeout=on_write_timeout)
        self.sessions = ShareSessionCache(config["group.share.max.share.sessions"])
        self.membership = ShareGroupCoordinator(
            ShareGroupSettings.from_config(config), initialize=self._initialize, on_member_removed=self._member_removed,
            group_config=self._membership_config, is_other_group=is_other_group,
            has_state=lambda group_id: bool(self.store.keys(group_id)))
        self.store = ShareStateStore(self.state_topic.append, wall_clock_ms,
                                     config["share.coordinator.snapshot.update.records.per.snapshot"],
                                     catch_up=self._catch_up_before)
        # Issue 14's priority, delay, TTL and filters choose what an acquisition takes (queue_features.py).
        self.features = QueueFeatures(config, self._feature_configs, on_counts=self._count)
        self.manager = ShareManager(self.store, self.source, self.share_config, dead_letter=self.dead_letters.write,
                                    on_counts=self._count, refresh=self.catch_up, policies=self.features.policy,
                                    lookahead=self.features.lookahead_records, on_unload=self.features.forget)
        self._create_state_topic = create_state_topic
        self._pruning: asyncio.Task | None = None
        self._totals: dict[str, dict[str, int]] = {}

    # --- configs ------------------------------------------------------------------------------
    def share_config(self, group_id: str) -> ShareConfig:
        return self._share_configs(group_id)

    def _feature_configs(self, key: ShareStateKey) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """The topic's and the group's config overrides of a share-partition (for QueueFeatures)."""
        record = self.topic_by_id(key.topic_id)
        return (record.configs if record is not None else {}), self.group_configs(key.group_id)

    def _membership_config(self, group_id: str) -> Mapping[str, int]:
        overrides = dict(self.group_configs(group_id))
        return {name: self.config.group_value(overrides, name)
                for name in ("share.session.timeout.ms", "share.heartbeat.interval.ms")}

    # --- state ----------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """``__share_group_state`` exists: this broker can load and write state (through its replica
        here, or the leader's)."""
        return self.state_topic.hosted() is not None or (SHARE_GROUP_STATE, STATE_PARTITION) in self._metadata.partitions

    def manager_or_error(self) -> ShareManager:
        """The manager; KafkaError COORDINATOR_NOT_AVAILABLE while ``__share_group_state`` does not
        exist (share groups never used) or is not known here yet."""
        if not self.loaded:
            raise KafkaError(ErrorCode.coordinator_not_available,
                             f"The share-group state ({SHARE_GROUP_STATE}) does not exist yet.")
        return self.manager

    async def ensure_loaded(self, timeout_s: float = 10.0) -> ShareManager:
        """The manager, creating ``__share_group_state`` first if share groups were never used (as
        Kafka creates it on first use) and waiting until this broker has its replica; KafkaError
        COORDINATOR_NOT_AVAILABLE when that does not happen in ``timeout_s`` (the client retries)."""
        if self.loaded:
            return self.manager
        if SHARE_GROUP_STATE not in self.topics_by_name() and self._create_state_topic is not None:
            try:
                await self._create_state_topic()
            except KafkaError as e:
                logger.warning("cannot create %s yet: %s", SHARE_GROUP_STATE, e)
                raise KafkaError(ErrorCode.coordinator_not_available,
                                 f"{SHARE_GROUP_STATE} cannot be created yet: {e.message}") from None
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.loaded and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)  # the replica appears once the metadata change is applied here
        return self.manager_or_error()

    async def catch_up(self) -> None:
        """The store replays what ``__share_group_state`` got since it last looked (other brokers'
        writes: before a share-partition is loaded or initialised here)."""
        count = await self.state_topic.catch_up(self.store)
        if count:
            logger.info("replayed %d %s records (%d share-partition states known)", count, SHARE_GROUP_STATE,
                        len(self.store.keys()))

    async def _catch_up_before(self, until: int, end: int) -> None:
        """The store's hook when other brokers appended before its own append at ``until``: replay
        theirs; the store then replays its own (up to ``end``) itself."""
        await self.state_topic.catch_up(self.store, until)
        self.state_topic.replayed_offset = max(self.state_topic.replayed_offset, end)

    async def wait_loaded(self) -> None:
        """At start: replay the state topic if it is here."""
        if self.loaded:
            await self.catch_up()

    def on_leadership(self, topic: str, partition: int, leading: bool) -> None:
        """A leadership change of this broker (ReplicaManager.on_leadership): share-partitions of a
        topic-partition it no longer leads are dropped from memory (the next leader loads them
        from the state topic)."""
        if not leading and topic != SHARE_GROUP_STATE:
            record = self.topics_by_name().get(topic)
            if record is not None:
                self.manager.forget_partition(record.topic_id, partition)

    def on_topic_deleted(self, topic_id: uuid.UUID, partitions: int) -> None:
        """A topic was deleted (every broker hears it): its share-partitions leave memory here."""
        for partition in range(partitions):
            self.manager.forget_partition(topic_id, partition)

    async def remove_topic_state(self, topic: str, topic_id: uuid.UUID) -> int:
        """At the group coordinator's broker, when a topic was deleted: every share group's state of
        its partitions goes from ``__share_group_state`` (tombstones), so DescribeShareGroupOffsets,
        the console and a group known only by that state show it no more. Returns how many
        share-partitions went (0 when share groups were never used)."""
        if not self.loaded:
            return 0
        try:
            await self.catch_up()
            by_group: dict[str, list[tuple[uuid.UUID, int]]] = {}
            for key in self.store.keys():
                if key.topic_id == topic_id:
                    by_group.setdefault(key.group_id, []).append((key.topic_id, key.partition))
            for group_id, partitions in by_group.items():
                await self.manager.delete_offsets(group_id, partitions)
        except (KafkaError, OSError) as e:
            logger.warning("topic %s deleted: cannot remove its share-group state: %s", topic, e)
            return 0
        if by_group:
            logger.info("topic %s deleted: removed the share-partition state of %d share groups (%d partitions)",
                        topic, len(by_group), sum(map(len, by_group.values())))
        return sum(map(len, by_group.values()))

    def start(self) -> None:
        self._pruning = asyncio.get_running_loop().create_task(self._prune_forever(), name="tidelog-share-state-pruning")

    async def _prune_forever(self) -> None:
        interval_s = self.config["share.coordinator.state.topic.prune.interval.ms"] / 1000
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.prune_state_topic()
            except Exception:  # noqa: BLE001 - pruning is housekeeping: say why, keep serving, try again
                logger.exception("pruning %s failed", SHARE_GROUP_STATE)

    def prune_state_topic(self) -> None:
        """Delete the records of ``__share_group_state`` no state needs any more (as its leader,
        after catching up, so that no other broker's newer state is missed)."""
        partition = self.state_topic.hosted()
        if partition is None or not partition.leading:
            return
        try:
            self.state_topic.catch_up_here(self.store)
            offset = self.store.prunable_offset()
            if offset is not None:
                self.state_topic.prune(min(offset, self.state_topic.replayed_offset))
        except KafkaError as e:
            logger.debug("pruning %s: %s", SHARE_GROUP_STATE, e)

    # --- admin ---------------------------------------------------------------------------------
    def group(self, group_id: str) -> ShareGroup | None:
        """The share group: a live one, or an Empty one known only by its share-partition state
        (membership is kept in memory: after a restart members rejoin, the state is durable)."""
        group = self.membership.groups.get(group_id)
        if group is not None and not group.deleted:
            return group
        if self.store.keys(group_id):
            return ShareGroup(group_id)
        return None

    def list_groups(self, states: Iterable[str] = ()) -> list[ShareGroup]:
        wanted = {s.lower() for s in states}
        ids = set(self.membership.groups) | {k.group_id for k in self.store.keys()}
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
        keys = self.store.keys(group_id)
        if keys:
            await self.manager_or_error().delete_offsets(group_id, [(k.topic_id, k.partition) for k in keys])
        return ErrorCode.none

    # --- membership collaborators ----------------------------------------------------------------
    async def _initialize(self, group_id: str, partitions: dict[uuid.UUID, set[int]]) -> None:
        """The group coordinator gives new share-partitions their state where this broker has a
        replica to read the start offset from; the others (a topic-partition with no replica here,
        e.g. one replica on another broker) are initialised by their leader when it first loads
        them (ShareManager._load), as Kafka 4.0's SharePartition initialises a state with no start
        offset from its own log."""
        manager = await self.ensure_loaded()
        here = {topic_id: {p for p in numbers if self.source.hosts(topic_id, p)} for topic_id, numbers in partitions.items()}
        here = {topic_id: numbers for topic_id, numbers in here.items() if numbers}
        if here:
            await manager.initialize(group_id, here)

    async def _member_removed(self, group_id: str, member_id: str, failed: bool) -> None:
        """A member left (``failed``: its session timed out). One that left cleanly with a share
        session open here keeps it: its client closes it with a final ShareAcknowledge or
        ShareFetch carrying the close's acknowledgements, which librdkafka sends beside the leave
        and may arrive after it; that request (or the connection closing, or the record locks
        expiring) releases what is left, as in Kafka, where the group's membership does not
        touch the share sessions of the partition leaders."""
        if not failed and self.sessions.get(group_id, member_id) is not None:
            logger.debug("share group %s: member %s left; its share session stays until its client closes it",
                         group_id, member_id)
            return
        self.sessions.remove(group_id, member_id)
        await self.manager.release_member(group_id, member_id, count_delivery=failed)

    async def connection_closed(self, connection_id: str) -> None:
        """A client connection closed: its share sessions go and their members' records are
        released (the delivery counts: the member did not close its session)."""
        for session in self.sessions.on_disconnect(connection_id):
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
        keys = [ShareStateKey(group_id, topic_id, index) for topic_id, index in partitions]
        waits = [asyncio.ensure_future(wait_for_data(led, timeout_s)), asyncio.ensure_future(self.manager.wait(keys, timeout_s))]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    # --- issue 14's queue features, for describing ------------------------------------------------
    def queue_group_configs(self, group_id: str) -> dict[str, object]:
        """The group's tidelog.* configs in force (retry back-off, filter): its own or the defaults."""
        configs = dict(self.group_configs(group_id))
        return {name: self.config.group_value(configs, name) for name in QUEUE_GROUP_CONFIGS}

    def queue_view(self, key: ShareStateKey) -> dict:
        """A share-partition's tidelog.* settings in force and, where it is loaded here, its Available
        records by priority and how many wait for their time (QueueFeatures.describe)."""
        loaded = dict(self.manager.loaded(key.group_id)).get(key)
        due, waiting = loaded.available(wall_clock_ms()) if loaded is not None else ([], 0)
        view = self.features.describe(key, due, waiting)
        if loaded is None:
            view["delayed"] = view["available_by_priority"] = None
        return view

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
        in_flight: dict[str, int] = {}
        for key, sp in self.manager.loaded():
            in_flight[key.group_id] = in_flight.get(key.group_id, 0) + sp.in_flight_records
        for group_id, records in in_flight.items():
            metrics.share_in_flight.labels(group_id).set(records)

    async def stop(self) -> None:
        self.membership.stop_timers()
        if self._pruning is not None:
            self._pruning.cancel()
        await self.manager.close()
        self.state_topic.close()


