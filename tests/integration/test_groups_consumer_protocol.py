"""The new consumer group protocol (KIP-848) with librdkafka (``group.protocol=consumer``):
server-side assignment, members leaving and failing, commits, exactly-once consumption across
rebalances, coexistence with a classic group, AdminClient describe, regex subscriptions and a
broker restart."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.brokerproc import wait_until
from tests.integration.group_clients import GROUP_SETTINGS, balanced, create_topic, partitions_of, poll_until

SESSION_TIMEOUT_MS = 2500
SETTINGS_848 = {
    **GROUP_SETTINGS,
    "group.consumer.heartbeat.interval.ms": "300",
    "group.consumer.min.heartbeat.interval.ms": "100",
    "group.consumer.session.timeout.ms": str(SESSION_TIMEOUT_MS),
    "group.consumer.min.session.timeout.ms": "1000",
}

# A consumer-protocol member in its own process (to be SIGKILLed): prints its assignment.
SUBPROCESS_CONSUMER = r"""
import sys
from confluent_kafka import Consumer
bootstrap, group, topic = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
def on_assign(consumer, partitions):
    print("ASSIGNED " + ",".join(str(p.partition) for p in partitions), flush=True)
c.subscribe([topic], on_assign=on_assign)
while True:
    c.poll(0.1)
