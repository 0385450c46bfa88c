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


@pytest.fixture(scope="module")
def module_broker_process(tmp_path_factory):
    """One broker for a whole module (see ``shared_broker``); stopped by PID after its last test."""
    proc = BrokerProcess(tmp_path_factory.mktemp("module-broker") / "data", dict(TEST_SETTINGS))
    yield proc.start()
    proc.kill()


class SharedBroker:
    """The module's broker as one test sees it: ``log()`` holds only what it logged during the
    test (an assertion about a log line is not met by an earlier test's); the rest is the process."""

    def __init__(self, proc: BrokerProcess) -> None:
        self._proc = proc
        self._log_start = proc.log_path.stat().st_size if proc.log_path.exists() else 0

    def __getattr__(self, name):
        return getattr(self._proc, name)

    def log(self) -> str:
        try:
            with open(self._proc.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")[-20000:]
        except OSError:
            return ""


@pytest.fixture
def shared_broker(module_broker_process) -> SharedBroker:
    """A broker shared by the tests of a module, for tests that only need one running (a fresh
    one per test costs 1-2 s to start and stop). Tests must not depend on the broker's state
    being new (use their own topic and group names). If a test left it dead, the next starts it
    again on the same data directory."""
    if not module_broker_process.alive:
        module_broker_process.restart()
    return SharedBroker(module_broker_process)
