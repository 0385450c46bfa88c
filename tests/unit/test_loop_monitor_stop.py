"""review13: the loop monitor's watchdog thread (server/loop_monitor.py) ends with the broker,
also when the broker's stop() fails before its last line (``self.loop_monitor.stop()``, after
``metadata.close()``): otherwise the thread wakes twice a second for the rest of the process and,
one second after the loop is gone, logs a WARNING 'event loop stuck' with the stack of whatever
the thread that ran the loop does next (seen: a test's ``time.sleep`` reported as a stuck broker
loop). Both tests failed before (a 'stuck' WARNING and the thread left running); the watchdog
now ends once its loop is closed, and reports nothing while the loop is not running."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from tidelog.config import BrokerConfig
from tidelog.server.broker import Broker
from tidelog.server.loop_monitor import LoopMonitor


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tidelog-loop-watchdog"]


def wait_for_no_watchdog(before: list[threading.Thread], timeout_s: float) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [t for t in watchdogs() if t not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_a_failed_stop_leaves_no_watchdog_and_no_false_stuck_warning(tmp_path, caplog):
    before = watchdogs()

    async def main():
        broker = Broker(BrokerConfig.load(env={}, overrides={"http.port": "-1"}), tmp_path / "data", port=0)
        await broker.start()

        async def failing_close():
            raise OSError("closing the metadata failed")

        broker.metadata.close = failing_close
        with pytest.raises(OSError):
            await broker.stop()

    asyncio.run(main())
    with caplog.at_level(logging.WARNING, logger="tidelog.server.loop_monitor"):
        left = wait_for_no_watchdog(before, 2.5)  # the loop is gone: more than warn_s (1 s) goes by
    assert not [r for r in caplog.records if "stuck" in r.getMessage()], "a loop that is gone was reported stuck"
    assert not left, "the watchdog thread outlived its broker"


def test_the_watchdog_ends_once_its_loop_is_closed_even_without_stop(caplog):
    before = watchdogs()

    async def main():
        LoopMonitor().start()  # never stopped: the loop ends under it
        await asyncio.sleep(0.1)

    asyncio.run(main())
    with caplog.at_level(logging.WARNING, logger="tidelog.server.loop_monitor"):
        left = wait_for_no_watchdog(before, 2.5)
    assert not [r for r in caplog.records if "stuck" in r.getMessage()], "a loop that is gone was reported stuck"
    assert not left, "the watchdog thread outlived its loop"
