"""The API keys Tidelog serves, the versions Kafka 4.0 advertises for them, and kio codecs.

``KAFKA_4_0`` is the version range each API has in Apache Kafka 4.0; ``KAFKA_4_2_SHARE`` the share
group APIs' as Kafka 4.2 has them (``ADVERTISED`` is both). Handlers register the range they serve
(``tidelog.handlers.registry``); a unit test checks that each registered range equals Kafka's, so
ApiVersions always describes one coherent release and clients that infer the broker version from
it (kafka-python) pick the right request versions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

# api_key -> (name, min_version, max_version) as advertised by Apache Kafka 4.0.
KAFKA_4_0: dict[int, tuple[str, int, int]] = {
    0: ("Produce", 0, 12),  # v0-2 are advertised but answered with UNSUPPORTED_VERSION
    1: ("Fetch", 4, 17),
    2: ("ListOffsets", 1, 10),
    3: ("Metadata", 0, 13),
    8: ("OffsetCommit", 2, 9),
    9: ("OffsetFetch", 1, 9),
    10: ("FindCoordinator", 0, 6),
    11: ("JoinGroup", 2, 9),
    12: ("Heartbeat", 0, 4),
    13: ("LeaveGroup", 0, 5),
    14: ("SyncGroup", 0, 5),
    15: ("DescribeGroups", 0, 6),
    16: ("ListGroups", 0, 5),
    17: ("SaslHandshake", 0, 1),
    18: ("ApiVersions", 0, 4),
    19: ("CreateTopics", 2, 7),
    20: ("DeleteTopics", 1, 6),
    21: ("DeleteRecords", 0, 2),
    22: ("InitProducerId", 0, 5),
    23: ("OffsetForLeaderEpoch", 2, 4),
    24: ("AddPartitionsToTxn", 0, 5),
    25: ("AddOffsetsToTxn", 0, 4),
    26: ("EndTxn", 0, 5),
    27: ("WriteTxnMarkers", 1, 1),
    28: ("TxnOffsetCommit", 0, 5),
    29: ("DescribeAcls", 1, 3),
    30: ("CreateAcls", 1, 3),
    31: ("DeleteAcls", 1, 3),
    32: ("DescribeConfigs", 1, 4),
    33: ("AlterConfigs", 0, 2),
    34: ("AlterReplicaLogDirs", 1, 2),
    35: ("DescribeLogDirs", 1, 4),
    36: ("SaslAuthenticate", 0, 2),
    37: ("CreatePartitions", 0, 3),
    42: ("DeleteGroups", 0, 2),
    43: ("ElectLeaders", 0, 2),
    44: ("IncrementalAlterConfigs", 0, 1),
    45: ("AlterPartitionReassignments", 0, 0),
    46: ("ListPartitionReassignments", 0, 0),
    47: ("OffsetDelete", 0, 0),
    48: ("DescribeClientQuotas", 0, 1),
    49: ("AlterClientQuotas", 0, 1),
    50: ("DescribeUserScramCredentials", 0, 0),
    51: ("AlterUserScramCredentials", 0, 0),
    60: ("DescribeCluster", 0, 2),
    61: ("DescribeProducers", 0, 0),
    65: ("DescribeTransactions", 0, 0),
    66: ("ListTransactions", 0, 1),
    68: ("ConsumerGroupHeartbeat", 0, 1),
    69: ("ConsumerGroupDescribe", 0, 1),
    75: ("DescribeTopicPartitions", 0, 0),
}

# The share-group APIs (KIP-932) as Apache Kafka 4.2 advertises them (4.0 had only early-access v0
# of 76-79, removed in 4.1). Handlers of these keys register these ranges.
KAFKA_4_2_SHARE: dict[int, tuple[str, int, int]] = {
    76: ("ShareGroupHeartbeat", 1, 1),
    77: ("ShareGroupDescribe", 1, 1),
    78: ("ShareFetch", 1, 2),
    79: ("ShareAcknowledge", 1, 2),
    90: ("DescribeShareGroupOffsets", 0, 1),
    91: ("AlterShareGroupOffsets", 0, 0),
    92: ("DeleteShareGroupOffsets", 0, 0),
}

# What a broker advertises: Kafka 4.0's table with 4.2's share-group rows.
ADVERTISED: dict[int, tuple[str, int, int]] = {**KAFKA_4_0, **KAFKA_4_2_SHARE}

API_VERSIONS_KEY = 18


@functools.cache
def is_flexible(api_key: int, api_version: int) -> bool:
    """Whether (key, version) uses the flexible encoding (compact types, tagged fields)."""
    try:
        return bool(load_request_schema(api_key, api_version).__flexible__)
    except Exception:
        return False


@functools.cache
def request_type(api_key: int, api_version: int) -> type:
    return load_request_schema(api_key, api_version)


@functools.cache
def request_reader(api_key: int, api_version: int) -> Callable[[memoryview, int], tuple[Any, int]]:
    """kio's decoder for a request body: ``reader(readonly_buffer, offset) -> (request, end)``."""
    return entity_reader(load_request_schema(api_key, api_version))


@functools.cache
def response_type(api_key: int, api_version: int) -> type:
    return load_response_schema(api_key, api_version)


@functools.cache
def response_writer(api_key: int, api_version: int) -> Callable[[Any, Any], None]:
    return entity_writer(load_response_schema(api_key, api_version))


@functools.cache
def response_module(api_key: int, api_version: int):
    """The kio module of a response version; its nested types are attributes of it."""
    import sys

    return sys.modules[response_type(api_key, api_version).__module__]


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(cls.__dataclass_fields__)


def build(cls: type, **values: Any) -> Any:
    """Construct a kio dataclass, dropping fields this version does not have.

    Lets a handler describe its response once for all versions: fields added in later
    versions are simply left out of older ones.
    """
    names = _field_names(cls)
    return cls(**{name: value for name, value in values.items() if name in names})


# The (API key, version) pairs of the requests a client sends first: a producer and a consumer
# (classic group and KIP-848) of confluent-kafka 2.x (librdkafka), kafka-python 2.x and aiokafka
# 0.1x, as each was seen to send them. Their codecs are made during the broker's start
# (``warm_codecs``), before it serves: made on the event loop as the first such request
# came, each cost ~5 ms of CPU idle (importing its two kio modules; ~10x the wall time at load 20),
# a stall of the loop at a broker's first clients (0.14 s of CPU for all of them).
FIRST_REQUESTS: tuple[tuple[int, int], ...] = (
    (18, 0), (18, 3), (18, 4),  # ApiVersions
    (3, 5), (3, 13),  # Metadata
    (0, 7), (0, 9), (0, 10),  # Produce
    (1, 12), (1, 16),  # Fetch
    (2, 3), (2, 7), (2, 10),  # ListOffsets
    (10, 1), (10, 2), (10, 6),  # FindCoordinator
    (22, 4),  # InitProducerId
    (11, 5), (11, 7), (14, 3), (14, 5), (12, 3), (13, 1), (13, 5),  # JoinGroup, SyncGroup, Heartbeat, LeaveGroup
    (68, 1),  # ConsumerGroupHeartbeat
    (8, 3), (8, 9), (9, 3), (9, 8), (9, 9),  # OffsetCommit, OffsetFetch
)


def warm_codecs(pairs: tuple[tuple[int, int], ...] = FIRST_REQUESTS) -> None:
    """Make the request and response codecs of ``pairs`` now (imports their kio modules): what
    a connection would make on the event loop at the first request of each."""
    for api_key, api_version in pairs:
        is_flexible(api_key, api_version)
        request_reader(api_key, api_version)
        response_writer(api_key, api_version)

