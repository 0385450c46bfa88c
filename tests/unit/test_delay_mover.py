"""The delay topic's mover (issue 14, delayed delivery for every consumer): records appended to the
target when due, in due order, with their key, value and headers and the origin headers; exactly
once across a crash in the middle of a round, a lost acknowledgement, a new leader with no
index of its own, and a deposed mover's last batch landing in the target after the new one
looked; the index by due time on disk, read a bucket at a time."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import uuid

import pytest

from tidelog.protocol.records import build_batch, iter_records, parse_batch_header
from tidelog.queues.delay_index import DelayIndex
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.delay_mover import ORIGIN_OFFSET, ORIGIN_TOPIC, DelayMover, MoverDiverged, mover_producer_id
from tidelog.storage.producer_state import ProducerState

NOW = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


class Source:
    """A delay topic's partition: batches of (key, value, headers, timestamp) records."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, bytes]] = []  # (base, last, bytes)
        self.start = 0

    def produce(self, records) -> None:
        base = self.high_watermark()
        self.batches.append((base, base + len(records) - 1, build_batch(records, base_offset=base)))

    def log_start_offset(self) -> int:
        return self.start

    def high_watermark(self) -> int:
        return self.batches[-1][1] + 1 if self.batches else 0

    def read(self, offset: int, max_bytes: int) -> bytes:
        out = bytearray()
        for base, last, data in self.batches:
            if last < offset or base < self.start:
                continue
            if out and len(out) + len(data) > max_bytes:
                break
            out += data
        return bytes(out)


