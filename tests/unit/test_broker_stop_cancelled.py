"""Broker.stop() cancelled in the middle (an in-process broker stopped under asyncio.wait_for, a
step that hangs): the steps after the one cancelled still run, so the logs are closed (the clean
shutdown marker) before the data directory's lock is released, and the cancellation is raised
after that. Before, the CancelledError left the steps' loop: the lock was released with the logs
still open (the replica fetchers, the logs and the metadata store were never stopped), so another
start could open the same directory while they ran."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.config import BrokerConfig
from tidelog.server.broker import Broker
from tidelog.storage.manager import CLEAN_SHUTDOWN_FILE


def new_broker(data_dir) -> Broker:
    return Broker(BrokerConfig.load(env={}, overrides={"http.port": "-1"}), data_dir, port=0)


def test_a_cancelled_stop_still_closes_the_logs_before_it_releases_the_lock(tmp_path):
    data_dir = tmp_path / "data"

    async def main():
        broker = new_broker(data_dir)
        await broker.start()
        hanging = asyncio.Event()

        async def hanging_stop():  # a step that never ends: the stop is cancelled in it
            hanging.set()
            await asyncio.Event().wait()

        broker.groups.stop = hanging_stop
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(broker.stop(), 0.5)
        assert hanging.is_set()
        assert (data_dir / CLEAN_SHUTDOWN_FILE).exists(), "the lock was released with the logs still open"
        assert broker.loop_monitor._stopped.is_set()

        again = new_broker(data_dir)  # the lock is free once the logs are closed
        await again.start()
        await again.stop()

    asyncio.run(main())
