"""Issue 14's queue features on the share manager over real record batches: priority (with aging,
inside the look-ahead window), delayed delivery by header or topic default, TTL expiry (archived and
dead-lettered as ``expired``), CEL filters (archived as ``filtered``), retry back-off, bad input
counted and given the default behaviour, and the batch-level short cut."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.config import BrokerConfig
from tidelog.protocol.records import BATCH_HEADER_SIZE, build_batch, parse_batch_header
from tidelog.queues import queue_features, record_attrs
from tidelog.queues.filters import FAILED, compile_filter
from tidelog.queues.in_flight import ArchiveReason, DeadLetter
from tidelog.queues.log_batches import parse_log_batches
from tidelog.queues.manager import ShareConfig, ShareManager
from tidelog.queues.queue_features import QueueFeatures
from tidelog.queues.record_attrs import QueueSettings, parse_deliver_at, scan_batch
from tidelog.queues.retry import RetryBackoff
from tidelog.queues.share_partition import AckBatch, AcknowledgeType, AcquireMode
from tidelog.queues.state_records import ShareStateKey
from tidelog.queues.state_store import ShareStateStore

from .share_helpers import FakeLogs, FakeStateLog

TOPIC = uuid.UUID(int=14)
KEY = ShareStateKey("g", TOPIC, 0)
ACCEPT, RELEASE = AcknowledgeType.ACCEPT, AcknowledgeType.RELEASE
NOW = 1_700_000_000_000


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Logs(FakeLogs):
    """FakeLogs that knows each batch's last offset (its reads do not decode the records)."""

    def __init__(self) -> None:
        super().__init__()
        self.lasts: list[int] = []

    def log_end(self, topic_id, partition):
        return self.lasts[-1] + 1 if self.lasts else 0

    def read(self, topic_id, partition, offset, max_bytes, max_offset):
        out = bytearray()
        for (base, data), last in zip(self.batches.get((topic_id, partition), []), self.lasts):
            if last < offset or base >= max_offset:
                continue
            if out and len(out) + len(data) > max_bytes:
                break
            out += data
        return bytes(out)


class Setup:
    def __init__(self, topic_configs: dict | None = None, group_configs: dict | None = None, *, limit: int = 5,
                 dead_letter=None) -> None:
        self.broker_config = BrokerConfig.load(env={})
        self.topic_configs = dict(topic_configs or {})
        self.group_configs = dict(group_configs or {})
        self.logs = Logs()
        self.state_log = FakeStateLog()
        self.clock = Clock()
        self.store = ShareStateStore(self.state_log.append, self.clock)
        self.counts: dict[str, int] = {}
        self.features = QueueFeatures(self.broker_config, lambda key: (self.topic_configs, self.group_configs),
                                      on_counts=self.add)
        self.manager = ShareManager(self.store, self.logs, self.share_config, dead_letter=dead_letter,
                                    on_counts=self.add, clock_ms=self.clock, policies=self.features.policy,
                                    lookahead=self.features.lookahead_records, on_unload=self.features.forget)

    def share_config(self, group):
        config = ShareConfig.resolve(self.broker_config, {"share.auto.offset.reset": "earliest", **self.group_configs,
                                                          "share.delivery.count.limit": "5"})
        return config

    def add(self, key, counts):
        for name, n in counts.items():
            self.counts[name] = self.counts.get(name, 0) + n

    def produce(self, records, timestamp_ms: int | None = None) -> int:
        """One batch of (key, value, headers) records; returns its base offset."""
        base = self.logs.log_end(TOPIC, 0)
        batch = build_batch(records, base_offset=base, timestamp_ms=NOW if timestamp_ms is None else timestamp_ms)
        self.logs.batches.setdefault((TOPIC, 0), []).append((base, batch))
        self.logs.lasts.append(base + len(records) - 1)
        return base

    async def fetch(self, max_records: int = 100, member: str = "m", mode=AcquireMode.RECORD_LIMIT) -> list[int]:
        result = await self.manager.acquire(KEY, member, max_records=max_records, max_bytes=1 << 24, mode=mode)
        acquired = [o for r in result.acquired for o in range(r.first_offset, r.last_offset + 1)]
        spans = [(batch.base_offset, batch.last_offset) for buffer in result.records
                 for _, _, batch in parse_log_batches(buffer)]
        assert all(any(f <= o <= l for f, l in spans) for o in acquired)  # the returned batches hold them
        return acquired

    async def ack(self, offsets, ack_type=ACCEPT, member: str = "m") -> None:
        code = await self.manager.acknowledge(KEY, member, [AckBatch(o, o, (ack_type,)) for o in sorted(offsets)])
        assert code == 0


