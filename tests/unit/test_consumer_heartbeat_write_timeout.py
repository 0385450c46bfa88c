"""A KIP-848 ConsumerGroupHeartbeat whose group-metadata write failed (timed out: the
__consumer_offsets write not durable and in its ISR within offsets.commit.timeout.ms) answers
an error the clients retry, as Kafka's GroupCoordinatorService maps a failed write
(REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, UNKNOWN_TOPIC_OR_PARTITION: COORDINATOR_NOT_AVAILABLE;
NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR: NOT_COORDINATOR), never NONE for a change that is not
durable nor UNKNOWN_SERVER_ERROR; the client's retry writes the group again and is answered once
that is durable. Failed before: the failure was logged and the heartbeat answered NONE, and its
retry, finding nothing changed in memory, answered NONE without writing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidelog.groups import consumer_protocol
from tidelog.groups.consumer_group import decode_group_snapshot
from tidelog.groups.records import decode_consumer_group_value
from tidelog.protocol.errors import ErrorCode, KafkaError

from .test_consumer_group_848 import TOPICS, MemoryLog, make_coordinator


class FlakyLog(MemoryLog):
    """A GroupLog whose writes raise ``failure`` while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: BaseException | None = None

    async def write(self, records):
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        self.records.extend(records)


FAILURES = [
    (KafkaError(ErrorCode.request_timed_out, "__consumer_offsets write not replicated: request_timed_out"),
     ErrorCode.coordinator_not_available),
    (KafkaError(ErrorCode.coordinator_not_available, "__consumer_offsets write not replicated: not_enough_replicas"),
     ErrorCode.coordinator_not_available),
    (KafkaError(ErrorCode.not_coordinator, "__consumer_offsets write not replicated: not_leader_or_follower"),
     ErrorCode.not_coordinator),
    (OSError(5, "Input/output error"), ErrorCode.coordinator_not_available),
]


@pytest.mark.parametrize("failure,expected", FAILURES, ids=["timed-out", "not-enough-replicas", "moved", "os-error"])
def test_a_heartbeat_whose_write_failed_answers_a_retriable_error_and_its_retry_writes(failure, expected):
    async def scenario():
        log = FlakyLog()
        c = make_coordinator(log)

        def beat(member_epoch: int, owned):
            return c.consumer.heartbeat("g", "m1", member_epoch, rebalance_timeout_ms=30000,
                                        subscribed_topic_names=["orders"], owned=owned, topics=TOPICS)

        log.failure = failure
        failed = await beat(0, {})
        assert failed.error == expected, failed
        assert not log.records
        log.failure = None
        retried = await beat(0, {})  # the client's retry: the same join
        assert retried.error == ErrorCode.none and retried.member_epoch >= 1, retried
        assert log.records, "the retry was answered without writing the group"
        # A later heartbeat that changes nothing does not write: the failing log does not touch it.
        epoch, owned = retried.member_epoch, retried.assignment
        log.failure = failure
        written = len(log.records)
        again = await beat(epoch, owned)
        assert again.error == ErrorCode.none and len(log.records) == written, again  # nothing to write: no error
        c.stop()

    asyncio.run(scenario())


async def _joined_then_failing():
    """A coordinator whose member m1 joined group g, then its __consumer_offsets writes fail
    (REQUEST_TIMED_OUT) until ``log.failure`` is cleared: (log, coordinator)."""
    log = FlakyLog()
    c = make_coordinator(log)
    joined = await c.consumer.heartbeat("g", "m1", 0, rebalance_timeout_ms=30000,
                                        subscribed_topic_names=["orders"], owned={}, topics=TOPICS)
    assert joined.error == ErrorCode.none
    log.failure = KafkaError(ErrorCode.request_timed_out, "__consumer_offsets write not replicated")
    return log, c


def test_a_leave_whose_write_failed_answers_a_retriable_error():
    async def scenario():
        log, c = await _joined_then_failing()
        left = await c.consumer.heartbeat("g", "m1", -1, topics=TOPICS)

        def retries_failed() -> list:  # a condition, not a sleep: a loaded machine may run fewer retries in 0.2 s
            return [r for r in caplog.records if r.name == "tidelog.groups.consumer_protocol"
                    and r.levelname == "DEBUG" and "cannot store" in r.getMessage()]
        assert left.error == ErrorCode.coordinator_not_available, left
        # The member is gone here already: the leave's retry finds no member, and the removal is
        # stored with the group's next write (another member joining).
        log.failure = None
        retried = await c.consumer.heartbeat("g", "m1", -1, topics=TOPICS)
        assert retried.error == ErrorCode.unknown_member_id, retried
        other = await c.consumer.heartbeat("g", "m2", 0, rebalance_timeout_ms=30000,
                                           subscribed_topic_names=["orders"], owned={}, topics=TOPICS)
        assert other.error == ErrorCode.none, other
        stored = decode_group_snapshot("g", decode_consumer_group_value(log.records[-1][1]))
        assert set(stored.members) == {"m2"}, stored.members
        c.stop()

    asyncio.run(scenario())


