"""``tidelog consume TOPIC``: print records (like kafka-console-consumer and kcat -C).

Without ``--group`` the consumer assigns partitions itself and commits nothing; with
``--group`` it joins that consumer group (or, with ``--partition``, commits under it).
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import time
import uuid

import click
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition

from tidelog.cli.connection import CliError, Client, client_command, describe_error
from tidelog.cli.output import note
from tidelog.http.codec import record_to_json

# confluent-kafka's timestamp types (1 create time, 2 log append time) by Kafka's names.
_TIMESTAMP_TYPES = {1: "CreateTime", 2: "LogAppendTime"}

_TEMPLATE_CODES = re.compile(r"%[tpoTkvhKS%]|\\[ntr\\]")


def parse_time_ms(text: str, option: str) -> int:
    """Milliseconds since the epoch, or an ISO 8601 date-time (UTC unless it says otherwise);
    a usage error naming ``option`` otherwise."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"expected milliseconds since the epoch or an ISO 8601 date-time, got {text!r}",
                                 param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


def record_json(msg) -> str:
    """A record as the HTTP API gives it (tidelog.http.codec.record_to_json), with its topic and
    partition first."""
    ts_type, ts = msg.timestamp()
    record = record_to_json(msg.offset(), ts if ts_type else -1, _TIMESTAMP_TYPES.get(ts_type, "CreateTime"),
                            msg.key(), msg.value(), msg.headers() or [])
    return json.dumps({"topic": msg.topic(), "partition": msg.partition(), **record})


def render_template(template: str, msg) -> bytes:
    """kcat's -f codes: %t topic, %p partition, %o offset, %T timestamp (ms), %k key, %v value,
    %h headers (k=v,...), %K key length, %S value length, %% a percent; \\n \\t \\r \\\\ escapes."""

    def code(m: re.Match) -> bytes:
        c = m.group(0)
        key, value = msg.key() or b"", msg.value() or b""
        return {
            "%t": msg.topic().encode(), "%p": str(msg.partition()).encode(), "%o": str(msg.offset()).encode(),
            "%T": str(msg.timestamp()[1]).encode(), "%k": key, "%v": value,
            "%h": b",".join(k.encode() + b"=" + (v or b"") for k, v in msg.headers() or []),
            "%K": str(len(msg.key()) if msg.key() is not None else -1).encode(),
            "%S": str(len(msg.value()) if msg.value() is not None else -1).encode(),
            "%%": b"%", "\\n": b"\n", "\\t": b"\t", "\\r": b"\r", "\\\\": b"\\",
        }[c]

    out, pos = [], 0
    for m in _TEMPLATE_CODES.finditer(template):
        out.append(template[pos:m.start()].encode())
        out.append(code(m))
        pos = m.end()
    out.append(template[pos:].encode())
    return b"".join(out)


def _start_offset(offset: str | None, from_beginning: bool, group: str | None) -> str | int | None:
    """'beginning', 'end', an int (negative: that many before the end) or None (group's committed)."""
    if offset is not None:
        word = offset.lower()
        if word in ("beginning", "earliest"):
            return "beginning"
        if word in ("end", "latest"):
            return "end"
        try:
            return int(offset)
        except ValueError:
            raise click.BadParameter(f"expected beginning, end or a number, got {offset!r}", param_hint="--offset") from None
    if group:  # the committed offsets; --from-beginning only where there are none
        return None
    return "beginning" if from_beginning else "end"


def _resolve(consumer, client: Client, tps: list[TopicPartition], start, from_time_ms: int | None) -> list[TopicPartition]:
    """Concrete start offsets for assigned partitions."""
    if from_time_ms is not None:
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, from_time_ms) for tp in tps], timeout=client.timeout_s)
        # No record at or after that time: start at the end, for records still to come.
        return [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]
    if start == "beginning":
        return [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps]
    if start == "end":
        return [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in tps]
    if isinstance(start, int):
        resolved = []
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=client.timeout_s)
            wanted = start if start >= 0 else high + start
            resolved.append(TopicPartition(tp.topic, tp.partition, min(max(wanted, low), high)))
        return resolved
    return tps


@click.command(short_help="Print a topic's records (value, JSON or a template).")
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest record (with --group: when it has no committed offset).")
@click.option("--offset", "-o", default=None, metavar="N|-N|beginning|end",
              help="Start at offset N of each partition, N before the end (-N), the beginning or the end.")
@click.option("--from-time", default=None, metavar="ISO|MS", help="Start at the first record at or after this time (ISO 8601 or epoch ms).")
@click.option("--partition", "-p", "partitions", multiple=True, type=click.IntRange(min=0), help="Read only this partition (repeatable).")
@click.option("--group", "-g", default=None, help="Consume as this consumer group, committing offsets.")
@click.option("--share-group", "-s", default=None, metavar="GROUP",
              help="Take records as a consumer of this share group (a queue), acknowledging each printed.")
@click.option("--ack", type=click.Choice(["accept", "release", "reject"]), default=None,
              help="With --share-group: how printed records are acknowledged (default accept).")
