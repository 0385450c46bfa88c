"""``tidelog groups``: list, describe (members, assignments, lag), reset offsets of and delete
consumer groups (like kafka-consumer-groups)."""

from __future__ import annotations

import click
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec

from tidelog.cli.connection import CliError, Client, client_command
from tidelog.cli.consume import parse_time_ms
from tidelog.cli.output import note

# Offsets may be set only while no consumer is in the group (as kafka-consumer-groups requires).
_INACTIVE = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN}


@click.group()
def groups() -> None:
    """List, describe, reset offsets of and delete consumer groups."""


def _state(state) -> str:
    return state.name.lower() if hasattr(state, "name") else str(state).lower()


def committed_offsets(client: Client, admin, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets (only partitions that have one)."""
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=client.timeout_s)[group]
    result = client.result(future)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def list_offsets(client: Client, admin, keys, spec) -> dict[tuple[str, int], int]:
    if not keys:
        return {}
    futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in keys}, request_timeout=client.timeout_s)
    return {(tp.topic, tp.partition): client.result(f).offset for tp, f in futures.items()}


@groups.command("list")
@client_command()
def list_groups(client: Client) -> None:
    """List consumer groups with their states."""
    admin = client.admin()
    client.metadata(admin)
    result = client.result(admin.list_consumer_groups(request_timeout=client.timeout_s))
    rows = [{"group": g.group_id, "state": _state(g.state), "type": _state(g.type) if g.type is not None else None,
             "simple": g.is_simple_consumer_group} for g in sorted(result.valid, key=lambda g: g.group_id)]
    for error in result.errors:
        note(f"warning: {error}")
    if client.out.as_json:
        client.out.json(rows)
    elif client.out.rich:
        client.out.table(["group", "state", "type"], [(r["group"], r["state"], r["type"]) for r in rows])
    else:
        for r in rows:
            click.echo(r["group"])


def describe_group(client: Client, admin, group: str) -> dict:
    desc = client.result(admin.describe_consumer_groups([group], request_timeout=client.timeout_s)[group])
    committed = committed_offsets(client, admin, group)
    if desc.state == ConsumerGroupState.DEAD and not desc.members and not committed:
        raise CliError(f"unknown group: {group}")
    members = []
    owner: dict[tuple[str, int], dict] = {}
    for m in desc.members:
        assigned = sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else []))
        member = {"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                  "group_instance_id": m.group_instance_id,
                  "assignment": [{"topic": t, "partition": p} for t, p in assigned]}
        members.append(member)
        for key in assigned:
            owner[key] = member
    keys = sorted(set(committed) | set(owner))
    high = list_offsets(client, admin, keys, OffsetSpec.latest())
    offsets = []
    for key in keys:
        c = committed.get(key)
        member = owner.get(key)
        offsets.append({
            "topic": key[0], "partition": key[1], "committed": c, "high_watermark": high[key],
            "lag": max(0, high[key] - c) if c is not None else None,
            "member_id": member["member_id"] if member else None,
            "client_id": member["client_id"] if member else None,
            "host": member["host"] if member else None,
        })
    return {
        "group": group, "state": _state(desc.state), "protocol": desc.partition_assignor or None,
        "simple": desc.is_simple_consumer_group,
        "coordinator": desc.coordinator.id if desc.coordinator is not None else None,
        "members": members, "offsets": offsets,
        "total_lag": sum(o["lag"] or 0 for o in offsets),
    }


@groups.command()
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@client_command()
def describe(client: Client, group_ids: tuple[str, ...]) -> None:
    """Members, assignments, committed offsets and lag (high watermark - committed) per partition."""
    admin = client.admin()
    client.metadata(admin)
    described = [describe_group(client, admin, g) for g in group_ids]
    out = client.out
    if out.as_json:
        out.json(described if len(described) > 1 else described[0])
        return
    for d in described:
        out.fields([("group", d["group"]), ("state", d["state"]), ("assignor", d["protocol"]),
                    ("coordinator", d["coordinator"]), ("members", len(d["members"])), ("total lag", d["total_lag"])],
                   title=f"Group {d['group']}")
        out.table(["member", "client", "host", "instance", "partitions"],
                  [(m["member_id"], m["client_id"], m["host"], m["group_instance_id"],
                    " ".join(f"{a['topic']}:{a['partition']}" for a in m["assignment"])) for m in d["members"]],
                  title="Members")
        out.table(["topic", "partition", "committed", "high watermark", "lag", "member", "host"],
                  [(o["topic"], o["partition"], o["committed"], o["high_watermark"], o["lag"], o["member_id"], o["host"])
                   for o in d["offsets"]],
                  title="Offsets", row_styles=["yellow" if o["lag"] else None for o in d["offsets"]])


def chosen_partitions(client: Client, admin, topic_specs: tuple[str, ...], all_topics: bool, committed) -> list[tuple[str, int]]:
    """--topic T or T:0,1 (repeatable), or --all-topics (those the group has committed offsets for)."""
    if all_topics:
        if topic_specs:
            raise click.UsageError("give --topic or --all-topics, not both")
        return sorted(committed)
    if not topic_specs:
        raise click.UsageError("give --topic TOPIC[:P,P...] or --all-topics")
    md = client.metadata(admin)
    keys = []
    for spec in topic_specs:
        topic, _, parts = spec.partition(":")
        tmd = md.topics.get(topic)
        if tmd is None:
            raise CliError(f"unknown topic: {topic}")
        if parts:
            try:
                wanted = [int(p) for p in parts.split(",")]
            except ValueError:
                raise click.BadParameter(f"expected TOPIC[:P,P...], got {spec!r}", param_hint="--topic") from None
            for p in wanted:
                if p not in tmd.partitions:
                    raise CliError(f"topic {topic} has no partition {p}")
        else:
            wanted = sorted(tmd.partitions)
        keys += [(topic, p) for p in wanted]
    return sorted(set(keys))


def reset_plan(client: Client, admin, keys: list[tuple[str, int]], current: dict[tuple[str, int], int],
               strategy: str | None, to_offset: int | None, timestamp_ms: int | None, shift_by: int | None) -> list[dict]:
    """[{topic, partition, current, new}] for a reset: to the earliest or latest offset, an offset, the
    first at or after a time, or ``current`` shifted (the log start where there is none); clamped to
    each partition's log."""
    low = list_offsets(client, admin, keys, OffsetSpec.earliest())
    high = list_offsets(client, admin, keys, OffsetSpec.latest())
    if strategy == "earliest":
        target = dict(low)
    elif strategy == "latest":
        target = dict(high)
    elif to_offset is not None:
        target = {k: to_offset for k in keys}
    elif timestamp_ms is not None:
        found = list_offsets(client, admin, keys, OffsetSpec.for_timestamp(timestamp_ms))
        target = {k: found[k] if found[k] >= 0 else high[k] for k in keys}
    else:
        target = {k: current.get(k, low[k]) + shift_by for k in keys}
    return [{"topic": t, "partition": p, "current": current.get((t, p)),
             "new": min(max(target[(t, p)], low[(t, p)]), high[(t, p)])} for t, p in keys]


@groups.command("reset-offsets")
@click.argument("group")
@click.option("--topic", "-t", "topic_specs", multiple=True, metavar="TOPIC[:P,P...]", help="Partitions to reset: all of a topic, or those listed (repeatable).")
@click.option("--all-topics", is_flag=True, help="Every partition the group has committed offsets for.")
@click.option("--to-earliest", "strategy", flag_value="earliest", help="To each partition's log start offset.")
@click.option("--to-latest", "strategy", flag_value="latest", help="To each partition's high watermark (skip everything).")
@click.option("--to-offset", type=int, default=None, metavar="N", help="To offset N (clamped to the partition's range).")
@click.option("--to-datetime", default=None, metavar="ISO|MS", help="To the first offset at or after this time.")
@click.option("--shift-by", type=int, default=None, metavar="N", help="Move the committed offset by N (negative: back).")
@click.option("--execute", is_flag=True, help="Commit the new offsets (without it, only show them: a dry run).")
@click.option("--dry-run", is_flag=True, help="Only show the new offsets (the default).")
@client_command()
def reset_offsets(client: Client, group: str, topic_specs: tuple[str, ...], all_topics: bool, strategy: str | None,
                  to_offset: int | None, to_datetime: str | None, shift_by: int | None, execute: bool, dry_run: bool) -> None:
    """Set a group's committed offsets; the group must have no active members."""
    chosen = [s for s in (strategy, to_offset, to_datetime, shift_by) if s is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by")
    if execute and dry_run:
        raise click.UsageError("--execute and --dry-run are exclusive")
    timestamp_ms = parse_time_ms(to_datetime, "--to-datetime") if to_datetime is not None else None
    admin = client.admin()
    client.metadata(admin)
    desc = client.result(admin.describe_consumer_groups([group], request_timeout=client.timeout_s)[group])
    active = desc.state not in _INACTIVE
    if active and execute:
        raise CliError(f"group {group} is {_state(desc.state)} with {len(desc.members)} member(s): "
                       "offsets can be reset only when no consumer is in the group")
    committed = committed_offsets(client, admin, group)
    keys = chosen_partitions(client, admin, topic_specs, all_topics, committed)
    plan = reset_plan(client, admin, keys, committed, strategy, to_offset, timestamp_ms, shift_by)
    if execute and plan:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(r["topic"], r["partition"], r["new"]) for r in plan])
        result = client.result(admin.alter_consumer_group_offsets([request], request_timeout=client.timeout_s)[group])
        for tp in result.topic_partitions or []:
            if tp.error is not None:
                raise CliError(f"{tp.topic}:{tp.partition}: {tp.error.str()}")
    out = client.out
    if out.as_json:
        out.json({"group": group, "executed": execute, "offsets": plan})
    else:
        out.table(["topic", "partition", "current offset", "new offset"],
                  [(r["topic"], r["partition"], r["current"], r["new"]) for r in plan],
                  title=f"Group {group}: new offsets" + ("" if execute else " (dry run)"))
    if not execute:
        note("Dry run: nothing changed; add --execute to commit these offsets."
             + (f" (group {group} is {_state(desc.state)}: stop its consumers first)" if active else ""))


@groups.command()
@click.argument("group_ids", metavar="GROUP...", nargs=-1, required=True)
@client_command()
def delete(client: Client, group_ids: tuple[str, ...]) -> None:
    """Delete groups and their committed offsets; a group must have no active members."""
    delete_groups(client, group_ids, "group")


def delete_groups(client: Client, group_ids: tuple[str, ...], kind: str) -> None:
    """DeleteGroups (consumer or share groups alike), reporting each as ``kind``."""
    admin = client.admin()
    client.metadata(admin)
    futures = admin.delete_consumer_groups(list(group_ids), request_timeout=client.timeout_s)
    deleted = []
    for group, future in futures.items():
        try:
            client.result(future)
        except CliError as e:
            raise CliError(f"{kind} {group}: {e.message}") from None
        deleted.append(group)
    if client.out.as_json:
        client.out.json({"deleted": deleted})
    else:
        for group in deleted:
            client.out.done(f"Deleted {kind} {group}.", group)
