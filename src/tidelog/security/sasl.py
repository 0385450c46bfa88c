"""SASL on the server side: PLAIN and SCRAM-SHA-256/512, and one connection's SASL states.

Everything here is sans-I/O: the connection decodes frames and feeds this module what the
client sent; it answers with what to send back and whether to close.

Mechanisms (``MechanismServer``), each a fresh object per authentication:

- ``PlainServer`` (RFC 4616), as Kafka's PlainSaslServer: the client sends
  ``[authzid] NUL username NUL password``; an authzid other than the username is refused.
  Passwords are checked by a ``PasswordCheck``: the users file (``PlainUsersFile``) or the
  SCRAM credentials of the metadata store (``ScramStorePasswords``).
- ``ScramServer`` (RFC 5802/7677), the exchange done by PyPI ``scramp``. As Kafka's
  ScramSaslServer: only the ``n`` GS2 flag (no channel binding), an authzid must equal the
  username, extensions are ignored except ``tokenauth=true`` (delegation tokens), which is
  refused: Tidelog has no delegation tokens.

``SaslServerSession`` is SaslServerAuthenticator's state machine for one connection, including
KIP-368 re-authentication (``connections.max.reauth.ms``) and KIP-152 failure handling
(a SaslAuthenticate error response, then the connection closes). Failures are logged at
WARNING with the peer, the mechanism and the user name, never a password or proof.

Credentials: ``ScramCredential`` is what Kafka stores for SCRAM (salt, iterations, stored key,
server key; the password is never kept). ``CredentialStore`` is the interface the metadata
store implements (reads from memory, writes as coroutines); ``InMemoryCredentialStore`` is the
implementation for tests. ``describe_user_scram_credentials`` and
``alter_user_scram_credentials`` are DescribeUserScramCredentials (50) and
AlterUserScramCredentials (51) over such a store.

Not thread-safe; the event loop owns every object here.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import scramp

from tidelog.config import ConfigError
from tidelog.protocol.apis import API_VERSIONS_KEY, KAFKA_4_0
from tidelog.protocol.errors import ErrorCode
from tidelog.security.principal import KafkaPrincipal

logger = logging.getLogger(__name__)

PLAIN = "PLAIN"
SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
# Kafka's sasl.server.max.receive.size: the largest frame a client may send before it has
# authenticated (a bigger one fails the authentication and closes the connection).
MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION = 524288
_MIN_REAUTH_INTERVAL_MS = 1000  # Kafka: at most one re-authentication a second


class ScramMechanism(enum.Enum):
    """The SCRAM mechanisms with Kafka's type codes (AlterUserScramCredentials ``mechanism``)."""

    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2

    @property
    def mechanism_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def hash_name(self) -> str:
        return "sha256" if self is ScramMechanism.SCRAM_SHA_256 else "sha512"

    @classmethod
    def from_name(cls, name: str) -> "ScramMechanism | None":
        return next((m for m in cls if m.mechanism_name == name), None)

    @classmethod
    def from_code(cls, code: int) -> "ScramMechanism | None":
        return next((m for m in cls if m.value == code), None)


