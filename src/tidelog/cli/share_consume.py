"""``tidelog consume TOPIC --share-group G``: take records from a share group (KIP-932) as one of its
consumers, with confluent-kafka's ShareConsumer, and acknowledge each record printed.

Records are acknowledged explicitly: each printed one with ``--ack`` (accept by default; release
puts it back for another consumer, reject archives or dead-letters it), and records a poll
returned beyond ``--max-messages`` are released, so nothing is taken that was not printed. The
acknowledgements are committed after each poll's records are printed and when the consumer
closes, which also leaves the group.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import AcknowledgeType, KafkaError, ShareConsumer

from tidelog.cli.connection import CliError, Client, describe_error
from tidelog.cli.consume import record_json, render_template

ACK_TYPES = {"accept": AcknowledgeType.ACCEPT, "release": AcknowledgeType.RELEASE, "reject": AcknowledgeType.REJECT}


def consume_share_group(client: Client, topic: str, group: str, ack: str, as_json: bool, template: str | None,
                        max_messages: int | None) -> int:
    """Print records of ``topic`` taken as a member of share group ``group``; the count printed."""
    consumer = ShareConsumer(client.config(**{
        "group.id": group,
        "share.acknowledgement.mode": "explicit",
        "socket.connection.setup.timeout.ms": max(1000, int(client.timeout_s * 1000)),
    }))
    try:
        client.topic_metadata(client.admin(), topic)  # an unknown topic is an error, not a wait
        consumer.subscribe([topic])
        return _print_records(consumer, client, ACK_TYPES[ack], as_json, template, max_messages)
    finally:
        consumer.close()


def _print_records(consumer, client: Client, ack_type, as_json: bool, template: str | None,
                   max_messages: int | None) -> int:
    out = sys.stdout.buffer
    count = 0
    idle_limit = client.timeout_given
    last = time.monotonic()
    while max_messages is None or count < max_messages:
        messages = consumer.poll(0.5)
        if not messages:
            if idle_limit is not None and time.monotonic() - last >= idle_limit:
                break
            continue
        last = time.monotonic()
        for msg in messages:
            if msg.error():
                error = msg.error()
                if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                    raise CliError(f"unknown topic: {msg.topic()}")
                if error.fatal() or not error.retriable():
                    raise CliError(describe_error(error))
                continue
            if max_messages is not None and count >= max_messages:
                consumer.acknowledge(msg, AcknowledgeType.RELEASE)  # not printed: someone else's
                continue
            if as_json:
                record = json.loads(record_json(msg))
                record["delivery_count"] = msg.delivery_count()
                out.write(json.dumps(record).encode() + b"\n")
            elif template is not None:
                out.write(render_template(template, msg))
            else:
                out.write((msg.value() or b"") + b"\n")
            out.flush()
            consumer.acknowledge(msg, ack_type)
            count += 1
        _commit(consumer, client)
    return count


def _commit(consumer, client: Client) -> None:
    for tp, error in (consumer.commit_sync(client.timeout_s) or {}).items():
        if error is not None:
            raise CliError(f"acknowledging records of {tp.topic}:{tp.partition} failed: {error}")
