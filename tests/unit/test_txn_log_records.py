"""__transaction_state records byte for byte: hand-laid from Kafka's layout, and through kafka-python's
schema-driven codec fed Kafka's TransactionLogKey/Value schemas; partition_for is Java's hashCode."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.txn.log_records import (
    TransactionLogError,
    TransactionLogValue,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
    java_string_hash,
    partition_for,
    topic_configs,
)
from tidelog.txn.state import TopicPartition, TransactionState

S = TransactionState

# Kafka's schemas (transaction-coordinator/src/main/resources/common/message/TransactionLog*.json),
# the field lists as Kafka declares them; a tagged-only field gets "versions" = its taggedVersions, which
# is what Kafka's generator assumes and kafka-python's needs spelled out.
KEY_SCHEMA = {
    "type": "data", "name": "TransactionLogKey", "validVersions": "0", "flexibleVersions": "none",
    "fields": [{"name": "TransactionalId", "type": "string", "versions": "0"}],
}
VALUE_SCHEMA = {
    "type": "data", "name": "TransactionLogValue", "validVersions": "0-1", "flexibleVersions": "1+",
    "fields": [
        {"name": "ProducerId", "type": "int64", "versions": "0+"},
        {"name": "PreviousProducerId", "type": "int64", "versions": "1+", "taggedVersions": "1+", "tag": 0, "default": -1},
        {"name": "NextProducerId", "type": "int64", "versions": "1+", "taggedVersions": "1+", "tag": 1, "default": -1},
        {"name": "ProducerEpoch", "type": "int16", "versions": "0+"},
        {"name": "TransactionTimeoutMs", "type": "int32", "versions": "0+"},
        {"name": "TransactionStatus", "type": "int8", "versions": "0+"},
        {"name": "TransactionPartitions", "type": "[]PartitionsSchema", "versions": "0+", "nullableVersions": "0+",
         "fields": [{"name": "Topic", "type": "string", "versions": "0+"},
                    {"name": "PartitionIds", "type": "[]int32", "versions": "0+"}]},
        {"name": "TransactionLastUpdateTimestampMs", "type": "int64", "versions": "0+"},
        {"name": "TransactionStartTimestampMs", "type": "int64", "versions": "0+"},
        {"name": "ClientTransactionVersion", "type": "int16", "versions": "1+", "taggedVersions": "1+", "tag": 2, "default": 0},
    ],
}


@pytest.fixture(scope="module")
def kafka_schemas():
    """kafka-python's generic JSON-schema codec (it writes the int16 version prefix itself)."""
    from kafka.protocol import api_data
    from kafka.protocol.api_data import ApiData

    real = api_data.load_json
    schemas = {"TransactionLogKey": KEY_SCHEMA, "TransactionLogValue": VALUE_SCHEMA}
    api_data.load_json = lambda name, package=None: schemas[name] if name in schemas else real(name, package)
    try:
        class TransactionLogKey(ApiData):
            pass

        class TransactionLogValue(ApiData):  # noqa: F811 (kafka-python names the schema by the class)
            pass
    finally:
        api_data.load_json = real
    return TransactionLogKey, TransactionLogValue


ONGOING = TransactionLogValue(4000, 3, 60000, S.ONGOING,
                              frozenset({TopicPartition("b", 2), TopicPartition("a", 1), TopicPartition("b", 0)}),
                              1_700_000_000_500, 1_700_000_000_000)
EMPTY = TransactionLogValue(4000, 4, 60000, S.EMPTY, frozenset(), 1_700_000_001_000, -1)


def test_key_v0_layout():
    assert encode_key("tx-1") == b"\x00\x00" + b"\x00\x04tx-1"
    assert decode_key(encode_key("tx-1")) == "tx-1"
    assert decode_key(b"\x00\x07\x00\x01x") is None, "an unknown key version is skipped, not an error"
    assert decode_key(encode_key("ünï")) == "ünï"


def test_value_v0_layout_by_hand():
    expected = (struct.pack(">hqhib", 0, 4000, 3, 60000, 1)
                + struct.pack(">i", 2)
                + struct.pack(">h", 1) + b"a" + struct.pack(">ii", 1, 1)
                + struct.pack(">h", 1) + b"b" + struct.pack(">iii", 2, 0, 2)
                + struct.pack(">qq", 1_700_000_000_500, 1_700_000_000_000))
    assert encode_value(ONGOING, version=0) == expected
    assert encode_value(EMPTY) == struct.pack(">hqhib", 0, 4000, 4, 60000, 0) + struct.pack(">i", -1) \
        + struct.pack(">qq", 1_700_000_001_000, -1), "Empty writes a null partition array"


