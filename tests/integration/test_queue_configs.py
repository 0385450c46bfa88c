"""Issue 14's tidelog.* topic configs through real admin clients: set at creation and altered,
shown by DescribeConfigs (confluent-kafka and kafka-python), bad values refused with INVALID_CONFIG."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType

TIMEOUT_S = 15


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


def test_queue_topic_configs_created_altered_and_described(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = {"tidelog.priority.enable": "true", "tidelog.priority.aging.ms": "30000", "tidelog.ttl.ms": "600000"}
    admin.create_topics([NewTopic("jobs", 1, 1, config=configs)], request_timeout=TIMEOUT_S)["jobs"].result(TIMEOUT_S)
    resource = ConfigResource(ResourceType.TOPIC, "jobs")
    described = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    for name, value in configs.items():
        assert (described[name].value, described[name].source) == (value, ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert (described["tidelog.delay.ms"].value, described["tidelog.delay.ms"].source) == \
        ("0", ConfigSource.DEFAULT_CONFIG.value)

    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        kp.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, "jobs", configs={"tidelog.delay.ms": "5000"})])
        result = kp.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "jobs")], config_filter="all")
        entries = result["topic"]["jobs"]
        assert (entries["tidelog.delay.ms"]["value"], entries["tidelog.delay.ms"]["config_source"]) == \
            ("5000", "DYNAMIC_TOPIC_CONFIG")
        assert entries["tidelog.priority.header"]["value"] == "priority"
        assert entries["tidelog.priority.enable"]["config_type"] == "BOOLEAN"
    finally:
        kp.close()


def test_bad_queue_topic_configs_are_invalid_config(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for name, value in [("tidelog.priority.default", "high"), ("tidelog.ttl.ms", "0"),
                        ("tidelog.priority.lookahead.records", "0")]:
        future = admin.create_topics([NewTopic("refused", 1, 1, config={name: value})],
                                     request_timeout=TIMEOUT_S)["refused"]
        try:
            future.result(TIMEOUT_S)
            raise AssertionError(f"{name}={value} was accepted")
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.INVALID_CONFIG, (name, e)
            assert name in e.args[0].str()


def test_share_groups_alter_config_sets_and_removes_group_configs(broker):
    from tests.integration.test_cli import ERROR, USAGE, ok, tidelog

    expression = '"type" in headers && headers["type"] == b"order"'
    ok("share-groups", "alter-config", "workers", "--config", "tidelog.retry.backoff.initial.ms=500",
       "--config", f"tidelog.filter={expression}", broker=broker)
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        def described():
            return kp.describe_configs([KPConfigResource(ConfigResourceType.GROUP, "workers")],
                                       config_filter="all")["group"]["workers"]
        assert described()["tidelog.filter"]["value"] == expression
        assert described()["tidelog.retry.backoff.initial.ms"]["value"] == "500"
        refused = tidelog("share-groups", "alter-config", "workers", "--config", "tidelog.filter=key ==", broker=broker)
        assert refused.returncode == ERROR and b"does not compile" in refused.stderr and b"Traceback" not in refused.stderr
        assert described()["tidelog.filter"]["value"] == expression  # unchanged
        ok("share-groups", "alter-config", "workers", "--delete-config", "tidelog.filter", broker=broker)
        assert described()["tidelog.filter"]["value"] == ""
    finally:
        kp.close()
    assert tidelog("share-groups", "alter-config", "workers", broker=broker).returncode == USAGE
