"""Idempotent producer state: Kafka's sequence rules (KIP-360 for producers without state),
duplicates, expiry, and the snapshot plus replay that survive a restart."""

from __future__ import annotations

import time

import pytest

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch, parse_batch_header
from tidelog.storage.producer_state import ProducerState
from tests.unit.storage_helpers import open_log

PID = 7
DAY_MS = 24 * 3600 * 1000


def batch(sequence: int, count: int = 1, epoch: int = 0, timestamp_ms: int = 1_000, pid: int = PID) -> bytearray:
    return bytearray(build_batch([(None, b"v", [])] * count, timestamp_ms=timestamp_ms, producer_id=pid,
                                 producer_epoch=epoch, base_sequence=sequence))


def info(sequence: int, count: int = 1, epoch: int = 0, timestamp_ms: int = 1_000, pid: int = PID):
    return parse_batch_header(batch(sequence, count, epoch, timestamp_ms, pid))


def appended(state: ProducerState, sequence: int, base_offset: int, count: int = 1, epoch: int = 0, now_ms: int = 1_000):
    header = info(sequence, count, epoch)
    assert state.check(header) is None
    state.update(header, base_offset, now_ms)


@pytest.mark.parametrize("sequence", [0, 3, 2**31 - 1])
def test_a_producer_without_state_may_start_at_any_sequence(sequence):
    state = ProducerState()
    assert state.check(info(sequence)) is None  # KIP-360: not OUT_OF_ORDER_SEQUENCE_NUMBER
    state.update(info(sequence), 10)
    assert state.check(info((sequence + 1) % 2**31)) is None, "then it is tracked from there"
    with pytest.raises(KafkaError) as gap:
        state.check(info((sequence + 2) % 2**31))
    assert gap.value.error_code == ErrorCode.out_of_order_sequence_number


def test_duplicates_are_answered_with_their_first_offset_and_gaps_refused():
    state = ProducerState()
    appended(state, 0, 100, count=2)
    appended(state, 2, 102, count=3)
    assert state.check(info(0, count=2)) == 100
    assert state.check(info(2, count=3)) == 102
    with pytest.raises(KafkaError) as gap:
        state.check(info(6))
    assert gap.value.error_code == ErrorCode.out_of_order_sequence_number


def test_epochs_fence_and_a_new_epoch_starts_at_zero():
    state = ProducerState()
    appended(state, 0, 0, epoch=1)
    with pytest.raises(KafkaError) as fenced:
        state.check(info(1, epoch=0))
    assert fenced.value.error_code == ErrorCode.invalid_producer_epoch
    with pytest.raises(KafkaError) as not_zero:
        state.check(info(5, epoch=2))
    assert not_zero.value.error_code == ErrorCode.out_of_order_sequence_number
    assert state.check(info(0, epoch=2)) is None


def test_entries_expire_after_the_producers_last_batch():
    state = ProducerState()
    appended(state, 0, 0, now_ms=10_000)
    other = info(0, pid=8)
    state.update(other, 1, 50_000)
    assert state.remove_expired(now_ms=10_000 + DAY_MS - 1, expiration_ms=DAY_MS) == 0
    assert state.remove_expired(now_ms=10_000 + DAY_MS, expiration_ms=DAY_MS) == 1
    assert set(state.producers) == {8}
    assert state.check(info(5)) is None, "an expired producer goes on at any sequence"


def test_replayed_batches_count_by_their_timestamp_not_later_than_now(tmp_path):
    now = int(time.time() * 1000)
    log = open_log(tmp_path)
    for pid, timestamp_ms in ((1, now - 2 * DAY_MS), (2, now - 1000), (3, now + 10 * DAY_MS)):
        data = batch(0, pid=pid, timestamp_ms=timestamp_ms)
        log.append(memoryview(data), parse_batch_header(data))
    state = ProducerState.load(log, expiration_ms=DAY_MS)
    assert set(state.producers) == {2, 3}, "producer 1's last batch is two days old"
    assert state.producers[3].last_timestamp_ms <= int(time.time() * 1000), "a future timestamp is capped at now"


def test_snapshot_keeps_times_and_drops_expired_entries_on_load(tmp_path):
    log = open_log(tmp_path)
    data = batch(0, count=2)
    log.append(memoryview(data), parse_batch_header(data))
    now = int(time.time() * 1000)
    state = ProducerState()
    state.update(parse_batch_header(data), 0, now)
    state.update(info(0, pid=9), 0, now - 2 * DAY_MS)
    state.save(log.dir, log.log_end_offset)
    loaded = ProducerState.load(log, expiration_ms=DAY_MS)
    assert set(loaded.producers) == {PID}
    assert loaded.producers[PID].last_timestamp_ms == now
    assert loaded.check(info(0, count=2)) == 0, "the duplicate is still recognised after a restart"


def test_snapshots_of_many_partitions_written_at_once_load_back(tmp_path, monkeypatch):
    """A clean stop writes every partition's snapshot in one batch (LogManager.write_checkpoints:
    two filesystem syncs in all, no fsync a file); each loads back and still spots duplicates."""
    import os

    from tidelog.storage.fsync import syncfs_available
    from tidelog.storage.log import LogConfig
    from tidelog.storage.manager import LogManager

    manager = LogManager(tmp_path, LogConfig())
    manager.open_all({})
    logs = [manager.create("t", p) for p in range(12)]
    now = int(time.time() * 1000)
    snapshots = []
    for log in logs:
        data = batch(0, count=2)
        log.append(memoryview(data), parse_batch_header(data))
        state = ProducerState()
        state.update(parse_batch_header(data), 0, now)
        snapshots.append(state.snapshot(log.dir, log.log_end_offset))
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    manager.write_checkpoints(snapshots)
    assert fsyncs == [] or not syncfs_available()
    for log in logs:
        assert ProducerState.load(log).check(info(0, count=2)) == 0


def test_delay_movers_producer_ids_never_expire_but_stay_bounded():
    """Producer ids from 2^62 are the delay movers' (their state is a mover's progress): they do not
    expire, and their time is the batch's own. A client sending batches with ids in that range
    cannot grow the state without bound: beyond the most recent BROKER_PRODUCERS_KEPT of them,
    they expire as any other."""
    from tidelog.storage.producer_state import BROKER_PRODUCER_IDS, BROKER_PRODUCERS_KEPT
    state = ProducerState()
    mover = BROKER_PRODUCER_IDS + 5
    state.update(info(0, pid=mover, timestamp_ms=77_000), 0, now_ms=10_000)
    assert state.producers[mover].last_timestamp_ms == 77_000
    assert state.remove_expired(now_ms=77_000 + 10 * DAY_MS, expiration_ms=DAY_MS) == 0
    for n in range(BROKER_PRODUCERS_KEPT + 50):  # forged ones, later than the mover's batch
        state.update(info(0, pid=BROKER_PRODUCER_IDS + 1000 + n, timestamp_ms=78_000 + n), 1 + n, now_ms=10_000)
    assert state.remove_expired(now_ms=78_000 + 10 * DAY_MS, expiration_ms=DAY_MS) == 51
    assert len(state.producers) == BROKER_PRODUCERS_KEPT and mover not in state.producers
