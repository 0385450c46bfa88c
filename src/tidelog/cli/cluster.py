"""``tidelog cluster``: brokers, controller, cluster id and partition health over Kafka's
protocol, and each broker's event-loop lag from a Tidelog broker's HTTP API (``--url``): Kafka
has no request for it (with --cacert, --user or --token as every command that asks the HTTP API:
cli/http_api.py). The HTTP part is used only when it answers for the same cluster id; else the
lag is left out with a note on stderr."""

from __future__ import annotations

import click

from tidelog.cli.connection import Client, client_command
from tidelog.cli.errors import CliError
from tidelog.cli.output import note
from tidelog.cli.http_api import DEFAULT_URL, HttpAccess, HttpApi, http_access_options


def _event_loops(client: Client, url: str, access: HttpAccess,
                 cluster_id: str) -> tuple[dict[int, tuple[dict | None, str | None, dict | None]], str | None]:
    """node id -> (event-loop lag or None, why None, internal write timeouts by writer or None)
    from the HTTP API's /cluster; or ({}, why not)."""
    try:
        api = HttpApi(url, client.timeout_s, access)
        answer = api.call("GET", "/api/v1/cluster")
    except CliError as e:
        return {}, str(e)
    if not isinstance(answer, dict):
        return {}, f"{url}/api/v1/cluster did not answer an object: is --url a Tidelog broker's HTTP API?"
    if answer.get("cluster_id") != cluster_id:
        return {}, f"the HTTP API at {url} is of cluster {answer.get('cluster_id')!r}, not {cluster_id!r}"
    brokers = answer.get("brokers", [])
    if brokers and "event_loop" not in brokers[0]:
        return {}, f"the broker at {url} gives no event-loop lag (a Tidelog broker older than it)"
    return {b["node_id"]: (b["event_loop"], b["event_loop_error"], b.get("internal_write_timeouts")) for b in brokers}, None


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


@click.command(short_help="Brokers, controller, partition health, event-loop lag.")
@client_command()
@click.option("--url", envvar="TIDELOG_HTTP_URL", default=DEFAULT_URL, show_default=True, metavar="URL",
              help="A broker's HTTP API, for each broker's event-loop lag (env TIDELOG_HTTP_URL).")
@http_access_options
def cluster(client: Client, url: str, http_access: HttpAccess) -> None:
    """Brokers, controller, cluster id, partition count and under-replicated partitions, and
    each broker's event-loop lag over the last minute (p99, max, stalls of 1 s or more: a
    broker's WARNING 'event loop stalled' lines) and its internal writes timed out since its
    start by writer (offset commits, SyncGroup, transactions, share state, dead letters, delay
    movers: a stuck disk or ISR), from the HTTP API at --url."""
    admin = client.admin()
    md = client.metadata(admin)
    described = client.result(admin.describe_cluster(request_timeout=client.timeout_s))
    controller = described.controller.id if described.controller is not None else None
    loops, loops_missing = _event_loops(client, url, http_access, described.cluster_id)
    brokers = [{"id": n.id, "host": n.host, "port": n.port, "rack": n.rack, "controller": n.id == controller,
                "event_loop": loops.get(n.id, (None, None, None))[0],
                "event_loop_error": loops_missing or loops.get(n.id, (None, "not in the HTTP API's list", None))[1],
                "internal_write_timeouts": loops.get(n.id, (None, None, None))[2]}
               for n in sorted(described.nodes, key=lambda n: n.id)]
    partitions = 0
    unhealthy = []
    for name in sorted(md.topics):
        for p, pmd in sorted(md.topics[name].partitions.items()):
            partitions += 1
            offline = pmd.leader < 0
            under = len(pmd.isrs) < len(pmd.replicas)
            if offline or under:
                unhealthy.append({"topic": name, "partition": p, "leader": None if offline else pmd.leader, "replicas": list(pmd.replicas),
                                  "isr": list(pmd.isrs), "offline": offline, "under_replicated": under})
    summary = {
        "cluster_id": described.cluster_id,
        "controller": controller,
        "brokers": brokers,
        "topics": len(md.topics),
        "partitions": partitions,
        "under_replicated_partitions": sum(u["under_replicated"] for u in unhealthy),
        "offline_partitions": sum(u["offline"] for u in unhealthy),
        "unhealthy_partitions": unhealthy,
    }
    out = client.out
    if loops_missing:
        note(f"event-loop lag not shown: {loops_missing}")
    if out.as_json:
        out.json(summary)
        return
    under, offline = summary["under_replicated_partitions"], summary["offline_partitions"]
    health = lambda n: (f"[red]{n}[/red]" if n else "[green]0[/green]") if out.rich else n  # noqa: E731
    out.fields([
        ("cluster id", summary["cluster_id"]), ("controller", controller), ("brokers", len(brokers)),
        ("topics", summary["topics"]), ("partitions", partitions),
        ("under-replicated partitions", health(under)), ("offline partitions", health(offline)),
    ], title="Cluster")
    def lag(b: dict, field: str) -> str | None:
        return _ms(b["event_loop"][field]) if b["event_loop"] else None

    def stalls(b: dict) -> str | None:
        return f"{b['event_loop']['stalls']}/{b['event_loop']['stalls_since_start']}" if b["event_loop"] else None

    def write_timeouts(b: dict) -> str | None:
        w = b["internal_write_timeouts"]
        if w is None:
            return None
        return str(sum(w.values())) + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(w.items())) + ")" if w else "")

    out.table(["broker", "host", "port", "rack", "controller", "loop lag p99 1m", "loop lag max 1m", "stalls 1m/total",
               "write timeouts"],
              [(b["id"], b["host"], b["port"], b["rack"], "yes" if b["controller"] else "", lag(b, "p99_ms"), lag(b, "max_ms"),
                stalls(b), write_timeouts(b)) for b in brokers],
              title="Brokers", row_styles=["red" if (b["event_loop"] and b["event_loop"]["stalls"])
                                           or b["internal_write_timeouts"] else None for b in brokers])
    if unhealthy:
        out.table(["topic", "partition", "leader", "replicas", "isr", "state"],
                  [(u["topic"], u["partition"], "none" if u["leader"] is None else u["leader"], u["replicas"], u["isr"],
                    "offline" if u["offline"] else "under-replicated") for u in unhealthy],
                  title="Unhealthy partitions", row_styles=["red" if u["offline"] else "yellow" for u in unhealthy])
