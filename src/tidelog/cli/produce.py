"""``tidelog produce TOPIC``: one record per input line (like kafka-console-producer and kcat -P)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import BinaryIO, Iterator

import click
from confluent_kafka import KafkaError

from tidelog.cli.connection import CliError, Client, client_command, describe_error, parse_pairs
from tidelog.cli.output import note


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield line


@contextlib.contextmanager
def _progress(path: str):
    """A progress bar over the file's bytes, for a person watching (stderr a terminal)."""
    if path == "-" or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("[cyan]producing", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("produce", total=os.path.getsize(path))
        yield lambda n: progress.advance(task, n)


def _split(line: bytes, separator: bytes | None, number: int) -> tuple[bytes | None, bytes]:
    if separator is None:
        return None, line
    key, found, value = line.partition(separator)
    if not found:
        raise CliError(f"line {number} has no key separator {separator.decode(errors='replace')!r}")
    return key, value


def _produce(producer, topic, value, key, headers, partition, on_delivery) -> None:
    extra = {"partition": partition} if partition is not None else {}
    while True:
        try:
            producer.produce(topic, value, key, headers=headers or None, on_delivery=on_delivery, **extra)
            break
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.1)
    producer.poll(0)


@click.command(short_help="Write lines of stdin or a file to a topic.")
@click.argument("topic")
@click.option("--file", "-f", "path", type=click.Path(exists=True, dir_okay=False, allow_dash=True), default="-",
              help="Read records from this file instead of stdin.")
@click.option("--key-separator", "-K", default=None, metavar="SEP",
              help="Each line is KEY SEP VALUE (split at the first SEP); without this option lines have no key.")
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME=VALUE", help="A header on every record (repeatable).")
@click.option("--partition", "-p", type=click.IntRange(min=0), default=None, help="Write every record to this partition (default: by key, else spread).")
@click.option("--acks", type=click.Choice(["0", "1", "all", "-1"]), default="all", show_default=True)
@click.option("--compression", type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]), default="none", show_default=True)
@click.option("--linger-ms", type=click.IntRange(min=0), default=5, show_default=True, help="How long the producer waits to fill a batch.")
@client_command(timeout_help="Fail records not acknowledged within this time.")
def produce(client: Client, topic: str, path: str, key_separator: str | None, headers: tuple[str, ...],
            partition: int | None, acks: str, compression: str, linger_ms: int) -> None:
    """Write lines from stdin (or --file) to TOPIC, one record per line; prints the count."""
    header_list = [(k, v.encode()) for k, v in parse_pairs(headers, "--header").items()]
    separator = key_separator.encode() if key_separator is not None else None
    producer = client.producer(**{
        "acks": acks,
        "compression.type": compression,
        "linger.ms": linger_ms,
        "message.timeout.ms": max(1, int(client.timeout_s * 1000)),
    })
    tmd = client.topic_metadata(producer, topic, auto_create=True)
    if partition is not None and partition not in tmd.partitions:
        raise CliError(f"topic {topic} has no partition {partition} (it has {len(tmd.partitions)})")

    delivered = 0
    errors: list[KafkaError] = []

    def on_delivery(err, msg) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            errors.append(err)

    if path == "-" and sys.stdin.isatty():
        note(f"Type records for {topic}, one a line; Ctrl-D to finish.", "cyan")
    sent = 0
    try:
        with click.open_file(path, "rb") as stream, _progress(path) as advance:
            for number, line in enumerate(_lines(stream), 1):
                key, value = _split(line, separator, number)
                _produce(producer, topic, value, key, header_list, partition, on_delivery)
                sent += 1
                advance(len(line) + 1)
                if errors:
                    break
    except KeyboardInterrupt:  # keep what was sent so far
        pass
    remaining = producer.flush(client.timeout_s + 1)
    failed = len(errors) + remaining
    if client.out.as_json:
        client.out.json({"topic": topic, "produced": delivered, "failed": failed})
    else:
        client.out.done(f"Produced {delivered} record{'s' if delivered != 1 else ''} to {topic}.", str(delivered))
    if errors:
        raise client.error(errors[0]) if errors[0].code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT) else CliError(
            f"{failed} of {sent} records not produced: {describe_error(errors[0])}")
    if remaining:
        raise CliError(f"{remaining} of {sent} records not acknowledged within {client.timeout_s:g}s")
