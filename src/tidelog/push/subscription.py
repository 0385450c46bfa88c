"""A push subscription: what the broker delivers, where, and how (issue 15; docs/push.md).

A subscription names topics and an HTTP(S) endpoint; the broker POSTs the topics' records to it
in batches (``payload_format`` "batch": a JSON body of up to ``batch_size`` records, waiting up to
``linger_ms`` for a fuller one) or one record per request ("raw": the value as the body, its
metadata in headers). Each subscription is a share group, ``push.<name>``
(``share_group_id``), whose only consumer is the broker: ``ack_deadline_ms`` is how long a POST may
take, ``delivery_limit`` the share group's delivery count limit, ``dead_letter_topic`` its
dead-letter topic, and ``backoff_*`` the retry back-off of the records a failed POST released.

``PushSubscription.parse(dict)`` validates what a user sends (the HTTP API, the CLI) and raises
``SubscriptionError(field, message)`` naming the field; ``to_json()`` is what may be shown (no
secret, the bearer token masked), ``to_record()`` / ``from_json()`` what the metadata store keeps
(with the HMAC secret, generated at creation by ``new_secret``).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from urllib.parse import urlsplit

__all__ = ["PushSubscription", "SubscriptionError", "SubscriptionNotFound", "SubscriptionExists",
           "GROUP_PREFIX", "share_group_id", "new_secret", "PAYLOAD_FORMATS"]

GROUP_PREFIX = "push."
PAYLOAD_FORMATS = ("batch", "raw")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
MAX_TOPICS = 100
MAX_ENDPOINT_LENGTH = 2048
MAX_TOKEN_LENGTH = 4096
# field -> (smallest, largest) of the numeric settings
BOUNDS: dict[str, tuple[float, float]] = {
    "batch_size": (1, 1000),
    "linger_ms": (0, 10_000),
    "max_concurrency": (1, 64),
    "ack_deadline_ms": (100, 600_000),
    "backoff_initial_ms": (0, 3_600_000),
    "backoff_multiplier": (1.0, 10.0),
    "backoff_max_ms": (0, 86_400_000),
    "delivery_limit": (2, 10),  # the share group's delivery count limit (Kafka's bounds)
}
# what a user may set (created_ms and paused come from the registry; the secret is generated)
USER_FIELDS = ("name", "topics", "endpoint", "batch_size", "linger_ms", "max_concurrency", "ack_deadline_ms",
               "backoff_initial_ms", "backoff_multiplier", "backoff_max_ms", "delivery_limit", "dead_letter_topic",
               "payload_format", "bearer_token", "paused")
IMMUTABLE_FIELDS = ("name",)


class SubscriptionError(ValueError):
    """A field of a subscription is wrong (the HTTP API answers 400): ``field`` and why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class SubscriptionNotFound(KeyError):
    """No subscription by that name (404)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"push subscription {self.name!r} does not exist"


class SubscriptionExists(ValueError):
    """A subscription by that name exists already (409)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"push subscription {name!r} exists already")
        self.name = name


def share_group_id(name: str) -> str:
    """The share group of a subscription: ``push.<name>``."""
    return GROUP_PREFIX + name