class Target:
    """A target partition with a real idempotent-producer state; can fail an append before or after
    it lands (a crash, a lost acknowledgement), or keep appended batches above its high watermark
    (``hold``: not yet replicated, so not readable)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, bytes]] = []  # (base offset, the batch as stored)
        self.state = ProducerState()
        self.fail_before = 0
        self.fail_after_landing = 0
        self.hold = False
        self.high_watermark = 0
        self.log_start = 0

    def delete_all(self) -> None:
        """Retention deletes every batch (the producer state stays, as a partition's does)."""
        self.log_start = self.end()

    async def append(self, batch: bytes) -> int:
        await asyncio.sleep(0)
        if self.fail_before:
            self.fail_before -= 1
            raise ConnectionError("the broker died before the append")
        info = parse_batch_header(batch)
        base = self.state.check(info)  # a duplicate is answered with its first offsets, not appended
        if base is None:
            base = self.end()
            self.batches.append((base, struct.pack(">q", base) + batch[8:]))
            self.state.update(info, base)
            if not self.hold:
                self.high_watermark = self.end()
        if self.fail_after_landing:
            self.fail_after_landing -= 1
            raise TimeoutError("appended, but the acknowledgement was lost")
        if self.hold:
            raise TimeoutError("not acknowledged by the ISR in time")
        return base

    def release(self) -> None:
        self.hold = False
        self.high_watermark = self.end()

    def end(self) -> int:
        return sum(parse_batch_header(b).record_count for _, b in self.batches)

    async def last_batch(self, producer_id: int) -> tuple[bytes | None, int]:
        entry = self.state.producers.get(producer_id)
        if entry is None or not entry.batches:
            return None, 0
        _, last_sequence, base, _ = entry.batches[-1]
        if base < self.log_start:
            return None, last_sequence + 1
        if base >= self.high_watermark:
            raise KafkaError(ErrorCode.offset_not_available, "not replicated yet")
        return dict(self.batches)[base], last_sequence + 1

    async def earlier_last_batches(self) -> list[bytes]:
        batches = dict(self.batches)
        return [batches[e.batches[-1][2]] for pid, e in self.state.producers.items() if pid < 1 << 62 and e.batches]

    async def read(self, offset: int, max_bytes: int) -> bytes:
        out = bytearray()
        for base, data in self.batches:
            last = base + parse_batch_header(data).last_offset_delta
            if last < offset or base >= self.high_watermark or base < self.log_start:
                continue
            if out and len(out) + len(data) > max_bytes:
                break
            out += data
        return bytes(out)

    def records(self):
        return [r for base, b in self.batches if base >= self.log_start for r in iter_records(b)]

    def origin_offsets(self) -> list[int]:
        return [int(dict(r.headers)[ORIGIN_OFFSET]) for r in self.records()]


class Committed:
    """__consumer_offsets for one delay partition's progress (delay_mover.DelayProgress); a commit
    can fail (the coordinator away)."""

    def __init__(self) -> None:
        self.value: tuple[int, str] | None = None
        self.commits = 0
        self.fail = False

    async def fetch(self):
        return self.value

    async def commit(self, offset: int, metadata: str) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise KafkaError(ErrorCode.coordinator_not_available, "the coordinator is away")
        self.value = (offset, metadata)
        self.commits += 1


async def mover(source, target, directory, clock, producer_id: int, **kw) -> DelayMover:
    m = DelayMover("delays", 0, source, target, DelayIndex(directory, bucket_ms=1000), producer_id, clock, **kw)
    await m.recover()
    return m


async def run_until_idle(m: DelayMover) -> None:
    for _ in range(1000):
        if not await m.step() and m._rebuild_at is None and m._round is None and \
                m._indexed >= m.source.high_watermark():
            return
    raise AssertionError("the mover did not settle")


def delayed(n: int, seed: int = 14) -> list[tuple]:
    rng = random.Random(seed)
    return [(f"k{i}".encode(), f"v{i}".encode(), [("tidelog-delay-ms", str(rng.randint(0, 10_000)).encode()),
                                                  ("app", b"x")], NOW) for i in range(n)]


def test_records_are_moved_when_due_in_due_order_with_their_contents_and_origin(tmp_path):
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        records = delayed(300)
        for i in range(0, 300, 50):
            source.produce(records[i:i + 50])
        m = await mover(source, target, tmp_path, clock, producer_id=7, batch_records=40)
        due = {i: NOW + int(dict(r[2])["tidelog-delay-ms"]) for i, r in enumerate(records)}
        for now in range(NOW, NOW + 10_001, 250):
            clock.now = now
            await run_until_idle(m)
            moved = target.origin_offsets()
            assert sorted(moved) == sorted(o for o, d in due.items() if d <= now)  # no earlier, no later
        moved = target.origin_offsets()
        assert moved == sorted(range(300), key=lambda o: (due[o], o))  # in due order, each once
        first = target.records()[moved.index(5)]
        assert (first.key, first.value) == (b"k5", b"v5")
        headers = dict(first.headers)
        assert headers["app"] == b"x" and headers[ORIGIN_TOPIC] == b"delays"
        assert m.next_due_ms() is None
    asyncio.run(scenario())


@pytest.mark.parametrize("failure", ["fail_before", "fail_after_landing"])
def test_exactly_once_across_a_crash_in_the_middle_of_a_round(tmp_path, failure):
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"1000")], NOW) for i in range(200)])
        first = await mover(source, target, tmp_path, clock, producer_id=1, batch_records=30)
        clock.now = NOW + 1000
        target_appends = 0
        original = target.append

        async def append_then_crash(batch):
            nonlocal target_appends
            target_appends += 1
            if target_appends == 3:
                setattr(target, failure, 1)
            return await original(batch)

        target.append = append_then_crash
        with pytest.raises((ConnectionError, TimeoutError)):
            for _ in range(10):
                await first.step()
        target.append = original
        assert 0 < len(target.origin_offsets()) < 200
        # The broker died: a new mover (the delay partition's producer id) goes on where the target says.
        second = await mover(source, target, tmp_path, clock, producer_id=1, batch_records=30)
        await run_until_idle(second)
        assert target.origin_offsets() == list(range(200))
    asyncio.run(scenario())


def test_a_retried_append_whose_acknowledgement_was_lost_is_not_appended_twice(tmp_path):
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        source.produce([(b"k", b"v", [], NOW) for _ in range(10)])
        m = await mover(source, target, tmp_path, clock, producer_id=3)
        target.fail_after_landing = 1
        with pytest.raises(TimeoutError):
            for _ in range(10):
                await m.step()
        await run_until_idle(m)  # the same batch again: the producer state answers it as a duplicate
        assert target.origin_offsets() == list(range(10))
    asyncio.run(scenario())


def test_a_new_leader_rebuilds_its_index_from_the_log_and_moves_each_record_once(tmp_path):
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"%d" % (i % 3 * 5000))], NOW) for i in range(30)])
        old = await mover(source, target, tmp_path / "old-leader", clock, producer_id=1)
        await run_until_idle(old)
        assert sorted(target.origin_offsets()) == list(range(0, 30, 3))
        clock.now = NOW + 5000
        new = await mover(source, target, tmp_path / "new-leader", clock, producer_id=1)  # an empty disk
        await run_until_idle(new)
        clock.now = NOW + 10_000
        await run_until_idle(new)
        assert sorted(target.origin_offsets()) == list(range(30))
    asyncio.run(scenario())


