"""Replication races held still at the moment that matters.

A real broker in cluster mode runs in the test's event loop on a real etcd and leads a
partition whose other replica (broker 2) is played by the test: registered in etcd under its
own lease, it fetches with Fetch requests carrying its replica id over a real socket, as a
follower broker does. Producers send real Produce requests. Where a race needs a metadata
write to stay pending, the test holds the broker's compare-and-swap until it lets it go.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid

import pytest

from tests.clusterproc import start_in_process_broker
from tests.etcdproc import EtcdProcess
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.cluster.metadata import BrokerInfo, PartitionState, TopicRecord, new_topic_id
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch

TOPIC = "replicated"
KEY = (TOPIC, 0)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd") / "member").start()
    yield proc
    proc.kill()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def wait_for(condition, timeout_s: float = 10.0, message: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        await asyncio.sleep(0.01)


class Scenario:
    """Broker 1 (in process) leads ``TOPIC``-0 with replicas (1, 2); broker 2 is the test."""

    def __init__(self, broker, peer, prefix: str) -> None:
        self.broker, self.peer, self.prefix = broker, peer, prefix
        self.channels: list[BrokerChannel] = []

    @classmethod
    async def start(cls, tmp_path, etcd, isr=(1,), settings=None, configs=None) -> "Scenario":
        from tidelog.cluster.etcd_store import EtcdMetadataStore

        prefix = f"/repl-{uuid.uuid4().hex[:8]}"
        broker = await start_in_process_broker(tmp_path / "broker-1", etcd.endpoint, prefix, 1, settings)
        peer = EtcdMetadataStore([f"http://{etcd.endpoint}"], prefix, lease_ttl_s=2)
        await peer.start()
        await peer.register_broker(BrokerInfo(2, "127.0.0.1", 1))
        scenario = cls(broker, peer, prefix)
        await wait_for(lambda: 2 in broker.metadata.brokers, message="broker 2 registered")
        await broker.metadata.create_topic(TopicRecord(TOPIC, new_topic_id(), 1, 2, dict(configs or {})),
                                           [PartitionState((1, 2), 1, 0, tuple(isr))])
        broker.replicas.refresh(TOPIC)
        await wait_for(lambda: KEY in broker.replicas.leading, message="broker 1 leading")
        return scenario

    async def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        await self.broker.stop()
        await self.peer.close()

    @property
    def leader(self):
        return self.broker.replicas.leading[KEY]

    @property
    def log(self):
        return self.broker.logs.get(*KEY)

    def channel(self) -> BrokerChannel:
        channel = BrokerChannel("127.0.0.1", self.broker.port, "test")
        self.channels.append(channel)
        return channel

    async def produce(self, channel: BrokerChannel, values: list[bytes], acks: int = -1, timeout_ms: int = 10000):
        """One Produce v8 of one batch; (error code, base offset)."""
        from kio.schema.produce.v8 import request as produce

        batch = build_batch([(None, v, []) for v in values])
        request = produce.ProduceRequest(transactional_id=None, acks=acks, timeout=datetime.timedelta(milliseconds=timeout_ms),
                                         topic_data=(produce.TopicProduceData(name=TOPIC, partition_data=(
                                             produce.PartitionProduceData(index=0, records=batch),)),))
        response = await channel.request(0, 8, request, timeout_ms / 1000 + 10)
        partition = response.responses[0].partition_responses[0]
        return partition.error_code, partition.base_offset

    async def fetch(self, channel: BrokerChannel, offset: int, replica_id: int = 2, leader_epoch: int = 0):
        """One Fetch v11 as follower ``replica_id`` (max wait 0); the partition's response."""
        from kio.schema.fetch.v11 import request as fetch

        request = fetch.FetchRequest(
            replica_id=replica_id, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=1 << 20, isolation_level=0,
            session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
            topics=(fetch.FetchTopic(topic=TOPIC, partitions=(fetch.FetchPartition(
                partition=0, current_leader_epoch=leader_epoch, fetch_offset=offset, log_start_offset=0,
                partition_max_bytes=1 << 20),)),))
        response = await channel.request(1, 11, request, 10)
        return response.responses[0].partitions[0]

    def hold_isr_writes(self) -> asyncio.Event:
        """Hold the leader's ISR compare-and-swap writes (not the controller's) until the event is set."""
        store = self.broker.metadata
        original = store.compare_and_set_partition
        release = asyncio.Event()

        async def held(topic, partition, state, controller_epoch=None):
            if controller_epoch is None:
                await release.wait()
            return await original(topic, partition, state, controller_epoch)

        store.compare_and_set_partition = held
        return release