def test_a_join_whose_write_failed_leaves_no_member_behind():
    """Kafka drops a join with its failed write: a v0 client (the coordinator names the member)
    retries under a new member id, and a static member's retry must not find its instance
    taken (UNRELEASED_INSTANCE_ID)."""
    async def scenario():
        log = FlakyLog()
        c = make_coordinator(log)
        log.failure = KafkaError(ErrorCode.request_timed_out, "__consumer_offsets write not replicated")
        failed = await c.consumer.heartbeat("g", "", 0, rebalance_timeout_ms=30000, subscribed_topic_names=["orders"],
                                            owned={}, topics=TOPICS, api_version=0)
        assert failed.error == ErrorCode.coordinator_not_available, failed
        assert not c.consumer.groups["g"].members
        static = await c.consumer.heartbeat("g", "s1", 0, instance_id="i1", rebalance_timeout_ms=30000,
                                            subscribed_topic_names=["orders"], owned={}, topics=TOPICS)
        assert static.error == ErrorCode.coordinator_not_available, static
        log.failure = None
        retried = await c.consumer.heartbeat("g", "s1", 0, instance_id="i1", rebalance_timeout_ms=30000,
                                             subscribed_topic_names=["orders"], owned={}, topics=TOPICS)
        assert retried.error == ErrorCode.none, retried
        assert list(c.consumer.groups["g"].members) == ["s1"] and log.records
        c.stop()

    asyncio.run(scenario())


def test_a_static_takeover_whose_write_failed_answers_as_before_and_is_written_next():
    async def scenario():
        log = FlakyLog()
        c = make_coordinator(log)

        def beat(member_id: str, epoch: int, owned=None):
            return c.consumer.heartbeat("g", member_id, epoch, instance_id="i1", rebalance_timeout_ms=30000,
                                        subscribed_topic_names=["orders"], owned=owned, topics=TOPICS)

        assert (await beat("s1", 0, {})).error == ErrorCode.none
        assert (await beat("s1", -2)).error == ErrorCode.none  # leaves for a while
        log.failure = KafkaError(ErrorCode.request_timed_out, "__consumer_offsets write not replicated")
        taken = await beat("s2", 0, {})
        assert taken.error == ErrorCode.none and list(c.consumer.groups["g"].members) == ["s2"], taken
        log.failure = None
        written = len(log.records)
        again = await beat("s2", taken.member_epoch, taken.assignment)
        assert again.error == ErrorCode.none and len(log.records) == written + 1, again  # written again
        c.stop()

    asyncio.run(scenario())


def test_a_failed_write_nobody_retries_is_written_again_after_a_back_off(monkeypatch, caplog):
    """robust16: a leave whose write failed removed the member in memory only, and the removal was
    written with the group's next write: with no member heartbeating, never, and after a
    coordinator failover the member was back (holding its partitions until its session timeout).
    Now the coordinator writes the group again after a back-off (doubling, capped) until it is
    stored; the failure logged once, the retries' failures DEBUG, one INFO once it is stored.
    Failed before: nothing written however long it waited."""
    monkeypatch.setattr(consumer_protocol, "WRITE_RETRY_FIRST_S", 0.02, raising=False)

    async def scenario():
        log, c = await _joined_then_failing()
        caplog.clear()
        left = await c.consumer.heartbeat("g", "m1", -1, topics=TOPICS)

        def retries_failed() -> list:  # a condition, not a sleep: a loaded machine may run fewer retries in 0.2 s
            return [r for r in caplog.records if r.name == "tidelog.groups.consumer_protocol"
                    and r.levelname == "DEBUG" and "cannot store" in r.getMessage()]
        assert left.error == ErrorCode.coordinator_not_available, left
        written = len(log.records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(retries_failed()) < 2:  # retried (back-off 20, 40 ms): still failing
            assert loop.time() < deadline, "the failed write was not retried"
            await asyncio.sleep(0.01)
        assert len(log.records) == written
        log.failure = None  # the disk is back; nobody heartbeats
        deadline = loop.time() + 10
        while len(log.records) == written:
            assert loop.time() < deadline, "the failed write was never written again"
            await asyncio.sleep(0.01)
        stored = decode_group_snapshot("g", decode_consumer_group_value(log.records[-1][1]))
        assert set(stored.members) == set(), stored.members
        assert not c.consumer.groups["g"].failed_write
        lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tidelog.groups.consumer_protocol"
                 and ("store" in r.getMessage())]
        assert [level for level, _ in lines if level not in ("DEBUG",)] == ["WARNING", "INFO"], lines
        assert len([level for level, _ in lines if level == "DEBUG"]) >= 2, lines  # the retries that failed
        await asyncio.sleep(0.1)
        assert len(log.records) == written + 1  # written once: the retries stop
        c.stop()

    with caplog.at_level(logging.DEBUG, logger="tidelog.groups.consumer_protocol"):
        asyncio.run(scenario())
