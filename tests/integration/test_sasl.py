"""SASL on Kafka's listeners (issue 16): PLAIN and SCRAM-SHA-256/512 with the three clients over
SASL_PLAINTEXT and SASL_SSL, users made with `tidelog users`, wrong passwords and unknown users
refused (logged with the peer, never the secret), a client that does not authenticate refused
before anything else is served, KIP-368 re-authentication, a PLAIN users file."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import urllib.request

import pytest
from confluent_kafka import KafkaError, Producer
from kafka.errors import KafkaError as KafkaPythonError

from tests.brokerproc import wait_until
from tests.integration.security_clients import CLIENTS, Pki, Security, round_trip

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECRET = "s3cret-Passw0rd"


def tidelog(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=timeout_s)


def metric(broker, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    """A broker with SASL_PLAINTEXT and SASL_SSL listeners for clients, a loopback PLAINTEXT one
    for administration, and users alice (both SCRAM mechanisms) and bob made with the CLI."""
    from tests.brokerproc import BrokerProcess

    broker = BrokerProcess(tmp_path_factory.mktemp("sasl") / "data", {
        "listeners": "ADMIN://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        "listener.security.protocol.map": "ADMIN:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "ADMIN", "http.port": "0", **pki.broker_settings()}).start()
    try:
        admin = f"127.0.0.1:{broker.listener_ports['ADMIN']}"
        for user in ("alice", "bob"):
            result = tidelog("users", "create", user, "--password", SECRET, "-b", admin)
            assert result.returncode == 0 and result.stdout == f"user {user}: SCRAM-SHA-256, SCRAM-SHA-512 credentials set\n", result
        yield broker
    finally:
        broker.stop()


def sasl(broker, protocol: str = "SASL_PLAINTEXT") -> str:
    return f"127.0.0.1:{broker.listener_ports[protocol]}"


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_each_client_and_mechanism_over_sasl_plaintext(secured, client, mechanism):
    security = Security("SASL_PLAINTEXT", mechanism=mechanism, username="alice", password=SECRET)
    assert round_trip(client, sasl(secured), security, count=3) == [f"{client}-{i}".encode() for i in range(3)]


@pytest.mark.parametrize("client, mechanism", [("confluent", "SCRAM-SHA-512"), ("kafka-python", "PLAIN"),
                                               ("aiokafka", "SCRAM-SHA-256")])
def test_sasl_ssl(secured, pki, client, mechanism):
    security = Security("SASL_SSL", ca_file=pki.ca_file, mechanism=mechanism, username="bob", password=SECRET)
    assert round_trip(client, sasl(secured, "SASL_SSL"), security, count=2) == [f"{client}-0".encode(), f"{client}-1".encode()]


def _failed_logins(broker) -> float:
    return metric(broker, "tidelog_sasl_authentications_total", result="failed")


@pytest.mark.parametrize("user, password", [("alice", "wrong-password"), ("mallory", SECRET)])
def test_wrong_password_and_unknown_user_are_refused_and_logged_without_the_secret(secured, user, password):
    before = _failed_logins(secured)
    bad = Security("SASL_PLAINTEXT", mechanism="SCRAM-SHA-256", username=user, password=password)
    assert confluent_authentication_error(sasl(secured), bad) == (
        "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256")
    with pytest.raises(KafkaPythonError):
        round_trip("kafka-python", sasl(secured), bad, count=1, timeout_s=10)
    wait_until(lambda: _failed_logins(secured) >= before + 2, message="failed authentications counted")
    log = secured.log()
    assert f"SASL authentication failed from 127.0.0.1:" in log and f"user {user!r}" in log
    assert password not in log and SECRET not in log


def confluent_authentication_error(bootstrap: str, security: Security) -> str:
    """The authentication error librdkafka reports (it keeps retrying, so it is not raised)."""
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "error_cb": errors.append, "log_level": 0,
                         **security.confluent()})

    def failed():
        producer.poll(0.1)
        return next((e for e in errors if e.code() == KafkaError._AUTHENTICATION), None)

    error = wait_until(failed, message="librdkafka to report the failed authentication")
    producer.purge()
    return error.str().split("SASL authentication error: ")[-1].split(" (after")[0]


def _frame(api_key: int, version: int, body: bytes = b"") -> bytes:
    header = struct.pack(">hhih", api_key, version, 7, -1) + body
    return struct.pack(">i", len(header)) + header


def test_a_client_that_does_not_authenticate_is_refused_before_anything_is_served(secured):
    topics_before = _topic_count(secured)
    with socket.create_connection(("127.0.0.1", secured.listener_ports["SASL_PLAINTEXT"]), timeout=10) as conn:
        conn.sendall(_frame(3, 1, struct.pack(">i", 1) + struct.pack(">h", 9) + b"sneaky-tp"))  # Metadata v1, one topic
        assert conn.recv(4096) == b""  # closed, no answer
    with socket.create_connection(("127.0.0.1", secured.listener_ports["SASL_PLAINTEXT"]), timeout=10) as conn:
        conn.sendall(_frame(18, 0))  # ApiVersions is served before authentication
        size = struct.unpack(">i", conn.recv(4))[0]
        assert size > 0
    assert _topic_count(secured) == topics_before  # the Metadata request did not auto-create its topic
    assert "unexpected request (API key 3) during SASL handshake" in secured.log()


def _topic_count(broker) -> int:
    result = tidelog("topics", "list", "--json", "-b", f"127.0.0.1:{broker.listener_ports['ADMIN']}")
    assert result.returncode == 0, result
    return len(json.loads(result.stdout))


def test_users_list_and_delete(secured):
    admin = ("-b", f"127.0.0.1:{secured.listener_ports['ADMIN']}")
    assert tidelog("users", "create", "carol", "--password", SECRET, "--mechanism", "SCRAM-SHA-512", *admin).returncode == 0
    listed = json.loads(tidelog("users", "list", "--json", *admin).stdout)
    assert {"user": "carol", "credentials": [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]} in listed
    assert {u["user"] for u in listed} >= {"alice", "bob", "carol"}
    carol = Security("SASL_PLAINTEXT", mechanism="SCRAM-SHA-512", username="carol", password=SECRET)
    assert round_trip("confluent", sasl(secured), carol, count=1) == [b"confluent-0"]
    deleted = tidelog("users", "delete", "carol", *admin)
    assert deleted.stdout == "user carol: SCRAM-SHA-512 credentials deleted\n", deleted
    assert "invalid credentials" in confluent_authentication_error(sasl(secured), carol)
    assert tidelog("users", "delete", "nobody", *admin).stderr.strip() == "error: unknown user: nobody"


def test_reauthentication(broker_factory):
    broker = broker_factory({"listeners": "SASL_PLAINTEXT://127.0.0.1:0,ADMIN://127.0.0.1:0",
                             "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,ADMIN:PLAINTEXT",
                             "inter.broker.listener.name": "ADMIN", "connections.max.reauth.ms": "1500",
                             "http.port": "0"})
    admin = f"127.0.0.1:{broker.listener_ports['ADMIN']}"
    assert tidelog("users", "create", "alice", "--password", SECRET, "-b", admin).returncode == 0
    producer = Producer({"bootstrap.servers": sasl(broker), "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": SECRET,
                         "acks": "all"})
    delivered: list = []

    def reauthenticated() -> bool:
        producer.produce("reauth", b"x", on_delivery=lambda err, msg: delivered.append(err))
        producer.flush(10)
        return metric(broker, "tidelog_sasl_authentications_total", listener="SASL_PLAINTEXT",
                      mechanism="SCRAM-SHA-256", result="reauthenticated") >= 2

    wait_until(reauthenticated, timeout_s=30, interval_s=0.2, message="two re-authentications")
    assert delivered and all(err is None for err in delivered), delivered[:3]


def test_plain_users_file(broker_factory, tmp_path):
    users = tmp_path / "users"
    users.write_text("# PLAIN users\ndave:pass:with:colons\n")
    users.chmod(0o600)
    broker = broker_factory({"listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "PLAIN",
                             "sasl.plain.users.file": str(users)})
    dave = Security("SASL_PLAINTEXT", mechanism="PLAIN", username="dave", password="pass:with:colons")
    assert round_trip("aiokafka", broker.bootstrap, dave, count=1) == [b"aiokafka-0"]
    wrong = Security("SASL_PLAINTEXT", mechanism="PLAIN", username="dave", password="pass")
    assert confluent_authentication_error(broker.bootstrap, wrong) == "Authentication failed: Invalid username or password"
