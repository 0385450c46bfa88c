"""The Partition in process: appends as leader, the high watermark, the ISR, acks waits, reads,
and a follower's side, over a real LogManager in a temporary directory."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig, wait_for_acks, wait_for_data
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import (InvalidBatch, build_batch, iter_records, parse_batch_header, set_base_offset,
                                      set_partition_leader_epoch)
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager

NODE = 1


class RecordingIsrWriter:
    """Applies ISR changes as the metadata store would, when the test says so."""

    def __init__(self, shutting_down: set[int] = frozenset()) -> None:
        self.requests: list[tuple[Partition, tuple[int, ...]]] = []
        self.shutting_down = shutting_down

    def may_join_isr(self, replica_id: int, broker_epoch: int = -1) -> bool:
        return replica_id not in self.shutting_down

    def change_isr(self, partition: Partition, isr: tuple[int, ...]) -> None:
        partition.pending_isr = isr
        self.requests.append((partition, isr))

    def complete(self) -> None:
        for partition, isr in self.requests:
            partition.isr_written(partition.state.changed(isr=isr))
        self.requests = []


def batch(count: int = 3, producer_id: int = -1, base_sequence: int = -1, key: bytes | None = b"k") -> memoryview:
    records = [(key, b"value-%d" % i, []) for i in range(count)]
    return memoryview(bytearray(build_batch(records, producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                                            base_sequence=base_sequence)))


def run(coroutine_function, tmp_path, durability: str = "throughput", **kwargs):
    """Run ``coroutine_function(logs)`` with a started LogManager of ``durability``."""

    async def main():
        logs = LogManager(tmp_path, LogConfig(durability=durability, flush_interval_ms=5))
        logs.open_all({})
        # What the ReplicaManager does: a flush that moved a log's durable offset tells its partition.
        logs.partitions = {}
        logs.on_durable = lambda log: logs.partitions[(log.topic, log.partition)].on_local_flush()
        await logs.start()
        try:
            return await coroutine_function(logs, **kwargs)
        finally:
            await logs.close()

    return asyncio.run(main())


def leader(logs: LogManager, replicas=(NODE,), isr=None, config: PartitionConfig = PartitionConfig(),
           isr_writer=None, leader_epoch: int = 0) -> Partition:
    log = logs.create("t", 0)
    partition = logs.partitions[("t", 0)] = Partition("t", 0, log, logs, NODE, config, isr_writer or RecordingIsrWriter())
    partition.make_leader(PartitionState(tuple(replicas), NODE, leader_epoch, tuple(isr if isr is not None else replicas)))
    return partition


def test_a_single_replica_acknowledges_as_soon_as_durable_under_throughput(tmp_path):
    async def main(logs):
        partition = leader(logs)
        result = partition.append_as_leader(batch(3))
        assert (result.base_offset, result.end_offset, result.duplicate) == (0, 3, False)
        assert partition.high_watermark == 3  # the ISR is this broker: its log end is the watermark
        assert await wait_for_acks([(partition, result.end_offset)], -1, 1.0, logs) == [ErrorCode.none]
        read = partition.read(0, 1 << 20, True)
        assert read.error == ErrorCode.none and read.high_watermark == 3
        assert [r.offset for r in iter_records(read.records)] == [0, 1, 2]

    run(main, tmp_path)


def test_balanced_high_watermark_waits_for_the_flush(tmp_path):
    async def main(logs):
        partition = leader(logs)
        result = partition.append_as_leader(batch(2))
        assert partition.high_watermark == 0  # not durable yet: consumers see nothing
        assert partition.read(0, 1 << 20, True).records == b""
        assert await wait_for_acks([(partition, result.end_offset)], 1, 1.0, logs) == [ErrorCode.none]
        assert partition.log.durable_offset >= 2 and partition.high_watermark == 2
        assert len(partition.read(0, 1 << 20, True).records) > 0

    run(main, tmp_path, durability="balanced")


def test_acks_all_waits_for_every_in_sync_follower(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        result = partition.append_as_leader(batch(4))
        waiting = asyncio.ensure_future(wait_for_acks([(partition, result.end_offset)], -1, 5.0, logs))
        await asyncio.sleep(0)
        partition.follower_fetched(2, 4, partition.log.log_end_offset)
        assert partition.high_watermark == 0 and not waiting.done()  # follower 3 has nothing yet
        partition.follower_fetched(3, 2, partition.log.log_end_offset)
        assert partition.high_watermark == 2
        partition.follower_fetched(3, 4, partition.log.log_end_offset)
        assert partition.high_watermark == 4
        assert await waiting == [ErrorCode.none]
        # A follower reads up to the log end; a consumer only below the high watermark.
        follower_read = partition.read(0, 1 << 20, True, replica_id=2)
        assert [r.offset for r in iter_records(follower_read.records)] == [0, 1, 2, 3]

    run(main, tmp_path)


def test_followers_copy_what_the_leader_has_not_yet_fsynced_and_the_watermark_waits_for_its_fsync(tmp_path):
    """balanced: a follower's long poll is woken by the append itself and reads the records at
    once, while the leader's group fsync runs (replication and the leader's fsync overlap,
    instead of one after the other); the high watermark still waits for the leader's fsync."""
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        parked = asyncio.ensure_future(wait_for_data([partition], 5.0, replica=True))
        await asyncio.sleep(0)
        result = partition.append_as_leader(batch(2))
        await asyncio.wait_for(parked, 1.0)
        assert partition.log.durable_offset == 0  # the fsync lingers flush_interval_ms (5 ms)
        for follower in (2, 3):
            read = partition.read(0, 1 << 20, True, replica_id=follower)
            assert [r.offset for r in iter_records(read.records)] == [0, 1]
            partition.follower_fetched(follower, 2, partition.log.log_end_offset)
        assert partition.high_watermark == 0  # both followers have it; the leader's disk not yet
        assert partition.read(0, 1 << 20, True).records == b""
        assert await wait_for_acks([(partition, result.end_offset)], -1, 5.0, logs) == [ErrorCode.none]
        assert partition.high_watermark == 2 == partition.log.durable_offset

    run(main, tmp_path, durability="balanced")


