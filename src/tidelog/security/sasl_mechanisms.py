"""The SASL mechanisms on the server side: PLAIN and SCRAM-SHA-256/512, each a fresh object per
authentication (``MechanismServer``), sans-I/O: it takes the client's token and returns the
server's, or raises ``AuthenticationFailed``.

- ``PlainServer`` (RFC 4616), as Kafka's PlainSaslServer: the client sends
  ``[authzid] NUL username NUL password``; an authzid other than the username is refused.
  Passwords are checked by a ``PasswordCheck``: the users file (``PlainUsersFile``) or the
  SCRAM credentials of the metadata store (``ScramStorePasswords``).
- ``ScramServer`` (RFC 5802/7677), the exchange done by PyPI ``scramp``. As Kafka's
  ScramSaslServer: only the ``n`` GS2 flag (no channel binding), an authzid must equal the
  username, extensions are ignored except ``tokenauth=true`` (delegation tokens), which is
  refused: Tidelog has no delegation tokens.

``SaslMechanisms`` is the enabled set (``sasl.enabled.mechanisms``) and makes them.
Not thread-safe; the event loop owns every object here.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import scramp

from tidelog.config import ConfigError
from tidelog.security.scram_credentials import CredentialStore, ScramCredential, ScramMechanism

logger = logging.getLogger(__name__)

PLAIN = "PLAIN"
SUPPORTED_MECHANISMS = (PLAIN, *(m.mechanism_name for m in ScramMechanism))


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
            if self._verified.get(key) == credential:  # the store may make a new object per read
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
