from __future__ import annotations

import sys
import traceback

import pytest

from tests import client_leaks

# Before any test module imports a client class (tests/client_leaks.py).
client_leaks.install()

from tests.brokerproc import BrokerProcess  # noqa: E402

# Settings every test broker gets: what client test suites expect (auto-creation, several
# partitions is opt-in per test), a quick retention check, and a new consumer group's first
# rebalance after 100 ms instead of Kafka's 3 s (Kafka's own test brokers set it to 0): a test
# with a group otherwise waits those 3 s for nothing. The delay itself is tested in
# tests/unit/test_group_coordinator.py.
TEST_SETTINGS = {"log.retention.check.interval.ms": "1000", "http.port": "0", "group.initial.rebalance.delay.ms": "100"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item._tidelog_call_failed = report.failed
    return report


@pytest.fixture(autouse=True)
def kafka_client_leaks(request):
    """Notes which Kafka clients are the test's (tests/client_leaks.py): those made after this
    point. Autouse and function-scoped, so set up after the module's and session's fixtures (a
    client one of them holds is not the test's). ``pytest_runtest_protocol`` below checks."""
    request.node._tidelog_client_mark = (client_leaks.mark(), client_leaks.librdkafka_handles())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After a test and all of pytest's own cleanup (fixture values, captured log records: both
    hold a test's objects through its teardown), a Kafka client the test made that is still
    open is a leak: the test gets an error, and the client is closed so that it does not run on
    during the next tests."""
    result = yield
    mark = getattr(item, "_tidelog_client_mark", None)
    if mark is None:
        return result
    serial, handles = mark
    if getattr(item, "_tidelog_call_failed", False):
        # A failed test's frames are kept (sys.last_traceback) and hold its clients; the failure
        # is reported already: free them rather than report each as a leak too.
        if getattr(sys, "last_traceback", None) is not None:
            try:
                traceback.clear_frames(sys.last_traceback)
            except RuntimeError:  # a frame still executing (a test that failed inside a generator)
                pass
        for client, _ in client_leaks.open_since(serial):
            client_leaks.close(client)
        return result
    leaked = client_leaks.open_since(serial)
    unclosable = {id(client) for client, _ in leaked if not client_leaks.close(client)}
    problem = None
    if leaked:
        problem = (f"{len(leaked)} Kafka client(s) left open after the test (close them in a finally or a "
                   "fixture's teardown, or use a with block):\n"
                   + "\n".join(f"  {made.kind} made at {made.where}"
                               + (" (its close() blocked: another thread is inside it)" if id(client) in unclosable else "")
                               for client, made in leaked))
    elif client_leaks.librdkafka_handles() - client_leaks.abandoned_since(serial) > handles:
        problem = (f"{client_leaks.librdkafka_handles() - handles} librdkafka instance(s) (rdk:main threads) more "
                   "after the test than before it, made outside the registered client classes")
    if problem is not None:
        report = pytest.TestReport(item.nodeid, item.location, {name: 1 for name in item.keywords}, "failed",
                                   problem, "teardown")
        item.ihook.pytest_runtest_logreport(report=report)
    return result


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
