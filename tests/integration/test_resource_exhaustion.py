"""Running out of file descriptors, disk space or memory: the client gets Kafka's error code,
metadata and logs stay consistent (also after a restart), what ran out is logged once and shown
in a metric and ``/ready``; topic creation beyond what the broker can hold is refused up front."""

from __future__ import annotations

import re
import resource
import socket
import struct
import subprocess

import pytest
import requests
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KPTopicPartition
from kafka.admin import NewPartitions as KPNewPartitions
from kafka.admin import NewTopic as KPNewTopic
from kafka.errors import PolicyViolationError

from tests.brokerproc import wait_until

TIMEOUT_S = 30
POLICY_VIOLATION = 44
KAFKA_STORAGE_ERROR = 56


def metrics_text(broker) -> str:
    return requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text


def metric(broker, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", metrics_text(broker), re.MULTILINE)
    return float(match.group(1)) if match else None


def open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def create_error(admin: AdminClient, topic: NewTopic, **options) -> int | None:
    future = admin.create_topics([topic], request_timeout=TIMEOUT_S, **options)[topic.topic]
    try:
        future.result(TIMEOUT_S)
        return None
    except Exception as e:  # KafkaException carrying a KafkaError
        return e.args[0].code()


def partition_dirs(broker, topic: str) -> list[str]:
    return sorted(p.name for p in broker.data_dir.iterdir() if p.is_dir() and p.name.rsplit("-", 1)[0] == topic)


def test_soft_open_files_limit_is_raised_to_the_hard_limit(broker_factory):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = min(1024, hard)
    broker = broker_factory(nofile=(soft, hard))
    assert open_files_limit(broker.proc.pid) == (hard, hard)
    assert f"open files limit raised from {soft} to {hard}" in broker.log()
    assert metric(broker, "tidelog_open_files_limit") == hard


def test_partitions_beyond_what_the_descriptors_allow_are_refused_up_front(broker_factory):
    """512 descriptors: a quarter kept for sealed segments being read, connections and the rest,
    and one a partition (its active segment's .log; the indexes hold none) makes a capacity of
    384 partitions, the offsets topic's one included. Asking for more is POLICY_VIOLATION, as
    Kafka 4 refuses a CreateTopics over its own partition limit; nothing is created, and
    nothing ran out."""
    broker = broker_factory(nofile=(512, 512))
    assert metric(broker, "tidelog_partition_capacity") == 384
    assert "partition capacity 384" in broker.log()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert create_error(admin, NewTopic("too-many", 500, 1)) == POLICY_VIOLATION
    assert create_error(admin, NewTopic("too-many", 500, 1), validate_only=True) == POLICY_VIOLATION
    assert partition_dirs(broker, "too-many") == []
    assert create_error(admin, NewTopic("fits", 300, 1)) is None
    growth = admin.create_partitions([NewPartitions("fits", 400)], request_timeout=TIMEOUT_S)["fits"]
    with pytest.raises(Exception) as refused:
        growth.result(TIMEOUT_S)
    assert refused.value.args[0].code() == POLICY_VIOLATION
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        with pytest.raises(PolicyViolationError):
            kp.create_topics([KPNewTopic("too-many-kp", 100, 1)])
        with pytest.raises(PolicyViolationError):
            kp.create_partitions({"fits": KPNewPartitions(384)})
        kp.create_partitions({"fits": KPNewPartitions(383)})  # 383 + __consumer_offsets = 384
    finally:
        kp.close()
    assert len(partition_dirs(broker, "fits")) == 383
    assert " ERROR " not in broker.log()


def test_running_out_of_descriptors_mid_create_leaves_no_half_created_topic(broker_factory):
    """``max.broker.partitions`` set above what 256 descriptors hold: creating 300 partitions
    runs out of descriptors part way. The client gets KAFKA_STORAGE_ERROR, the partitions made
    so far are removed, the topic is not in the metadata, what ran out is logged once and
    counted, and a restart finds metadata and logs agreeing."""
    broker = broker_factory({"max.broker.partitions": "1000"}, nofile=(256, 256))
    assert "max.broker.partitions 1000 is above the 192 partitions" in broker.log()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert create_error(admin, NewTopic("small", 2, 1)) is None
    open_before = metric(broker, "tidelog_open_files")
    assert create_error(admin, NewTopic("huge", 300, 1)) == KAFKA_STORAGE_ERROR
    assert partition_dirs(broker, "huge") == []
    assert metric(broker, "tidelog_open_files") == open_before  # none leaked by the half-opened partition
    assert "huge" not in admin.list_topics(timeout=TIMEOUT_S).topics
    assert broker.log().count("out of file descriptors") == 1
    assert metric(broker, "tidelog_resource_exhausted_total", '{resource="file descriptors"}') == 1
    assert create_error(admin, NewTopic("after", 3, 1)) is None  # the descriptors came back
    broker.stop()
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    assert "huge" not in topics and len(topics["small"].partitions) == 2 and len(topics["after"].partitions) == 3
    assert partition_dirs(broker, "huge") == []
    wait_until(lambda: requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10).status_code == 200)


