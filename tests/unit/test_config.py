"""Broker settings: defaults < TOML file < TIDELOG_* environment < --set flags; Kafka's names."""

from __future__ import annotations

import pytest

from tidelog.config import BrokerConfig, ConfigError, validate_topic_configs
from tidelog.protocol.errors import ErrorCode, KafkaError


def test_defaults_are_kafkas():
    config = BrokerConfig.load(env={})
    assert config["num.partitions"] == 1
    assert config["log.retention.ms"] == 14 * 24 * 3600 * 1000
    assert config["message.max.bytes"] == 1048588
    assert config["auto.create.topics.enable"] is True
    assert config.sources == {}


def test_precedence_file_then_env_then_flags(tmp_path):
    toml = tmp_path / "broker.toml"
    toml.write_text('"num.partitions" = 3\n"log.retention.ms" = 1000\n[log.segment]\nbytes = 5000\n')
    config = BrokerConfig.load(toml, env={"TIDELOG_NUM_PARTITIONS": "4", "TIDELOG_LOG_ROLL_MS": "60000", "HOME": "/x"},
                               overrides={"num.partitions": "5"})
    assert config["num.partitions"] == 5 and config.sources["num.partitions"] == "flag"
    assert config["log.retention.ms"] == 1000 and config.sources["log.retention.ms"] == "file"
    assert config["log.segment.bytes"] == 5000  # TOML tables become dotted names
    assert config["log.roll.ms"] == 60000 and config.sources["log.roll.ms"] == "env"


@pytest.mark.parametrize("overrides, message", [
    ({"num.partitions": "zero"}, "integer"),
    ({"num.partitions": "0"}, "minimum"),
    ({"log.durability.profile": "fast"}, "not one of"),
    ({"no.such.setting": "1"}, "unknown broker setting"),
])
def test_bad_settings_are_refused_with_a_reason(overrides, message):
    with pytest.raises(ConfigError, match=message):
        BrokerConfig.load(env={}, overrides=overrides)


def test_topic_values_fall_back_to_broker_defaults():
    config = BrokerConfig.load(env={}, overrides={"log.retention.ms": "1234"})
    assert config.topic_value({}, "retention.ms") == 1234
    assert config.topic_value({"retention.ms": "99"}, "retention.ms") == 99


def test_topic_config_validation_uses_kafka_error_codes():
    assert validate_topic_configs({"retention.ms": "100", "cleanup.policy": "compact"}) == {
        "retention.ms": "100", "cleanup.policy": "compact"}
    for bad in ({"retention.ms": "soon"}, {"no.such.config": "1"}, {"retention.ms": None}):
        with pytest.raises(KafkaError) as info:
            validate_topic_configs(bad)
        assert info.value.error_code == ErrorCode.invalid_config
