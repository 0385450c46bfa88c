"""``tidelog share-groups``: list, describe (members, assignments, start offsets, lag), reset the
offsets of, delete and alter the configs of share groups (KIP-932; like Kafka's kafka-share-groups.sh).

Over the Kafka protocol, so they work against any Kafka 4.2 broker too: confluent-kafka's
AdminClient where it has the API (metadata, ListOffsets, DeleteGroups), and the CLI's own requests
(kafka_requests.py) for the share-group APIs it lacks: ListGroups with the type filter,
ShareGroupDescribe, DescribeShareGroupOffsets v1 (lag, KIP-1226) and AlterShareGroupOffsets.
"""

from __future__ import annotations

import click
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kio.schema.alter_share_group_offsets.v0.request import (
    AlterShareGroupOffsetsRequest,
    AlterShareGroupOffsetsRequestPartition,
    AlterShareGroupOffsetsRequestTopic,
)
from kio.schema.describe_share_group_offsets.v1.request import (
    DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsRequestGroup,
)
from kio.schema.list_groups.v5.request import ListGroupsRequest
from kio.schema.share_group_describe.v1.request import ShareGroupDescribeRequest
from kio.static.primitive import i32, i64

from tidelog.cli.connection import CliError, Client, client_command, parse_pairs
from tidelog.cli.consume import parse_time_ms
from tidelog.cli.groups import chosen_partitions, delete_groups, reset_plan
from tidelog.cli.kafka_requests import KafkaRequests, error_name
from tidelog.cli.output import note


@click.group("share-groups")
def share_groups() -> None:
    """List, describe, reset offsets of and delete share groups (queues, KIP-932)."""


def _requests(client: Client) -> KafkaRequests:
    return KafkaRequests(client.bootstrap, client.timeout_s, client.extra)


def list_share_groups(client: Client, admin) -> list[dict]:
    """Every broker's share groups (ListGroups v5 with the type filter), by id."""
    brokers = client.metadata(admin).brokers.values()
    found: dict[str, dict] = {}
    with _requests(client) as kafka:
        for broker in brokers:
            response = kafka.request((broker.host, broker.port), ListGroupsRequest(types_filter=("share",)))
            if error_name(response.error_code) != "NONE":
                raise CliError(f"broker {broker.id}: ListGroups failed: {error_name(response.error_code)}")
            for g in response.groups:
                found[g.group_id] = {"group": g.group_id, "state": g.group_state.lower(), "type": g.group_type}
    return [found[g] for g in sorted(found)]


@share_groups.command("list")
@client_command()
def list_groups(client: Client) -> None:
    """List share groups with their states."""
    rows = list_share_groups(client, client.admin())
    if client.out.as_json:
        client.out.json(rows)
    elif client.out.rich:
        client.out.table(["group", "state"], [(r["group"], r["state"]) for r in rows])
    else:
        for r in rows:
            click.echo(r["group"])


