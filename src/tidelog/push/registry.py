"""The push subscriptions of the cluster, kept in the metadata store (issue 15; docs/push.md).

Subscriptions are records of the metadata store's ``security`` map, kind ``push``, key the
subscription's name, value ``PushSubscription.to_record()`` (they carry the HMAC secret and the
bearer token, as the SCRAM credentials beside them carry theirs): one JSON file on a single node,
``security/push/<name>`` in etcd in a cluster. ``alter_security`` changes them; the store tells
its listeners ``("security", "push")``, here or on any broker, and ``PushSubscriptions`` passes that
on (``add_listener``) to the delivery engine, so every broker starts, changes, pauses and stops
delivering what it leads.

The share group of a subscription (``push.<name>``) takes its configs from the subscription
(``group_configs``, read by the broker's share groups on every use): the record lock outlasts
``ack_deadline_ms`` + ``linger_ms`` + LOCK_MARGIN_MS, the delivery count limit is
``delivery_limit``, the dead-letter topic ``dead_letter_topic`` (records copied), the retry
back-off (``tidelog.retry.backoff.*``) the subscription's ``backoff_*``. Group configs set by
IncrementalAlterConfigs on that group apply underneath (the subscription's win).

Checks at create and update: the topics exist, the endpoint's host is allowed by
``push.allowed.hosts`` (checked again at every delivery), and the derived group configs pass the
broker's bounds (``validate_group_configs``); each failure is a SubscriptionError naming the field.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from tidelog.clock import wall_clock_ms
from tidelog.config import validate_group_configs
from tidelog.protocol.errors import KafkaError
from tidelog.protocol.topics import is_internal
from tidelog.push.subscription import (
    GROUP_PREFIX,
    PushSubscription,
    SubscriptionError,
    SubscriptionExists,
    SubscriptionNotFound,
    new_secret,
)

if TYPE_CHECKING:
    from tidelog.cluster.metadata import TopicRecord
    from tidelog.config import BrokerConfig

logger = logging.getLogger(__name__)

__all__ = ["PushSubscriptions", "KIND", "LOCK_MARGIN_MS", "allowed_hosts", "host_allowed"]

KIND = "push"
LOCK_MARGIN_MS = 5000  # the record lock outlasts a POST's deadline and the linger by this much
DLQ_OPT_IN = "errors.deadletterqueue.group.enable"


class RecordStore(Protocol):
    """The metadata store as the registry uses it (cluster/metadata.py)."""

    security: dict[str, dict[str, dict]]
    group_configs: dict[str, dict[str, str]]

    async def alter_security(self, kind: str, puts: dict[str, dict], deletes: list[str]) -> None: ...

    def add_listener(self, listener: Callable[[str, object], None]) -> None: ...


class StatusSource(Protocol):
    """The delivery engine (push/delivery.py) as the registry asks it about a subscription."""

    def status(self, subscription: PushSubscription) -> dict: ...


def allowed_hosts(config: "BrokerConfig") -> list[str]:
    """``push.allowed.hosts`` as a list (empty: any host)."""
    return [entry for entry in config["push.allowed.hosts"].split(",") if entry]


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether ``push.allowed.hosts`` lets the broker POST to ``host``: an empty list allows any;
    entries are host names (``hooks.example.com``), ``*.example.com`` (any name under it) or IP
    addresses and networks (``10.0.0.0/8``), which match hosts written as addresses."""
    if not allowed:
        return True
    host = host.lower().strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("*.") and address is None:
            if host.endswith(entry[1:]):
                return True
        elif address is not None and ("/" in entry or entry[:1].isdigit() or ":" in entry):
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif host == entry.rstrip("."):
            return True
    return False