@click.option("--max-messages", "-n", type=click.IntRange(min=1), default=None, help="Stop after this many records.")
@click.option("--exit-at-end", "-e", is_flag=True, help="Stop when every partition is read to its end.")
@click.option("--format", "-F", "template", default=None, metavar="TEMPLATE",
              help=r"kcat-style template: %t %p %o %T %k %v %h %K %S, \n \t (a newline is added unless it ends in \n).")
@client_command(timeout_default=None,
                timeout_help="Stop when no record arrives for this long (default: wait for ever); also the connect timeout.")
def consume(client: Client, topic: str, from_beginning: bool, offset: str | None, from_time: str | None,
            partitions: tuple[int, ...], group: str | None, share_group: str | None, ack: str | None,
            max_messages: int | None, exit_at_end: bool, template: str | None) -> None:
    """Print records of TOPIC: values one a line (default), --json (a JSON object a line with
    topic, partition, offset, timestamp, key, headers, value) or a --format template."""
    as_json = client.out.as_json
    if as_json and template:
        raise click.UsageError("--json and --format are exclusive")
    if sum(x is not None and x is not False for x in (offset, from_time, from_beginning or None)) > 1:
        raise click.UsageError("give one of --from-beginning, --offset, --from-time")
    if template is not None and not template.endswith("\\n"):
        template += "\\n"
    if share_group is not None:
        _consume_share_group(client, topic, share_group, ack, as_json, template, max_messages,
                             {"--from-beginning": from_beginning, "--offset": offset, "--from-time": from_time,
                              "--partition": partitions, "--group": group, "--exit-at-end": exit_at_end})
        return
    if ack is not None:
        raise click.UsageError("--ack is for --share-group")
    from_time_ms = parse_time_ms(from_time, "--from-time") if from_time is not None else None
    start = _start_offset(offset, from_beginning, group)

    consumer = client.consumer(**{
        "group.id": group or f"tidelog-cli-{uuid.uuid4()}",
        "enable.auto.commit": group is not None,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.partition.eof": exit_at_end,
        # The end is known when a fetch comes back empty: do not let the broker hold it long.
        "fetch.wait.max.ms": 100 if exit_at_end else 500,
        "socket.connection.setup.timeout.ms": max(1000, int(client.timeout_s * 1000)),
    })
    try:
        tmd = client.topic_metadata(consumer, topic)
        for p in partitions:
            if p not in tmd.partitions:
                raise CliError(f"topic {topic} has no partition {p} (it has {len(tmd.partitions)})")
        chosen = sorted(partitions) if partitions else sorted(tmd.partitions)
        if group and not partitions:
            explicit = start is not None or from_time_ms is not None

            def on_assign(c, assigned):
                if explicit:
                    c.assign(_resolve(c, client, assigned, start, from_time_ms))

            consumer.subscribe([topic], on_assign=on_assign)
        else:
            consumer.assign(_resolve(consumer, client, [TopicPartition(topic, p) for p in chosen], start, from_time_ms))
        count = _print_records(consumer, client, as_json, template, max_messages, exit_at_end)
    except KeyboardInterrupt:
        count = None
    finally:
        consumer.close()
    if count is not None and sys.stderr.isatty():
        note(f"Processed {count} record{'s' if count != 1 else ''}.", "cyan")


def _consume_share_group(client: Client, topic: str, share_group: str, ack: str | None, as_json: bool,
                         template: str | None, max_messages: int | None, others: dict) -> None:
    given = [name for name, value in others.items() if value not in (None, False, ())]
    if given:
        raise click.UsageError(f"{', '.join(given)}: not with --share-group (a share group's consumers take records "
                               "where the group is; its share.auto.offset.reset decides where it starts)")
    from tidelog.cli.share_consume import consume_share_group

    try:
        count = consume_share_group(client, topic, share_group, ack or "accept", as_json, template, max_messages)
    except KeyboardInterrupt:
        count = None
    if count is not None and sys.stderr.isatty():
        note(f"Processed {count} record{'s' if count != 1 else ''}.", "cyan")


def _print_records(consumer, client: Client, as_json: bool, template: str | None, max_messages: int | None,
                   exit_at_end: bool) -> int:
    out = sys.stdout.buffer
    count = 0
    at_end: set[int] = set()
    idle_limit = client.timeout_given
    last = time.monotonic()
    while max_messages is None or count < max_messages:
        msg = consumer.poll(0.2)
        if msg is None:
            if idle_limit is not None and time.monotonic() - last >= idle_limit:
                break
            continue
        last = time.monotonic()
        if msg.error():
            code = msg.error().code()
            if code == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                assigned = {tp.partition for tp in consumer.assignment()}
                if exit_at_end and assigned and at_end >= assigned:
                    break
                continue
            if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise CliError(f"unknown topic: {msg.topic()}")
            if msg.error().fatal() or not msg.error().retriable():
                raise CliError(describe_error(msg.error()))
            continue
        at_end.discard(msg.partition())
        if as_json:
            out.write(record_json(msg).encode() + b"\n")
        elif template is not None:
            out.write(render_template(template, msg))
        else:
            out.write((msg.value() or b"") + b"\n")
        out.flush()
        count += 1
    return count
