"""The three real clients with TLS and SASL settings, each in its own library's words, and the
certificates the security tests make (PyPI trustme: a throwaway CA, never files in the repo)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KPTopicPartition

CLIENTS = ("confluent", "kafka-python", "aiokafka")


@dataclass
class Pki:
    """A CA with a server certificate (127.0.0.1, localhost) and a client certificate, as PEM files."""

    dir: Path
    ca: trustme.CA
    ca_file: Path
    server_pem: Path  # the broker's ssl.keystore.location: chain and key
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path, client_name: str = "client") -> "Pki":
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="Tidelog tests")
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server_pem = directory / "broker.pem"
        write_server_pem(ca, server_pem)
        client = ca.issue_cert(f"{client_name}@tidelog.test", common_name=client_name, organization_name="acme")
        client_cert, client_key = directory / "client-cert.pem", directory / "client-key.pem"
        client.cert_chain_pems[0].write_to_path(str(client_cert))
        client.private_key_pem.write_to_path(str(client_key))
        return cls(directory, ca, ca_file, server_pem, client_cert, client_key)

    def broker_settings(self, client_auth: str = "none") -> dict[str, str]:
        settings = {"ssl.keystore.location": str(self.server_pem)}
        if client_auth != "none":
            settings |= {"ssl.truststore.location": str(self.ca_file), "ssl.client.auth": client_auth}
        return settings


def write_server_pem(ca: trustme.CA, path: Path) -> None:
    """The broker's certificate chain and private key in one PEM file, replaced atomically."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems) + server.private_key_pem.bytes())
    tmp.replace(path)


@dataclass
class Security:
    """What a client is told: ``protocol`` as Kafka names it, TLS files, SASL mechanism and user."""

    protocol: str = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None

    def confluent(self) -> dict:
        config = {"security.protocol": self.protocol, "log_level": 0}
        if self.ca_file:
            config["ssl.ca.location"] = str(self.ca_file)
        if self.cert_file:
            config |= {"ssl.certificate.location": str(self.cert_file), "ssl.key.location": str(self.key_file)}
        if self.mechanism:
            config |= {"sasl.mechanism": self.mechanism, "sasl.username": self.username, "sasl.password": self.password}
        return config

    def kafka_python(self) -> dict:
        config = {"security_protocol": self.protocol}
        if self.ca_file:
            config["ssl_cafile"] = str(self.ca_file)
        if self.cert_file:
            config |= {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}
        if self.mechanism:
            config |= {"sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                       "sasl_plain_password": self.password}
        return config

    def aiokafka(self) -> dict:
        config = {"security_protocol": self.protocol}
        if self.ca_file:
            config["ssl_context"] = create_ssl_context(
                cafile=str(self.ca_file), certfile=str(self.cert_file) if self.cert_file else None,
                keyfile=str(self.key_file) if self.key_file else None)
        if self.mechanism:
            config |= {"sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                       "sasl_plain_password": self.password}
        return config


def round_trip(client: str, bootstrap: str, security: Security, count: int = 5, topic: str | None = None,
               timeout_s: float = 30.0) -> list[bytes]:
    """Produce ``count`` records to a new topic's partition 0 with ``client`` (acks=all) and read
    them back from offset 0 with the same client; return the values read."""
    topic = topic or f"sec-{client}-{uuid.uuid4().hex[:8]}"
    values = [f"{client}-{i}".encode() for i in range(count)]
    if client == "confluent":
        return _confluent(bootstrap, security, topic, values, timeout_s)
    if client == "kafka-python":
        return _kafka_python(bootstrap, security, topic, values, timeout_s)
    return asyncio.run(_aiokafka(bootstrap, security, topic, values, timeout_s))


def _confluent(bootstrap, security, topic, values, timeout_s):
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
                         "error_cb": errors.append, **security.confluent()})
    delivered: list = []
    for value in values:
        producer.produce(topic, value, partition=0, on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(timeout_s) == 0, f"not delivered: {errors}"
    assert delivered == [None] * len(values), delivered
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, **security.confluent()})
    consumer.assign([TopicPartition(topic, 0, 0)])
    read: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(read) < len(values) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                read.append(msg.value())
            elif msg is not None and msg.error().fatal():
                raise KafkaException(msg.error())
    finally:
        consumer.close()
    return read


def _kafka_python(bootstrap, security, topic, values, timeout_s):
    # bootstrap_timeout_ms: the constructor waits that long (30 s by default) for a first
    # connection, also when every one is refused its authentication.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", bootstrap_timeout_ms=int(timeout_s * 1000),
                             **security.kafka_python())
    try:
        for future in [producer.send(topic, value, partition=0) for value in values]:
            future.get(timeout_s)
    finally:
        producer.close(5)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **security.kafka_python())
    consumer.assign([KPTopicPartition(topic, 0)])
    consumer.seek(KPTopicPartition(topic, 0), 0)
    read: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(read) < len(values) and time.monotonic() < deadline:
            for records in consumer.poll(500).values():
                read.extend(r.value for r in records)
    finally:
        consumer.close()
    return read


async def _aiokafka(bootstrap, security, topic, values, timeout_s):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **security.aiokafka())
    await producer.start()
    try:
        for value in values:
            await asyncio.wait_for(producer.send_and_wait(topic, value, partition=0), timeout_s)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **security.aiokafka())
    await consumer.start()
    read: list[bytes] = []
    try:
        from aiokafka import TopicPartition as AIOTopicPartition

        partition = AIOTopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, 0)
        deadline = time.monotonic() + timeout_s
        while len(read) < len(values) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                read.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return read
