"""The brokers reach etcd over TLS with a client certificate and as an etcd user (issue 16): a real
etcd with https client URLs, --client-cert-auth and auth enabled (certificates from PyPI
trustme); a broker with the etcd.* settings registers, creates a topic and serves it; a wrong
password stops it with one line naming the user, and without the client certificate it cannot
reach etcd at all."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from pathlib import Path

import pytest
import trustme

from tests.clusterproc import ClusterBrokerProcess
from tests.etcdproc import EtcdProcess
from tests.integration.clients import consume, produce

PASSWORD = "etcd-secret-1"


class TlsEtcd(EtcdProcess):
    """etcd serving its clients over TLS, asking them for certificates from ``ca``."""

    def __init__(self, data_dir: Path, pki: Path) -> None:
        super().__init__(data_dir)
        self.pki = pki

    def command(self) -> list[str]:
        command = super().command()
        client = f"https://127.0.0.1:{self.client_port}"
        for flag in ("--listen-client-urls", "--advertise-client-urls"):
            command[command.index(flag) + 1] = client
        return command + ["--cert-file", str(self.pki / "etcd.pem"), "--key-file", str(self.pki / "etcd-key.pem"),
                          "--client-cert-auth", "--trusted-ca-file", str(self.pki / "ca.pem")]

    def call(self, path: str, body: dict, token: str | None = None) -> dict:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        context.load_cert_chain(str(self.pki / "client.pem"), str(self.pki / "client-key.pem"))
        request = urllib.request.Request(f"https://{self.endpoint}/v3/{path}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json", **({"Authorization": token} if token else {})})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return json.loads(response.read())

    def start_waiting(self, timeout_s: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.call("maintenance/status", {})
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"etcd did not start within {timeout_s}s:\n{self.log()}") from None
                time.sleep(0.1)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _pki(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Tidelog etcd tests")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, cert in (("etcd", ca.issue_cert("127.0.0.1", "localhost")),
                       ("client", ca.issue_cert("tidelog-broker.test"))):
        # etcd's JSON gateway refuses a client certificate with a CommonName (over gRPC etcd would
        # take it for the user name): the broker's has none, and authenticates as etcd.username
        (directory / f"{name}.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(directory / f"{name}-key.pem"))
    return directory


@pytest.fixture
def etcd(tmp_path):
    """TLS with client certificates; users root and tidelog (READWRITE on /tidelog), auth on."""
    server = TlsEtcd(tmp_path / "etcd", _pki(tmp_path / "pki")).start()
    try:
        for path, body in (
            ("auth/user/add", {"name": "root", "password": "root-secret"}),
            ("auth/user/grant", {"user": "root", "role": "root"}),
            ("auth/role/add", {"name": "tidelog"}),
            ("auth/role/grant", {"name": "tidelog", "perm": {"permType": "READWRITE", "key": _b64("/tidelog"),
                                                             "range_end": _b64("/tidelog0")}}),
            ("auth/user/add", {"name": "tidelog", "password": PASSWORD}),
            ("auth/user/grant", {"user": "tidelog", "role": "tidelog"}),
            ("auth/enable", {}),
        ):
            server.call(path, body)
        yield server
    finally:
        server.kill()


def _settings(pki: Path, password: str = PASSWORD, client_cert: bool = True) -> dict[str, str]:
    settings = {"etcd.ssl.ca.location": str(pki / "ca.pem"), "etcd.username": "tidelog", "etcd.password": password,
                "offsets.topic.replication.factor": "1"}
    if client_cert:
        settings |= {"etcd.ssl.certificate.location": str(pki / "client.pem"),
                     "etcd.ssl.key.location": str(pki / "client-key.pem")}
    return settings


def test_a_broker_uses_etcd_over_tls_as_an_etcd_user(etcd, tmp_path):
    pki = etcd.pki
    broker = ClusterBrokerProcess(tmp_path / "broker-1", f"etcd://{etcd.endpoint}", 1, _settings(pki))
    try:
        broker.start()
        assert produce("confluent", broker.bootstrap, "secured", [(None, b"a", [], None), (None, b"b", [], None)]) == [0, 1]
        assert [m.value for m in consume("kafka-python", broker.bootstrap, "secured", 2)] == [b"a", b"b"]
    finally:
        broker.kill()
    assert PASSWORD not in broker.log()
    # what the broker wrote is in etcd, readable by the etcd user (and not without a token)
    token = etcd.call("auth/authenticate", {"name": "tidelog", "password": PASSWORD})["token"]
    found = etcd.call("kv/range", {"key": _b64("/tidelog/topics/secured")}, token)
    assert json.loads(base64.b64decode(found["kvs"][0]["value"]))["name"] == "secured"
    with pytest.raises(urllib.error.HTTPError):
        etcd.call("kv/range", {"key": _b64("/tidelog/topics/secured")})


@pytest.mark.parametrize("wrong", ["password", "client certificate"])
def test_a_broker_that_cannot_authenticate_to_etcd_does_not_start(etcd, tmp_path, wrong):
    settings = _settings(etcd.pki, password="not-it") if wrong == "password" else _settings(etcd.pki, client_cert=False)
    broker = ClusterBrokerProcess(tmp_path / "broker-1", f"etcd://{etcd.endpoint}", 1, settings)
    with pytest.raises(RuntimeError):
        broker.start(timeout_s=20)
    broker.kill()
    log = broker.log()
    assert "not-it" not in log and "Traceback" not in log, log[-3000:]
    assert f"cannot reach etcd (--cluster etcd://{etcd.endpoint})" in log, log[-3000:]
    if wrong == "password":
        assert "authentication as etcd user 'tidelog' failed" in log, log[-3000:]
