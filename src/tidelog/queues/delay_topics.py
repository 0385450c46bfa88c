"""The broker's delay topics (issue 14): for each partition of a topic with
``tidelog.delay.target.topic`` that this broker leads, a ``DelayMover`` (delay_mover.py) reading
the Partition, stepped when records are appended to it and when the next one is due.

The target partition (p mod the target's partitions) is written wherever it is led, looked up at
every append: through its Partition when led here, else with Produce v8 (acks=all) to its leader
over a ``BrokerChannel`` (the inter-broker listener's TLS/SASL), as ``__share_group_state`` is
written (share_groups.StateTopic); the mover's recovery reads it there with ListOffsets v5 and
Fetch v11. An append here is bounded by ``offsets.commit.timeout.ms`` as a whole, its flush
included (a stuck disk answers REQUEST_TIMED_OUT, counted in
``tidelog_internal_write_timeouts_total{writer="delay_mover"}``); one elsewhere by
REMOTE_TIMEOUT_S. A failed append (NOT_LEADER_OR_FOLLOWER, a broker gone, a timeout) is retried
with the same batch and sequence at the next pass (once the metadata names a leader again); the
target's producer state answers a batch that did land as a duplicate. A mover whose delay
partition this broker no longer leads is dropped; the next leader's mover goes on from its last
batch in the target (found there with DescribeProducers, ListOffsets and Fetch when led
elsewhere). One that diverged (another mover of its delay partition appended first:
OUT_OF_ORDER_SEQUENCE_NUMBER, MoverDiverged) is started again. Counted in
``tidelog_delay_topic_remote_appends{topic,result}``; a failure streak is logged once (WARNING),
and its end. Index files live in ``<data dir>/.delay-index/<topic id>-<partition>``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil
from pathlib import Path
from typing import Callable

from kio.schema.describe_producers.v0 import request as describe_producers_v0
from kio.schema.fetch.v11 import request as fetch_v11
from kio.schema.list_offsets.v5 import request as list_offsets_v5
from kio.schema.offset_commit.v8 import request as offset_commit_v8
from kio.schema.offset_fetch.v7 import request as offset_fetch_v7
from kio.schema.produce.v8 import request as produce_v8

from tidelog.clock import monotonic_ms, wall_clock_ms
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.cluster.waiters import wait_for_acks, wait_for_data
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.delay_index import DelayIndex
from tidelog.queues.delay_mover import (MOVER_PRODUCER_IDS, PROGRESS_GROUP, SEQUENCE_WRAP, DelayMover, MoverDiverged,
                                        batches as _batches, mover_producer_id)

__all__ = ["DelayTopics"]

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.2  # the longest wait between two looks at the delay topics (new ones, config changes, leadership)
WRITE_TIMEOUT_S = 5.0  # an append to a target led here, its flush included (DelayTopics: offsets.commit.timeout.ms)
REMOTE_TIMEOUT_S = 10.0  # a request to another broker (a Produce waits for its ISR within it)
INDEX_DIR = ".delay-index"
READ_BYTES = 1 << 20
CLOCK_MARGIN_MS = 60_000  # how far before the producer state's time of a batch its own timestamp may be
MOVER_CLIENT_ID = "tidelog-delay-"  # the client id prefix of the movers' remote appends (handlers/produce.py lets them use producer ids >= 2^62)
OFFSETS_TOPIC = "__consumer_offsets"  # its partition 0's leader is the group coordinator (the movers' progress)


class _Source:
    def __init__(self, partition) -> None:
        self.partition = partition

    def log_start_offset(self) -> int:
        return self.partition.log.log_start_offset

    def high_watermark(self) -> int:
        return self.partition.high_watermark

    def read(self, offset: int, max_bytes: int):
        result = self.partition.read(offset, max_bytes, True, -1)
        if result.error != ErrorCode.none:
            raise KafkaError(result.error, f"reading delay partition at {offset}")
        return result.records


class _Peers:
    """Connections to the other brokers, one per broker, one request at a time on each."""

    def __init__(self, replicas, metadata) -> None:
        self.replicas = replicas
        self.metadata = metadata
        self._channels: dict[int, tuple[BrokerChannel, asyncio.Lock]] = {}

    async def request(self, node_id: int, api_key: int, version: int, request, timeout_s: float = REMOTE_TIMEOUT_S):
        info = self.metadata.brokers.get(node_id)
        if info is None:
            raise KafkaError(ErrorCode.leader_not_available, f"broker {node_id} is not live")
        kept = self._channels.get(node_id)
        if kept is None or (kept[0].host, kept[0].port) != (info.host, info.port):
            if kept is not None:
                kept[0].close()
            kept = self._channels[node_id] = (BrokerChannel(info.host, info.port, f"{MOVER_CLIENT_ID}{self.replicas.node_id}",
                                                            self.replicas.channel_security), asyncio.Lock())
        channel, lock = kept
        async with lock:
            try:
                return await channel.request(api_key, version, request, timeout_s)
            except (OSError, EOFError, ConnectionError, asyncio.TimeoutError) as e:
                channel.close()  # a request cut short leaves the connection mid-frame
                if self._channels.get(node_id) is kept:
                    del self._channels[node_id]
                raise KafkaError(ErrorCode.network_exception,
                                 f"broker {node_id} at {info.host}:{info.port} did not answer: {e!r}") from None

    def close(self) -> None:
        for channel, _ in self._channels.values():
            channel.close()
        self._channels.clear()


class _Target:
    """The target partition wherever it is led: here (its Partition) or at another broker.

    ``missing`` (kept by DelayTopics across attempts): since when (monotonic ms) a remote leader's
    producer state has named a mover's last sequence whose batch is not below its high watermark.
    A batch not replicated yet is below it within ``replica.lag.time.max.ms`` (or the leader
    changes, and the new one's state names another sequence); one still missing after
    ``gone_after_ms`` was deleted (retention, DeleteRecords), as the local Partition tells
    directly."""

    def __init__(self, replicas, metadata, peers: _Peers, topic: str, index: int,
                 missing: dict | None = None, gone_after_ms: int = 60_000, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.replicas = replicas
        self.metadata = metadata
        self.peers = peers
        self.topic, self.index = topic, index
        self.missing = {} if missing is None else missing
        self.gone_after_ms = gone_after_ms
        self.write_timeout_s = write_timeout_s
        self.leader = -1  # where the last request went (this broker's id when local)
        self.remote_batches = 0  # acknowledged appends at another broker
        self.remote_failures = 0  # failed appends at another broker
        self.timeouts = 0  # appends here not durable and in the ISR within write_timeout_s

    def _route(self):
        """(the Partition, None) when led here, else (None, the leader's node id)."""
        local = self.replicas.get(self.topic, self.index)
        if local is not None and local.leading:
            return local, None
        state = self.metadata.partitions.get((self.topic, self.index))
        leader = state.leader if state is not None else -1
        if leader < 0 or leader == self.replicas.node_id:
            raise KafkaError(ErrorCode.leader_not_available, f"{self.topic}-{self.index} has no leader now")
        return None, leader

    def _note(self, leader: int) -> None:
        if leader != self.leader:
            where = "here" if leader == self.replicas.node_id else f"at its leader, broker {leader}"
            logger.info("delay topic: appending to %s-%d %s", self.topic, self.index, where)
            self.leader = leader

    async def append(self, batch: bytes) -> int:
        local, leader = self._route()
        if local is not None:
            self._note(self.replicas.node_id)
            appended = local.append_as_leader(memoryview(bytearray(batch)), required_acks=-1)
            # The flush within the timeout too: a flush that does not end (a stuck disk) fails the
            # step with REQUEST_TIMED_OUT rather than holding every mover (one task steps them all);
            # the next pass appends the same batch, which the producer state answers as a duplicate.
            (error,) = await wait_for_acks([(local, appended.end_offset)], -1, self.write_timeout_s, local.logs,
                                           durability_in_timeout=True)
            if error != ErrorCode.none:
                if error == ErrorCode.request_timed_out:
                    self.timeouts += 1
                raise KafkaError(error, f"appending due records to {self.topic}-{self.index}: {error.name.upper()}"
                                 + (f" (not durable and in its ISR within {self.write_timeout_s:g} s)"
                                    if error == ErrorCode.request_timed_out else ""))
            return appended.base_offset
        self._note(leader)
        request = produce_v8.ProduceRequest(
            transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=REMOTE_TIMEOUT_S - 1),
            topic_data=(produce_v8.TopicProduceData(name=self.topic, partition_data=(
                produce_v8.PartitionProduceData(index=self.index, records=batch),)),))
        try:
            response = await self.peers.request(leader, 0, 8, request, REMOTE_TIMEOUT_S)
            result = response.responses[0].partition_responses[0]
            error = ErrorCode(int(result.error_code))
            if error != ErrorCode.none:
                raise KafkaError(error, f"appending due records to {self.topic}-{self.index} at broker {leader}: "
                                        f"{error.name}{': ' + result.error_message if result.error_message else ''}")
        except KafkaError:
            self.remote_failures += 1
            raise
        self.remote_batches += 1
        return result.base_offset

    async def last_batch(self, producer_id: int) -> tuple[bytes | None, int]:
        local, leader = self._route()
        if local is not None:
            entry = local.producer_state.producers.get(producer_id)
            if entry is None or not entry.batches:
                return None, 0
            _, last_sequence, base_offset, last_offset_delta = entry.batches[-1]
            following = (last_sequence + 1) % SEQUENCE_WRAP
            if base_offset < local.log.log_start_offset:
                return None, following  # removed by retention: the local copy of the mover's state it is
            if base_offset + last_offset_delta >= local.high_watermark:
                raise KafkaError(ErrorCode.offset_not_available, f"the mover's last batch in {self.topic}-{self.index} "
                                 f"(to offset {base_offset + last_offset_delta}) is not below the high watermark yet")
            return _first_batch(await self.read(base_offset, 1), base_offset), following
        # At the leader elsewhere: its producer state says the last sequence and when; the batch is
        # found from the first offset with a timestamp at or after that (less a margin for clocks).
        request = describe_producers_v0.DescribeProducersRequest(topics=(describe_producers_v0.TopicRequest(
            name=self.topic, partition_indexes=(self.index,)),))
        answer = (await self.peers.request(leader, 61, 0, request)).topics[0].partitions[0]
        _raise_for(ErrorCode(int(answer.error_code)), f"producers of {self.topic}-{self.index} at broker {leader}")
        producer = next((p for p in answer.active_producers if p.producer_id == producer_id), None)
        if producer is None or producer.last_sequence < 0:
            return None, 0
        request = list_offsets_v5.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(
            list_offsets_v5.ListOffsetsTopic(name=self.topic, partitions=(list_offsets_v5.ListOffsetsPartition(
                partition_index=self.index, current_leader_epoch=-1,
                timestamp=max(0, producer.last_timestamp - CLOCK_MARGIN_MS)),)),))
        found = (await self.peers.request(leader, 2, 5, request)).topics[0].partitions[0]
        _raise_for(ErrorCode(int(found.error_code)), f"offsets of {self.topic}-{self.index} at broker {leader}")
        offset = found.offset
        while offset >= 0:
            data = memoryview(await self.read(offset, READ_BYTES))
            before = offset
            for pos, info in _batches(data):
                if info.producer_id == producer_id and \
                        (info.base_sequence + info.last_offset_delta) % SEQUENCE_WRAP == producer.last_sequence:
                    self.missing.pop((self.topic, self.index, producer_id), None)
                    return bytes(data[pos:pos + info.size]), (producer.last_sequence + 1) % SEQUENCE_WRAP
                offset = info.last_offset + 1
            if offset == before:
                break
        key, now = (self.topic, self.index, producer_id), monotonic_ms()
        sequence, since = self.missing.get(key, (None, now))
        if sequence != producer.last_sequence:
            since = now
        self.missing[key] = (producer.last_sequence, since)
        if now - since >= self.gone_after_ms:
            del self.missing[key]
            return None, (producer.last_sequence + 1) % SEQUENCE_WRAP  # deleted from the log
        raise KafkaError(ErrorCode.offset_not_available, f"the last batch of producer {producer_id} in "
                         f"{self.topic}-{self.index} (sequence {producer.last_sequence}) is not below broker "
                         f"{leader}'s high watermark yet (or deleted: taken as gone after "
                         f"{self.gone_after_ms - (now - since)} ms more)")

    async def earlier_last_batches(self) -> list[bytes]:
        local, _ = self._route()
        if local is None:
            return []  # at another broker: each producer's batch would be a search of its own (docs/queues.md)
        found = []
        for producer_id, entry in list(local.producer_state.producers.items()):
            if producer_id >= MOVER_PRODUCER_IDS or not entry.batches:
                continue
            _, _, base_offset, last_offset_delta = entry.batches[-1]
            if base_offset < local.log.log_start_offset or base_offset + last_offset_delta >= local.high_watermark:
                continue
            batch = _first_batch(await self.read(base_offset, 1), base_offset)
            if batch is not None:
                found.append(batch)
        return found

    async def read(self, offset: int, max_bytes: int):
        local, leader = self._route()
        if local is not None:
            result = local.read(offset, max_bytes, True, -1)
            if result.error != ErrorCode.none:
                raise KafkaError(result.error, f"reading {self.topic}-{self.index} at {offset}: {result.error.name}")
            return result.records
        request = fetch_v11.FetchRequest(
            replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=max_bytes, isolation_level=0,
            session_id=0, session_epoch=-1, topics=(fetch_v11.FetchTopic(topic=self.topic, partitions=(
                fetch_v11.FetchPartition(partition=self.index, current_leader_epoch=-1, fetch_offset=offset,
                                         log_start_offset=-1, partition_max_bytes=max_bytes),)),),
            forgotten_topics_data=(), rack_id="")
        answer = (await self.peers.request(leader, 1, 11, request)).responses[0].partitions[0]
        _raise_for(ErrorCode(int(answer.error_code)), f"reading {self.topic}-{self.index} at {offset} from broker {leader}")
        return answer.records or b""


