"""Run kafka-python's own integration suite (from its PyPI sdist) against a fresh Tidelog broker.

Steps, each its own function so a developer can run them by hand
(``python -m tests.conformance.kafka_python_suite`` prints every outcome):

1. ``fetch_sdist``: ``pip download`` the exact sdist (once) into a cache folder outside the source
   tree (``$CONFORMANCE_CACHE_DIR``, default ``~/.cache/tidelog/conformance``), unpack it afresh there.
2. ``add_missing_files``: the sdist lacks ``test/__init__.py``, ``test/conftest.py`` and
   ``test/service.py``; copy our own stand-ins from ``kafka_python_shim/``.
3. ``install_test_requirements``: pip-install what the sdist's ``testing`` and compression extras
   name, when missing (they are also in our ``test`` extra, so normally nothing happens).
4. ``run_suite``: start Tidelog with the settings kafka-python's own test broker uses, run
   ``test/integration/`` in a subprocess pytest (KAFKA_URI / KAFKA_VERSION / KAFKA_ROOT), bounded
   per test (pytest-timeout) and overall, stop the broker, and read the junit XML report.
5. ``compare``: check outcomes against ``kafka_python_expected_failures.txt``. A failure whose
   captured log proves a known kafka-python race (``client_race``: the client never asked the broker
   what the test needed) is reported apart, not as a broker failure.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.brokerproc import BrokerProcess
from tests.conftest import TEST_SETTINGS
from tests.etcdproc import free_port

KAFKA_PYTHON_VERSION = "3.0.12"
# The sdist PyPI serves for that version, so every run tests the same upstream code.
KAFKA_PYTHON_SDIST_SHA256 = "4ccda3616b9aa5c353d74a97f2770d6cd1b950890d77ab0e8890e09a48eeed65"
# The Kafka release whose API versions Tidelog advertises; the suite gates features on it.
KAFKA_VERSION = "4.0.0"
HERE = Path(__file__).resolve().parent
SHIM_DIR = HERE / "kafka_python_shim"
EXPECTED_FAILURES_PATH = HERE / "kafka_python_expected_failures.txt"

# What kafka-python's Kafka 4.0 test broker template (servers/4.0.0/resources/kafka.properties in
# its repository, with the fixture's partitions=4) sets and Tidelog knows: the broker is node 0
# (KafkaFixture.instance(0); tests assign replicas to broker 0 by id), advertised.listeners is set
# explicitly (see start_broker), topics appear on first use with 4 partitions, groups rebalance
# without the initial delay, short test session timeouts are allowed, ACLs are on with everyone
# allowed where a resource has none (its test_create_describe_delete_acls manages ACLs).
BROKER_SETTINGS = {
    **TEST_SETTINGS,  # what every test broker gets (free HTTP port, quick retention checks)
    "node.id": "0",
    "auto.create.topics.enable": "true",
    "num.partitions": "4",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}

# Knobs are CONFORMANCE_*, not TIDELOG_*: the broker reads every TIDELOG_* variable as a setting.
# The whole suite takes ~30 s against a healthy broker; the bounds only stop a hang.
PER_TEST_TIMEOUT_S = int(os.environ.get("CONFORMANCE_TEST_TIMEOUT_S", "60"))
SUITE_TIMEOUT_S = int(os.environ.get("CONFORMANCE_SUITE_TIMEOUT_S", "900"))
# Extras of the sdist whose packages the integration tests use: the test tools, and the
# compression codecs (without them the compression tests skip instead of running).
SDIST_EXTRAS = ("testing", "lz4", "snappy", "zstd")


def cache_dir() -> Path:
    configured = os.environ.get("CONFORMANCE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tidelog" / "conformance"


def fetch_sdist(cache: Path | None = None) -> Path:
    """Download the kafka-python sdist once and unpack it afresh; return the unpacked root folder.

    Unpacked on every run (a fraction of a second), so edits or stray files left in the tree by
    a previous session never change what runs.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"kafka[_-]python-{KAFKA_PYTHON_VERSION}.tar.gz"
    archives = sorted(cache.glob(pattern))
    if not archives:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", f"kafka-python=={KAFKA_PYTHON_VERSION}", "-d", str(cache)],
            timeout=300, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        archives = sorted(cache.glob(pattern))
        if download.returncode != 0 or not archives:
            raise RuntimeError(f"pip download of the kafka-python {KAFKA_PYTHON_VERSION} sdist failed:\n{download.stdout}")
    digest = hashlib.sha256(archives[0].read_bytes()).hexdigest()
    if digest != KAFKA_PYTHON_SDIST_SHA256:
        raise RuntimeError(f"{archives[0]} has sha256 {digest}, expected {KAFKA_PYTHON_SDIST_SHA256}; delete it to download again")
    root = cache / f"kafka_python-{KAFKA_PYTHON_VERSION}"
    # Unpack beside the target and rename, so a half-unpacked tree is never mistaken for a whole one.
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
    try:
        with tarfile.open(archives[0]) as tar:
            tar.extractall(staging, filter="data")
        (unpacked,) = [p for p in staging.iterdir() if p.is_dir()]
        shutil.rmtree(root, ignore_errors=True)
        unpacked.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def add_missing_files(root: Path) -> None:
    """Give the sdist's test/ the three files it imports but does not ship, and our logging plugin."""
    test_dir = root / "test"
    (test_dir / "__init__.py").write_text("")
    shutil.copyfile(SHIM_DIR / "upstream_conftest.py", test_dir / "conftest.py")
    shutil.copyfile(SHIM_DIR / "service.py", test_dir / "service.py")
    shutil.copyfile(SHIM_DIR / "tidelog_logging.py", test_dir / "tidelog_logging.py")