def hold_from(target: Target, nth: int) -> None:
    """From the target's ``nth`` append on, batches stay above its high watermark (not replicated)."""
    original, appends = target.append, 0

    async def append(batch):
        nonlocal appends
        appends += 1
        if appends == nth:
            target.hold = True
        return await original(batch)

    target.append = append


def test_a_deposed_movers_batch_landing_after_the_new_mover_looked_is_not_moved_twice(tmp_path):
    """The delay partition's old leader appended a batch the target had not replicated yet when the
    new leader's mover started (above its high watermark): the new mover waits for it
    (OFFSET_NOT_AVAILABLE) and goes on after it. Both are the delay partition's producer id."""
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"1000")], NOW) for i in range(200)])
        producer_id = mover_producer_id(uuid.UUID(int=14), 0)
        old = await mover(source, target, tmp_path / "old-leader", clock, producer_id, batch_records=30)
        clock.now = NOW + 1000
        hold_from(target, 3)
        with pytest.raises(TimeoutError):
            for _ in range(10):
                await old.step()
        assert len(target.origin_offsets()) == 90 and target.high_watermark == 60
        with pytest.raises(KafkaError) as waiting:
            await mover(source, target, tmp_path / "new-leader", clock, producer_id, batch_records=30)
        assert waiting.value.error_code == ErrorCode.offset_not_available
        target.release()
        new = await mover(source, target, tmp_path / "new-leader", clock, producer_id, batch_records=30)
        assert new._sequence == 90
        await run_until_idle(new)
        assert target.origin_offsets() == list(range(200))
    asyncio.run(scenario())


def test_a_deposed_mover_still_appending_makes_its_successor_start_again(tmp_path):
    """A deposed mover that has not learnt it was deposed appends a round after its successor
    started. The successor plans that round differently (a later time): its batch of the same
    sequence and size is answered as the other one, the read-back shows another round, and it
    stops (MoverDiverged); one of another size is refused (OUT_OF_ORDER_SEQUENCE_NUMBER). Started
    again, it goes on after the other's round: every record once."""
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"%d" % (1000 if i < 30 else 2000))], NOW)
                        for i in range(60)])
        producer_id = mover_producer_id(uuid.UUID(int=14), 0)
        old = await mover(source, target, tmp_path / "old-leader", clock, producer_id, batch_records=30)
        clock.now = NOW + 1000
        await run_until_idle(old)
        assert target.origin_offsets() == list(range(30))
        new = await mover(source, target, tmp_path / "new-leader", clock, producer_id, batch_records=30)
        clock.now = NOW + 2000
        await run_until_idle(old)  # the deposed one moves 30..59
        clock.now = NOW + 2500
        await run_until_idle(new)  # rebuilds its index
        with pytest.raises(MoverDiverged):
            await new.step()  # its round 2: the same records, until a later time
        again = await mover(source, target, tmp_path / "new-leader", clock, producer_id, batch_records=30)
        await run_until_idle(again)
        assert target.origin_offsets() == list(range(60))
        source.produce([(b"k", b"late", [("tidelog-delay-ms", b"0")], NOW + 2500)])
        stale = await mover(source, target, tmp_path / "stale", clock, producer_id, batch_records=30)
        await run_until_idle(again)  # offset 60 moved
        source.produce([(b"k", b"later", [("tidelog-delay-ms", b"0")], NOW + 2500)])
        with pytest.raises(KafkaError) as refused:
            await run_until_idle(stale)  # 60 and 61 in one batch, at 60's sequence: refused
        assert refused.value.error_code == ErrorCode.out_of_order_sequence_number
        await run_until_idle(again)
        assert target.origin_offsets() == list(range(62))
    asyncio.run(scenario())


def test_movers_producer_ids_are_per_delay_partition_and_above_allocated_ones():
    topic = uuid.UUID(int=7)
    ids = {mover_producer_id(topic, p) for p in range(100)} | {mover_producer_id(uuid.UUID(int=8), 0)}
    assert len(ids) == 101 and all(1 << 62 <= i < 1 << 63 for i in ids)
    assert mover_producer_id(topic, 3) == mover_producer_id(uuid.UUID(int=7), 3)