def test_an_acks_all_wait_returns_on_the_loop_turn_after_the_high_watermark_passes_it(tmp_path):
    """The Produce is answered the moment its end offset is in: the high watermark's move wakes
    the waiting request itself, not a helper that wakes it a turn later (asyncio.wait did: two
    turns of a busy leader's loop per acks=all Produce). Several partitions still each need theirs."""
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        result = partition.append_as_leader(batch(2))
        waiting = asyncio.ensure_future(wait_for_acks([(partition, result.end_offset)], -1, 5.0, logs))
        while len(partition.ack_waiters) == 0:  # through its durability wait, then parked
            await asyncio.sleep(0)
        partition.follower_fetched(2, 2, partition.log.log_end_offset)
        partition.follower_fetched(3, 1, partition.log.log_end_offset)
        await asyncio.sleep(0)
        assert not waiting.done()  # the high watermark is at 1
        partition.follower_fetched(3, 2, partition.log.log_end_offset)
        await asyncio.sleep(0)
        assert waiting.done() and waiting.result() == [ErrorCode.none]
        # Two partitions: answered once both are in, each with its own outcome.
        other = logs.partitions[("u", 0)] = Partition("u", 0, logs.create("u", 0), logs, NODE, PartitionConfig(),
                                                       RecordingIsrWriter())
        other.make_leader(PartitionState((1, 2, 3), NODE, 0, (1, 2, 3)))
        first, second = partition.append_as_leader(batch(1)), other.append_as_leader(batch(1))
        both = asyncio.ensure_future(wait_for_acks([(partition, first.end_offset), (other, second.end_offset)], -1,
                                                   5.0, logs))
        while len(partition.ack_waiters) + len(other.ack_waiters) < 2:
            await asyncio.sleep(0)
        for follower in (2, 3):
            partition.follower_fetched(follower, 3, partition.log.log_end_offset)
        await asyncio.sleep(0)
        assert not both.done()
        other.stop_leading()
        await asyncio.sleep(0)
        assert both.done() and both.result() == [ErrorCode.none, ErrorCode.not_leader_or_follower]

    run(main, tmp_path)


