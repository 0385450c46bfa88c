"""Several listeners and TLS (issue 16): each client over TLS, Metadata answering with the
advertised address of the listener a client came in on, client certificates, a certificate
replaced without a restart, and wrong settings refused with one line."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import urllib.request

import pytest
import trustme
from confluent_kafka.admin import AdminClient

from tests.brokerproc import wait_until
from tests.integration.security_clients import CLIENTS, Pki, Security, round_trip, write_server_pem


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki.make(tmp_path / "pki")


def _brokers_seen(bootstrap: str, config: dict) -> dict[int, tuple[str, int]]:
    metadata = AdminClient({"bootstrap.servers": bootstrap, **config}).list_topics(timeout=15)
    return {b.id: (b.host, b.port) for b in metadata.brokers.values()}


def test_each_listener_advertises_itself(broker_factory, pki):
    broker = broker_factory({"listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,INTERNAL://127.0.0.1:0",
                             "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,INTERNAL:PLAINTEXT",
                             "inter.broker.listener.name": "INTERNAL", **pki.broker_settings()})
    ports = broker.listener_ports
    assert set(ports) == {"PLAINTEXT", "SSL", "INTERNAL"} and broker.port == ports["PLAINTEXT"]
    assert _brokers_seen(f"127.0.0.1:{ports['PLAINTEXT']}", {}) == {1: ("127.0.0.1", ports["PLAINTEXT"])}
    assert _brokers_seen(f"127.0.0.1:{ports['INTERNAL']}", {}) == {1: ("127.0.0.1", ports["INTERNAL"])}
    tls = Security("SSL", ca_file=pki.ca_file).confluent()
    assert _brokers_seen(f"127.0.0.1:{ports['SSL']}", tls) == {1: ("127.0.0.1", ports["SSL"])}


@pytest.mark.parametrize("client", CLIENTS)
def test_produce_and_fetch_over_tls(broker_factory, pki, client):
    broker = broker_factory({"listeners": "SSL://127.0.0.1:0", **pki.broker_settings()})
    values = round_trip(client, broker.bootstrap, Security("SSL", ca_file=pki.ca_file))
    assert values == [f"{client}-{i}".encode() for i in range(5)]
    # Record bytes over TLS are read and encrypted, never sent from the file (sendfile). Both
    # series exist from the start (metrics.py), so their values tell.
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
        sent = {line[line.index('path="') + 6:line.index('"}')]: float(line.rsplit(" ", 1)[1])
                for line in page.read().decode().splitlines()
                if line.startswith("tidelog_fetch_response_record_bytes_total{")}
    assert sent.get("copy", 0) > 0 and sent.get("sendfile") == 0, sent


def _tls_handshake(port: int, ca_file, cert=None, key=None) -> dict:
    """A bare TLS handshake with the broker; the server certificate it presented."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert:
        context.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            certificate = tls.getpeercert()
            # ApiVersions v0 (a client certificate refused shows only here under TLS 1.3).
            tls.sendall(struct.pack(">ihhih", 10, 18, 0, 1, -1))
            if len(tls.recv(4)) != 4:
                raise ConnectionError("closed without an answer")
            return certificate


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_required_client_certificate(broker_factory, pki, client):
    broker = broker_factory({"listeners": "SSL://127.0.0.1:0", **pki.broker_settings("required")})
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls_handshake(broker.port, pki.ca_file)
    with_cert = Security("SSL", ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key)
    assert round_trip(client, broker.bootstrap, with_cert, count=2) == [f"{client}-0".encode(), f"{client}-1".encode()]


def test_a_replaced_certificate_is_served_without_a_restart(broker_factory, pki, tmp_path):
    broker = broker_factory({"listeners": "SSL://127.0.0.1:0", **pki.broker_settings()})
    _tls_handshake(broker.port, pki.ca_file)
    other_ca = trustme.CA(organization_name="Another CA")
    other_ca_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(other_ca_file))
    write_server_pem(other_ca, pki.server_pem)  # renewed by another CA, replaced in place

    def new_certificate_served() -> bool:
        try:
            _tls_handshake(broker.port, other_ca_file)
            return True
        except ssl.SSLCertVerificationError:
            return False

    wait_until(new_certificate_served, message="the broker to present the replaced certificate")
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(broker.port, pki.ca_file)
    assert round_trip("confluent", broker.bootstrap, Security("SSL", ca_file=other_ca_file), count=1) == [b"confluent-0"]
    assert "TLS certificate reloaded" in broker.log()


def test_an_unloadable_replacement_keeps_the_old_certificate(broker_factory, pki):
    broker = broker_factory({"listeners": "SSL://127.0.0.1:0", **pki.broker_settings()})
    pki.server_pem.write_text("not a certificate\n")
    _tls_handshake(broker.port, pki.ca_file)  # still the old one
    assert "TLS files not reloaded, the previous certificate stays in use: ssl.keystore.location" in broker.log()


def _serve_error(tmp_path, *sets: str) -> str:
    args = [sys.executable, "-m", "tidelog", "serve", "--port", "0", "--http-port", "-1", "--data-dir", str(tmp_path / "d")]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_wrong_listener_settings_are_one_line(tmp_path, pki):
    assert _serve_error(tmp_path, "listeners=CLIENT://127.0.0.1:0") == (
        "error: listeners: no security protocol defined for listener CLIENT (name it in listener.security.protocol.map) "
        "(from --set)")
    assert _serve_error(tmp_path, "listeners=SSL://127.0.0.1:0") == (
        "error: ssl.keystore.location: the TLS listener SSL needs a PEM file with the broker's certificate chain and "
        "private key")
    assert _serve_error(tmp_path, "listeners=SSL://127.0.0.1:0", f"ssl.keystore.location={pki.ca_file}").startswith(
        f"error: ssl.keystore.location: cannot load {pki.ca_file}: ")
    assert _serve_error(tmp_path, "listeners=A://127.0.0.1:0,B://127.0.0.1:0",
                        "listener.security.protocol.map=A:PLAINTEXT,B:PLAINTEXT") == (
        "error: inter.broker.listener.name must be a listener name defined in advertised.listeners. The valid options "
        "based on currently configured listeners are A,B")
