"""Issue 14's queue-mode configs (tidelog.*): topic configs for priority, delay, TTL and the delay
topic; group configs for the retry back-off and the CEL filter. Names, defaults, ranges, and the
filter refused with the CEL compiler's message."""

from __future__ import annotations

import pytest

from tidelog.config import (GROUP_CONFIG_DEFAULTS, QUEUE_GROUP_CONFIGS, QUEUE_TOPIC_CONFIGS, TOPIC_CONFIG_NAMES, BrokerConfig,
                            validate_group_configs, validate_topic_configs)
from tidelog.protocol.errors import ErrorCode, KafkaError

TOPIC_DEFAULTS = {
    "tidelog.priority.enable": False, "tidelog.priority.header": "priority", "tidelog.priority.default": 0,
    "tidelog.priority.lookahead.records": 1000, "tidelog.priority.aging.ms": 60000, "tidelog.delay.ms": 0,
    "tidelog.ttl.ms": -1, "tidelog.delay.target.topic": "",
}
GROUP_DEFAULTS = {
    "tidelog.retry.backoff.initial.ms": 0, "tidelog.retry.backoff.multiplier": 2.0,
    "tidelog.retry.backoff.max.ms": 300000, "tidelog.filter": "",
}


@pytest.fixture(scope="module")
def config() -> BrokerConfig:
    return BrokerConfig.load(env={})


def test_topic_configs_are_known_with_their_defaults(config):
    assert set(QUEUE_TOPIC_CONFIGS) == set(TOPIC_DEFAULTS)
    assert set(TOPIC_DEFAULTS) <= set(TOPIC_CONFIG_NAMES)  # so DescribeConfigs lists them
    assert {name: config.topic_value({}, name) for name in TOPIC_DEFAULTS} == TOPIC_DEFAULTS


def test_group_configs_are_known_with_their_defaults(config):
    assert set(QUEUE_GROUP_CONFIGS) == set(GROUP_DEFAULTS)
    assert set(GROUP_DEFAULTS) <= set(GROUP_CONFIG_DEFAULTS)
    assert {name: config.group_value({}, name) for name in GROUP_DEFAULTS} == GROUP_DEFAULTS


@pytest.mark.parametrize("name,refused,accepted", [
    ("tidelog.priority.enable", "maybe", "true"), ("tidelog.priority.default", "10", "9"),
    ("tidelog.priority.default", "-1", "0"), ("tidelog.priority.lookahead.records", "0", "1"),
    ("tidelog.priority.lookahead.records", "10001", "10000"), ("tidelog.priority.aging.ms", "-1", "0"),
    ("tidelog.delay.ms", "-5", "0"), ("tidelog.delay.ms", "soon", "86400000"), ("tidelog.ttl.ms", "0", "-1"),
    ("tidelog.ttl.ms", "-2", "1"),
])
def test_topic_config_ranges(name, refused, accepted):
    with pytest.raises(KafkaError) as info:
        validate_topic_configs({name: refused})
    assert info.value.error_code == ErrorCode.invalid_config and name in str(info.value)
    assert validate_topic_configs({name: accepted}) == {name: accepted}


@pytest.mark.parametrize("name,refused,accepted", [
    ("tidelog.retry.backoff.initial.ms", "-1", "0"), ("tidelog.retry.backoff.initial.ms", "86400001", "86400000"),
    ("tidelog.retry.backoff.multiplier", "0.99", "1.0"), ("tidelog.retry.backoff.multiplier", "x", "3.5"),
    ("tidelog.retry.backoff.max.ms", "-1", "0"),
])
def test_group_config_ranges(config, name, refused, accepted):
    with pytest.raises(KafkaError) as info:
        validate_group_configs({name: refused}, config)
    assert info.value.error_code == ErrorCode.invalid_config and name in str(info.value)
    assert validate_group_configs({name: accepted}, config) == {name: accepted}


def test_a_filter_that_compiles_is_kept_as_written(config):
    expression = 'headers["type"] == b"order" && timestamp > 0'
    assert validate_group_configs({"tidelog.filter": expression}, config) == {"tidelog.filter": expression}
    assert validate_group_configs({"tidelog.filter": ""}, config) == {"tidelog.filter": ""}


def test_a_filter_that_does_not_compile_is_invalid_config_with_the_compilers_message(config):
    with pytest.raises(KafkaError) as info:
        validate_group_configs({"tidelog.filter": 'headers["type"] == '}, config)
    assert info.value.error_code == ErrorCode.invalid_config
    message = str(info.value)
    assert "tidelog.filter" in message and "does not compile" in message and "Syntax error" in message
