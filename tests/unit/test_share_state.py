"""Durable share-partition state: the __share_group_state record formats (byte-exact), the merge of
state batches, the store's snapshot/update rule, fencing, failed appends, and crash/replay."""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.in_flight import RecordState
from tidelog.queues.log_batches import AcquiredRecords, LogBatch
from tidelog.queues.share_partition import AckBatch, AcknowledgeType, SharePartition, SharePartitionConfig
from tidelog.queues.state_records import (
    SNAPSHOT_RECORD_TYPE,
    UPDATE_RECORD_TYPE,
    ShareSnapshotValue,
    ShareStateKey,
    ShareUpdateValue,
    StateBatch,
    StateRecordError,
    decode_key,
    decode_snapshot_value,
    decode_update_value,
    encode_key,
    encode_snapshot_value,
    encode_update_value,
)
from tidelog.queues.state_store import ShareStateStore, combine_state_batches

from .share_helpers import FakeStateLog

TOPIC_ID = uuid.UUID("00000000-0000-0000-0000-0000000000ab")
KEY = ShareStateKey("g", TOPIC_ID, 3)


# --- record formats -----------------------------------------------------------------------------------
def test_key_bytes():
    assert encode_key(SNAPSHOT_RECORD_TYPE, KEY) == (
        b"\x00\x00" + b"\x00\x01g" + TOPIC_ID.bytes + b"\x00\x00\x00\x03")
    assert encode_key(UPDATE_RECORD_TYPE, KEY)[:2] == b"\x00\x01"
    assert decode_key(encode_key(UPDATE_RECORD_TYPE, KEY)) == (UPDATE_RECORD_TYPE, KEY)


def test_snapshot_value_bytes():
    value = ShareSnapshotValue(1, 2, 3, 100, 7, 8, [StateBatch(100, 109, 2, 1)], delivery_complete_count=10)
    expected = b"".join((
        b"\x00\x00",  # version 0
        struct.pack(">iiiqqq", 1, 2, 3, 100, 7, 8),
        b"\x02",  # compact array of one
        struct.pack(">qqbh", 100, 109, 2, 1), b"\x00",  # a batch and its (empty) tagged fields
        b"\x01\x00\x04" + struct.pack(">i", 10),  # one tagged field: tag 0, 4 bytes
    ))
    assert encode_snapshot_value(value) == expected
    assert decode_snapshot_value(expected) == value
    without_count = encode_snapshot_value(ShareSnapshotValue(1, 2, 3, 100, 7, 8, []))
    assert without_count.endswith(b"\x01\x00")  # empty array, no tagged fields
    assert decode_snapshot_value(without_count).delivery_complete_count == -1


def test_update_value_bytes():
    value = ShareUpdateValue(4, -1, -1, [StateBatch(5, 5, 4, 3), StateBatch(6, 9, 0, 1)])
    expected = b"".join((
        b"\x00\x00", struct.pack(">iiq", 4, -1, -1), b"\x03",
        struct.pack(">qqbh", 5, 5, 4, 3), b"\x00", struct.pack(">qqbh", 6, 9, 0, 1), b"\x00",
        b"\x00",
    ))
    assert encode_update_value(value) == expected
    assert decode_update_value(expected) == value


def test_unknown_tagged_fields_are_skipped():
    data = b"".join((
        b"\x00\x00", struct.pack(">iiq", 4, 1, 50), b"\x02",
        struct.pack(">qqbh", 50, 59, 0, 1), b"\x01\x07\x02zz",  # a batch tagged field 7 nobody knows
        b"\x02\x00\x04" + struct.pack(">i", 3) + b"\x09\x01x",  # tag 0 and an unknown tag 9
    ))
    assert decode_update_value(data) == ShareUpdateValue(4, 1, 50, [StateBatch(50, 59, 0, 1)], 3)


@pytest.mark.parametrize("data", [b"", b"\x00\x05" + b"\x00" * 30, b"\x00\x00\x00\x01", b"\x00\x00" + b"\xff" * 6])
def test_unreadable_records_raise(data):
    with pytest.raises(StateRecordError):
        if data.startswith(b"\x00\x05"):
            decode_key(data)
        else:
            decode_update_value(data)


batch_st = st.builds(StateBatch, st.integers(0, 2**40), st.integers(0, 2**40), st.sampled_from([0, 2, 4]),
                     st.integers(0, 2**15 - 1), st.just(0) | st.integers(1, 2**62)).map(
    lambda b: b if b.delivery_state == 0 else b._replace(available_at_ms=0))  # only Available ones keep a time


