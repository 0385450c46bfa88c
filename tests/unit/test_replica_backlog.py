"""A leader's backlog above its high watermark (replica.backlog.max.bytes): the bytes appended
that the high watermark has not passed, and the hold an acks=all Produce's connection waits on
while they are over the bound (Partition.backlog_hold). The processes-and-clients test is
tests/fault/test_replica_backlog.py."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest
from kafka.protocol.producer import ProduceRequest

from tests.unit.test_partition import batch, leader, run
from tidelog.cluster import partition as partition_module
from tidelog.cluster.replica_manager import ReplicaManager
from tidelog.handlers.registry import Access, RequestContext, load_all
from tidelog.metrics import BrokerMetrics
from tidelog.protocol.records import build_batch, iter_records
from tidelog.security.quotas import QuotaManagers
from tidelog.server.connection import KafkaConnection
from tidelog.server.request_memory import RequestMemory


def test_the_backlog_counts_the_bytes_above_the_high_watermark(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        sizes = [len(batch(count)) for count in (3, 5, 2)]
        ends = []
        for count in (3, 5, 2):
            ends.append(partition.append_as_leader(batch(count)).end_offset)
        assert partition.backlog_bytes == sum(sizes)
        end = partition.log.log_end_offset
        partition.follower_fetched(2, ends[0], end)
        partition.follower_fetched(3, ends[1], end)
        assert partition.high_watermark == ends[0] and partition.backlog_bytes == sizes[1] + sizes[2]
        partition.follower_fetched(2, ends[2], end)
        assert partition.high_watermark == ends[1] and partition.backlog_bytes == sizes[2]
        partition.follower_fetched(3, ends[2], end)
        assert partition.backlog_bytes == 0

    run(main, tmp_path)


def test_a_hold_lasts_until_the_followers_bring_the_backlog_within_the_bound(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        size = len(batch(10))
        partition.backlog_max_bytes = 2 * size
        ends = [partition.append_as_leader(batch(10)).end_offset for _ in range(2)]
        assert partition.backlog_hold() is None  # at the bound, not over it
        ends.append(partition.append_as_leader(batch(10)).end_offset)
        hold = partition.backlog_hold()
        assert hold is not None and not hold.done()
        end = partition.log.log_end_offset
        partition.follower_fetched(2, ends[2], end)  # one follower alone moves nothing
        await asyncio.sleep(0)
        assert not hold.done() and partition.backlog_bytes == 3 * size
        partition.follower_fetched(3, ends[0], end)
        assert partition.backlog_bytes == 2 * size
        await asyncio.wait_for(hold, 1)
        assert partition.backlog_hold() is None

    run(main, tmp_path)


def test_holds_end_with_the_leadership_and_single_replicas_are_never_held(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        partition.backlog_max_bytes = 1
        partition.append_as_leader(batch(3))
        hold = partition.backlog_hold()
        assert hold is not None
        partition.stop_leading()
        await asyncio.wait_for(hold, 1)
        assert partition.backlog_bytes == 0 and partition.backlog_hold() is None

    run(main, tmp_path)

    async def single(logs):
        partition = leader(logs)  # a cluster of one: its high watermark is its durable end
        partition.backlog_max_bytes = 1
        partition.append_as_leader(batch(3))
        assert partition.backlog_bytes == 0 and partition.backlog_hold() is None

    run(single, tmp_path / "single", durability="balanced")


def test_no_bound_holds_nothing(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        assert partition.backlog_max_bytes == 0  # a Partition made without the replica manager's setting
        partition.append_as_leader(batch(3))
        assert partition.backlog_bytes > 0 and partition.backlog_hold() is None

    run(main, tmp_path)


def test_many_small_appends_keep_a_bounded_list_that_never_underestimates(tmp_path, monkeypatch):
    monkeypatch.setattr(partition_module, "APPENDS_REMEMBERED", 8)

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        size = len(batch(1))
        ends = [partition.append_as_leader(batch(1)).end_offset for _ in range(50)]
        assert len(partition._backlog_ends) <= 8
        assert partition.backlog_bytes == 50 * size
        end = partition.log.log_end_offset
        for passed in (7, 20, 33, 49):
            partition.follower_fetched(2, ends[passed - 1], end)
            partition.follower_fetched(3, ends[passed - 1], end)
            assert partition.high_watermark == ends[passed - 1]
            assert (50 - passed) * size <= partition.backlog_bytes <= 50 * size
        partition.follower_fetched(2, ends[-1], end)
        partition.follower_fetched(3, ends[-1], end)
        assert partition.backlog_bytes == 0

    run(main, tmp_path)


def test_a_connection_is_held_by_its_pending_holds_only():
    """A Produce waits while ``held_by()`` names a hold: one already done (its removal is a
    callback not yet run) must not be named, or the Produce's wait loop spins without yielding.
    And one whose turn has not come waits for it, hold or none."""
    async def main():
        connection = KafkaConnection.__new__(KafkaConnection)
        # Also paused for another reason ("writing"), so no transport is needed here.
        connection._holds, connection._pause_reasons, connection._closed = [], {"writing"}, False
        connection._tickets, connection._turn, connection._turn_waiters = 2, 1, {}
        connection.transport = None
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        connection._hold_reading(first)
        connection._hold_reading(second)
        assert connection._held_by(1) is first and "replication" in connection._pause_reasons
        first.set_result(None)  # its release callback has not run yet
        assert connection._held_by(1) is second
        second.set_result(None)
        turn = connection._held_by(2)  # nothing holds the connection, but the first has not appended
        assert turn is not None and not turn.done() and connection._held_by(2) is turn
        assert connection._held_by(1) is None and turn.done()  # the first appends: the second's turn
        assert connection._held_by(2) is None and connection._turn == 3 and connection._turn_waiters == {}
        await asyncio.sleep(0)
        assert connection._holds == [] and connection._pause_reasons == {"writing"}

    asyncio.run(main())


# ---- what a user sees of it: the gauges, the log lines, the HTTP field -------------------------------

class Hosted:
    """The part of the ReplicaManager the gauges and the HTTP view read, over real partitions
    (its own methods)."""

    backlogs = ReplicaManager.backlogs
    replica_lags = ReplicaManager.replica_lags
    get = ReplicaManager.get
    follower_unflushed_bytes = 0

    def __init__(self, *partitions) -> None:
        self.partitions = {(p.topic, p.index): p for p in partitions}


def _scrape(per_partition: bool, partition) -> tuple[float | None, float | None]:
    """(the partition's tidelog_replica_backlog_bytes, the broker-wide sum) after a refresh."""
    from tidelog.server.gauges import _refresh_cluster_gauges

    metrics = BrokerMetrics(per_partition=per_partition)
    _refresh_cluster_gauges(metrics, SimpleNamespace(partitions={}, topics={}), Hosted(partition), False)
    value = metrics.registry.get_sample_value
    return (value("tidelog_replica_backlog_bytes", {"topic": "t", "partition": "0"}),
            value("tidelog_replica_backlog_bytes_sum"))


def test_the_backlog_gauges_move_with_appends_and_the_high_watermark(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        assert _scrape(True, partition) == (0, 0)
        size = len(batch(4))
        ends = [partition.append_as_leader(batch(4)).end_offset for _ in range(3)]
        assert _scrape(True, partition) == (3 * size, 3 * size)
        end = partition.log.log_end_offset
        partition.follower_fetched(2, ends[1], end)
        partition.follower_fetched(3, ends[1], end)
        assert _scrape(True, partition) == (size, size)
        assert _scrape(False, partition) == (None, size)  # metrics.per.partition.enable=false: the sum only
        partition.follower_fetched(2, ends[2], end)
        partition.follower_fetched(3, ends[2], end)
        assert _scrape(True, partition) == (0, 0)
        partition.append_as_leader(batch(4))
        partition.stop_leading()  # a follower has no backlog, and no series for it
        assert _scrape(True, partition) == (None, 0)

    run(main, tmp_path)


def test_holding_logs_info_once_an_interval_and_a_long_hold_warns(tmp_path, monkeypatch, caplog):
    clock = [1_000_000]
    monkeypatch.setattr(partition_module, "monotonic_ms", lambda: clock[0])
    lag_max_ms = 30_000

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        partition.backlog_max_bytes = 1
        caplog.set_level("INFO", logger=partition_module.logger.name)

        def lines(level: str) -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelname == level and "acks=all" in r.getMessage()]

        for _ in range(5):  # holds begin and end five times within a minute: one INFO line
            end = partition.append_as_leader(batch(3)).end_offset
            hold, again = partition.backlog_hold(), partition.backlog_hold()
            assert hold is not None and again is not None and partition.backlog_held == 2
            assert not partition.backlog_overdue(clock[0] + lag_max_ms - 1, lag_max_ms)
            partition.follower_fetched(2, end, end)
            partition.follower_fetched(3, end, end)
            await asyncio.wait_for(hold, 1)
            assert partition.backlog_held == 0 and partition.backlog_held_since_ms is None
            clock[0] += 1_000
        assert len(lines("INFO")) == 1 and not lines("WARNING")
        assert "t-0: holding acks=all producers" in lines("INFO")[0] and "ISR [1, 2, 3]" in lines("INFO")[0]
        clock[0] += partition_module.BACKLOG_LOG_INTERVAL_MS
        partition.append_as_leader(batch(3))
        since = clock[0]
        assert partition.backlog_hold() is not None and len(lines("INFO")) == 2  # a new interval: said again
        # Held longer than replica.lag.time.max.ms: a WARNING naming the backlog, high watermark and ISR, once an interval.
        assert partition.backlog_overdue(since + lag_max_ms, lag_max_ms)
        warning = lines("WARNING")[0]
        assert (f"t-0: 1 acks=all Produce requests have held their connections for {lag_max_ms} ms: "
                f"{partition.backlog_bytes} bytes above the high watermark {partition.high_watermark}") in warning
        assert "ISR [1, 2, 3]" in warning
        assert not partition.backlog_overdue(since + lag_max_ms + 1_000, lag_max_ms)
        assert partition.backlog_overdue(since + lag_max_ms + partition_module.BACKLOG_LOG_INTERVAL_MS, lag_max_ms)
        assert len(lines("WARNING")) == 2

    run(main, tmp_path)


def test_the_http_partition_view_carries_the_backlog_of_a_partition_led_here(tmp_path):
    from tidelog.http.cluster_view import ClusterView

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        partition.backlog_max_bytes = 1
        view = ClusterView(SimpleNamespace(replicas=Hosted(partition)))
        assert view.backlog("t", 0) == {"backlog_bytes": 0, "backlog_held": 0}
        partition.append_as_leader(batch(3))
        assert partition.backlog_hold() is not None
        assert view.backlog("t", 0) == {"backlog_bytes": len(batch(3)), "backlog_held": 1}
        assert view.backlog("t", 1) == {}  # not hosted here: the topic view leaves its nulls
        partition.stop_leading()
        assert view.backlog("t", 0) == {}

    run(main, tmp_path)


# ---- a held connection: the Produce requests it read append in arrival order ----------------------

class _HeldLeader:
    """A broker's parts a KafkaConnection and the Produce handler use, over one real leader
    partition (t-0, replicas 1, 2, 3) on a real log: the ReplicaManager's own methods for it."""

    leader = ReplicaManager.leader
    wait_for_acks = ReplicaManager.wait_for_acks
    backlog_holds = ReplicaManager.backlog_holds
    isr_metrics = None
    node_id = 1

    def __init__(self, logs, partition, bound: int) -> None:
        self.logs, self.partitions = logs, {("t", 0): partition}
        partition.backlog_max_bytes = bound
        self.controller = object()  # cluster mode: replica.backlog.max.bytes applies
        self.config = {"socket.request.max.bytes": 1 << 20, "queued.max.requests": 500,
                       "replica.backlog.max.bytes": bound}
        self.request_memory = RequestMemory(64 << 20, 2 << 20)
        self.metrics = BrokerMetrics()
        self.metadata = SimpleNamespace(topics={"t": SimpleNamespace(partitions=1)})
        self.quotas = QuotaManagers()
        self.connections: set = set()

    def access(self, principal, host: str):
        return Access(None, principal, host)

    def request_context(self, header, peer, flexible, listener="", access=None):
        return RequestContext(header, peer, flexible, self.node_id, self.config, self.metadata, self, metrics=self.metrics,
                              logs=self.logs, listener=listener, access=access or self.access(None, ""))

    def connection_closed(self, peer: str) -> None:
        pass


class _Socket:
    """The connection's transport: reading paused or not, responses written."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def writelines(self, parts) -> None:  # the responses ready at one time: one writelines, one frame each here
        data = b"".join(bytes(part) for part in parts)
        while data:
            end = 4 + int.from_bytes(data[:4], "big")
            self.written.append(data[:end])
            data = data[end:]

    def get_extra_info(self, name, default=None):
        return default


def _produce_frame(correlation_id: int, value: bytes) -> bytes:
    """A framed Produce v9, acks=all, of one batch of one record to t-0."""
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=build_batch([(None, value, [])]))
    request = ProduceRequest[9](transactional_id=None, acks=-1, timeout_ms=30000,
                                topic_data=[ProduceRequest.TopicProduceData(name="t", partition_data=[data])])
    request.with_header(correlation_id=correlation_id, client_id="order")
    return bytes(request.encode(version=9, header=True, framed=True))


def _receive(connection, data: bytes) -> None:
    """What uvloop does with bytes a socket read: get_buffer, fill, buffer_updated."""
    while data:
        view = connection.get_buffer(-1)
        piece = min(len(view), len(data))
        view[:piece] = data[:piece]
        connection.buffer_updated(piece)
        data = data[piece:]


def _values(partition) -> list[bytes]:
    return [record.value for record in iter_records(partition.read(0, 1 << 24, False).records)]


def test_requests_read_before_a_hold_append_in_arrival_order_when_it_ends_before_the_last_starts(tmp_path):
    """Produce 0 takes the backlog over the bound and holds the connection; Produce 1, read with
    it, waits. The followers bring the backlog back (a Fetch handled on another connection)
    before Produce 2, read in a later callback of the same loop iteration, starts: 2 must
    still append after 1, as it does on a Kafka broker (which reads 2 only after answering 1).
    The loop runs its ready callbacks in order, so this is exactly that interleaving."""
    load_all()

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        broker = _HeldLeader(logs, partition, bound=1)  # any acks=all append holds
        connection = KafkaConnection(broker)
        connection.transport = socket = _Socket()
        loop = asyncio.get_running_loop()

        def followers_catch_up() -> None:  # a follower Fetch handled on another connection
            end = partition.log.log_end_offset
            partition.follower_fetched(2, end, end)
            partition.follower_fetched(3, end, end)

        _receive(connection, _produce_frame(1, b"0") + _produce_frame(2, b"1"))
        loop.call_soon(followers_catch_up)
        _receive(connection, _produce_frame(3, b"2"))
        # From here on the followers copy whatever is appended: every Produce appends and is answered.
        await wait_until_async(lambda: followers_catch_up() or len(socket.written) == 3)
        assert _values(partition) == [b"0", b"1", b"2"]
        assert [int.from_bytes(w[4:8], "big") for w in socket.written] == [1, 2, 3]

    run(main, tmp_path)


@pytest.mark.parametrize("seed", range(20))
def test_a_held_connection_appends_in_arrival_order_however_reads_holds_and_catch_ups_interleave(tmp_path, seed):
    """A hundred acks=all Produce requests on one connection, bound one request: the bytes come in
    reads of random sizes (as a socket gives them, only while reading is not paused), and
    between reads, in random numbers, the loop runs its ready callbacks or not and the
    followers catch up (callbacks queued among the requests' steps). The log holds them in
    arrival order and every one is answered, in order."""
    load_all()
    rng = random.Random(seed)
    count = 100

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        size = len(build_batch([(None, b"%03d" % 0, [])]))
        broker = _HeldLeader(logs, partition, bound=size)
        connection = KafkaConnection(broker)
        connection.transport = socket = _Socket()
        loop = asyncio.get_running_loop()

        copied = {2: 0, 3: 0}  # each follower's log end

        def followers_fetch() -> None:  # the followers' Fetch requests, handled on other connections
            end, fully = partition.log.log_end_offset, rng.random() < 0.5
            for follower in copied:
                copied[follower] = end if fully else rng.randint(copied[follower], end)
                partition.follower_fetched(follower, copied[follower], end)

        stream = b"".join(_produce_frame(n + 1, b"%03d" % n) for n in range(count))
        for _ in range(100_000):
            if not stream and len(socket.written) == count:
                break
            if stream and not socket.paused:
                piece = rng.choice((1, 60, 200, 400, 1000, len(stream)))
                _receive(connection, stream[:piece])
                stream = stream[piece:]
            for _ in range(rng.randrange(3)):
                loop.call_soon(followers_fetch)
            if socket.paused or rng.random() < 0.5:
                await asyncio.sleep(0)
        assert _values(partition) == [b"%03d" % n for n in range(count)]
        assert [int.from_bytes(w[4:8], "big") for w in socket.written] == list(range(1, count + 1))
        assert socket.pauses > 5  # held many times (nothing else pauses it here)
        assert connection._turn == count + 1 and not connection._turn_waiters

    run(main, tmp_path)


async def wait_until_async(condition, timeout_s: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (each pass yields to every ready callback)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.001)
