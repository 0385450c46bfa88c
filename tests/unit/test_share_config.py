"""Share group settings: the group.share.* broker settings and the share.* / errors.deadletterqueue.*
group configs, with Kafka's defaults, ranges and cross-checks; the share error codes."""

from __future__ import annotations

import pytest

from tidelog.config import (
    BrokerConfig,
    ConfigError,
    group_config_def,
    parse_share_auto_offset_reset,
    validate_group_configs,
)
from tidelog.protocol.errors import ErrorCode, KafkaError


def test_share_error_codes_are_kafkas():
    assert ErrorCode.invalid_record_state.value == 121
    assert ErrorCode.share_session_not_found.value == 122
    assert ErrorCode.invalid_share_session_epoch.value == 123
    assert ErrorCode.fenced_state_epoch.value == 124
    assert ErrorCode.share_session_limit_reached.value == 133


def test_broker_defaults_are_kafka_4_2s():
    config = BrokerConfig.load(env={})
    assert config["group.share.record.lock.duration.ms"] == 30000
    assert config["group.share.delivery.count.limit"] == 5
    assert config["group.share.partition.max.record.locks"] == 2000
    assert config["group.share.max.share.sessions"] == 2000
    assert config["group.share.session.timeout.ms"] == 45000
    assert config["group.share.heartbeat.interval.ms"] == 5000
    assert config["group.share.max.size"] == 200
    assert config["share.coordinator.snapshot.update.records.per.snapshot"] == 500


@pytest.mark.parametrize("overrides, message", [
    ({"group.share.delivery.count.limit": "11"}, "above the maximum 10"),
    ({"group.share.partition.max.record.locks": "99"}, "below the minimum 100"),
    ({"group.share.record.lock.duration.ms": "2000"}, "group.share.min.record.lock.duration.ms"),
    ({"group.share.max.size": "3000"}, "above the maximum 1000"),
    ({"group.share.heartbeat.interval.ms": "45000", "group.share.max.heartbeat.interval.ms": "50000"},
     "must be less than"),
])
def test_bad_share_settings_are_refused_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError, match=message):
        BrokerConfig.load(env={}, overrides=overrides)


def test_cross_check_names_the_source():
    with pytest.raises(ConfigError, match=r"group.share.record.lock.duration.ms \(from env\)"):
        BrokerConfig.load(env={"TIDELOG_GROUP_SHARE_RECORD_LOCK_DURATION_MS": "1000"})


def test_lowered_minimums_allow_fast_tests():
    config = BrokerConfig.load(env={}, overrides={
        "group.share.min.record.lock.duration.ms": "1000", "group.share.record.lock.duration.ms": "1000"})
    assert config["group.share.record.lock.duration.ms"] == 1000


def test_group_values_fall_back_to_broker_settings():
    config = BrokerConfig.load(env={}, overrides={"group.share.delivery.count.limit": "3"})
    assert config.group_value({}, "share.delivery.count.limit") == 3
    assert config.group_value({"share.delivery.count.limit": "7"}, "share.delivery.count.limit") == 7
    assert config.group_value({}, "share.auto.offset.reset") == "latest"
    assert config.group_value({}, "share.isolation.level") == "read_uncommitted"
    assert config.group_value({}, "errors.deadletterqueue.topic.name") == ""
    assert config.group_value({}, "errors.deadletterqueue.copy.record.enable") is False
    assert group_config_def("share.record.lock.duration.ms").default == 30000


def test_group_config_validation():
    config = BrokerConfig.load(env={})
    assert validate_group_configs({"share.delivery.count.limit": "4", "share.auto.offset.reset": "by_duration:PT1H",
                                   "errors.deadletterqueue.copy.record.enable": "TRUE",
                                   "errors.deadletterqueue.topic.name": "dlq.orders"}, config) == {
        "share.delivery.count.limit": "4", "share.auto.offset.reset": "by_duration:PT1H",
        "errors.deadletterqueue.copy.record.enable": "true", "errors.deadletterqueue.topic.name": "dlq.orders"}
    assert validate_group_configs({"errors.deadletterqueue.topic.name": ""}, config) == {
        "errors.deadletterqueue.topic.name": ""}
    for bad, reason in (
        ({"share.delivery.count.limit": "11"}, "maximum"),
        ({"share.record.lock.duration.ms": "1000"}, "group.share.min.record.lock.duration.ms"),
        ({"share.session.timeout.ms": "90000"}, "group.share.max.session.timeout.ms"),
        ({"share.isolation.level": "read_dirty"}, "not one of"),
        ({"share.auto.offset.reset": "by_duration:-PT1H"}, "ISO 8601"),
        ({"share.auto.offset.reset": "soonest"}, "by_duration"),
        ({"consumer.session.timeout.ms": "45000"}, "Unknown group config"),
        ({"share.delivery.count.limit": None}, "Null value"),
        ({"errors.deadletterqueue.topic.name": "orders"}, "must start with 'dlq.'"),
    ):
        with pytest.raises(KafkaError, match=reason) as info:
            validate_group_configs(bad, config)
        assert info.value.error_code == ErrorCode.invalid_config


@pytest.mark.parametrize("text, expected", [
    ("latest", ("latest", 0)),
    ("EARLIEST", ("earliest", 0)),
    ("by_duration:PT0S", ("by_duration", 0)),
    ("by_duration:P1D", ("by_duration", 86_400_000)),
    ("by_duration:P1DT2H3M4.5S", ("by_duration", 93_784_500)),
    ("by_duration:PT90M", ("by_duration", 5_400_000)),
])
def test_auto_offset_reset_strategies(text, expected):
    assert parse_share_auto_offset_reset(text) == expected


@pytest.mark.parametrize("text", ["by_duration:", "by_duration:P", "by_duration:PT", "by_duration:1H", "by_duration:P1DT",
                                  "by_duration:-P1D", "none"])
def test_bad_auto_offset_reset_strategies(text):
    with pytest.raises(ConfigError):
        parse_share_auto_offset_reset(text)
