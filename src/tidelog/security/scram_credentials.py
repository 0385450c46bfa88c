"""SCRAM credentials: what Kafka stores for a SCRAM user, where it is stored, and the admin APIs.

``ScramCredential`` is Kafka's stored credential (salt, iterations, stored key, server key; the
password is never kept) for one ``ScramMechanism`` (SCRAM-SHA-256 or -512, with Kafka's type
codes). ``CredentialStore`` is the interface the metadata store implements (reads from memory,
writes as coroutines); ``InMemoryCredentialStore`` is the implementation for tests.
``describe_user_scram_credentials`` and ``alter_user_scram_credentials`` are
DescribeUserScramCredentials (50) and AlterUserScramCredentials (51) over such a store, with
Kafka's checks (iterations 4096..16384, salt length, one change per user per request).
Not thread-safe; the event loop owns every object here.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import scramp

from tidelog.protocol.errors import ErrorCode


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