def test_the_index_keeps_due_times_on_disk_by_bucket(tmp_path):
    index = DelayIndex(tmp_path, bucket_ms=1000)
    index.add([(NOW + 100, 1), (NOW + 5500, 2), (NOW + 900, 3), (NOW + 100, 1)])
    assert len(index.buckets()) == 2
    assert index.between(NOW, NOW + 1000, 10) == [(NOW + 100, 1), (NOW + 900, 3)]
    assert index.between(NOW, NOW + 1000, 3) == [(NOW + 100, 1)]
    assert index.next_due_after(NOW + 900, 10) == NOW + 5500
    with open(tmp_path / f"{(NOW + 5500) // 1000:020d}.due", "ab") as f:
        f.write(b"\x00\x01")  # a torn entry from a crash mid-write is left out
    assert index.between(NOW + 1000, NOW + 6000, 10) == [(NOW + 5500, 2)]
    index.drop_through(NOW + 999)
    assert index.buckets() == [(NOW + 5500) // 1000]


def test_a_stale_local_copy_from_a_clock_ahead_does_not_override_the_targets_batch(tmp_path):
    """Broker A, its clock a minute ahead, moved records and then rounds with nothing to move (its
    local copy of the progress is ahead of its last batch in the target); broker B (a correct clock)
    took the delay partition over, went on from A's last batch and moved newer records, its round's
    time still below A's copy's (the time moved up to never goes back). A leads again: the target's
    last batch (B's) is where the mover goes on, not A's older copy with the later time (that moved
    B's records a second time). A local copy counts only as the continuation of the target's last
    batch it was written after (the same next sequence)."""
    async def scenario():
        clock_a, clock_b, source, target = Clock(), Clock(), Source(), Target()
        clock_a.now = NOW + 60_000
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"1000")], NOW) for i in range(10)])
        producer_id = mover_producer_id(uuid.UUID(int=14), 0)
        a = await mover(source, target, tmp_path / "a", clock_a, producer_id)
        await run_until_idle(a)
        clock_a.now += 5000
        await run_until_idle(a)  # an empty round: A's copy says due <= NOW + 65 s
        assert target.origin_offsets() == list(range(10))
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW + 2000) for i in range(10, 20)])
        clock_b.now = NOW + 3000
        b = await mover(source, target, tmp_path / "b", clock_b, producer_id)
        await run_until_idle(b)
        assert target.origin_offsets() == list(range(20))
        clock_a.now += 1000
        again = await mover(source, target, tmp_path / "a", clock_a, producer_id)
        await run_until_idle(again)
        assert target.origin_offsets() == list(range(20))
    asyncio.run(scenario())


def test_an_idle_mover_writes_its_local_copy_at_most_every_few_seconds(tmp_path):
    """The local copy of the progress is written after a round that took records; an idle mover's
    rounds (one at every look, 5 a second) write it at most every COPY_EVERY_MS (the file writes were
    ~90% of an idle round's CPU)."""
    from tidelog.queues.delay_mover import COPY_EVERY_MS, STATE_FILE

    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        source.produce([(b"k", b"v", [("tidelog-delay-ms", b"0")], NOW)])
        m = await mover(source, target, tmp_path, clock, producer_id=1)
        await run_until_idle(m)
        copy = (tmp_path / STATE_FILE).read_text()
        assert target.origin_offsets() == [0]
        for _ in range(COPY_EVERY_MS // 200 - 1):
            clock.now += 200
            await m.step()
        assert (tmp_path / STATE_FILE).read_text() == copy
        clock.now += 200
        await m.step()
        assert (tmp_path / STATE_FILE).read_text() != copy
        source.produce([(b"k", b"w", [("tidelog-delay-ms", b"0")], clock.now)])
        await m.step()
        assert f'"after_ms": {clock.now}' in (tmp_path / STATE_FILE).read_text()  # at once after a move
    asyncio.run(scenario())


def test_a_new_leader_without_a_copy_goes_on_from_the_committed_progress_when_the_targets_batch_is_gone(tmp_path, caplog):
    """The mover commits its progress (replicated, in __consumer_offsets) at each batch; the
    target's retention deletes its batches (its producer state still names the last sequence);
    a mover on another broker, with no local copy, goes on from the committed progress (a WARNING
    says so) instead of moving every record still in the delay topic again."""
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"%d" % (i % 3 * 1000))], NOW) for i in range(30)])
        first = await mover(source, target, tmp_path / "a", clock, 1, batch_records=4, progress=committed)
        clock.now = NOW + 1000
        await run_until_idle(first)
        assert sorted(target.origin_offsets()) == [o for o in range(30) if o % 3 < 2]
        assert committed.commits == 6  # before each of the 5 batches (20 records), and at the round's end
        assert committed.value[0] == 30
        target.delete_all()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW + 1000) for i in range(30, 40)])
        clock.now = NOW + 2000
        second = await mover(source, target, tmp_path / "b", clock, 1, batch_records=4, progress=committed)
        assert second.recovered_from == "committed"
        await run_until_idle(second)
        assert sorted(target.origin_offsets()) == [o for o in range(30) if o % 3 == 2] + list(range(30, 40))
    asyncio.run(scenario())
    assert "going on from its progress committed to __consumer_offsets (group __tidelog-delay-mover)" in caplog.text