def run(coro):
    return asyncio.run(coro)


def header(name: str, value) -> tuple[str, bytes]:
    return name, str(value).encode()


# --- priority -----------------------------------------------------------------------------------

def test_priority_acquires_higher_first_then_by_offset_in_non_contiguous_ranges():
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true"})
        priorities = [1, 5, 9, 5, 0, 9, 3]
        s.produce([(None, b"v", [header("priority", p)]) for p in priorities])
        first = await s.fetch(3)
        assert first == [1, 2, 5]  # the 9s and the first 5 (records come back in offset order)
        result = await s.manager.acquire(KEY, "m", max_records=2, max_bytes=1 << 20, mode=AcquireMode.RECORD_LIMIT)
        assert [(r.first_offset, r.last_offset) for r in result.acquired] == [(3, 3), (6, 6)]  # 5, then 3
        assert await s.fetch(10) == [0, 4]
    run(scenario())


def test_the_read_reaches_the_look_ahead_and_stops_there():
    """The manager reads past the window's end only what an acquisition can let in (max_records and
    the policy's look-ahead, whole batches): a 9 inside the look-ahead is taken first, one past it
    waits for a later fetch, as when the read went to the window's end."""
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true", "tidelog.priority.lookahead.records": "200",
                   "tidelog.priority.aging.ms": "0"})
        reads = []
        read = s.logs.read
        s.logs.read = lambda *args: reads.append(args[2:]) or read(*args)
        for base in range(0, 1000, 50):
            s.produce([(None, b"v", [header("priority", 9 if base + i in (205, 260) else 1)]) for i in range(50)])
        first = await s.fetch(10)
        assert 205 in first and 260 not in first and len(first) == 10
        assert reads[0][0] == 0 and reads[0][2] == 0 + 10 + 200  # (offset, max_bytes, max_offset)
    run(scenario())


def test_ten_thousand_mixed_priorities_come_out_priority_sorted_within_the_window():
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true", "tidelog.priority.lookahead.records": "1000",
                   "tidelog.priority.aging.ms": "0"})
        rng = random.Random(14)
        priorities = [rng.randint(0, 9) for _ in range(10_000)]
        for i in range(0, 10_000, 500):
            s.produce([(None, b"v", [header("priority", p)]) for p in priorities[i:i + 500]])
        order = []
        while len(order) < 10_000:
            got = await s.fetch(7)
            assert got, f"stuck after {len(order)}"
            await s.ack(got)
            order.extend(got)
        assert sorted(order) == list(range(10_000))
        # Each acquisition takes the best of what was in the window: never a lower priority while a higher one
        # sat Available in the window (start offset .. start + look-ahead) at that moment.
        taken: set[int] = set()
        start = 0
        for i in range(0, len(order), 7):
            step = order[i:i + 7]
            window_end = start + 1000 + 7
            waiting = [o for o in range(start, min(window_end, 10_000)) if o not in taken and o not in step]
            best_waiting = max((priorities[o] for o in waiting), default=-1)
            assert min(priorities[o] for o in step) >= best_waiting, (i, step)
            taken.update(step)
            while start in taken:
                start += 1
    run(scenario())


def test_aging_lets_an_old_low_priority_record_past_a_flood_of_high_ones():
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true", "tidelog.priority.aging.ms": "1000"})
        s.produce([(None, b"low", [header("priority", 0)])], timestamp_ms=NOW)
        s.clock.now = NOW + 1000
        s.produce([(None, b"high", [header("priority", 9)]) for _ in range(5)], timestamp_ms=s.clock.now)
        assert await s.fetch(5) == [1, 2, 3, 4, 5]  # 9 beats 0 + 1 level of aging
        # The flood goes on; a high record produced 9 aging periods after the low one no longer passes it.
        s.clock.now = NOW + 9000
        s.produce([(None, b"high", [header("priority", 9)]) for _ in range(5)], timestamp_ms=s.clock.now)
        assert await s.fetch(1) == [0]
    run(scenario())


