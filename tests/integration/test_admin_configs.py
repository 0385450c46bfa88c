"""Topic and broker configs through real admin clients: describe (sources, defaults, synonyms,
documentation), alter (whole set), incremental alter (SET/DELETE/APPEND/SUBTRACT), validation
errors, validate_only, and persistence across a restart (confluent-kafka and kafka-python)."""

from __future__ import annotations

import kafka.errors as kerrors
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic,
                                   ResourceType)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType

TIMEOUT_S = 15
TWO_WEEKS_MS = str(14 * 24 * 3600 * 1000)


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


def confluent_admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kp_admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def create(admin: AdminClient, name: str, config: dict | None = None, partitions: int = 1) -> None:
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], request_timeout=TIMEOUT_S)[name].result(TIMEOUT_S)


def describe(admin: AdminClient, resource: ConfigResource, **options) -> dict[str, ConfigEntry]:
    return admin.describe_configs([resource], request_timeout=TIMEOUT_S, **options)[resource].result(TIMEOUT_S)


def topic(name: str) -> ConfigResource:
    return ConfigResource(ResourceType.TOPIC, name)


def error_code(future) -> int | None:
    try:
        future.result(TIMEOUT_S)
        return None
    except KafkaException as e:
        return e.args[0].code()


# --- describe -----------------------------------------------------------------------------------

def test_describe_topic_defaults_overrides_and_synonyms(broker):
    admin = confluent_admin(broker)
    create(admin, "described", {"retention.ms": "60000"})
    configs = describe(admin, topic("described"))  # librdkafka always asks for synonyms
    retention = configs["retention.ms"]
    assert (retention.value, retention.source) == ("60000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert not retention.is_read_only and not retention.is_sensitive
    synonyms = [(s.name, s.value, s.source) for s in retention.synonyms.values()]
    assert synonyms == [("retention.ms", "60000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
                        ("log.retention.ms", TWO_WEEKS_MS, ConfigSource.DEFAULT_CONFIG.value)]
    segment = configs["segment.bytes"]
    assert (segment.value, segment.source) == (str(1 << 30), ConfigSource.DEFAULT_CONFIG.value)
    assert configs["cleanup.policy"].value == "delete"
    assert {"max.message.bytes", "min.insync.replicas", "compression.type", "message.timestamp.type"} <= set(configs)


def test_describe_topic_static_broker_default(broker_factory):
    broker = broker_factory({"log.retention.ms": "7200000"})
    admin = confluent_admin(broker)
    create(admin, "static-default")
    retention = describe(admin, topic("static-default"))["retention.ms"]
    assert (retention.value, retention.source) == ("7200000", ConfigSource.STATIC_BROKER_CONFIG.value)
    # Both levels of log.retention.ms are synonyms (confluent-kafka keys synonyms by name, so
    # read them with kafka-python).
    kp = kp_admin(broker)
    try:
        result = kp.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "static-default")], include_synonyms=True,
                                     config_filter="all")
    finally:
        kp.close()
    synonyms = result["topic"]["static-default"]["retention.ms"]["synonyms"]
    assert [(s["name"], s["value"], s["source"]) for s in synonyms] == [
        ("log.retention.ms", "7200000", "STATIC_BROKER_CONFIG"),
        ("log.retention.ms", TWO_WEEKS_MS, "DEFAULT_CONFIG"),
    ]


def test_describe_kafka_python_filters_documentation_and_types(broker):
    admin = kp_admin(broker)
    try:
        admin.create_topics({"kp-described": {"num_partitions": 1, "configs": {"cleanup.policy": "compact"}}})
        result = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp-described")], include_synonyms=True,
                                        config_filter="all")
        configs = result["topic"]["kp-described"]
        assert configs["cleanup.policy"]["value"] == "compact"
        assert configs["cleanup.policy"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert configs["cleanup.policy"]["config_type"] == "LIST"
        assert configs["retention.ms"]["config_type"] == "LONG"
        assert configs["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        assert [s["name"] for s in configs["retention.ms"]["synonyms"]] == ["log.retention.ms"]
        # Default filter: only modified configs.
        modified = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp-described")])
        assert set(modified["topic"]["kp-described"]) == {"cleanup.policy"}
        # Named keys only.
        named = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp-described",
                                                         configs={"retention.ms": None, "no.such": None})],
                                       config_filter="all")
        assert set(named["topic"]["kp-described"]) == {"retention.ms"}
    finally:
        admin.close()