def sdist_test_requirements(root: Path) -> list[Requirement]:
    """What the sdist's pyproject says its tests need (its testing and compression extras)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(spec) for extra in SDIST_EXTRAS for spec in extras.get(extra, [])]


def install_test_requirements(root: Path) -> list[str]:
    """pip-install (into the running interpreter's environment) the requirements not yet met."""
    missing = []
    for requirement in sdist_test_requirements(root):
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if requirement.specifier and installed not in requirement.specifier:
            missing.append(str(requirement))
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *missing],
                       check=True, timeout=600)
    return missing


@dataclasses.dataclass
class SuiteRun:
    outcomes: dict[str, str]  # upstream test id -> passed / failed / skipped
    messages: dict[str, str]  # upstream test id -> first line of its failure or skip reason
    logs: dict[str, str]      # upstream test id -> captured log, failed tests only
    returncode: int
    output_tail: str
    broker_log_tail: str
    duration_s: float


def run_suite(root: Path, work_dir: Path, pytest_args: tuple[str, ...] = ()) -> SuiteRun:
    """Start a fresh broker, run test/integration/ against it, stop it; return the outcomes."""
    work_dir.mkdir(parents=True, exist_ok=True)
    junit_path = work_dir / "kafka-python-junit.xml"
    junit_path.unlink(missing_ok=True)
    output_path = work_dir / "kafka-python-pytest.out"
    broker = start_broker(work_dir)
    started = time.monotonic()
    try:
        env = {
            **os.environ,
            "KAFKA_URI": f"PLAINTEXT://{broker.bootstrap}",
            "KAFKA_VERSION": KAFKA_VERSION,
            # Only checked to exist: no Kafka scripts are run against an external broker.
            "KAFKA_ROOT": str(work_dir),
        }
        for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONPATH"):
            env.pop(name, None)
        args = [
            sys.executable, "-m", "pytest", "test/integration",
            "-p", "no:cacheprovider", "-p", "no:asyncio",
            f"--junit-xml={junit_path}", "-o", "junit_family=xunit2",
            f"--timeout={PER_TEST_TIMEOUT_S}",
            # signal, not upstream's thread method: a timed-out test fails and the run goes on.
            "--timeout-method=signal",
            # A failed test's captured log goes into the junit report (client_race reads it);
            # kafka.cluster logs at DEBUG there, the rest of kafka at INFO (test/tidelog_logging.py).
            "-o", "junit_logging=log", "-o", "junit_log_passing_tests=false",
            "-o", "log_level=DEBUG", "-p", "test.tidelog_logging", "-q", "-rfE", *pytest_args,
        ]
        with open(output_path, "wb") as output:
            proc = subprocess.Popen(args, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                returncode = proc.wait(SUITE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(
                    f"kafka-python suite did not finish within {SUITE_TIMEOUT_S}s:\n"
                    f"{_tail(output_path)}\n--- broker log ---\n{broker.log()[-5000:]}") from None
    finally:
        duration_s = time.monotonic() - started
        died = not broker.alive
        broker.stop()
        _keep_artifacts(work_dir, [junit_path, output_path, broker.log_path])
    if died:
        raise AssertionError(f"the broker died during the suite (exit {broker.proc.returncode}):\n{broker.log()[-8000:]}")
    if not junit_path.exists():
        raise AssertionError(f"pytest wrote no junit report (exit {returncode}):\n{_tail(output_path)}")
    outcomes, messages = parse_junit(junit_path, root)
    return SuiteRun(outcomes, messages, parse_junit_logs(junit_path, root), returncode, _tail(output_path), broker.log()[-5000:], duration_s)


def start_broker(work_dir: Path, attempts: int = 3) -> BrokerProcess:
    """A fresh broker on a free port, advertising that port as the suite's template does.

    advertised.listeners needs the port before the broker binds it, so a free port is picked
    first; if another process takes it in between, start again on another.
    """
    for attempt in range(attempts):
        port = free_port()
        settings = {**BROKER_SETTINGS, "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}"}
        broker = BrokerProcess(work_dir / f"broker-data-{attempt}", settings, port=port)
        try:
            return broker.start()
        except RuntimeError:
            broker.kill()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _keep_artifacts(work_dir: Path, paths: list[Path]) -> None:
    """Copy the last run's reports to <cache>/last-run/ (temp dirs are gone when you look)."""
    keep = cache_dir() / "last-run"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.exists():
            shutil.copyfile(path, keep / path.name)


def _tail(path: Path, limit: int = 8000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def parse_junit(junit_path: Path, root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Outcome of each test by its pytest node id (``test/integration/test_x.py::test_y[p]``)."""
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        node_id = _node_id(case.get("classname", ""), case.get("name", ""), root)
        problems = case.findall("failure") + case.findall("error")
        skipped = case.find("skipped")
        if problems:
            outcome = "failed"
            message = problems[0].get("message") or (problems[0].text or "")
        elif skipped is not None:
            outcome = "skipped"
            message = skipped.get("message") or ""
        else:
            outcome, message = "passed", ""
        # A teardown error is reported as a second testcase of the same name: the worse outcome wins.
        if outcomes.get(node_id) != "failed":
            outcomes[node_id] = outcome
            messages[node_id] = message.strip().splitlines()[0][:300] if message.strip() else ""
    return outcomes, messages


def parse_junit_logs(junit_path: Path, root: Path) -> dict[str, str]:
    """The captured log (junit ``system-out``) of each failed test, by its upstream test id."""
    logs: dict[str, str] = defaultdict(str)
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        out = case.find("system-out")
        if (case.find("failure") is not None or case.find("error") is not None) and out is not None:
            logs[_node_id(case.get("classname", ""), case.get("name", ""), root)] += out.text or ""
    return dict(logs)


def _node_id(classname: str, name: str, root: Path) -> str:
    parts = classname.split(".")
    for split in range(len(parts), 0, -1):
        module_path = "/".join(parts[:split]) + ".py"
        if (root / module_path).exists():
            return "::".join([module_path, *parts[split:], name])
    return "::".join([classname.replace(".", "/") + ".py", name])


FLAKY_PREFIX = "flaky:"

LOST_SUBSCRIPTION = (
    "kafka-python 3.0.12 lost the consumer's subscription: its bootstrap Metadata request was built "
    "before the subscription and answered after it, and ClusterMetadata.update_metadata cleared the "
    "update the subscription asked for, so the consumer never asked the broker about its topic "
    "(it waits metadata_max_age_ms, 5 min); not the broker")
_LOG_LINE = re.compile(r"^\S+ +\w+ +(?P<thread>\S+) +(?P<logger>\S+) +(?P<message>.*)$")
_SUBSCRIBED = "Updating subscribed topics to: "
_REQUEST = "Sending metadata request MetadataRequest(topics="
_ANSWER = "Updated metadata: "


def client_race(log: str) -> str | None:
    """The known kafka-python race a failed test's captured log proves, or None.

    LOST_SUBSCRIPTION, seen only with all of its evidence: a client thread sent a Metadata
    request naming no topic, the main thread then subscribed to topics, that thread applied the
    answer after the subscription, and it never sent a request naming a subscribed topic again.
    """
    lines = [m.group("thread", "logger", "message") for m in map(_LOG_LINE.match, log.splitlines()) if m]
    for at, (_, logger, message) in enumerate(lines):
        if logger != "kafka.consumer.subscription_state" or not message.startswith(_SUBSCRIBED):
            continue
        topics = ast.literal_eval(message[len(_SUBSCRIBED):])
        in_flight = {}  # thread -> its last Metadata request's topic list, while unanswered
        for thread, _, earlier in lines[:at]:
            if earlier.startswith(_REQUEST):
                in_flight[thread] = earlier[len(_REQUEST):]
            elif earlier.startswith(_ANSWER):
                in_flight.pop(thread, None)
        for thread, request in in_flight.items():
            if not request.startswith("[],"):
                continue
            later = [m for t, _, m in lines[at + 1:] if t == thread]
            answered = any(m.startswith(_ANSWER) for m in later)
            asked = any(m.startswith(_REQUEST) and any(repr(t) in m for t in topics) for m in later)
            if answered and not asked:
                return LOST_SUBSCRIPTION
    return None


def load_expected_failures(path: Path = EXPECTED_FAILURES_PATH) -> dict[str, str]:
    """``test id -> reason`` lines; ``#`` comments and blank lines ignored.

    A reason starting with ``flaky:`` accepts either outcome (use only with a broker bug named).
    """
    expected: dict[str, str] = {}
    if not path.exists():
        return expected
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition(" -> ")
        if not sep or not reason.strip():
            raise ValueError(f"{path.name}:{number}: expected 'test id -> reason', got {line!r}")
        if test_id.strip() in expected:
            raise ValueError(f"{path.name}:{number}: {test_id.strip()} listed twice")
        expected[test_id.strip()] = reason.strip()
    return expected


@dataclasses.dataclass
class Comparison:
    unexpected_failures: list[str]   # failed, not listed
    unexpected_passes: list[str]     # listed, passed: take it off the list
    stale: list[str]                 # listed, but skipped or not collected at all
    expected_by_reason: dict[str, list[str]]
    flaky_passed: list[str] = dataclasses.field(default_factory=list)  # listed as flaky, passed this time
    client_races: dict[str, str] = dataclasses.field(default_factory=dict)  # failed by a proven client race

    @property
    def ok(self) -> bool:
        return not (self.unexpected_failures or self.unexpected_passes or self.stale)


def compare(outcomes: dict[str, str], expected: dict[str, str],
            logs: dict[str, str] | None = None) -> Comparison:
    unexpected_failures, unexpected_passes, stale, flaky_passed = [], [], [], []
    client_races: dict[str, str] = {}
    by_reason: dict[str, list[str]] = defaultdict(list)
    for test_id, outcome in sorted(outcomes.items()):
        reason = expected.get(test_id)
        if outcome == "failed":
            race = client_race((logs or {}).get(test_id, "")) if reason is None else None
            if race is not None:
                client_races[test_id] = race
            elif reason is None:
                unexpected_failures.append(test_id)
            else:
                by_reason[reason].append(test_id)
        elif reason is not None:
            if reason.startswith(FLAKY_PREFIX):
                if outcome == "passed":
                    flaky_passed.append(test_id)
                continue
            (unexpected_passes if outcome == "passed" else stale).append(test_id)
    stale += sorted(set(expected) - set(outcomes))
    return Comparison(unexpected_failures, unexpected_passes, stale, dict(by_reason), flaky_passed, client_races)


def summary(run: SuiteRun, comparison: Comparison) -> str:
    counts = Counter(run.outcomes.values())
    expected_failures = sum(len(v) for v in comparison.expected_by_reason.values())
    lines = [
        f"kafka-python {KAFKA_PYTHON_VERSION} integration suite against Tidelog "
        f"(KAFKA_VERSION={KAFKA_VERSION}, {run.duration_s:.0f}s):",
        f"  collected {len(run.outcomes)}, passed {counts['passed']}, failed {counts['failed']} "
        f"({expected_failures} expected), skipped {counts['skipped']}",
    ]
    if comparison.expected_by_reason:
        lines.append("  expected failures by reason:")
        for reason, ids in sorted(comparison.expected_by_reason.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"    {len(ids):3d}  {reason}")
    if comparison.flaky_passed:
        lines.append(f"  listed as flaky and passed this time: {len(comparison.flaky_passed)}")
    if comparison.client_races:
        lines.append("  FAILED BY A KNOWN CLIENT RACE (its log proves it; not counted against the broker):")
        lines += [f"    {t}: {race}" for t, race in comparison.client_races.items()]
    skip_reasons = Counter(run.messages[t] for t, o in run.outcomes.items() if o == "skipped")
    if skip_reasons:
        lines.append("  skipped by reason:")
        for reason, n in skip_reasons.most_common():
            lines.append(f"    {n:3d}  {reason}")
    for title, ids in (("UNEXPECTED FAILURES (fix the broker, or list with a reason)", comparison.unexpected_failures),
                       ("LISTED BUT PASSED (remove from the expectation file)", comparison.unexpected_passes),
                       ("LISTED BUT SKIPPED OR NOT COLLECTED (remove from the expectation file)", comparison.stale)):
        if ids:
            lines.append(f"  {title}:")
            lines += [f"    {t}  [{run.messages.get(t, '')}]" for t in ids]
    return "\n".join(lines)


def run_all(work_dir: Path, pytest_args: tuple[str, ...] = ()) -> tuple[SuiteRun, Comparison]:
    root = fetch_sdist()
    add_missing_files(root)
    install_test_requirements(root)
    run = run_suite(root, work_dir, pytest_args)
    return run, compare(run.outcomes, load_expected_failures(), run.logs)


def main(argv: list[str]) -> int:
    """By hand: ``python -m tests.conformance.kafka_python_suite [pytest args]``; prints every outcome."""
    work_dir = Path(tempfile.mkdtemp(prefix="tidelog-kafka-python-"))
    run, comparison = run_all(work_dir, tuple(argv))
    for test_id, outcome in sorted(run.outcomes.items()):
        print(f"{outcome:8s} {test_id}  {run.messages.get(test_id, '')}")
    print(summary(run, comparison))
    print(f"work dir (junit xml, pytest output, broker log): {work_dir}")
    return 0 if comparison.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