def test_a_bad_priority_gets_the_default_and_is_counted():
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true", "tidelog.priority.default": "4"})
        s.produce([(None, b"v", [header("priority", "high")]), (None, b"v", [header("priority", 3)]),
                   (None, b"v", [header("priority", 12)]), (None, b"v", [])])
        assert await s.fetch(3) == [0, 2, 3]  # the default 4 beats the 3
        assert await s.fetch(3) == [1]
        assert s.counts["invalid_priority"] == 2
    run(scenario())


# --- delayed delivery ---------------------------------------------------------------------------

def test_a_delayed_record_is_not_acquired_before_its_time_and_others_pass_it():
    async def scenario():
        s = Setup()
        s.produce([(None, b"later", [header("tidelog-delay-ms", 5000)]), (None, b"now", []),
                   (None, b"at", [header("tidelog-deliver-at", NOW + 2000)])])
        assert await s.fetch(10) == [1]
        sp = dict(s.manager.loaded())[KEY]
        assert sp.next_deadline_ms() == NOW + 2000  # the manager's timer wakes fetches then
        s.clock.now = NOW + 1999
        assert await s.fetch(10) == []
        s.clock.now = NOW + 2000
        assert await s.fetch(10) == [2]
        s.clock.now = NOW + 5000
        assert await s.fetch(10) == [0]
    run(scenario())


def test_topic_default_delay_and_rfc3339_dates():
    async def scenario():
        s = Setup({"tidelog.delay.ms": "3000"})
        s.produce([(None, b"a", []), (None, b"b", [header("tidelog-deliver-at", "2023-11-14T22:13:21Z")])])
        assert parse_deliver_at(b"2023-11-14T22:13:21Z") == 1_700_000_001_000
        assert parse_deliver_at(b"2023-11-14T23:13:21+01:00") == 1_700_000_001_000
        assert await s.fetch(10) == []
        s.clock.now = NOW + 1000
        assert await s.fetch(10) == [1]  # its own date wins over the topic's delay
        s.clock.now = NOW + 3000
        assert await s.fetch(10) == [0]
    run(scenario())


def test_bad_delays_are_delivered_at_once_and_counted():
    async def scenario():
        s = Setup()
        s.produce([(None, b"a", [header("tidelog-deliver-at", "next tuesday")]),
                   (None, b"b", [header("tidelog-delay-ms", "-5")]),
                   (None, b"c", [header("tidelog-deliver-at", NOW - 60_000)])])  # in the past: due
        assert await s.fetch(10) == [0, 1, 2]
        assert s.counts["invalid_delay"] == 2
    run(scenario())


def test_delays_survive_a_restart_because_the_headers_say_them_again():
    async def scenario():
        s = Setup()
        s.produce([(None, b"later", [header("tidelog-delay-ms", 5000)]), (None, b"now", [])])
        assert await s.fetch(10) == [1]
        await s.ack([1])
        restarted = ShareManager(s.state_log.replay_into(ShareStateStore(s.state_log.append, s.clock)), s.logs,
                                 s.share_config, clock_ms=s.clock,
                                 policies=QueueFeatures(s.broker_config, lambda key: ({}, {})).policy)
        assert (await restarted.acquire(KEY, "m", max_records=10, max_bytes=1 << 20)).acquired == []
        s.clock.now = NOW + 5000
        assert [(r.first_offset, r.last_offset) for r in
                (await restarted.acquire(KEY, "m", max_records=10, max_bytes=1 << 20)).acquired] == [(0, 0)]
    run(scenario())


# --- TTL ----------------------------------------------------------------------------------------

