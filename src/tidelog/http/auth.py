"""Who calls the HTTP side, and what they may do (docs/security.md, "HTTP").

Authentication is required once the broker has users: SCRAM credentials in the metadata store,
a ``sasl.plain.users.file``, or an ``http.bearer.tokens.file``. A caller then sends HTTP Basic
(a user's name and password, checked as SASL PLAIN checks them) or ``Authorization: Bearer
<token>`` (a line ``<token> User:<name>`` of the tokens file); anything else is 401 with a
``WWW-Authenticate`` challenge (a browser asks for the console's credentials). ``/health``,
``/ready`` and ``/metrics`` stay open while ``http.health.metrics.open`` is true. Failures are
logged at WARNING with the peer and the user name, never the secret, and counted.

Authorization applies the broker's ACLs to the caller's principal, per route (``ROUTE_ACLS``):
producing needs WRITE on the topic, reading READ, creating a topic CREATE on the cluster or the
topic, and so on; a route of the API not in the table needs ALTER on the cluster. Without an
authorizer everything is allowed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from tidelog.config import ConfigError
from tidelog.http.errors import PREFIX, error_response
from tidelog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from tidelog.security.principal import ANONYMOUS, KafkaPrincipal
from tidelog.security.sasl_mechanisms import PlainUsersFile, ScramStorePasswords

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
_T, _G, _C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
_Op = AclOperation

# (method, route template) -> (operation, resource type, match_info key naming the resource or
# None for the cluster; "push.{name}": a template filled from match_info). POST /topics names its
# topic in the body: CREATE on the cluster, or on that topic. A push subscription is its share
# group push.<name> (POST names it in the body); READ on its topics is checked by push_routes.py.
ROUTE_ACLS: dict[tuple[str, str], tuple[AclOperation, ResourceType, str | None]] = {
    ("GET", PREFIX + "/cluster"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/broker"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/topics"): (_Op.DESCRIBE, _C, None),
    ("POST", PREFIX + "/topics"): (_Op.CREATE, _T, None),
    ("GET", PREFIX + "/topics/{topic}"): (_Op.DESCRIBE, _T, "topic"),
    ("GET", PREFIX + "/topics/{topic}/delay"): (_Op.DESCRIBE, _T, "topic"),
    ("DELETE", PREFIX + "/topics/{topic}"): (_Op.DELETE, _T, "topic"),
    ("PUT", PREFIX + "/topics/{topic}/configs"): (_Op.ALTER_CONFIGS, _T, "topic"),
    ("POST", PREFIX + "/topics/{topic}/records"): (_Op.WRITE, _T, "topic"),
    ("GET", PREFIX + "/topics/{topic}/partitions/{partition}/records"): (_Op.READ, _T, "topic"),
    ("GET", PREFIX + "/groups"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/groups/{group}"): (_Op.DESCRIBE, _G, "group"),
    ("DELETE", PREFIX + "/groups/{group}"): (_Op.DELETE, _G, "group"),
    ("POST", PREFIX + "/groups/{group}/offsets"): (_Op.READ, _G, "group"),
    ("POST", PREFIX + "/groups/{group}/fetch"): (_Op.READ, _G, "group"),
    ("GET", PREFIX + "/openapi.json"): (_Op.DESCRIBE, _C, None),
    # share groups (share_routes.py): as ShareGroupHeartbeat/ShareFetch/ShareAcknowledge,
    # ShareGroupDescribe and DeleteGroups; receive and acknowledge also need READ on each topic
    # (checked in the route: the topic is in the body)
    ("GET", PREFIX + "/share-groups"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/share-groups/{group}"): (_Op.DESCRIBE, _G, "group"),
    ("DELETE", PREFIX + "/share-groups/{group}"): (_Op.DELETE, _G, "group"),
    ("POST", PREFIX + "/share-groups/{group}/receive"): (_Op.READ, _G, "group"),
    ("POST", PREFIX + "/share-groups/{group}/ack"): (_Op.READ, _G, "group"),
    ("POST", PREFIX + "/share-groups/{group}/release"): (_Op.READ, _G, "group"),
    ("POST", PREFIX + "/share-groups/{group}/reject"): (_Op.READ, _G, "group"),
    ("POST", PREFIX + "/share-groups/{group}/renew"): (_Op.READ, _G, "group"),
    ("DELETE", PREFIX + "/share-groups/{group}/members/{member}"): (_Op.READ, _G, "group"),
    # at a share-partition's leader, for the coordinator, as the caller (READ on the group: in the route)
    ("POST", PREFIX + "/share-groups/{group}/partitions/{topic}/{partition}/acquire"): (_Op.READ, _T, "topic"),
    ("POST", PREFIX + "/share-groups/{group}/partitions/{topic}/{partition}/acknowledge"): (_Op.READ, _T, "topic"),
    ("GET", PREFIX + "/transactions"): (_Op.DESCRIBE, _C, None),
    # the security set-up, read-only (security_routes.py)
    ("GET", PREFIX + "/users"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/acls"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/quotas"): (_Op.DESCRIBE, _C, None),
    ("GET", PREFIX + "/push-subscriptions"): (_Op.DESCRIBE, _C, None),
    ("POST", PREFIX + "/push-subscriptions"): (_Op.READ, _G, "push.{name}"),
    ("GET", PREFIX + "/push-subscriptions/{name}"): (_Op.DESCRIBE, _G, "push.{name}"),
    ("PATCH", PREFIX + "/push-subscriptions/{name}"): (_Op.READ, _G, "push.{name}"),
    ("DELETE", PREFIX + "/push-subscriptions/{name}"): (_Op.DELETE, _G, "push.{name}"),
    ("POST", PREFIX + "/push-subscriptions/{name}/pause"): (_Op.READ, _G, "push.{name}"),
    ("POST", PREFIX + "/push-subscriptions/{name}/resume"): (_Op.READ, _G, "push.{name}"),
}
_NAMED_IN_BODY = {PREFIX + "/push-subscriptions"}  # POST: the resource's name is the body's "name"
_UNLISTED = (_Op.ALTER, _C, None)


class BearerTokens:
    """``http.bearer.tokens.file``: one ``<token> <principal>`` a line (``#`` comments), re-read
    when it changes. Tokens are secrets: keep the file readable by the broker only."""

    setting = "http.bearer.tokens.file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int] | None = None
        self._tokens: list[tuple[bytes, KafkaPrincipal]] = []
        self.reload_if_changed()

    def reload_if_changed(self) -> None:
        try:
            info = self.path.stat()
            if (info.st_mtime_ns, info.st_size) == self._signature:
                return
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{self.setting}: cannot read {self.path}: {e.strerror}") from None
        tokens = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            token, _, principal = line.strip().partition(" ")
            try:
                tokens.append((token.encode(), KafkaPrincipal.parse(principal.strip())))
            except ValueError:
                raise ConfigError(f"{self.setting}: line {number} of {self.path}: expected '<token> User:<name>'") from None
        self._tokens, self._signature = tokens, (info.st_mtime_ns, info.st_size)

    def principal(self, token: str) -> KafkaPrincipal | None:
        try:
            self.reload_if_changed()
        except ConfigError as e:
            logger.warning("%s; the tokens read before stay in use", e)
        candidate = token.encode()
        found = None
        for known, principal in self._tokens:  # every token compared, in constant time each
            if hmac.compare_digest(known, candidate):
                found = principal
        return found


class HttpAuthentication:
    """The credentials the HTTP side accepts, made from the broker's settings."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        settings = broker.security
        self.plain_file = PlainUsersFile(settings.plain_users_file) if settings.plain_users_file else None
        self.scram_passwords = ScramStorePasswords(broker.security_records)
        tokens_file = broker.config["http.bearer.tokens.file"]
        self.tokens = BearerTokens(Path(tokens_file)) if tokens_file else None
        self.open_health = broker.config["http.health.metrics.open"]

    @property
    def required(self) -> bool:
        return bool(self.plain_file or self.tokens or self.broker.security_records.has_users)

    def check_password(self, user: str, password: str) -> bool:
        if self.plain_file is not None and self.plain_file(user, password):
            return True
        return self.scram_passwords(user, password)

    def principal(self, header: str) -> tuple[KafkaPrincipal | None, str, str]:
        """(the principal or None, the scheme, the user name claimed) of an Authorization header."""
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, "basic", ""
            if sep and user and self.check_password(user, password):
                return KafkaPrincipal.user(user), "basic", user
            return None, "basic", user
        if scheme.lower() == "bearer" and self.tokens is not None:
            principal = self.tokens.principal(credentials.strip())
            return principal, "bearer", str(principal or "")
        return None, scheme.lower() or "none", ""


def _challenge(message: str) -> web.Response:
    response = error_response(401, "AUTHENTICATION_REQUIRED", message)
    response.headers["WWW-Authenticate"] = 'Basic realm="tidelog", charset="UTF-8"'
    return response


def authenticate(broker: "Broker"):
    """The middleware: sets ``request["access"]`` (what the caller may do), or answers 401/403."""
    from tidelog.server.broker import StartupError

    try:
        auth = HttpAuthentication(broker)
    except ConfigError as e:
        raise StartupError(str(e)) from None

    @web.middleware
    async def middleware(request: web.Request, handler):
        peer = request.remote or "?"
        principal = ANONYMOUS
        if broker.tls is not None and broker.config["http.ssl.enable"]:
            broker.tls.reload_if_changed()  # a renewed certificate, for the next connections
        if auth.required and not (auth.open_health and request.path in OPEN_PATHS):
            header = request.headers.get("Authorization", "")
            if not header:
                return _challenge("authentication required: HTTP Basic (a user of this broker) or a bearer token")
            found, scheme, user = auth.principal(header)
            if found is None:
                broker.metrics.sasl_authentications.labels("HTTP", scheme.upper(), "failed").inc()
                logger.warning("HTTP authentication failed from %s (%s%s) for %s %s", peer, scheme,
                               f", user {user!r}" if user else "", request.method, request.path)
                return _challenge("authentication failed: invalid credentials")
            principal = found
        access = broker.access(principal, peer)
        request["access"] = access
        if access.authorizer is not None and request.path.startswith(PREFIX + "/"):
            denied = await _denied(request, access)
            if denied is not None:
                return denied
        return await handler(request)

    return middleware


def may(request: web.Request, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
    """Whether the caller may ``operation`` the resource: a route's check beyond its ROUTE_ACLS
    row (a resource named in the body). True without an authorizer."""
    access = request.get("access")
    return access is None or access.authorize(operation, resource_type, name)


async def _denied(request: web.Request, access) -> web.Response | None:
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else request.path
    operation, resource_type, key = ROUTE_ACLS.get((request.method, template), _UNLISTED)
    if (request.method, template) == ("POST", PREFIX + "/topics"):
        if access.authorize(_Op.CREATE, _C, log_if_denied=False):
            return None
        try:
            name = str((await request.json()).get("name", ""))
        except Exception:  # noqa: BLE001 - a bad body is the route's to answer
            return None
        allowed = access.authorize(_Op.CREATE, _T, name)
    else:
        fields = request.match_info
        if request.method == "POST" and template in _NAMED_IN_BODY:
            try:
                fields = {"name": str((await request.json()).get("name", ""))}
            except Exception:  # noqa: BLE001 - a bad body is the route's to answer
                return None
        name = (key.format_map(fields) if "{" in key else fields.get(key, "")) if key else CLUSTER_NAME
        allowed = access.authorize(operation, resource_type, name)
    if allowed:
        return None
    what = "the cluster" if resource_type is _C else f"{resource_type.name.lower()} {name}"
    return error_response(403, f"{resource_type.name}_AUTHORIZATION_FAILED",
                          f"{access.principal} may not {operation.name} {what}")
