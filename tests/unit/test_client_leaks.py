"""The leaked-client guard itself (tests/client_leaks.py): it must never hang the suite on a
client whose close() blocks, and a client a test abandoned (stuck in librdkafka for good) is
neither closed nor counted."""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from tests import client_leaks


class _Stuck:
    """A client another thread is blocked in: its close() waits for that call to end."""

    _tidelog_test_closed = False

    def __init__(self) -> None:
        self.released = threading.Event()

    def close(self) -> None:
        self.released.wait()


def test_closing_a_client_whose_close_blocks_gives_up_in_bounded_time(monkeypatch):
    # The CI run at e2470a3 hung here: a test's replaced transactional producer was blocked in
    # send_offsets_to_transaction (librdkafka #5456) and the guard's close() waited on it.
    monkeypatch.setattr(client_leaks, "CLOSE_TIMEOUT_S", 0.2)
    stuck = _Stuck()
    try:
        assert client_leaks.close(stuck) is False
    finally:
        stuck.released.set()


def test_an_abandoned_client_is_not_a_leak():
    serial = client_leaks.mark()
    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    assert [made.kind for _, made in client_leaks.open_since(serial)] == ["confluent_kafka.Producer"]
    client_leaks.abandon(producer)
    assert client_leaks.open_since(serial) == []
    assert client_leaks.abandoned_since(serial) == 1
    del producer