async def crash_at_the_third_append(target: Target, m: DelayMover, *, after_landing: bool) -> None:
    """Run ``m`` until its broker dies at its third append to ``target``: before the batch lands, or
    after the target took it (its acknowledgement never seen)."""
    original, appends = target.append, 0

    async def dies(batch):
        nonlocal appends
        appends += 1
        if appends == 3 and not after_landing:
            raise ConnectionError("the broker died")
        base = await original(batch)
        if appends == 3:
            raise ConnectionError("the broker died after the target's acknowledgement")
        return base

    target.append = dies
    try:
        with pytest.raises(ConnectionError):
            await run_until_idle(m)
    finally:
        target.append = original


def test_a_crash_in_the_middle_of_a_round_then_its_batches_deleted_resumes_the_round_from_the_committed_progress(tmp_path):
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"1000")], NOW) for i in range(100)])
        first = await mover(source, target, tmp_path / "a", clock, 1, batch_records=30, progress=committed)
        clock.now = NOW + 1000
        await crash_at_the_third_append(target, first, after_landing=False)
        assert target.origin_offsets() == list(range(60))
        target.delete_all()
        second = await mover(source, target, tmp_path / "b", clock, 1, batch_records=30, progress=committed)
        await run_until_idle(second)
        assert target.origin_offsets() == list(range(60, 100))
    asyncio.run(scenario())


def test_a_crash_between_the_targets_acknowledgement_and_the_commit_then_the_batch_deleted_moves_nothing_twice(tmp_path):
    """The broker dies after the target acknowledged a batch and before the progress after it was
    committed; the target's retention deletes the batch; a broker without a copy of the progress
    takes over. The progress is committed before each batch, with the progress before it and the
    sequence the batch starts at: the target's next sequence says whether the batch landed, so
    the new mover goes on after it (before: it went on from the progress of the batch before, and
    moved the batch's 5 records again)."""
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(20)])
        first = await mover(source, target, tmp_path / "a", clock, 1, batch_records=5, progress=committed)
        await crash_at_the_third_append(target, first, after_landing=True)
        assert target.origin_offsets() == list(range(15))
        # What an earlier version reads (the round, the sequence) is the progress before the batch:
        # never ahead of what was moved; "after" is the progress once the batch is appended.
        progress = json.loads(committed.value[1])
        assert (progress["round"][4:], progress["sequence"], progress["after"]["sequence"]) == ([9, 20], 10, 15)
        target.delete_all()
        second = await mover(source, target, tmp_path / "b", clock, 1, batch_records=5, progress=committed)
        assert second.recovered_from == "committed"
        await run_until_idle(second)
        assert target.origin_offsets() == list(range(15, 20))
        # And where the batch did not land (the broker died before the append): from before it.
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(20, 30)])
        target.fail_before = 1
        with pytest.raises(ConnectionError):
            await run_until_idle(second)
        target.delete_all()
        third = await mover(source, target, tmp_path / "c", clock, 1, batch_records=5, progress=committed)
        assert third.recovered_from == "committed"
        await run_until_idle(third)
        assert target.origin_offsets() == list(range(20, 30))
    asyncio.run(scenario())


