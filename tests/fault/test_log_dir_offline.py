"""An fsync error in a real broker process (TIDELOG_FAULTS) takes its log directory offline:
produce and fetch answer KAFKA_STORAGE_ERROR, nothing more is acknowledged, ``/ready`` and
``tidelog_log_dir_offline`` say so, until a restart runs recovery and serves again."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.errors import KafkaStorageError

from tests.integration.test_cluster import raw_request

from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch

TOPIC = "disk"


def _produce(port: int, value: bytes) -> int:
    from kio.schema.produce.v8 import request as produce

    request = produce.ProduceRequest(
        transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
        topic_data=(produce.TopicProduceData(name=TOPIC, partition_data=(
            produce.PartitionProduceData(index=0, records=build_batch([(None, value, [])])),)),))
    return raw_request(port, 0, 8, request).responses[0].partition_responses[0].error_code


def _fetch(port: int, offset: int = 0):
    from kio.schema.fetch.v11 import request as fetch

    request = fetch.FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=1 << 20, isolation_level=0,
        session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
        topics=(fetch.FetchTopic(topic=TOPIC, partitions=(fetch.FetchPartition(
            partition=0, current_leader_epoch=-1, fetch_offset=offset, log_start_offset=0,
            partition_max_bytes=1 << 20),)),))
    return raw_request(port, 1, 11, request).responses[0].partitions[0]


def _http(broker, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}{path}", timeout=10) as page:
            return page.status, page.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_an_fsync_error_takes_the_log_dir_offline_until_a_restart(broker_factory, monkeypatch):
    monkeypatch.setenv("TIDELOG_FAULTS", "fsync.segment:EIO:1")  # every fsync of a .log file fails
    broker = broker_factory({"log.durability.profile": "durable", "num.partitions": "1"})
    assert _http(broker, "/ready")[0] == 200
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(15)

    assert _produce(broker.port, b"first") == ErrorCode.kafka_storage_error
    assert "is OFFLINE after an I/O error" in broker.log()
    assert _produce(broker.port, b"second") == ErrorCode.kafka_storage_error  # refused, not retried
    assert _fetch(broker.port).error_code == ErrorCode.kafka_storage_error
    status, body = _http(broker, "/ready")
    assert status == 503 and "log directory offline" in json.loads(body)["status"]
    assert "tidelog_log_dir_offline 1.0" in _http(broker, "/metrics")[1]
    # A real client's acks=all produce is never acknowledged.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "message.timeout.ms": 3000})
    outcomes = []
    producer.produce(TOPIC, b"client", partition=0, on_delivery=lambda err, msg: outcomes.append(err))
    producer.flush(10)
    assert len(outcomes) == 1 and outcomes[0] is not None
    kafka_python = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", retries=0)
    try:
        with pytest.raises(KafkaStorageError):
            kafka_python.send(TOPIC, b"kafka-python", partition=0).get(timeout=15)
    finally:
        kafka_python.close()
    from kio.schema.list_offsets.v5 import request as list_offsets

    latest = raw_request(broker.port, 2, 5, list_offsets.ListOffsetsRequest(
        replica_id=-1, isolation_level=0, topics=(list_offsets.ListOffsetsTopic(name=TOPIC, partitions=(
            list_offsets.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1, timestamp=-1),)),)))
    assert latest.topics[0].partitions[0].error_code == ErrorCode.kafka_storage_error

    assert broker.stop() == 0
    monkeypatch.delenv("TIDELOG_FAULTS")
    log_size = broker.log_path.stat().st_size
    broker.restart()
    restart_log = broker.log_path.read_bytes()[log_size:].decode(errors="replace")
    assert "no clean-shutdown marker, recovering" in restart_log  # offline: the shutdown was not clean
    assert _http(broker, "/ready")[0] == 200
    assert "tidelog_log_dir_offline 0.0" in _http(broker, "/metrics")[1]
    assert _produce(broker.port, b"after") == ErrorCode.none
    assert _fetch(broker.port).error_code == ErrorCode.none
