"""SASL: PLAIN and SCRAM against real client-side implementations, and the connection states.

SCRAM runs against scramp's client and kafka-python's client code (the one its consumers and
producers use); a small RFC 5802 client written here covers what neither sends (an authzid,
Kafka's extensions). Times are explicit milliseconds: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os

import pytest
import scramp
from kafka.admin._users import UserScramCredentialUpsertion
from kafka.net.sasl.scram import ScramClient as KafkaPythonScramClient

from tidelog.config import ConfigError
from tidelog.protocol.errors import ErrorCode
from tidelog.security.principal import KafkaPrincipal
from tidelog.security.sasl import MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION, Admission, Outcome, SaslServerSession, SaslState
from tidelog.security.sasl_mechanisms import PlainServer, PlainUsersFile, SaslMechanisms, ScramServer, ScramStorePasswords
from tidelog.security.scram_credentials import (
    InMemoryCredentialStore,
    ScramCredential,
    ScramDeletion,
    ScramMechanism,
    ScramUpsertion,
    alter_user_scram_credentials,
    describe_user_scram_credentials,
)

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 18, 17, 36, 3
ALL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@pytest.fixture
def store():
    store = InMemoryCredentialStore()
    store.add_user("alice", "alice-secret")
    store.add_user("bob", "bob-secret", [SHA512])
    return store


def session_for(store, max_reauth_ms=0, enabled=ALL, plain=None):
    return SaslServerSession(SaslMechanisms(enabled, store, plain), peer="127.0.0.1:50000", listener="SASL_PLAINTEXT",
                             max_reauth_ms=max_reauth_ms)


def handshake(session, mechanism, now_ms=0, version=1):
    assert session.admit(SASL_HANDSHAKE, version, now_ms) is Admission.HANDSHAKE
    return session.handshake(mechanism, version, now_ms)


def authenticate(session, token, now_ms=0, version=2):
    assert session.admit(SASL_AUTHENTICATE, version, now_ms) is Admission.AUTHENTICATE
    return session.authenticate(token, version, now_ms)


def scramp_login(session, mechanism, user, password, now_ms=0):
    """The whole SCRAM exchange with scramp's client; returns the last reply."""
    assert handshake(session, mechanism, now_ms).error_code == ErrorCode.none
    client = scramp.ScramClient([mechanism], user, password)
    reply = authenticate(session, client.get_client_first().encode(), now_ms)
    if reply.error_code != ErrorCode.none:
        return reply
    client.set_server_first(reply.auth_bytes.decode())
    reply = authenticate(session, client.get_client_final().encode(), now_ms)
    if reply.error_code == ErrorCode.none:
        client.set_server_final(reply.auth_bytes.decode())  # raises if the server's signature is wrong
    return reply


def plain_login(session, user, password, now_ms=0, authzid=""):
    assert handshake(session, "PLAIN", now_ms).error_code == ErrorCode.none
    return authenticate(session, f"{authzid}\0{user}\0{password}".encode(), now_ms)