def test_acks_all_waits_for_a_follower_joining_the_isr(tmp_path, etcd):
    """While the write adding a follower to the ISR is pending, the high watermark counts the
    follower (Kafka's "maximal ISR"): an acks=all produce is not answered until it has the
    records, so the replica that joins the ISR never lacks an acknowledged record."""

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1,))
        try:
            producer, follower = s.channel(), s.channel()
            assert await s.produce(producer, [b"a", b"b", b"c"]) == (ErrorCode.none, 0)
            assert len((await s.fetch(follower, 0)).records) > 0  # the follower copies 0..2
            release = s.hold_isr_writes()
            assert (await s.fetch(follower, 3)).error_code == ErrorCode.none  # caught up: the ISR write starts
            assert s.leader.state.isr == (1,)
            pending = asyncio.create_task(s.produce(producer, [b"d"]))
            await wait_for(lambda: s.log.log_end_offset == 4, message="the produce appended")
            assert s.broker.replicas.high_watermark(*KEY) == 3, "offset 3 is committed before the joining follower has it"
            assert not pending.done()
            release.set()
            await wait_for(lambda: s.leader.state.isr == (1, 2), message="the ISR write completed")
            assert not pending.done()
            await s.fetch(follower, 4)  # the follower now has offset 3
            assert await pending == (ErrorCode.none, 3)
            assert s.broker.replicas.high_watermark(*KEY) == 4
        finally:
            await s.stop()

    run(scenario())


def test_a_follower_fetch_past_the_log_end_neither_counts_nor_joins_the_isr(tmp_path, etcd):
    """A follower's position is recorded only after its read succeeded (Kafka's order): a
    fetch offset beyond the leader's log end is OFFSET_OUT_OF_RANGE and neither moves the high
    watermark nor adds the follower to the ISR; nor does a fetch by a broker that is no replica."""

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1,))
        try:
            producer, follower = s.channel(), s.channel()
            assert await s.produce(producer, [b"a", b"b"]) == (ErrorCode.none, 0)
            response = await s.fetch(follower, 100)
            assert response.error_code == ErrorCode.offset_out_of_range
            assert s.leader.pending_isr is None and s.leader.state.isr == (1,)
            assert 2 not in s.leader.follower_end_offsets
            stranger = await s.fetch(s.channel(), 2, replica_id=3)
            assert stranger.error_code == ErrorCode.unknown_leader_epoch and not stranger.records
            # It stays out: acks=all is answered on the leader alone (min.insync.replicas 1).
            assert await s.produce(producer, [b"c"]) == (ErrorCode.none, 2)
            assert s.leader.state.isr == (1,) and s.leader.pending_isr is None
        finally:
            await s.stop()

    run(scenario())


def test_http_produce_is_answered_once_the_isr_has_the_records(tmp_path, etcd):
    """The HTTP API's produce waits as Produce acks=all does: for the in-sync replicas, and
    with min.insync.replicas checked; a follower that never fetches makes it fail, not succeed."""
    import aiohttp

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1, 2), settings={"http.port": "0"},
                                 configs={"min.insync.replicas": "2"})
        url = f"http://127.0.0.1:{s.broker.http.port}/api/v1/topics/{TOPIC}/records"
        body = {"records": [{"value": "one", "partition": 0}]}
        try:
            async with aiohttp.ClientSession() as http:
                follower = s.channel()
                pending = asyncio.create_task(http.post(url, json=body))
                await wait_for(lambda: s.log.log_end_offset == 1, message="the HTTP produce appended")
                await s.fetch(follower, 0)
                await s.fetch(follower, 1)  # the follower has offset 0: the high watermark passes it
                response = await pending
                assert response.status == 200, await response.text()
                assert [(r["partition"], r["offset"]) for r in (await response.json())["offsets"]] == [(0, 0)]

                # The follower fetches no more: after replica.lag.time.max.ms it leaves the ISR,
                # and the record is not acknowledged (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
                response = await http.post(url, json=body)
                assert response.status == 503, await response.text()
                assert (await response.json())["error_code"] == "NOT_ENOUGH_REPLICAS_AFTER_APPEND"
                response = await http.post(url, json=body)  # and now refused before the append
                assert (await response.json())["error_code"] == "NOT_ENOUGH_REPLICAS"
                assert s.log.log_end_offset == 2
        finally:
            await s.stop()

    run(scenario())


def test_http_consume_reads_only_below_the_high_watermark(tmp_path, etcd):
    """Like a Kafka consumer, the HTTP API reads only what the whole ISR has."""
    import aiohttp

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1, 2), settings={"http.port": "0"})
        url = f"http://127.0.0.1:{s.broker.http.port}/api/v1/topics/{TOPIC}/partitions/0/records?offset=0"
        try:
            async with aiohttp.ClientSession() as http:
                producer, follower = s.channel(), s.channel()
                assert await s.produce(producer, [b"a", b"b"], acks=1) == (ErrorCode.none, 0)
                answer = await (await http.get(url)).json()
                assert (answer["records"], answer["high_watermark"]) == ([], 0)
                await s.fetch(follower, 2)
                answer = await (await http.get(url)).json()
                assert ([r["value"] for r in answer["records"]], answer["high_watermark"]) == (["a", "b"], 2)
        finally:
            await s.stop()

    run(scenario())