def test_the_progress_continuing_the_targets_sequence_is_taken_over_a_further_one_that_does_not(tmp_path):
    """A commit failed (the coordinator away) after the mover's last batch: the committed progress
    is behind the target's sequence, this broker's copy is not: the copy is taken. Without a copy,
    the committed progress is taken, and the records moved after it are moved again (the WARNING
    says so): the one case left, a failed commit and then the batch deleted and a failover."""
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(10)])
        first = await mover(source, target, tmp_path / "a", clock, 1, progress=committed)
        await run_until_idle(first)
        committed.fail = True
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(10, 20)])
        clock.now += 100
        await run_until_idle(first)  # moved, the commit failed: moves go on
        assert target.origin_offsets() == list(range(20)) and committed.value[0] == 10
        target.delete_all()
        committed.fail = False
        stale = committed.value
        here = await mover(source, target, tmp_path / "a", clock, 1, progress=committed)
        assert here.recovered_from == "local"
        await run_until_idle(here)
        assert target.origin_offsets() == []
        assert committed.value[0] == 20  # committed at once by the new mover
        committed.value = stale
        elsewhere = await mover(source, target, tmp_path / "b", clock, 1, progress=committed)
        assert elsewhere.recovered_from == "committed"
        await run_until_idle(elsewhere)
        assert target.origin_offsets() == list(range(10, 20))
    asyncio.run(scenario())


def test_a_failed_commit_is_made_again_with_the_newer_progress(tmp_path, caplog):
    from tidelog.queues.delay_mover import COMMIT_RETRY_MS
    caplog.set_level(logging.INFO, "tidelog.queues.delay_mover")

    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        m = await mover(source, target, tmp_path, clock, 1, progress=committed)
        committed.fail = True
        for n in range(3):
            source.produce([(b"k", b"%d" % n, [("tidelog-delay-ms", b"0")], NOW)])
            await run_until_idle(m)
        assert target.origin_offsets() == [0, 1, 2] and committed.value is None
        committed.fail = False
        await run_until_idle(m)
        assert committed.value is None  # not before COMMIT_RETRY_MS
        clock.now += COMMIT_RETRY_MS
        await run_until_idle(m)
        assert committed.value[0] == 3 and committed.commits == 1
    asyncio.run(scenario())
    assert caplog.text.count("cannot commit its progress") == 1
    assert "committing its progress to __consumer_offsets again" in caplog.text


def test_committed_progress_of_another_delay_partition_or_unreadable_is_not_taken(tmp_path):
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(5)])
        for value in [(5, '{"producer_id":2,"round":[0,5,0,5,0,1],"sequence":5}'), (5, "not json"), (5, "")]:
            committed.value = value
            m = await mover(source, target, tmp_path / str(len(value[1])), clock, 1, progress=committed)
            assert m.recovered_from == "start"
    asyncio.run(scenario())


def test_a_clients_batch_with_the_movers_producer_id_makes_it_start_again_without_moving_twice(tmp_path):
    """A client may send idempotent batches with any producer id, the mover's too (2^62 and above,
    derived from the delay topic's id). Its batch takes the mover's next sequence: the mover's append
    is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), the mover starts again, finds no batch of its own
    last in the target and goes on from its committed progress at the target's next sequence."""
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        producer_id = mover_producer_id(uuid.UUID(int=14), 0)
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(10)])
        first = await mover(source, target, tmp_path, clock, producer_id, progress=committed)
        await run_until_idle(first)
        await target.append(build_batch([(b"c", b"client", [], NOW)], producer_id=producer_id, producer_epoch=0,
                                        base_sequence=10))
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(10, 20)])
        with pytest.raises(KafkaError) as refused:
            await run_until_idle(first)
        assert refused.value.error_code == ErrorCode.out_of_order_sequence_number
        again = await mover(source, target, tmp_path, clock, producer_id, progress=committed)
        await run_until_idle(again)
        moved = [int(dict(r.headers)[ORIGIN_OFFSET]) for r in target.records() if ORIGIN_OFFSET in dict(r.headers)]
        assert moved == list(range(20)) and len(target.records()) == 21
    asyncio.run(scenario())


def test_a_broker_with_an_older_copy_goes_on_from_the_committed_progress_when_the_targets_batch_is_gone(tmp_path):
    """Broker A moved records, then B led the delay partition and moved more; the target's retention
    deleted B's batches; A leads again with its copy from its earlier leadership: the committed
    progress (B's, continuing the target's sequence) is taken, not A's copy (B's records again)."""
    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Committed()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(10)])
        a = await mover(source, target, tmp_path / "a", clock, 1, progress=committed)
        await run_until_idle(a)
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(10, 20)])
        clock.now += 1000
        b = await mover(source, target, tmp_path / "b", clock, 1, progress=committed)
        await run_until_idle(b)
        assert target.origin_offsets() == list(range(20))
        target.delete_all()
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(20, 30)])
        clock.now += 1000
        again = await mover(source, target, tmp_path / "a", clock, 1, progress=committed)
        assert again.recovered_from == "committed"
        await run_until_idle(again)
        assert target.origin_offsets() == list(range(20, 30))
    asyncio.run(scenario())


