"""The event loop monitor (server/loop_monitor.py): a stall is measured, counted, logged as a
WARNING, and the watchdog logs where the loop's thread was while it was stuck."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tidelog.server.loop_monitor import LoopMonitor


def _uvloop():
    return pytest.importorskip("uvloop").new_event_loop()


LOOPS = pytest.mark.parametrize("loop_factory", [None, _uvloop], ids=["asyncio", "uvloop"])  # the broker runs on uvloop


def run(coroutine, loop_factory=None):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


def hold_the_loop_for(seconds: float) -> None:
    """A synchronous computation on the loop (the kind of callback that stalls a broker)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


async def _run_with(monitor: LoopMonitor, work) -> None:
    monitor.start()
    try:
        await asyncio.sleep(0.25)
        await work()
    finally:
        monitor.stop()


@LOOPS
def test_a_stall_is_measured_counted_and_logged_with_the_stack_where_the_loop_was(caplog, loop_factory):
    lags, stalls = [], []
    monitor = LoopMonitor(lags.append, lambda: stalls.append(1), interval_s=0.05, warn_s=0.6)

    async def stall() -> None:
        hold_the_loop_for(1.5)
        await asyncio.sleep(0.2)  # the monitor's task wakes (late) and measures it

    with caplog.at_level(logging.WARNING, logger="tidelog.server.loop_monitor"):
        run(_run_with(monitor, stall), loop_factory)
    assert monitor.stalls >= 1 and len(stalls) == monitor.stalls
    assert 1.4 <= monitor.max_lag_s < 10
    assert max(lags) == monitor.max_lag_s and min(lags) < 0.6
    messages = [r.getMessage() for r in caplog.records]
    stuck = [m for m in messages if m.startswith("event loop stuck for") and "in hold_the_loop_for" in m]
    assert len(stuck) == 1, messages  # once a stall, however long
    assert "runners.py" not in stuck[0] and "base_events.py" not in stuck[0]  # the loop's own frames left out
    assert "the process ran meanwhile" in stuck[0]
    stalled = [m for m in messages if m.startswith("event loop stalled")]
    assert any(f"woke {monitor.max_lag_s:.1f} s late" in m and "of CPU in that time" in m
               and "the process ran meanwhile" in m for m in stalled), messages


@LOOPS
def test_a_loop_that_keeps_up_logs_nothing(caplog, loop_factory):
    lags, stalls = [], []
    monitor = LoopMonitor(lags.append, lambda: stalls.append(1), interval_s=0.02, warn_s=2.0)

    async def busy_in_short_steps() -> None:
        for _ in range(10):
            hold_the_loop_for(0.01)
            await asyncio.sleep(0.02)

    with caplog.at_level(logging.WARNING, logger="tidelog.server.loop_monitor"):
        run(_run_with(monitor, busy_in_short_steps), loop_factory)
    assert len(lags) >= 5 and stalls == [] and monitor.stalls == 0
    assert not caplog.records


def test_stop_ends_the_watchdog_thread():
    monitor = LoopMonitor(interval_s=0.02, warn_s=0.2)

    async def nothing() -> None:
        await asyncio.sleep(0.05)

    run(_run_with(monitor, nothing))
    monitor._watchdog.join(2)
    assert not monitor._watchdog.is_alive()


STOPPED_PROCESS = """
import asyncio, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from tidelog.server.loop_monitor import LoopMonitor
async def main():
    monitor = LoopMonitor(interval_s=0.05, warn_s=0.5)
    monitor.start()
    print("ready", flush=True)
    await asyncio.sleep(30)
asyncio.run(main())
"""


def test_a_stopped_process_is_told_from_a_blocked_loop():
    """SIGSTOP stops every thread: the watchdog overslept too, and says so (a loop blocked in a
    call while the process runs is the test above)."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", STOPPED_PROCESS], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        proc.send_signal(signal.SIGCONT)
        time.sleep(1.0)
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
    text = stderr.decode()
    stalled = [line for line in text.splitlines() if "event loop stalled" in line]
    assert stalled and "the whole process did not run for most of it" in stalled[0], text
    # the watchdog tells it too when it wakes before the loop does after SIGCONT (a race)
    assert all("the whole process did not run" in line for line in text.splitlines() if "event loop stuck" in line), text


@LOOPS
def test_recent_sums_up_the_last_window_and_keeps_the_stalls_since_the_start(loop_factory):
    """What the console, the CLI and GET /api/v1/broker show: p50/p99/max and stalls of the
    window, and the stall once it has left the window still counted since the start."""
    monitor = LoopMonitor(interval_s=0.02, warn_s=0.3, recent_s=0.8)
    seen = {}

    async def stall_then_wait() -> None:
        seen["before"] = monitor.recent()
        hold_the_loop_for(0.5)
        await asyncio.sleep(0.1)
        seen["during"] = monitor.recent()
        await asyncio.sleep(1.0)  # the stall leaves the 0.8 s window
        seen["after"] = monitor.recent()

    run(_run_with(monitor, stall_then_wait), loop_factory)
    before, during, after = seen["before"], seen["during"], seen["after"]
    assert before["samples"] >= 3 and before["stalls"] == 0 and before["max_ms"] < 300
    assert during["stalls"] == 1 and 450 <= during["max_ms"] < 5000 and during["p99_ms"] == during["max_ms"]
    assert during["p50_ms"] < 300 and during["max_since_start_ms"] == during["max_ms"]
    assert after["stalls"] == 0 and after["max_ms"] < 300 and after["stalls_since_start"] == 1
    assert after["max_since_start_ms"] == during["max_ms"] and after["window_s"] == 0.8
    assert after["stall_threshold_ms"] == 300 and after["interval_ms"] == 20


def test_recent_before_the_first_wake_up_has_no_lags():
    recent = LoopMonitor().recent()
    assert recent["samples"] == 0 and recent["p99_ms"] is None and recent["max_ms"] is None
    assert recent["stalls"] == 0 and recent["stalls_since_start"] == 0