def test_expired_records_are_archived_and_dead_lettered_as_expired():
    async def scenario():
        letters = []

        async def dead_letter(key, batch):
            letters.extend(batch)

        s = Setup({"tidelog.ttl.ms": "10000"}, dead_letter=dead_letter)
        s.produce([(None, b"a", []), (None, b"b", [header("tidelog-ttl-ms", 60000)])])
        s.clock.now = NOW + 10_000
        assert await s.fetch(10) == [1]
        assert letters == [DeadLetter(0, 0, 0, ArchiveReason.EXPIRED)]
        assert s.counts["expired"] == 1 and s.counts["archived"] == 1
        sp = dict(s.manager.loaded())[KEY]
        assert sp.start_offset == 1
    run(scenario())


def test_a_released_record_that_expires_meanwhile_is_never_delivered_again():
    async def scenario():
        s = Setup()
        s.produce([(None, b"a", [header("tidelog-ttl-ms", 1000)])])
        assert await s.fetch(10) == [0]
        await s.ack([0], RELEASE)
        s.clock.now = NOW + 1000
        assert await s.fetch(10) == []
        assert s.counts["expired"] == 1
    run(scenario())


# --- filters ------------------------------------------------------------------------------------

def test_filtered_out_records_are_archived_for_the_group_and_counted():
    async def scenario():
        letters = []

        async def dead_letter(key, batch):
            letters.extend(batch)

        s = Setup(group_configs={"tidelog.filter": '"type" in headers && headers["type"] == b"order"'},
                  dead_letter=dead_letter)
        s.produce([(b"k", b"v", [header("type", "order")]), (b"k", b"v", [header("type", "refund")]),
                   (b"k", b"v", []), (b"k", b"v", [header("type", "order")])])
        assert await s.fetch(10) == [0, 3]
        assert s.counts["filtered"] == 2 and letters == []
    run(scenario())


def test_a_filter_failing_on_a_record_does_not_match_it_and_is_counted():
    async def scenario():
        s = Setup(group_configs={"tidelog.filter": 'headers["type"] == b"order"'})
        s.produce([(b"k", b"v", [header("type", "order")]), (b"k", b"v", [])])
        assert await s.fetch(10) == [0]
        assert s.counts["filtered"] == 1 and s.counts["filter_errors"] == 1
    run(scenario())


def test_a_changed_filter_decides_from_the_next_fetch_on():
    """The attribute runs are cached per batch while in the window: a new tidelog.filter must not be
    answered from the runs the old one made (the cache goes when the settings change)."""
    async def scenario():
        s = Setup(group_configs={"tidelog.filter": '"type" in headers && headers["type"] == b"a"'})
        s.produce([(None, b"v", [header("type", "ab"[i % 2])]) for i in range(20)])
        # 1 and 3 archived (up to the records taken and right after them), the rest left Available
        assert await s.fetch(2) == [0, 2]
        assert s.counts["filtered"] == 2
        s.group_configs["tidelog.filter"] = '"type" in headers && headers["type"] == b"b"'
        assert await s.fetch(3) == [5, 7, 9]  # the cached runs said 4, 6, 8 match
        assert s.counts["filtered"] == 6  # 4, 6, 8 and 10
        assert await s.fetch(3) == [11, 13, 15]
        s.group_configs["tidelog.filter"] = ""
        assert await s.fetch(3) == [17, 18, 19]
    run(scenario())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=60), st.booleans(), st.data())
def test_filter_runs_are_the_runs_of_equal_verdicts(flags, gaps, data):
    """_flag_runs (no Python step per run) against a walk record by record; with ``gaps`` the offsets
    are those of a compacted batch (a run reaches to the offset before the next run's first)."""
    offsets = None
    positions = list(range(100, 100 + len(flags)))
    if gaps:
        steps = data.draw(st.lists(st.integers(1, 3), min_size=len(flags), max_size=len(flags)))
        positions = [100 + sum(steps[:i]) for i in range(len(flags))]
        offsets = positions
    last = positions[-1] + data.draw(st.integers(0, 2) if gaps else st.just(0))
    expected: list[record_attrs.AttrRun] = []
    for offset, flag in zip(positions, flags):
        if expected and expected[-1].matches == (flag == 1):
            continue
        if expected:
            expected[-1] = expected[-1]._replace(last=offset - 1)
        expected.append(record_attrs.AttrRun(offset, offset, 3, NOW, 7, 9, flag == 1))
    expected[-1] = expected[-1]._replace(last=last)
    runs = record_attrs._flag_runs(bytes(flags), offsets, 100, last, 3, NOW, 7, 9)
    assert runs == expected and all(type(r) is record_attrs.AttrRun for r in runs)


