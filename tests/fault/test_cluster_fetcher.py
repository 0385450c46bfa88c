"""The replica fetcher (real brokers, real etcd): it validates what it copies, so a batch
corrupted on the leader's disk (one flipped byte, its CRC-32C no longer matching) stays on one
broker instead of spreading to every replica; and it backs off from a dead leader, logging
the change of state rather than every retry."""

from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tidelog.protocol.records import BATCH_HEADER_SIZE, batch_crc_ok, parse_batch_header

pytestmark = pytest.mark.slow

TOPIC = "copied"


def batches(path):
    """(file position, header, CRC ok) of each whole batch in a segment file."""
    data = path.read_bytes()
    found, pos = [], 0
    while pos + BATCH_HEADER_SIZE <= len(data):
        info = parse_batch_header(data, pos)
        if info.size < BATCH_HEADER_SIZE or pos + info.size > len(data):
            break
        found.append((pos, info, batch_crc_ok(data, info, pos)))
        pos += info.size
    return found


def segment(cluster: Cluster, broker_id: int):
    return cluster.brokers[broker_id].data_dir / f"{TOPIC}-0" / "00000000000000000000.log"


def produce(bootstrap: str, first: int, count: int, acks: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0})
    errors = []
    for n in range(first, first + count):
        producer.produce(TOPIC, value=b"%d" % n, partition=0, on_delivery=lambda err, _: err and errors.append(err))
        producer.flush(10)  # one batch a record: the corrupt one sits between good ones
    assert not errors, errors


def leader_and_follower(cluster: Cluster) -> tuple[int, int]:
    """TOPIC created on a 2-broker cluster (1 partition, 2 replicas) with a full ISR: its leader's
    and its follower's ids."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 2)])[TOPIC].result(10)
    wait_until(lambda: len(admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0].isrs) == 2, 15,
               message="a full ISR")
    leader = admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0].leader
    return leader, next(i for i in cluster.brokers if i != leader)


def test_a_batch_corrupted_on_the_leader_is_not_copied(tmp_path):
    cluster = Cluster(tmp_path, 2).start()
    try:
        leader, follower = leader_and_follower(cluster)
        produce(cluster.bootstrap, 0, 5, "all")
        cluster.brokers[follower].kill()
        produce(cluster.brokers[leader].bootstrap, 5, 10, "1")

        # Flip one byte inside the records of the batch at offset 8, on the leader's disk.
        position, info, _ = next(b for b in batches(segment(cluster, leader)) if b[1].base_offset == 8)
        with open(segment(cluster, leader), "r+b") as f:
            f.seek(position + info.size - 2)
            byte = f.read(1)
            f.seek(position + info.size - 2)
            f.write(bytes([byte[0] ^ 0xFF]))

        cluster.brokers[follower].restart()
        wait_until(lambda: "not appending what leader" in cluster.brokers[follower].log()
                   or any(b[1].base_offset >= 8 for b in batches(segment(cluster, follower))),
                   30, message="the follower fetching the corrupt batch")
        copied = batches(segment(cluster, follower))
        assert all(ok for _, _, ok in copied), "the follower appended a batch whose CRC does not match"
        assert [b[1].base_offset for b in copied] == list(range(8))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_a_dead_leader_is_retried_with_back_off_and_logged_once(tmp_path):
    """Until a killed leader's lease lapses (4 s here) every survivor's fetcher for it fails
    to connect: that is logged when it starts, not at every retry (it was ~10 lines a second)."""
    cluster = Cluster(tmp_path, 3, {"broker.session.timeout.ms": "4000"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 3, 3)])[TOPIC].result(10)
        partitions = lambda: admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions.values()  # noqa: E731
        wait_until(lambda: all(len(p.isrs) == 3 for p in partitions()) and {p.leader for p in partitions()} == {1, 2, 3},
                   15, message="full ISRs, broker 1 leading a partition")
        # Both followers must be fetching from broker 1 before it dies: with the brokers started
        # side by side a follower can try broker 1 before it listens, and a fetcher counts that
        # failure until a Fetch of its comes back; an acks=all record on broker 1's partition
        # needs one from each.
        led = next(p.id for p in partitions() if p.leader == 1)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        errors = []
        producer.produce(TOPIC, value=b"before the kill", partition=led, on_delivery=lambda err, _: errors.append(err))
        assert producer.flush(15) == 0 and errors == [None], errors
        survivors = [cluster.brokers[2], cluster.brokers[3]]
        skip = [len(b.log_path.read_text().splitlines()) for b in survivors]
        cluster.brokers[1].kill()
        admin = AdminClient({"bootstrap.servers": f"{survivors[0].bootstrap},{survivors[1].bootstrap}"})
        wait_until(lambda: all(p.leader in (2, 3) for p in partitions()), 15, interval_s=0.2,
                   message="the controller moving broker 1's leadership")
        for broker, old in zip(survivors, skip):
            lines = [line for line in broker.log_path.read_text().splitlines()[old:] if "fetcher for leader 1" in line]
            assert 1 <= len(lines) <= 3, "\n".join(lines)
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_a_leader_that_dies_right_after_it_is_reached_again_gets_a_warning_again(tmp_path):
    """The recovery is logged when the leader first answers, not when a Fetch (a long poll) comes
    back: a leader that dies while it holds the first Fetch after a recovery must be logged again
    (its WARNING came only at the next failure after a Fetch had returned; a death within the
    long poll was a DEBUG line). replica.fetch.wait.max.ms of 12 s widens that window to kill it in.
    SIGSTOP fails the follower's Fetch by its timeout (12 + 10 s) with the leader still live (60 s
    lease), so the leadership does not move meanwhile."""
    cluster = Cluster(tmp_path, 2, {"broker.session.timeout.ms": "60000", "replica.fetch.wait.max.ms": "12000"}).start()
    try:
        leader_id, follower_id = leader_and_follower(cluster)
        leader, follower = cluster.brokers[leader_id], cluster.brokers[follower_id]
        produce(cluster.bootstrap, 0, 1, "all")  # the follower fetches from the leader now
        skip = len(follower.log_path.read_text().splitlines())

        def lines(what: str) -> list[str]:
            return [line for line in follower.log_path.read_text().splitlines()[skip:]
                    if f"fetcher for leader {leader_id}" in line and what in line]

        leader.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: lines("WARNING"), 60, message="the follower's first WARNING")
        finally:
            leader.proc.send_signal(signal.SIGCONT)
        # Its Fetch sent after the failure is answered at once (no long poll while failing): logged then.
        wait_until(lambda: lines("reached it again"), 6, message="the recovery logged at the leader's first answer")
        leader.kill()
        wait_until(lambda: len(lines("WARNING")) == 2, 30, message="a WARNING for the leader's death")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
