"""Which congestion control a loopback connection gets (server/connection.py): cubic, else reno
when cubic is not allowed; a socket's own failure does not strike a name off for later ones."""

from __future__ import annotations

import errno
import logging
import socket

import pytest

from tidelog.server import connection


class _Socket:
    def __init__(self, refuse: dict[bytes, int]) -> None:
        self.refuse, self.tried, self.set = refuse, [], None

    def setsockopt(self, level, option, value) -> None:
        assert (level, option) == (socket.IPPROTO_TCP, socket.TCP_CONGESTION)
        self.tried.append(value)
        if value in self.refuse:
            raise OSError(self.refuse[value], "refused")
        self.set = value


@pytest.fixture(autouse=True)
def _names(monkeypatch):
    monkeypatch.setattr(connection, "_LOOPBACK_CONGESTION_CONTROL", [b"cubic", b"reno"])
    monkeypatch.setattr(connection, "_LOOPBACK_CONGESTION_LOGGED", set())


def test_cubic_when_allowed():
    sock = _Socket({})
    connection._loopback_congestion_control(sock)
    assert sock.set == b"cubic"


def test_reno_when_cubic_is_not_allowed_and_cubic_not_tried_again():
    first = _Socket({b"cubic": errno.EPERM})
    connection._loopback_congestion_control(first)
    assert first.set == b"reno"
    second = _Socket({})
    connection._loopback_congestion_control(second)
    assert second.tried == [b"reno"] and second.set == b"reno"


def test_a_closed_socket_does_not_strike_cubic_off():
    connection._loopback_congestion_control(_Socket({b"cubic": errno.EBADF}))
    sock = _Socket({})
    connection._loopback_congestion_control(sock)
    assert sock.set == b"cubic"


def test_none_left_keeps_the_default():
    sock = _Socket({b"cubic": errno.ENOENT, b"reno": errno.EPERM})
    connection._loopback_congestion_control(sock)
    assert sock.set is None
    connection._loopback_congestion_control(sock)  # nothing left: no more attempts
    assert sock.tried == [b"cubic", b"reno"]


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
                                            ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("::ffff:10.0.0.1", False),
                                            ("", False), ("localhost", False)])
def test_loopback_peers(host, loopback):
    assert connection._is_loopback(host) is loopback


def _lines(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == connection.logger.name]


def test_the_congestion_control_loopback_connections_get_is_logged_once_at_info(caplog):
    caplog.set_level(logging.INFO, logger=connection.logger.name)
    for _ in range(3):
        connection._loopback_congestion_control(_Socket({b"cubic": errno.EPERM}))
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0][0] == "INFO" and "reno" in lines[0][1], lines


def test_none_allowed_is_one_warning_naming_the_setting(caplog):
    caplog.set_level(logging.INFO, logger=connection.logger.name)
    for _ in range(3):
        connection._loopback_congestion_control(_Socket({b"cubic": errno.EPERM, b"reno": errno.EPERM}))
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0][0] == "WARNING", lines
    assert "net.ipv4.tcp_allowed_congestion_control" in lines[0][1], lines
