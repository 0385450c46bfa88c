"""How late the broker's event loop runs what is due (Kafka's request-handler idle ratio, for one loop).

Everything a broker does (requests, group session timers, replication, the etcd lease's
keep-alive) runs on one asyncio event loop: a callback that runs long, a blocking call on the
loop, or a process starved of CPU delays all of it, and the symptoms show up elsewhere (a
lease that lapses, a group member whose heartbeats sit unread expiring). This makes the lag
itself visible:

- a task wakes every ``interval_s`` and measures how late it woke: every lag goes to
  ``tidelog_event_loop_lag_seconds`` (histogram); one of ``warn_s`` or more is counted in
  ``tidelog_event_loop_stalls_total`` and logged as a WARNING, with how much CPU the loop's
  thread used meanwhile and the load average: a busy loop on an idle machine uses about the
  whole stall, one blocked in a system call about none; on a loaded machine a busy loop gets
  its share of a core (a tenth at load 20 on 2 cores), so the line also says whether the
  process ran meanwhile (the watchdog below woke as often as it should) or not;
- a watchdog thread notices a loop that has not woken for ``warn_s`` while it is still stuck
  and logs the loop thread's stack then (once a stall): what a ``py-spy dump`` taken at that
  moment would show, so a stall nobody was watching still says where it was. It also says
  whether it kept running itself meanwhile (the loop's thread alone was blocked, e.g. in a
  read or write of the disk, or busy) or overslept as well (the whole process was stopped,
  SIGSTOP, or starved of CPU: the stack is then only where it happened to stop).

``recent()`` sums up the last minute's wake-ups (p50, p99, max, stalls) and the stalls since the
start: what ``GET /api/v1/broker``, the console's broker table and ``tidelog cluster`` show.

Cost: 2 wake-ups a second on the loop and 2 on the watchdog thread (~0.05% of a core).
The loop's task and the watchdog thread share two numbers (the last wake-up, the watchdog's
wake-ups), each written by one side only; everything else is the loop's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
import traceback
from collections import deque

logger = logging.getLogger(__name__)

INTERVAL_S = 0.5  # a stall of WARN_S is seen whatever the interval; each wake-up costs ~0.15 ms of CPU
WARN_S = 1.0
RECENT_S = 60.0  # the window recent() sums up
_STACK_FRAMES = 30


def _thread_cpu_clock(thread_id: int) -> int | None:
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError):  # not on this platform
        return None


class LoopMonitor:
    """Measures the running loop's lag; ``start`` on the loop, ``stop`` when the broker stops (the
    watchdog thread also ends once the loop is closed, should ``stop`` not be reached)."""

    def __init__(self, observe=None, count_stall=None, interval_s: float = INTERVAL_S, warn_s: float = WARN_S,
                 recent_s: float = RECENT_S) -> None:
        self.observe = observe  # observe(lag_seconds) for every wake-up
        self.count_stall = count_stall  # count_stall() for every lag of warn_s or more
        self.interval_s = interval_s
        self.warn_s = warn_s
        self.recent_s = recent_s
        self.max_lag_s = 0.0
        self.stalls = 0
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: threading.Thread | None = None
        self._stopped = threading.Event()
        self._last_wake = time.monotonic()  # read by the watchdog thread (a float: one store, no lock)
        self._reported_wake = -1.0  # the _last_wake whose stall the watchdog reported
        self._loop_thread = 0
        self._cpu_clock: int | None = None
        self._watchdog_checks = 0  # the watchdog's wake-ups: few during a stall when the whole process did not run
        self._watchdog_period = min(warn_s / 2, 0.5)
        # (monotonic time of the wake-up, its lag) of the last recent_s: 121 pairs at 0.5 s.
        self._recent: deque[tuple[float, float]] = deque(maxlen=math.ceil(recent_s / interval_s) + 1)

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._cpu_clock = _thread_cpu_clock(self._loop_thread)
        self._last_wake = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="tidelog-loop-monitor")
        self._watchdog = threading.Thread(target=self._watch, name="tidelog-loop-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _cpu_s(self) -> float | None:
        if self._cpu_clock is None:
            return None
        try:
            return time.clock_gettime(self._cpu_clock)
        except OSError:
            return None

    async def _run(self) -> None:
        interval = self.interval_s
        cpu_before = self._cpu_s()
        while True:
            before = time.monotonic()
            self._last_wake = before
            checks_before = self._watchdog_checks
            await asyncio.sleep(interval)
            now = time.monotonic()
            self._last_wake = now
            lag = max(now - before - interval, 0.0)
            self._recent.append((now, lag))
            cpu_now = self._cpu_s()
            if self.observe is not None:
                self.observe(lag)
            if lag > self.max_lag_s:
                self.max_lag_s = lag
            if lag >= self.warn_s:
                self.stalls += 1
                if self.count_stall is not None:
                    self.count_stall()
                if self._watchdog_checks - checks_before >= lag / self._watchdog_period / 2:
                    who = "the process ran meanwhile: the loop's thread was blocked or busy (see the stack logged while stuck)"
                elif _ran(cpu_now, cpu_before, lag):
                    # The watchdog did not run (it needs the GIL the busy loop holds, and each runs
                    # only in the CPU slices a loaded machine gives), but the loop's thread did: a
                    # busy loop starved of CPU, not a stopped process.
                    who = ("the process ran meanwhile: the loop's thread was busy on a machine too loaded for the "
                           "watchdog to run (see the stack logged while stuck)")
                else:
                    who = "the whole process did not run for most of it (stopped, starved of CPU, or in a call holding the GIL)"
                logger.warning("event loop stalled: a task due in %.1f s woke %.1f s late; the loop's thread ran %s "
                               "of CPU in that time, load average %s; %s", interval, lag, _seconds(cpu_now, cpu_before),
                               _load_average(), who)
            cpu_before = cpu_now

    def recent(self) -> dict:
        """The lag of the wake-ups of the last ``recent_s`` (nearest-rank percentiles, in ms; None
        before the first), the stalls among them, and the largest lag and the stalls since the start."""
        now = time.monotonic()
        lags = sorted(lag for at, lag in self._recent if now - at <= self.recent_s)

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 1)

        def rank(q: float) -> float | None:
            return lags[max(math.ceil(q * len(lags)) - 1, 0)] if lags else None

        return {
            "window_s": self.recent_s, "samples": len(lags), "p50_ms": ms(rank(0.5)), "p99_ms": ms(rank(0.99)),
            "max_ms": ms(lags[-1] if lags else None), "stalls": sum(lag >= self.warn_s for lag in lags),
            "max_since_start_ms": ms(self.max_lag_s), "stalls_since_start": self.stalls,
            "stall_threshold_ms": ms(self.warn_s), "interval_ms": ms(self.interval_s),
        }

    def _watch(self) -> None:
        period = self._watchdog_period
        checked = time.monotonic()
        cpu_checked = self._cpu_s()
        while not self._stopped.wait(period):
            self._watchdog_checks += 1
            # A loop closed without stop() (a broker's stop() that failed before it): nothing is
            # left to watch; one not running (between runs, shutting down) is not stuck.
            if self._loop.is_closed():
                return
            if not self._loop.is_running():
                checked = time.monotonic()
                continue
            now = time.monotonic()
            # This thread overslept too: the whole process did not run (SIGSTOP, starved of CPU,
            # or a call holding the GIL), not the loop alone.
            overslept = now - checked - period
            checked = now
            cpu_before, cpu_checked = cpu_checked, self._cpu_s()
            last = self._last_wake
            stuck = now - last
            if stuck < self.warn_s or last == self._reported_wake:
                continue
            self._reported_wake = last
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                return  # the loop's thread is gone
            below = _below_the_loop(traceback.extract_stack(frame))
            if overslept >= self.warn_s / 2 and _ran(cpu_checked, cpu_before, overslept + period):
                # Overslept, yet the loop's thread ran: busy holding the GIL on a loaded machine
                # (each runs only in the CPU slices it gets), not a stopped process.
                where = (f"the process ran meanwhile: the loop's thread is busy (it used {_seconds(cpu_checked, cpu_before)} "
                         f"of CPU in the {overslept + period:.1f} s this watchdog, waiting for the GIL it holds or for a "
                         "CPU, did not run)")
            elif overslept >= self.warn_s / 2:
                where = (f"the whole process did not run for {overslept + period:.1f} s (stopped, starved of CPU, or "
                         "in a call holding the GIL)")
            else:
                where = "the process ran meanwhile: the loop's thread is blocked or busy"
            if below and not all(f.filename.endswith("selectors.py") for f in below):
                where += "; its thread is at:\n" + "".join(traceback.format_list(below)).rstrip()
            else:  # in the loop itself, between callbacks: not running anything of ours
                where += "; its thread is in the loop, waiting for events"
            logger.warning("event loop stuck for %.1f s so far (load average %s); %s", stuck, _load_average(), where)


_LOOP_FRAMES = {"run", "run_until_complete", "run_forever", "_run_once"}


def _below_the_loop(frames: traceback.StackSummary) -> list:
    """The frames of what the loop runs now: those under asyncio's own (its runner and, unless
    the loop is uvloop's C loop, ``_run_once``); at most _STACK_FRAMES."""
    marks = [i for i, f in enumerate(frames) if f.name in _LOOP_FRAMES
             and f.filename.endswith(("asyncio/runners.py", "asyncio/base_events.py"))]
    start = marks[-1] + 1 if marks else 0
    return list(frames[start:])[-_STACK_FRAMES:]


def _ran(after: float | None, before: float | None, elapsed: float) -> bool:
    """The loop's thread used CPU for 5% or more of ``elapsed`` (a stopped process: none; a busy
    loop gets its share of a core, a tenth at load 20 on 2 cores)."""
    return after is not None and before is not None and after - before >= 0.05 * elapsed


def _seconds(after: float | None, before: float | None) -> str:
    return "?" if after is None or before is None else f"{after - before:.2f} s"


def _load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"