# Kafka's bounds on the iterations of a stored credential, for both mechanisms.
SCRAM_MIN_ITERATIONS = 4096
SCRAM_MAX_ITERATIONS = 16384
SUPPORTED_MECHANISMS = (PLAIN, *(m.mechanism_name for m in ScramMechanism))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class ScramCredential:
    """A user's SCRAM credential as Kafka stores it: the password itself is never kept.

    ``stored_key = H(HMAC(salted_password, "Client Key"))`` and
    ``server_key = HMAC(salted_password, "Server Key")``, where
    ``salted_password = PBKDF2-HMAC(password, salt, iterations)`` (RFC 5802).
    """

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    @classmethod
    def from_password(cls, mechanism: ScramMechanism, password: str, iterations: int = 4096,
                      salt: bytes | None = None) -> "ScramCredential":
        salt, stored_key, server_key, iterations = scramp.ScramMechanism(mechanism.mechanism_name).make_auth_info(
            password, iteration_count=iterations, salt=salt)
        return cls(salt, stored_key, server_key, iterations)

    @classmethod
    def from_salted_password(cls, mechanism: ScramMechanism, salt: bytes, salted_password: bytes,
                             iterations: int) -> "ScramCredential":
        """What AlterUserScramCredentials sends (the client salts and hashes the password)."""
        client_key = hmac.digest(salted_password, b"Client Key", mechanism.hash_name)
        stored_key = hashlib.new(mechanism.hash_name, client_key).digest()
        server_key = hmac.digest(salted_password, b"Server Key", mechanism.hash_name)
        return cls(salt, stored_key, server_key, iterations)

    def matches_password(self, mechanism: ScramMechanism, password: str) -> bool:
        """Whether ``password`` is the one this credential was made from (PLAIN against SCRAM)."""
        salted = hashlib.pbkdf2_hmac(mechanism.hash_name, password.encode("utf-8"), self.salt, self.iterations)
        return hmac.compare_digest(self.from_salted_password(mechanism, self.salt, salted, self.iterations).stored_key,
                                   self.stored_key)

    def to_json(self) -> dict:
        return {"salt": _b64(self.salt), "stored_key": _b64(self.stored_key), "server_key": _b64(self.server_key),
                "iterations": self.iterations}

    @classmethod
    def from_json(cls, data: dict) -> "ScramCredential":
        return cls(base64.b64decode(data["salt"]), base64.b64decode(data["stored_key"]),
                   base64.b64decode(data["server_key"]), int(data["iterations"]))


class CredentialStore(Protocol):
    """SCRAM credentials, implemented by the metadata store (embedded file, etcd).

    Reads come from memory and are called on every authentication; the one write changes
    several credentials at once (all or nothing) and notifies the store's listeners.
    """

    def scram_credential(self, user: str, mechanism: ScramMechanism) -> ScramCredential | None: ...

    def scram_credentials(self) -> Mapping[str, Mapping[ScramMechanism, ScramCredential]]: ...

    async def alter_scram_credentials(
        self,
        upsertions: Mapping[tuple[str, ScramMechanism], ScramCredential],
        deletions: Iterable[tuple[str, ScramMechanism]],
    ) -> None: ...


class InMemoryCredentialStore:
    """A ``CredentialStore`` in a dict (tests, and the shape the metadata stores keep in memory)."""

    def __init__(self) -> None:
        self.credentials: dict[str, dict[ScramMechanism, ScramCredential]] = {}

    def scram_credential(self, user: str, mechanism: ScramMechanism) -> ScramCredential | None:
        return self.credentials.get(user, {}).get(mechanism)

    def scram_credentials(self) -> Mapping[str, Mapping[ScramMechanism, ScramCredential]]:
        return self.credentials

    async def alter_scram_credentials(self, upsertions, deletions) -> None:
        for user, mechanism in deletions:
            mechanisms = self.credentials.get(user, {})
            mechanisms.pop(mechanism, None)
            if not mechanisms:
                self.credentials.pop(user, None)
        for (user, mechanism), credential in upsertions.items():
            self.credentials.setdefault(user, {})[mechanism] = credential

    def add_user(self, user: str, password: str, mechanisms: Iterable[ScramMechanism] = tuple(ScramMechanism),
                 iterations: int = 4096) -> None:
        for mechanism in mechanisms:
            self.credentials.setdefault(user, {})[mechanism] = ScramCredential.from_password(mechanism, password, iterations)


# --- DescribeUserScramCredentials / AlterUserScramCredentials -------------------------------


@dataclass(frozen=True)
class UserScramResult:
    """One user's row of a Describe/AlterUserScramCredentials response."""

    user: str
    error_code: ErrorCode = ErrorCode.none
    error_message: str | None = None
    credential_infos: tuple[tuple[ScramMechanism, int], ...] = ()  # (mechanism, iterations), Describe only


