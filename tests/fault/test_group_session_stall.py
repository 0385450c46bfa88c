"""defect14: a broker whose loop stalled past a member's session timeout (here: SIGSTOP) must
not expire the member whose heartbeat is waiting, unread, in its socket.

A loop runs its due timers before it polls its sockets (uvloop, in every iteration), so at
SIGCONT every session that lapsed during the stop expired before the heartbeats sent meanwhile
were read: the group rebalanced (a new generation, the member rejoined under a new id) for a
member that had heartbeated all along. Both tests failed before (the broker logged 'failed (no
heartbeat within 2000 ms)' and the generation moved); a session timer that falls due now lets
the loop read its sockets first (groups/timers.py ``SessionTimer``).

The clients: kafka-python on the classic protocol (its heartbeat thread keeps one Heartbeat in
flight and, its session passed without an answer, looks the coordinator up again without
leaving the group) and confluent-kafka on KIP-848 (the session is the broker's alone). A
classic librdkafka member is not tested this way: it times its own session out (no answer
within session.timeout.ms: it drops its member id and rejoins), so a stop longer than the
session rebalances it whatever the broker does.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import pytest
from confluent_kafka import Producer

from tests.brokerproc import BrokerProcess, wait_until
from tests.integration.group_clients import GROUP_SETTINGS, create_topic

pytestmark = pytest.mark.slow

SESSION_MS = 2000
STOP_S = 3.5  # the fault's length: longer than the session, shorter than any client's request timeout
SETTINGS = {
    **GROUP_SETTINGS,
    "group.consumer.heartbeat.interval.ms": "200",
    "group.consumer.min.heartbeat.interval.ms": "100",
    "group.consumer.session.timeout.ms": str(SESSION_MS),
    "group.consumer.min.session.timeout.ms": "1000",
}


class Member(threading.Thread):
    """One group member polling in this thread; ``seen`` holds the values it read."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(name=f"member-{client}", daemon=True)
        self.client, self.bootstrap, self.group, self.topic = client, bootstrap, group, topic
        self.seen: set[bytes] = set()
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            if self.client == "kafka-python":
                self._kafka_python()
            else:
                self._confluent_848()
        except BaseException as e:  # reported by the test
            self.error = e

    def _kafka_python(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 session_timeout_ms=SESSION_MS, heartbeat_interval_ms=200)
        while not self.done.is_set():
            for records in consumer.poll(timeout_ms=50).values():
                self.seen.update(r.value for r in records)
        consumer.close()

    def _confluent_848(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "group.protocol": "consumer",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([self.topic])
        while not self.done.is_set():
            message = consumer.poll(0.05)
            if message is not None and not message.error():
                self.seen.add(message.value())
        consumer.close()


def group_view(broker: BrokerProcess, group: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/api/v1/groups/{group}", timeout=10) as r:
        return json.loads(r.read())


def membership(broker: BrokerProcess, group: str) -> tuple[int, list[str]]:
    view = group_view(broker, group)
    return view["generation_id"], [m["member_id"] for m in view["members"]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", ["kafka-python", "confluent-848"])
def test_a_heartbeat_waiting_in_the_socket_keeps_the_member_after_a_stall(broker_factory, client):
    broker = broker_factory(SETTINGS)
    topic, group = f"stall-{client}", f"stall-group-{client}"
    create_topic(broker.bootstrap, topic)
    member = Member(client, broker.bootstrap, group, topic)
    member.start()
    try:
        wait_until(lambda: len(member.seen) == 6, 30, message=f"the {client} member reading the topic")
        wait_until(lambda: group_view(broker, group)["state"].lower() == "stable", 15, message="a stable group")
        before = membership(broker, group)
        assert len(before[1]) == 1, before
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(STOP_S)  # the fault's length: the member's session lapses while its heartbeat waits
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce(topic, value=b"after", partition=0)
        assert producer.flush(30) == 0
        # A session that expired did so at SIGCONT, before this record could be fetched.
        wait_until(lambda: b"after" in member.seen, 30, message=f"the {client} member reading on after the stop")
        assert not member.error, member.error
        after = membership(broker, group)
        expiries = [line for line in broker.log().splitlines() if "no heartbeat within" in line or " left" in line]
        assert after == before and not expiries, f"the member was expired and the group rebalanced: {before} -> {after}, {expiries}"
    finally:
        member.done.set()
        member.join(30)