def test_a_filter_reading_the_timestamp_is_evaluated_once_per_timestamp_and_value_in_a_batch():
    f = compile_filter('timestamp % 3 == 0 && "type" in headers && headers["type"] == b"a"')
    records = [(i, NOW + i // 100, None, {"type": b"ab"[i % 2:i % 2 + 1], "trace": b"%d" % i}) for i in range(1000)]
    assert f.judge(records) == [(NOW + i // 100) % 3 == 0 and i % 2 == 0 for i in range(1000)]
    assert f.evaluations == 20  # 10 timestamps x 2 types (not one a record)
    assert len(f._memo) == 0  # nothing kept past the batch


# --- retry back-off -----------------------------------------------------------------------------

def test_retry_backoff_grows_with_the_delivery_count_up_to_its_max():
    backoff = RetryBackoff(1000, 2.0, 3000)
    assert [backoff(n) for n in (1, 2, 3, 4, 100)] == [1000, 2000, 3000, 3000, 3000]
    assert RetryBackoff(0)(3) == 0

    async def scenario():
        s = Setup(group_configs={"tidelog.retry.backoff.initial.ms": "1000", "tidelog.retry.backoff.multiplier": "3"})
        s.produce([(None, b"a", [])])
        assert await s.fetch(10) == [0]
        await s.ack([0], RELEASE)
        s.clock.now = NOW + 999
        assert await s.fetch(10) == []
        s.clock.now = NOW + 1000
        assert await s.fetch(10) == [0]
        await s.ack([0], RELEASE)  # second delivery: 3 s
        s.clock.now = NOW + 3999
        assert await s.fetch(10) == []
        s.clock.now = NOW + 4000
        assert await s.fetch(10) == [0]
    run(scenario())


def test_a_retry_backoff_survives_a_restart_and_a_lock_expiry_backoff_too():
    """Released records (and ones whose lock ran out) keep their back-off deadline in the state
    records (a tagged field of the state batch): a new ShareManager over the replayed state does
    not offer them before it."""
    def restarted(s):
        store = s.state_log.replay_into(ShareStateStore(s.state_log.append, s.clock))
        return ShareManager(store, s.logs, s.share_config, clock_ms=s.clock,
                            policies=QueueFeatures(s.broker_config, lambda key: ({}, s.group_configs)).policy)

    async def offered(manager):
        result = await manager.acquire(KEY, "n", max_records=10, max_bytes=1 << 20, mode=AcquireMode.RECORD_LIMIT)
        return [o for r in result.acquired for o in range(r.first_offset, r.last_offset + 1)]

    async def scenario(expire_lock: bool):
        s = Setup(group_configs={"tidelog.retry.backoff.initial.ms": "10000"})
        s.produce([(None, b"a", []), (None, b"b", [])])
        assert await s.fetch(1) == [0]
        if expire_lock:
            s.clock.now = NOW + 30_000  # the default lock duration
            await s.manager.run_timers(KEY)
        else:
            await s.ack([0], RELEASE)
        released_at = s.clock.now
        s.clock.now = released_at + 9_999
        assert await offered(restarted(s)) == [1]  # only the record never delivered
        s.clock.now = released_at + 10_000
        assert await offered(restarted(s)) == [0, 1]  # (1 was acquired when the broker "stopped")
    run(scenario(expire_lock=False))
    run(scenario(expire_lock=True))


# --- the batch-level short cut and memory -------------------------------------------------------

def test_a_batch_with_nothing_to_do_is_not_walked(monkeypatch):
    def no_walk(*args, **kwargs):
        raise AssertionError("walked a batch with nothing to do")

    monkeypatch.setattr(record_attrs, "_walk", no_walk)
    settings = QueueSettings(priority_enabled=True, delay_ms=1000, ttl_ms=5000)
    batch = build_batch([(None, b"v", [("other", b"1")]) for _ in range(100)], base_offset=10, timestamp_ms=NOW)
    runs = scan_batch(batch, 0, parse_batch_header(batch), settings, {})
    assert runs == [record_attrs.AttrRun(10, 109, 0, NOW, NOW + 1000, NOW + 5000, True)]


def test_the_attribute_cache_is_bounded_by_the_window():
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true"})
        for _ in range(50):
            s.produce([(None, b"v", [header("priority", 1)]) for _ in range(20)])
        for _ in range(50):
            got = await s.fetch(20)
            await s.ack(got)
        assert s.features.cached_batches() <= 1
    run(scenario())


def test_the_attribute_caches_go_with_their_share_partitions_and_are_bounded(monkeypatch):
    async def scenario():
        s = Setup({"tidelog.priority.enable": "true"})
        s.produce([(None, b"v", [header("priority", 1)]), (None, b"w", [header("priority", 2)])])
        assert await s.fetch(1) == [1]
        assert s.features.cached_partitions() == 1
        s.manager.forget_partition(TOPIC, 0)  # leadership lost (or the topic deleted)
        assert s.features.cached_partitions() == 0
        assert sorted(await s.fetch(2, member="n")) == [0, 1]  # loaded again, from the durable state
        assert s.features.cached_partitions() == 1
        await s.manager.delete_offsets("g", [(TOPIC, 0)])  # the group deleted
        assert s.features.cached_partitions() == 0
        # and however many share-partitions come and go without being unloaded: at most the bound
        monkeypatch.setattr(queue_features, "MAX_CACHED_PARTITIONS", 3)
        data = s.logs.read(TOPIC, 0, 0, 1 << 20, 2)
        for group in range(10):
            s.features.policy(ShareStateKey(f"g{group}", TOPIC, 0), data, parse_log_batches(data), 0, 1)
        assert s.features.cached_partitions() == 3
    run(scenario())


def test_a_filter_reading_headers_by_name_is_evaluated_once_per_distinct_value_of_those():
    from tidelog.queues.filters import _header_names, compile_filter

    # (outside the subset judged a batch at a time, queues/filters.py plan_of: CEL through the memo)
    f = compile_filter('"type" in headers && headers["type"] in [b"order"]')
    results = [f(b"k%d" % i, {"type": b"order" if i % 2 else b"refund", "trace": b"%d" % i}, NOW + i) for i in range(100)]
    assert results == [bool(i % 2) for i in range(100)]
    assert f.evaluations == 2
    assert _header_names('headers.type == b"x" && headers["a"] == b"y"') == ("a", "type")
    for other_use in ('size(headers) > 1', 'headers.exists(k, k == "a")', 'headers["a\\"b"] == b""'):
        assert _header_names(other_use) is None  # memoised by every header instead
    g = compile_filter("size(headers) > 1")
    assert [g(None, {"a": b"1", "b": b"%d" % i}, 0) for i in range(3)] == [True] * 3 and g.evaluations == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.none() | st.binary(max_size=300), st.binary(max_size=300),
                          st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=200)), max_size=5),
                          st.integers(0, 10_000)), min_size=1, max_size=20))
