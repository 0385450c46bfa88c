"""Fetch sessions (KIP-227) on a real broker: kafka-python's consumer opens a session and fetches
incrementally; raw Fetch requests check what an incremental response carries and the session
errors Kafka answers (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
FETCH_SESSION_TOPIC_ID_ERROR); the cache's slots and eviction are unit tests
(tests/unit/test_fetch_sessions.py)."""

from __future__ import annotations

import asyncio
import datetime
import urllib.request
import uuid

from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.fetch.v13 import request as fetch_v13

from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.errors import ErrorCode


def _metrics(broker) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
        lines = page.read().decode().splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}


def _create(broker, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)


def _produce(broker, topic: str, partition: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", batch_size=64)  # a batch a record
    for n in range(count):
        producer.send(topic, b"%d-%d" % (partition, n), partition=partition)
    producer.flush(15)
    producer.close()


def test_kafka_python_consumes_through_an_incremental_session(broker):
    _create(broker, "inc", 3)
    for partition in range(3):
        _produce(broker, "inc", partition, 200)
    # Small fetches: each partition takes several rounds, so most fetches are incremental ones.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, max_partition_fetch_bytes=1024,
                             fetch_max_wait_ms=100, consumer_timeout_ms=20_000)
    consumer.assign([TopicPartition("inc", p) for p in range(3)])
    consumer.seek_to_beginning()
    seen: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    produced_more = False
    for message in consumer:
        seen[message.partition].append(message.value)
        if not produced_more and sum(map(len, seen.values())) == 300:
            _produce(broker, "inc", 1, 50)  # new records while the session is open
            produced_more = True
        if sum(map(len, seen.values())) == 650:
            break
    consumer.close()
    assert seen[0] == [b"0-%d" % n for n in range(200)]
    assert seen[1] == [b"1-%d" % n for n in range(200)] + [b"1-%d" % n for n in range(50)]
    assert seen[2] == [b"2-%d" % n for n in range(200)]
    metrics = _metrics(broker)
    assert metrics.get('tidelog_fetch_requests_total{fetcher="consumer",kind="full"}', 0) >= 1
    assert metrics.get('tidelog_fetch_requests_total{fetcher="consumer",kind="incremental"}', 0) >= 10


class _Fetcher:
    """Raw Fetch requests (v12 by topic name, v13 by topic id) over one connection."""

    def __init__(self, broker, topic: str) -> None:
        self.channel = BrokerChannel("127.0.0.1", broker.port, "session-test")
        self.topic = topic

    async def fetch(self, session_id: int, epoch: int, partitions: dict[int, int] = {}, forget: tuple = (),
                    topic_id: uuid.UUID | None = None):
        if topic_id is None:
            schema, version, topic_field = fetch_v12, 12, {"topic": self.topic}
        else:
            schema, version, topic_field = fetch_v13, 13, {"topic_id": topic_id}
        topics = (schema.FetchTopic(**topic_field, partitions=tuple(
            schema.FetchPartition(partition=p, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1,
                                  log_start_offset=-1, partition_max_bytes=1 << 20)
            for p, offset in partitions.items())),) if partitions else ()
        forgotten = (schema.ForgottenTopic(**topic_field, partitions=forget),) if forget else ()
        request = schema.FetchRequest(replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=50 << 20,
                                      isolation_level=0, session_id=session_id, session_epoch=epoch, topics=topics,
                                      forgotten_topics_data=forgotten, rack_id="")
        return await self.channel.request(1, version, request, 10)


def _carried(response) -> dict[int, tuple[int, int]]:
    """partition -> (high watermark, record bytes) of each partition the response carries."""
    return {p.partition_index: (p.high_watermark, len(p.records or b"")) for t in response.responses
            for p in t.partitions}


def test_incremental_responses_carry_only_news_and_bad_sessions_get_kafkas_errors(broker):
    _create(broker, "news", 2)
    _produce(broker, "news", 0, 2)

    async def scenario():
        client = _Fetcher(broker, "news")
        try:
            # Unknown session: Kafka's answer, not a full fetch of what is listed.
            response = await client.fetch(12345, 1, {0: 0})
            assert (response.error_code, response.session_id, response.responses) == (
                ErrorCode.fetch_session_id_not_found, 0, ())

            full = await client.fetch(0, 0, {0: 0, 1: 0})
            session = full.session_id
            assert full.error_code == ErrorCode.none and session != 0
            assert _carried(full) == {0: (2, _carried(full)[0][1]), 1: (0, 0)} and _carried(full)[0][1] > 0

            # Caught up, nothing new: an empty response that keeps the session.
            response = await client.fetch(session, 1, {0: 2})
            assert (response.error_code, response.session_id, _carried(response)) == (ErrorCode.none, session, {})

            # A record on partition 1 (not listed again): only partition 1 comes back.
            _produce(broker, "news", 1, 1)
            response = await client.fetch(session, 2)
            carried = _carried(response)
            assert list(carried) == [1] and carried[1][0] == 1 and carried[1][1] > 0

            # A wrong epoch, and a request by topic id on a session by names.
            for epoch, kwargs, error in ((7, {}, ErrorCode.invalid_fetch_session_epoch),
                                         (3, {"topic_id": uuid.uuid4()}, ErrorCode.fetch_session_topic_id_error)):
                response = await client.fetch(session, epoch, **kwargs)
                assert (response.error_code, response.session_id, response.responses) == (error, 0, ())

            # Partition 1 forgotten (at its new offset): its next record is not fetched.
            response = await client.fetch(session, 3, {1: 1}, forget=(1,))
            assert _carried(response) == {}
            _produce(broker, "news", 1, 1)
            response = await client.fetch(session, 4)
            assert (response.session_id, _carried(response)) == (session, {})
            _produce(broker, "news", 0, 1)
            assert list(_carried(await client.fetch(session, 5))) == [0]

            # A sessionless full fetch closes the session it names.
            response = await client.fetch(session, -1, {0: 0})
            assert response.session_id == 0 and list(_carried(response)) == [0]
            assert (await client.fetch(session, 6)).error_code == ErrorCode.fetch_session_id_not_found
        finally:
            client.channel.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    metrics = _metrics(broker)
    assert metrics['tidelog_fetch_requests_total{fetcher="consumer",kind="error"}'] == 4
    assert metrics["tidelog_fetch_sessions"] == 0
