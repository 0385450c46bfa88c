"""``tidelog transactions``: list and describe transactional ids (like kafka-transactions.sh).

``list`` asks every broker (ListTransactions: each answers for the ids it coordinates),
``describe`` asks each id's coordinator (FindCoordinator key type 1, then DescribeTransactions).
librdkafka's admin client has neither request, so these speak the Kafka protocol directly over
a small client connection (cluster/broker_channel.py); they work against any Kafka 3.0+ broker.
"""

from __future__ import annotations

import asyncio
import datetime

import click

from tidelog.cli.connection import CliError, Client, client_command
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.apis import build, request_type
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.reader import Reader

FIND_COORDINATOR, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 10, 65, 66
KEY_TYPE_TRANSACTION = 1


@click.group()
def transactions() -> None:
    """List and describe transactional ids and their open transactions."""


def _brokers(client: Client) -> list[tuple[int, str, int]]:
    metadata = client.metadata(client.admin())
    return sorted((b.id, b.host, b.port) for b in metadata.brokers.values())


async def _request(host: str, port: int, api_key: int, version: int, request, timeout_s: float, raw: bool = False):
    channel = BrokerChannel(host, port, "tidelog-cli")
    try:
        if raw:
            return bytes(await channel.request_body(api_key, version, request, timeout_s))
        return await channel.request(api_key, version, request, timeout_s)
    except (OSError, EOFError, TimeoutError) as e:
        raise CliError(f"broker {host}:{port} did not answer: {e or type(e).__name__}") from None
    finally:
        channel.close()


def _error(code) -> str | None:
    error = ErrorCode(code)
    return None if error is ErrorCode.none else error.name.upper()


@transactions.command("list")
@click.option("--state", "states", multiple=True, help="Only ids in this state (Ongoing, PrepareCommit, ...); repeatable.")
@click.option("--producer-id", "producer_ids", type=int, multiple=True, help="Only this producer id; repeatable.")
@click.option("--open-longer-than-ms", "duration_ms", type=int, default=-1,
              help="Only transactions open for longer than this (ListTransactions v1).")
@client_command()
def list_transactions(client: Client, states: tuple[str, ...], producer_ids: tuple[int, ...], duration_ms: int) -> None:
    """Every transactional id the brokers coordinate: coordinator, producer id, state."""
    brokers = _brokers(client)
    request = build(request_type(LIST_TRANSACTIONS, 1), state_filters=states, producer_id_filters=producer_ids,
                    duration_filter=duration_ms)

    async def ask_all():
        return await asyncio.gather(*(_request(host, port, LIST_TRANSACTIONS, 1, request, client.timeout_s)
                                      for _, host, port in brokers))

    rows = []
    for (node_id, _, _), response in zip(brokers, asyncio.run(ask_all())):
        if _error(response.error_code):
            raise CliError(f"broker {node_id}: {_error(response.error_code)}")
        rows += [{"transactional_id": t.transactional_id, "coordinator": node_id, "producer_id": t.producer_id,
                  "state": t.transaction_state} for t in response.transaction_states]
    rows.sort(key=lambda r: r["transactional_id"])
    if client.out.as_json:
        client.out.json(rows)
    elif client.out.rich:
        client.out.table(["transactional id", "coordinator", "producer id", "state"],
                         [(r["transactional_id"], r["coordinator"], r["producer_id"], r["state"]) for r in rows])
    else:
        for r in rows:
            click.echo(f"{r['transactional_id']}\t{r['coordinator']}\t{r['producer_id']}\t{r['state']}")


def _describe(client: Client, transactional_id: str) -> dict:
    _, host, port = _brokers(client)[0]
    find = build(request_type(FIND_COORDINATOR, 4), key_type=KEY_TYPE_TRANSACTION, coordinator_keys=(transactional_id,))
    (coordinator,) = asyncio.run(_request(host, port, FIND_COORDINATOR, 4, find, client.timeout_s)).coordinators
    if _error(coordinator.error_code):
        raise CliError(f"{transactional_id}: no coordinator: {_error(coordinator.error_code)}")
    request = build(request_type(DESCRIBE_TRANSACTIONS, 0), transactional_ids=(transactional_id,))
    body = asyncio.run(_request(coordinator.host, coordinator.port, DESCRIBE_TRANSACTIONS, 0, request,
                                client.timeout_s, raw=True))
    try:
        error, state, timeout_ms, start_ms, producer_id, producer_epoch, partitions = _read_description(body)
    except ValueError as e:
        raise CliError(f"{transactional_id}: unreadable DescribeTransactions response: {e}") from None
    if _error(error):
        raise CliError(f"{transactional_id}: {_error(error)}")
    return {
        "transactional_id": transactional_id, "coordinator": coordinator.node_id, "state": state,
        "producer_id": producer_id, "producer_epoch": producer_epoch, "timeout_ms": timeout_ms,
        "start_time_ms": start_ms if start_ms >= 0 else None,
        "partitions": [{"topic": topic, "partition": p} for topic, p in partitions],
    }


def _read_description(body) -> tuple:
    """The one TransactionState of a DescribeTransactions v0 response, read by hand: kio cannot
    decode the start time -1 (no transaction yet) that Kafka sends."""
    r = Reader(body)
    r.i32()  # throttle time
    if r.uvarint() != 2:
        raise ValueError("expected one transaction state")
    error = r.i16()
    r.compact_string()  # the id asked for
    state = r.compact_string()
    timeout_ms, start_ms, producer_id, producer_epoch = r.i32(), r.i64(), r.i64(), r.i16()
    partitions = []
    for _ in range(r.uvarint() - 1):
        topic = r.compact_string()
        partitions += [(topic, r.i32()) for _ in range(r.uvarint() - 1)]
        r.tagged_fields()
    return error, state, timeout_ms, start_ms, producer_id, producer_epoch, partitions


@transactions.command()
@click.argument("transactional_ids", metavar="TRANSACTIONAL_ID...", nargs=-1, required=True)
@client_command()
def describe(client: Client, transactional_ids: tuple[str, ...]) -> None:
    """State, producer id and epoch, timeout, start time and partitions of each id's transaction."""
    described = [_describe(client, t) for t in transactional_ids]
    out = client.out
    if out.as_json:
        out.json(described if len(described) > 1 else described[0])
        return
    for d in described:
        started = (datetime.datetime.fromtimestamp(d["start_time_ms"] / 1000, datetime.timezone.utc).isoformat()
                   if d["start_time_ms"] is not None else None)
        out.fields([("transactional id", d["transactional_id"]), ("coordinator", d["coordinator"]),
                    ("state", d["state"]), ("producer id", d["producer_id"]), ("producer epoch", d["producer_epoch"]),
                    ("timeout ms", d["timeout_ms"]), ("started", started)],
                   title=f"Transaction {d['transactional_id']}")
        out.table(["topic", "partition"], [(p["topic"], p["partition"]) for p in d["partitions"]], title="Partitions")
