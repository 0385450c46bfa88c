"""Connections from this host get a loss-based TCP congestion control, not the host's BBR
(server/connection.py ``_loopback_congestion_control``). Over loopback BBR measures a round trip
of microseconds and keeps its window at a few segments of that, so a multi-MB Fetch response to a
reader that acknowledges late (an RF 3 follower appending the last one) took 140-196 ms to arrive
instead of ~3 ms (benchmarks/replication_trace.py). Checked on the broker's side of real
connections (a confluent-kafka and a kafka-python client; TLS too) with ``ss``, on hosts whose default is
BBR: elsewhere the default is already loss-based and there is nothing to see."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

from tests.brokerproc import wait_until

LOSS_BASED = {"cubic", "reno"}


def _default_congestion_control() -> str:
    try:
        return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        return ""


def _server_side(port: int) -> list[str]:
    """The congestion control of each established connection whose local port is ``port``."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    found = []
    for line in out.splitlines():
        for word in line.split():
            if word in LOSS_BASED or word in {"bbr", "bbr2", "dctcp", "vegas", "westwood", "htcp", "bic"}:
                found.append(word)
    return found


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.skipif(_default_congestion_control() != "bbr", reason="the host's default is not BBR")
def test_local_clients_connections_are_not_bbr(broker):
    confluent = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert confluent.list_topics(timeout=10).brokers
    python_client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    try:
        assert python_client.describe_cluster()["brokers"]
        # Both clients' connections (librdkafka replaces its bootstrap connection by the broker's
        # own: for a moment there may be one).
        wait_until(lambda: len(_server_side(broker.port)) >= 2, 10, message="two established connections")
        names = _server_side(broker.port)
        assert set(names) <= LOSS_BASED, f"the broker's side of local connections uses {names}"
    finally:
        python_client.close()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.skipif(_default_congestion_control() != "bbr", reason="the host's default is not BBR")
def test_a_local_tls_connection_is_not_bbr_either(broker_factory, tmp_path):
    from tests.integration.security_clients import Pki, Security

    pki = Pki.make(tmp_path / "pki")
    broker = broker_factory({"listeners": "SSL://127.0.0.1:0", **pki.broker_settings()})
    tls = Security("SSL", ca_file=pki.ca_file).confluent()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **tls})  # its connection open while ss looks
    assert admin.list_topics(timeout=15).brokers
    wait_until(lambda: _server_side(broker.port), 10, message="an established connection")
    names = _server_side(broker.port)
    assert names and set(names) <= LOSS_BASED, f"the broker's side of a local TLS connection uses {names}"
