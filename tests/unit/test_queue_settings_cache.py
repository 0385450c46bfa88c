"""QueueFeatures.settings_for keeps a share-partition's settings while its topic's and group's
overrides stay the same, and makes them again as soon as either changes (in place or replaced),
or after the share-partition was forgotten."""

from __future__ import annotations

import uuid

from tidelog.config import BrokerConfig
from tidelog.queues.queue_features import QueueFeatures
from tidelog.queues.state_records import ShareStateKey

KEY = ShareStateKey("g", uuid.UUID(int=7), 0)
OTHER = ShareStateKey("g", uuid.UUID(int=7), 1)


def make():
    configs = {"topic": {}, "group": {}}
    features = QueueFeatures(BrokerConfig.load(env={}), lambda key: (configs["topic"], configs["group"]))
    return features, configs


def test_unchanged_overrides_give_the_same_settings_object():
    features, _ = make()
    first = features.settings_for(KEY)
    assert features.settings_for(KEY) is first
    assert first.priority_enabled is False and first.matches is None


def test_a_topic_config_changed_in_place_is_seen_at_the_next_call():
    features, configs = make()
    assert features.settings_for(KEY).priority_enabled is False
    configs["topic"]["tidelog.priority.enable"] = "true"  # the same dict object, mutated
    assert features.settings_for(KEY).priority_enabled is True
    configs["topic"]["tidelog.delay.ms"] = "250"
    settings = features.settings_for(KEY)
    assert settings.delay_ms == 250 and settings.priority_enabled is True
    del configs["topic"]["tidelog.priority.enable"]
    assert features.settings_for(KEY).priority_enabled is False


def test_a_group_filter_set_replaced_or_removed_is_seen_at_the_next_call():
    features, configs = make()
    assert features.settings_for(KEY).matches is None
    configs["group"] = {"tidelog.filter": 'headers["type"] == b"order"'}  # a new dict
    settings = features.settings_for(KEY)
    assert settings.matches is not None and settings.filter_source == 'headers["type"] == b"order"'
    configs["group"]["tidelog.filter"] = 'headers["type"] == b"refund"'
    assert features.settings_for(KEY).filter_source == 'headers["type"] == b"refund"'
    configs["group"].clear()
    assert features.settings_for(KEY).matches is None


def test_each_share_partition_has_its_own_entry_and_forget_drops_it():
    features, configs = make()
    first = features.settings_for(KEY)
    other = features.settings_for(OTHER)
    assert features.settings_for(KEY) is first and features.settings_for(OTHER) is other
    features.forget(KEY)
    again = features.settings_for(KEY)
    assert again is not first and again == first
    assert features.settings_for(OTHER) is other
