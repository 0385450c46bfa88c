"""Followers' write-behind in a real 3-broker cluster (review12): records produced with acks=all by
two clients (confluent-kafka, kafka-python) are copied by the two followers, each of which starts
their write-back as they add up to replica.write.behind.bytes (cluster/replica_manager.py
write_behind), counted in tidelog_follower_write_behind_bytes_total on the followers' /metrics;
the leader, which follows nothing, counts none. Nothing fails."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaProducer

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_cluster_leadership import scrape
from tests.integration.test_cluster import create
from tidelog.cluster import replica_manager

RECORD = b"w" * (16 << 10)
RECORDS_EACH = 12  # 12 x 16 KiB from each client: ~384 KiB a follower, several 64 KiB write-backs


def counted(broker, name: str) -> float:
    return scrape(broker).get((name, ()), 0.0)


@pytest.mark.skipif(replica_manager.sync_file_range is None, reason="no sync_file_range(2) here")
def test_followers_start_the_write_back_of_their_copies_and_count_it(tmp_path):
    cluster = Cluster(tmp_path, 3, {"http.port": "0"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        leader = create(admin, "behind", 1, 3)[0].leader
        # One record a request, each acknowledged before the next: each follower's fetch brings
        # about one record (a fetch of more than 4 x 64 KiB would be left to the flush).
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0})
        for _ in range(RECORDS_EACH):
            producer.produce("behind", RECORD, partition=0)
            assert producer.flush(30) == 0
        kp = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=0, max_request_size=1 << 20)
        try:
            for _ in range(RECORDS_EACH):
                kp.send("behind", RECORD, partition=0).get(timeout=30)
        finally:
            kp.close()
        followers = [b for node_id, b in cluster.brokers.items() if node_id != leader]
        produced = 2 * RECORDS_EACH * len(RECORD)
        for follower in followers:
            # Its last fetch's write-back runs a loop turn after the append: wait for the count.
            wait_until(lambda f=follower: counted(f, "tidelog_follower_write_behind_bytes_total") >= produced // 2,
                       15, message="a follower's copies written back as they came")
            assert counted(follower, "tidelog_follower_write_behind_bytes_total") <= produced + (64 << 10)
            assert counted(follower, "tidelog_follower_write_behind_failures_total") == 0
        assert counted(cluster.brokers[leader], "tidelog_follower_write_behind_bytes_total") == 0
    finally:
        cluster.stop()
