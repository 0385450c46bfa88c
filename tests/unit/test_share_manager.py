"""The share manager over real record batches and a state store: initialisation by
share.auto.offset.reset, ShareFetch acquisition made durable first, acknowledgements, lock
timers, the dead-letter step before archiving, waiting for records, offsets admin, and a restart."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tidelog.config import BrokerConfig
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import iter_records
from tidelog.queues.manager import ShareConfig, ShareConfigs, ShareManager
from tidelog.queues.in_flight import ArchiveReason, DeadLetter
from tidelog.queues.log_batches import AcquiredRecords
from tidelog.queues.share_partition import AckBatch, AcknowledgeType, AcquireMode, SharePartitionConfig
from tidelog.queues.state_records import ShareStateKey
from tidelog.queues.state_store import ShareStateStore

from .share_helpers import FakeLogs, FakeStateLog

TOPIC = uuid.UUID(int=7)
KEY = ShareStateKey("g", TOPIC, 0)
ACCEPT, RELEASE, REJECT = AcknowledgeType.ACCEPT, AcknowledgeType.RELEASE, AcknowledgeType.REJECT


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Setup:
    def __init__(self, state_log: FakeStateLog | None = None, logs: FakeLogs | None = None, *, lock_ms: int = 30_000,
                 limit: int = 3, reset: str = "earliest", duration_ms: int = 0, isolation: str = "read_uncommitted",
                 dead_letter=None) -> None:
        self.state_log = state_log or FakeStateLog()
        self.logs = logs or FakeLogs()
        self.clock = Clock()
        self.store = self.state_log.replay_into(ShareStateStore(
            self.state_log.append, self.clock, catch_up=self.state_log.catch_up_hook(lambda: self.store)))
        self.config = ShareConfig(SharePartitionConfig(limit, lock_ms, 1000), reset, duration_ms, isolation)
        self.counts: list[dict] = []
        self.manager = ShareManager(self.store, self.logs, lambda group: self.config, dead_letter=dead_letter,
                                    on_counts=lambda key, counts: self.counts.append(counts), clock_ms=self.clock)

    async def fetch(self, member: str, max_records: int = 100, **kw):
        return await self.manager.acquire(KEY, member, max_records=max_records, max_bytes=1 << 20, **kw)

    async def ack(self, member: str, first: int, last: int, *types: int, **kw):
        return await self.manager.acknowledge(KEY, member, [AckBatch(first, last, tuple(types))], **kw)


def run(coro):
    return asyncio.run(coro)


def offsets(result):
    return [r.offset for buffer in result.records for r in iter_records(buffer)]


def test_auto_offset_reset_strategies():
    async def scenario():
        logs = FakeLogs()
        for ts in (1000, 2000, 3000):
            logs.produce(TOPIC, 0, 5, timestamp_ms=ts)
        logs.log_start[(TOPIC, 0)] = 5
        starts = {}
        for name, reset, duration in (("latest", "latest", 0), ("earliest", "earliest", 0),
                                      ("by_duration", "by_duration", 1_000_000 - 2500)):
            s = Setup(logs=logs, reset=reset, duration_ms=duration)
            await s.manager.initialize("g", {TOPIC: [0]})
            starts[name] = s.store.state(KEY).start_offset
        assert starts == {"latest": 15, "earliest": 5, "by_duration": 10}

    run(scenario())


def test_concurrent_initializations_write_one_state_epoch():
    """Members joining at once each initialise the group's partitions: one snapshot, epoch 0 (a
    second initialisation would fence the share-partition loaded from the first)."""
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 5)
        await asyncio.gather(*(s.manager.initialize("g", {TOPIC: [0]}) for _ in range(3)))
        assert s.store.state(KEY).state_epoch == 0 and len(s.state_log.records) == 1
        await s.fetch("a")  # loaded at epoch 0: writes are not fenced

    run(scenario())


def test_share_config_resolves_group_configs_over_broker_settings():
    broker = BrokerConfig.load(env={}, overrides={"group.share.delivery.count.limit": "4"})
    config = ShareConfig.resolve(broker, {"share.record.lock.duration.ms": "20000",
                                          "share.auto.offset.reset": "by_duration:PT1M",
                                          "errors.deadletterqueue.topic.name": "dlq.orders"})
    assert config.partition == SharePartitionConfig(4, 20000, 2000)
    assert (config.auto_offset_reset, config.auto_offset_reset_duration_ms) == ("by_duration", 60_000)
    assert (config.isolation_level, config.dead_letter_topic, config.dead_letter_copy_record) == (
        "read_uncommitted", "dlq.orders", False)


def test_share_configs_are_resolved_once_per_group_overrides():
    # Resolving a group's settings took ~40 us and a ShareFetch asked for them once per partition
    # and more: resolved once per distinct set of overrides, and again as soon as they change.
    broker = BrokerConfig.load(env={}, overrides={"group.share.delivery.count.limit": "4"})
    overrides: dict[str, dict[str, str]] = {"g": {"share.record.lock.duration.ms": "20000"}}
    configs = ShareConfigs(broker, lambda group_id: overrides.get(group_id, {}))
    first = configs("g")
    assert configs("g") is first and first.partition.record_lock_duration_ms == 20000
    assert configs("other").partition == SharePartitionConfig(4, 30000, 2000)
    overrides["g"]["share.record.lock.duration.ms"] = "25000"  # changed in place, as a config store may
    assert configs("g").partition.record_lock_duration_ms == 25000
    overrides["g"] = {"share.delivery.count.limit": "2"}
    assert configs("g").partition.delivery_count_limit == 2 and configs("g").partition.record_lock_duration_ms == 30000


def test_fetch_returns_the_batches_of_the_acquired_records_after_making_them_durable():
    async def scenario():
        s = Setup()
        for _ in range(4):
            s.logs.produce(TOPIC, 0, 5)
        await s.manager.initialize("g", {TOPIC: [0]})
        writes_before = len(s.state_log.records)
        result = await s.fetch("a", 7)
        assert result.acquired == [AcquiredRecords(0, 9, 1)] and offsets(result) == list(range(10))
        assert len(s.state_log.records) == writes_before + 1  # the acquisition was written first
        assert s.store.state(KEY).batches[0][:2] == (0, 9)
        result = await s.fetch("b", 3, mode=AcquireMode.RECORD_LIMIT)
        assert result.acquired == [AcquiredRecords(10, 12, 1)] and offsets(result) == list(range(10, 15))
        assert (await s.fetch("c", 100)).acquired == [AcquiredRecords(13, 19, 1)]
        assert await s.fetch("d") == ([], [])  # nothing left
        assert s.counts[0] == {"acquired": 10}

    run(scenario())


def test_a_fetch_reads_no_further_than_the_window_can_take():
    # A consumer asks for 50 MB (librdkafka's fetch.max.bytes) and a few hundred records: the read
    # stops where the window (share.partition.max.record.locks, 1000 here) ends, whatever is behind,
    # and past the window's end reads the batches of max_records (and a policy's look-ahead) only.
    async def scenario():
        s = Setup()
        for _ in range(50):
            s.logs.produce(TOPIC, 0, 100)
        await s.manager.initialize("g", {TOPIC: [0]})
        result = await s.manager.acquire(KEY, "a", max_records=250, max_bytes=50 << 20)
        assert result.acquired == [AcquiredRecords(0, 299, 1)]
        assert s.logs.read_offsets[-1] == (0, 300)  # was (0, 1000): 700 records read for nothing
        assert (await s.manager.acquire(KEY, "b", max_records=2000, max_bytes=50 << 20)).acquired == [
            AcquiredRecords(300, 999, 1)]
        assert s.logs.read_offsets[-1] == (300, 1000)
        await s.ack("a", 0, 299, ACCEPT)  # the window moves on: so does the read
        assert (await s.manager.acquire(KEY, "a", max_records=2000, max_bytes=50 << 20)).acquired == [
            AcquiredRecords(1000, 1299, 1)]
        assert s.logs.read_offsets[-1] == (1000, 1300)

    run(scenario())


def test_acknowledgements_that_free_a_full_window_wake_a_waiting_fetch():
    # The window (1000 records here) is full of a's records: b's fetch waits; a's ACCEPT moves the
    # start offset and makes room for the records behind, so it wakes b at once, not at max_wait.
    async def scenario():
        s = Setup()
        for _ in range(15):
            s.logs.produce(TOPIC, 0, 100)
        await s.manager.initialize("g", {TOPIC: [0]})
        assert (await s.fetch("a", 1000)).acquired == [AcquiredRecords(0, 999, 1)]
        assert await s.fetch("b") == ([], [])
        waiting = asyncio.ensure_future(s.manager.wait([KEY], 30))
        await asyncio.sleep(0)  # the waiter registers
        assert await s.ack("a", 0, 99, ACCEPT) == ErrorCode.none
        assert await asyncio.wait_for(waiting, 5) is True
        assert (await s.fetch("b")).acquired == [AcquiredRecords(1000, 1099, 1)]

    run(scenario())


def test_read_uncommitted_never_asks_for_the_last_stable_offset():
    # A partition's first last-stable-offset replays its log for its transactions (1 GB of records
    # read once per partition in the share benchmark): a read_uncommitted group has no use for it.
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 10)
        await s.manager.initialize("g", {TOPIC: [0]})
        assert (await s.fetch("a")).acquired == [AcquiredRecords(0, 9, 1)]
        assert s.logs.lso_asked == 0

    run(scenario())


def test_acknowledgements_are_durable_and_move_the_offsets_and_lag():
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 10)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a")
        assert await s.ack("a", 0, 3, ACCEPT) == ErrorCode.none
        assert await s.ack("a", 6, 7, ACCEPT) == ErrorCode.none
        assert s.manager.describe_offsets("g", [(TOPIC, 0), (TOPIC, 1)]) == [(TOPIC, 0, 4, 4), (TOPIC, 1, -1, -1)]
        assert await s.ack("b", 4, 4, ACCEPT) == ErrorCode.invalid_record_state
        assert await s.ack("a", 4, 40, ACCEPT) == ErrorCode.invalid_request
        assert s.store.state(KEY).start_offset == 4  # each write carries the start offset before it
        info = s.manager.describe_partition(KEY)
        assert info["records"] == {"available": 0, "acquired": 4, "acknowledged": 2, "archived": 0}
        assert info["acquired_by"] == {"a": 4}

    run(scenario())


def test_lock_expiry_wakes_a_waiting_fetch_and_redelivers_with_a_higher_count():
    async def scenario():
        s = Setup(lock_ms=50)
        s.logs.produce(TOPIC, 0, 3)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a")
        assert (await s.fetch("b")).acquired == []
        s.clock.now += 50  # the lock runs out (the timer's delay comes from this clock)
        assert await s.manager.wait([KEY], timeout_s=5)
        assert (await s.fetch("b")).acquired == [AcquiredRecords(0, 2, 2)]
        assert {"lock_expired": 3} in s.counts
        await s.manager.close()

    run(scenario())


def test_delivery_limit_goes_to_the_dead_letter_writer_before_the_archive_is_written():
    async def scenario():
        order = []

        async def dead_letter(key, letters):
            order.append(("dlq", key, letters, len(s.state_log.records)))

        s = Setup(limit=2, dead_letter=dead_letter)
        s.logs.produce(TOPIC, 0, 2)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a")
        await s.ack("a", 0, 1, RELEASE)
        await s.fetch("a")
        writes = len(s.state_log.records)
        assert await s.ack("a", 0, 0, RELEASE) == ErrorCode.none  # the second delivery ends: limit
        assert await s.ack("a", 1, 1, REJECT) == ErrorCode.none
        assert order == [("dlq", KEY, [DeadLetter(0, 0, 2, ArchiveReason.DELIVERY_LIMIT)], writes),
                         ("dlq", KEY, [DeadLetter(1, 1, 2, ArchiveReason.REJECTED)], writes + 1)]
        assert s.manager.describe_offsets("g", [(TOPIC, 0)]) == [(TOPIC, 0, 2, 0)]

    run(scenario())


def test_a_failed_dead_letter_write_keeps_the_record_and_the_ack_fails():
    async def scenario():
        async def dead_letter(key, letters):
            raise KafkaError(ErrorCode.not_enough_replicas, "DLQ topic not writable")

        s = Setup(dead_letter=dead_letter)
        s.logs.produce(TOPIC, 0, 1)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a")
        writes = len(s.state_log.records)
        assert await s.ack("a", 0, 0, REJECT) == ErrorCode.not_enough_replicas
        assert len(s.state_log.records) == writes  # nothing archived
        assert await s.ack("a", 0, 0, ACCEPT) == ErrorCode.none  # still a's

    run(scenario())


def test_release_member_and_waiters():
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 4)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a")
        waiter = asyncio.ensure_future(s.manager.wait([KEY], timeout_s=5))
        await asyncio.sleep(0)
        await s.manager.release_member("g", "a", count_delivery=False)
        assert await waiter
        assert (await s.fetch("b")).acquired == [AcquiredRecords(0, 3, 1)]  # a clean close: not counted
        await s.manager.release_member("g", "b", count_delivery=True)
        assert (await s.fetch("c")).acquired == [AcquiredRecords(0, 3, 2)]
        assert not await s.manager.wait([KEY], timeout_s=0.01)

    run(scenario())


def test_restart_redelivers_what_was_acquired_and_never_what_was_accepted():
    async def scenario():
        s = Setup(limit=3)
        for _ in range(3):
            s.logs.produce(TOPIC, 0, 4)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a", 4)
        await s.fetch("b", 4)
        await s.ack("a", 0, 3, ACCEPT)
        await s.ack("b", 6, 7, ACCEPT)
        await s.manager.close()
        after = Setup(s.state_log, s.logs, limit=3)  # the broker restarts: only the state topic is left
        got = []
        while (r := await after.fetch("c")).acquired:
            got.extend(r.acquired)
        delivered = {o: r.delivery_count for r in got for o in range(r.first_offset, r.last_offset + 1)}
        assert delivered == {4: 2, 5: 2, 8: 1, 9: 1, 10: 1, 11: 1}

    run(scenario())


def test_retention_moves_the_start_offset():
    async def scenario():
        s = Setup()
        for _ in range(3):
            s.logs.produce(TOPIC, 0, 5)
        await s.manager.initialize("g", {TOPIC: [0]})
        s.logs.log_start[(TOPIC, 0)] = 10
        assert (await s.fetch("a")).acquired == [AcquiredRecords(10, 14, 1)]
        assert s.manager.describe_offsets("g", [(TOPIC, 0)])[0][2] == 10

    run(scenario())


def test_read_committed_reads_up_to_the_last_stable_offset():
    async def scenario():
        s = Setup(isolation="read_committed")
        s.logs.produce(TOPIC, 0, 5)
        s.logs.produce(TOPIC, 0, 5)
        s.logs.lso[(TOPIC, 0)] = 5
        await s.manager.initialize("g", {TOPIC: [0]})
        assert (await s.fetch("a")).acquired == [AcquiredRecords(0, 4, 1)]
        assert (await s.fetch("a")).acquired == []

    run(scenario())


def test_read_committed_never_delivers_aborted_transactions_or_markers():
    async def scenario():
        s = Setup(isolation="read_committed")
        s.logs.produce(TOPIC, 0, 3, producer_id=5, transactional=True)  # 0-2, aborted
        s.logs.produce(TOPIC, 0, 2, producer_id=6, transactional=True)  # 3-4, committed
        s.logs.produce(TOPIC, 0, 1, producer_id=5, transactional=True, control=True)  # 5: ABORT
        s.logs.produce(TOPIC, 0, 1, producer_id=6, transactional=True, control=True)  # 6: COMMIT
        s.logs.produce(TOPIC, 0, 2, producer_id=5, transactional=True)  # 7-8: pid 5's next transaction
        s.logs.produce(TOPIC, 0, 1, producer_id=5, transactional=True, control=True)  # 9: COMMIT
        s.logs.aborted[(TOPIC, 0)] = [(5, 0)]
        await s.manager.initialize("g", {TOPIC: [0]})
        result = await s.fetch("a")
        assert result.acquired == [AcquiredRecords(3, 4, 1), AcquiredRecords(7, 8, 1)]
        assert offsets(result) == [3, 4, 7, 8]
        await s.ack("a", 3, 4, ACCEPT)
        await s.ack("a", 7, 8, ACCEPT)
        assert s.manager.describe_offsets("g", [(TOPIC, 0)]) == [(TOPIC, 0, 10, 0)]
        uncommitted = Setup(logs=s.logs)  # read_uncommitted: the aborted records too, never the markers
        await uncommitted.manager.initialize("g", {TOPIC: [0]})
        assert (await uncommitted.fetch("a")).acquired == [AcquiredRecords(0, 4, 1), AcquiredRecords(7, 8, 1)]

    run(scenario())


def test_forget_partition_drops_it_from_memory_and_reloads_it_from_the_state():
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 4)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a")
        assert await s.manager.acknowledge(KEY, "a", [AckBatch(0, 3, (AcknowledgeType.RENEW,))],
                                           renew_allowed=False) == ErrorCode.invalid_request
        s.manager.forget_partition(TOPIC, 0)  # leadership moved away and back
        assert s.manager.loaded() == []
        assert (await s.fetch("b")).acquired == [AcquiredRecords(0, 3, 2)]  # a's acquisition was durable

    run(scenario())


def test_alter_and_delete_offsets():
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 10)
        await s.manager.initialize("g", {TOPIC: [0]})
        await s.fetch("a", 10)
        await s.manager.alter_offsets("g", {(TOPIC, 0): 8})
        assert s.store.state(KEY).state_epoch == 1
        assert (await s.fetch("b")).acquired == [AcquiredRecords(8, 9, 1)]
        await s.manager.delete_offsets("g", [(TOPIC, 0)])
        assert s.store.state(KEY) is None and s.manager.describe_partition(KEY) is None
        assert s.manager.state_keys("g") == []

    run(scenario())


def test_loading_once_for_concurrent_fetches_and_state_write_failures():
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 6)
        await s.manager.initialize("g", {TOPIC: [0]})
        results = await asyncio.gather(s.fetch("a", 1, mode=AcquireMode.RECORD_LIMIT),
                                       s.fetch("b", 1, mode=AcquireMode.RECORD_LIMIT))
        assert sorted(r.acquired[0].first_offset for r in results) == [0, 1]
        s.state_log.fail_next = 1
        with pytest.raises(KafkaError) as info:
            await s.fetch("c", 2, mode=AcquireMode.RECORD_LIMIT)
        assert info.value.error_code == ErrorCode.request_timed_out
        assert (await s.fetch("c", 2, mode=AcquireMode.RECORD_LIMIT)).acquired == [AcquiredRecords(2, 3, 1)]

    run(scenario())


def test_a_cancelled_fetch_still_finishes_its_durable_step():
    async def scenario():
        s = Setup()
        s.logs.produce(TOPIC, 0, 4)
        await s.manager.initialize("g", {TOPIC: [0]})
        s.state_log.gate = asyncio.Event()
        calls = s.state_log.calls
        fetch = asyncio.ensure_future(s.fetch("a"))
        for _ in range(100):  # until the acquisition is being written
            if s.state_log.calls > calls:
                break
            await asyncio.sleep(0)
        fetch.cancel()
        s.state_log.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await fetch
        for _ in range(100):
            if not s.manager._tasks:
                break
            await asyncio.sleep(0)
        # durable and committed alike: the records are a's until their lock runs out
        assert s.store.state(KEY).batches[0][:4] == (0, 3, 0, 1)
        assert s.manager.describe_partition(KEY)["acquired_by"] == {"a": 4}
        assert (await s.fetch("b")).acquired == []

    run(scenario())


@pytest.mark.parametrize("leader_epochs, refused_with", [(True, ErrorCode.not_leader_or_follower),
                                                       (False, ErrorCode.fenced_state_epoch)])
def test_a_previous_leader_still_writing_after_a_failover_is_fenced(leader_epochs, refused_with):
    """Two brokers over one state topic: the new leader loads the share-partition (a snapshot under
    its leader epoch, or its first write a snapshot where the epoch is not known); an
    acknowledgement the old leader still makes afterwards does not count for anyone replaying the
    topic, and the old leader answers it with an error (the client retries at the new leader), never
    as if it counted; the records stay to be delivered again (at least once, never lost)."""
    async def scenario():
        old = Setup()
        old.logs.produce(TOPIC, 0, 5)
        if leader_epochs:
            old.logs.leader_epochs[(TOPIC, 0)] = 3
        await old.manager.initialize("g", {TOPIC: [0]})
        assert offsets(await old.fetch("a")) == [0, 1, 2, 3, 4]
        if leader_epochs:
            old.logs.leader_epochs[(TOPIC, 0)] = 4  # the failover
        new = Setup(old.state_log, old.logs)  # replays the topic as it is now
        result = await new.fetch("b")
        assert [a.delivery_count for a in result.acquired] == [2]
        assert await old.ack("a", 0, 4, ACCEPT) == refused_with  # the old leader does not know yet
        assert old.manager.describe_partition(KEY)["loaded"] is False  # and no longer serves it
        replayed = old.state_log.replay_into(ShareStateStore(old.state_log.append, old.clock)).state(KEY)
        assert replayed.start_offset == 0 and [(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                                               for b in replayed.batches] == [(0, 4, 0, 2)]
        assert await new.ack("b", 0, 4, ACCEPT) == ErrorCode.none  # the new leader's own go on counting
        again = old.state_log.replay_into(ShareStateStore(old.state_log.append, old.clock)).state(KEY)
        assert [(b.first_offset, b.last_offset, b.delivery_state) for b in again.batches if b.last_offset >= again.start_offset
                ] in ([(0, 4, 2)], [])
        assert again.leader_epoch == (4 if leader_epochs else -1)

    run(scenario())


def test_a_leader_loading_rebuilds_its_fencing_snapshot_when_the_old_one_wrote_meanwhile():
    """The old leader's acknowledgement lands between the new leader's catch-up and its fencing
    snapshot: the snapshot is built again from the state including it, so the acknowledgement the
    old leader confirmed counts."""
    async def scenario():
        old = Setup()
        old.logs.produce(TOPIC, 0, 5)
        old.logs.leader_epochs[(TOPIC, 0)] = 3
        await old.manager.initialize("g", {TOPIC: [0]})
        await old.fetch("a")
        old.logs.leader_epochs[(TOPIC, 0)] = 4
        new = Setup(old.state_log, old.logs)
        old.state_log.gate = asyncio.Event()  # appends wait (and then go in the order they came)
        acking = asyncio.ensure_future(old.ack("a", 0, 1, ACCEPT))
        for _ in range(5):
            await asyncio.sleep(0)
        loading = asyncio.ensure_future(new.fetch("b"))  # its snapshot is built without the acknowledgement
        for _ in range(5):
            await asyncio.sleep(0)
        old.state_log.gate.set()
        assert await acking == ErrorCode.none  # written before the new leader's snapshot: it counts
        result = await loading
        assert [(a.first_offset, a.last_offset) for a in result.acquired] == [(2, 4)]
        replayed = old.state_log.replay_into(ShareStateStore(old.state_log.append, old.clock)).state(KEY)
        assert replayed.start_offset == 2 and replayed.leader_epoch == 4

    run(scenario())