def new_secret() -> str:
    """A subscription's HMAC-SHA256 key: 32 random bytes as hex."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class PushSubscription:
    name: str
    topics: tuple[str, ...]
    endpoint: str
    batch_size: int = 100
    linger_ms: int = 50
    max_concurrency: int = 8
    ack_deadline_ms: int = 30_000
    backoff_initial_ms: int = 1000
    backoff_multiplier: float = 2.0
    backoff_max_ms: int = 60_000
    delivery_limit: int = 5
    dead_letter_topic: str | None = None
    payload_format: str = "batch"
    bearer_token: str | None = field(default=None, repr=False)
    paused: bool = False
    created_ms: int = 0
    secret: str = field(default="", repr=False, compare=False)

    @property
    def group_id(self) -> str:
        return share_group_id(self.name)

    @property
    def endpoint_host(self) -> str:
        return (urlsplit(self.endpoint).hostname or "").lower()

    def backoff_ms(self, attempt: int) -> int:
        """The retry back-off after failed attempt ``attempt`` (1-based): initial x multiplier^(n-1), at most max."""
        if self.backoff_initial_ms <= 0:
            return 0
        exponent = max(0, attempt - 1)
        if exponent > 64:
            return self.backoff_max_ms
        return int(min(self.backoff_max_ms, self.backoff_initial_ms * self.backoff_multiplier ** exponent))

    # --- from and to JSON -------------------------------------------------------------------
    @classmethod
    def parse(cls, data: object, *, created_ms: int = 0, secret: str = "") -> "PushSubscription":
        """A subscription from what a user sent; SubscriptionError naming the first wrong field."""
        if not isinstance(data, dict):
            raise SubscriptionError("body", "a subscription is a JSON object")
        unknown = sorted(set(data) - set(USER_FIELDS))
        if unknown:
            raise SubscriptionError(unknown[0], f"unknown field (known: {', '.join(USER_FIELDS)})")
        values: dict = {"name": _name(data.get("name")), "topics": _topics(data.get("topics")),
                        "endpoint": _endpoint(data.get("endpoint"))}
        for name, (low, high) in BOUNDS.items():
            if data.get(name) is not None:
                values[name] = _number(name, data[name], low, high, float if name == "backoff_multiplier" else int)
        if data.get("dead_letter_topic") not in (None, ""):
            values["dead_letter_topic"] = _topic_name("dead_letter_topic", data["dead_letter_topic"])
        if data.get("payload_format") is not None:
            if data["payload_format"] not in PAYLOAD_FORMATS:
                raise SubscriptionError("payload_format", f"must be one of {', '.join(PAYLOAD_FORMATS)}")
            values["payload_format"] = data["payload_format"]
        if data.get("bearer_token") not in (None, ""):
            token = data["bearer_token"]
            if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isprintable() or " " in token:
                raise SubscriptionError("bearer_token", f"must be up to {MAX_TOKEN_LENGTH} printable characters without spaces")
            values["bearer_token"] = token
        if data.get("paused") is not None:
            if not isinstance(data["paused"], bool):
                raise SubscriptionError("paused", "must be true or false")
            values["paused"] = data["paused"]
        sub = cls(**values, created_ms=created_ms, secret=secret)
        if sub.backoff_max_ms < sub.backoff_initial_ms:
            raise SubscriptionError("backoff_max_ms", f"must be at least backoff_initial_ms ({sub.backoff_initial_ms})")
        return sub

    def changed(self, changes: object) -> "PushSubscription":
        """This subscription with ``changes`` (user fields) applied, validated as a whole."""
        if not isinstance(changes, dict):
            raise SubscriptionError("body", "changes are a JSON object")
        for name in IMMUTABLE_FIELDS:
            if name in changes and changes[name] != getattr(self, name):
                raise SubscriptionError(name, "cannot be changed (delete and create the subscription again)")
        if changes.get("bearer_token") == "***":  # the masked token, as shown, sent back: unchanged
            changes = {name: value for name, value in changes.items() if name != "bearer_token"}
        merged = {**self.user_fields(), **changes}
        return PushSubscription.parse(merged, created_ms=self.created_ms, secret=self.secret)

    def user_fields(self) -> dict:
        data = {name: getattr(self, name) for name in USER_FIELDS}
        data["topics"] = list(self.topics)
        return data

    def to_json(self) -> dict:
        """What may be shown: every field but the secret; the bearer token masked."""
        data = self.user_fields()
        data["bearer_token"] = "***" if self.bearer_token else None
        data["created_ms"] = self.created_ms
        data["share_group"] = self.group_id
        return data

    def to_record(self) -> dict:
        """What the metadata store keeps: every field, the secret and the bearer token included."""
        data = asdict(self)
        data["topics"] = list(self.topics)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PushSubscription":
        """From ``to_record()`` (or ``to_json()``, without secrets); fields a newer version added are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["topics"] = tuple(values.get("topics", ()))
        if values.get("bearer_token") == "***":
            values["bearer_token"] = None
        return cls(**values)

    def with_secret(self, secret: str) -> "PushSubscription":
        return replace(self, secret=secret)


def _name(value: object) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise SubscriptionError("name", "1-200 characters of letters, digits, '.', '_' and '-', starting with a letter or digit")
    return value


def _topic_name(field_name: str, value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value) or value in (".", ".."):
        raise SubscriptionError(field_name, f"{value!r} is not a topic name")
    return value


def _topics(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [t for t in value.split(",") if t]
    if not isinstance(value, (list, tuple)) or not value:
        raise SubscriptionError("topics", "a non-empty list of topic names")
    if len(value) > MAX_TOPICS:
        raise SubscriptionError("topics", f"at most {MAX_TOPICS} topics")
    names = tuple(dict.fromkeys(_topic_name("topics", t) for t in value))
    return names


def _endpoint(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ENDPOINT_LENGTH:
        raise SubscriptionError("endpoint", "an http:// or https:// URL is required")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise SubscriptionError("endpoint", f"not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubscriptionError("endpoint", "an http:// or https:// URL with a host is required")
    if parts.username is not None or parts.password is not None:
        raise SubscriptionError("endpoint", "credentials in the URL are not allowed (use bearer_token)")
    if parts.fragment:
        raise SubscriptionError("endpoint", "a fragment (#...) is not allowed")
    if port == 0:
        raise SubscriptionError("endpoint", "port 0 is not a port")
    return value


def _number(name: str, value: object, low: float, high: float, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise SubscriptionError(name, f"must be {'an integer' if kind is int else 'a number'} in [{low}, {high}]")
    if not math.isfinite(value) or not low <= value <= high:
        raise SubscriptionError(name, f"must be in [{low}, {high}], got {value}")
    return kind(value)
