"""``tidelog dev-cluster --set http.ssl.enable=true``: the console links it prints are https://
(they were http://, which an HTTPS listener does not answer), and through either broker's API
``/api/v1/cluster`` lists both brokers with their event-loop lag (the brokers ask each other
over https)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import requests

from tests.brokerproc import wait_until
from tests.etcdproc import etcd_binary, free_port
from tests.integration.security_clients import Pki
from tests.integration.test_dev_cluster import Output

pytestmark = pytest.mark.slow

BROKER_LINE = re.compile(r"^broker (\d+):\s+kafka 127\.0\.0\.1:(\d+)\s+console (\S+)\s+pid (\d+)\s+log (\S+)$")


def test_dev_cluster_over_https_prints_https_consoles_that_show_both_brokers(tmp_path):
    etcd_binary()  # skips without etcd
    pki = Pki.make(tmp_path / "pki")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "dev-cluster", "--brokers", "2", "--data-dir", str(tmp_path / "dev"),
         "--base-port", "0", "--http-base-port", "0", "--etcd-port", str(free_port()),
         "--set", "http.ssl.enable=true", "--set", f"ssl.keystore.location={pki.server_pem}",
         "--set", f"ssl.truststore.location={pki.ca_file}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out, err = Output(proc.stdout), Output(proc.stderr)
    try:
        wait_until(lambda: any(line.startswith("bootstrap:") for line in out.lines) or proc.poll() is not None,
                   timeout_s=120, message="the dev cluster's addresses")
        assert proc.poll() is None, out.text() + err.text()
        consoles = {int(m.group(1)): m.group(3) for m in map(BROKER_LINE.match, out.lines) if m}
        assert sorted(consoles) == [1, 2], out.text()
        for node_id, console in consoles.items():
            assert re.fullmatch(r"https://127\.0\.0\.1:\d+/", console), out.text()

            def lags() -> list:
                view = requests.get(console + "api/v1/cluster", verify=str(pki.ca_file), timeout=10).json()
                return [b["event_loop"] for b in view["brokers"]]

            wait_until(lambda: len(lags()) == 2 and all(lags()), timeout_s=30,
                       message=f"broker {node_id}'s view of both brokers with their lag")
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