def _start_offsets(kafka: KafkaRequests, coordinator, group: str) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(topic, partition) -> (start offset, lag or None) of every share-partition the group has."""
    response = kafka.request(coordinator, DescribeShareGroupOffsetsRequest(
        groups=(DescribeShareGroupOffsetsRequestGroup(group_id=group, topics=None),)))
    described = response.groups[0]
    if error_name(described.error_code) != "NONE":
        raise CliError(f"group {group}: {described.error_message or error_name(described.error_code)}")
    out = {}
    for topic in described.topics:
        for p in topic.partitions:
            if error_name(p.error_code) != "NONE":
                raise CliError(f"{topic.topic_name}:{p.partition_index}: {p.error_message or error_name(p.error_code)}")
            if p.start_offset >= 0:
                out[(topic.topic_name, int(p.partition_index))] = (int(p.start_offset), int(p.lag) if p.lag >= 0 else None)
    return out


def describe_share_group(client: Client, kafka: KafkaRequests, group: str) -> dict:
    coordinator = kafka.coordinator(group)
    response = kafka.request(coordinator, ShareGroupDescribeRequest(group_ids=(group,), include_authorized_operations=False))
    described = response.groups[0]
    error = error_name(described.error_code)
    if error == "GROUP_ID_NOT_FOUND":
        raise CliError(f"unknown share group: {group}")
    if error != "NONE":
        raise CliError(f"group {group}: {described.error_message or error}")
    members = []
    for m in described.members:
        assigned = sorted((t.topic_name, int(p)) for t in m.assignment.topic_partitions for p in t.partitions)
        members.append({"member_id": m.member_id, "client_id": m.client_id, "host": m.client_host,
                        "member_epoch": int(m.member_epoch), "subscribed_topics": sorted(m.subscribed_topic_names),
                        "assignment": [{"topic": t, "partition": p} for t, p in assigned]})
    starts = _start_offsets(kafka, coordinator, group)
    offsets = [{"topic": t, "partition": p, "start_offset": start, "lag": lag,
                "members": sorted(m["member_id"] for m in members if {"topic": t, "partition": p} in m["assignment"])}
               for (t, p), (start, lag) in sorted(starts.items())]
    return {
        "group": group, "state": described.group_state.lower(), "group_epoch": int(described.group_epoch),
        "assignment_epoch": int(described.assignment_epoch), "assignor": described.assignor_name or None,
        "coordinator": f"{coordinator[0]}:{coordinator[1]}", "members": members, "offsets": offsets,
        "total_lag": sum(o["lag"] or 0 for o in offsets), "queue_configs": _queue_configs(client, group),
    }


def _queue_configs(client: Client, group: str) -> dict[str, str]:
    """The group's tidelog.* configs in force (issue 14: retry back-off, filter), by DescribeConfigs
    on the GROUP resource; the per-priority counts are the HTTP API's (GET /api/v1/share-groups/{g})."""
    resource = ConfigResource(ResourceType.GROUP, group)
    admin = client.admin()  # kept while the future runs: librdkafka cancels it when the handle goes
    entries = client.result(admin.describe_configs([resource], request_timeout=client.timeout_s)[resource])
    return {e.name: e.value for e in sorted(entries.values(), key=lambda e: e.name) if e.name.startswith("tidelog.")}


@share_groups.command()
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@client_command()
def describe(client: Client, group_ids: tuple[str, ...]) -> None:
    """Members, assignments, and per partition the start offset and lag (records not yet acknowledged)."""
    with _requests(client) as kafka:
        described = [describe_share_group(client, kafka, g) for g in group_ids]
    out = client.out
    if out.as_json:
        out.json(described if len(described) > 1 else described[0])
        return
    for d in described:
        out.fields([("group", d["group"]), ("state", d["state"]), ("group epoch", d["group_epoch"]),
                    ("assignor", d["assignor"]), ("coordinator", d["coordinator"]), ("members", len(d["members"])),
                    ("total lag", d["total_lag"]),
                    ("queue configs", " ".join(f"{k}={v}" for k, v in d["queue_configs"].items()) or "-")],
                   title=f"Share group {d['group']}")
        out.table(["member", "client", "host", "epoch", "partitions"],
                  [(m["member_id"], m["client_id"], m["host"], m["member_epoch"],
                    " ".join(f"{a['topic']}:{a['partition']}" for a in m["assignment"])) for m in d["members"]],
                  title="Members")
        out.table(["topic", "partition", "start offset", "lag", "members"],
                  [(o["topic"], o["partition"], o["start_offset"], o["lag"], len(o["members"])) for o in d["offsets"]],
                  title="Share-partitions", row_styles=["yellow" if o["lag"] else None for o in d["offsets"]])