"""


@pytest.fixture
def broker_848(broker_factory):
    return broker_factory(SETTINGS_848)


def consumer_848(bootstrap: str, group: str, **config) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False, **config})


def close_all(consumers) -> None:
    for c in consumers:
        c.close()


def test_three_members_get_two_partitions_each_then_one_closes(broker_848):
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "six")
    consumers = [consumer_848(bootstrap, "three") for _ in range(3)]
    try:
        for c in consumers:
            c.subscribe(["six"])
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="2 partitions each")
        assert sorted(len(partitions_of(c)) for c in consumers) == [2, 2, 2]
        assert set().union(*(partitions_of(c) for c in consumers)) == set(range(6))

        leaving = consumers.pop()
        kept = [partitions_of(c) for c in consumers]
        leaving.close()  # epoch -1
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), timeout_s=10,
                   message="the remaining two take over")
        assert sorted(len(partitions_of(c)) for c in consumers) == [3, 3]
        assert all(before <= partitions_of(c) for before, c in zip(kept, consumers))  # the uniform assignor is sticky
    finally:
        close_all(consumers)


def test_sigkilled_member_is_evicted_after_the_session_timeout(broker_848):
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "killed")
    proc = subprocess.Popen([sys.executable, "-c", SUBPROCESS_CONSUMER, bootstrap, "kill-848", "killed"],
                            stdout=subprocess.PIPE, text=True)
    survivors = [consumer_848(bootstrap, "kill-848") for _ in range(2)]
    try:
        first = proc.stdout.readline()
        assert first.startswith("ASSIGNED"), first
        for c in survivors:
            c.subscribe(["killed"])
        # Three members: the subprocess ends up with two partitions.
        poll_until(survivors, lambda: sum(len(partitions_of(c)) for c in survivors) == 4
                   and all(len(partitions_of(c)) == 2 for c in survivors), message="two partitions each")
        proc.kill()
        proc.wait()
        killed_at = time.monotonic()
        poll_until(survivors, lambda: balanced([partitions_of(c) for c in survivors]), timeout_s=15,
                   message="the survivors take the killed member's partitions")
        elapsed = time.monotonic() - killed_at
        assert elapsed >= SESSION_TIMEOUT_MS / 1000 * 0.8, elapsed  # not before the session timeout
        assert elapsed < SESSION_TIMEOUT_MS / 1000 + 8, elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        close_all(survivors)


def _consume(consumer: Consumer, count: int, timeout_s: float = 15.0) -> list:
    messages = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count:
        assert time.monotonic() < deadline, f"consumed {len(messages)} of {count}"
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error():
            messages.append(msg)
    return messages


def test_commit_then_resume(broker_848):
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "resume", per_partition=5)
    first = consumer_848(bootstrap, "resume-848")
    try:
        first.subscribe(["resume"])
        consumed = _consume(first, 12)
        first.commit(asynchronous=False)
        committed = {tp.partition: tp.offset for tp in first.committed(
            [TopicPartition("resume", p) for p in range(6)], timeout=10)}
    finally:
        first.close()
    expected = {}
    for msg in consumed:
        expected[msg.partition()] = max(expected.get(msg.partition(), 0), msg.offset() + 1)
    assert {p: o for p, o in committed.items() if o >= 0} == expected
    second = consumer_848(bootstrap, "resume-848")
    try:
        second.subscribe(["resume"])
        rest = _consume(second, 30 - 12)
        seen = {(m.partition(), m.offset()) for m in consumed} | {(m.partition(), m.offset()) for m in rest}
        assert len(seen) == 30 and len(consumed) + len(rest) == 30  # no record twice
    finally:
        second.close()


def test_every_record_consumed_exactly_once_across_joins_and_leaves(broker_848):
    """Each record counts once its commit succeeds; members join and leave mid-stream."""
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "once")
    total = 600
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(total):
        producer.produce("once", value=b"%d" % i, partition=i % 6)
    assert producer.flush(30) == 0
    # The group starts with offset 0 committed for every partition, so each owner starts from
    # OffsetFetch and never from auto.offset.reset: librdkafka (2.16) can rewind an active
    # partition to BEGINNING when a ListOffsets reply made outdated by the incremental
    # rebalance's pause and resume arms its 500 ms retry timer, which a later reply does not
    # cancel (debug "outdated offset response: (re)starting offset query timer", then "timed
    # offset query ... in state active": records re-read and counted twice, about 1 run in 20
    # under load). In those runs the reply came 0.4 s after its request: a ListOffsets waits
    # behind the connection's parked Fetch (fetch.wait.max.ms), as on a Kafka broker, which also
    # answers a connection's requests in turn.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    start = ConsumerGroupTopicPartitions("once-848", [TopicPartition("once", p, 0) for p in range(6)])
    admin.alter_consumer_group_offsets([start])["once-848"].result(30)
    seen: list[bytes] = []
    # Who counted each record, for the failure message: (value, member, partition, offset, when).
    counted: list[tuple[bytes, int, int, int, float]] = []
    stale = []
    started = time.monotonic()

    def member():
        c = consumer_848(bootstrap, "once-848", **{"max.partition.fetch.bytes": 200})
        c.subscribe(["once"])
        return c

    def commit(c: Consumer, msg) -> bool:
        """Commit after processing; a commit refused with STALE_MEMBER_EPOCH (the epoch moved on in
        flight) is retried while the partition is still ours, and given up once it moved away (its
        next owner re-reads the record from the last commit)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                c.commit(message=msg, asynchronous=False)
                return True
            except KafkaException as e:
                stale.append(e.args[0].name())
                owned = {(tp.topic, tp.partition) for tp in c.assignment()}
                if (msg.topic(), msg.partition()) not in owned or time.monotonic() > deadline:
                    return False
                time.sleep(0.05)

    def consume(consumers, until, timeout_s=15):
        deadline = time.monotonic() + timeout_s
        while len(seen) < until:
            assert time.monotonic() < deadline, f"consumed {len(seen)} of {until}; commit errors {stale}"
            for c in consumers:
                msg = c.poll(0.02)
                if msg is None or msg.error():
                    continue
                if commit(c, msg):
                    seen.append(msg.value())
                    counted.append((msg.value(), members.index(c), msg.partition(), msg.offset(),
                                    round(time.monotonic() - started, 3)))

    consumers = [member(), member()]
    members = list(consumers)  # every member ever, by the index the failure message names
    try:
        consume(consumers, 150)
        consumers.append(member())
        members.append(consumers[-1])
        consume(consumers, 300)
        consumers.pop(0).close()
        consume(consumers, total + 6)  # and the 6 records create_topic wrote
    finally:
        close_all(consumers)
    expected = [b"%d" % i for i in range(total)] + [b"%d-0" % p for p in range(6)]
    twice = {value for value in seen if seen.count(value) > 1}
    assert sorted(seen) == sorted(expected), (
        f"missing {sorted(set(expected) - set(seen))[:20]}; counted twice (value, member, partition, offset, s): "
        f"{sorted([entry for entry in counted if entry[0] in twice], key=lambda e: (e[0], e[4]))[:60]}; commit errors {stale}")


def test_classic_and_consumer_protocol_groups_coexist(broker_848):
    from kafka import KafkaConsumer

    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "both", per_partition=2)
    modern = consumer_848(bootstrap, "modern")
    classic = KafkaConsumer("both", bootstrap_servers=bootstrap, group_id="classic", auto_offset_reset="earliest",
                            enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=300)
    try:
        modern.subscribe(["both"])
        modern_values = [m.value() for m in _consume(modern, 12)]
        classic_values = []
        deadline = time.monotonic() + 15
        while len(classic_values) < 12:
            assert time.monotonic() < deadline, classic_values
            for records in classic.poll(timeout_ms=100).values():
                classic_values += [r.value for r in records]
        assert sorted(modern_values) == sorted(classic_values)
        modern.commit(asynchronous=False)
        classic.commit()

        admin = AdminClient({"bootstrap.servers": bootstrap})
        listed = admin.list_consumer_groups().result(10)
        types = {g.group_id: str(g.type) for g in listed.valid}
        assert "CONSUMER" in types["modern"] and "CLASSIC" in types["classic"], types
        # A classic request on the consumer group's id is refused, as Kafka does.
        intruder = Consumer({"bootstrap.servers": bootstrap, "group.id": "modern", "session.timeout.ms": 6000,
                             "enable.auto.commit": False})
        try:
            intruder.subscribe(["both"])
            errors = []
            deadline = time.monotonic() + 10
            while not errors and time.monotonic() < deadline:
                msg = intruder.poll(0.1)
                if msg is not None and msg.error():
                    errors.append(msg.error())
            assert errors and "INCONSISTENT_GROUP_PROTOCOL" in errors[0].name(), errors
        finally:
            intruder.close()
    finally:
        modern.close()
        classic.close()


