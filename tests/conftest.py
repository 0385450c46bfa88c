from __future__ import annotations

import pytest

from tests.brokerproc import BrokerProcess

# Settings every test broker gets: what client test suites expect (auto-creation, several
# partitions is opt-in per test) and a quick retention check.
TEST_SETTINGS = {"log.retention.check.interval.ms": "1000", "http.port": "0"}


@pytest.fixture
def broker_factory(tmp_path):
    """Make brokers with given settings; every one started is stopped (by PID) at teardown."""
    started: list[BrokerProcess] = []

    def make(settings: dict[str, str] | None = None, name: str = "data", nofile: tuple[int, int] | None = None) -> BrokerProcess:
        proc = BrokerProcess(tmp_path / name, {**TEST_SETTINGS, **(settings or {})}, nofile=nofile)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    """A fresh single-node broker on a free loopback port."""
    return broker_factory()
