"""Brokers authenticating to each other (issue 16): a 3-broker cluster (real processes, real etcd)
whose inter-broker listener is SASL_SSL, clients on a PLAINTEXT one; a replicated topic gets its
full ISR (followers fetch over TLS after SASL), and acknowledged records are read back."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import ClusterBrokerProcess
from tests.etcdproc import EtcdProcess, free_port
from tests.integration.security_clients import Pki


@pytest.fixture(scope="module")
def secured_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasl-cluster")
    pki = Pki.make(root / "pki")
    users = root / "brokers"
    users.write_text("broker:inter-broker-secret\n")
    users.chmod(0o600)
    etcd = EtcdProcess(root / "etcd")
    brokers: list[ClusterBrokerProcess] = []
    try:
        etcd.start()
        for node_id in (1, 2, 3):
            broker = ClusterBrokerProcess(root / f"broker-{node_id}", f"etcd://{etcd.endpoint}", node_id, {
                "listener.security.protocol.map": "CLIENT:PLAINTEXT,INTERNAL:SASL_SSL",
                "inter.broker.listener.name": "INTERNAL", "sasl.enabled.mechanisms": "PLAIN",
                "sasl.plain.users.file": str(users), "sasl.mechanism.inter.broker.protocol": "PLAIN",
                "inter.broker.sasl.username": "broker", "inter.broker.sasl.password": "inter-broker-secret",
                "ssl.truststore.location": str(pki.ca_file), "ssl.keystore.location": str(pki.server_pem)})
            broker.settings["listeners"] = f"CLIENT://127.0.0.1:{broker.port},INTERNAL://127.0.0.1:{free_port()}"
            brokers.append(broker.start())
        yield brokers
    finally:
        for broker in brokers:
            broker.kill()
        etcd.kill()


def test_replication_over_a_sasl_ssl_inter_broker_listener(secured_cluster):
    bootstrap = ",".join(b.bootstrap for b in secured_cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Every replica must have each record before it is acknowledged: only followers that fetch
    # (over SASL_SSL) let a produce succeed.
    admin.create_topics([NewTopic("replicated", 1, 3, config={"min.insync.replicas": "3"})])["replicated"].result(15)
    wait_until(lambda: len(admin.list_topics("replicated", timeout=5).topics["replicated"].partitions[0].isrs) == 3,
               30, message="the followers in sync over SASL_SSL")
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 0})
    delivered: list = []
    for i in range(20):
        producer.produce("replicated", b"v%d" % i, partition=0, on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0 and delivered == [None] * 20
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                         "log_level": 0})
    consumer.assign([TopicPartition("replicated", 0, 0)])
    values = []
    try:
        wait_until(lambda: (m := consumer.poll(0.5)) is None or m.error() or values.append(m.value()) or len(values) >= 20,
                   30, message="the records read back")
    finally:
        consumer.close()
    assert values[:20] == [b"v%d" % i for i in range(20)]
    # Metadata through the client listener names the client listener's addresses.
    brokers = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
    assert {(b.host, b.port) for b in brokers.values()} == {("127.0.0.1", b.port) for b in secured_cluster}
