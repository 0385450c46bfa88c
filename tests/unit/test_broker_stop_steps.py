"""defect14: Broker.stop() runs every step even when one raises. It had no try/finally: a step
that raised (here the group coordinator's) skipped the rest, so the logs were not closed (no
clean-shutdown marker: the next start re-reads every log), the loop monitor was not stopped and
the data directory's lock stayed held, so a later start in the same process failed with 'in use
by another broker'. Failed before (the second start raised StartupError); now each failing step
is logged by name at ERROR, the others run, the lock is released last and the first failure is
raised after that."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidelog.config import BrokerConfig
from tidelog.server.broker import Broker
from tidelog.storage.manager import CLEAN_SHUTDOWN_FILE


class CoordinatorStopFailed(RuntimeError):
    pass


def new_broker(data_dir) -> Broker:
    return Broker(BrokerConfig.load(env={}, overrides={"http.port": "-1"}), data_dir, port=0)


def test_a_failing_stop_step_still_closes_the_logs_and_releases_the_lock(tmp_path, caplog):
    data_dir = tmp_path / "data"

    async def main():
        broker = new_broker(data_dir)
        await broker.start()

        def failing_stop():  # an injected failing component: the coordinator's stop raises
            raise CoordinatorStopFailed("the coordinator could not stop")

        broker.groups.stop = failing_stop
        with caplog.at_level(logging.ERROR, logger="tidelog.server.broker"):
            with pytest.raises(CoordinatorStopFailed):
                await broker.stop()
        assert (data_dir / CLEAN_SHUTDOWN_FILE).exists(), "the logs were not closed after the failed step"
        assert broker.loop_monitor._stopped.is_set(), "the loop monitor was left running"

        again = new_broker(data_dir)  # the lock is free: a start in this process succeeds
        await again.start()
        await again.stop()

    asyncio.run(main())
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and "group coordinator" in r.getMessage()]
    assert failed and "could not stop" in failed[0].getMessage(), [r.getMessage() for r in caplog.records]
