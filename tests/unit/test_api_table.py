"""The advertised API table is Apache Kafka 4.0's, entry for entry (kafka-python ships Kafka's
own ApiVersions table per release, and infers the broker version from what we advertise)."""

from __future__ import annotations

from kafka.protocol.broker_version_data import BROKER_API_VERSIONS, infer_broker_version_from_api_versions

from tidelog.handlers.registry import load_all
from tidelog.protocol.apis import KAFKA_4_0


def test_every_entry_matches_kafka_4_0():
    kafka_4_0 = BROKER_API_VERSIONS[(4, 0)]
    for key, (name, low, high) in KAFKA_4_0.items():
        assert kafka_4_0.get(key) == (low, high), f"{name} ({key}): ours {low}-{high}, Kafka 4.0 {kafka_4_0.get(key)}"


def test_registered_handlers_advertise_kafka_4_0_and_are_read_as_4_0():
    registry = load_all()
    advertised = {key: (api.min_version, api.max_version) for key, api in registry.items()}
    assert all(advertised[key] == KAFKA_4_0[key][1:] for key in advertised)
    assert infer_broker_version_from_api_versions(advertised) == (4, 0)
