"""``tidelog serve`` as an operator runs it, as real processes: the data directory's lock, what
it prints when it starts, and one-line errors (exit code 1, no traceback, nothing served) for
every way a start can go wrong: a port in use, a data directory it cannot use, a bad log
level, a setting with a bad value (named with where it came from), no etcd."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.brokerproc import BrokerProcess, wait_until
from tests.etcdproc import free_port
from tests.integration.clients import produce

START_TIMEOUT_S = 60


def serve(*args: str, env: dict | None = None, timeout_s: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``tidelog serve ARGS`` expected to fail at start: its exit code and output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDELOG_")}
    return subprocess.run([sys.executable, "-m", "tidelog", "serve", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**base, **(env or {})}, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The run failed with ``code`` and wrote exactly one line, ``error: ...``, and nothing else."""
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_second_broker_on_a_live_data_dir_exits_and_the_first_keeps_its_data(broker_factory, tmp_path):
    first = broker_factory()
    produce("confluent", first.bootstrap, "kept", [(None, b"before", None, None)], partition=0)

    result = serve("--data-dir", str(first.data_dir), "--port", "0", "--http-port", "0")
    message = one_line_error(result)
    assert str(first.data_dir.absolute()) in message and f"PID {first.proc.pid}" in message and "--data-dir" in message
    # The second broker touched nothing: no clean-shutdown marker under the live broker, whose
    # records are all there after a restart.
    assert not (first.data_dir / ".clean-shutdown").exists()
    produce("confluent", first.bootstrap, "kept", [(None, b"after", None, None)], partition=0)
    assert first.stop() == 0
    first.restart()
    from tests.integration.clients import consume

    records = consume("confluent", first.bootstrap, "kept", 2, partition=0)
    assert [(r.offset, r.value) for r in records] == [(0, b"before"), (1, b"after")]

    # The lock goes with the process, however it ends: after a SIGKILL another broker may start.
    first.kill()
    again = BrokerProcess(first.data_dir, {"http.port": "0"}).start()
    try:
        assert again.alive
    finally:
        again.kill()


def test_start_prints_version_data_dir_and_listeners_once_and_no_warning_on_a_fresh_dir(tmp_path):
    from tidelog import __version__

    data_dir = tmp_path / "fresh" / "data"
    data_dir.parent.mkdir()
    broker = BrokerProcess(data_dir, {"http.port": "0"}).start()
    try:
        wait_until(lambda: "started" in broker.log(), message="the start to be logged")
        log = broker.log()
    finally:
        broker.stop()
    assert log.count(f"Tidelog {__version__}: broker 1, data dir {data_dir.absolute()}") == 1, log
    assert log.count(f"Kafka listener on 127.0.0.1:{broker.port}") == 1, log
    assert log.count(f"HTTP listener on 127.0.0.1:{broker.metrics_port}") == 1, log
    # (A machine without a C compiler gets one WARNING about the record walk's C extension.)
    assert not [line for line in log.splitlines() if ("WARNING" in line or "ERROR" in line) and "_recordwalk" not in line], log