def test_acks_all_times_out_and_acks_one_does_not_wait_for_followers(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2))
        result = partition.append_as_leader(batch(1))
        assert await wait_for_acks([(partition, result.end_offset)], -1, 0.05, logs) == [ErrorCode.request_timed_out]
        assert await wait_for_acks([(partition, result.end_offset)], 1, 0.05, logs) == [ErrorCode.none]
        assert partition.high_watermark == 0

    run(main, tmp_path)


def test_too_small_an_isr_refuses_acks_all_before_and_after_the_append(tmp_path):
    async def main(logs):
        config = PartitionConfig(min_insync_replicas=2)
        lonely = leader(logs, replicas=(1, 2), isr=(1,), config=config)
        with pytest.raises(KafkaError) as refused:
            lonely.append_as_leader(batch(1), required_acks=-1)
        assert refused.value.error_code == ErrorCode.not_enough_replicas
        assert lonely.append_as_leader(batch(1), required_acks=1).base_offset == 0  # acks=1 does not count the ISR

        partition = lonely
        partition.update_state(partition.state.changed(isr=(1, 2)))
        result = partition.append_as_leader(batch(1), required_acks=-1)
        waiting = asyncio.ensure_future(wait_for_acks([(partition, result.end_offset)], -1, 5.0, logs))
        await asyncio.sleep(0)
        partition.update_state(partition.state.changed(isr=(1,)))  # follower 2 dropped out: the watermark moves alone
        assert await waiting == [ErrorCode.not_enough_replicas_after_append]

    run(main, tmp_path)


def test_losing_the_leadership_answers_waiting_acks_and_reads(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2))
        result = partition.append_as_leader(batch(1))
        waiting = asyncio.ensure_future(wait_for_acks([(partition, result.end_offset)], -1, 5.0, logs))
        reader = asyncio.ensure_future(wait_for_data([partition], 5.0))
        await asyncio.sleep(0)
        partition.make_follower(replace(partition.state, leader=2, leader_epoch=1))
        assert await waiting == [ErrorCode.not_leader_or_follower]
        await asyncio.wait_for(reader, 1.0)  # woken at once, not at its timeout
        assert partition.read(0, 1 << 20, True).error == ErrorCode.not_leader_or_follower
        with pytest.raises(KafkaError) as refused:
            partition.append_as_leader(batch(1))
        assert refused.value.error_code == ErrorCode.not_leader_or_follower

    run(main, tmp_path)


def test_leader_epochs_are_stamped_and_checked(tmp_path):
    async def main(logs):
        partition = leader(logs, leader_epoch=3)
        records = batch(2)
        partition.append_as_leader(records)
        assert parse_batch_header(records).partition_leader_epoch == 3
        assert partition.offset_for_leader_epoch(3) == (3, 2)
        assert partition.offset_for_leader_epoch(2) == (-1, -1)
        assert partition.read(0, 1024, True, current_leader_epoch=2).error == ErrorCode.fenced_leader_epoch
        assert partition.read(0, 1024, True, current_leader_epoch=4).error == ErrorCode.unknown_leader_epoch
        assert partition.read(0, 1024, True, replica_id=7).error == ErrorCode.not_leader_or_follower

    run(main, tmp_path)


