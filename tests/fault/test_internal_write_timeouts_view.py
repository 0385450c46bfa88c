"""An offset commit on a stuck disk is counted in tidelog_internal_write_timeouts_total
{writer="offset_commit"} and shown where a user looks: GET /api/v1/broker and /cluster and
``tidelog cluster`` (robust16; the console's Brokers table reads /cluster's field:
tests/integration/test_console.py). Before, only the delay movers' and transactions' writes were
counted, and the counter was shown nowhere but /metrics.

A real broker process whose flushes wait while a file exists (tests/fault/stuck_disk), a real
confluent-kafka consumer committing its offset synchronously while the disk is stuck: the
coordinator's __consumer_offsets write times out after offsets.commit.timeout.ms (1 s here)."""

from __future__ import annotations

import json
import subprocess
import sys

import requests
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import BrokerProcess, wait_until
from tests.fault.test_delay_topic_cluster import metric
from tests.fault.test_internal_write_stalls import stuck_disk_env


def test_an_offset_commit_timed_out_on_a_stuck_disk_is_counted_and_shown(tmp_path, monkeypatch):
    hold = tmp_path / "hold-fsync"
    for name, value in stuck_disk_env(hold).items():
        monkeypatch.setenv(name, value)
    broker = BrokerProcess(tmp_path / "data", {"http.port": "0", "offsets.commit.timeout.ms": "1000"}).start()
    consumer = None
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("orders", 1, 1)])["orders"].result(30)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        producer.produce("orders", value=b"one")
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe(["orders"])
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        consumer.commit(message=message, asynchronous=False)  # __consumer_offsets' first flush, in time

        api = f"http://127.0.0.1:{broker.metrics_port}/api/v1"
        assert requests.get(api + "/broker", timeout=10).json()["internal_write_timeouts"] == {}
        hold.touch()
        try:
            try:
                consumer.commit(offsets=[TopicPartition("orders", 0, 1)], asynchronous=False)
            except KafkaException:
                pass  # answered with the coordinator's error: what the client does next is its business
            wait_until(lambda: metric(broker, "tidelog_internal_write_timeouts_total", writer="offset_commit") >= 1,
                       20, message="the offset commit's write counted as timed out")
            shown = requests.get(api + "/broker", timeout=10).json()["internal_write_timeouts"]
            assert shown.get("offset_commit", 0) >= 1, shown
            brokers = requests.get(api + "/cluster", timeout=10).json()["brokers"]
            assert brokers[0]["internal_write_timeouts"].get("offset_commit", 0) >= 1, brokers
            cli = subprocess.run([sys.executable, "-m", "tidelog", "cluster", "--url", f"http://127.0.0.1:{broker.metrics_port}",
                                  "--json", "--bootstrap-server", broker.bootstrap], capture_output=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            assert json.loads(cli.stdout)["brokers"][0]["internal_write_timeouts"].get("offset_commit", 0) >= 1, cli.stdout
        finally:
            hold.unlink()
    finally:
        hold.unlink(missing_ok=True)
        if consumer is not None:
            consumer.close()
        broker.stop()
