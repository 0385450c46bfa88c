"""Kafka's internal topics, named once (Kafka's ``org.apache.kafka.common.internals.Topic``).

Metadata and DescribeTopicPartitions flag them ``is_internal``; DeleteTopics and the HTTP API
refuse to delete them (their coordinators cannot reload from a re-created topic); the CLI and
console hide them unless asked. Each is owned by the coordinator that writes it:
``__consumer_offsets`` by groups/offsets_topic.py, ``__transaction_state`` by txn/, and
``__share_group_state`` by queues/state_store.py.
"""

from __future__ import annotations

CONSUMER_OFFSETS = "__consumer_offsets"
TRANSACTION_STATE = "__transaction_state"
SHARE_GROUP_STATE = "__share_group_state"

INTERNAL_TOPICS = frozenset({CONSUMER_OFFSETS, TRANSACTION_STATE, SHARE_GROUP_STATE})


def is_internal(name: str) -> bool:
    return name in INTERNAL_TOPICS