def test_partitions_on_disk_unknown_to_the_metadata_are_removed_at_start(broker_factory):
    """A crash between a creation's logs and its metadata (or a deletion's metadata and its
    logs) leaves partition directories of a topic the metadata does not have: the next start
    removes them, so disk and metadata agree."""
    broker = broker_factory()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert create_error(admin, NewTopic("kept", 2, 1)) is None
    broker.kill()
    ghost = broker.data_dir / "ghost-0"
    ghost.mkdir()
    (ghost / "00000000000000000000.log").write_bytes(b"")
    broker.restart()
    wait_until(lambda: "removing" in broker.log() and "ghost-0" in broker.log(), message="the removal logged")
    assert not ghost.exists()
    assert len(partition_dirs(broker, "kept")) == 2
    assert len(AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=TIMEOUT_S).topics["kept"].partitions) == 2


def test_connections_using_up_the_descriptors_show_in_ready_and_metrics(broker_factory):
    """Connections alone can use up the descriptors (the event loop then drops what it cannot
    accept): at 95% of the limit the broker logs it once, /ready answers 503 saying so and
    tidelog_resource_out is 1; when they close, all comes back."""
    broker = broker_factory(nofile=(256, 256))
    ready = f"http://127.0.0.1:{broker.metrics_port}/ready"
    baseline = metric(broker, "tidelog_open_files")
    connections = []
    try:
        for _ in range(int(256 * 0.97 - baseline)):
            connections.append(socket.create_connection(("127.0.0.1", broker.port), timeout=10))
        wait_until(lambda: metric(broker, "tidelog_connections") >= len(connections), message="every connection accepted")
        status = wait_until(lambda: (r := requests.get(ready, timeout=10)).status_code == 503 and r.json()["status"],
                            timeout_s=15, message="/ready 503")
        assert status.startswith("out of file descriptors: ")
        assert metric(broker, "tidelog_resource_out", '{resource="file descriptors"}') == 1
    finally:
        for sock in connections:
            sock.close()
    wait_until(lambda: requests.get(ready, timeout=10).status_code == 200, timeout_s=15, message="/ready 200 again")
    assert metric(broker, "tidelog_resource_out", '{resource="file descriptors"}') == 0
    assert broker.log().count("out of file descriptors") == 1
    assert "file descriptors available again" in broker.log()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (mounted as root), grown to 64 MiB by calling the returned function."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test (needs root): {mounted.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)

    try:
        yield mount_point, grow
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full(small_disk, tmp_path):
    """Producing until a 2 MiB file system is full: the producer gets KAFKA_STORAGE_ERROR (the
    log directory goes offline, as Kafka's does on an I/O error), /ready says the disk is full,
    a CreateTopics meanwhile creates nothing, and after a restart with room again every
    acknowledged record is there and metadata and logs agree."""
    from tests.brokerproc import BrokerProcess
    from tests.integration.test_bad_input import Conn, create_topic, produce
    from tidelog.protocol.records import build_batch

    mount_point, grow = small_disk
    broker = BrokerProcess(mount_point / "data", {"http.port": "0", "log.retention.check.interval.ms": "1000"})
    broker.log_path = tmp_path / "broker.log"  # not on the full disk
    try:
        broker.start()
        conn = Conn(broker)
        create_topic(conn, "fill")
        acknowledged = 0
        # Batches of one file system block, so that the disk is full (under 1% free) when a write fails.
        batch = build_batch([(None, b"x" * 1000, [])] * 4)
        for _ in range(1000):
            result = produce(conn, "fill", batch)
            if result.error_code != 0:
                break
            acknowledged += 4
        assert result.error_code == KAFKA_STORAGE_ERROR, result
        assert acknowledged > 0
        status = requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10)
        assert status.status_code == 503 and "No space left on device" in status.json()["status"]
        assert metric(broker, "tidelog_log_dir_offline") == 1
        assert metric(broker, "tidelog_resource_out", '{resource="disk space"}') == 1
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert create_error(admin, NewTopic("during", 2, 1)) == KAFKA_STORAGE_ERROR
        assert partition_dirs(broker, "during") == []
        assert broker.log().count("out of disk space") == 1
        broker.stop()
        grow()
        broker.restart()
        wait_until(lambda: requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10).status_code == 200,
                   message="/ready 200 after the restart")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        topics = admin.list_topics(timeout=TIMEOUT_S).topics
        assert "during" not in topics and partition_dirs(broker, "during") == []
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=5000)
        consumer.assign([KPTopicPartition("fill", 0)])
        records = [r for batch in iter(lambda: consumer.poll(2000, max_records=10000), {}) for r in sum(batch.values(), [])]
        consumer.close()
        print(f"{acknowledged} records acknowledged before the disk was full, {len(records)} read back after the restart")
        assert [r.offset for r in records][:acknowledged] == list(range(acknowledged))
        assert produce(Conn(broker), "fill", build_batch([(None, b"after", [])])).error_code == 0
    finally:
        broker.kill()