def describe_user_scram_credentials(store: CredentialStore, users: Iterable[str] | None) -> list[UserScramResult]:
    """DescribeUserScramCredentials as Kafka's ScramImage.describe: every user when none is named."""
    credentials = store.scram_credentials()
    names = list(credentials) if not users else list(users)
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    results = []
    for name in counts:
        if counts[name] > 1:
            results.append(UserScramResult(name, ErrorCode.duplicate_resource,
                                           f"Cannot describe SCRAM credentials for the same user twice in a single request: {name}"))
        elif not credentials.get(name):
            results.append(UserScramResult(name, ErrorCode.resource_not_found,
                                           f"Attempt to describe a user credential that does not exist: {name}"))
        else:
            infos = tuple((m, c.iterations) for m, c in sorted(credentials[name].items(), key=lambda item: item[0].value))
            results.append(UserScramResult(name, credential_infos=infos))
    return results


@dataclass(frozen=True)
class ScramDeletion:
    user: str
    mechanism: int  # Kafka's code; an unknown one is an error in the result


@dataclass(frozen=True)
class ScramUpsertion:
    user: str
    mechanism: int
    iterations: int
    salt: bytes
    salted_password: bytes


_MIN_SALT_BYTES = 12  # scramp refuses shorter salts when authenticating, so they are refused here


def _check_name_and_mechanism(user: str, code: int) -> tuple[ErrorCode, str] | None:
    if not user:
        return ErrorCode.unacceptable_credential, "Username must not be empty"
    if ScramMechanism.from_code(code) is None:
        return ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism"
    return None


async def alter_user_scram_credentials(
    store: CredentialStore, deletions: Iterable[ScramDeletion], upsertions: Iterable[ScramUpsertion]
) -> list[UserScramResult]:
    """AlterUserScramCredentials as Kafka's ScramControlManager: one change per user per request.

    Valid changes are applied in one store write; each user gets a result, in request order.
    """
    errors: dict[str, tuple[ErrorCode, str]] = {}
    order: dict[str, None] = {}
    to_delete: dict[str, tuple[str, ScramMechanism]] = {}
    to_upsert: dict[str, tuple[tuple[str, ScramMechanism], ScramCredential]] = {}
    duplicate = (ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request")
    for deletion in deletions:
        order.setdefault(deletion.user)
        if deletion.user in errors:
            continue
        if to_delete.pop(deletion.user, None) is not None:
            errors[deletion.user] = duplicate
            continue
        error = _check_name_and_mechanism(deletion.user, deletion.mechanism)
        mechanism = ScramMechanism.from_code(deletion.mechanism)
        if error is None and store.scram_credential(deletion.user, mechanism) is None:
            error = ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist"
        if error is not None:
            errors[deletion.user] = error
        else:
            to_delete[deletion.user] = (deletion.user, mechanism)
    for upsertion in upsertions:
        order.setdefault(upsertion.user)
        if upsertion.user in errors:
            continue
        if to_delete.pop(upsertion.user, None) is not None or to_upsert.pop(upsertion.user, None) is not None:
            errors[upsertion.user] = duplicate
            continue
        error = _check_name_and_mechanism(upsertion.user, upsertion.mechanism)
        if error is None:
            if upsertion.iterations < SCRAM_MIN_ITERATIONS:
                error = ErrorCode.unacceptable_credential, "Too few iterations"
            elif upsertion.iterations > SCRAM_MAX_ITERATIONS:
                error = ErrorCode.unacceptable_credential, "Too many iterations"
            elif len(upsertion.salt) < _MIN_SALT_BYTES:
                error = ErrorCode.unacceptable_credential, f"Salt must be at least {_MIN_SALT_BYTES} bytes"
            elif not upsertion.salted_password:
                error = ErrorCode.unacceptable_credential, "Salted password must not be empty"
        if error is not None:
            errors[upsertion.user] = error
            continue
        mechanism = ScramMechanism.from_code(upsertion.mechanism)
        credential = ScramCredential.from_salted_password(mechanism, upsertion.salt, upsertion.salted_password,
                                                          upsertion.iterations)
        to_upsert[upsertion.user] = ((upsertion.user, mechanism), credential)
    if to_delete or to_upsert:
        await store.alter_scram_credentials(dict(to_upsert.values()), list(to_delete.values()))
    return [UserScramResult(user, *errors[user]) if user in errors else UserScramResult(user) for user in order]


# --- Password checks for PLAIN ---------------------------------------------------------------

PasswordCheck = Callable[[str, str], bool]  # (username, password) -> whether it is that user's


class PlainUsersFile:
    """PLAIN users from a text file (``sasl.plain.users.file``), re-read when it changes.

    Format, UTF-8: one ``username:password`` a line; the first colon separates them, so a
    password may contain colons and a username may not. Blank lines and lines starting with
    ``#`` are ignored. As Kafka's JAAS ``user_<name>="<password>"`` entries, the passwords are
    in the clear: keep the file readable by the broker only (a looser mode is logged).
    """

    setting = "sasl.plain.users.file"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int] | None = None
        self._passwords: dict[str, bytes] = {}
        self.reload_if_changed()

    def reload_if_changed(self) -> None:
        try:
            info = self.path.stat()
        except OSError as e:
            raise ConfigError(f"{self.setting}: cannot read {self.path}: {e.strerror}") from None
        signature = (info.st_mtime_ns, info.st_size)
        if signature == self._signature:
            return
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("%s %s is readable by others (mode %o); it holds passwords", self.setting, self.path,
                           stat.S_IMODE(info.st_mode))
        self._passwords = self._parse(self.path.read_text(encoding="utf-8"))
        self._signature = signature
        logger.info("%s: %d PLAIN users from %s", self.setting, len(self._passwords), self.path)

    def _parse(self, text: str) -> dict[str, bytes]:
        passwords: dict[str, bytes] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, sep, password = line.partition(":")
            where = f"{self.setting}: {self.path} line {number}"
            if not sep or not user or not password:
                raise ConfigError(f"{where}: expected username:password")
            if user in passwords:
                raise ConfigError(f"{where}: user {user!r} appears twice")
            passwords[user] = password.encode("utf-8")
        return passwords

    @property
    def users(self) -> list[str]:
        return list(self._passwords)

    def __call__(self, username: str, password: str) -> bool:
        self.reload_if_changed()
        expected = self._passwords.get(username)
        # compare_digest takes as long for a wrong password as for a right one of that length
        return expected is not None and hmac.compare_digest(expected, password.encode("utf-8"))