def test_the_c_record_walk_reads_what_the_python_one_reads(records):
    if record_attrs._fields_in_c is None:
        pytest.skip("the C extension is not built")
    batch = build_batch([(k, v, h, NOW + t) for k, v, h, t in records], base_offset=100)
    info = parse_batch_header(batch)
    for want_key in (True, False):
        assert list(record_attrs._walk(batch, 61, len(batch), info, False, want_key)) == \
            list(record_attrs._walk_python(batch, 61, len(batch), info, False, want_key))
        for names in ((), ("a",), tuple({n for _, _, headers, _ in records for n, _ in headers})[:3]):
            wanted = set(names)
            assert record_attrs._walk(batch, 61, len(batch), info, False, want_key,
                                      tuple(n.encode() for n in names)) == \
                [(o, t, k, {n: v for n, v in h.items() if n in wanted})
                 for o, t, k, h in record_attrs._walk_python(batch, 61, len(batch), info, False, want_key)]


def test_a_filter_decodes_only_the_headers_it_reads(monkeypatch):
    """A filter over headers by name has the record walk decode those headers (and the ones the
    queue features read), not the others; one over ``headers`` as a whole gets them all. (A filter
    over one header takes the header_values walk: the test below.)"""
    asked = []
    walk = record_attrs._walk
    monkeypatch.setattr(record_attrs, "_walk", lambda *a: asked.append(a[-1]) or walk(*a))
    records = [(b"k", b"v", [header("type", "order" if n % 2 else "refund"), header("trace", n)]) for n in range(10)]
    for expression, names in (('headers["type"] in [b"order"] || "kind" in headers', {b"type", b"kind"}),
                              ('size(headers) == 2', None)):
        s = Setup(group_configs={"tidelog.filter": expression})
        s.produce(records)
        run(s.fetch(100))
        assert asked[-1] is None if names is None else names <= set(asked[-1]) and b"trace" not in asked[-1]
    assert s.counts.get("filtered") is None  # size(headers) == 2 matches every record


