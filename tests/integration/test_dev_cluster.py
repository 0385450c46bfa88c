"""``tidelog dev-cluster`` as a developer runs it: etcd and brokers as real processes, each broker
with its console and metrics; its output names every broker's Kafka and console address, and
the broker (by id) that exits; SIGTERM stops every process it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.brokerproc import wait_until
from tests.etcdproc import etcd_binary, free_port

pytestmark = pytest.mark.slow

BROKER_LINE = re.compile(r"^broker (\d+):\s+kafka 127\.0\.0\.1:(\d+)\s+console http://127\.0\.0\.1:(\d+)/\s+pid (\d+)\s+log (\S+)$")


class Output:
    """Lines of a stream, read on a thread as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_dev_cluster_serves_a_console_per_broker_and_names_a_broker_that_exits(tmp_path):
    etcd_binary()  # skips without etcd
    etcd_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "dev-cluster", "--brokers", "2", "--data-dir", str(tmp_path / "dev"),
         "--base-port", "0", "--http-base-port", "0", "--etcd-port", str(etcd_port),
         "--set", "broker.session.timeout.ms=2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out, err = Output(proc.stdout), Output(proc.stderr)
    try:
        wait_until(lambda: any(line.startswith("bootstrap:") for line in out.lines) or proc.poll() is not None,
                   timeout_s=120, message="the dev cluster's addresses")
        assert proc.poll() is None, out.text() + err.text()
        brokers = {int(m.group(1)): m for m in map(BROKER_LINE.match, out.lines) if m}
        assert sorted(brokers) == [1, 2], out.text()
        kafka_ports = [int(brokers[n].group(2)) for n in (1, 2)]
        assert f"bootstrap: 127.0.0.1:{kafka_ports[0]},127.0.0.1:{kafka_ports[1]}" in out.lines
        assert f"etcd:      etcd://127.0.0.1:{etcd_port} (log: {tmp_path / 'dev' / 'etcd.log'})" in out.lines

        # Each broker serves its console, metrics and /ready; each sees both brokers.
        for node_id, match in brokers.items():
            http = f"http://127.0.0.1:{match.group(3)}"
            wait_until(lambda: get_json(http + "/ready")[0] == 200, timeout_s=30, message=f"broker {node_id} ready")
            with urllib.request.urlopen(http + "/", timeout=10) as response:
                assert b"Tidelog" in response.read()
            with urllib.request.urlopen(http + "/metrics", timeout=10) as response:
                assert b"tidelog_uptime_seconds" in response.read()
            wait_until(lambda: len(get_json(http + "/api/v1/cluster")[1]["brokers"]) == 2, timeout_s=30,
                       message=f"broker {node_id} to see both brokers")

        # A broker that dies is named by its id, with its exit code.
        os.kill(int(brokers[2].group(4)), signal.SIGKILL)
        wait_until(lambda: any(line.startswith("broker 2 exited with -9") for line in err.lines), timeout_s=30,
                   message="dev-cluster to report broker 2")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert proc.returncode == 0, err.text()
    # The brokers it started are gone (it waited for each).
    for match in brokers.values():
        assert not os.path.exists(f"/proc/{match.group(4)}")


def test_dev_cluster_refuses_per_broker_settings(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tidelog", "dev-cluster", "--data-dir", str(tmp_path / "dev"),
                             "--set", "http.port=9000"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "error: --set http.port: dev-cluster sets it for each broker (use --http-base-port)\n"
    result = subprocess.run([sys.executable, "-m", "tidelog", "dev-cluster", "--brokers", "3", "--base-port", "65534",
                             "--data-dir", str(tmp_path / "dev")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "error: --base-port 65534: 3 brokers need ports up to 65536, above 65535\n"
    assert not (tmp_path / "dev").exists()