class ScramStorePasswords:
    """PLAIN passwords checked against the SCRAM credentials of a ``CredentialStore``.

    A check derives the salted password (PBKDF2, the credential's iterations: a few ms), so
    successful checks are remembered, keyed by a keyed hash of the password, until the
    credential changes; at most ``cache_size`` are kept.
    """

    def __init__(self, store: CredentialStore, cache_size: int = 1024) -> None:
        self.store = store
        self.cache_size = cache_size
        self._key = os.urandom(32)
        self._verified: dict[tuple[str, bytes], ScramCredential] = {}

    def __call__(self, username: str, password: str) -> bool:
        for mechanism in (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256):
            credential = self.store.scram_credential(username, mechanism)
            if credential is None:
                continue
            key = (username, hmac.digest(self._key, password.encode("utf-8"), "sha256"))
            if self._verified.get(key) is credential:
                return True
            if credential.matches_password(mechanism, password):
                if len(self._verified) >= self.cache_size:
                    self._verified.clear()
                self._verified[key] = credential
                return True
            return False
        return False


# --- Mechanisms ------------------------------------------------------------------------------


class AuthenticationFailed(Exception):
    """An authentication that failed. ``str(self)`` is the reason for the broker's log.

    ``client_message`` is what the client is told; None means Kafka's generic text ("...due to
    invalid credentials with SASL mechanism X"), used where the detail could reveal whether a
    user exists.
    """

    def __init__(self, reason: str, client_message: str | None = None) -> None:
        super().__init__(reason)
        self.client_message = client_message


class MechanismServer(Protocol):
    mechanism: str
    complete: bool
    username: str | None  # the user the client claims, once known (for logs)

    def evaluate(self, token: bytes) -> bytes:
        """Take the client's next token, return the server's; raises AuthenticationFailed."""
        ...


