"""A delay mover's status (issue 14: what the HTTP API, the console and ``tidelog topics describe``
show of a delay topic): the records waiting (not moved yet), counted from the due-time index and
exact at every step, also after a crash in the middle of a round left the index with records
read twice; the next due time; when the last batch went and how late."""

from __future__ import annotations

import asyncio

from tests.unit.test_delay_mover import NOW, Clock, Source, Target, delayed, mover, run_until_idle


def unmoved(due: dict[int, int], target: Target, source: Source) -> list[int]:
    """Due times of the records produced and not moved yet."""
    moved = set(target.origin_offsets())
    return sorted(due[o] for o in due if o not in moved and o < source.high_watermark())


def test_the_status_counts_the_records_not_moved_yet_and_the_next_due_time(tmp_path):
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        records = delayed(400, seed=5)
        due = {i: NOW + int(dict(r[2])["tidelog-delay-ms"]) for i, r in enumerate(records)}
        source.produce(records[:200])
        m = await mover(source, target, tmp_path, clock, producer_id=9, batch_records=25)
        status = m.status()
        assert status["moved_records"] == 0 and status["last_move_ms"] is None
        for now in range(NOW, NOW + 10_001, 500):
            clock.now = now
            if now == NOW + 3000:
                source.produce(records[200:])  # read after the round: waiting, some already due
                m._read_new(source.high_watermark())
                status = m.status()
                assert status["waiting_records"] == len(unmoved(due, target, source))
                assert status["next_due_ms"] == unmoved(due, target, source)[0]
            await run_until_idle(m)
            status = m.status()
            left = unmoved(due, target, source)
            assert status["waiting_records"] == len(left), now
            assert status["next_due_ms"] == (left[0] if left else None)
            assert status["moved_records"] == source.high_watermark() - len(left)
            if status["moved_records"]:
                assert status["last_move_ms"] == now and 0 <= status["last_move_late_ms"] <= 500
        assert m.status()["waiting_records"] == 0
    asyncio.run(scenario())


def test_the_waiting_count_stays_exact_when_a_new_mover_reads_records_again(tmp_path):
    """A crash in the middle of a round: the next mover reads the records after its start offset
    again, into index buckets that already hold them; each counts once."""
    async def scenario():
        clock, source, target = Clock(), Source(), Target()
        records = [(b"k", b"%d" % i, [("tidelog-delay-ms", b"%d" % (1000 + 20 * i))], NOW) for i in range(300)]
        source.produce(records[:100])
        first = await mover(source, target, tmp_path, clock, producer_id=4, batch_records=10)
        await run_until_idle(first)
        source.produce(records[100:])
        first._read_new(source.high_watermark())  # indexed, not yet in a round
        assert first.status()["waiting_records"] == 300
        clock.now = NOW + 2000
        target.fail_before = 0
        original, appends = target.append, 0

        async def crash_on_third(batch):
            nonlocal appends
            appends += 1
            if appends == 3:
                raise ConnectionError("the broker died")
            return await original(batch)

        target.append = crash_on_third
        try:
            for _ in range(10):
                await first.step()
        except ConnectionError:
            pass
        target.append = original
        second = await mover(source, target, tmp_path, clock, producer_id=4, batch_records=10)
        await second.step()  # reads the records after its start offset again
        due = {i: NOW + 1000 + 20 * i for i in range(300)}
        await run_until_idle(second)
        assert second.status()["waiting_records"] == len(unmoved(due, target, source)) == 300 - 51
        clock.now = NOW + 20_000
        await run_until_idle(second)
        assert second.status()["waiting_records"] == 0 and second.status()["next_due_ms"] is None
    asyncio.run(scenario())
