"""``tidelog topics``: list, create, describe, alter and delete topics (like kafka-topics)."""

from __future__ import annotations

import datetime
import urllib.parse

import click
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from tidelog.cli.connection import CliError, Client, client_command, parse_pairs
from tidelog.cli.http_api import HttpAccess, HttpApi, http_access_options
from tidelog.cli.output import note
from tidelog.protocol.topics import is_internal


@click.group()
def topics() -> None:
    """List, create, describe, alter and delete topics."""


def watermarks(client: Client, admin, partitions: list[TopicPartition]) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    """(log start offset, high watermark) of each partition, two ListOffsets requests in all;
    (None, None) for a partition whose leader does not answer (offline)."""
    if not partitions:
        return {}
    low = admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions}, request_timeout=client.timeout_s)
    high = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=client.timeout_s)
    marks = {}
    for tp in partitions:
        try:
            marks[(tp.topic, tp.partition)] = (client.result(low[tp]).offset, client.result(high[tp]).offset)
        except CliError:
            marks[(tp.topic, tp.partition)] = (None, None)
    return marks


@topics.command("list")
@click.option("--internal", is_flag=True, help="Include internal topics (__consumer_offsets, ...).")
@client_command()
def list_topics(client: Client, internal: bool) -> None:
    """List topics with their partition counts."""
    md = client.metadata(client.admin())
    rows = []
    for name in sorted(md.topics):
        tmd = md.topics[name]
        if is_internal(name) and not internal:
            continue
        rf = max((len(p.replicas) for p in tmd.partitions.values()), default=0)
        rows.append({"name": name, "partitions": len(tmd.partitions), "replication_factor": rf, "internal": is_internal(name)})
    if client.out.as_json:
        client.out.json(rows)
    elif client.out.rich:
        client.out.table(["topic", "partitions", "replication factor"],
                         [(r["name"], r["partitions"], r["replication_factor"]) for r in rows])
    else:
        for r in rows:  # one name a line, as kafka-topics --list
            click.echo(r["name"])


@topics.command()
@click.argument("topic")
@click.option("--partitions", "-p", type=click.IntRange(min=1), default=None, help="Partition count (default: the broker's num.partitions).")
@click.option("--replication-factor", "-r", type=click.IntRange(min=1), default=None, help="Replicas per partition (default: the broker's default.replication.factor).")
@click.option("--config", "-c", "configs", multiple=True, metavar="NAME=VALUE", help="A topic config, e.g. retention.ms=86400000 (repeatable).")
@click.option("--if-not-exists", is_flag=True, help="Succeed if the topic exists already.")
@client_command()
def create(client: Client, topic: str, partitions: int | None, replication_factor: int | None, configs: tuple[str, ...], if_not_exists: bool) -> None:
    """Create a topic."""
    new = NewTopic(topic, num_partitions=partitions or -1, replication_factor=replication_factor or -1,
                   config=parse_pairs(configs, "--config"))
    admin = client.admin()
    client.metadata(admin)  # a clear error when no broker answers
    future = admin.create_topics([new], request_timeout=client.timeout_s)[topic]
    try:
        client.result(future)
        created = True
    except CliError as e:
        if not (if_not_exists and "TOPIC_ALREADY_EXISTS" in e.message):
            raise
        created = False
    if client.out.as_json:
        client.out.json({"topic": topic, "created": created})
    else:
        client.out.done(f"Created topic {topic}." if created else f"Topic {topic} exists already.", topic)


@topics.command()
@click.argument("topic_names", metavar="TOPIC...", nargs=-1, required=True)
@click.option("--if-exists", is_flag=True, help="Succeed if a topic does not exist.")
@client_command()
def delete(client: Client, topic_names: tuple[str, ...], if_exists: bool) -> None:
    """Delete topics and all their records."""
    admin = client.admin()
    client.metadata(admin)
    futures = admin.delete_topics(list(topic_names), operation_timeout=client.timeout_s, request_timeout=client.timeout_s)
    deleted = []
    for name, future in futures.items():
        try:
            client.result(future)
            deleted.append(name)
        except CliError as e:
            if not (if_exists and "UNKNOWN_TOPIC" in e.message):
                raise CliError(f"{name}: {e.message}") from None
    if client.out.as_json:
        client.out.json({"deleted": deleted})
    else:
        for name in deleted:
            client.out.done(f"Deleted topic {name}.", name)


def http_topic(client: Client, http: str, access: HttpAccess, topic: str) -> dict:
    """The topic as the broker whose HTTP API is at ``http`` describes it (GET /api/v1/topics/{topic}):
    the log cleaner's state of its replicas (no Kafka API carries it; Kafka shows it as JMX
    metrics) and a delay topic's movers (issue 14). ``access``: --cacert, --user, --token."""
    path = f"/api/v1/topics/{urllib.parse.quote(topic, safe='')}"
    api = HttpApi(http, client.timeout_s, access, option="--http")  # a malformed --http or --cacert says so itself
    try:
        return api.call("GET", path)
    except CliError as e:
        raise CliError(f"--http {http}: GET {path}: {e.message}") from None