def test_value_v1_layout_by_hand():
    v1 = TransactionLogValue(4000, 3, 60000, S.PREPARE_ABORT, frozenset({TopicPartition("a", 1)}), 10, 9,
                             previous_producer_id=3999)
    expected = (struct.pack(">hqhib", 1, 4000, 3, 60000, 3)
                + bytes([2, 2]) + b"a" + bytes([2]) + struct.pack(">i", 1) + b"\x00"
                + struct.pack(">qq", 10, 9)
                + bytes([1, 0, 8]) + struct.pack(">q", 3999))
    assert encode_value(v1, version=1) == expected
    assert decode_value(expected) == v1


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("value", [ONGOING, EMPTY, TransactionLogValue(
    1, 0, 1, S.COMPLETE_COMMIT, frozenset(), 5, 4, previous_producer_id=0, next_producer_id=2, client_transaction_version=2)])
def test_values_equal_kafka_schema_codec(kafka_schemas, version, value):
    _, KafkaValue = kafka_schemas
    partitions = None if value.state is S.EMPTY else [
        KafkaValue.PartitionsSchema(topic=topic, partition_ids=sorted(p.partition for p in value.partitions if p.topic == topic))
        for topic in sorted({p.topic for p in value.partitions})]
    fields = dict(producer_id=value.producer_id, producer_epoch=value.producer_epoch,
                  transaction_timeout_ms=value.txn_timeout_ms, transaction_status=int(value.state),
                  transaction_partitions=partitions,
                  transaction_last_update_timestamp_ms=value.txn_last_update_timestamp_ms,
                  transaction_start_timestamp_ms=value.txn_start_timestamp_ms)
    if version == 1:
        fields.update(previous_producer_id=value.previous_producer_id, next_producer_id=value.next_producer_id,
                      client_transaction_version=value.client_transaction_version)
    theirs = KafkaValue(version=version, **fields).encode(version=version)
    assert encode_value(value, version=version) == bytes(theirs)
    decoded = decode_value(bytes(theirs))
    if version == 0:
        decoded.previous_producer_id, decoded.next_producer_id, decoded.client_transaction_version = (
            value.previous_producer_id, value.next_producer_id, value.client_transaction_version)
    assert decoded == value


def test_key_equals_kafka_schema_codec(kafka_schemas):
    KafkaKey, _ = kafka_schemas
    assert encode_key("my-transactional-id") == bytes(KafkaKey(version=0, transactional_id="my-transactional-id").encode(version=0))


def test_unknown_tags_are_skipped_and_bad_records_refused():
    base = encode_value(EMPTY, version=1)[:-1]  # without the empty tag section
    with_unknown = base + bytes([2, 0, 8]) + struct.pack(">q", 77) + bytes([9, 2]) + b"zz"
    assert decode_value(with_unknown).previous_producer_id == 77
    for bad in [b"\x00\x02" + encode_value(EMPTY)[2:], encode_value(ONGOING)[:-3], b"\x00",
                encode_value(EMPTY)[:16] + b"\x09" + encode_value(EMPTY)[17:]]:
        with pytest.raises(TransactionLogError):
            decode_value(bad)
    with pytest.raises(TransactionLogError):
        encode_value(TransactionLogValue(1, 0, 1, S.EMPTY, frozenset({TopicPartition("a", 0)})))


def test_partition_for_is_kafkas_abs_java_hashcode_modulo():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert java_string_hash("\U0001F600") == 0xD83D * 31 + 0xDE00, "UTF-16 code units, surrogates apart"
    assert partition_for("polygenelubricants", 50) == 0, "Kafka's Utils.abs maps MIN_VALUE to 0"
    assert partition_for("hello", 50) == 99162322 % 50
    assert partition_for("anything", 1) == 0


def test_topic_configs_are_what_kafka_forces():
    assert topic_configs(2, 104857600) == {
        "cleanup.policy": "compact", "compression.type": "uncompressed", "unclean.leader.election.enable": "false",
        "min.insync.replicas": "2", "segment.bytes": "104857600"}


values = st.builds(
    TransactionLogValue, st.integers(0, 2**63 - 1), st.integers(0, 32766), st.integers(1, 2**31 - 1),
    st.sampled_from([s for s in S if s is not S.EMPTY]),
    st.frozensets(st.builds(TopicPartition, st.text(min_size=1, max_size=20), st.integers(0, 2**31 - 1)), max_size=8),
    st.integers(-1, 2**62), st.integers(-1, 2**62), st.integers(-1, 2**62), st.integers(-1, 2**62), st.integers(0, 3))


@given(values)
def test_round_trip_v1(value):
    assert decode_value(encode_value(value, version=1)) == value


@given(values)
def test_round_trip_v0_keeps_what_v0_has(value):
    decoded = decode_value(encode_value(value, version=0))
    assert (decoded.producer_id, decoded.producer_epoch, decoded.state, decoded.partitions) == (
        value.producer_id, value.producer_epoch, value.state, value.partitions)
