"""Produce requests pipelined on one connection append in the order they were sent while the
leader holds that connection for its followers (``replica.backlog.max.bytes``) and as holds
begin and end again and again once the followers are back.

A 3-broker cluster (real processes, real etcd), one partition at replication factor 3, a small
bound (64 KiB) and few requests read ahead per connection (``queued.max.requests`` 6: reading
pauses, and resumes as responses go out, between the holds too). Both followers are SIGSTOPped
(leases and lag time long enough for them to stay in the ISR), producers pipeline many times the
bound, the leader holds them, and the followers are SIGCONTinued: from then on the backlog
crosses the bound every few requests, and a hold that ends while requests read before it still
wait must not let a later one append first (a Kafka broker reads a connection's next request
only after answering the one before). Two producers: raw Produce frames written at once on four
sockets (each response's base offset must grow with its correlation id), and kafka-python with
100 requests in flight and no retries (its acknowledged offsets in send order). Both read back
in produce order by confluent-kafka and kafka-python. At the commit before the fix (6fbd245)
this failed 6 of 8 runs (a raw connection's base offsets, or kafka-python's offsets, out of
order). tests/fault/test_replica_backlog.py does the same with confluent-kafka's producer and
checks the bound and what a user sees.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_cluster_fetch_sessions import _metrics
from tests.integration.clients import consume
from tidelog.protocol.records import build_batch

pytestmark = pytest.mark.slow

BOUND = 64 << 10  # replica.backlog.max.bytes
IN_FLIGHT = 6  # queued.max.requests: reading pauses and resumes as responses go out, holds or not
HELD = "tidelog_replica_backlog_held_connections"
RAW_CONNECTIONS = 4
RAW_REQUESTS = 150  # a connection, each one batch of RECORDS_PER_REQUEST records: ~1.2 MB
RECORDS_PER_REQUEST = 8
VALUE_BYTES = 1024
KAFKA_PYTHON_RECORDS = 4000


def _value(n: int) -> bytes:
    return b"%08d" % n + b"x" * (VALUE_BYTES - 8)


def _frame(correlation_id: int, topic: str, connection: int, request: int) -> bytes:
    """A framed Produce v9, acks=all, of one batch: the ``request``-th of ``connection``, its records
    numbered from ``request * RECORDS_PER_REQUEST``."""
    first = request * RECORDS_PER_REQUEST
    batch = build_batch([(None, b"%08d %08d " % (connection, n) + b"x" * (VALUE_BYTES - 18), [])
                         for n in range(first, first + RECORDS_PER_REQUEST)])
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=batch)
    request = ProduceRequest[9](transactional_id=None, acks=-1, timeout_ms=300_000,
                                topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[data])])
    request.with_header(correlation_id=correlation_id, client_id="order")
    return bytes(request.encode(version=9, header=True, framed=True))


def _read_responses(sock: socket.socket, count: int, into: list) -> None:
    """(correlation id, error code, base offset) of ``count`` Produce v9 responses, as they come."""
    stream = sock.makefile("rb")
    for _ in range(count):
        (size,) = struct.unpack(">i", stream.read(4))
        data = stream.read(size)
        (correlation_id,) = struct.unpack_from(">i", data)
        partition = ProduceResponse[9].decode(data[5:]).responses[0].partition_responses[0]  # after the header's tags
        into.append((correlation_id, partition.error_code, partition.base_offset))


def _read_back_in_order(cluster: Cluster, topic: str, count: int) -> None:
    for client in ("confluent", "kafka-python"):
        read = consume(client, cluster.bootstrap, topic, count, timeout_s=60)
        numbers = [int(m.value[:8]) for m in read]
        first_wrong = next((i for i, n in enumerate(numbers) if n != i), None)
        assert numbers == list(range(count)), (client, len(numbers), first_wrong,
                                                numbers[first_wrong - 2:first_wrong + 3] if first_wrong else None)


def test_pipelined_produce_requests_append_in_order_through_backlog_holds(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "replica.backlog.max.bytes": str(BOUND), "queued.max.requests": str(IN_FLIGHT),
                                    "broker.session.timeout.ms": "60000", "replica.lag.time.max.ms": "60000"}).start()
    stopped = []
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        for topic in ("raw", "kafka-python"):
            admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])[topic].result(10)
        partition = lambda topic: admin.list_topics(topic, timeout=5).topics[topic].partitions[0]  # noqa: E731
        wait_until(lambda: all(len(partition(t).isrs) == 3 for t in ("raw", "kafka-python")), 20,
                   message="all three replicas in sync")

        def stop_followers(topic: str):
            leader = cluster.brokers[partition(topic).leader]
            for follower in (b for b in cluster.brokers.values() if b is not leader):
                follower.pause()
                stopped.append(follower)
            return leader

        def resume_followers() -> None:
            while stopped:
                stopped.pop().resume()

        # Raw frames, all written at once on each of a few connections: the leader reads them in
        # bursts while it can (up to IN_FLIGHT unanswered), and holds each connection on its own.
        leader = stop_followers("raw")
        sockets = [socket.create_connection(("127.0.0.1", leader.port), timeout=300) for _ in range(RAW_CONNECTIONS)]
        responses: list[list[tuple[int, int, int]]] = [[] for _ in sockets]
        threads = [threading.Thread(target=_read_responses, args=(sock, RAW_REQUESTS, answers), daemon=True)
                   for sock, answers in zip(sockets, responses)]
        threads += [threading.Thread(target=sock.sendall, daemon=True,
                                     args=(b"".join(_frame(n + 1, "raw", c, n) for n in range(RAW_REQUESTS)),))
                    for c, sock in enumerate(sockets)]
        for thread in threads:
            thread.start()
        wait_until(lambda: _metrics(leader)[HELD] >= 1, 30, message="the leader holding raw connections")
        resume_followers()
        for thread in threads:
            thread.join(120)
        for sock in sockets:
            sock.close()
        assert not any(thread.is_alive() for thread in threads), [len(answers) for answers in responses]
        for answers in responses:
            assert [r[0] for r in answers] == list(range(1, RAW_REQUESTS + 1))  # answered in request order
            assert all(error == 0 for _, error, _ in answers), [r for r in answers if r[1]][:3]
            bases = [base for _, _, base in answers]
            assert bases == sorted(bases), next(i for i in range(1, len(bases)) if bases[i] < bases[i - 1])
        for client in ("confluent", "kafka-python"):
            read = consume(client, cluster.bootstrap, "raw", RAW_CONNECTIONS * RAW_REQUESTS * RECORDS_PER_REQUEST, timeout_s=60)
            for c in range(RAW_CONNECTIONS):  # each connection's records in the order it sent them
                numbers = [int(m.value[9:17]) for m in read if m.value[:8] == b"%08d" % c]
                assert numbers == list(range(RAW_REQUESTS * RECORDS_PER_REQUEST)), (client, c)

        # kafka-python, many requests in flight, no retries (a retried request may land after later
        # ones). It has the topic's metadata before the followers stop: it may ask any broker for it.
        producer = KafkaProducer(bootstrap_servers=cluster.brokers[partition("kafka-python").leader].bootstrap,
                                 acks="all", retries=0, linger_ms=5, batch_size=32 * 1024,
                                 max_in_flight_requests_per_connection=100, request_timeout_ms=300_000,
                                 delivery_timeout_ms=600_000, max_block_ms=300_000)
        try:
            assert producer.partitions_for("kafka-python") == {0}
            leader = stop_followers("kafka-python")
            futures = [producer.send("kafka-python", value=_value(n), partition=0) for n in range(KAFKA_PYTHON_RECORDS)]
            wait_until(lambda: _metrics(leader)[HELD] == 1, 30, message="the leader holding kafka-python's connection")
            resume_followers()
            producer.flush(120)
            offsets = [future.get(timeout=1).offset for future in futures]
        finally:
            producer.close(10)
        assert offsets == list(range(KAFKA_PYTHON_RECORDS))
        _read_back_in_order(cluster, "kafka-python", KAFKA_PYTHON_RECORDS)
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        for follower in stopped:
            follower.resume()
        cluster.stop()
