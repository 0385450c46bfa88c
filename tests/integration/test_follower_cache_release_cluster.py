"""Followers drop their flushed copies from the page cache in a real 3-broker cluster
(cluster/replica_manager.py ``_release_follower_copies``): records produced with acks=all by two
clients (confluent-kafka, kafka-python) are copied by the two followers, whose flushes make them
durable; each then drops them from the page cache but the last replica.page.cache.keep.bytes
(read with cachestat(2) on the segment file, and counted in
tidelog_follower_cache_released_bytes_total); the leader drops nothing. Then the leader is
SIGKILLed and both clients read every record back from the new leader, whose copies now come
from the disk."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CkPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_cluster_leadership import scrape
from tests.integration.test_cluster import create
from tests.unit.test_follower_cache_release import FOLIO, cached_pages

KEEP = 256 << 10
RECORD_BYTES = 8 << 10
RECORDS_EACH = 160  # 160 x 8 KiB from each client: ~2.6 MB a replica


def counted(broker, name: str) -> float:
    return scrape(broker).get((name, ()), 0.0)


def segment_file(broker, topic: str):
    (path,) = (broker.data_dir / f"{topic}-0").glob("*.log")
    return path


def cached_below(path, end: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return cached_pages(fd, 0, end)
    finally:
        os.close(fd)


def value(client: str, i: int) -> bytes:
    head = f"{client}-{i:05d}-".encode()
    return head + os.urandom(RECORD_BYTES - len(head))


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_followers_drop_their_flushed_copies_and_a_new_leader_reads_them_from_disk(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "replica.page.cache.keep.bytes": str(KEEP),
                                    "replica.flush.interval.ms": "200"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        leader = create(admin, "cached", 1, 3, **{"min.insync.replicas": "2"})[0].leader
        sent = []
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
        for i in range(RECORDS_EACH):
            sent.append(value("ck", i))
            producer.produce("cached", sent[-1], partition=0)
        assert producer.flush(30) == 0
        kp = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5, max_request_size=1 << 20)
        try:
            futures = []
            for i in range(RECORDS_EACH):
                sent.append(value("kp", i))
                futures.append(kp.send("cached", sent[-1], partition=0))
            for future in futures:
                future.get(timeout=30)
        finally:
            kp.close()
        followers = [b for node_id, b in cluster.brokers.items() if node_id != leader]
        for follower in followers:
            path = segment_file(follower, "cached")
            # Every copy there, flushed (on the 200 ms schedule) and dropped but the last KEEP.
            wait_until(lambda f=follower, p=path: p.stat().st_size >= len(sent) * RECORD_BYTES
                       and counted(f, "tidelog_follower_cache_released_bytes_total") >= p.stat().st_size - KEEP - 4096,
                       15, message="a follower's flushed copies dropped from the page cache")
            size = path.stat().st_size
            assert counted(follower, "tidelog_follower_cache_released_bytes_total") <= size - KEEP
            assert cached_below(path, size - KEEP - FOLIO) == 0, "a follower's flushed copies stayed cached"
        leader_broker = cluster.brokers[leader]
        assert counted(leader_broker, "tidelog_follower_cache_released_bytes_total") == 0
        leader_path = segment_file(leader_broker, "cached")
        leader_size = leader_path.stat().st_size
        assert cached_below(leader_path, leader_size) >= leader_size // 4096 - 1, "the leader's own log left the cache"

        leader_broker.kill()
        survivors = ",".join(f"127.0.0.1:{b.port}" for node_id, b in cluster.brokers.items() if node_id != leader)
        wait_until(lambda: AdminClient({"bootstrap.servers": survivors}).list_topics("cached", timeout=5)
                   .topics["cached"].partitions[0].leader not in (-1, leader), 30, message="a new leader")
        consumer = Consumer({"bootstrap.servers": survivors, "group.id": "g-ck", "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        read = []
        try:
            consumer.assign([CkPartition("cached", 0, 0)])
            wait_until(lambda: read.extend(m.value() for m in consumer.consume(100, 1) if not m.error())
                       or len(read) >= len(sent), 30, message="confluent-kafka read everything back")
        finally:
            consumer.close()
        assert read == sent
        kc = KafkaConsumer(bootstrap_servers=survivors, auto_offset_reset="earliest", enable_auto_commit=False,
                           consumer_timeout_ms=30_000)
        try:
            kc.assign([TopicPartition("cached", 0)])
            kc.seek(TopicPartition("cached", 0), 0)
            values = []
            for message in kc:
                values.append(message.value)
                if len(values) == len(sent):
                    break
        finally:
            kc.close()
        assert values == sent
    finally:
        cluster.stop()