@share_groups.command("reset-offsets")
@click.argument("group")
@click.option("--topic", "-t", "topic_specs", multiple=True, metavar="TOPIC[:P,P...]", help="Partitions to reset: all of a topic, or those listed (repeatable).")
@click.option("--all-topics", is_flag=True, help="Every partition the group has a start offset for.")
@click.option("--to-earliest", "strategy", flag_value="earliest", help="To each partition's log start offset.")
@click.option("--to-latest", "strategy", flag_value="latest", help="To each partition's high watermark (skip everything).")
@click.option("--to-offset", type=int, default=None, metavar="N", help="To offset N (clamped to the partition's range).")
@click.option("--to-datetime", default=None, metavar="ISO|MS", help="To the first offset at or after this time.")
@click.option("--execute", is_flag=True, help="Set the new start offsets (without it, only show them: a dry run).")
@click.option("--dry-run", is_flag=True, help="Only show the new start offsets (the default).")
@client_command()
def reset_offsets(client: Client, group: str, topic_specs: tuple[str, ...], all_topics: bool, strategy: str | None,
                  to_offset: int | None, to_datetime: str | None, execute: bool, dry_run: bool) -> None:
    """Set where a share group starts reading (AlterShareGroupOffsets); the group must have no members.
    Records before the new start offset are never delivered; from it on, every record is Available again."""
    chosen = [s for s in (strategy, to_offset, to_datetime) if s is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime")
    if execute and dry_run:
        raise click.UsageError("--execute and --dry-run are exclusive")
    timestamp_ms = parse_time_ms(to_datetime, "--to-datetime") if to_datetime is not None else None
    admin = client.admin()
    client.metadata(admin)
    with _requests(client) as kafka:
        coordinator = kafka.coordinator(group)
        response = kafka.request(coordinator, ShareGroupDescribeRequest(group_ids=(group,), include_authorized_operations=False))
        described = response.groups[0]
        members = len(described.members) if error_name(described.error_code) == "NONE" else 0
        if members and execute:
            raise CliError(f"share group {group} has {members} member(s): its offsets can be reset only when it has none")
        starts = _start_offsets(kafka, coordinator, group) if error_name(described.error_code) == "NONE" else {}
        current = {key: start for key, (start, _lag) in starts.items()}
        keys = chosen_partitions(client, admin, topic_specs, all_topics, current)
        plan = reset_plan(client, admin, keys, current, strategy, to_offset, timestamp_ms, None)
        if execute and plan:
            _alter(kafka, coordinator, group, plan)
    out = client.out
    if out.as_json:
        out.json({"group": group, "executed": execute, "offsets": plan})
    else:
        out.table(["topic", "partition", "current start offset", "new start offset"],
                  [(r["topic"], r["partition"], r["current"], r["new"]) for r in plan],
                  title=f"Share group {group}: new start offsets" + ("" if execute else " (dry run)"))
    if not execute:
        note("Dry run: nothing changed; add --execute to set these start offsets."
             + (f" (share group {group} has {members} member(s): stop its consumers first)" if members else ""))


def _alter(kafka: KafkaRequests, coordinator, group: str, plan: list[dict]) -> None:
    topics: dict[str, list] = {}
    for r in plan:
        topics.setdefault(r["topic"], []).append(
            AlterShareGroupOffsetsRequestPartition(partition_index=i32(r["partition"]), start_offset=i64(r["new"])))
    response = kafka.request(coordinator, AlterShareGroupOffsetsRequest(group_id=group, topics=tuple(
        AlterShareGroupOffsetsRequestTopic(topic_name=t, partitions=tuple(ps)) for t, ps in topics.items())))
    if error_name(response.error_code) != "NONE":
        raise CliError(f"share group {group}: {response.error_message or error_name(response.error_code)}")
    for topic in response.responses:
        for p in topic.partitions:
            if error_name(p.error_code) != "NONE":
                raise CliError(f"{topic.topic_name}:{p.partition_index}: {p.error_message or error_name(p.error_code)}")


@share_groups.command()
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@client_command()
def delete(client: Client, group_ids: tuple[str, ...]) -> None:
    """Delete share groups and their share-partition state; a group must have no members."""
    delete_groups(client, group_ids, "share group")


@share_groups.command("alter-config")
@click.argument("group")
@click.option("--config", "-c", "configs", multiple=True, metavar="NAME=VALUE",
              help="Set a group config, e.g. share.record.lock.duration.ms=60000 or tidelog.filter='...' (repeatable).")
@click.option("--delete-config", "delete_configs", multiple=True, metavar="NAME",
              help="Remove a group config override (repeatable).")
@client_command()
def alter_config(client: Client, group: str, configs: tuple[str, ...], delete_configs: tuple[str, ...]) -> None:
    """Set or remove a share group's configs (IncrementalAlterConfigs on the GROUP resource): the share.*
    and dead-letter settings, and Tidelog's tidelog.retry.backoff.* and tidelog.filter (docs/queues.md).
    A bad value is refused with the broker's reason (a filter that does not compile: the CEL compiler's)."""
    to_set = parse_pairs(configs, "--config")
    if not to_set and not delete_configs:
        raise click.UsageError("nothing to alter: give --config or --delete-config")
    admin = client.admin()
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        *(ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in to_set.items()),
        *(ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in delete_configs),
    ])
    client.result(admin.incremental_alter_configs([resource], request_timeout=client.timeout_s)[resource])
    if client.out.as_json:
        client.out.json({"group": group, "set": to_set, "deleted": list(delete_configs)})
    else:
        client.out.done(f"Altered share group {group}.", group)
