"""One connection's SASL states on the server side (Kafka's SaslServerAuthenticator), sans-I/O.

The connection decodes frames and feeds ``SaslServerSession`` what the client sent; it answers
with what to send back and whether to close: SaslHandshake (v0: raw tokens follow, v1:
SaslAuthenticate), SaslAuthenticate, KIP-368 re-authentication (``connections.max.reauth.ms``)
and KIP-152 failure handling (a SaslAuthenticate error response, then the connection closes).
Failures are logged at WARNING with the peer, the mechanism and the user name, never a password
or proof. The mechanisms themselves are sasl_mechanisms.py's; SCRAM credentials and their admin
APIs scram_credentials.py's.

Not thread-safe; the event loop owns every object here.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from tidelog.protocol.apis import API_VERSIONS_KEY, KAFKA_4_0
from tidelog.protocol.errors import ErrorCode
from tidelog.security.principal import KafkaPrincipal
from tidelog.security.sasl_mechanisms import AuthenticationFailed, MechanismServer, SaslMechanisms

logger = logging.getLogger(__name__)

SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
# Kafka's sasl.server.max.receive.size: the largest frame a client may send before it has
# authenticated (a bigger one fails the authentication and closes the connection).
MAX_RECEIVE_SIZE_BEFORE_AUTHENTICATION = 524288
_MIN_REAUTH_INTERVAL_MS = 1000  # Kafka: at most one re-authentication a second


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