@given(st.builds(ShareSnapshotValue, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(-1, 2**31 - 1),
                 st.integers(-1, 2**62), st.integers(-1, 2**62), st.integers(-1, 2**62), st.lists(batch_st, max_size=5),
                 st.integers(-1, 2**31 - 1)),
       st.builds(ShareUpdateValue, st.integers(0, 2**31 - 1), st.integers(-1, 2**31 - 1), st.integers(-1, 2**62),
                 st.lists(batch_st, max_size=200), st.integers(-1, 2**31 - 1)),
       st.text(min_size=1, max_size=40), st.uuids(), st.integers(0, 2**31 - 1))
def test_round_trips(snapshot, update, group, topic_id, partition):
    assert decode_snapshot_value(encode_snapshot_value(snapshot)) == snapshot
    assert decode_update_value(encode_update_value(update)) == update
    key = ShareStateKey(group, topic_id, partition)
    assert decode_key(encode_key(SNAPSHOT_RECORD_TYPE, key)) == (SNAPSHOT_RECORD_TYPE, key)


# --- merging state batches ------------------------------------------------------------------------------
def test_combine_overrides_prunes_and_joins():
    existing = [StateBatch(0, 9, 0, 1), StateBatch(10, 19, 2, 1)]
    new = [StateBatch(5, 12, 4, 2), StateBatch(13, 14, 2, 1)]
    assert combine_state_batches(existing, new, 3) == [
        StateBatch(3, 4, 0, 1), StateBatch(5, 12, 4, 2), StateBatch(13, 19, 2, 1)]


@given(st.lists(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8), st.sampled_from([0, 2, 4]),
                                   st.integers(0, 3)), max_size=4), max_size=6),
       st.integers(0, 40))
def test_combine_matches_a_per_offset_model(writes, start_offset):
    model: dict[int, tuple[int, int]] = {}
    merged: list[StateBatch] = []
    for write in writes:
        batches = [StateBatch(first, first + length, state, count) for first, length, state, count in write]
        for b in batches:
            for o in range(b.first_offset, b.last_offset + 1):
                model[o] = (b.delivery_state, b.delivery_count)
        merged = combine_state_batches(merged, batches, 0)
    merged = combine_state_batches(merged, [], start_offset)
    flat = {o: (b.delivery_state, b.delivery_count) for b in merged for o in range(b.first_offset, b.last_offset + 1)}
    assert flat == {o: v for o, v in model.items() if o >= start_offset}
    for a, b in zip(merged, merged[1:]):
        assert a.last_offset < b.first_offset
        assert not (a.last_offset + 1 == b.first_offset and a[2:] == b[2:])  # joined where equal


# --- the store ----------------------------------------------------------------------------------------------
def clock():
    return 1234


def run(coro):
    return asyncio.run(coro)


def test_initialize_then_updates_then_a_snapshot_every_n():
    log = FakeStateLog()

    async def scenario():
        store = ShareStateStore(log.append, clock, updates_per_snapshot=3)
        state = await store.initialize(KEY, 100)
        assert (state.state_epoch, state.snapshot_epoch, state.start_offset, state.batches) == (0, 0, 100, [])
        for i in range(7):
            await store.write(KEY, 0, 100 + i, [StateBatch(100 + i, 100 + i, 2, 1), StateBatch(200, 200, 0, i)], i)
        return store

    store = run(scenario())
    # snapshot, 3 updates, snapshot, 3 updates: at most 3 updates to read after the latest snapshot
    assert log.kinds() == [0, 1, 1, 1, 0, 1, 1, 1]
    state = store.state(KEY)
    assert state.start_offset == 106 and state.batches == [StateBatch(106, 106, 2, 1), StateBatch(200, 200, 0, 6)]
    assert state.snapshot_epoch == 1 and state.delivery_complete_count == 6
    assert store.prunable_offset() == 4  # everything before the latest snapshot is redundant
    replayed = log.replay_into(ShareStateStore(log.append, clock))
    again = replayed.state(KEY)
    assert (again.start_offset, again.batches, again.snapshot_epoch, again.state_epoch, again.updates_since_snapshot) == (
        state.start_offset, state.batches, state.snapshot_epoch, state.state_epoch, state.updates_since_snapshot)
    assert replayed.prunable_offset() == 4