class _Committed:
    """A mover's progress as the offset of its delay partition in the group ``PROGRESS_GROUP``
    (delay_mover.DelayProgress), at the group coordinator: here (``groups()`` gives the
    GroupCoordinator while this broker is it) or the leader of ``__consumer_offsets`` elsewhere,
    with OffsetCommit v8 / OffsetFetch v7 as a Kafka client sends them (generation -1, no member:
    an ``assign()`` consumer's commit). A commit carries ``leader_epoch``, the delay partition's
    leader epoch when the mover started: the coordinator refuses one older than the stored
    progress's (FENCED_LEADER_EPOCH, groups/offset_manager.py), as does this store itself once its
    Partition no longer leads at that epoch (a deposed leader's mover stops, DelayMover.fenced)."""

    def __init__(self, metadata, peers: _Peers, groups: Callable, topic: str, partition: int,
                 source=None, leader_epoch: int = -1) -> None:
        self.metadata = metadata
        self.peers = peers
        self.groups = groups
        self.topic, self.partition = topic, partition
        self.source = source  # the delay partition's Partition
        self.leader_epoch = leader_epoch

    def _check_leading(self) -> None:
        if self.source is None:
            return
        now = self.source.leader_epoch
        if now != self.leader_epoch:
            state = self.metadata.partitions.get((self.topic, self.partition))
            current = max(now, state.leader_epoch if state is not None else -1)
            raise KafkaError(ErrorCode.fenced_leader_epoch, f"{self.topic}-{self.partition} is led at leader epoch "
                             f"{current} now, this mover started at {self.leader_epoch}: not committing")

    def _coordinator(self) -> int:
        state = self.metadata.partitions.get((OFFSETS_TOPIC, 0))
        if state is None or state.leader < 0:
            raise KafkaError(ErrorCode.coordinator_not_available, f"{OFFSETS_TOPIC} has no leader now")
        if state.leader == self.peers.replicas.node_id:  # here, and not serving yet
            raise KafkaError(ErrorCode.coordinator_load_in_progress, "the group coordinator here is loading")
        return state.leader

    async def fetch(self) -> tuple[int, str | None] | None:
        if OFFSETS_TOPIC not in self.metadata.topics:
            return None  # not created yet (a cluster short of offsets.topic.replication.factor brokers): nothing committed
        groups = self.groups()
        if groups is not None:
            [(_, _, committed)] = groups.offsets.fetch_offsets(PROGRESS_GROUP, [(self.topic, self.partition)])
            return None if committed is None else (committed.offset, committed.metadata)
        coordinator = self._coordinator()
        request = offset_fetch_v7.OffsetFetchRequest(group_id=PROGRESS_GROUP, require_stable=True, topics=(
            offset_fetch_v7.OffsetFetchRequestTopic(name=self.topic, partition_indexes=(self.partition,)),))
        answer = await self.peers.request(coordinator, 9, 7, request)
        _raise_for(ErrorCode(int(answer.error_code)), f"the committed progress at broker {coordinator}")
        found = answer.topics[0].partitions[0] if answer.topics and answer.topics[0].partitions else None
        if found is None:
            return None
        _raise_for(ErrorCode(int(found.error_code)), f"the committed progress at broker {coordinator}")
        return None if found.committed_offset < 0 else (found.committed_offset, found.metadata)

    async def commit(self, offset: int, metadata: str) -> None:
        self._check_leading()
        groups = self.groups()
        if groups is not None:
            errors = await groups.offsets.commit_offsets(PROGRESS_GROUP, -1, "", None, {
                (self.topic, self.partition): (offset, self.leader_epoch, metadata)})
            self._raise_for_commit(errors[(self.topic, self.partition)], "")
            return
        coordinator = self._coordinator()
        request = offset_commit_v8.OffsetCommitRequest(
            group_id=PROGRESS_GROUP, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
            topics=(offset_commit_v8.OffsetCommitRequestTopic(name=self.topic, partitions=(
                offset_commit_v8.OffsetCommitRequestPartition(
                    partition_index=self.partition, committed_offset=offset, committed_leader_epoch=self.leader_epoch,
                    committed_metadata=metadata),)),))
        answer = await self.peers.request(coordinator, 8, 8, request)
        self._raise_for_commit(ErrorCode(int(answer.topics[0].partitions[0].error_code)), f" at broker {coordinator}")

    def _raise_for_commit(self, error: ErrorCode, where: str) -> None:
        if error == ErrorCode.fenced_leader_epoch:
            state = self.metadata.partitions.get((self.topic, self.partition))
            raise KafkaError(error, f"the coordinator{where} refused its commit of {self.topic}-{self.partition} at "
                             f"leader epoch {self.leader_epoch} (FENCED_LEADER_EPOCH: committed at a newer one; the "
                             f"metadata names leader epoch {state.leader_epoch if state is not None else '?'})")
        _raise_for(error, f"committing the progress{where}")


