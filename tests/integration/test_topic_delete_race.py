"""A topic deleted while a produce to it waits for its group commit: the producer gets what Kafka
answers for a partition that is gone (UNKNOWN_TOPIC_OR_PARTITION), the broker logs it at INFO,
and nothing is logged as an ERROR (it used to log the durability wait as a failure)."""

from __future__ import annotations

import urllib.request

from kafka.protocol.admin import DeleteTopicsRequest, DeleteTopicsResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from tests.brokerproc import wait_until
from tests.integration.test_bad_input import Conn, create_topic
from tidelog.protocol.records import build_batch


def test_produce_waiting_for_its_flush_when_the_topic_is_deleted(broker_factory):
    # A 3 s group-commit window keeps the produce waiting while the topic goes.
    broker = broker_factory({"log.flush.interval.ms": "3000"})
    producer, admin = Conn(broker), Conn(broker)
    create_topic(admin, "doomed")
    data = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=build_batch([(b"k", b"v", [])]))
    request = ProduceRequest[9](transactional_id=None, acks=-1, timeout_ms=10000,
                                topic_data=[ProduceRequest.TopicProduceData(name="doomed", partition_data=[data])])
    correlation_id = producer.request(request, 9)

    def appended() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
            return 'tidelog_produced_records_total{topic="doomed"} 1.0' in page.read().decode()

    wait_until(appended, message="the produce to be appended (it then waits for the 3 s window)")
    deleted = admin.roundtrip(DeleteTopicsRequest[4](topic_names=["doomed"], timeout_ms=10000), DeleteTopicsResponse, 4)
    assert deleted.responses[0].error_code == 0
    response = ProduceResponse.decode(producer.recv_frame(), version=9, header=True)
    assert response.header.correlation_id == correlation_id
    (partition,) = response.responses[0].partition_responses
    assert partition.error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
    wait_until(lambda: "deleted while" in broker.log(), message="the INFO line")
    errors = [line for line in broker.log().splitlines() if " ERROR " in line]
    assert not errors, errors
    producer.api_versions(0)  # the connection stays usable