def test_a_write_never_moves_the_start_offset_back():
    """A share-partition's transition writes the start offset it leaves (Transition.start_offset);
    one prepared before an earlier transition moved it further must not undo that, in the store
    nor in a replay."""
    log = FakeStateLog()

    async def scenario():
        store = ShareStateStore(log.append, clock)
        await store.initialize(KEY, 0)
        await store.write(KEY, 0, 10, [StateBatch(12, 12, 4, 0)])  # 0-9 acknowledged: the start moved
        await store.write(KEY, 0, 0, [StateBatch(11, 11, 0, 1)])  # prepared before it, written after
        return store

    store = run(scenario())
    state = store.state(KEY)
    assert state.start_offset == 10 and state.batches == [StateBatch(11, 11, 0, 1), StateBatch(12, 12, 4, 0)]
    assert log.replay_into(ShareStateStore(log.append, clock)).state(KEY).start_offset == 10


def test_writes_waiting_together_go_out_as_one_append():
    log = FakeStateLog()

    async def scenario():
        store = ShareStateStore(log.append, clock)
        await store.initialize(KEY, 0)
        other = ShareStateKey("g", TOPIC_ID, 4)
        await store.initialize(other, 0)
        calls = log.calls
        await asyncio.gather(*(store.write(KEY if i % 2 else other, 0, 0, [StateBatch(i, i, 2, 1)]) for i in range(10)))
        return store, calls

    store, calls = run(scenario())
    assert log.calls - calls <= 2  # the first write goes alone, the other nine wait for it and go together
    assert store.state(KEY).batches == [StateBatch(i, i, 2, 1) for i in (1, 3, 5, 7, 9)]


def test_writes_are_fenced_by_a_newer_state_epoch_and_need_initialisation():
    log = FakeStateLog()

    async def scenario():
        store = ShareStateStore(log.append, clock)
        with pytest.raises(KafkaError) as info:
            await store.write(KEY, 0, 0, [])
        assert info.value.error_code == ErrorCode.invalid_request
        await store.initialize(KEY, 0)
        state = await store.initialize(KEY, 50)  # AlterShareGroupOffsets: a fresh start
        assert state.state_epoch == 1 and state.snapshot_epoch == 1
        with pytest.raises(KafkaError) as info:
            await store.write(KEY, 0, 0, [StateBatch(0, 0, 2, 1)])
        assert info.value.error_code == ErrorCode.fenced_state_epoch
        await store.write(KEY, 1, 50, [StateBatch(50, 50, 2, 1)])
        await store.delete(KEY)
        assert store.state(KEY) is None
        return store

    run(scenario())
    assert log.replay_into(ShareStateStore(log.append, clock)).state(KEY) is None
    assert log.records[-1][1] is None  # a tombstone


def test_replay_ignores_an_update_of_a_writer_that_missed_a_newer_snapshot():
    """Two brokers' stores over one state topic (a cluster): after the coordinator resets the
    share-partition (a snapshot with a new state epoch), an update from the old leader that had not
    seen it (built on the older snapshot) changes nothing for whoever replays the topic."""
    log = FakeStateLog()

    async def scenario():
        leader = ShareStateStore(log.append, clock)
        await leader.initialize(KEY, 0)
        coordinator = log.replay_into(ShareStateStore(log.append, clock))
        await coordinator.initialize(KEY, 100)  # AlterShareGroupOffsets: snapshot_epoch 1, state epoch 1
        await leader.write(KEY, 0, 0, [StateBatch(0, 9, 2, 1)])  # the old leader's view: snapshot 0

    run(scenario())
    state = log.replay_into(ShareStateStore(log.append, clock)).state(KEY)
    assert (state.state_epoch, state.start_offset, state.batches) == (1, 100, [])


def test_a_failed_append_fails_its_writes_and_the_next_write_is_a_snapshot():
    log = FakeStateLog()

    async def scenario():
        store = ShareStateStore(log.append, clock)
        await store.initialize(KEY, 0)
        await store.write(KEY, 0, 0, [StateBatch(0, 4, 0, 1)])
        log.fail_next = 1
        results = await asyncio.gather(store.write(KEY, 0, 0, [StateBatch(0, 4, 2, 1)]),
                                       store.write(KEY, 0, 0, [StateBatch(5, 5, 2, 1)]), return_exceptions=True)
        assert all(isinstance(r, KafkaError) for r in results)
        assert store.state(KEY).batches == [StateBatch(0, 4, 0, 1)]  # unchanged
        await store.write(KEY, 0, 0, [StateBatch(6, 6, 0, 1)])
        return store

    store = run(scenario())
    assert decode_key(log.records[-1][0])[0] == SNAPSHOT_RECORD_TYPE
    # the torn append's update reached the log, but the snapshot after it wins on replay
    assert log.replay_into(ShareStateStore(log.append, clock)).state(KEY).batches == store.state(KEY).batches == [
        StateBatch(0, 4, 0, 1), StateBatch(6, 6, 0, 1)]


