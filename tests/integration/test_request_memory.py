"""Memory held for requests is bounded: nothing is reserved for the size a frame announces before
its bytes arrive, and ``queued.max.request.bytes`` caps the bytes of requests read and not yet
answered across all connections (reading pauses at the cap, and resumes as requests are answered)."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time

import requests
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from tests.brokerproc import wait_until
from tests.integration.test_bad_input import Conn, create_topic, rss_kib
from tidelog.protocol.records import build_batch

MIB = 1 << 20


def metric(broker, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"no {name} in /metrics"
    return float(match.group(1))


def settled_rss_kib(pid: int) -> int:
    samples = [rss_kib(pid)]

    def settled() -> bool:
        time.sleep(0.2)
        samples.append(rss_kib(pid))
        return abs(samples[-1] - samples[-2]) < 256

    wait_until(settled, 20, message="broker memory to settle")
    return samples[-1]


def test_frames_announcing_100_mib_hold_no_memory(broker):
    """Four 12-byte frames announcing 100 MiB each took a broker from 38 to 551 MiB (the whole
    announced size was allocated and zero-filled at once). Now a large frame's buffer grows
    with the bytes that arrive: announcing costs nothing, 300 KiB sent costs about 1 MiB."""
    before = settled_rss_kib(broker.proc.pid)
    header = struct.pack(">hhih", 0, 9, 1, -1) + b"\x00\x00"
    announcers = []
    for sent in (0, 0, 300 * 1024, 300 * 1024):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        sock.sendall(struct.pack(">i", 100 * MIB) + header + b"\x00" * sent)
        announcers.append(sock)
    try:
        good = Conn(broker)
        good.api_versions(0)  # the broker has read what came before on the other connections
        growth_kib = settled_rss_kib(broker.proc.pid) - before
        print(f"broker RSS grew {growth_kib} KiB for four frames announcing 100 MiB each")
        assert growth_kib < 16 * 1024, f"broker grew {growth_kib} KiB for frames that announced 400 MiB"
        good.api_versions(3)
    finally:
        for sock in announcers:
            sock.close()


def produce_frame(correlation_id: int, topic: str, value_bytes: int) -> bytes:
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=build_batch([(None, b"x" * value_bytes, [])]))
    request = ProduceRequest[9](transactional_id=None, acks=1, timeout_ms=30000,
                                topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[data])])
    request.with_header(correlation_id=correlation_id, client_id="memory")
    return bytes(request.encode(version=9, header=True, framed=True))


def test_queued_max_request_bytes_pauses_reading_at_the_cap(broker_factory):
    """Twelve connections each send a 3 MiB produce while the group commit holds every answer
    for a while. With queued.max.request.bytes at 4 MiB the broker holds at most the cap plus
    the one frame allowed to finish past it (a 4 MiB buffer: socket.request.max.bytes is 4 MiB),
    pauses reading on the others, and answers all twelve."""
    broker = broker_factory({"queued.max.request.bytes": str(4 * MIB), "socket.request.max.bytes": str(4 * MIB),
                             "message.max.bytes": str(4 * MIB), "log.flush.interval.ms": "500"})
    admin = Conn(broker)
    create_topic(admin, "big")
    conns = [Conn(broker) for _ in range(12)]
    frames = [produce_frame(1, "big", 3 * MIB) for _ in conns]
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], metric(broker, "tidelog_queued_request_bytes"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        senders = [threading.Thread(target=conn.send, args=(data,)) for conn, data in zip(conns, frames)]
        for sender in senders:
            sender.start()
        for conn in conns:
            response = ProduceResponse.decode(conn.recv_frame(), version=9, header=True)
            assert response.responses[0].partition_responses[0].error_code == 0
        for sender in senders:
            sender.join()
    finally:
        stop.set()
        sampler.join()
    print(f"peak {peak[0] / MIB:.1f} MiB of requests held")
    assert 0 < peak[0] <= 4 * MIB + 4 * MIB, f"{peak[0] / MIB:.1f} MiB of requests held"
    assert metric(broker, "tidelog_request_memory_waits_total") > 0
    wait_until(lambda: metric(broker, "tidelog_queued_request_bytes") == 0, message="every request's bytes released")
    assert "queued.max.request.bytes" in broker.log()
    admin.api_versions(0)


def unanswered(conn: Conn) -> bool:
    """Nothing has come back on ``conn`` yet (a peek that does not wait)."""
    timeout = conn.sock.gettimeout()
    conn.sock.settimeout(0)  # with a timeout, Python polls for data before it reads
    try:
        return not conn.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        conn.sock.settimeout(timeout)


def test_small_requests_go_on_while_the_cap_is_reached(broker_factory):
    """A connection with nothing in flight still gets its small requests read when others'
    large ones fill queued.max.request.bytes (a follower's fetch, a heartbeat): ApiVersions is
    answered while one 2 MiB produce holds the cap (its answer waits for a 4 s group commit)
    and another waits to be read."""
    broker = broker_factory({"queued.max.request.bytes": str(1 * MIB), "socket.request.max.bytes": str(4 * MIB),
                             "message.max.bytes": str(4 * MIB), "log.flush.interval.ms": "4000"})
    admin = Conn(broker)
    create_topic(admin, "big")
    first, second = Conn(broker), Conn(broker)
    first.send(produce_frame(1, "big", 2 * MIB))
    wait_until(lambda: metric(broker, "tidelog_queued_request_bytes") >= 2 * MIB, message="the first produce read whole")
    second.send(produce_frame(1, "big", 2 * MIB))
    wait_until(lambda: metric(broker, "tidelog_request_memory_waiting_connections") >= 1, message="the second one paused")
    admin.api_versions(0)
    assert unanswered(first) and unanswered(second)  # ApiVersions did not wait for them
    for conn in (first, second):
        response = ProduceResponse.decode(conn.recv_frame(), version=9, header=True)
        assert response.responses[0].partition_responses[0].error_code == 0


def test_produces_waiting_for_acknowledgement_pin_no_frame_buffer(broker_factory):
    """Sixteen 1 MB produces on one connection, each appended while the group commit (a 4 s
    linger) holds every answer: each kept its 1 MiB frame buffer until answered, so the pool
    could not serve the next frame and the broker grew a fresh, zero-filled 1 MiB buffer per
    request waiting (16 MiB here; a producer pipelining behind a slow fsync paid a zero-fill
    per request). A Produce now gives its buffer back once appended, so one buffer serves them
    all while their bytes still count against queued.max.request.bytes until answered."""
    broker = broker_factory({"log.flush.interval.ms": "4000"})
    admin = Conn(broker)
    create_topic(admin, "big")
    conn = Conn(broker)
    conn.send(produce_frame(1, "big", 1000))  # the connection's first produce, its objects made
    wait_until(lambda: produced_records(broker, "big") == 1, message="the first record appended")
    before = settled_rss_kib(broker.proc.pid)
    for n in range(2, 18):
        conn.send(produce_frame(n, "big", 1_000_000))
        wait_until(lambda n=n: produced_records(broker, "big") == n, message=f"produce {n} appended")
    assert metric(broker, "tidelog_queued_request_bytes") >= 16 * 1_000_000  # all still unanswered
    growth_kib = settled_rss_kib(broker.proc.pid) - before
    print(f"broker RSS grew {growth_kib} KiB for 16 produces of 1 MB waiting for their acknowledgement")
    assert growth_kib < 8 * 1024, f"broker grew {growth_kib} KiB for 16 waiting produces"
    for _ in range(17):
        response = ProduceResponse.decode(conn.recv_frame(), version=9, header=True)
        assert response.responses[0].partition_responses[0].error_code == 0
    wait_until(lambda: metric(broker, "tidelog_queued_request_bytes") == 0, message="every request's bytes released")


def produced_records(broker, topic: str) -> float:
    text = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text
    match = re.search(rf'^tidelog_produced_records_total{{topic="{topic}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