class ManualScramClient:
    """RFC 5802 client steps, for what scramp's and kafka-python's clients never send."""

    def __init__(self, mechanism: ScramMechanism, user: str, password: str, gs2: str = "n,,", extensions: str = ""):
        self.mechanism, self.password, self.gs2 = mechanism, password, gs2
        self.bare = f"n={user},r=clientnonce123{extensions}"

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
        h = self.mechanism.hash_name
        salted = hashlib.pbkdf2_hmac(h, self.password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.digest(salted, b"Client Key", h)
        without_proof = f"c={base64.b64encode(self.gs2.encode()).decode()},r={fields['r']}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(hashlib.new(h, client_key).digest(), auth_message, h)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


# --- SCRAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_with_scramps_client(store, mechanism):
    session = session_for(store)
    assert session.admit(API_VERSIONS, 3, 0) is Admission.SERVE
    reply = scramp_login(session, mechanism, "alice", "alice-secret")
    assert reply.error_code == ErrorCode.none and reply.outcome is Outcome.AUTHENTICATED
    assert reply.auth_bytes.startswith(b"v=")
    assert session.authenticated and session.principal == KafkaPrincipal("User", "alice")
    assert session.mechanism == mechanism and session.client_supports_reauthentication
    assert session.admit(METADATA, 12, 1) is Admission.SERVE


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_with_kafka_python_client(store, mechanism):
    session = session_for(store)
    assert handshake(session, mechanism).error_code == ErrorCode.none
    client = KafkaPythonScramClient("alice", "alice-secret", mechanism)
    reply = authenticate(session, client.first_message())
    client.process_server_first_message(reply.auth_bytes)
    reply = authenticate(session, client.final_message())
    assert reply.outcome is Outcome.AUTHENTICATED
    client.process_server_final_message(reply.auth_bytes)  # checks the server signature
    assert session.principal == KafkaPrincipal.user("alice")


def test_scram_wrong_password_is_kafkas_generic_failure_and_closes(store, caplog):
    session = session_for(store)
    with caplog.at_level(logging.WARNING, logger="tidelog.security.sasl"):
        reply = scramp_login(session, "SCRAM-SHA-256", "alice", "not-the-secret")
    assert reply.error_code == ErrorCode.sasl_authentication_failed and reply.close and reply.respond
    assert reply.error_message == ("Authentication failed during authentication due to invalid credentials with "
                                   "SASL mechanism SCRAM-SHA-256")
    assert reply.outcome is Outcome.FAILED and session.state is SaslState.FAILED
    assert "127.0.0.1:50000" in caplog.text and "'alice'" in caplog.text and "not-the-secret" not in caplog.text
    assert session.admit(METADATA, 12, 0) is Admission.CLOSE


def test_scram_unknown_user_and_missing_mechanism_fail_at_the_first_message(store):
    for user, mechanism in (("mallory", "SCRAM-SHA-256"), ("bob", "SCRAM-SHA-256")):  # bob has SHA-512 only
        session = session_for(store)
        reply = scramp_login(session, mechanism, user, "whatever")
        assert reply.error_code == ErrorCode.sasl_authentication_failed
        assert reply.error_message.endswith("due to invalid credentials with SASL mechanism SCRAM-SHA-256")
    assert scramp_login(session_for(store), "SCRAM-SHA-512", "bob", "bob-secret").outcome is Outcome.AUTHENTICATED


def manual_login(store, client):
    """Handshake, first and final messages of a ManualScramClient; returns the last reply."""
    session = session_for(store)
    handshake(session, client.mechanism.mechanism_name)
    reply = authenticate(session, client.first())
    return reply if reply.error_code != ErrorCode.none else authenticate(session, client.final(reply.auth_bytes))


def test_scram_authzid_equal_to_the_user_is_accepted_and_another_refused_as_kafka_does(store):
    assert manual_login(store, ManualScramClient(SHA256, "alice", "alice-secret", gs2="n,a=alice,")).outcome is Outcome.AUTHENTICATED
    reply = manual_login(store, ManualScramClient(SHA256, "alice", "alice-secret", gs2="n,a=bob,"))
    assert reply.error_code == ErrorCode.sasl_authentication_failed
    assert reply.error_message == "Authentication failed: Client requested an authorization id that is different from username"


def test_scram_extensions_are_ignored_but_tokenauth_is_refused(store):
    client = ManualScramClient(SHA512, "alice", "alice-secret", extensions=",tokenauth=false,traceid=abc")
    assert manual_login(store, client).outcome is Outcome.AUTHENTICATED
    reply = manual_login(store, ManualScramClient(SHA512, "alice", "alice-secret", extensions=",tokenauth=true"))
    assert reply.error_code == ErrorCode.sasl_authentication_failed and reply.close
    assert "tokenauth" not in reply.error_message  # the client gets Kafka's generic text; the log says why


@pytest.mark.parametrize("first", [b"y,,n=alice,r=abc", b"p=tls-unique,,n=alice,r=abc", b"n,,r=abc", b"garbage", b"\xff\xfe"])
def test_malformed_or_channel_bound_client_first_messages_fail(store, first):
    server = ScramServer(SHA256, store)
    with pytest.raises(Exception) as raised:
        server.evaluate(first)
    assert type(raised.value).__name__ == "AuthenticationFailed" and raised.value.client_message is None


def test_scram_user_names_use_kafkas_escapes(store):
    store.add_user("a,b=c", "pw", [SHA256])
    session = session_for(store)
    assert scramp_login(session, "SCRAM-SHA-256", "a,b=c", "pw").outcome is Outcome.AUTHENTICATED
    assert session.principal == KafkaPrincipal.user("a,b=c")


def test_a_credential_below_kafkas_minimum_iterations_cannot_authenticate(store):
    # Such a credential can only come from a store edited by hand: Alter refuses it.
    good = ScramCredential.from_password(SHA256, "pw")
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", good.salt, 1000)
    store.credentials["carol"] = {SHA256: ScramCredential.from_salted_password(SHA256, good.salt, salted, 1000)}
    assert scramp_login(session_for(store), "SCRAM-SHA-256", "carol", "pw").error_code == ErrorCode.sasl_authentication_failed


# --- Credentials as Kafka stores them ----------------------------------------------------------


@pytest.mark.parametrize("mechanism", [SHA256, SHA512])
def test_credential_from_password_equals_the_one_from_the_salted_password(mechanism):
    credential = ScramCredential.from_password(mechanism, "s3cret", iterations=8192)
    salted = hashlib.pbkdf2_hmac(mechanism.hash_name, b"s3cret", credential.salt, 8192)
    assert ScramCredential.from_salted_password(mechanism, credential.salt, salted, 8192) == credential
    assert credential.iterations == 8192 and len(credential.salt) >= 12
    assert len(credential.stored_key) == len(credential.server_key) == hashlib.new(mechanism.hash_name).digest_size
    assert credential.matches_password(mechanism, "s3cret") and not credential.matches_password(mechanism, "s3cret ")
    assert ScramCredential.from_json(credential.to_json()) == credential
    assert "s3cret" not in str(credential.to_json())


def test_alter_then_describe_with_kafka_pythons_upsertion_then_log_in():
    store = InMemoryCredentialStore()
    upsertion = UserScramCredentialUpsertion("dave", "SCRAM-SHA-256", "dave-secret", iterations=4096)
    results = asyncio.run(alter_user_scram_credentials(store, [], [ScramUpsertion(
        upsertion.user, int(upsertion.mechanism), upsertion.iterations, upsertion.salt, upsertion.salted_password)]))
    assert [(r.user, r.error_code) for r in results] == [("dave", ErrorCode.none)]
    [described] = describe_user_scram_credentials(store, ["dave"])
    assert described.credential_infos == ((SHA256, 4096),)
    assert scramp_login(session_for(store), "SCRAM-SHA-256", "dave", "dave-secret").outcome is Outcome.AUTHENTICATED
    assert plain_login(session_for(store), "dave", "dave-secret").outcome is Outcome.AUTHENTICATED


def test_alter_user_scram_credentials_errors_as_kafka(store):
    salt, salted = os.urandom(16), os.urandom(32)

    def up(user, mechanism=1, iterations=4096, salt=salt):
        return ScramUpsertion(user, mechanism, iterations, salt, salted)

    results = asyncio.run(alter_user_scram_credentials(
        store,
        [ScramDeletion("alice", 1), ScramDeletion("alice", 2), ScramDeletion("nobody", 1), ScramDeletion("bob", 2),
         ScramDeletion("", 1)],
        [up("bob"), up("erin", iterations=4095), up("frank", iterations=16385), up("gina", mechanism=3),
         up("hal", salt=b"short"), up("ivy"), up("ivy", mechanism=2)],
    ))
    assert [(r.user, r.error_code, r.error_message) for r in results] == [
        ("alice", ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request"),
        ("nobody", ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist"),
        ("bob", ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request"),
        ("", ErrorCode.unacceptable_credential, "Username must not be empty"),
        ("erin", ErrorCode.unacceptable_credential, "Too few iterations"),
        ("frank", ErrorCode.unacceptable_credential, "Too many iterations"),
        ("gina", ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism"),
        ("hal", ErrorCode.unacceptable_credential, "Salt must be at least 12 bytes"),
        ("ivy", ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request"),
    ]
    assert set(store.credentials) == {"alice", "bob"}  # nothing was applied: every change was refused

    results = asyncio.run(alter_user_scram_credentials(store, [ScramDeletion("alice", 1)], [up("ivy", mechanism=2)]))
    assert [r.error_code for r in results] == [ErrorCode.none, ErrorCode.none]
    assert set(store.credentials["alice"]) == {SHA512} and set(store.credentials["ivy"]) == {SHA512}


def test_describe_user_scram_credentials_errors_as_kafka(store):
    results = describe_user_scram_credentials(store, ["alice", "alice", "zed"])
    assert [(r.user, r.error_code, r.error_message) for r in results] == [
        ("alice", ErrorCode.duplicate_resource, "Cannot describe SCRAM credentials for the same user twice in a single request: alice"),
        ("zed", ErrorCode.resource_not_found, "Attempt to describe a user credential that does not exist: zed"),
    ]
    everyone = describe_user_scram_credentials(store, None)
    assert {r.user: r.credential_infos for r in everyone} == {"alice": ((SHA256, 4096), (SHA512, 4096)), "bob": ((SHA512, 4096),)}


# --- PLAIN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, message",
    [
        (b"\0alice\0wrong", "Authentication failed: Invalid username or password"),
        (b"\0mallory\0alice-secret", "Authentication failed: Invalid username or password"),
        (b"bob\0alice\0alice-secret", "Authentication failed: Client requested an authorization id that is different from username"),
        (b"\0\0alice-secret", "Authentication failed: username not specified"),
        (b"\0alice\0", "Authentication failed: password not specified"),
        (b"alice\0alice-secret", "Invalid SASL/PLAIN response: expected 3 tokens, got 2"),
        (b"a\0b\0c\0d\0e", "Invalid SASL/PLAIN response: expected 3 tokens, got 4"),
    ],
)
def test_plain_failures_carry_kafkas_messages(store, token, message):
    session = session_for(store)
    handshake(session, "PLAIN")
    reply = authenticate(session, token)
    assert (reply.error_code, reply.error_message, reply.close) == (ErrorCode.sasl_authentication_failed, message, True)


def test_plain_against_the_scram_store_with_and_without_authzid(store):
    assert plain_login(session_for(store), "alice", "alice-secret").outcome is Outcome.AUTHENTICATED
    session = session_for(store)
    assert plain_login(session, "bob", "bob-secret", authzid="bob").outcome is Outcome.AUTHENTICATED
    assert session.principal == KafkaPrincipal.user("bob")


def test_plain_store_check_remembers_successes_until_the_credential_changes(store):
    check = ScramStorePasswords(store)
    assert check("alice", "alice-secret") and check("alice", "alice-secret")
    store.add_user("alice", "new-secret")
    assert not check("alice", "alice-secret") and check("alice", "new-secret")
    assert not check("nobody", "x")


def test_plain_users_file(tmp_path, caplog):
    path = tmp_path / "users"
    path.write_text("# PLAIN users\n\nalice:alice-secret\nbob:pa:ss\n")
    path.chmod(0o600)
    users = PlainUsersFile(path)
    assert users.users == ["alice", "bob"]
    assert users("bob", "pa:ss") and not users("bob", "pa") and not users("carol", "x")
    session = session_for(InMemoryCredentialStore(), plain=users)
    assert plain_login(session, "alice", "alice-secret").outcome is Outcome.AUTHENTICATED

    path.write_text("alice:changed\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    with caplog.at_level(logging.WARNING):
        path.chmod(0o644)
        assert users("alice", "changed") and not users("alice", "alice-secret")
    assert "readable by others" in caplog.text and "changed" not in caplog.text


@pytest.mark.parametrize("text, message", [
    ("alice\n", r"sasl.plain.users.file: .* line 1: expected username:password"),
    ("# x\n:pw\n", r"line 2: expected username:password"),
    ("alice:\n", r"line 1: expected username:password"),
    ("alice:a\nalice:b\n", r"line 2: user 'alice' appears twice"),
])
def test_plain_users_file_errors_name_the_setting_and_line(tmp_path, text, message):
    path = tmp_path / "users"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        PlainUsersFile(path)
    with pytest.raises(ConfigError, match=r"sasl.plain.users.file: cannot read .*missing"):
        PlainUsersFile(tmp_path / "missing")


def test_a_failing_password_check_tells_the_client_nothing_more():
    def broken(user, password):
        raise OSError("disk gone")

    with pytest.raises(Exception) as raised:
        PlainServer(broken).evaluate(b"\0alice\0pw")
    assert raised.value.client_message == "Authentication failed: credentials for user could not be verified"


# --- The connection's states ----------------------------------------------------------------


def test_only_api_versions_and_handshake_are_served_before_authentication(store):
    session = session_for(store)
    assert session.admit(METADATA, 12, 0) is Admission.CLOSE
    assert "unexpected request (API key 3) during SASL handshake" in session.close_reason

    session = session_for(store)
    assert session.admit(API_VERSIONS, 3, 0) is Admission.SERVE
    assert session.admit(API_VERSIONS, 3, 0) is Admission.CLOSE  # only once, as Kafka


def test_an_api_versions_retry_at_a_lower_version_is_allowed(store):
    session = session_for(store)
    assert session.admit(API_VERSIONS, 9, 0) is Admission.SERVE  # answered UNSUPPORTED_VERSION by the handler
    assert session.admit(API_VERSIONS, 3, 0) is Admission.SERVE
    assert handshake(session, "PLAIN").error_code == ErrorCode.none


def test_another_request_during_authentication_is_refused_then_closed(store):
    session = session_for(store)
    handshake(session, "SCRAM-SHA-256")
    assert session.admit(METADATA, 12, 0) is Admission.REFUSE
    assert session.state is SaslState.FAILED
    assert session.admit(SASL_AUTHENTICATE, 2, 0) is Admission.CLOSE


def test_unsupported_mechanism_answers_the_enabled_ones_and_closes(store):
    session = session_for(store, enabled=["SCRAM-SHA-512", "PLAIN"])
    reply = handshake(session, "GSSAPI")
    assert reply.error_code == ErrorCode.unsupported_sasl_mechanism and reply.close
    assert reply.mechanisms == ("SCRAM-SHA-512", "PLAIN")
    assert handshake(session_for(store, enabled=["PLAIN"]), "SCRAM-SHA-256").error_code == ErrorCode.unsupported_sasl_mechanism


def test_v0_handshake_exchanges_raw_tokens(store):
    session = session_for(store)
    assert handshake(session, "SCRAM-SHA-256", version=0).error_code == ErrorCode.none
    assert session.expects_raw_token
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "alice-secret")
    reply = session.raw_token(client.get_client_first().encode(), 0)
    client.set_server_first(reply.token.decode())
    reply = session.raw_token(client.get_client_final().encode(), 0)
    client.set_server_final(reply.token.decode())
    assert reply.outcome is Outcome.AUTHENTICATED and not session.expects_raw_token and session.authenticated
    assert not session.client_supports_reauthentication

    session = session_for(store)
    handshake(session, "PLAIN", version=0)
    reply = session.raw_token(b"\0alice\0wrong", 0)
    assert reply.token is None and reply.close and reply.outcome is Outcome.FAILED


def test_sasl_requests_after_authentication_are_illegal_without_reauthentication(store):
    session = session_for(store)
    plain_login(session, "alice", "alice-secret")
    assert handshake(session, "PLAIN", now_ms=5000).error_code == ErrorCode.illegal_sasl_state
    reply = authenticate(session, b"\0alice\0alice-secret", now_ms=5000)
    assert (reply.error_code, reply.error_message, reply.close) == (
        ErrorCode.illegal_sasl_state, "SaslAuthenticate request received after successful authentication", False)
    assert session.authenticated and reply.session_lifetime_ms == 0


def test_session_expires_after_connections_max_reauth_ms(store):
    session = session_for(store, max_reauth_ms=1000)
    reply = plain_login(session, "alice", "alice-secret", now_ms=10_000)
    assert reply.session_lifetime_ms == 1000 and session.expires_at_ms == 11_000
    assert session.admit(METADATA, 12, 11_000) is Admission.SERVE
    assert session.admit(METADATA, 12, 11_001) is Admission.CLOSE
    assert "expired (connections.max.reauth.ms)" in session.close_reason


def test_reauthentication_extends_the_session(store):
    session = session_for(store, max_reauth_ms=1000)
    scramp_login(session, "SCRAM-SHA-512", "alice", "alice-secret", now_ms=0)
    reply = scramp_login(session, "SCRAM-SHA-512", "alice", "alice-secret", now_ms=900)
    assert reply.outcome is Outcome.REAUTHENTICATED and reply.session_lifetime_ms == 1000
    assert session.expires_at_ms == 1900 and session.admit(METADATA, 12, 1500) is Admission.SERVE
    # An expired session may still re-authenticate, as in Kafka: only other requests are refused.
    assert scramp_login(session, "SCRAM-SHA-512", "alice", "alice-secret", now_ms=2500).outcome is Outcome.REAUTHENTICATED


def test_reauthentication_at_most_once_a_second(store):
    session = session_for(store, max_reauth_ms=10_000)
    plain_login(session, "alice", "alice-secret", now_ms=0)
    assert plain_login(session, "alice", "alice-secret", now_ms=100).outcome is Outcome.REAUTHENTICATED
    assert handshake(session, "PLAIN", now_ms=600).error_code == ErrorCode.illegal_sasl_state
    assert plain_login(session, "alice", "alice-secret", now_ms=1100).outcome is Outcome.REAUTHENTICATED


def test_reauthentication_cannot_change_principal(store):
    session = session_for(store, max_reauth_ms=1000)
    plain_login(session, "alice", "alice-secret", now_ms=0)
    reply = plain_login(session, "bob", "bob-secret", now_ms=500)
    assert reply.error_code == ErrorCode.sasl_authentication_failed and reply.close
    assert reply.error_message == "Cannot change principals during re-authentication from User.alice: User.bob"


def test_reauthentication_cannot_change_mechanism(store):
    session = session_for(store, max_reauth_ms=1000)
    plain_login(session, "alice", "alice-secret", now_ms=0)
    assert handshake(session, "SCRAM-SHA-256", now_ms=500).error_code == ErrorCode.none  # as Kafka: fails next
    reply = authenticate(session, b"n,,n=alice,r=x", now_ms=500)
    assert not reply.respond and reply.close and reply.outcome is Outcome.FAILED
    assert "not supported for re-authentication of mechanism 'PLAIN'" in session.close_reason


def test_failed_reauthentication_uses_the_reauthentication_wording(store):
    session = session_for(store, max_reauth_ms=1000)
    scramp_login(session, "SCRAM-SHA-256", "alice", "alice-secret", now_ms=0)
    reply = scramp_login(session, "SCRAM-SHA-256", "alice", "wrong", now_ms=500)
    assert reply.error_message == ("Authentication failed during re-authentication due to invalid credentials with "
                                   "SASL mechanism SCRAM-SHA-256")


def test_mechanism_settings_are_checked():
    with pytest.raises(ConfigError, match=r"^sasl.enabled.mechanisms: GSSAPI not supported; supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512$"):
        SaslMechanisms(["GSSAPI"], InMemoryCredentialStore())
    with pytest.raises(ConfigError, match="no SASL mechanisms are enabled"):
        SaslMechanisms([], InMemoryCredentialStore())
    assert MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION == 524288