def _ms_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _delay_state(p: dict) -> str:
    if p["state"] == "failing" and p["failing_since_ms"] is not None:
        return f"failing since {_ms_time(p['failing_since_ms'])}"
    return {"waiting": "waiting for next due", "not_leader": "not led here", "no_target": "no target topic"}.get(
        p["state"], p["state"])


def _delay_progress(p: dict) -> str:
    """The mover's committed progress (offset in group __tidelog-delay-mover) and where it started from."""
    committed = "-" if p.get("committed_offset") is None else str(p["committed_offset"])
    return committed + (f" ({p['recovered_from']})" if p.get("recovered_from") else "")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@topics.command()
@click.argument("topic_names", metavar="TOPIC...", nargs=-1, required=True)
@click.option("--all-configs", is_flag=True, help="Show every config, not only those set on the topic or broker.")
@click.option("--http", "--url", "http", envvar="TIDELOG_HTTP", default=None, metavar="URL",
              help="A broker's HTTP API (e.g. http://127.0.0.1:8080; env TIDELOG_HTTP): show the log cleaner's state "
                   "of compacted topics (dirty ratio, cleanable bytes, last cleaned offset) on that broker's replicas, "
                   "a delay topic's movers (records waiting, next due time, moved, lost, state), and for a replicated "
                   "topic the backlog (bytes above the high watermark, held producers) of the partitions that broker leads.")
@http_access_options
@client_command()
def describe(client: Client, topic_names: tuple[str, ...], all_configs: bool, http: str | None,
             http_access: HttpAccess) -> None:
    """Partitions (leader, replicas, ISR, watermarks), configs (with their sources) and, with --http,
    the log cleaner's state of compacted topics, a delay topic's movers and a replicated topic's
    backlog above the high watermark (replica.backlog.max.bytes) where that broker leads."""
    admin = client.admin()
    described = []
    for name in topic_names:
        tmd = client.topic_metadata(admin, name)
        led = [TopicPartition(name, p) for p in sorted(tmd.partitions) if tmd.partitions[p].leader >= 0]
        marks = watermarks(client, admin, led)
        resource = ConfigResource(ResourceType.TOPIC, name)
        entries = client.result(admin.describe_configs([resource], request_timeout=client.timeout_s)[resource])
        partitions = []
        for p in sorted(tmd.partitions):
            pmd = tmd.partitions[p]
            low, high = marks.get((name, p), (None, None))
            partitions.append({
                # librdkafka reports a partition without a leader as -1 (or -1001, "none", once the
                # leader's node is gone): null in JSON, "none" in tables.
                "partition": p, "leader": pmd.leader if pmd.leader >= 0 else None, "replicas": list(pmd.replicas), "isr": list(pmd.isrs),
                "log_start_offset": low, "high_watermark": high, "records": None if high is None else high - low,
                "error": None if pmd.error is None or pmd.error.code() == KafkaError.NO_ERROR else pmd.error.str(),
            })
        configs = [
            {"name": e.name, "value": None if e.is_sensitive else e.value, "source": ConfigSource(e.source).name.lower(),
             "default": e.is_default, "read_only": e.is_read_only, "sensitive": e.is_sensitive}
            for e in sorted(entries.values(), key=lambda e: e.name)
        ]
        compacted = any(c["name"] == "cleanup.policy" and "compact" in (c["value"] or "") for c in configs)
        delayed = any(c["name"] == "tidelog.delay.target.topic" and c["value"] for c in configs)
        replicated = any(len(p["replicas"]) > 1 for p in partitions)
        detail = http_topic(client, http, http_access, name) if http is not None and (compacted or delayed or replicated) else {}
        if http is not None:
            states = {p["partition"]: p.get("cleaner") for p in detail.get("partitions", [])} if compacted else {}
            backlogs = {p["partition"]: p for p in detail.get("partitions", [])} if replicated else {}
            for p in partitions:
                p["cleaner"] = states.get(p["partition"])
                if replicated:  # the leader's bytes above its high watermark and the producers it holds for them
                    known = backlogs.get(p["partition"], {})
                    p["backlog_bytes"], p["backlog_held"] = known.get("backlog_bytes"), known.get("backlog_held")
        described.append({
            "name": name, "internal": is_internal(name), "partition_count": len(partitions),
            "replication_factor": max((len(p["replicas"]) for p in partitions), default=0),
            "partitions": partitions, "configs": configs, "compacted": compacted,
            **({"delay": detail.get("delay")} if http is not None and delayed else {}),
        })
    if client.out.as_json:
        client.out.json(described if len(described) > 1 else described[0])
        return
    out = client.out
    for t in described:
        out.fields([("topic", t["name"]), ("partitions", t["partition_count"]), ("replication factor", t["replication_factor"])],
                   title=f"Topic {t['name']}")
        backlog = [k for k in ("backlog_bytes", "backlog_held") if any(k in p for p in t["partitions"])]
        out.table(
            ["partition", "leader", "replicas", "isr", "log start", "high watermark", "records",
             *(["backlog bytes", "held producers"] if backlog else [])],
            [(p["partition"], "none" if p["leader"] is None else p["leader"], p["replicas"], p["isr"],
              *("-" if p[k] is None else p[k] for k in ("log_start_offset", "high_watermark", "records", *backlog)))
             for p in t["partitions"]],
            title="Partitions",
            caption=f"backlog: the leader's bytes above its high watermark, from the broker at {http} (- where it does "
                    "not lead)" if backlog else None,
            row_styles=["red" if p["leader"] is None else "yellow" if len(p["isr"]) < len(p["replicas"]) or p.get("backlog_held")
                        else None for p in t["partitions"]],
        )
        if t["compacted"] and http is None:
            note("the log cleaner's state: --http URL of a broker's HTTP API")
        elif t["compacted"]:
            rows = [(p["partition"], c["replica"], "-" if c["last_cleaned_offset"] is None else c["last_cleaned_offset"],
                     _ratio(c["dirty_ratio"]), _ratio(c["min_cleanable_dirty_ratio"]), c["cleanable_bytes"],
                     "cleaning" if c["cleaning"] else "uncleanable" if c["uncleanable"] else "idle", c["last_error"] or "")
                    for p in t["partitions"] if (c := p["cleaner"]) is not None]
            out.table(["partition", "replica", "last cleaned offset", "dirty ratio", "min ratio", "cleanable bytes",
                       "state", "last error"], rows, title="Log cleaner",
                      caption=f"the replicas on the broker at {http}; each replica cleans its own log")
        if "delay" in t and t["delay"] is not None:
            d = t["delay"]
            out.table(["partition", "target", "target leader", "state", "waiting", "next due (UTC)", "moved", "lost",
                       "last move late (ms)", "committed (from)", "last error"],
                      [(p["partition"], f"{p['target_topic']}-{'-' if p['target_partition'] is None else p['target_partition']}",
                        "here" if p["target_local"] else "none" if p["target_leader"] is None else p["target_leader"],
                        _delay_state(p), "-" if p["waiting_records"] is None else p["waiting_records"],
                        _ms_time(p["next_due_ms"]), p["moved_records"], p["lost_records"],
                        "-" if p["last_move_late_ms"] is None else p["last_move_late_ms"], _delay_progress(p),
                        p["last_error"] or p["commit_error"] or "")
                       for p in d["partitions"]],
                      title=f"Delay movers (to {d['target_topic']} when due)",
                      caption="from each partition's leader; moved and lost by that broker since it started",
                      row_styles=["red" if p["state"] in ("failing", "unavailable", "no_target") else None
                                  for p in d["partitions"]])
        elif any(c["name"] == "tidelog.delay.target.topic" and c["value"] for c in t["configs"]) and http is None:
            note("the delay movers (records waiting, next due, moved): --http URL of a broker's HTTP API")
        shown = [c for c in t["configs"] if all_configs or not c["default"]]
        out.table(["config", "value", "source"], [(c["name"], c["value"], c["source"]) for c in shown],
                  title="Configs", caption=None if all_configs else "set on the topic or broker; --all-configs shows all",
                  row_styles=["dim" if c["default"] else None for c in shown])


