"""A KIP-848 member joining while the coordinator's disk is stuck (tests/fault/stuck_disk: every
flush of the broker waits while a file exists): its ConsumerGroupHeartbeat's group write times out
(offsets.commit.timeout.ms bounds it, the flush included) and is answered COORDINATOR_NOT_AVAILABLE,
as Kafka's GroupCoordinatorService maps a timed-out write; the client retries, and once the disk
answers the member joins and reads. Before, the heartbeat was answered NONE with an assignment
that was not durable (the member read while nothing of the group was stored).

The client: confluent-kafka (librdkafka) with group.protocol=consumer; records produced before
the disk sticks."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer, Producer

from tests.brokerproc import BrokerProcess, wait_until
from tests.fault.test_internal_write_stalls import stuck_disk_env

pytestmark = pytest.mark.slow

RECORDS = 5


class Member(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(name="member", daemon=True)
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.seen: list[bytes] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "group.protocol": "consumer",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "error_cb": lambda error: self.errors.append(str(error))})
        consumer.subscribe([self.topic])
        try:
            while not self.done.is_set():
                message = consumer.poll(0.05)
                if message is None:
                    continue
                if message.error():
                    self.errors.append(str(message.error()))
                else:
                    self.seen.append(message.value())
        finally:
            consumer.close()


@pytest.mark.timeout(120)
def test_a_join_whose_group_write_times_out_is_retried_and_joins_once_the_disk_answers(tmp_path, monkeypatch):
    hold = tmp_path / "hold-fsync"
    for name, value in stuck_disk_env(hold).items():
        monkeypatch.setenv(name, value)
    broker = BrokerProcess(tmp_path / "data", {"http.port": "0", "offsets.commit.timeout.ms": "1000",
                                               "num.partitions": "1"}).start()
    member = None
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(RECORDS):
            producer.produce("joined", value=b"r%d" % i)
        assert producer.flush(30) == 0
        hold.touch()  # the disk is stuck from here
        try:
            member = Member(broker.bootstrap, "stuck-joiners", "joined")
            member.start()
            wait_until(lambda: broker.log().count("consumer group stuck-joiners: cannot store group metadata") >= 2, 30,
                       message="the join's group write timing out, and the client's retry's")
            assert not member.seen, f"the member read with its membership not stored: {member.seen}"
        finally:
            hold.unlink()  # the disk answers again
        wait_until(lambda: len(member.seen) >= RECORDS, 30, message="the member reading once the disk answers")
        assert sorted(member.seen) == [b"r%d" % i for i in range(RECORDS)]
        assert not [e for e in member.errors if "UNKNOWN_SERVER_ERROR" in e or "Unknown broker error" in e], member.errors
        assert "UNKNOWN_SERVER_ERROR" not in broker.log()
    finally:
        hold.unlink(missing_ok=True)
        if member is not None:
            member.done.set()
            member.join(30)
        broker.stop()