def test_replay_skips_what_it_cannot_read(caplog):
    store = ShareStateStore(FakeStateLog().append, clock)
    with caplog.at_level(logging.WARNING):
        store.replay(b"\x00\x07junk", b"\x00\x00")
        store.replay(encode_key(UPDATE_RECORD_TYPE, KEY), encode_update_value(ShareUpdateValue(0, 0, 5, [])))
        store.replay(encode_key(SNAPSHOT_RECORD_TYPE, KEY), b"\x00\x00\x00")
    assert store.state(KEY) is None
    assert "unknown __share_group_state record type 7" in caplog.text
    assert "without a snapshot" in caplog.text


# --- crash and replay with a share-partition -------------------------------------------------------------
CONFIG = SharePartitionConfig(delivery_count_limit=4, record_lock_duration_ms=1000, max_in_flight_records=500)


class Broker:
    """A share-partition over a store over a fake log; ``crash`` keeps only the log."""

    def __init__(self, log: FakeStateLog, now: int = 0) -> None:
        self.log = log
        self.store = log.replay_into(ShareStateStore(log.append, clock, updates_per_snapshot=4))
        state = self.store.state(KEY)
        self.sp = None if state is None else SharePartition.from_state(CONFIG, state.start_offset, state.batches,
                                                                       state.state_epoch, now)

    async def start(self, start_offset: int) -> None:
        state = await self.store.initialize(KEY, start_offset)
        self.sp = SharePartition(CONFIG, state.start_offset, state.state_epoch)

    async def settle(self, t) -> bool:
        try:
            start = self.sp.start_offset if t.start_offset is None else t.start_offset  # as ShareManager writes
            await self.store.write(KEY, self.sp.state_epoch, start, t.state_batches,
                                   self.sp.delivery_complete_count(start))
        except KafkaError:
            self.sp.rollback(t)
            return False
        self.sp.commit(t)
        return True


LOG = [LogBatch(i * 5, i * 5 + 4) for i in range(20)]


def read_from(offset):
    return [b for b in LOG if b.last_offset >= offset]


def test_crash_acknowledged_stays_done_and_acquired_comes_back_with_its_count():
    log = FakeStateLog()

    async def before_crash():
        broker = Broker(log)
        await broker.start(0)
        sp = broker.sp
        t = sp.acquire("a", read_from(sp.fetch_offset(0)), 10, 0)
        assert t.acquired == [AcquiredRecords(0, 9, 1)] and await broker.settle(t)
        t = sp.acquire("b", read_from(sp.fetch_offset(0)), 10, 0)
        assert t.acquired == [AcquiredRecords(10, 19, 1)] and await broker.settle(t)
        assert await broker.settle(sp.acknowledge("a", [AckBatch(0, 9, (AcknowledgeType.ACCEPT,))], 0))
        assert await broker.settle(sp.acknowledge("b", [AckBatch(10, 12, (AcknowledgeType.ACCEPT,))], 0))
        # acquired but not acknowledged at the crash: 13-19 (b), 20-24 (c, once released and re-acquired)
        t = sp.acquire("c", read_from(sp.fetch_offset(0)), 5, 0)
        assert await broker.settle(t)
        assert await broker.settle(sp.acknowledge("c", [AckBatch(20, 24, (AcknowledgeType.RELEASE,))], 0))
        t = sp.acquire("c", read_from(sp.fetch_offset(0)), 5, 0)
        assert t.acquired == [AcquiredRecords(20, 24, 2)] and await broker.settle(t)
        # accepted above records still acquired: 27-29 done, 25-26 acquired at the crash
        t = sp.acquire("e", read_from(sp.fetch_offset(0)), 5, 0)
        assert t.acquired == [AcquiredRecords(25, 29, 1)] and await broker.settle(t)
        assert await broker.settle(sp.acknowledge("e", [AckBatch(27, 29, (AcknowledgeType.ACCEPT,))], 0))
        # a write that never became durable: the acknowledgement is rolled back, not lost silently
        log.fail_next = 1
        assert not await broker.settle(sp.acknowledge("b", [AckBatch(13, 14, (AcknowledgeType.ACCEPT,))], 0))

    run(before_crash())
    after = Broker(log, now=5)
    sp = after.sp
    assert sp.start_offset == 13
    got = []
    while (offset := sp.fetch_offset(5)) is not None and offset < 30:
        t = sp.acquire("d", read_from(offset), 100, 5)
        sp.commit(t)
        got.extend(t.acquired)
    assert got[0] == AcquiredRecords(13, 19, 2)  # delivered again, delivery count kept (+1)
    delivered = {o: r.delivery_count for r in got for o in range(r.first_offset, r.last_offset + 1)}
    assert all(delivered[o] == 3 for o in range(20, 25))  # (in smaller groups: throttled from 2 deliveries)
    assert delivered[25] == delivered[26] == 2 and not {27, 28, 29} & set(delivered)
    assert all(r.first_offset >= 13 for r in got)  # 0-12 were acknowledged: never again


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["fetch", "ack", "expire", "crash", "fail"]), st.integers(1, 12),
                          st.sampled_from(list(AcknowledgeType)[:4])), max_size=40))