@topics.command()
@click.argument("topic")
@click.option("--partitions", "-p", type=click.IntRange(min=1), default=None, help="Increase the partition count to this.")
@click.option("--config", "-c", "configs", multiple=True, metavar="NAME=VALUE", help="Set a topic config (repeatable).")
@click.option("--delete-config", "delete_configs", multiple=True, metavar="NAME", help="Remove a topic config override (repeatable).")
@client_command()
def alter(client: Client, topic: str, partitions: int | None, configs: tuple[str, ...], delete_configs: tuple[str, ...]) -> None:
    """Add partitions or change topic configs."""
    to_set = parse_pairs(configs, "--config")
    if partitions is None and not to_set and not delete_configs:
        raise click.UsageError("nothing to alter: give --partitions, --config or --delete-config")
    admin = client.admin()
    tmd = client.topic_metadata(admin, topic)
    changes = {}
    if partitions is not None:
        current = len(tmd.partitions)
        if partitions < current:
            raise CliError(f"topic {topic} has {current} partitions; partitions can only be added")
        if partitions > current:
            client.result(admin.create_partitions([NewPartitions(topic, partitions)], request_timeout=client.timeout_s)[topic])
            changes["partitions"] = {"from": current, "to": partitions}
        else:
            note(f"topic {topic} has {current} partitions already")
    if to_set or delete_configs:
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            *(ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in to_set.items()),
            *(ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in delete_configs),
        ])
        client.result(admin.incremental_alter_configs([resource], request_timeout=client.timeout_s)[resource])
        changes["set"] = to_set
        changes["deleted"] = list(delete_configs)
    if client.out.as_json:
        client.out.json({"topic": topic, **changes})
    else:
        client.out.done(f"Altered topic {topic}.", topic)
