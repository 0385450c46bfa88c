"""writes15: a transaction marker's write (WriteTxnMarkers, and the coordinator's own markers on
this broker) is bounded by its timeout as a whole, the flush included, as the coordinators' other
writes are (stall14). The wait for durability had no timeout (only the ISR's part had one): a
marker whose flush did not end (a stuck disk, a job queued behind a slow one) held the marker
channel's request to this broker, and every transaction queued behind it, as long; the
transactions stayed in PrepareCommit/PrepareAbort and their partitions' LSO where it was.

Failed before (still waiting after 5 s with a 200 ms timeout). Now the write answers
REQUEST_TIMED_OUT within its timeout; the channel retries it with its bounded back-off (Kafka's
TransactionMarkerChannelManager retries a marker until it is written), logs one WARNING for the
episode whatever the number of retries and transactions, queues at most one request per
transaction, and once the flush ends the marker is written and the transaction's partition is
stable again. The coordinator's CompleteCommit/CompleteAbort writes that time out are retried with
one WARNING an episode too; a leader that moved is an INFO, not a WARNING."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.waiters import wait_for_acks
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.fsync import FsyncWorker
from tidelog.txn import log_records
from tidelog.txn.marker_writer import write_markers
from tidelog.txn.markers import MarkerEntry, TransactionMarkerChannel
from tidelog.txn.state import TopicPartition

from .test_fsync_worker import eventually, gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import NODE, run
from .test_txn_coordinator import A0, B0, E, settle, with_producer
from .test_txn_coordinator import run as run_coordinator
from .test_txn_partition_hooks import txn_batch

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")

TOPIC = "orders"
PIDS = (7, 8)


class Replicas:
    """What write_markers asks of the ReplicaManager: the partitions it leads and the logs."""

    def __init__(self, partitions: dict, logs) -> None:
        self.partitions = partitions
        self.logs = logs

    def leader(self, topic: str, index: int) -> Partition:
        partition = self.partitions.get((topic, index))
        if partition is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{index}")
        return partition

    async def wait_for_acks(self, appended, required_acks: int, timeout_s: float) -> list[ErrorCode]:
        """ReplicaManager.wait_for_acks (the wait a Produce makes: its timeout for the ISR only)."""
        return await wait_for_acks(appended, required_acks, timeout_s, self.logs)


class LocalSender:
    """The MarkerSender of a single broker: every partition is led here (ClusterMarkerSender's local path)."""

    def __init__(self, replicas: Replicas, timeout_s: float) -> None:
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.requests = 0

    def leader_of(self, partition: TopicPartition) -> int:
        return NODE

    async def send(self, broker_id: int, markers: list[MarkerEntry]):
        self.requests += 1
        return await write_markers(self.replicas, markers, self.timeout_s)


async def open_transactions(logs, partitions) -> Partition:
    """A partition led here with an open transaction of each of PIDS, durable (the new directory's
    first flush goes through the Python threads, not the gated worker)."""
    partition = partitions[(TOPIC, 0)] = Partition(TOPIC, 0, logs.create(TOPIC, 0), logs, NODE, PartitionConfig())
    partition.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
    for pid in PIDS:
        appended = partition.append_as_leader(txn_batch(pid, 0), required_acks=-1)
    assert await asyncio.wait_for(partition.wait_acknowledged(appended.end_offset, -1, 5), 5) == ErrorCode.none
    assert partition.last_stable_offset == 0
    return partition


def entry(pid: int) -> MarkerEntry:
    return MarkerEntry(pid, 0, 0, True, (TopicPartition(TOPIC, 0),))


def test_a_marker_write_whose_flush_does_not_end_times_out_by_its_timeout(tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        partition = await open_transactions(logs, partitions)
        replicas = Replicas(partitions, logs)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:  # its fsync held at the gate
            results = await asyncio.wait_for(write_markers(replicas, [entry(PIDS[0])], 0.2), 5)
        finally:
            gate.release(1000)  # the flush ends (the logs' close waits for it)
        assert results == {(PIDS[0], TopicPartition(TOPIC, 0)): ErrorCode.request_timed_out}
        assert loop.time() - started < 2
        results = await asyncio.wait_for(write_markers(replicas, [entry(PIDS[1])], 5), 5)
        assert results == {(PIDS[1], TopicPartition(TOPIC, 0)): ErrorCode.none}
        assert partition.high_watermark == partition.log.log_end_offset

    run(main, tmp_path)


def test_the_channel_retries_stuck_markers_with_one_warning_and_writes_them_once_the_flush_ends(
        tmp_path, gate, caplog):  # noqa: F811
    async def main(logs, partitions):
        partition = await open_transactions(logs, partitions)
        sender = LocalSender(Replicas(partitions, logs), 0.1)
        channel = TransactionMarkerChannel(sender, retry_backoff_ms=10, max_retry_backoff_ms=40)
        caplog.set_level(logging.DEBUG, logger="tidelog.txn")
        written: list[tuple[int, TopicPartition]] = []
        writes = [asyncio.ensure_future(channel.write(entry(pid), lambda tp, pid=pid: written.append((pid, tp))))
                  for pid in PIDS]
        try:
            await eventually(lambda: channel.retries >= 6)  # both transactions' markers, timed out, retried
            assert not any(w.done() for w in writes) and written == []
            assert channel.queued <= len(PIDS)  # one entry per transaction at most, never one per retry
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert "REQUEST_TIMED_OUT" in warnings[0].getMessage() and f"broker {NODE}" in warnings[0].getMessage()
        finally:
            gate.release(1000)  # the flush ends
        assert await asyncio.wait_for(asyncio.gather(*writes), 5) == [True, True]
        assert sorted(written) == [(pid, TopicPartition(TOPIC, 0)) for pid in PIDS]
        await eventually(lambda: partition.last_stable_offset == partition.log.log_end_offset)
        assert any(r.levelno == logging.INFO and "written again" in r.getMessage() for r in caplog.records)
        await channel.close()

    run(main, tmp_path)


def test_completions_that_time_out_are_retried_with_one_warning_for_the_episode(caplog):
    """The CompleteCommit write after the markers (``__transaction_state`` answering
    REQUEST_TIMED_OUT, mapped to COORDINATOR_NOT_AVAILABLE) is retried with back-off; one WARNING
    for the episode, whatever the retries and transactions, INFO once one is written again."""
    async def main():
        coordinator, parts, log, _, pid = await with_producer("tx")
        other = (await coordinator.init_producer_id("other", 30_000)).producer_id
        for transactional_id, producer_id, tp in (("tx", pid, A0), ("other", other, B0)):
            assert await coordinator.add_partitions(transactional_id, producer_id, 0, [tp]) is E.none
            parts.produce(tp, producer_id, 0)
        failing = [4]

        async def completions_time_out(partition: int, records, timeout_ms: int) -> None:
            state = log_records.decode_value(records[0][1]).state.kafka_name
            if state == "CompleteCommit" and failing[0] > 0:
                failing[0] -= 1
                raise KafkaError(E.request_timed_out, "not durable in time")
            await log.append(partition, records, timeout_ms)

        coordinator.state_manager._append_state = completions_time_out
        caplog.set_level(logging.DEBUG, logger="tidelog.txn")
        assert await coordinator.end_txn("tx", pid, 0, committed=True) is E.none
        assert await coordinator.end_txn("other", other, 0, committed=True) is E.none
        await settle(coordinator)
        assert failing == [0] and log.states()[-2:] == ["CompleteCommit", "CompleteCommit"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "COORDINATOR_NOT_AVAILABLE" in warnings[0], warnings
        assert any("transaction completions written again after 4 failed attempts" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.INFO)

    run_coordinator(main())


def test_a_leader_moving_is_logged_at_info_once_and_a_timeout_after_it_still_warns(caplog):
    """NOT_LEADER_OR_FOLLOWER (a failover's ordinary course) is an INFO once an episode; a
    REQUEST_TIMED_OUT later in the same episode still gets its one WARNING."""

    class Answers:
        def __init__(self, errors: list[ErrorCode]) -> None:
            self.errors = errors

        def leader_of(self, partition: TopicPartition) -> int:
            return NODE

        async def send(self, broker_id: int, markers: list[MarkerEntry]):
            error = self.errors.pop(0) if self.errors else ErrorCode.none
            return {(m.producer_id, tp): error for m in markers for tp in m.partitions}

    async def main():
        caplog.set_level(logging.DEBUG, logger="tidelog.txn")
        moved = Answers([ErrorCode.not_leader_or_follower] * 3)
        channel = TransactionMarkerChannel(moved, retry_backoff_ms=1, max_retry_backoff_ms=2)
        assert await asyncio.wait_for(channel.write(entry(PIDS[0])), 5)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 1
        caplog.clear()
        channel.sender = Answers([ErrorCode.not_leader_or_follower] + [ErrorCode.request_timed_out] * 3)
        assert await asyncio.wait_for(channel.write(entry(PIDS[1])), 5)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "REQUEST_TIMED_OUT" in warnings[0], warnings
        assert any("written again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)

    asyncio.run(main())
