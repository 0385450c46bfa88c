"""The frame pool gives back, after a while, the buffers a burst left in it (request_memory.py
``FramePool.trim``): what no request took for a whole interval is freed, the largest capacities
first, while a steady load keeps the buffers it takes again and again."""

from __future__ import annotations

import asyncio
import time

from tidelog.server.request_memory import FramePool, _FramePoolCollector

MIB = 1 << 20


def test_trim_frees_what_no_request_took_since_the_last_trim():
    pool = FramePool(max_bytes=16 * MIB)  # no event loop: no timer, trim() by hand
    buffers = [pool.acquire(MIB), pool.acquire(MIB), pool.acquire(2 * MIB)]
    for buffer in buffers:
        pool.release(buffer)
    assert pool.pooled_bytes == 4 * MIB
    assert pool.trim() == 0  # the pool held nothing at the interval's start
    assert pool.acquire(MIB) is buffers[1]  # one taken during this interval: 3 MiB never were
    pool.release(buffers[1])
    assert pool.trim() == 3 * MIB and pool.pooled_bytes == MIB and pool.freed == 2
    assert pool.acquire(MIB) is buffers[1]  # the one in use is the one kept
    pool.release(buffers[1])
    assert pool.trim() == 0  # taken in this interval too
    assert pool.trim() == MIB and pool.pooled_bytes == 0 and pool.freed == 3
    assert pool.acquire(MIB) is not buffers[1] and pool.allocated == 4  # freed: a fresh one


def test_trim_never_frees_more_than_the_low_water_mark():
    pool = FramePool(max_bytes=16 * MIB)
    big, small = pool.acquire(4 * MIB), pool.acquire(MIB)
    pool.release(big)
    pool.release(small)
    pool.trim()
    assert pool.acquire(4 * MIB) is big  # low water: 1 MiB; the 4 MiB buffer cannot go in its place
    pool.release(big)
    assert pool.trim() == MIB and pool.pooled_bytes == 4 * MIB


def test_the_timer_frees_a_bursts_buffers_and_keeps_a_steady_loads():
    async def scenario() -> tuple[float, int, int, int]:
        pool = FramePool(max_bytes=64 * MIB, idle_s=0.05)
        burst = [pool.acquire(MIB) for _ in range(8)]
        for buffer in burst:
            pool.release(buffer)
        steady_allocated = pool.allocated
        started = time.monotonic()
        deadline = started + 10
        # A steady load takes one buffer every 10 ms: the other seven go, that one stays.
        while pool.pooled_bytes > MIB and time.monotonic() < deadline:
            pool.release(pool.acquire(MIB))
            await asyncio.sleep(0.01)
        freed_after = time.monotonic() - started
        for _ in range(20):  # 4 more intervals of the steady load: nothing more freed or allocated
            pool.release(pool.acquire(MIB))
            await asyncio.sleep(0.01)
        kept = pool.pooled_bytes
        while pool.pooled_bytes and time.monotonic() < deadline:  # the load stops: the last goes too
            await asyncio.sleep(0.01)
        return freed_after, kept, pool.allocated - steady_allocated, pool.pooled_bytes

    freed_after, kept, allocated_since, left = asyncio.run(scenario())
    assert freed_after < 5
    assert kept == MIB and allocated_since == 0
    assert left == 0


def test_the_metric_counts_the_buffers_freed():
    pool = FramePool(max_bytes=16 * MIB)
    pool.release(pool.acquire(MIB))
    pool._low_water = pool.pooled_bytes  # as if nothing took it for an interval
    pool.trim()
    families = {family.name: family for family in _FramePoolCollector(pool).collect()}
    freed = families["tidelog_request_frame_buffers_idle_freed"]
    assert [sample.value for sample in freed.samples if sample.name.endswith("_total")] == [1]
    assert families["tidelog_request_frame_pool_bytes"].samples[0].value == 0