def test_a_commit_failing_in_an_unforeseen_way_does_not_move_a_record_twice(tmp_path):
    """Whatever a commit raises, the moves go on and the round's state is whole: the batch before
    it is not appended again with the next sequence (its records twice in the target)."""
    class Broken(Committed):
        async def commit(self, offset: int, metadata: str) -> None:
            raise RuntimeError("an unforeseen failure")

    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        m = await mover(source, target, tmp_path, clock, 1, batch_records=4, progress=Broken())
        for first in (0, 10):
            source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(first, first + 10)])
            clock.now += 2000
            await run_until_idle(m)
        assert target.origin_offsets() == list(range(20))
        assert m.status()["commit_error"] == "an unforeseen failure"
    asyncio.run(scenario())


class _GroupLog:
    """__consumer_offsets as a list; a write can be held open (a commit in flight)."""

    def __init__(self) -> None:
        self.records: list = []
        self.hold: asyncio.Event | None = None

    async def open(self) -> None:
        pass

    async def write(self, records):
        if self.hold is not None:
            await self.hold.wait()
        base = len(self.records)
        self.records.extend(records)
        return base

    def replay(self):
        return iter([(offset, key, value) for offset, (key, value) in enumerate(self.records)])


def test_a_deposed_leaders_late_commit_does_not_overwrite_its_successors_progress(caplog):
    """The movers' commits carry their delay partition's leader epoch; the coordinator refuses,
    for the group __tidelog-delay-mover only, one older than the stored (or an in-flight) commit's
    with FENCED_LEADER_EPOCH (a WARNING names the partition and both epochs), so the successor's
    progress stays, also after the coordinator loads the log again. Other groups are not fenced."""
    from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
    from tidelog.queues.delay_mover import PROGRESS_GROUP
    caplog.set_level(logging.WARNING)
    key = ("delays", 3)

    async def scenario():
        log = _GroupLog()
        coordinator = GroupCoordinator(GroupSettings(), log)
        coordinator.load()
        offsets = coordinator.offsets

        def stored(group=PROGRESS_GROUP):
            [(_, _, committed)] = offsets.fetch_offsets(group, [key])
            return committed.offset, committed.leader_epoch, committed.metadata

        assert await offsets.commit_offsets(PROGRESS_GROUP, -1, "", None, {key: (40, 6, "new")}) == \
            {key: ErrorCode.none}
        assert await offsets.commit_offsets(PROGRESS_GROUP, -1, "", None, {key: (30, 5, "old")}) == \
            {key: ErrorCode.fenced_leader_epoch}
        assert stored() == (40, 6, "new")
        # The successor's commit still being written when the deposed leader's arrives.
        log.hold = asyncio.Event()
        newer = asyncio.ensure_future(offsets.commit_offsets(PROGRESS_GROUP, -1, "", None, {key: (50, 7, "newer")}))
        await asyncio.sleep(0)
        late = await offsets.commit_offsets(PROGRESS_GROUP, -1, "", None, {key: (45, 6, "late")})
        log.hold.set()
        assert (await newer, late) == ({key: ErrorCode.none}, {key: ErrorCode.fenced_leader_epoch})
        assert stored() == (50, 7, "newer")
        # Another group's commits are not fenced by epochs (a consumer may commit an older one).
        for epoch, offset in ((6, 10), (5, 9)):
            assert await offsets.commit_offsets("app", -1, "", None, {key: (offset, epoch, "")}) == \
                {key: ErrorCode.none}
        assert stored("app") == (9, 5, "")
        reloaded = GroupCoordinator(GroupSettings(), log)
        reloaded.load()
        assert await reloaded.offsets.commit_offsets(PROGRESS_GROUP, -1, "", None, {key: (45, 6, "late")}) == \
            {key: ErrorCode.fenced_leader_epoch}
        [(_, _, committed)] = reloaded.offsets.fetch_offsets(PROGRESS_GROUP, [key])
        assert (committed.offset, committed.leader_epoch) == (50, 7)
    asyncio.run(scenario())
    assert "refusing a commit of delays-3 at leader epoch 5: its progress was committed at leader epoch 6" \
        in caplog.text