def test_ports_in_use_are_one_line_errors_and_nothing_is_served(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kafka_port = free_port()
        # Kafka's port in use.
        message = one_line_error(serve("--data-dir", str(tmp_path / "a"), "--port", str(port), "--http-port", "0"))
        assert message == f"error: cannot listen for Kafka on 127.0.0.1:{port} (--host, --port): address already in use"
        # HTTP's port in use: the Kafka port (free) was bound but never served, nothing logged.
        message = one_line_error(serve("--data-dir", str(tmp_path / "b"), "--port", str(kafka_port), "--http-port", str(port)))
        assert message == (f"error: cannot listen for HTTP on 127.0.0.1:{port} (http.host=127.0.0.1 by default, "
                           f"http.port={port} from --http-port): address already in use")
        message = one_line_error(serve("--data-dir", str(tmp_path / "c"), "--port", "0", env={"TIDELOG_HTTP_PORT": str(port)}))
        assert f"http.port={port} from environment variable TIDELOG_HTTP_PORT" in message
    # Neither failed start left its data directory locked.
    ok = BrokerProcess(tmp_path / "b", {"http.port": "0"}).start()
    ok.stop()


def test_ports_outside_the_range_are_rejected(tmp_path):
    message = one_line_error(serve("--data-dir", str(tmp_path / "d"), "--port", "99999"), code=2)
    assert "'--port'" in message and "99999 is not in the range 0<=x<=65535" in message
    message = one_line_error(serve("--data-dir", str(tmp_path / "d"), "--http-port", "70000"), code=2)
    assert "'--http-port'" in message
    message = one_line_error(serve("--data-dir", str(tmp_path / "d"), "--set", "http.port=65536"))
    assert message == "error: http.port: 65536 is above the maximum 65535 (from --set)"
    assert not (tmp_path / "d").exists()


def test_data_dir_that_cannot_be_created_or_written(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    message = one_line_error(serve("--data-dir", str(a_file / "data"), "--port", "0", "--http-port", "0"))
    assert message == f"error: cannot create data directory {a_file / 'data'}: not a directory (--data-dir)"
    message = one_line_error(serve("--data-dir", str(a_file), "--port", "0", "--http-port", "0"))
    assert message == f"error: data directory {a_file} is not a directory (--data-dir)"

    # A directory that exists but cannot be written: sysfs takes no new files, not even from root.
    message = one_line_error(serve("--data-dir", "/sys", "--port", "0", "--http-port", "0"))
    assert message.startswith("error: data directory /sys is not writable: ") and message.endswith(" (--data-dir)"), message
    if os.geteuid() != 0:  # and one its permissions forbid (root would write it anyway)
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        message = one_line_error(serve("--data-dir", str(read_only), "--port", "0", "--http-port", "0"))
        assert message == f"error: data directory {read_only} is not writable: permission denied (--data-dir)"


def test_log_level_and_format_name_the_option_and_its_source(tmp_path):
    args = ("--data-dir", str(tmp_path / "d"), "--port", "0", "--http-port", "0")
    assert one_line_error(serve(*args, "--log-level", "verbose")) == \
        "error: --log-level: 'verbose' is not one of debug, info, warning, error, critical"
    assert one_line_error(serve(*args, env={"TIDELOG_LOG_LEVEL": "loud"})) == \
        "error: --log-level: 'loud' (from environment variable TIDELOG_LOG_LEVEL) is not one of debug, info, warning, error, critical"
    assert one_line_error(serve(*args, "--log-format", "xml")) == "error: --log-format: 'xml' is not one of text, json"


def test_bad_settings_name_the_setting_and_where_it_came_from(tmp_path):
    args = ("--data-dir", str(tmp_path / "d"), "--port", "0", "--http-port", "0")
    assert one_line_error(serve(*args, "--set", "num.partitions=abc")) == \
        "error: num.partitions: expected an integer, got 'abc' (from --set)"
    assert one_line_error(serve(*args, env={"TIDELOG_NUM_PARTITIONS": "many"})) == \
        "error: num.partitions: expected an integer, got 'many' (from environment variable TIDELOG_NUM_PARTITIONS)"
    assert one_line_error(serve(*args, "--set", "log.durability.profile=fast")) == \
        "error: log.durability.profile: 'fast' is not one of throughput, balanced, durable (from --set)"
    assert one_line_error(serve(*args, "--set", "no.such.setting=1")) == "error: unknown broker setting 'no.such.setting' (from --set)"
    assert one_line_error(serve(*args, "--set", "num.partitions")) == "error: --set: expected NAME=VALUE, got 'num.partitions'"

    config = tmp_path / "broker.toml"
    config.write_text("num.partitions = 3\nlog.retention.ms 5\n")
    message = one_line_error(serve(*args, "--config", str(config)))
    assert message.startswith(f"error: {config}: not valid TOML: ") and "line 2" in message
    config.write_text('[log]\nretention.ms = "a week"\n')
    assert one_line_error(serve(*args, "--config", str(config))) == \
        f"error: log.retention.ms: expected an integer, got 'a week' (in {config})"
    assert not (tmp_path / "d").exists()


def test_cluster_without_etcd_is_one_line(tmp_path):
    dead = free_port()
    result = serve("--data-dir", str(tmp_path / "d"), "--port", "0", "--http-port", "0", "--cluster", f"etcd://127.0.0.1:{dead}",
                   "--broker-id", "1")
    message = one_line_error(result)
    assert message == (f"error: cannot reach etcd (--cluster etcd://127.0.0.1:{dead}): no etcd endpoint answered kv/txn: "
                       f"http://127.0.0.1:{dead}: connection refused")
    assert "Unclosed" not in result.stderr
    assert one_line_error(serve("--cluster", "http://127.0.0.1:2379")) == \
        "error: --cluster: expected etcd://host:port[,host:port...][/prefix], got 'http://127.0.0.1:2379'"


def test_a_data_dir_of_another_cluster_names_cluster_id(tmp_path):
    broker = BrokerProcess(tmp_path / "d", {"http.port": "0"}).start()
    assert broker.stop() == 0
    cluster_id = json.loads((tmp_path / "d" / "__tidelog_meta" / "metadata.json").read_text())["cluster_id"]
    message = one_line_error(serve("--data-dir", str(tmp_path / "d"), "--port", "0", "--http-port", "0", "--set", "cluster.id=other"))
    assert message == f"error: data directory belongs to cluster {cluster_id}, not other (cluster.id=other from --set)"
    # The failed start released the lock: the broker starts again as it was.
    BrokerProcess(tmp_path / "d", {"http.port": "0"}).start().stop()


def test_scripts_serve_reuses_the_venv_that_scripts_test_set_up(tmp_path):
    """./scripts/serve starts a broker from the venv the tests run in without reinstalling it."""
    venv = Path(sys.prefix)
    stamps = lambda: {p.name: p.stat().st_mtime_ns for p in venv.glob(".tidelog-installed-*")}  # noqa: E731
    before = stamps()
    assert before, "the test run's venv was made by scripts/test (bootstrap.sh)"
    port_file = tmp_path / "ports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDELOG_")}
    env.update(TIDELOG_VENV=str(venv), TIDELOG_DATA_DIR=str(tmp_path / "data"))
    script = Path(__file__).resolve().parents[2] / "scripts" / "serve"
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([str(script), "--port", "0", "--http-port", "0", "--port-file", str(port_file)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None, 60, message="scripts/serve to start a broker")
        assert proc.poll() is None, (tmp_path / "log").read_text()
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    assert stamps() == before, "scripts/serve ran pip install"
    assert "pip" not in (tmp_path / "log").read_text().lower()


def test_http_binds_loopback_unless_http_host_says_otherwise(tmp_path):
    """--host moves the Kafka listener only; HTTP (an unauthenticated admin API) stays on
    127.0.0.1 unless http.host names another address. (127.0.0.2 is loopback too.)"""

    def start(name: str, *args: str) -> tuple[subprocess.Popen, int, int]:
        port_file = tmp_path / f"{name}.ports"
        with open(tmp_path / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tidelog", "serve", "--host", "127.0.0.2", "--port", "0",
                                     "--http-port", "0", "--data-dir", str(tmp_path / name), "--port-file", str(port_file), *args],
                                    stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: port_file.exists() or proc.poll() is not None, 60, message=f"{name} to start")
        assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
        kafka, http = (int(x) for x in port_file.read_text().split())
        return proc, kafka, http

    def answers(host: str, port: int) -> bool:
        try:
            return http_get(port, "/health", host)[0] == 200
        except OSError:
            return False

    default, kafka, http = start("default")
    try:
        socket.create_connection(("127.0.0.2", kafka), timeout=5).close()
        assert answers("127.0.0.1", http) and not answers("127.0.0.2", http)
    finally:
        default.terminate()
        default.wait(60)
    chosen, _, http = start("chosen", "--set", "http.host=127.0.0.2")
    try:
        assert answers("127.0.0.2", http) and not answers("127.0.0.1", http)
    finally:
        chosen.terminate()
        chosen.wait(60)
