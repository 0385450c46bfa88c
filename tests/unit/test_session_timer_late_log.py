"""How SessionTimer logs timers acting late after a stall (tidelog/session_timer.py). robust16:
every timer acting >= 0.5 s late logged its own INFO line, so one stall with N loaded share-
partitions' lock timers (or members' session timers) due was a burst of N INFO lines for one
event the loop monitor already WARNs about. Now one INFO a stall: the first late timer's, naming
how many fell due late in that stall; the others DEBUG. A later stall gets its own INFO.

The stall is a callback that holds the loop (time.sleep), as a long callback would; both loops
(the default one and uvloop, the broker's)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tidelog.session_timer import SessionTimer

uvloop = pytest.importorskip("uvloop")

LOGGER = "tidelog.session_timer"


async def _stall(timers: int, stall_s: float) -> list[int]:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    done = loop.create_future()

    def fire(n: int) -> None:
        fired.append(n)
        if len(fired) == timers and not done.done():
            done.set_result(None)

    for n in range(timers):
        SessionTimer(loop, 0.01 + n * 0.001, fire, (n,))
    loop.call_soon(time.sleep, stall_s)  # the loop held past every deadline
    await asyncio.wait_for(done, 10)
    for _ in range(20):  # the turns after the last timer (where a count would be logged)
        await asyncio.sleep(0)
    return fired


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_one_info_line_a_stall_naming_how_many_timers_were_late(new_loop, caplog):
    async def main():
        caplog.clear()
        assert sorted(await _stall(12, 0.7)) == list(range(12))
        late = [r for r in caplog.records if r.name == LOGGER]
        infos = [r for r in late if r.levelno == logging.INFO]
        assert len(infos) == 1, [r.getMessage() for r in late]
        assert "12 timers" in infos[0].getMessage(), infos[0].getMessage()
        assert len([r for r in late if r.levelno == logging.DEBUG]) == 11
        # a second stall: its own INFO
        caplog.clear()
        assert sorted(await _stall(3, 0.7)) == list(range(3))
        infos = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
        assert len(infos) == 1 and "3 timers" in infos[0].getMessage(), [r.getMessage() for r in infos]

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        loop = new_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