def test_a_produce_waiting_for_a_flush_is_answered_when_its_records_are_truncated(tmp_path, etcd):
    """A leader that loses its leadership while a produce waits for the group commit, then
    truncates the divergent tail holding that produce's records (as its fetcher does), still
    answers the produce (NOT_LEADER_OR_FOLLOWER: the client retries on the new leader). It used
    to wait for the flush of offsets that no longer exist, forever, and an idempotent producer
    cannot send past an unanswered request: its records timed out (the failover test's rare
    _MSG_TIMED_OUT)."""

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1,), configs={"flush.ms": "300"})
        try:
            producer = s.channel()
            assert await s.produce(producer, [b"a"]) == (ErrorCode.none, 0)
            pending = asyncio.create_task(s.produce(producer, [b"b", b"c"]))
            await wait_for(lambda: s.log.log_end_offset == 3, message="the produce appended")
            state = s.broker.metadata.partitions[KEY]
            assert await s.broker.metadata.compare_and_set_partition(TOPIC, 0, state.changed(
                leader=2, leader_epoch=1, isr=(2,))) is not None  # as the controller would, broker 1 paused
            await wait_for(lambda: KEY not in s.broker.replicas.leading, message="broker 1 following")
            s.broker.replicas.get(*KEY).truncate_to(1)  # what its fetcher does with the divergent tail
            error, _ = await asyncio.wait_for(pending, 10)
            assert error == ErrorCode.not_leader_or_follower
        finally:
            await s.stop()

    run(scenario())


def test_the_high_watermark_waits_for_the_leaders_own_flush(tmp_path, etcd):
    """In a cluster the high watermark is bounded by the leader's own durable offset (balanced
    and durable profiles): followers having a record is not enough while the leader has it only
    in its page cache; the leader's flush moves it on."""

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1, 2), configs={"flush.ms": "2000"})
        try:
            producer, follower = s.channel(), s.channel()
            first = asyncio.create_task(s.produce(producer, [b"a"], acks=1))
            await wait_for(lambda: s.log.log_end_offset == 1, message="the first record appended")
            await s.fetch(follower, 1)  # the follower has it; the leader's group commit is pending
            assert s.broker.replicas.high_watermark(*KEY) == 0, "a record not durable on the leader is committed"
            assert not first.done()
            assert await first == (ErrorCode.none, 0)  # answered once the leader's flush made it durable
            assert s.broker.replicas.high_watermark(*KEY) == 1
        finally:
            await s.stop()

    run(scenario())


def test_a_pending_join_is_answered_when_the_coordinator_moves(tmp_path, etcd):
    """A JoinGroup waiting for its rebalance on a broker that stops leading __consumer_offsets
    is answered NOT_COORDINATOR at once (Kafka answers pending joins and syncs when it unloads
    a group), so the member looks the new coordinator up. It used to wait forever: its client
    waited max.poll.interval.ms for an answer and consumed nothing meanwhile."""
    from kio.schema.join_group.v3 import request as join_group

    async def scenario():
        s = await Scenario.start(tmp_path, etcd, isr=(1,), settings={"group.initial.rebalance.delay.ms": "20000"})
        try:
            await s.broker.metadata.create_topic(TopicRecord("__consumer_offsets", new_topic_id(), 1, 2, {}),
                                                 [PartitionState((1, 2), 1, 0, (1,))])
            s.broker.replicas.refresh("__consumer_offsets")
            await wait_for(lambda: s.broker.group_coordinator_error() is None, message="broker 1 the group coordinator")
            join = join_group.JoinGroupRequest(
                group_id="moving", session_timeout=datetime.timedelta(seconds=10), rebalance_timeout=datetime.timedelta(seconds=30),
                member_id="", protocol_type="consumer", protocols=(join_group.JoinGroupRequestProtocol(name="range", metadata=b""),))
            pending = asyncio.create_task(s.channel().request(11, 3, join, 40))
            await wait_for(lambda: "moving" in s.broker.groups.registry.groups, message="the join waiting for the initial rebalance delay")
            state = s.broker.metadata.partitions[("__consumer_offsets", 0)]
            assert await s.broker.metadata.compare_and_set_partition("__consumer_offsets", 0, state.changed(
                leader=2, leader_epoch=1, isr=(2,))) is not None  # the coordinator moves to broker 2
            response = await asyncio.wait_for(pending, 5)
            assert response.error_code == ErrorCode.not_coordinator
        finally:
            await s.stop()

    run(scenario())