_ONE_HEADER_FILTER = compile_filter('"type" in headers && headers["type"] == b"x"')


@given(st.lists(st.tuples(st.none() | st.sampled_from([b"k", b"tidelog-ttl-ms"]),
                          st.sampled_from([b"v", b"tidelog-delay-ms", b"priority"]),
                          st.lists(st.tuples(st.sampled_from(["type", "tidelog-x", "tidelog-ttl-ms", "tidelog-delay-ms",
                                                              "tidelog-deliver-at", "priority", "prio"]),
                                             st.none() | st.sampled_from([b"5", b"100", b"x", b""])), max_size=3)),
                min_size=1, max_size=20),
       st.booleans(), st.sampled_from([0, 1000]))
@settings(max_examples=150, deadline=None)
def test_a_batch_without_headers_of_ours_is_told_by_the_c_walk_as_by_the_byte_search(records, priority_enabled,
                                                                                     delay_ms):
    """Without a filter, whether a batch needs the whole walk is told by the C walk's header names
    (_ours_in); the byte search it replaces gives the same runs (names of ours in keys, values and
    other header names only make it walk for nothing)."""
    if record_attrs._header_values_in_c is None:
        pytest.skip("the C extension is not built")
    batch = build_batch([(key, value, headers, NOW) for key, value, headers in records], base_offset=7)
    info = parse_batch_header(batch)
    settings_ = QueueSettings(priority_enabled=priority_enabled, delay_ms=delay_ms)
    by_walk, by_walk_counts = scan_batch(batch, 0, info, settings_, by_walk_counts := {}), by_walk_counts
    saved = record_attrs._header_values_in_c
    record_attrs._header_values_in_c = None
    try:
        by_search_counts: dict = {}
        by_search = scan_batch(batch, 0, info, settings_, by_search_counts)
    finally:
        record_attrs._header_values_in_c = saved
    assert by_walk == by_search and by_walk_counts == by_search_counts


@given(st.lists(st.lists(st.tuples(st.sampled_from(["type", "trace"]),
                                   st.none() | st.sampled_from([b"x", b"y", b"", b"5"])), max_size=3),
                min_size=1, max_size=30),
       st.none() | st.tuples(st.integers(0, 29), st.sampled_from(["tidelog-ttl-ms", "priority"])), st.booleans())
@settings(max_examples=100, deadline=None)
def test_a_one_header_filter_reads_the_same_from_the_header_values_walk(headers, ours, priority_enabled):
    """The short walk of a filter over one header (_recordwalk.header_values: that header's value per
    record, no object per record) gives the runs the full walk gives, also when a record has a
    header of the queue features (then neither decides: the whole scan does)."""
    if record_attrs._header_values_in_c is None:
        pytest.skip("the C extension is not built")
    if ours is not None:  # a header of the queue features on one record
        headers[ours[0] % len(headers)].append((ours[1], b"5"))
    batch = build_batch([(None, b"v", h, NOW) for h in headers], base_offset=40)
    info = parse_batch_header(batch)
    settings_ = QueueSettings(priority_enabled=priority_enabled, matches=_ONE_HEADER_FILTER)
    short = scan_batch(batch, 0, info, settings_, {})
    saved = record_attrs._header_values_in_c
    record_attrs._header_values_in_c = None
    try:
        full = scan_batch(batch, 0, info, settings_, {})
    finally:
        record_attrs._header_values_in_c = saved
    assert short == full


