"""A connection's Produce requests append in the order they were read, also when a transactional
one first asks the transaction coordinator whether its partitions were added (KIP-890 part 1,
handlers/produce.py): a Kafka broker serialises a connection's requests, so the batches of
pipelined requests reach each partition in the order sent. The coordinator is on another broker
here (its answers come back when the test says, in the order it chooses); the connection, the
Produce handler, the partitions and their logs are the real ones. The processes-and-clients test
is tests/fault/test_transactions_cluster.py."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from tests.unit.test_partition import NODE, RecordingIsrWriter, run
from tests.unit.test_replica_backlog import _receive, _Socket, wait_until_async
from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.replica_manager import ReplicaManager
from tidelog.handlers.registry import Access, RequestContext, load_all
from tidelog.metrics import BrokerMetrics
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch, iter_records
from tidelog.security.quotas import QuotaManagers
from tidelog.server.connection import KafkaConnection
from tidelog.server.request_memory import RequestMemory

TXN_ID = "tx-order"
PRODUCER_ID, EPOCH = 4000, 0


class _RemoteCoordinator:
    """The transaction coordinator as a leader sees it when it is on another broker
    (TransactionService.verify): each question is answered when the test says, in the order the
    test chooses; every partition asked about is in the transaction."""

    def __init__(self) -> None:
        self.asked: list[tuple[tuple, asyncio.Future]] = []

    async def verify(self, transactional_id, producer_id, producer_epoch, partitions):
        answer = asyncio.get_running_loop().create_future()
        self.asked.append((tuple((tp.topic, tp.partition) for tp in partitions), answer))
        await answer
        return dict.fromkeys(partitions, ErrorCode.none)

    def answer(self, index: int) -> None:
        self.asked[index][1].set_result(None)


class _Leader:
    """A broker's parts a KafkaConnection and the Produce handler use, leading t-0 .. t-(n-1) on
    real logs (the ReplicaManager's own methods), with the coordinator elsewhere. ``cluster``:
    replica.backlog.max.bytes applies (each Produce takes a ticket as it is read)."""

    leader = ReplicaManager.leader
    get = ReplicaManager.get
    wait_for_acks = ReplicaManager.wait_for_acks
    backlog_holds = ReplicaManager.backlog_holds
    isr_metrics = None
    node_id = NODE

    def __init__(self, logs, partitions: int, cluster: bool) -> None:
        self.logs, self.partitions = logs, {}
        for index in range(partitions):
            log = logs.create("t", index)
            partition = Partition("t", index, log, logs, NODE, PartitionConfig(), RecordingIsrWriter())
            partition.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
            self.partitions[("t", index)] = logs.partitions[("t", index)] = partition
        self.controller = object() if cluster else None
        self.config = {"socket.request.max.bytes": 1 << 20, "queued.max.requests": 500,
                       "replica.backlog.max.bytes": 1 << 20}
        self.request_memory = RequestMemory(64 << 20, 2 << 20)
        self.metrics = BrokerMetrics()
        self.metadata = SimpleNamespace(topics={"t": SimpleNamespace(partitions=partitions)})
        self.quotas = QuotaManagers()
        self.connections: set = set()
        self.transactions = _RemoteCoordinator()

    def access(self, principal, host: str):
        return Access(None, principal, host)

    def request_context(self, header, peer, flexible, listener="", access=None):
        return RequestContext(header, peer, flexible, self.node_id, self.config, self.metadata, self, metrics=self.metrics,
                              logs=self.logs, listener=listener, access=access or self.access(None, ""),
                              transactions=self.transactions)

    def connection_closed(self, peer: str) -> None:
        pass

    def connect(self) -> tuple[KafkaConnection, _Socket]:
        connection = KafkaConnection(self)
        connection.transport = socket = _Socket()
        return connection, socket


def _txn_batch(value: bytes, sequence: int):
    return build_batch([(None, value, [])], producer_id=PRODUCER_ID, producer_epoch=EPOCH, base_sequence=sequence,
                       is_transactional=True)


def _frame(correlation_id: int, batches: dict[int, tuple[bytes, int]]) -> bytes:
    """A framed Produce v9 (acks=1) of the transaction: partition -> (value, base sequence)."""
    data = [ProduceRequest.TopicProduceData.PartitionProduceData(index=p, records=_txn_batch(value, sequence))
            for p, (value, sequence) in batches.items()]
    request = ProduceRequest[9](transactional_id=TXN_ID, acks=1, timeout_ms=30000,
                                topic_data=[ProduceRequest.TopicProduceData(name="t", partition_data=data)])
    request.with_header(correlation_id=correlation_id, client_id="order")
    return bytes(request.encode(version=9, header=True, framed=True))


def _answers(socket: _Socket) -> list[tuple[int, dict[int, ErrorCode]]]:
    """Each response written: (correlation id, partition -> error)."""
    answers = []
    for frame in socket.written:
        response = ProduceResponse.decode(frame[4:], version=9, header=True)
        (topic,) = response.responses
        answers.append((response.header.correlation_id,
                        {p.index: ErrorCode(p.error_code) for p in topic.partition_responses}))
    return answers


def _values(partition) -> list[bytes]:
    return [record.value for record in iter_records(partition.read(0, 1 << 24, False).records)]


async def _asked(coordinator: _RemoteCoordinator, count: int) -> None:
    await wait_until_async(lambda: len(coordinator.asked) >= count)


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_two_first_batches_of_a_transaction_append_in_order_when_the_second_check_comes_back_first(tmp_path, cluster):
    """Two pipelined requests, each a batch of one transaction to t-0 before the transaction has
    appended anything there: both ask the coordinator. The second answer comes back first; the
    second batch must still append after the first (before: it appended first and the first was
    refused, OUT_OF_ORDER_SEQUENCE_NUMBER)."""
    load_all()

    async def main(logs):
        broker = _Leader(logs, 1, cluster)
        connection, socket = broker.connect()
        _receive(connection, _frame(1, {0: (b"0", 0)}) + _frame(2, {0: (b"1", 1)}))
        await _asked(broker.transactions, 2)
        broker.transactions.answer(1)
        for _ in range(5):
            await asyncio.sleep(0)
        broker.transactions.answer(0)
        await wait_until_async(lambda: len(socket.written) == 2)
        assert _answers(socket) == [(1, {0: ErrorCode.none}), (2, {0: ErrorCode.none})]
        assert _values(broker.partitions[("t", 0)]) == [b"0", b"1"]

    run(main, tmp_path)


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_a_batch_that_needs_no_check_waits_for_an_earlier_request_still_checking(tmp_path, cluster):
    """The transaction is open on t-1 already; request 1 brings its first batch for t-0 (asked
    about) and the next for t-1, request 2 the one after on t-1 (nothing to ask). Request 2 must
    not append to t-1 while request 1 is still waiting for its answer."""
    load_all()

    async def main(logs):
        broker = _Leader(logs, 2, cluster)
        t1 = broker.partitions[("t", 1)]
        t1.append_as_leader(memoryview(bytearray(_txn_batch(b"a", 0))))
        connection, socket = broker.connect()
        _receive(connection, _frame(1, {0: (b"x", 0), 1: (b"b", 1)}) + _frame(2, {1: (b"c", 2)}))
        await _asked(broker.transactions, 1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert _values(t1) == [b"a"]  # request 2 waits for request 1
        broker.transactions.answer(0)
        await wait_until_async(lambda: len(socket.written) == 2)
        assert _answers(socket) == [(1, {0: ErrorCode.none, 1: ErrorCode.none}), (2, {1: ErrorCode.none})]
        assert _values(t1) == [b"a", b"b", b"c"] and _values(broker.partitions[("t", 0)]) == [b"x"]
        assert len(broker.transactions.asked) == 1

    run(main, tmp_path)


def test_the_checks_of_different_connections_are_not_serialised(tmp_path):
    """One connection's request waiting for the coordinator holds back only that connection: a
    transactional request on another connection appends as soon as its own answer comes."""
    load_all()

    async def main(logs):
        broker = _Leader(logs, 2, cluster=False)
        slow, slow_socket = broker.connect()
        fast, fast_socket = broker.connect()
        _receive(slow, _frame(1, {0: (b"slow", 0)}))
        await _asked(broker.transactions, 1)
        _receive(fast, _frame(1, {1: (b"fast", 0)}))
        await _asked(broker.transactions, 2)
        broker.transactions.answer(1)
        await wait_until_async(lambda: len(fast_socket.written) == 1)
        assert _values(broker.partitions[("t", 1)]) == [b"fast"] and _values(broker.partitions[("t", 0)]) == []
        assert slow_socket.written == []
        broker.transactions.answer(0)
        await wait_until_async(lambda: len(slow_socket.written) == 1)
        assert _values(broker.partitions[("t", 0)]) == [b"slow"]

    run(main, tmp_path)


@pytest.mark.parametrize("seed", range(12))
def test_pipelined_transactional_requests_append_in_order_whatever_order_the_answers_come_in(tmp_path, seed):
    """Thirty pipelined requests of one transaction over three partitions (one to three batches
    each, read in random pieces); the coordinator answers its questions in random order with loop
    passes between. Every batch is appended, each partition in request order, every request
    answered NONE in order."""
    load_all()
    rng = random.Random(seed)
    count, partitions = 30, 3

    async def main(logs):
        broker = _Leader(logs, partitions, cluster=seed % 2 == 1)
        connection, socket = broker.connect()
        sequences = [0] * partitions
        expected: list[list[bytes]] = [[] for _ in range(partitions)]
        stream = b""
        for n in range(count):
            batches = {}
            for p in sorted(rng.sample(range(partitions), rng.randint(1, partitions))):
                value = b"%d-%d" % (n, p)
                batches[p] = (value, sequences[p])
                sequences[p] += 1
                expected[p].append(value)
            stream += _frame(n + 1, batches)
        answered = 0
        for _ in range(100_000):
            if not stream and len(socket.written) == count:
                break
            if stream and rng.random() < 0.5:
                piece = rng.choice((50, 300, 1000, len(stream)))
                _receive(connection, stream[:piece])
                stream = stream[piece:]
            waiting = [i for i, (_, answer) in enumerate(broker.transactions.asked) if not answer.done()]
            if waiting and rng.random() < 0.4:
                broker.transactions.answer(rng.choice(waiting))
                answered += 1
            await asyncio.sleep(0)
        assert [_values(broker.partitions[("t", p)]) for p in range(partitions)] == expected
        answers = _answers(socket)
        assert [c for c, _ in answers] == list(range(1, count + 1))
        assert all(set(errors.values()) == {ErrorCode.none} for _, errors in answers), answers
        assert answered >= 1

    run(main, tmp_path)
