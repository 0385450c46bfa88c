"""The HTTP side secured (issue 16): open until the broker has users, then HTTP Basic against the
same users or a bearer token; /health and /metrics open by setting; the broker's ACLs applied
to the caller; HTTPS with the broker's certificate."""

from __future__ import annotations

import pytest
import requests

from tests.integration.security_clients import Pki
from tests.integration.test_sasl import SECRET, tidelog

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def _api(broker, path: str = "/api/v1/topics", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{broker.metrics_port}{path}"


def test_open_until_users_exist_then_basic_or_bearer(broker_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# ops dashboards\nsekrit-token-1 User:dashboard\n")
    tokens.chmod(0o600)
    broker = broker_factory({"http.bearer.tokens.file": str(tokens)})
    assert requests.get(_api(broker), timeout=10).status_code == 401  # a tokens file: credentials needed
    broker.stop()
    broker = broker_factory({}, name="no-users")
    assert requests.get(_api(broker), timeout=10).status_code == 200  # no users: open, as before
    assert tidelog("users", "create", "alice", "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    anonymous = requests.get(_api(broker), timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith('Basic realm="tidelog"')
    assert anonymous.json()["error_code"] == "AUTHENTICATION_REQUIRED"
    assert requests.get(_api(broker), auth=("alice", SECRET), timeout=10).status_code == 200
    wrong = requests.get(_api(broker), auth=("alice", "not-it"), timeout=10)
    assert wrong.status_code == 401
    assert "HTTP authentication failed from 127.0.0.1 (basic, user 'alice')" in broker.log()
    assert "not-it" not in broker.log()
    assert requests.get(_api(broker, "/health"), timeout=10).status_code == 200
    assert requests.get(_api(broker, "/metrics"), timeout=10).status_code == 200
    assert requests.get(_api(broker, "/"), timeout=10).status_code == 401  # the console asks too


def test_bearer_tokens_and_closed_metrics(broker_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("sekrit-token-1 User:dashboard\n")
    tokens.chmod(0o600)
    broker = broker_factory({"http.bearer.tokens.file": str(tokens), "http.health.metrics.open": "false"})
    assert requests.get(_api(broker), headers={"Authorization": "Bearer sekrit-token-1"}, timeout=10).status_code == 200
    assert requests.get(_api(broker), headers={"Authorization": "Bearer guess"}, timeout=10).status_code == 401
    assert requests.get(_api(broker, "/metrics"), timeout=10).status_code == 401
    assert requests.get(_api(broker, "/metrics"), headers={"Authorization": "Bearer sekrit-token-1"},
                        timeout=10).status_code == 200


def test_acls_apply_to_the_api(broker_factory):
    # The Kafka listener is PLAINTEXT (ANONYMOUS, a super user here, administers); HTTP callers
    # authenticate, and their principal is held to the ACLs.
    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:admin;User:ANONYMOUS"})
    for user in ("admin", "alice", "bob"):
        assert tidelog("users", "create", user, "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    admin = requests.Session()
    admin.auth = ("admin", SECRET)
    assert admin.post(_api(broker), json={"name": "events", "partitions": 1}, timeout=10).status_code in (200, 201)
    denied_create = requests.post(_api(broker), json={"name": "other", "partitions": 1}, auth=("alice", SECRET), timeout=10)
    assert denied_create.status_code == 403
    assert tidelog("acls", "add", "events", "--topic", "--principal", "User:alice", "--operation", "write",
                   "-b", broker.bootstrap).returncode == 0
    records = {"records": [{"value": "hello"}]}
    assert requests.post(_api(broker, "/api/v1/topics/events/records"), json=records, auth=("alice", SECRET),
                         timeout=10).status_code == 200
    forbidden = requests.post(_api(broker, "/api/v1/topics/events/records"), json=records, auth=("bob", SECRET), timeout=10)
    assert forbidden.status_code == 403 and forbidden.json()["error_code"] == "TOPIC_AUTHORIZATION_FAILED"
    assert requests.get(_api(broker, "/api/v1/topics/events"), auth=("bob", SECRET), timeout=10).status_code == 403
    assert requests.get(_api(broker, "/api/v1/topics/events"), auth=("alice", SECRET), timeout=10).status_code == 200


def test_https(broker_factory, tmp_path):
    pki = Pki.make(tmp_path / "pki")
    broker = broker_factory({"http.ssl.enable": "true", "ssl.keystore.location": str(pki.server_pem)})
    assert requests.get(_api(broker, "/health", "https"), verify=str(pki.ca_file), timeout=10).status_code == 200
    assert requests.get(_api(broker, scheme="https"), verify=str(pki.ca_file), timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(_api(broker, "/health"), timeout=10)  # plain HTTP is not served