def test_create_topics_on_a_full_disk_creates_nothing(small_disk, tmp_path):
    """The disk filled by something else: CreateTopics cannot write the metadata, removes the
    partitions it made and answers KAFKA_STORAGE_ERROR; once there is room it works, and a
    restart finds no trace of the failed topic."""
    from tests.brokerproc import BrokerProcess

    mount_point, _grow = small_disk
    broker = BrokerProcess(mount_point / "data", {"http.port": "0", "log.retention.check.interval.ms": "1000"})
    broker.log_path = tmp_path / "broker.log"
    filler = mount_point / "filler"
    try:
        broker.start()
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert create_error(admin, NewTopic("no-room", 3, 1)) == KAFKA_STORAGE_ERROR
        assert partition_dirs(broker, "no-room") == []
        assert "no-room" not in admin.list_topics(timeout=TIMEOUT_S).topics
        ready = requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["status"].startswith("out of disk space: ")
        filler.unlink()
        assert create_error(admin, NewTopic("room", 3, 1)) is None
        wait_until(lambda: requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10).status_code == 200)
        broker.stop()
        broker.restart()
        topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=TIMEOUT_S).topics
        assert "no-room" not in topics and len(topics["room"].partitions) == 3
        assert partition_dirs(broker, "no-room") == []
    finally:
        broker.kill()


def test_out_of_memory_reading_a_request_closes_only_that_connection(broker):
    """The broker's address space capped 48 MiB above what it uses, then a 90 MiB request: its
    buffer cannot grow (MemoryError), so that connection is closed; the broker logs once that it
    ran out of memory, counts it, says so in /ready, and serves other clients meanwhile."""
    from tests.integration.test_bad_input import Conn

    pid = broker.proc.pid
    with open(f"/proc/{pid}/status") as status:
        vm_size_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = (vm_size_kib << 10) + (48 << 20)
    hard = resource.prlimit(pid, resource.RLIMIT_AS)[1]
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, hard))  # the soft limit: raised back below
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot set the broker's RLIMIT_AS: {e}")
    try:
        big = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        size = 90 << 20
        big.sendall(struct.pack(">i", size) + struct.pack(">hhih", 0, 9, 1, -1) + b"\0\0")
        chunk = bytes(1 << 20)
        with pytest.raises(OSError):  # reset or broken pipe once the broker closes it
            for _ in range(90):
                big.sendall(chunk)
            big.recv(1)  # nothing to read but the close
            raise ConnectionResetError("closed")
        other = Conn(broker)
        other.api_versions(0)
        ready = requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["status"].startswith("out of memory: ")
        assert metric(broker, "tidelog_resource_exhausted_total", '{resource="memory"}') == 1
        assert broker.log().count("out of memory") >= 1 and broker.log().count("ERROR tidelog.server.resources") == 1
        assert broker.alive
    finally:
        resource.prlimit(pid, resource.RLIMIT_AS, (hard, hard))


def test_sealed_segments_files_are_opened_to_be_read_and_closed_when_idle(broker_factory):
    """Issue 19, item 4: a partition holds one descriptor (its active segment); a consumer
    reading old segments opens theirs, and they close again once idle
    (log.segment.idle.close.ms), as the gauges show."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = broker_factory({"log.segment.idle.close.ms": "300"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert create_error(admin, NewTopic("rolled", 1, 1, config={"segment.bytes": "4096"})) is None
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(60):
        producer.produce("rolled", b"v" * 500, key=str(i).encode())
        producer.flush(TIMEOUT_S)
    assert len(list((broker.data_dir / "rolled-0").glob("*.log"))) > 5
    wait_until(lambda: metric(broker, "tidelog_open_segment_files") == 0, TIMEOUT_S, message="idle rolled segments closed")
    closed_before = metric(broker, "tidelog_segment_files_closed")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    consumer.assign([TopicPartition("rolled", 0, 0)])
    read = 0
    while read < 60:
        message = consumer.poll(TIMEOUT_S)
        assert message is not None and message.error() is None
        read += 1
    consumer.close()
    # The reads opened the sealed segments' files; idle for 300 ms, they close again.
    wait_until(lambda: metric(broker, "tidelog_segment_files_closed") > closed_before + 5, TIMEOUT_S,
               message="the segments read closed when idle")
    wait_until(lambda: metric(broker, "tidelog_open_segment_files") == 0, TIMEOUT_S, message="no sealed file left open")