def _raise_for(error: ErrorCode, what: str) -> None:
    if error != ErrorCode.none:
        raise KafkaError(error, f"{what}: {error.name}")


def _describe(error: Exception) -> str:
    """An error as the status shows it: a Kafka error's code name first (unless its message says it)."""
    text = str(error) or type(error).__name__
    if isinstance(error, KafkaError) and error.error_code.name.upper() not in text.upper():
        return f"{error.error_code.name.upper()}: {text}"
    return text


def _first_batch(data, base_offset: int) -> bytes | None:
    for pos, info in _batches(memoryview(data)):
        return bytes(memoryview(data)[pos:pos + info.size]) if info.base_offset == base_offset else None
    return None


class DelayTopics:
    def __init__(self, metadata, replicas, config, data_dir: Path, clock_ms: Callable[[], int] = wall_clock_ms,
                 metrics=None, groups: Callable = lambda: None) -> None:
        self.metadata = metadata
        self.replicas = replicas
        self.config = config
        self.index_root = Path(data_dir) / INDEX_DIR
        self.clock_ms = clock_ms
        self.metrics = metrics  # BrokerMetrics: tidelog_delay_topic_records{topic,event}, ..._remote_appends
        self.groups = groups  # the GroupCoordinator while this broker is it, else None (the movers' progress)
        self.movers: dict[tuple[str, int], DelayMover] = {}
        self.peers = _Peers(replicas, metadata)
        self._failing: dict[tuple[str, int], int] = {}  # movers in a failure streak: how many failures
        self._streaks: dict[tuple[str, int], tuple[int, str]] = {}  # status: a streak's start (ms) and last error
        self._retired: dict[tuple[str, int], tuple[int, int]] = {}  # status: moved, lost by a partition's earlier movers
        self._missing: dict = {}  # _Target.missing: movers' last batches not found at a remote leader
        self._task: asyncio.Task | None = None
        self._first_sync = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tidelog-delay-topics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.peers.close()

    def status(self, name: str) -> list[dict] | None:
        """Each partition of delay topic ``name`` as this broker sees it (None: not a delay topic):
        its target partition and where that is led; for a partition led here its mover's records
        waiting, next due time, moved and lost, last move and state (docs/queues.md). Bounded work:
        no log read (DelayMover.status)."""
        record = self.metadata.topics.get(name)
        target_name = record.configs.get("tidelog.delay.target.topic") if record is not None else None
        if not target_name:
            return None
        target = self.metadata.topics.get(target_name)
        now = self.clock_ms()
        out = []
        for p in range(record.partitions):
            key = (name, p)
            target_index = p % target.partitions if target is not None and target.partitions > 0 else None
            target_leader = None
            if target_index is not None:
                local = self.replicas.get(target_name, target_index)
                state = self.metadata.partitions.get((target_name, target_index))
                target_leader = self.replicas.node_id if local is not None and local.leading else (
                    state.leader if state is not None and state.leader >= 0 else None)
            source = self.replicas.get(name, p)
            mover = self.movers.get(key)
            moved, lost = self._retired.get(key, (0, 0))
            if mover is not None:
                moved, lost = moved + mover.moved, lost + mover.lost
            since, error = self._streaks.get(key, (None, None))
            view = {"partition": p, "target_topic": target_name, "target_partition": target_index,
                    "target_leader": target_leader, "target_local": target_leader == self.replicas.node_id,
                    "leader": self.replicas.node_id, "waiting_records": None, "next_due_ms": None,
                    "moved_records": moved, "lost_records": lost, "last_move_ms": None, "last_move_late_ms": None,
                    "committed_offset": None, "committed_ms": None, "commit_error": None, "recovered_from": None,
                    "failing_since_ms": since, "failures": self._failing.get(key, 0), "last_error": error}
            if source is None or not source.leading:
                view.update(state="not_leader", leader=None, failing_since_ms=None, failures=0, last_error=None)
            elif target_index is None:
                view["state"] = "no_target"
            elif mover is None:
                view["state"] = "failing" if since is not None else "starting"
            else:
                s = mover.status()
                view.update({k: s[k] for k in ("waiting_records", "next_due_ms", "last_move_ms", "last_move_late_ms",
                                               "committed_offset", "committed_ms", "commit_error", "recovered_from")})
                view["state"] = ("failing" if since is not None else "rebuilding" if s["rebuilding"] else
                                 "moving" if s["in_round"] or (s["next_due_ms"] is not None and s["next_due_ms"] <= now)
                                 else "waiting" if s["waiting_records"] else "idle")
            out.append(view)
        return out

    def _retire(self, key: tuple[str, int], mover: DelayMover) -> None:
        moved, lost = self._retired.get(key, (0, 0))
        self._retired[key] = (moved + mover.moved, lost + mover.lost)

    def refresh_gauges(self, metrics) -> None:
        """tidelog_delay_topic_waiting_records{topic,partition} of the delay partitions led here
        (none with ``metrics.per.partition.enable=false``, as every series labelled by partition)."""
        metrics.delay_topic_waiting.clear()
        if not metrics.per_partition:
            return
        for (name, p), mover in list(self.movers.items()):
            waiting = mover.status()["waiting_records"]
            if waiting is not None:
                metrics.delay_topic_waiting.labels(name, str(p)).set(waiting)

    async def _run(self) -> None:
        while True:
            try:
                await self._sync()
                wait_s = IDLE_WAIT_S
                for key, mover in list(self.movers.items()):
                    moved, lost = mover.moved, mover.lost
                    remote, failures = mover.target.remote_batches, mover.target.remote_failures
                    timeouts = mover.target.timeouts
                    try:
                        # A deposed leader's mover stops between two appends (its successor recovers).
                        while mover.source.partition.leading and mover.fenced is None and (await mover.step() or mover._rebuild_at is not None):
                            await asyncio.sleep(0)  # let requests in between steps of a backlog
                    except (KafkaError, OSError, MoverDiverged) as e:
                        self._failed(key, mover, e)
                        continue
                    finally:
                        self._count(mover, mover.moved - moved, mover.lost - lost, mover.target.remote_batches - remote,
                                    mover.target.remote_failures - failures, mover.target.timeouts - timeouts)
                    self._streaks.pop(key, None)
                    if key in self._failing:
                        logger.info("delay mover %s-%d: appending to %s-%d again after %d failed attempts", *key,
                                    mover.target.topic, mover.target.index, self._failing.pop(key))
                    due = mover.next_due_ms()
                    if due is not None:
                        wait_s = min(wait_s, max(0.0, (due - self.clock_ms()) / 1000))
                sources = [m.source.partition for m in self.movers.values()]
                if sources:
                    await wait_for_data(sources, wait_s)
                else:
                    await asyncio.sleep(wait_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the service must outlive one bad step
                logger.exception("delay topics: unexpected error")
                await asyncio.sleep(IDLE_WAIT_S)

    def _failed(self, key: tuple[str, int], mover: DelayMover, error: Exception) -> None:
        """A step failed: retried at the next pass, by a mover started again (``recover``) where
        another mover of the delay partition appended first. Logged once per failure streak."""
        diverged = isinstance(error, MoverDiverged) or (
            isinstance(error, KafkaError) and error.error_code == ErrorCode.out_of_order_sequence_number)
        if diverged and (gone := self.movers.pop(key, None)) is not None:
            self._retire(key, gone)
        streak = self._failing[key] = self._failing.get(key, 0) + 1
        self._streaks[key] = (self._streaks.get(key, (self.clock_ms(), ""))[0], _describe(error))
        level = logging.WARNING if streak == 1 else logging.DEBUG
        logger.log(level, "delay mover %s-%d: appending to %s-%d%s failed: %s (%s)", *key, mover.target.topic,
                   mover.target.index, "" if mover.target.leader in (-1, self.replicas.node_id) else
                   f" at broker {mover.target.leader}", error,
                   "starting again from the target's batches" if diverged else "retrying")

    def _count(self, mover: DelayMover, moved: int, lost: int, remote: int = 0, failures: int = 0,
               timeouts: int = 0) -> None:
        if lost:
            logger.warning("delay topic %s-%d: %d records were removed by retention before they were due",
                           mover.origin_topic, mover.origin_partition, lost)
        if self.metrics is None:
            return
        if moved:
            self.metrics.delay_topic_records.labels(mover.origin_topic, "moved").inc(moved)
        if lost:
            self.metrics.delay_topic_records.labels(mover.origin_topic, "lost").inc(lost)
        if remote:
            self.metrics.delay_topic_remote_appends.labels(mover.origin_topic, "ok").inc(remote)
        if failures:
            self.metrics.delay_topic_remote_appends.labels(mover.origin_topic, "failed").inc(failures)
        if timeouts:
            self.metrics.internal_write_timeouts.labels("delay_mover").inc(timeouts)

    async def _sync(self) -> None:
        """Movers for the delay partitions led here, none for others."""
        wanted: dict[tuple[str, int], tuple] = {}
        for name, record in list(self.metadata.topics.items()):
            target_name = record.configs.get("tidelog.delay.target.topic")
            if not target_name:
                continue
            target = self.metadata.topics.get(target_name)
            if target is None or target.partitions <= 0:
                continue
            for p in range(record.partitions):
                source = self.replicas.get(name, p)
                if source is None or not source.leading:
                    continue
                wanted[(name, p)] = (record, source, (target_name, p % target.partitions))
        for key in [k for k in self._failing if k not in wanted]:
            del self._failing[key]
            self._streaks.pop(key, None)
        gone = [k for k in self.movers if k not in wanted or self.movers[k].source.partition is not wanted[k][1]
                or self.movers[k].fenced is not None or self.movers[k].progress.leader_epoch != wanted[k][1].leader_epoch
                or (self.movers[k].target.topic, self.movers[k].target.index) != wanted[k][2]]
        for key in gone:
            self._retire(key, self.movers.pop(key))
        if gone or self._first_sync:
            self._first_sync = False
            self._remove_unknown_indexes()
        for (name, p), (record, source, (target_name, target_index)) in wanted.items():
            delay_ms = self.config.topic_value(record.configs, "tidelog.delay.ms")
            if (name, p) in self.movers:
                self.movers[(name, p)].settings = self.movers[(name, p)].settings.__class__(delay_ms=delay_ms)
                continue
            target = _Target(self.replicas, self.metadata, self.peers, target_name, target_index, self._missing,
                             2 * self.config["replica.lag.time.max.ms"], self.config["offsets.commit.timeout.ms"] / 1000)
            mover = DelayMover(name, p, _Source(source), target,
                               DelayIndex(self.index_root / f"{record.topic_id.hex}-{p}"),
                               mover_producer_id(record.topic_id, p), self.clock_ms, delay_ms=delay_ms,
                               progress=_Committed(self.metadata, self.peers, self.groups, name, p, source,
                                                   source.leader_epoch))
            try:
                await mover.recover()
            except (KafkaError, OSError) as e:
                self._failed((name, p), mover, e)  # the target's leader is not reachable now: at the next pass
                continue
            self.movers[(name, p)] = mover
            if self.metrics is not None:
                self.metrics.delay_topic_recoveries.labels(name, mover.recovered_from).inc()

    def _remove_unknown_indexes(self) -> None:
        """Index directories of topics that no longer exist go (by topic id: a topic deleted and
        created again under its name starts afresh)."""
        ids = {record.topic_id.hex for record in list(self.metadata.topics.values())}
        for directory in self.index_root.glob("*") if self.index_root.exists() else ():
            topic_id, _, _partition = directory.name.rpartition("-")
            if topic_id not in ids:
                shutil.rmtree(directory, ignore_errors=True)