def test_describe_errors(broker):
    admin = confluent_admin(broker)
    futures = admin.describe_configs([topic("ghost")], request_timeout=TIMEOUT_S)
    assert error_code(futures[topic("ghost")]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Sent by hand (clients route broker resources by id and refuse ""): another broker's id, a
    # logger resource without a broker id, an unsupported resource type (CLIENT_METRICS), this node's
    # loggers, the cluster-wide broker defaults (GROUP is served: share group configs).
    from kafka.protocol.admin import DescribeConfigsRequest

    kp = kp_admin(broker)
    try:
        request = DescribeConfigsRequest(resources=[(4, "7", None), (8, "", None), (16, "metrics", None), (8, "1", None),
                                                    (4, "", None)],
                                         include_synonyms=False)
        response = kp._manager.run(kp._manager.send, request)
    finally:
        kp.close()
    errors = [(r.resource_type, r.error_code, r.error_message) for r in response.results]
    assert errors[:3] == [
        (4, kerrors.InvalidRequestError.errno, "Unexpected broker id, expected 1 or empty string, but received 7"),
        (8, kerrors.InvalidRequestError.errno, "Broker id must not be empty"),
        (16, kerrors.InvalidRequestError.errno, "Unsupported resource type: 16"),
    ]
    loggers = {c.name: c.value for c in response.results[3].configs}
    assert response.results[3].error_code == 0 and "root" in loggers
    # The empty broker name is the cluster-wide dynamic defaults: Tidelog has none.
    assert (response.results[4].error_code, list(response.results[4].configs)) == (0, [])


def test_describe_broker(broker_factory):
    broker = broker_factory({"num.partitions": "3"})
    admin = confluent_admin(broker)
    configs = describe(admin, ConfigResource(ResourceType.BROKER, "1"))
    partitions = configs["num.partitions"]
    assert (partitions.value, partitions.source, partitions.is_read_only) == ("3", ConfigSource.STATIC_BROKER_CONFIG.value, True)
    assert configs["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["log.retention.check.interval.ms"].value == "1000"  # the test fixture's --set
    kp = kp_admin(broker)
    try:
        result = kp.describe_configs([KPConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
        assert result["broker"]["1"]["num.partitions"]["value"] == "3"
        assert result["broker"]["1"]["num.partitions"]["config_source"] == "STATIC_BROKER_CONFIG"
    finally:
        kp.close()


# --- alter -------------------------------------------------------------------------------------

def test_legacy_alter_replaces_the_whole_set(broker):
    admin = kp_admin(broker)
    try:
        admin.create_topics({"legacy": {"num_partitions": 2, "configs": {"retention.ms": "60000", "cleanup.policy": "compact"}}})
        resource = KPConfigResource(ConfigResourceType.TOPIC, "legacy", configs={"segment.bytes": "1048576"})
        admin.alter_configs([resource], incremental=False, raise_on_unknown=False)
    finally:
        admin.close()
    configs = describe(confluent_admin(broker), topic("legacy"))
    # kafka-python re-sends modified dynamic keys with AlterConfigs (it knows the legacy semantics).
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["segment.bytes"].value == "1048576"

    # Sent by confluent-kafka, AlterConfigs drops every override not named.
    confluent = confluent_admin(broker)
    resource = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.ms": "120000"})
    confluent.alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    configs = describe(confluent, topic("legacy"))
    assert configs["retention.ms"].value == "120000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def test_incremental_alter_set_delete_append_subtract(broker):
    admin = confluent_admin(broker)
    create(admin, "incremental", {"retention.ms": "60000"})

    def alter(*entries, validate_only=False):
        resource = ConfigResource(ResourceType.TOPIC, "incremental", incremental_configs=list(entries))
        return error_code(admin.incremental_alter_configs([resource], validate_only=validate_only,
                                                          request_timeout=TIMEOUT_S)[resource])

    assert alter(ConfigEntry("segment.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
                 ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)) is None
    configs = describe(admin, topic("incremental"))
    assert (configs["segment.bytes"].value, configs["segment.bytes"].source) == ("2097152", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == (TWO_WEEKS_MS, ConfigSource.DEFAULT_CONFIG.value)

    assert alter(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)) is None
    assert describe(admin, topic("incremental"))["cleanup.policy"].value == "delete,compact"
    assert alter(ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT)) is None
    assert describe(admin, topic("incremental"))["cleanup.policy"].value == "compact"

    # APPEND to a non-list config, unknown names, bad values: INVALID_CONFIG, nothing changes.
    assert alter(ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND)) == KafkaError.INVALID_CONFIG
    assert alter(ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)) == KafkaError.INVALID_CONFIG
    assert alter(ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)) == KafkaError.INVALID_CONFIG
    # validate_only: accepted, not applied.
    assert alter(ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET), validate_only=True) is None
    assert describe(admin, topic("incremental"))["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_incremental_alter_kafka_python_and_errors(broker):
    admin = kp_admin(broker)
    try:
        admin.create_topics({"kp-incremental": {"num_partitions": 1}})
        resource = KPConfigResource(ConfigResourceType.TOPIC, "kp-incremental", configs={"retention.bytes": "1000000"})
        admin.alter_configs([resource], incremental=True)
        configs = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kp-incremental")])
        assert configs["topic"]["kp-incremental"]["retention.bytes"]["value"] == "1000000"
        assert configs["topic"]["kp-incremental"]["retention.bytes"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"

        ghost = KPConfigResource(ConfigResourceType.TOPIC, "ghost", configs={"retention.ms": "1"})
        result = admin.alter_configs([ghost], incremental=True, raise_on_unknown=False)
        assert "UnknownTopicOrPartitionError" in str(result["topic"]["ghost"])
        # Tidelog has no dynamic broker configs: a change is INVALID_REQUEST.
        broker_resource = KPConfigResource(ConfigResourceType.BROKER, "1", configs={"num.partitions": "5"})
        result = admin.alter_configs([broker_resource], incremental=True, raise_on_unknown=False)
        assert "InvalidRequestError" in str(result["broker"]["1"])
    finally:
        admin.close()


def test_legacy_alter_errors_and_validate_only(broker):
    admin = confluent_admin(broker)
    create(admin, "strict")

    def alter(resource_name, configs, validate_only=False):
        resource = ConfigResource(ResourceType.TOPIC, resource_name, set_config=configs)
        return error_code(admin.alter_configs([resource], validate_only=validate_only, request_timeout=TIMEOUT_S)[resource])

    assert alter("strict", {"no.such.config": "1"}) == KafkaError.INVALID_CONFIG
    assert alter("strict", {"min.insync.replicas": "0"}) == KafkaError.INVALID_CONFIG
    assert alter("ghost", {"retention.ms": "1"}) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert alter("strict", {"retention.ms": "1000"}, validate_only=True) is None
    assert describe(admin, topic("strict"))["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


# --- persistence ---------------------------------------------------------------------------------

def test_configs_survive_restart(broker):
    admin = confluent_admin(broker)
    create(admin, "kept", {"cleanup.policy": "compact"}, partitions=2)
    resource = ConfigResource(ResourceType.TOPIC, "kept", incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    broker.stop()
    broker.restart()
    configs = describe(confluent_admin(broker), topic("kept"))
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_altered_config_applies_to_the_live_log(broker):
    from tests.integration.clients import produce

    admin = confluent_admin(broker)
    create(admin, "rolling")
    resource = ConfigResource(ResourceType.TOPIC, "rolling", incremental_configs=[
        ConfigEntry("segment.bytes", "1024", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    # Without a restart, the open log now rolls at 1 KiB.
    produce("confluent", broker.bootstrap, "rolling", [(None, b"x" * 600, [], None)] * 6, **{"batch.num.messages": 1})
    segments = sorted((broker.data_dir / "rolling-0").glob("*.log"))
    assert len(segments) >= 3, segments