class PlainServer:
    """SASL/PLAIN (RFC 4616) as Kafka's PlainSaslServer."""

    mechanism = PLAIN

    def __init__(self, check_password: PasswordCheck) -> None:
        self.check_password = check_password
        self.complete = False
        self.username: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise AuthenticationFailed("unexpected token after PLAIN completed")
        parts = token.decode("utf-8", "replace").split("\x00")
        if len(parts) != 3:
            message = f"Invalid SASL/PLAIN response: expected 3 tokens, got {min(len(parts), 4)}"
            raise AuthenticationFailed(message, message)
        authzid, username, password = parts
        if not username:
            raise AuthenticationFailed("no username", "Authentication failed: username not specified")
        self.username = username
        if not password:
            raise AuthenticationFailed("no password", "Authentication failed: password not specified")
        try:
            valid = self.check_password(username, password)
        except Exception as e:  # a users file gone bad, a store error: the client learns nothing more
            raise AuthenticationFailed(f"password check failed: {e}",
                                       "Authentication failed: credentials for user could not be verified") from e
        if not valid:
            raise AuthenticationFailed("invalid username or password", "Authentication failed: Invalid username or password")
        if authzid and authzid != username:
            raise AuthenticationFailed(f"authorization id {authzid!r} is not the username",
                                       "Authentication failed: Client requested an authorization id that is different from username")
        self.complete = True
        return b""


# Kafka's grammar of a SCRAM client-first message (ScramMessages.ClientFirstMessage).
# Java's [\x01-\x7F&&[^=,]] is written out: 0x2C is the comma, 0x3D the equals sign.
_SASLNAME = r"(?:[\x01-\x2B\x2D-\x3C\x3E-\x7F]|=2C|=3D)+"
_VALUE = r"[\x01-\x2B\x2D-\x7F]+"
_PRINTABLE = r"[\x21-\x2B\x2D-\x7E]+"
_CLIENT_FIRST = re.compile(
    rf"(?P<gs2>n,(?:a=(?P<authzid>{_SASLNAME}))?,)(?P<bare>(?:m={_VALUE},)?n=(?P<saslname>{_SASLNAME}),r=(?P<nonce>{_PRINTABLE})"
    rf"(?P<extensions>(?:,[A-Za-z]+={_VALUE})*))"
)


