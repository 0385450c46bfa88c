"""Consumer group rebalances with real clients: balanced assignments, members leaving, failing
(SIGKILL), mixed client libraries, static membership and cooperative-sticky."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.brokerproc import wait_until
from tests.integration.group_clients import (
    GROUP_SETTINGS,
    ThreadMember,
    balanced,
    confluent_consumer,
    create_topic,
    partitions_of,
    poll_until,
    subprocess_args,
)


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(GROUP_SETTINGS)


def test_three_consumers_share_six_partitions_then_one_leaves(group_broker):
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, "six")
    consumers = [confluent_consumer(bootstrap, "three") for _ in range(3)]
    try:
        for c in consumers:
            c.subscribe(["six"])
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="2 partitions each")
        assert all(len(partitions_of(c)) == 2 for c in consumers)

        leaving = consumers.pop()
        left_at = time.monotonic()
        leaving.close()  # sends LeaveGroup
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), timeout_s=10,
                   message="the remaining two take over")
        assert time.monotonic() - left_at < 10  # well inside the rebalance timeout (max.poll.interval.ms)
        assert all(len(partitions_of(c)) == 3 for c in consumers)
    finally:
        for c in consumers:
            c.close()


def test_sigkilled_consumer_is_evicted_after_its_session_timeout(group_broker):
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, "killed")
    session_ms = 2000
    proc = subprocess.Popen(subprocess_args(bootstrap, "kill-group", "killed", session_ms),
                            stdout=subprocess.PIPE, text=True)
    survivors = [confluent_consumer(bootstrap, "kill-group", **{"session.timeout.ms": 6000}) for _ in range(2)]
    try:
        first = proc.stdout.readline()  # the subprocess alone gets every partition first
        assert first.startswith("ASSIGNED"), first
        for c in survivors:
            c.subscribe(["killed"])
        poll_until(survivors, lambda: all(len(partitions_of(c)) == 2 for c in survivors),
                   message="three-way split with the subprocess")
        proc.kill()
        proc.wait()
        killed_at = time.monotonic()
        poll_until(survivors, lambda: balanced([partitions_of(c) for c in survivors]), timeout_s=15,
                   message="eviction of the killed consumer")
        evicted_after = time.monotonic() - killed_at
        # Not before its session timeout (the broker cannot know earlier), and soon after it.
        assert session_ms / 1000 * 0.8 <= evicted_after < session_ms / 1000 + 8, evicted_after
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        for c in survivors:
            c.close()


def test_one_consumer_of_each_client_library_share_the_partitions(group_broker):
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, "mixed")
    members = [ThreadMember(client, bootstrap, "mixed-group", "mixed").start()
               for client in ("confluent", "kafka-python", "aiokafka")]
    try:
        wait_until(lambda: any(m.error for m in members) or balanced([m.assignment for m in members]), timeout_s=20,
                   message="three libraries with 2 partitions each")
        assert not [m.error for m in members if m.error]
        assert [len(m.assignment) for m in members] == [2, 2, 2]
    finally:
        for m in members:
            m.stop()
    assert not [m.error for m in members if m.error]


def test_static_member_restart_keeps_its_assignment_without_rebalance(group_broker):
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, "static")
    revoked: list = []

    def static(instance):
        return confluent_consumer(bootstrap, "static-group", **{"group.instance.id": instance, "session.timeout.ms": 10000})

    a, b = static("a"), static("b")
    b.subscribe(["static"], on_revoke=lambda _c, parts: revoked.extend(parts))
    a.subscribe(["static"])
    consumers = [a, b]
    try:
        poll_until(consumers, lambda: balanced([partitions_of(a), partitions_of(b)]), message="static split")
        before_a, before_b = partitions_of(a), partitions_of(b)
        revoked.clear()
        a.close()  # static members leave no LeaveGroup: the broker keeps a's place for the session timeout
        consumers = [b]
        a2 = static("a")
        a2.subscribe(["static"])
        consumers = [a2, b]
        poll_until(consumers, lambda: partitions_of(a2) == before_a, timeout_s=10, message="a's old partitions back")
        for _ in range(10):  # b keeps polling a while: no rebalance reaches it
            b.poll(0.05)
        assert partitions_of(b) == before_b and revoked == []
    finally:
        for c in consumers:
            c.close()


def test_cooperative_sticky_moves_only_what_must_move(group_broker):
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, "coop")
    revoked: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def member(i):
        c = confluent_consumer(bootstrap, "coop-group", **{"partition.assignment.strategy": "cooperative-sticky"})
        c.subscribe(["coop"], on_revoke=lambda _c, parts: revoked[i].extend(p.partition for p in parts))
        return c

    consumers = [member(0), member(1)]
    try:
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="3 + 3")
        before = [partitions_of(c) for c in consumers]
        revoked[0].clear(), revoked[1].clear()
        consumers.append(member(2))
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="2 + 2 + 2")
        after = [partitions_of(c) for c in consumers]
        # Each old member gave up exactly one partition and kept the rest; the newcomer got those two.
        assert after[0] <= before[0] and after[1] <= before[1]
        assert sorted(revoked[0] + revoked[1]) == sorted((before[0] - after[0]) | (before[1] - after[1]))
        assert len(revoked[0]) == 1 and len(revoked[1]) == 1
        assert after[2] == set(revoked[0] + revoked[1])
    finally:
        for c in consumers:
            c.close()


def test_every_record_consumed_exactly_once_across_rebalances(group_broker):
    """Consumers commit after each record; members join and leave mid-stream; nothing is lost or repeated."""
    from confluent_kafka import Producer

    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, "once")
    total = 600
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(total):
        producer.produce("once", value=b"%d" % i, partition=i % 6)
    assert producer.flush(30) == 0
    seen: list[bytes] = []

    def member():
        c = confluent_consumer(bootstrap, "once-group", **{"max.partition.fetch.bytes": 200})
        c.subscribe(["once"])
        return c

    def consume(consumers, until, timeout_s=15):
        deadline = time.monotonic() + timeout_s
        while len(seen) < until:
            assert time.monotonic() < deadline, f"consumed {len(seen)} of {until}"
            for c in consumers:
                msg = c.poll(0.02)
                if msg is not None and not msg.error():
                    c.commit(message=msg, asynchronous=False)
                    seen.append(msg.value())

    consumers = [member(), member()]
    try:
        consume(consumers, 150)
        consumers.append(member())
        consume(consumers, 300)
        consumers.pop(0).close()
        consume(consumers, total + 6)  # and the 6 records create_topic wrote
    finally:
        for c in consumers:
            c.close()
    assert sorted(seen) == sorted([b"%d" % i for i in range(total)] + [b"%d-0" % p for p in range(6)])