def test_a_mover_whose_commit_is_fenced_stops_moving_and_committing(tmp_path, caplog):
    """A commit refused with FENCED_LEADER_EPOCH (another broker's mover leads the delay partition
    now): the mover moves and commits no more (a WARNING saying why; its status's commit error)."""
    from tidelog.groups.offset_manager import EPOCH_FENCED_GROUP
    from tidelog.queues.delay_mover import PROGRESS_GROUP
    assert EPOCH_FENCED_GROUP == PROGRESS_GROUP
    caplog.set_level(logging.WARNING, "tidelog.queues.delay_mover")

    class Fenced(Committed):
        async def commit(self, offset: int, metadata: str) -> None:
            self.commits += 1
            raise KafkaError(ErrorCode.fenced_leader_epoch, "delays-0 refused at leader epoch 2, committed at 3")

    async def scenario():
        clock, source, target, committed = Clock(), Source(), Target(), Fenced()
        m = await mover(source, target, tmp_path, clock, 1, batch_records=2, progress=committed)
        source.produce([(b"k", b"%d" % i, [("tidelog-delay-ms", b"0")], NOW) for i in range(6)])
        for _ in range(10):
            await m.step()
        assert target.origin_offsets() == []  # the progress is committed before each batch: refused, none appended
        assert committed.commits == 1 and m.fenced is not None
        assert "committed at 3" in m.status()["commit_error"]
    asyncio.run(scenario())
    assert "delay mover delays-0: no longer its delay partition's mover" in caplog.text


def test_a_delay_topic_created_again_is_not_fenced_by_its_predecessors_epochs():
    """A delay topic deleted and created again under its name starts its leader epochs afresh while
    the group still holds the old topic's progress (a higher epoch): the fence applies to commits
    of the same mover only (the producer id its metadata names), so the new topic's mover commits."""
    from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
    from tidelog.queues.delay_mover import PROGRESS_GROUP
    key = ("delays", 0)

    def progress(producer_id: int) -> str:
        return '{"producer_id":%d,"round":[0,5,0,5,0,1],"sequence":5}' % producer_id

    async def scenario():
        coordinator = GroupCoordinator(GroupSettings(), _GroupLog())
        coordinator.load()
        commit = coordinator.offsets.commit_offsets
        assert await commit(PROGRESS_GROUP, -1, "", None, {key: (5, 7, progress(11))}) == {key: ErrorCode.none}
        assert await commit(PROGRESS_GROUP, -1, "", None, {key: (5, 0, progress(12))}) == {key: ErrorCode.none}
        assert await commit(PROGRESS_GROUP, -1, "", None, {key: (6, 1, progress(12))}) == {key: ErrorCode.none}
        assert await commit(PROGRESS_GROUP, -1, "", None, {key: (4, 0, progress(12))}) == \
            {key: ErrorCode.fenced_leader_epoch}
        [(_, _, committed)] = coordinator.offsets.fetch_offsets(PROGRESS_GROUP, [key])
        assert (committed.offset, committed.leader_epoch) == (6, 1)


def test_a_rounds_moved_records_are_not_counted_as_waiting_while_its_commit_is_pending(tmp_path):
    """A batch counts as moved once the target took it; its round ends after the next batch's
    commit (a round trip to __consumer_offsets, slow on a loaded machine). Meanwhile status() counted
    those records as waiting too: moved 20 and waiting 5 of 20 records (test_delay_topic_view at load 9)."""
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        gate = asyncio.Event()

        class SlowCommitted(Committed):
            async def commit(self, offset: int, metadata: str) -> None:
                if self.commits:  # (the first batch's, before it: at once)
                    await gate.wait()
                await super().commit(offset, metadata)

        m = await mover(source, target, tmp_path, clock, 1, progress=SlowCommitted(), batch_records=3)
        source.produce([(b"k", b"%d" % n, [("tidelog-delay-ms", b"0")], NOW) for n in range(5)])
        running = asyncio.ensure_future(run_until_idle(m))
        for _ in range(1000):  # until the first batch is appended and its commit waits
            if m.moved:
                break
            await asyncio.sleep(0)
        status = m.status()
        assert (status["moved_records"], status["waiting_records"], status["in_round"]) == (3, 2, True)
        gate.set()
        await running
        status = m.status()
        assert (status["moved_records"], status["waiting_records"], status["in_round"]) == (5, 0, False)
    asyncio.run(scenario())
