"""The broker's own writes on a stuck disk (writes15), in real broker processes with real clients.

The disk is stuck with tests/fault/stuck_disk (a sitecustomize on the broker's PYTHONPATH): while a
file exists, every flush job of the broker's log manager waits in its flush thread, as on a disk
that stopped answering; the event loop runs on. Each internal write is bounded by its timeout, the
flush included, answers REQUEST_TIMED_OUT and is retried by its writer, one WARNING an episode:

- a delay topic's mover (target led by the same broker): its append times out and the round is
  tried again at the next pass; once the disk answers, every record is in the target exactly once
  (the retries were answered as duplicates). Before, the mover (and every other delay partition's,
  one task steps them all) waited for the flush with no timeout: no retry, no log line.

Records are produced with confluent-kafka and read back with kafka-python."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from tests.brokerproc import BrokerProcess, wait_until
from tests.fault.test_delay_topic_cluster import metric

STUCK_DISK = Path(__file__).with_name("stuck_disk")
RECORDS = 20
DELAY_MS = 5000  # the records come due this long after they are produced: the disk is stuck by then


def stuck_disk_env(hold: Path) -> dict[str, str]:
    """A broker's environment for tests/fault/stuck_disk: its flushes wait while ``hold`` exists."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(STUCK_DISK), os.environ.get("PYTHONPATH")])),
            "TESTS_HOLD_FSYNC": str(hold)}


def produce(bootstrap: str, topic: str, values: list[bytes], headers=None, **config) -> None:
    """Produce ``values`` (acks=all, idempotent) and check each was acknowledged."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **config})
    for value in values:
        producer.produce(topic, value=value, headers=headers,
                         on_delivery=lambda error, _message: errors.append(error) if error else None)
    assert producer.flush(30) == 0 and errors == []


def read_all(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    """kafka-python: the topic's values from the start, until ``count`` are read, then 1 s more
    (a duplicate would show there)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None)
    consumer.assign([KafkaTopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    settled = None
    try:
        while settled is None or time.monotonic() < settled:
            assert time.monotonic() < deadline, f"read {len(values)} of {count} records of {topic}"
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
            if settled is None and len(values) >= count:
                settled = time.monotonic() + 1
    finally:
        consumer.close()
    return values


def warnings_matching(log: str, pattern: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line and re.search(pattern, line)]


def test_a_delay_movers_appends_on_a_stuck_disk_time_out_are_retried_and_move_each_record_once(tmp_path, monkeypatch):
    hold = tmp_path / "hold-fsync"
    for name, value in stuck_disk_env(hold).items():
        monkeypatch.setenv(name, value)
    broker = BrokerProcess(tmp_path / "data", {"offsets.commit.timeout.ms": "1000"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic("target", 1, 1), NewTopic(
                "delays", 1, 1, config={"tidelog.delay.target.topic": "target"})]).values():
            future.result(30)
        values = [b"r%d" % i for i in range(RECORDS)]
        produce(broker.bootstrap, "delays", values, headers=[("tidelog-delay-ms", str(DELAY_MS).encode())], acks="all")
        hold.touch()  # the disk is stuck from here
        try:
            moved = metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays")
            assert moved == 0, "the records were moved before the disk was stuck (produced too slowly?)"
            wait_until(lambda: metric(broker, "tidelog_internal_write_timeouts_total", writer="delay_mover") >= 2,
                       DELAY_MS / 1000 + 20, message="the mover's append timing out twice")
            stuck = warnings_matching(broker.log(), r"delay mover delays-0: appending to target-0 failed")
            assert len(stuck) == 1 and "REQUEST_TIMED_OUT" in stuck[0], stuck  # once a streak, not once a retry
        finally:
            hold.unlink()  # the disk answers again
        wait_until(lambda: metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays") == RECORDS,
                   30, message="every record moved")
        got = read_all(broker.bootstrap, "target", RECORDS)
        assert sorted(got) == sorted(values)  # each once: the retried appends were answered as duplicates
        assert re.search(r"delay mover delays-0: appending to target-0 again after \d+ failed attempts", broker.log())
    finally:
        hold.unlink(missing_ok=True)
        broker.stop()

