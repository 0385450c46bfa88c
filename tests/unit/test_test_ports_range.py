"""tests/etcdproc.free_port on a machine whose ephemeral port range starts low (review12): there the
span below ip_local_port_range holds no block (e.g. ``1024 65535``, a setting some container hosts
use), and every test that starts a broker must still get a port, not a RuntimeError."""

from __future__ import annotations

import socket

from tests import etcdproc


def test_a_port_is_handed_out_when_the_ephemeral_range_starts_at_1024(monkeypatch):
    monkeypatch.setattr(etcdproc, "_ephemeral_range", lambda: (1024, 65535))
    block = etcdproc._PortBlock()
    port = block.port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # a usable loopback port
    assert 1024 <= port <= 65535


def test_ports_come_from_above_the_ephemeral_range_when_none_fit_below(monkeypatch):
    monkeypatch.setattr(etcdproc, "_ephemeral_range", lambda: (1024, 40000))
    block = etcdproc._PortBlock()
    assert 40000 < block.port() <= 65535