def test_an_idempotent_retry_gets_its_first_offsets(tmp_path):
    async def main(logs):
        partition = leader(logs)
        first = partition.append_as_leader(batch(2, producer_id=5, base_sequence=0))
        retried = partition.append_as_leader(batch(2, producer_id=5, base_sequence=0))
        assert retried.duplicate and (retried.base_offset, retried.end_offset) == (first.base_offset, first.end_offset)
        assert partition.log.log_end_offset == 2
        with pytest.raises(KafkaError) as gap:
            partition.append_as_leader(batch(1, producer_id=5, base_sequence=7))
        assert gap.value.error_code == ErrorCode.out_of_order_sequence_number

    run(main, tmp_path)


def test_validation_uses_the_topic_configs(tmp_path):
    async def main(logs):
        partition = leader(logs, config=PartitionConfig(compact=True, max_message_bytes=200))
        with pytest.raises(InvalidBatch) as keyless:
            partition.append_as_leader(batch(1, key=None))
        assert keyless.value.error_code == ErrorCode.invalid_record
        with pytest.raises(InvalidBatch) as large:
            partition.append_as_leader(batch(20))
        assert large.value.error_code == ErrorCode.message_too_large
        partition.set_config(PartitionConfig(log_append_time=True))
        result = partition.append_as_leader(batch(1))
        assert result.log_append_time > 0
        assert partition.log.log_end_offset == 1  # nothing refused was appended

    run(main, tmp_path)


def test_a_follower_joins_the_isr_once_caught_up_and_the_watermark_waits_for_it(tmp_path):
    async def main(logs):
        writer = RecordingIsrWriter()
        partition = leader(logs, replicas=(1, 2), isr=(1,), isr_writer=writer)
        partition.append_as_leader(batch(2))
        assert partition.high_watermark == 2  # ISR of one
        partition.follower_fetched(2, 1, partition.log.log_end_offset)
        assert writer.requests == []  # below the high watermark: not in sync yet
        partition.follower_fetched(2, 2, partition.log.log_end_offset)
        assert [isr for _, isr in writer.requests] == [(1, 2)]
        assert partition.maximal_isr == (1, 2)
        partition.append_as_leader(batch(1))
        assert partition.high_watermark == 2  # the joiner counts while its write is in flight
        writer.complete()
        assert partition.state.isr == (1, 2) and partition.pending_isr is None
        partition.follower_fetched(2, 3, partition.log.log_end_offset)
        assert partition.high_watermark == 3

    run(main, tmp_path)


def test_a_replica_in_controlled_shutdown_does_not_join(tmp_path):
    async def main(logs):
        writer = RecordingIsrWriter(shutting_down={2})
        partition = leader(logs, replicas=(1, 2), isr=(1,), isr_writer=writer)
        partition.follower_fetched(2, 0, partition.log.log_end_offset)
        assert writer.requests == []

    run(main, tmp_path)


def test_lagging_replicas_are_those_not_caught_up_for_the_lag_time(tmp_path, monkeypatch):
    monkeypatch.setattr("tidelog.cluster.partition.monotonic_ms", lambda: 1_000)  # when the append happens

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        partition.make_leader(partition.state, now_ms=1_000)
        partition.append_as_leader(batch(1))
        end = partition.log.log_end_offset
        partition.follower_fetched(2, end, end, now_ms=20_000)  # caught up
        partition.follower_fetched(3, 0, end, now_ms=20_000)  # behind since the start
        assert partition.lagging_replicas(now_ms=20_500, lag_max_ms=10_000) == [3]

    run(main, tmp_path)


