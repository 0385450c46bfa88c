"""A broker whose loop stalled past a record's acquisition lock (here: SIGSTOP) must not release the
record while the ShareAcknowledge its consumer sent in time waits, unread, in the socket: the
lock-timer twin of tests/fault/test_share_session_stall.py (tidelog/session_timer.py says why). A
loop runs its due timers before it polls its sockets, so at SIGCONT the lock expired first, the
acknowledgement then failed (INVALID_RECORD_STATE) and the record was delivered again: a duplicate
for the user, and one delivery more towards the delivery-count limit.

Kafka's acquisition lock is a timer task too (SharePartition.AcquisitionLockTimerTask), and an
acknowledgement that reaches a record no longer Acquired fails the same way; an acknowledgement
sent before the deadline is not one that came late, which is what this test holds us to.

The client: confluent-kafka's ShareConsumer (librdkafka), explicit acknowledgement, commit_sync
(a ShareAcknowledge) sent while the broker is stopped."""

from __future__ import annotations

import datetime
import signal
import threading
import time
import uuid

import pytest
from confluent_kafka import AcknowledgeType, Producer

from tests.integration.share_clients import create_topic, metric, share_consumer, wait_for

pytestmark = pytest.mark.slow

LOCK_MS = 3000  # seconds of margin between the acquisition and the acknowledgement at load
STOP_S = 4.5  # longer than the lock, shorter than the client's request timeout and the share session
SETTINGS = {
    "group.share.min.record.lock.duration.ms": "1000",
    "group.share.record.lock.duration.ms": str(LOCK_MS),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("partitions", [1, 3])
def test_an_acknowledgement_waiting_in_the_socket_keeps_the_record_after_a_stall(broker_factory, partitions):
    """With 3 partitions the ShareAcknowledge acknowledges a record of each."""
    broker = broker_factory(SETTINGS)
    topic, group = "lock-stall", "lock-stall-group"
    create_topic(broker.bootstrap, topic, partitions)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    consumer = share_consumer(broker.bootstrap, group, [topic], **{"share.acknowledgement.mode": "explicit"})
    try:
        seen: list[tuple[bytes, int]] = []

        def take() -> list:
            messages = [m for m in consumer.poll(0.1) or () if not m.error()]
            seen.extend((m.value(), m.delivery_count()) for m in messages)
            return messages

        # a share group starts at the latest offset: produce until the consumer reads, then settle
        warm = wait_for(lambda: [producer.produce(topic, value=b"warm", partition=p) for p in range(partitions)]
                        and producer.flush(10) == 0 and take(), 30, "the consumer's first records")
        for message in warm:
            consumer.acknowledge(message, AcknowledgeType.ACCEPT)
        consumer.commit_sync(30)
        for partition in range(partitions):
            producer.produce(topic, value=b"held", partition=partition)
        assert producer.flush(10) == 0
        held: list = []  # (with any "warm" records still coming)
        wait_for(lambda: held.extend(take()) or [m.value() for m in held].count(b"held") == partitions, 30,
                 "the held records")
        received = time.monotonic()
        broker.proc.send_signal(signal.SIGSTOP)
        outcome: dict = {}

        def commit() -> None:  # the ShareAcknowledge goes out now, well inside the lock
            try:
                for message in held:
                    consumer.acknowledge(message, AcknowledgeType.ACCEPT)
                outcome["results"] = consumer.commit_sync(30)
            except BaseException as e:  # reported below
                outcome["error"] = e

        committer = threading.Thread(target=commit, name="commit", daemon=True)
        try:
            committer.start()
            time.sleep(STOP_S)  # the fault's length: the lock runs out while the acknowledgement waits
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        assert time.monotonic() - received > LOCK_MS / 1000, "the stop did not outlast the lock"
        committer.join(40)
        assert not committer.is_alive(), "commit_sync did not return"
        assert "error" not in outcome, outcome["error"]
        failed = {tp: error for tp, error in outcome["results"].items() if error is not None}
        assert not failed, f"the acknowledgement sent in time was refused after the stall: {failed}"
        # The record is not delivered again: what comes next is the next record alone.
        wait_for(lambda: (producer.produce(topic, value=b"next", partition=0), producer.flush(10))
                 and any(m.value() == b"next" for m in take()), 30, "the consumer reading on after the stop")
        assert [v for v, _ in seen].count(b"held") == partitions, f"an acknowledged record came again: {seen}"
        assert metric(broker, "tidelog_share_group_records_total", group=group, event="lock_expired") == 0
        assert "ShareManager._on_timer runs" in broker.log()  # the lock timer acted after the stall, late
        assert metric(broker, "tidelog_share_group_records_total", group=group, event="acknowledged") >= 1
    finally:
        consumer.close()


def _share_fetch(connection, group: str, member: str, topic_id, epoch: int, partitions: int,
                 acks: dict[int, list[tuple[int, int]]] | None = None):
    from kio.schema.share_fetch.v1 import request as fetch

    return fetch.ShareFetchRequest(
        group_id=group, member_id=member, share_session_epoch=epoch, max_wait=datetime.timedelta(milliseconds=200),
        min_bytes=1, max_bytes=1 << 20, max_records=100, batch_size=100,
        topics=(fetch.FetchTopic(topic_id=topic_id, partitions=tuple(
            fetch.FetchPartition(partition_index=p, acknowledgement_batches=tuple(
                fetch.AcknowledgementBatch(first_offset=first, last_offset=last, acknowledge_types=(1,))  # ACCEPT
                for first, last in (acks or {}).get(p, ())))
            for p in range(partitions))),),
        forgotten_topics_data=())


@pytest.mark.timeout(120)
def test_acknowledgements_in_a_share_fetch_waiting_in_the_socket_keep_their_records(broker_factory):
    """The piggy-backed way (what an implicitly acknowledging consumer sends): the
    acknowledgements of three partitions in the ShareFetch sent during the stop, one connection
    (the ShareFetch handler applies them in a task of their own). Raw requests: no client lets a
    test choose when its next ShareFetch goes out."""
    from kio.schema.metadata.v12 import request as metadata
    from kio.schema.share_group_heartbeat.v1.request import ShareGroupHeartbeatRequest

    from tests.integration.sasl_requests import KafkaConnection

    broker = broker_factory(SETTINGS)
    topic, group, member, partitions = "piggy-stall", "piggy-stall-group", str(uuid.uuid4()), 3
    create_topic(broker.bootstrap, topic, partitions)
    with KafkaConnection(broker.bootstrap) as fetcher, KafkaConnection(broker.bootstrap) as coordinator:
        topic_id = fetcher.request(3, 12, metadata.MetadataRequest(
            topics=(metadata.MetadataRequestTopic(topic_id=None, name=topic),), allow_auto_topic_creation=False,
            include_topic_authorized_operations=False)).topics[0].topic_id
        joined = coordinator.request(76, 1, ShareGroupHeartbeatRequest(
            group_id=group, member_id=member, member_epoch=0, rack_id=None, subscribed_topic_names=(topic,)))
        assert joined.error_code == 0, joined
        epoch = 0
        opened = fetcher.request(78, 1, _share_fetch(fetcher, group, member, topic_id, epoch, partitions))
        assert opened.error_code == 0, opened  # the session; the share-partitions start at the log end
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for p in range(partitions):
            producer.produce(topic, value=b"held", partition=p)
        assert producer.flush(10) == 0
        acquired: dict[int, list[tuple[int, int]]] = {}

        def fetched() -> bool:
            nonlocal epoch
            epoch += 1
            answer = fetcher.request(78, 1, _share_fetch(fetcher, group, member, topic_id, epoch, partitions))
            assert answer.error_code == 0, answer
            for t in answer.responses:
                for part in t.partitions:
                    assert part.error_code == 0, part
                    acquired.setdefault(part.partition_index, []).extend(
                        (r.first_offset, r.last_offset) for r in part.acquired_records)
            return all(acquired.get(p) for p in range(partitions))

        wait_for(fetched, 30, "a record of each partition acquired")
        received = time.monotonic()
        outcome: dict = {}

        def send() -> None:  # the acknowledgements go out now, well inside the locks
            try:
                outcome["answer"] = fetcher.request(78, 1, _share_fetch(fetcher, group, member, topic_id, epoch + 1,
                                                                        partitions, acquired))
            except BaseException as e:  # reported below
                outcome["error"] = e

        broker.proc.send_signal(signal.SIGSTOP)
        sender = threading.Thread(target=send, name="share-fetch", daemon=True)
        try:
            sender.start()
            time.sleep(STOP_S)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        assert time.monotonic() - received > LOCK_MS / 1000, "the stop did not outlast the locks"
        sender.join(30)
        assert "error" not in outcome, outcome["error"]
        answer = outcome["answer"]
        assert answer.error_code == 0, answer
        errors = {p.partition_index: p.acknowledge_error_code for t in answer.responses for p in t.partitions}
        assert errors == {p: 0 for p in range(partitions)}, \
            f"acknowledgements sent in time were refused after the stall: {errors}"
        assert metric(broker, "tidelog_share_group_records_total", group=group, event="lock_expired") == 0
        assert metric(broker, "tidelog_share_group_records_total", group=group, event="acknowledged") == partitions