class PushSubscriptions:
    def __init__(self, store: RecordStore, config: "BrokerConfig",
                 topics: Callable[[], Mapping[str, "TopicRecord"]], *,
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._store = store
        self._config = config
        self._topics = topics
        self._clock_ms = clock_ms
        self._listeners: list[Callable[[], None]] = []
        self.engine: StatusSource | None = None  # the delivery engine, once the broker made it
        store.add_listener(self._on_store_change)

    # --- reading -----------------------------------------------------------------------------
    def _records(self) -> dict[str, dict]:
        return self._store.security.get(KIND, {})

    def list(self) -> list[PushSubscription]:
        """Every subscription, by name (with their secrets: never show ``to_record()``)."""
        out = []
        for name, record in sorted(self._records().items()):
            try:
                out.append(PushSubscription.from_json(record))
            except (TypeError, ValueError) as e:  # written by a newer or broken version: skip it, say so
                logger.warning("push subscription %r in the metadata store is unreadable: %s", name, e)
        return out

    def get(self, name: str) -> PushSubscription:
        record = self._records().get(name)
        if record is None:
            raise SubscriptionNotFound(name)
        return PushSubscription.from_json(record)

    def by_group(self, group_id: str) -> PushSubscription | None:
        if not group_id.startswith(GROUP_PREFIX):
            return None
        record = self._records().get(group_id[len(GROUP_PREFIX):])
        return PushSubscription.from_json(record) if record is not None else None

    # --- changing ----------------------------------------------------------------------------
    async def create(self, sub: PushSubscription) -> tuple[PushSubscription, str]:
        """Store a new subscription (``sub`` as parsed; its created_ms and secret are made here);
        the subscription and its secret, shown to the creator once."""
        if sub.name in self._records():
            raise SubscriptionExists(sub.name)
        secret = new_secret()
        sub = PushSubscription.parse(sub.user_fields(), created_ms=self._clock_ms(), secret=secret)
        self.check(sub)
        await self._store.alter_security(KIND, {sub.name: sub.to_record()}, [])
        logger.info("push subscription %s created: %s -> %s", sub.name, ",".join(sub.topics), sub.endpoint)
        return sub, secret

    async def update(self, name: str, changes: dict) -> PushSubscription:
        """Change user fields of a subscription (not its name); the new subscription."""
        sub = self.get(name).changed(changes)
        self.check(sub)
        await self._store.alter_security(KIND, {sub.name: sub.to_record()}, [])
        logger.info("push subscription %s changed: %s", name, ", ".join(sorted(changes)))
        return sub

    async def set_paused(self, name: str, paused: bool) -> PushSubscription:
        sub = self.get(name)
        if sub.paused == paused:
            return sub
        sub = sub.changed({"paused": paused})
        await self._store.alter_security(KIND, {sub.name: sub.to_record()}, [])
        logger.info("push subscription %s %s", name, "paused" if paused else "resumed")
        return sub

    async def delete(self, name: str) -> None:
        self.get(name)
        await self._store.alter_security(KIND, {}, [name])
        logger.info("push subscription %s deleted", name)

    # --- checks ------------------------------------------------------------------------------
    def check(self, sub: PushSubscription) -> None:
        """What a subscription must satisfy on this cluster (SubscriptionError naming the field)."""
        topics = self._topics()
        for topic in sub.topics:
            if topic not in topics:
                raise SubscriptionError("topics", f"topic {topic!r} does not exist")
            if is_internal(topic):
                raise SubscriptionError("topics", f"{topic} is internal")
        allowed = allowed_hosts(self._config)
        if not host_allowed(sub.endpoint_host, allowed):
            raise SubscriptionError("endpoint", f"host {sub.endpoint_host!r} is not in push.allowed.hosts "
                                                f"({', '.join(allowed)})")
        if sub.dead_letter_topic is not None:
            record = topics.get(sub.dead_letter_topic)
            if record is None:
                raise SubscriptionError("dead_letter_topic", f"topic {sub.dead_letter_topic!r} does not exist")
            if str(record.configs.get(DLQ_OPT_IN, "false")).lower() != "true":
                raise SubscriptionError("dead_letter_topic", f"topic {sub.dead_letter_topic!r} does not allow it "
                                                             f"(its config {DLQ_OPT_IN} is not true)")
        lock_ms = sub.ack_deadline_ms + sub.linger_ms + LOCK_MARGIN_MS
        longest = self._config["group.share.max.record.lock.duration.ms"]
        if lock_ms > longest:
            raise SubscriptionError("ack_deadline_ms", f"at most {longest - sub.linger_ms - LOCK_MARGIN_MS}: the record "
                                                       f"lock (at most group.share.max.record.lock.duration.ms = {longest}) "
                                                       f"must outlast the deadline, linger_ms and {LOCK_MARGIN_MS} ms")
        try:
            validate_group_configs(self._derived_configs(sub), self._config)
        except KafkaError as e:
            field = next((f for name, f in _FIELD_OF_CONFIG.items() if name in str(e.message)), "body")
            raise SubscriptionError(field, str(e.message)) from None

    # --- the share group's configs -------------------------------------------------------------
    def group_configs(self, group_id: str) -> Mapping[str, str] | None:
        """The share group configs of a subscription's group (None: not a subscription's group)."""
        sub = self.by_group(group_id)
        if sub is None:
            return None
        return {**self._store.group_configs.get(group_id, {}), **self._derived_configs(sub)}

    def _derived_configs(self, sub: PushSubscription) -> dict[str, str]:
        low = self._config["group.share.min.record.lock.duration.ms"]
        high = self._config["group.share.max.record.lock.duration.ms"]
        lock_ms = min(high, max(low, sub.ack_deadline_ms + sub.linger_ms + LOCK_MARGIN_MS))
        configs = {
            "share.record.lock.duration.ms": str(lock_ms),
            "share.delivery.count.limit": str(sub.delivery_limit),
            "errors.deadletterqueue.topic.name": sub.dead_letter_topic or "",
            "errors.deadletterqueue.copy.record.enable": "true",
            "tidelog.retry.backoff.initial.ms": str(sub.backoff_initial_ms),
            "tidelog.retry.backoff.multiplier": repr(float(sub.backoff_multiplier)),
            "tidelog.retry.backoff.max.ms": str(sub.backoff_max_ms),
        }
        return configs

    # --- status and change notification -------------------------------------------------------
    def status(self, name: str) -> dict:
        """The subscription's delivery on this broker (docs/push.md, "Status")."""
        sub = self.get(name)
        if self.engine is None:
            return idle_status(sub)
        return self.engine.status(sub)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` after any change of the subscriptions (here or on another broker)."""
        self._listeners.append(listener)

    def _on_store_change(self, kind: str, key: object) -> None:
        if kind == "security" and key == KIND:
            for listener in self._listeners:
                listener()


def idle_status(sub: PushSubscription) -> dict:
    """The status of a subscription nothing delivers here (yet)."""
    return {"name": sub.name, "state": "paused" if sub.paused else "idle", "last_error": None, "last_error_ms": None,
            "concurrency": 0, "in_flight": 0, "delivered": 0, "acknowledged": 0, "failed_by_status": {}, "retries": 0,
            "dead_lettered": 0, "backlog": 0, "latency_p50_ms": None, "latency_p99_ms": None, "partitions": []}


_FIELD_OF_CONFIG = {
    "share.record.lock.duration.ms": "ack_deadline_ms",
    "share.delivery.count.limit": "delivery_limit",
    "errors.deadletterqueue.topic.name": "dead_letter_topic",
    "tidelog.retry.backoff.initial.ms": "backoff_initial_ms",
    "tidelog.retry.backoff.multiplier": "backoff_multiplier",
    "tidelog.retry.backoff.max.ms": "backoff_max_ms",
}