def test_describe_list_and_delete_with_admin_client(broker_848):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "desc")
    consumers = [consumer_848(bootstrap, "described", **{"client.id": f"member-{i}"}) for i in range(2)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        for c in consumers:
            c.subscribe(["desc"])
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="3 partitions each")

        def described():
            for c in consumers:
                c.poll(0.05)
            return admin.describe_consumer_groups(["described"])["described"].result(10)

        wait_until(lambda: described().state == ConsumerGroupState.STABLE, 10)
        description = described()
        assert description.type == ConsumerGroupType.CONSUMER
        assert description.partition_assignor == "uniform"
        assert sorted(m.client_id for m in description.members) == ["member-0", "member-1"]
        assigned = sorted(tp.partition for m in description.members for tp in m.assignment.topic_partitions)
        assert assigned == list(range(6))
        assert {tp.topic for m in description.members for tp in m.assignment.topic_partitions} == {"desc"}

        listed = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(10)
        assert [g.group_id for g in listed.valid] == ["described"]
        # Deleting a group with members is refused; once they left, it works.
        with pytest.raises(KafkaException, match="NON_EMPTY_GROUP"):
            admin.delete_consumer_groups(["described"])["described"].result(10)
        close_all(consumers)
        consumers = []
        wait_until(lambda: admin.describe_consumer_groups(["described"])["described"].result(10).state
                   == ConsumerGroupState.EMPTY, 10)
        admin.delete_consumer_groups(["described"])["described"].result(10)
        assert admin.list_consumer_groups().result(10).valid == []
    finally:
        close_all(consumers)


def test_regex_subscription_picks_up_new_topics(broker_848):
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "rx-one", partitions=6)
    consumer = consumer_848(bootstrap, "regex-848", **{"topic.metadata.refresh.interval.ms": 500})
    try:
        consumer.subscribe(["^rx-.*"])
        poll_until([consumer], lambda: {tp.topic for tp in consumer.assignment()} == {"rx-one"},
                   message="rx-one assigned")
        create_topic(bootstrap, "rx-two", partitions=6)
        create_topic(bootstrap, "other", partitions=6)
        poll_until([consumer], lambda: {tp.topic for tp in consumer.assignment()} == {"rx-one", "rx-two"},
                   message="rx-two assigned too")
        assert len(consumer.assignment()) == 12
    finally:
        consumer.close()


def test_assignments_survive_a_broker_restart(broker_848):
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "restart")
    consumers = [consumer_848(bootstrap, "restart-848") for _ in range(2)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        for c in consumers:
            c.subscribe(["restart"])
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="3 partitions each")
        before = admin.describe_consumer_groups(["restart-848"])["restart-848"].result(10)
        members_before = {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
                          for m in before.members}
        broker_848.kill()
        broker_848.restart()
        admin = AdminClient({"bootstrap.servers": broker_848.bootstrap})
        after = admin.describe_consumer_groups(["restart-848"])["restart-848"].result(10)
        assert {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
                for m in after.members} == members_before
        # The members keep heartbeating with their epochs: nobody is fenced, nothing moves.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for c in consumers:
                c.poll(0.05)
        final = admin.describe_consumer_groups(["restart-848"])["restart-848"].result(10)
        assert {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
                for m in final.members} == members_before
    finally:
        close_all(consumers)


def test_static_member_restart_gets_its_partitions_back(broker_848):
    bootstrap = broker_848.bootstrap
    create_topic(bootstrap, "static")
    other = consumer_848(bootstrap, "static-848")
    static = consumer_848(bootstrap, "static-848", **{"group.instance.id": "instance-1"})
    consumers = [other, static]
    try:
        for c in consumers:
            c.subscribe(["static"])
        poll_until(consumers, lambda: balanced([partitions_of(c) for c in consumers]), message="3 partitions each")
        held, others = partitions_of(static), partitions_of(other)
        static.close()  # a static member leaves with epoch -2: its partitions wait for it
        consumers.remove(static)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            other.poll(0.05)
        assert partitions_of(other) == others
        static = consumer_848(bootstrap, "static-848", **{"group.instance.id": "instance-1"})
        consumers.append(static)
        static.subscribe(["static"])
        poll_until(consumers, lambda: partitions_of(static) == held, timeout_s=10, message="the same partitions back")
        assert partitions_of(other) == others
    finally:
        close_all(consumers)
