"""tests/etcdproc.free_port: ports a killed broker gets back at its restart. They come from below the
kernel's ephemeral range (where no bind(0) and no outgoing connection lands) and from a block each
test process holds, so a concurrent test run never hands out the same one."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.etcdproc import PORT_BLOCK, _ephemeral_range, _ports, free_port


def test_ports_are_below_the_ephemeral_range_and_in_this_process_block():
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(1024 <= port < _ephemeral_range()[0] for port in ports)
    assert all(_ports.first < port < _ports.first + PORT_BLOCK for port in ports)


def test_a_port_some_other_socket_holds_is_skipped():
    upcoming = _ports.next
    with socket.socket() as held:
        held.bind(("127.0.0.1", upcoming))
        held.listen()
        assert free_port() != upcoming


def test_a_port_that_went_down_is_not_handed_out_again_soon():
    """A killed broker's port (nothing bound on it until its restart) is not handed to anyone else
    within the block's cycle: bind(0) could hand it out at once."""
    down = free_port()
    assert down not in [free_port() for _ in range(PORT_BLOCK // 2)]


def test_another_test_process_gets_another_block():
    free_port()
    code = ("from tests.etcdproc import free_port, _ports, PORT_BLOCK\n"
            "print(_ports.first if free_port() else -1)")
    other = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert abs(other - _ports.first) >= PORT_BLOCK
