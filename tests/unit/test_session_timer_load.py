"""groups/timers.py SessionTimer under constant load: with the loop never idle (callbacks always
ready, a socket always readable), a member that sends nothing still expires, a bounded number of
loop turns after its deadline (EXPIRY_TURNS, no re-arming), on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tidelog import session_timer as timers_module
from tidelog.groups.timers import GroupTimers

uvloop = pytest.importorskip("uvloop")

SESSION_MS = 50
DUE_S = SESSION_MS / 1000 - 0.002  # uvloop's clock counts whole milliseconds: a timer may run 1 ms "early"


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_silent_member_expires_within_bounded_turns_while_the_loop_is_always_busy(new_loop):
    async def main():
        loop = asyncio.get_running_loop()
        turns = [0]
        expired: list[tuple[float, int]] = []
        stop = False

        async def spin() -> None:  # one step a loop turn, never idle
            while not stop:
                turns[0] += 1
                await asyncio.sleep(0)

        class Flood(asyncio.Protocol):  # a peer that never stops writing: the poll always has work
            def data_received(self, data: bytes) -> None:
                pass

        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(Flood, ours)

        def write_more() -> None:
            if not stop:
                try:
                    theirs.send(b"x" * 4096)
                except BlockingIOError:
                    pass
                loop.call_soon(write_more)

        spinner = loop.create_task(spin())
        write_more()
        try:
            started = loop.time()
            timer = GroupTimers().session_timer(SESSION_MS, lambda: expired.append((loop.time(), turns[0])))
            due_turns = None
            while not expired:
                assert loop.time() - started < 5, "a silent member never expired under load"
                if due_turns is None and timer._turns:  # its deadline passed: it counts turns now
                    due_turns = turns[0]
                await asyncio.sleep(0)
            at, turn = expired[0]
            assert at - started >= DUE_S and due_turns is not None
            assert at - started < 2, "the expiry came long after the deadline"
            # the timer fell due by due_turns: the expiry comes EXPIRY_TURNS turns after, no more
            assert turn - due_turns <= timers_module.EXPIRY_TURNS + 3
        finally:
            stop = True
            await spinner
            transport.close()
            theirs.close()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