def test_followers_behind_by_a_steady_backlog_stay_in_sync_and_a_falling_behind_one_leaves(tmp_path, monkeypatch):
    """The lag is time: a follower that always holds what the leader held 400 ms ago is in sync,
    however many appends it is behind (pipelined produce requests run the leader's log end ahead
    of followers that copy one batch a fetch); one that copies less than is appended falls
    further behind in time and leaves once that passes the lag time."""
    clock = {"now": 1_000}
    monkeypatch.setattr("tidelog.cluster.partition.monotonic_ms", lambda: clock["now"])

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        ends = []
        for step in range(300):  # 30 s: an append every 100 ms
            clock["now"] = 1_000 + step * 100
            partition.append_as_leader(batch(1))
            ends.append(partition.log.log_end_offset)
            if step >= 4:
                partition.follower_fetched(2, ends[step - 4], partition.log.log_end_offset)  # four batches behind
                partition.follower_fetched(3, ends[step // 2], partition.log.log_end_offset)  # half the append rate
        assert partition.lagging_replicas(clock["now"], lag_max_ms=2_000) == [3]

    run(main, tmp_path)


def test_a_leader_remembers_a_bounded_number_of_append_times(tmp_path, monkeypatch):
    """A follower that stopped fetching holds the high watermark; the append times kept for the
    lag stay bounded, and that follower still leaves the ISR."""
    clock = {"now": 1_000}
    monkeypatch.setattr("tidelog.cluster.partition.monotonic_ms", lambda: clock["now"])
    monkeypatch.setattr("tidelog.cluster.partition.APPENDS_REMEMBERED", 10)

    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        partition.follower_fetched(3, 0, 0)
        for step in range(100):
            clock["now"] = 1_000 + step * 100
            partition.append_as_leader(batch(1))
            partition.follower_fetched(2, partition.log.log_end_offset, partition.log.log_end_offset)
            assert len(partition.appended) <= 10
        assert partition.high_watermark == 0
        assert partition.lagging_replicas(clock["now"], lag_max_ms=2_000) == [3]

    run(main, tmp_path)


def test_follower_appends_at_the_leaders_offsets_and_truncates_a_divergent_tail(tmp_path):
    async def main(logs):
        source = leader(logs, leader_epoch=2)  # stands for the leader's log
        for _ in range(3):
            source.append_as_leader(batch(2))
        fetched = bytes(source.read(0, 1 << 20, True, replica_id=-1).records)

        follower_log = logs.create("t", 1)
        follower = logs.partitions[("t", 1)] = Partition("t", 1, follower_log, logs, 2, PartitionConfig())
        follower.make_follower(PartitionState((1, 2), 1, 2, (1, 2)))
        assert follower.append_as_follower(fetched, leader_high_watermark=4) == len(fetched)
        assert follower_log.log_end_offset == 6 and follower.high_watermark == 4
        assert follower.append_as_follower(fetched, leader_high_watermark=6) == 0  # a retried fetch adds nothing
        assert follower.epoch_cache.entries == [(2, 0)]
        follower.truncate_to(2)
        assert follower_log.log_end_offset == 2 and follower.high_watermark == 2
        assert follower.producer_state.producers == {}

        corrupt = bytearray(fetched)
        corrupt[-1] ^= 0xFF  # the last batch's CRC no longer matches
        with pytest.raises(InvalidBatch) as bad:
            follower.append_as_follower(corrupt, leader_high_watermark=6)
        assert bad.value.error_code == ErrorCode.corrupt_message
        assert follower_log.log_end_offset == 4  # the intact batch before it was appended

    run(main, tmp_path)


def test_a_follower_appends_the_whole_batches_of_a_fetch_cut_short(tmp_path):
    async def main(logs):
        source = leader(logs)
        for _ in range(3):
            source.append_as_leader(batch(2))
        fetched = bytes(source.read(0, 1 << 20, True, replica_id=-1).records)
        batch_size = len(fetched) // 3
        follower_log = logs.create("t", 1)
        follower = logs.partitions[("t", 1)] = Partition("t", 1, follower_log, logs, 2, PartitionConfig())
        follower.make_follower(PartitionState((1, 2), 1, 0, (1, 2)))
        # A fetch response's size limit cuts the third batch: the two whole ones are appended,
        # the rest is fetched again (from offset 4).
        assert follower.append_as_follower(fetched[:-10], leader_high_watermark=6) == 2 * batch_size
        assert follower_log.log_end_offset == 4 and follower.high_watermark == 4
        assert follower.append_as_follower(fetched[2 * batch_size:], leader_high_watermark=6) == batch_size
        assert follower_log.log_end_offset == 6 and follower.high_watermark == 6

    run(main, tmp_path)


def test_a_follower_keeps_the_epochs_of_the_leaders_batches(tmp_path):
    async def main(logs):
        log = logs.create("t", 0)
        follower = logs.partitions[("t", 0)] = Partition("t", 0, log, logs, 2, PartitionConfig())
        follower.make_follower(PartitionState((1, 2), 1, 5, (1, 2)))
        chunks = []
        offset = 0
        for epoch in (4, 5):
            records = batch(2)
            info = set_partition_leader_epoch(records, parse_batch_header(records), epoch)
            set_base_offset(records, offset)
            offset += info.last_offset_delta + 1
            chunks.append(bytes(records))
        follower.append_as_follower(b"".join(chunks), leader_high_watermark=0)
        assert follower.epoch_cache.entries == [(4, 0), (5, 2)]
        assert follower.offset_for_leader_epoch(4) == (4, 2)

    run(main, tmp_path)


def test_a_parked_fetch_wakes_on_an_append(tmp_path):
    async def main(logs):
        partition = leader(logs)
        reader = asyncio.ensure_future(wait_for_data([partition], 5.0))
        await asyncio.sleep(0)
        assert not reader.done()
        partition.append_as_leader(batch(1))
        await asyncio.wait_for(reader, 1.0)
        assert len(partition.parked_reads) == 0

    run(main, tmp_path)


def test_an_append_wakes_followers_fetches_and_the_high_watermark_wakes_consumers(tmp_path):
    """RF 3: an append wakes the followers' parked fetches (they read up to the log end), not
    the consumers' (nothing below the high watermark changed); the follower fetch that moves
    the high watermark wakes the consumers and leaves the other follower's fetch parked."""
    async def main(logs):
        partition = leader(logs, replicas=(1, 2, 3))
        consumer = asyncio.ensure_future(wait_for_data([partition], 5.0))
        followers = [asyncio.ensure_future(wait_for_data([partition], 5.0, replica=True)) for _ in range(2)]
        await asyncio.sleep(0)
        partition.append_as_leader(batch(2))
        await asyncio.wait_for(asyncio.gather(*followers), 1.0)
        await asyncio.sleep(0.01)
        assert not consumer.done()
        partition.follower_fetched(2, 2, partition.log.log_end_offset)
        other = asyncio.ensure_future(wait_for_data([partition], 5.0, replica=True))
        await asyncio.sleep(0)
        partition.follower_fetched(3, 2, partition.log.log_end_offset)
        assert partition.high_watermark == 2
        await asyncio.wait_for(consumer, 1.0)
        await asyncio.sleep(0.01)
        assert not other.done()
        partition.make_follower(replace(partition.state, leader=2, leader_epoch=1))  # a leadership change wakes all
        await asyncio.wait_for(other, 1.0)
        assert len(partition.parked_reads) == len(partition.parked_replica_reads) == 0

    run(main, tmp_path)


def test_delete_records_stops_at_the_high_watermark(tmp_path):
    async def main(logs):
        partition = leader(logs, replicas=(1, 2))
        partition.append_as_leader(batch(4))
        partition.follower_fetched(2, 2, partition.log.log_end_offset)
        assert partition.high_watermark == 2
        with pytest.raises(KafkaError) as refused:
            partition.delete_records_before(3)
        assert refused.value.error_code == ErrorCode.offset_out_of_range
        assert partition.delete_records_before(-1) == 2

    run(main, tmp_path)