_RUNS_EXPRESSIONS = (
    '"type" in headers && headers.type in [b"x", b"5", b""]',
    '!("type" in headers) || headers["type"] == null || headers["type"] == b"x"',  # no header, null: match
    'headers["type"] == b"x"',  # fails on a record without the header: no match
)
_RUNS_VALUES = [b"", b"x", b"5", *(b"v%d" % n for n in range(21))]  # (more than the walk's 16 kept ones)


@given(st.lists(st.lists(st.lists(st.tuples(st.sampled_from(["type", "trace"]), st.none() | st.sampled_from(_RUNS_VALUES)),
                                  max_size=3), min_size=1, max_size=60), min_size=1, max_size=3),
       st.sampled_from(_RUNS_EXPRESSIONS), st.sets(st.none() | st.just(False) | st.sampled_from(_RUNS_VALUES)),
       st.none() | st.tuples(st.integers(0, 59), st.sampled_from(["tidelog-delay-ms", "priority"])), st.booleans(),
       st.integers(0, 1 << 40))
@settings(max_examples=150, deadline=None)
def test_a_one_header_filter_judged_in_the_walk_gives_the_runs_of_its_values(batches, expression, judged, ours,
                                                                             priority_enabled, base):
    """_recordwalk.header_runs (the values' verdicts and the runs of matching records in the walk,
    where every value was judged before) gives the runs that header_values and the filter's
    verdicts give, and the full walk, batch after batch of one filter: with values judged before
    or not (then it answers None and the filter judges them), more distinct values in a batch than
    the walk keeps, null values, records without the header or with it twice (the last wins), and a
    header of the queue features on a record (then the whole scan decides)."""
    if record_attrs._header_runs_in_c is None:
        pytest.skip("the C extension is not built (or built before header_runs)")
    f = compile_filter(expression)
    f.verdicts(list(judged))
    settings_ = QueueSettings(priority_enabled=priority_enabled, matches=f)
    others = tuple(sorted(n.encode() for n in {"tidelog-deliver-at", "tidelog-delay-ms", "tidelog-ttl-ms"}
                          | ({"priority"} if priority_enabled else set())))
    for headers in batches:
        if ours is not None:
            headers[ours[0] % len(headers)].append((ours[1], b"5"))
        batch = build_batch([(None, b"v", h, NOW) for h in headers], base_offset=base)
        info = parse_batch_header(batch)
        known = set(f.known_verdicts)
        found = record_attrs._header_runs_in_c(batch, BATCH_HEADER_SIZE, len(batch), len(headers), b"type", others,
                                               f.known_verdicts, base)
        values = [next((v for n, v in reversed(h) if n == "type"), False) for h in headers]
        has_ours = any(n in ("tidelog-delay-ms", "priority" if priority_enabled else "") for h in headers for n, _ in h)
        if not set(values) <= known:  # (a record of ours may come first: then it says so instead)
            assert found is None or found == (None, None, 0, True)
        elif has_ours:
            assert found == (None, None, 0, True)
        else:  # the runs of the verdicts of the values, record by record; the failed ones counted
            flags = [int(f.known_verdicts[v] == 1) for v in values]
            runs = [(base + i, base + j) for i, j in _runs_of_ones(flags)]
            failed = sum(f.known_verdicts[v] == FAILED for v in values)
            assert found == ([a for a, _ in runs], [b for _, b in runs], failed, False)
        in_walk = scan_batch(batch, 0, info, settings_, {})
        saved = record_attrs._header_runs_in_c, record_attrs._header_values_in_c
        record_attrs._header_runs_in_c = None
        try:
            from_values = scan_batch(batch, 0, info, settings_, {})
            record_attrs._header_values_in_c = None
            full = scan_batch(batch, 0, info, settings_, {})
        finally:
            record_attrs._header_runs_in_c, record_attrs._header_values_in_c = saved
        again = scan_batch(batch, 0, info, settings_, {})  # (every value judged now)
        assert in_walk == from_values == full == again


def _runs_of_ones(flags: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        elif flag:
            runs.append((i, i))
    return runs
