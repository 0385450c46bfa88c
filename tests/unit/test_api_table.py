"""The advertised API table is Apache Kafka 4.0's, entry for entry, with Kafka 4.2's share-group
rows (kafka-python ships Kafka's own ApiVersions table per release, and infers the broker version
from what we advertise)."""

from __future__ import annotations

import pathlib
import re

from kafka.protocol.broker_version_data import BROKER_API_VERSIONS, infer_broker_version_from_api_versions

from tidelog.handlers.registry import load_all
from tidelog.protocol.apis import ADVERTISED, KAFKA_4_0, KAFKA_4_2_SHARE


def test_every_entry_matches_kafka_4_0():
    kafka_4_0 = BROKER_API_VERSIONS[(4, 0)]
    for key, (name, low, high) in KAFKA_4_0.items():
        assert kafka_4_0.get(key) == (low, high), f"{name} ({key}): ours {low}-{high}, Kafka 4.0 {kafka_4_0.get(key)}"


def test_share_group_entries_match_kafka_4_2():
    kafka_4_2 = BROKER_API_VERSIONS[(4, 2)]
    assert set(KAFKA_4_2_SHARE) == {76, 77, 78, 79, 90, 91, 92}
    for key, (name, low, high) in KAFKA_4_2_SHARE.items():
        assert kafka_4_2.get(key) == (low, high), f"{name} ({key}): ours {low}-{high}, Kafka 4.2 {kafka_4_2.get(key)}"


def test_registered_handlers_advertise_kafka_and_are_read_as_4_0():
    registry = load_all()
    advertised = {key: (api.min_version, api.max_version) for key, api in registry.items()}
    assert all(advertised[key] == ADVERTISED[key][1:] for key in advertised)
    assert infer_broker_version_from_api_versions(advertised) == (4, 0)


def test_docs_protocol_table_lists_every_served_api_with_its_versions():
    """docs/protocol.md's table is what ApiVersions advertises: one row per served API, same range."""
    text = (pathlib.Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    rows = {int(key): versions for key, versions in re.findall(r"^\| \w+ \| (\d+) \| ([\d-]+) \|", text, re.M)}
    served = {key: f"{api.min_version}-{api.max_version}" if api.min_version != api.max_version else str(api.min_version)
              for key, api in load_all().items()}
    assert rows == served
