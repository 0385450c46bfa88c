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

import pytest

from tidelog.groups.timers import GroupTimers
from tidelog.session_timer import SessionTimer

uvloop = pytest.importorskip("uvloop")

SESSION_MS = 100

# Says it runs (fd argv[3]), stops the test's process (argv[1]) 20 ms later, sends the heartbeat
# on fd argv[2] 10 ms after that (in time), resumes the process 300 ms later (past the
# deadline); always resumes.
STALL = r"""
import os, signal, sys, time
pid, fd, ready = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
os.write(ready, b"r")
time.sleep(0.02)
os.kill(pid, signal.SIGSTOP)
try:
    time.sleep(0.01)
    os.write(fd, b"heartbeat")
    time.sleep(0.3)
finally:
    os.kill(pid, signal.SIGCONT)
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
        transport, _ = await loop.connect_accepted_socket(Connection, ours)
        try:
            stall = subprocess.Popen([sys.executable, "-c", STALL, str(os.getpid()), str(theirs.fileno()), str(ready_w)],
                                     pass_fds=[theirs.fileno(), ready_w])
            assert select.select([ready_r], [], [], 30)[0], "the helper did not start"
            assert os.read(ready_r, 1) == b"r"  # it runs (read blocking: no timer is armed yet)
            arm()
            started = loop.time()
            while not member["heartbeats"] and not expired:  # the loop waits in epoll meanwhile
                assert loop.time() - started < 10, "neither a heartbeat nor an expiry"
                await asyncio.sleep(0.005)
            stall.wait(10)
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

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