def test_random_crashes_never_redeliver_accepted_records(steps):
    log = FakeStateLog()
    accepted: set[int] = set()
    counts: dict[int, int] = {}

    async def scenario():
        broker = Broker(log)
        await broker.start(0)
        now = 0
        for action, n, ack_type in steps:
            sp = broker.sp
            if action == "crash":
                broker = Broker(log, now)
                t = broker.sp.expire_locks(now)  # exhausted records archive first thing after loading
                await broker.settle(t)
                continue
            if action == "fail":
                log.fail_next = 1
            if action == "fetch":
                offset = sp.fetch_offset(now)
                if offset is None:
                    continue
                t = sp.acquire("m", read_from(offset), n, now)
                if await broker.settle(t):
                    for r in t.acquired:
                        for o in range(r.first_offset, r.last_offset + 1):
                            assert o not in accepted
                            assert r.delivery_count > counts.get(o, 0) - 1
                            counts[o] = r.delivery_count
            elif action == "ack":
                held = sp.acquired_by("m")
                if not held:
                    continue
                first, last = held[n % len(held)]
                first = min(last, first + n // 3)
                last = min(last, first + n - 1)
                t = sp.acknowledge("m", [AckBatch(first, last, (int(ack_type),))], now)
                if await broker.settle(t) and ack_type == AcknowledgeType.ACCEPT:
                    accepted.update(range(first, last + 1))
            else:
                now += 1000
                await broker.settle(sp.expire_locks(now))
        # after a final crash the durable state agrees with what the store had in memory
        replayed = Broker(log, now)
        assert replayed.store.state(KEY).batches == broker.store.state(KEY).batches
        assert replayed.store.state(KEY).start_offset == broker.store.state(KEY).start_offset
        for o in accepted:
            state = replayed.sp.state_of(o)
            assert state is None or state[0] == RecordState.ACKNOWLEDGED

    run(scenario())


def test_a_state_batch_keeps_its_retry_backoff_deadline_in_a_tagged_field():
    """Tidelog's tag on an Available state batch round-trips; without it (Kafka's records, and every
    other state) the batch reads as before, and its bytes are Kafka's."""
    value = ShareUpdateValue(4, -1, -1, [StateBatch(5, 5, 0, 2, 1_700_000_012_345), StateBatch(6, 9, 2, 1)])
    assert decode_update_value(encode_update_value(value)) == value
    plain = ShareUpdateValue(4, -1, -1, [StateBatch(5, 5, 0, 2), StateBatch(6, 9, 2, 1)])
    assert decode_update_value(encode_update_value(plain)) == plain
    # one tagged field (count 1, tag 0x7464 in 3 bytes, size 8, the int64) where an empty one was
    assert len(encode_update_value(value)) == len(encode_update_value(plain)) + (1 + 3 + 1 + 8) - 1
    snapshot = ShareSnapshotValue(1, 2, 3, 0, 7, 8, [StateBatch(0, 0, 0, 1, 99)])
    assert decode_snapshot_value(encode_snapshot_value(snapshot)) == snapshot
