"""A broker whose loop stalled past a share-group member's session timeout (here: SIGSTOP) must
not expire the member whose heartbeat is waiting, unread, in its socket: the share-group twin of
tests/fault/test_group_session_stall.py (classic and KIP-848 groups; groups/timers.py
``SessionTimer``). A loop runs its due timers before it polls its sockets, so at SIGCONT a share
session that lapsed during the stop expired before the ShareGroupHeartbeat sent meanwhile was
read: the member was removed ('failed (no heartbeat within ...)') and rejoined under a new epoch.

The client: confluent-kafka's ShareConsumer (librdkafka), which heartbeats every 200 ms here."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from confluent_kafka import Producer
from kio.schema.share_group_describe.v1.request import ShareGroupDescribeRequest

from tests.brokerproc import wait_until
from tests.integration.share_clients import create_topic, request, share_consumer

pytestmark = pytest.mark.slow

SESSION_MS = 2000
STOP_S = 3.5  # longer than the session, shorter than the client's request timeout
SETTINGS = {
    "group.share.session.timeout.ms": str(SESSION_MS),
    "group.share.min.session.timeout.ms": "1000",
    "group.share.heartbeat.interval.ms": "200",
    "group.share.min.heartbeat.interval.ms": "100",
}


class Member(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(name="share-member", daemon=True)
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.seen: set[bytes] = set()
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            consumer = share_consumer(self.bootstrap, self.group, [self.topic])
            try:
                while not self.done.is_set():
                    for message in consumer.poll(0.05) or ():  # a list of messages
                        if not message.error():
                            self.seen.add(message.value())
            finally:
                consumer.close()
        except BaseException as e:  # reported by the test
            self.error = e


def membership(bootstrap: str, group: str) -> tuple[str, int, list[tuple[str, int]]]:
    """The group's state, epoch and (member id, member epoch) pairs, as ShareGroupDescribe gives them."""
    [described] = request(bootstrap, 77, 1, ShareGroupDescribeRequest(
        group_ids=(group,), include_authorized_operations=False)).groups
    assert described.error_code == 0, described
    return described.group_state, described.group_epoch, sorted((m.member_id, m.member_epoch) for m in described.members)


@pytest.mark.timeout(120)
def test_a_share_heartbeat_waiting_in_the_socket_keeps_the_member_after_a_stall(broker_factory):
    broker = broker_factory(SETTINGS)
    topic, group = "share-stall", "share-stall-group"
    create_topic(broker.bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    member = Member(broker.bootstrap, group, topic)
    member.start()
    try:
        # a share group starts at the latest offset: produce until the member reads one
        wait_until(lambda: (producer.produce(topic, value=b"before", partition=0), producer.flush(10))
                   and b"before" in member.seen, 30, message="the member reading the topic")
        assert "no heartbeat within" not in broker.log()
        before = membership(broker.bootstrap, group)
        assert before[0] == "Stable" and len(before[2]) == 1, before
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(STOP_S)  # the fault's length: the member's session lapses while its heartbeat waits
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        producer.produce(topic, value=b"after", partition=0)
        assert producer.flush(30) == 0
        wait_until(lambda: b"after" in member.seen, 30, message="the member reading on after the stop")
        assert not member.error, member.error
        expiries = [line for line in broker.log().splitlines() if "no heartbeat within" in line]
        assert not expiries, f"the share member was expired after the stall: {expiries}"
        # No rebalance either: the same member at the same epoch (a removal and rejoin moved the
        # group epoch 1 -> 3 and the member's with it, stall14's run before the fix).
        after = membership(broker.bootstrap, group)
        assert after == before, f"the group rebalanced over the stall: {before} -> {after}"
    finally:
        member.done.set()
        member.join(30)
