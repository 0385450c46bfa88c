"""AckWaiters: acks=all appends answered in end offset order as the high watermark moves."""

from __future__ import annotations

import asyncio

from tidelog.cluster import waiters
from tidelog.cluster.waiters import AckWaiters
from tidelog.protocol.errors import ErrorCode


def test_a_high_watermark_move_answers_the_waiters_at_or_below_it_whatever_their_order_of_arrival():
    async def main():
        acks = AckWaiters()
        futures = {end: acks.add(end) for end in (10, 20, 30, 15, 40, 5)}  # 15 and 5 come late
        acks.release(4)
        assert not any(f.done() for f in futures.values())
        acks.release(20)
        assert sorted(end for end, f in futures.items() if f.done()) == [5, 10, 15, 20]
        assert {futures[end].result() for end in (5, 10, 15, 20)} == {ErrorCode.none}
        assert len(acks) == 2
        acks.fail(ErrorCode.not_leader_or_follower)
        assert futures[30].result() == futures[40].result() == ErrorCode.not_leader_or_follower
        assert len(acks) == 0

    asyncio.run(main())


def test_waiters_answered_otherwise_are_forgotten_while_the_high_watermark_stands_still(monkeypatch):
    monkeypatch.setattr(waiters, "PRUNE_AT", 8)

    async def main():
        acks = AckWaiters()
        for end in range(1, 1001):
            acks.add(end).set_result(ErrorCode.request_timed_out)  # timed out: wait_for_acks answers it so
            assert len(acks) <= 16
        live = acks.add(2000)
        acks.release(2000)
        assert live.result() == ErrorCode.none and len(acks) == 0

    asyncio.run(main())