def _unescape_saslname(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


class _ClientGs2Header:
    """The GS2 header the client sent, for scramp's channel-binding check of ``c=``.

    scramp accepts only an empty authzid; Kafka accepts one equal to the username, and the
    client then sends ``c=base64("n,a=<user>,")``, which this makes scramp expect.
    """

    def __init__(self, header: str) -> None:
        self.header = header.encode("utf-8")

    def make_cbind_input(self, channel_binding) -> bytes:
        return self.header


class ScramServer:
    """SCRAM-SHA-256/512 as Kafka's ScramSaslServer, the exchange done by ``scramp``."""

    def __init__(self, mechanism: ScramMechanism, credentials: CredentialStore) -> None:
        self.mechanism = mechanism.mechanism_name
        self._scram_mechanism = mechanism
        self.credentials = credentials
        self.complete = False
        self.username: str | None = None
        self._server: scramp.core.ScramServer | None = None

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise AuthenticationFailed("unexpected token after SCRAM completed")
        message = token.decode("utf-8", "replace")
        if self._server is None:
            return self._client_first(message)
        return self._client_final(message)

    def _lookup(self, _saslprepped_name: str):
        credential = self.credentials.scram_credential(self.username, self._scram_mechanism)
        if credential is None:
            return None
        return credential.salt, credential.stored_key, credential.server_key, credential.iterations

    def _client_first(self, message: str) -> bytes:
        match = _CLIENT_FIRST.fullmatch(message)
        if match is None:
            raise AuthenticationFailed("invalid SCRAM client first message format")
        self.username = _unescape_saslname(match["saslname"])
        extensions = dict(item.split("=", 1) for item in match["extensions"].split(",")[1:])
        if extensions.get("tokenauth", "").lower() == "true":
            raise AuthenticationFailed("delegation token authentication (tokenauth=true) is not supported")
        bare = match["bare"]
        # scramp parses single-letter attributes only: it is given the message without Kafka's
        # extensions, and then the bare message as sent, which the client's proof covers.
        scramp_bare = bare[: len(bare) - len(match["extensions"])]
        self._server = scramp.ScramMechanism(self.mechanism).make_server(self._lookup)
        try:
            self._server.set_client_first("n,," + scramp_bare)
            server_first = self._server.get_server_first()
        except scramp.ScramException as e:
            raise AuthenticationFailed(f"invalid user credentials ({e})") from None
        if match["authzid"] is not None and _unescape_saslname(match["authzid"]) != self.username:
            raise AuthenticationFailed("authorization id is not the username",
                                       "Authentication failed: Client requested an authorization id that is different from username")
        self._server.client_first_bare = bare
        self._server.gs2_header = _ClientGs2Header(match["gs2"])
        return server_first.encode("utf-8")

    def _client_final(self, message: str) -> bytes:
        try:
            self._server.set_client_final(message)
            server_final = self._server.get_server_final()
        except scramp.ScramException as e:
            raise AuthenticationFailed(f"invalid client final message or proof ({e})") from None
        self.complete = True
        return server_final.encode("utf-8")


class SaslMechanisms:
    """The enabled mechanisms (``sasl.enabled.mechanisms``) and where their credentials are."""

    def __init__(self, enabled: Iterable[str], credentials: CredentialStore, plain_passwords: PasswordCheck | None = None) -> None:
        self.enabled = tuple(dict.fromkeys(enabled))
        unknown = [m for m in self.enabled if m not in SUPPORTED_MECHANISMS]
        if unknown:
            raise ConfigError(f"sasl.enabled.mechanisms: {', '.join(unknown)} not supported; "
                              f"supported: {', '.join(SUPPORTED_MECHANISMS)}")
        if not self.enabled:
            raise ConfigError("sasl.enabled.mechanisms: no SASL mechanisms are enabled")
        self.credentials = credentials
        self.plain_passwords = plain_passwords if plain_passwords is not None else ScramStorePasswords(credentials)

    def create(self, mechanism: str) -> MechanismServer:
        if mechanism == PLAIN:
            return PlainServer(self.plain_passwords)
        return ScramServer(ScramMechanism.from_name(mechanism), self.credentials)


# --- One connection's SASL states ------------------------------------------------------------


class SaslState(enum.Enum):
    HANDSHAKE_OR_VERSIONS = "handshake_or_versions"  # the first request: ApiVersions or SaslHandshake
    HANDSHAKE = "handshake"  # ApiVersions answered: SaslHandshake next
    AUTHENTICATE = "authenticate"  # mechanism chosen: SaslAuthenticate (raw tokens after a v0 handshake)
    REAUTH_BAD_MECHANISM = "reauth_bad_mechanism"  # re-authentication asked for another mechanism
    COMPLETE = "complete"  # authenticated: every request is served
    FAILED = "failed"  # the failure is answered; the connection closes


class Admission(enum.Enum):
    """What the connection does with a request, decided from its header alone."""

    SERVE = "serve"  # dispatch it to its handler as usual
    HANDSHAKE = "handshake"  # decode the SaslHandshake body, send ``session.handshake(...)``
    AUTHENTICATE = "authenticate"  # decode the SaslAuthenticate body, send ``session.authenticate(...)``
    REFUSE = "refuse"  # answer this request's error response with ILLEGAL_SASL_STATE, then close
    CLOSE = "close"  # close without a response; ``session.close_reason`` says why


class Outcome(enum.Enum):
    """What a reply means, for metrics: count these per listener and mechanism."""

    AUTHENTICATED = "authenticated"
    REAUTHENTICATED = "reauthenticated"
    FAILED = "failed"


@dataclass(frozen=True)
class HandshakeReply:
    """A SaslHandshake response (``mechanisms`` are the enabled ones); ``close`` after sending it."""

    error_code: ErrorCode
    mechanisms: tuple[str, ...] = ()
    close: bool = False


@dataclass(frozen=True)
class AuthenticateReply:
    """A SaslAuthenticate response, or with ``respond`` False none: the connection just closes."""

    error_code: ErrorCode = ErrorCode.none
    error_message: str | None = None
    auth_bytes: bytes = b""
    session_lifetime_ms: int = 0
    respond: bool = True
    close: bool = False
    outcome: Outcome | None = None


@dataclass(frozen=True)
class TokenReply:
    """After a v0 SaslHandshake: a raw token to send size-prefixed, or None and close."""

    token: bytes | None
    close: bool = False
    outcome: Outcome | None = None


class SaslServerSession:
    """One connection's SASL state, as Kafka's SaslServerAuthenticator and KafkaChannel.

    The connection asks ``admit(api_key, api_version, now_ms)`` for every request header
    (while ``expects_raw_token`` is False) and acts on the ``Admission``. ``principal`` is
    set once authenticated. With ``max_reauth_ms`` > 0 a session expires that long after it
    authenticated: the client re-authenticates before then (SaslHandshake then SaslAuthenticate
    on the same connection, same mechanism and principal), or its next other request closes
    the connection.
    """

    def __init__(self, mechanisms: SaslMechanisms, peer: str = "?", listener: str = "", max_reauth_ms: int = 0) -> None:
        self.mechanisms = mechanisms
        self.peer = peer
        self.listener = listener
        self.max_reauth_ms = max_reauth_ms
        self.state = SaslState.HANDSHAKE_OR_VERSIONS
        self.principal: KafkaPrincipal | None = None
        self.mechanism: str | None = None
        self.expects_raw_token = False  # after a v0 handshake the next frames are bare SASL tokens
        self.expires_at_ms: int | None = None
        self.close_reason: str | None = None
        self.client_supports_reauthentication = False  # SaslAuthenticate v1+ (KIP-368)
        self._server: MechanismServer | None = None
        self._reauthenticating = False
        self._last_reauth_start_ms: int | None = None
        self._bad_mechanism_message = ""

    @property
    def authenticated(self) -> bool:
        return self.state is SaslState.COMPLETE

    def admit(self, api_key: int, api_version: int, now_ms: int) -> Admission:
        state = self.state
        if state is SaslState.COMPLETE:
            if api_key == SASL_HANDSHAKE_KEY and self._may_reauthenticate(now_ms):
                self._reauthenticating = True
                self._last_reauth_start_ms = now_ms
                return Admission.HANDSHAKE
            if self.expires_at_ms is not None and now_ms > self.expires_at_ms:
                return self._close(f"session of {self.principal} expired (connections.max.reauth.ms)")
            if api_key == SASL_HANDSHAKE_KEY:
                return Admission.HANDSHAKE  # answered ILLEGAL_SASL_STATE, as KafkaApis does
            if api_key == SASL_AUTHENTICATE_KEY:
                return Admission.AUTHENTICATE
            return Admission.SERVE
        if state is SaslState.HANDSHAKE_OR_VERSIONS and api_key == API_VERSIONS_KEY:
            if api_version <= KAFKA_4_0[API_VERSIONS_KEY][2]:  # a client retrying a lower version stays here
                self.state = SaslState.HANDSHAKE
            return Admission.SERVE
        if state in (SaslState.HANDSHAKE_OR_VERSIONS, SaslState.HANDSHAKE) and api_key == SASL_HANDSHAKE_KEY:
            return Admission.HANDSHAKE
        if state in (SaslState.AUTHENTICATE, SaslState.REAUTH_BAD_MECHANISM) and api_key == SASL_AUTHENTICATE_KEY:
            return Admission.AUTHENTICATE
        if state is SaslState.AUTHENTICATE:
            self._fail(f"unexpected request (API key {api_key}) during SASL authentication")
            return Admission.REFUSE
        return self._close(f"unexpected request (API key {api_key}) during SASL handshake")

    def handshake(self, mechanism: str, api_version: int, now_ms: int) -> HandshakeReply:
        """Answer a SaslHandshake that ``admit`` routed here."""
        if self.state is SaslState.COMPLETE and not self._reauthenticating:
            return HandshakeReply(ErrorCode.illegal_sasl_state)
        if mechanism not in self.mechanisms.enabled:
            self._fail(f"unsupported SASL mechanism {mechanism!r}")
            return HandshakeReply(ErrorCode.unsupported_sasl_mechanism, self.mechanisms.enabled, close=True)
        if self._reauthenticating and mechanism != self.mechanism:
            # Kafka answers the handshake, then fails the first SaslAuthenticate.
            self._bad_mechanism_message = (f"SASL mechanism '{mechanism}' requested by client is not supported for "
                                           f"re-authentication of mechanism '{self.mechanism}'")
            self.state = SaslState.REAUTH_BAD_MECHANISM
            return HandshakeReply(ErrorCode.none, self.mechanisms.enabled)
        self.mechanism = mechanism
        self._server = self.mechanisms.create(mechanism)
        self.state = SaslState.AUTHENTICATE
        self.expects_raw_token = api_version == 0
        return HandshakeReply(ErrorCode.none, self.mechanisms.enabled)

    def authenticate(self, auth_bytes: bytes, api_version: int, now_ms: int) -> AuthenticateReply:
        """Answer a SaslAuthenticate that ``admit`` routed here."""
        if self.state is SaslState.COMPLETE:
            return AuthenticateReply(ErrorCode.illegal_sasl_state,
                                     "SaslAuthenticate request received after successful authentication")
        if self.state is SaslState.REAUTH_BAD_MECHANISM:
            self._fail(self._bad_mechanism_message)
            return AuthenticateReply(respond=False, close=True, outcome=Outcome.FAILED)
        if not self._reauthenticating:
            self.client_supports_reauthentication = api_version > 0
        try:
            token = self._server.evaluate(auth_bytes)
            if not self._server.complete:
                return AuthenticateReply(auth_bytes=token)
            outcome = self._complete(now_ms)
        except AuthenticationFailed as e:
            message = e.client_message or self._generic_failure()
            self._fail(str(e))
            return AuthenticateReply(ErrorCode.sasl_authentication_failed, message, close=True, outcome=Outcome.FAILED)
        return AuthenticateReply(auth_bytes=token, session_lifetime_ms=max(self.max_reauth_ms, 0), outcome=outcome)

    def raw_token(self, token: bytes, now_ms: int) -> TokenReply:
        """After a v0 SaslHandshake, each frame is a bare token and so is each answer."""
        try:
            reply = self._server.evaluate(token)
            if not self._server.complete:
                return TokenReply(reply)
            outcome = self._complete(now_ms)
        except AuthenticationFailed as e:
            self._fail(str(e))
            return TokenReply(None, close=True, outcome=Outcome.FAILED)
        self.expects_raw_token = False
        return TokenReply(reply, outcome=outcome)

    def _may_reauthenticate(self, now_ms: int) -> bool:
        if self.expires_at_ms is None:  # re-authentication is off without a session lifetime
            return False
        return self._last_reauth_start_ms is None or now_ms - self._last_reauth_start_ms >= _MIN_REAUTH_INTERVAL_MS

    def _complete(self, now_ms: int) -> Outcome:
        principal = KafkaPrincipal.user(self._server.username)
        if self._reauthenticating and principal != self.principal:
            p, q = self.principal, principal
            message = (f"Cannot change principals during re-authentication from {p.principal_type}.{p.name}: "
                       f"{q.principal_type}.{q.name}")
            raise AuthenticationFailed(message, message)
        outcome = Outcome.REAUTHENTICATED if self._reauthenticating else Outcome.AUTHENTICATED
        self.principal = principal
        self.state = SaslState.COMPLETE
        self._server = None
        self._reauthenticating = False
        self.expires_at_ms = now_ms + self.max_reauth_ms if self.max_reauth_ms > 0 else None
        logger.debug("%s %s as %s with %s on listener %s", self.peer, outcome.value, principal, self.mechanism,
                     self.listener)
        return outcome

    def _generic_failure(self) -> str:
        phase = "re-authentication" if self._reauthenticating else "authentication"
        return f"Authentication failed during {phase} due to invalid credentials with SASL mechanism {self.mechanism}"

    def _fail(self, reason: str) -> None:
        self.state = SaslState.FAILED
        self.close_reason = reason
        user = getattr(self._server, "username", None)
        logger.warning("SASL %s failed from %s on listener %s (mechanism %s%s): %s",
                       "re-authentication" if self._reauthenticating else "authentication", self.peer,
                       self.listener or "?", self.mechanism or "none", f", user {user!r}" if user else "", reason)

    def _close(self, reason: str) -> Admission:
        self.state = SaslState.FAILED
        self.close_reason = reason
        logger.warning("closing connection from %s on listener %s: %s", self.peer, self.listener or "?", reason)
        return Admission.CLOSE
