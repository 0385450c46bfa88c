"""Push subscriptions (issue 15): parsing with errors that name the field, the JSON kept in the
metadata store, and the registry over the embedded store (create, update, pause, delete, the
allow-list, the share group's derived configs, change notification)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tidelog.cluster.metadata import EmbeddedMetadataStore, TopicRecord
from tidelog.config import BrokerConfig
from tidelog.push.registry import PushSubscriptions, host_allowed
from tidelog.push.subscription import (
    PushSubscription,
    SubscriptionError,
    SubscriptionExists,
    SubscriptionNotFound,
)

BASE = {"name": "orders-hook", "topics": ["orders"], "endpoint": "https://hooks.example.com/in"}


def test_parse_defaults_and_fields():
    sub = PushSubscription.parse(BASE)
    assert sub.topics == ("orders",)
    assert (sub.batch_size, sub.linger_ms, sub.max_concurrency, sub.ack_deadline_ms) == (100, 50, 8, 30000)
    assert (sub.backoff_initial_ms, sub.backoff_multiplier, sub.backoff_max_ms, sub.delivery_limit) == (1000, 2.0, 60000, 5)
    assert sub.payload_format == "batch" and sub.dead_letter_topic is None and not sub.paused
    assert sub.group_id == "push.orders-hook"
    assert sub.endpoint_host == "hooks.example.com"


@pytest.mark.parametrize("change, field", [
    ({"name": "bad name"}, "name"),
    ({"name": ""}, "name"),
    ({"topics": []}, "topics"),
    ({"topics": ["ok", "no/slash"]}, "topics"),
    ({"endpoint": "ftp://x/"}, "endpoint"),
    ({"endpoint": "https://user:pw@x/"}, "endpoint"),
    ({"endpoint": "http:///nohost"}, "endpoint"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1001}, "batch_size"),
    ({"batch_size": 1.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"linger_ms": -1}, "linger_ms"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"ack_deadline_ms": "30s"}, "ack_deadline_ms"),
    ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
    ({"backoff_initial_ms": 5000, "backoff_max_ms": 1000}, "backoff_max_ms"),
    ({"delivery_limit": 1}, "delivery_limit"),
    ({"payload_format": "xml"}, "payload_format"),
    ({"bearer_token": "has space"}, "bearer_token"),
    ({"paused": "yes"}, "paused"),
    ({"colour": "blue"}, "colour"),
])
def test_parse_errors_name_the_field(change, field):
    with pytest.raises(SubscriptionError) as caught:
        PushSubscription.parse({**BASE, **change})
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ": ")


def test_json_round_trip_keeps_secrets_in_the_record_only():
    sub = PushSubscription.parse({**BASE, "bearer_token": "tok", "dead_letter_topic": "dlq.orders"},
                                 created_ms=123, secret="s3")
    shown = sub.to_json()
    assert "secret" not in shown and shown["bearer_token"] == "***" and shown["created_ms"] == 123
    again = PushSubscription.from_json(sub.to_record())
    assert again == sub and again.secret == "s3" and again.bearer_token == "tok"
    assert PushSubscription.from_json(shown).bearer_token is None


def test_changed_refuses_a_new_name_and_validates():
    sub = PushSubscription.parse(BASE, created_ms=5, secret="k")
    changed = sub.changed({"batch_size": 10, "paused": True})
    assert (changed.batch_size, changed.paused, changed.created_ms, changed.secret) == (10, True, 5, "k")
    with pytest.raises(SubscriptionError, match="name"):
        sub.changed({"name": "other"})
    with pytest.raises(SubscriptionError) as caught:
        sub.changed({"linger_ms": 10**9})
    assert caught.value.field == "linger_ms"


def test_a_change_sending_back_the_masked_token_keeps_the_token():
    """A client that PATCHes back what GET showed (bearer_token "***") changes nothing of the token;
    a new token or null replaces it."""
    sub = PushSubscription.parse({**BASE, "bearer_token": "tok"}, created_ms=5, secret="k")
    shown = sub.to_json()
    assert shown["bearer_token"] == "***"
    sent_back = {name: value for name, value in shown.items() if name not in ("created_ms", "share_group")}
    assert sub.changed({**sent_back, "batch_size": 10}).bearer_token == "tok"
    assert sub.changed({"bearer_token": "new"}).bearer_token == "new"
    assert sub.changed({"bearer_token": None}).bearer_token is None


def test_backoff_grows_to_its_max():
    sub = PushSubscription.parse({**BASE, "backoff_initial_ms": 100, "backoff_multiplier": 3, "backoff_max_ms": 1000})
    assert [sub.backoff_ms(n) for n in (1, 2, 3, 4, 100)] == [100, 300, 900, 1000, 1000]


@pytest.mark.parametrize("host, allowed, ok", [
    ("anything.test", [], True),
    ("hooks.example.com", ["hooks.example.com"], True),
    ("HOOKS.example.com", ["hooks.example.com"], True),
    ("evil.com", ["hooks.example.com"], False),
    ("a.b.example.com", ["*.example.com"], True),
    ("example.com", ["*.example.com"], False),
    ("notexample.com", ["*.example.com"], False),
    ("10.1.2.3", ["10.0.0.0/8"], True),
    ("127.0.0.1", ["10.0.0.0/8"], False),
    ("127.0.0.1", ["127.0.0.1"], True),
    ("::1", ["::1"], True),
    ("169.254.169.254", ["*.example.com", "10.0.0.0/8"], False),
])
def test_allowed_hosts(host, allowed, ok):
    assert host_allowed(host, allowed) is ok


async def _registry(tmp_path, **settings):
    store = EmbeddedMetadataStore(tmp_path)
    store.load()
    await store.create_topic(TopicRecord("orders", uuid.uuid4(), 3))
    await store.create_topic(TopicRecord("dlq.orders", uuid.uuid4(), 1,
                                         configs={"errors.deadletterqueue.group.enable": "true"}))
    await store.create_topic(TopicRecord("dlq.closed", uuid.uuid4(), 1))
    config = BrokerConfig.load(env={}, overrides={k.replace("_", "."): v for k, v in settings.items()})
    return store, PushSubscriptions(store, config, lambda: store.topics, clock_ms=lambda: 1000)


def test_registry_create_update_pause_delete_persisted(tmp_path):
    async def main():
        store, registry = await _registry(tmp_path)
        changes = []
        registry.add_listener(lambda: changes.append(1))
        sub, secret = await registry.create(PushSubscription.parse({**BASE, "dead_letter_topic": "dlq.orders"}))
        assert len(secret) == 64 and sub.secret == secret and sub.created_ms == 1000
        with pytest.raises(SubscriptionExists):
            await registry.create(PushSubscription.parse(BASE))
        await registry.update("orders-hook", {"batch_size": 7})
        await registry.set_paused("orders-hook", True)
        assert len(changes) == 3

        reopened = EmbeddedMetadataStore(tmp_path)  # what a restart reads
        reopened.load()
        again = PushSubscriptions(reopened, registry._config, lambda: store.topics)
        [stored] = again.list()
        assert (stored.batch_size, stored.paused, stored.secret) == (7, True, secret)
        assert registry.status("orders-hook")["state"] == "paused"

        configs = registry.group_configs("push.orders-hook")
        assert configs["share.delivery.count.limit"] == "5"
        assert configs["errors.deadletterqueue.topic.name"] == "dlq.orders"
        assert int(configs["share.record.lock.duration.ms"]) >= 30000 + 50
        assert configs["tidelog.retry.backoff.initial.ms"] == "1000"
        assert registry.group_configs("push.nope") is None and registry.group_configs("orders-hook") is None

        await registry.delete("orders-hook")
        assert registry.list() == []
        with pytest.raises(SubscriptionNotFound):
            registry.get("orders-hook")
        with pytest.raises(SubscriptionNotFound):
            await registry.delete("orders-hook")

    asyncio.run(main())


@pytest.mark.parametrize("change, field", [
    ({"topics": ["missing"]}, "topics"),
    ({"topics": ["__consumer_offsets"]}, "topics"),
    ({"endpoint": "http://169.254.169.254/latest"}, "endpoint"),
    ({"dead_letter_topic": "dlq.missing"}, "dead_letter_topic"),
    ({"dead_letter_topic": "dlq.closed"}, "dead_letter_topic"),
    ({"dead_letter_topic": "orders"}, "dead_letter_topic"),  # not under errors.deadletterqueue.topic.name.prefix
    ({"ack_deadline_ms": 600000}, "ack_deadline_ms"),  # the lock cannot outlast it
])
def test_registry_checks_name_the_field(tmp_path, change, field):
    async def main():
        store, registry = await _registry(tmp_path, push_allowed_hosts="hooks.example.com,*.internal")
        await store.create_topic(TopicRecord("__consumer_offsets", uuid.uuid4(), 1))
        store.topics["orders"].configs["errors.deadletterqueue.group.enable"] = "true"
        with pytest.raises(SubscriptionError) as caught:
            await registry.create(PushSubscription.parse({**BASE, **change}))
        assert caught.value.field == field, caught.value
        assert registry.list() == []

    asyncio.run(main())
