"""groups/timers.py SessionTimer: a session timer that falls due during a stall expires the
member only once the loop has read the bytes already waiting in its sockets and run the handler
they start (as a connection does: a task made in ``data_received``).

The stall is the one SIGSTOP makes: a helper process stops this one while its loop waits in
epoll, sends a heartbeat in time, and resumes it past the deadline (epoll_wait then returns
EINTR and the loop runs its due timers before it polls again). Both loops: the default one and
uvloop (the broker's). With EXPIRY_TURNS at 2 or less (0: the expiry straight from the timer) both
fail; tests/fault/test_group_session_stall.py is the same with real clients and a broker."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import time

import pytest

from tidelog.groups.timers import GroupTimers
from tidelog.session_timer import SessionTimer

uvloop = pytest.importorskip("uvloop")

# Long enough that the helper, woken by the deadline's arrival on its pipe, stops this process
# before the deadline on a loaded machine too: with 100 ms and the helper's fixed 20 ms sleep
# before the stop, a helper not scheduled for ~80 ms (load 8 on 2 cores) stopped it only after
# the timer had fired, and the member expired with no heartbeat sent yet (flaky, session 15).
SESSION_MS = 500

# Says it runs (fd argv[3]), reads the timer's deadline (time.monotonic(), the loops' clock) from
# fd argv[4], stops the test's process (argv[1]) at once, sends the heartbeat on fd argv[2] (in
# time), resumes the process 200 ms after the deadline; always resumes. Its exit status says
# whether the stop came before the deadline (0) or after (3: the run did not test the case).
STALL = r"""
import os, signal, sys, time
pid, fd, ready, go = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.write(ready, b"r")
deadline = float(os.read(go, 64))
os.kill(pid, signal.SIGSTOP)
try:
    in_time = time.monotonic() < deadline
    os.write(fd, b"heartbeat")
    time.sleep(max(deadline + 0.2 - time.monotonic(), 0.01))
finally:
    os.kill(pid, signal.SIGCONT)
sys.exit(0 if in_time else 3)
"""


@pytest.mark.parametrize("how", ["session_timer", "fallen_due"])
@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_heartbeat_sent_in_time_during_a_stop_is_read_before_the_expiry(new_loop, how):
    """``how``: a SessionTimer from the start, or a bare handle that becomes one once due
    (SessionTimer.fallen_due: the share-partitions' lock timer, queues/manager.py)."""
    async def main():
        loop = asyncio.get_running_loop()
        timers = GroupTimers()
        expired: list[str] = []
        member: dict = {"heartbeats": 0}

        def arm() -> None:
            if how == "session_timer":
                member["timer"] = timers.session_timer(SESSION_MS, expired.append, "expired")
                return

            def due() -> None:
                member["timer"] = SessionTimer.fallen_due(loop, handle.when(), expired.append, ("expired",))

            member["timer"] = handle = loop.call_later(SESSION_MS / 1000, due)

        async def heartbeat() -> None:  # the handler: its first step re-arms the session timer
            member["heartbeats"] += 1
            member["timer"].cancel()
            arm()

        class Connection(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                loop.create_task(heartbeat())

        ours, theirs = socket.socketpair()
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        transport, _ = await loop.connect_accepted_socket(Connection, ours)
        try:
            stall = subprocess.Popen([sys.executable, "-c", STALL, str(os.getpid()), str(theirs.fileno()), str(ready_w), str(go_r)],
                                     pass_fds=[theirs.fileno(), ready_w, go_r])
            assert select.select([ready_r], [], [], 30)[0], "the helper did not start"
            assert os.read(ready_r, 1) == b"r"  # it runs (read blocking: no timer is armed yet)
            deadline = time.monotonic() + SESSION_MS / 1000  # no later than the timer's own
            arm()
            started = loop.time()
            os.write(go_w, repr(deadline).encode())
            while not member["heartbeats"] and not expired:  # the loop waits in epoll meanwhile
                assert loop.time() - started < 10, "neither a heartbeat nor an expiry"
                await asyncio.sleep(0.005)
            assert stall.wait(10) == 0, "the helper stopped this process only after the deadline"
            assert loop.time() - started > SESSION_MS / 1000, "the stop did not outlast the session"
            assert not expired, "the member expired with its heartbeat waiting in the socket"
            while not expired:  # no heartbeat now: it expires
                assert loop.time() - started < 10, "the session never expired"
                await asyncio.sleep(0.01)
        finally:
            transport.close()
            theirs.close()
            os.close(ready_r)
            os.close(ready_w)
            os.close(go_r)
            os.close(go_w)

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
