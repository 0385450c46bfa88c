"""A consumer group member whose coordinator stops answering for longer than its session.

The coordinator's broker (the leader of ``__consumer_offsets``-0) is stopped (SIGSTOP, as an
event loop stalled for 13 s was in test_cluster_chaos twice in session 12) while a
confluent-kafka consumer (librdkafka, classic protocol, the chaos test's reader settings:
session 6 s, a synchronous commit every 100 records) heartbeats and commits, and records keep
coming. The member's own session times out (librdkafka revokes its assignment, lost, and
rejoins), the coordinator moves (the stopped broker's lease lapses) and, resumed, the old
coordinator expires the member before it learns it moved. The member must rejoin wherever the
coordinator is and read every record: a coordinator that answered its heartbeats, commits or
joins wrongly after the expiry and the moves (or not at all) leaves it stuck. The member runs
in its own process; ``EXPIRY_MEMBER_DEBUG`` (librdkafka debug contexts, e.g.
``cgrp,consumer,protocol``) writes its debug log to ``member.log`` in the test's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow

TOPIC = "expiry"
PARTITIONS = 3
GROUP = "expiry-group"

# The member: prints "n" for each record (its value) and "commit <error>" for a failed commit.
MEMBER = r"""
import sys
from confluent_kafka import Consumer, KafkaException
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 6000, "max.poll.interval.ms": 300000,
                     "topic.metadata.refresh.interval.ms": 1000, **({"debug": sys.argv[4]} if len(sys.argv) > 4 else {})})
consumer.subscribe([sys.argv[3]])
uncommitted = 0
while True:
    message = consumer.poll(0.2)
    if message is None or message.error():
        continue
    print(int(message.value()), flush=True)
    uncommitted += 1
    if uncommitted >= 100:
        uncommitted = 0
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            print("commit", e.args[0].name(), flush=True)
"""


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, {"leader.imbalance.check.interval.seconds": "5", "offsets.commit.timeout.ms": "2000"}).start()
    yield cluster
    cluster.stop()


class Member:
    """The consumer process and what it has read."""

    def __init__(self, bootstrap: str, log_path) -> None:
        args = [sys.executable, "-c", MEMBER, bootstrap, GROUP, TOPIC]
        if os.environ.get("EXPIRY_MEMBER_DEBUG"):  # librdkafka debug contexts, e.g. cgrp,consumer,protocol
            args.append(os.environ["EXPIRY_MEMBER_DEBUG"])
        self.stderr = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr)
        self.seen: set[int] = set()
        self.commit_errors: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            text = line.decode().strip()
            if text.startswith("commit"):
                self.commit_errors.append(text)
            elif text:
                self.seen.add(int(text))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def coordinator(admin: AdminClient) -> int:
    try:
        return admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader
    except Exception:  # noqa: BLE001 - no metadata yet: ask again
        return -1


class Trickle(threading.Thread):
    """Records numbered from ``first`` produced steadily (so the member reads and commits all
    along) until ``stop``: ``next`` produced, ``acked`` acknowledged."""

    def __init__(self, bootstrap: str, first: int) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "message.timeout.ms": 120000})
        self.next = first
        self.acked = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def _delivered(self, err, _msg) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors.append(str(err))

    def run(self) -> None:
        while not self.stop.is_set():
            for _ in range(20):
                self.producer.produce(TOPIC, value=b"%d" % self.next, partition=self.next % PARTITIONS,
                                      on_delivery=self._delivered)
                self.next += 1
            self.producer.poll(0.05)
        self.producer.flush(120)


@pytest.mark.timeout(240)
def test_a_member_whose_coordinator_stopped_longer_than_its_session_rejoins_and_reads_on(cluster, tmp_path):
    """See the module docstring: stopped 9 s, longer than the session (6 s) and the lease (2 s)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(10)
    trickle = Trickle(cluster.bootstrap, 0)
    trickle.start()
    member = Member(cluster.bootstrap, tmp_path / "member.log")
    try:
        wait_until(lambda: len(member.seen) >= 1000, 60, interval_s=0.1, message="the member reading")
        stopped = wait_until(lambda: coordinator(admin) > 0 and coordinator(admin), 30, message="a coordinator")
        cluster.brokers[stopped].pause()
        time.sleep(9)  # the fault's length
        cluster.brokers[stopped].resume()
        wait_until(lambda: coordinator(admin) > 0, 60, interval_s=0.2, message="a coordinator again")
        resumed_at = trickle.acked
        wait_until(lambda: trickle.acked >= resumed_at + 1000, 60, interval_s=0.2,
                   message="records produced after the coordinator's stop")
        trickle.stop.set()
        trickle.join(150)
        assert not trickle.errors, trickle.errors[:3]
        produced = trickle.next
        wait_until(lambda: len(member.seen) == produced, 90, interval_s=0.2,
                   message=f"the member reading every record ({produced}) after the coordinator's stop")
    except BaseException:
        print(f"member read {len(member.seen)} of {trickle.next}; commit errors {member.commit_errors[-5:]}")
        print(cluster.logs())
        raise
    finally:
        trickle.stop.set()
        member.stop()
