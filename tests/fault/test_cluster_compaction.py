"""A follower that was down while its leader compacted catches up through the gaps compaction
left (batches removed, offsets kept), rejoins the ISR, and holds the same valid compaction.

Three real brokers and etcd; the follower is SIGKILLed, the others take acks=all records and
the leader cleans them; the follower restarts and fetches from its log end offset, which lies
in the cleaned part of the leader's log.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.integration.test_compaction import assert_valid_compaction, produced_log
from tests.unit.test_log_cleaner import read_all
from tidelog.storage.log import LogConfig, PartitionLog

pytestmark = pytest.mark.slow

TOPIC = "compacted-replicated"


def test_a_follower_catches_up_through_the_gaps_of_a_compacted_leader(tmp_path):
    cluster = Cluster(tmp_path, 3, settings={"log.cleaner.backoff.ms": "100"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        configs = {"cleanup.policy": "compact", "segment.bytes": "2000", "min.cleanable.dirty.ratio": "0.01",
                   "min.insync.replicas": "1"}
        admin.create_topics([NewTopic(TOPIC, 1, 3, config=configs)])[TOPIC].result(15)

        def partition():
            return admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0]

        wait_until(lambda: partition().leader > 0 and len(partition().isrs) == 3, 20, message="a full ISR")
        leader = partition().leader
        follower = next(b for b in (1, 2, 3) if b != leader)
        cluster.brokers[follower].kill()
        produced = produced_log("confluent", cluster.bootstrap, TOPIC,
                                [(b"key-%d" % (i % 9), b"value-%d-" % i + b"v" * 60) for i in range(400)])
        wait_until(lambda: f"{TOPIC}-0: cleaned" in cluster.brokers[leader].log(), 30, message="the leader to clean")
        cluster.brokers[follower].start()
        wait_until(lambda: follower in partition().isrs, 30, message="the follower back in the ISR")
        assert "leaves a gap" not in cluster.brokers[follower].log()
    finally:
        cluster.stop()
    logs = {}
    for node_id in (leader, follower):
        log = PartitionLog.open(tmp_path / f"broker-{node_id}" / f"{TOPIC}-0", TOPIC, 0, LogConfig(), recover=True)
        logs[node_id] = read_all(log)
        log.close()
    for records in logs.values():
        assert_valid_compaction(records, produced)
    assert len(logs[follower]) < 200, "the follower has what the leader compacted, not every record"
