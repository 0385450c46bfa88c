"""``tidelog cluster``: brokers, controller, cluster id and partition health."""

from __future__ import annotations

import click

from tidelog.cli.connection import Client, client_command


@click.command(short_help="Brokers, controller and partition health.")
@client_command()
def cluster(client: Client) -> None:
    """Brokers, controller, cluster id, partition count and under-replicated partitions."""
    admin = client.admin()
    md = client.metadata(admin)
    described = client.result(admin.describe_cluster(request_timeout=client.timeout_s))
    controller = described.controller.id if described.controller is not None else None
    brokers = [{"id": n.id, "host": n.host, "port": n.port, "rack": n.rack, "controller": n.id == controller}
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
    out.table(["broker", "host", "port", "rack", "controller"],
              [(b["id"], b["host"], b["port"], b["rack"], "yes" if b["controller"] else "") for b in brokers],
              title="Brokers")
    if unhealthy:
        out.table(["topic", "partition", "leader", "replicas", "isr", "state"],
                  [(u["topic"], u["partition"], "none" if u["leader"] is None else u["leader"], u["replicas"], u["isr"],
                    "offline" if u["offline"] else "under-replicated") for u in unhealthy],
                  title="Unhealthy partitions", row_styles=["red" if u["offline"] else "yellow" for u in unhealthy])
