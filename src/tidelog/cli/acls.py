"""``tidelog acls``: add, list and remove ACLs (like ``kafka-acls``), through CreateAcls /
DescribeAcls / DeleteAcls. The broker needs ``authorizer.class.name`` set to apply them."""

from __future__ import annotations

import click
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   ResourcePatternType, ResourceType)

from tidelog.cli.connection import Client, client_command

RESOURCE_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER,
                  "transactional-id": ResourceType.TRANSACTIONAL_ID}
OPERATIONS = {op.name.lower().replace("_", "-"): op for op in AclOperation
              if op not in (AclOperation.UNKNOWN, AclOperation.ANY)}
CLUSTER_NAME = "kafka-cluster"


def _resource(resource_type: str, name: str | None) -> tuple[ResourceType, str | None]:
    return RESOURCE_TYPES[resource_type], CLUSTER_NAME if resource_type == "cluster" else name


def _rows(bindings) -> list[dict]:
    return [{"resource_type": "cluster" if b.restype == ResourceType.BROKER else b.restype.name.lower().replace("_", "-"),
             "name": b.name, "pattern": b.resource_pattern_type.name.lower(), "principal": b.principal, "host": b.host,
             "operation": b.operation.name.lower().replace("_", "-"),
             "permission": b.permission_type.name.lower()} for b in bindings]


def _show(client: Client, rows: list[dict]) -> None:
    columns = ["principal", "permission", "operation", "resource_type", "name", "pattern", "host"]
    rows = sorted(rows, key=lambda r: tuple(r[c] for c in columns))
    if client.out.as_json:
        client.out.json(rows)
    elif client.out.rich:
        client.out.table(columns, [tuple(r[c] for c in columns) for r in rows])
    else:
        for r in rows:
            click.echo(f"{r['principal']} {r['permission']} {r['operation']} on {r['resource_type']}:{r['pattern']}:"
                       f"{r['name']} from {r['host']}")


def _selection(f):
    """The options naming a resource and an entry (kafka-acls' words)."""
    options = [
        click.option("--topic", "resource", flag_value="topic", help="The resource is a topic (NAME)."),
        click.option("--group", "resource", flag_value="group", help="The resource is a consumer group (NAME)."),
        click.option("--cluster", "resource", flag_value="cluster", help="The resource is the cluster."),
        click.option("--transactional-id", "resource", flag_value="transactional-id",
                     help="The resource is a transactional id (NAME)."),
        click.option("--prefixed", is_flag=True, help="NAME is a prefix (PREFIXED pattern); default LITERAL."),
        click.option("--principal", metavar="User:NAME", help="Whose access (User:* for everyone)."),
        click.option("--host", default=None, metavar="HOST", help="From which host (default *: any)."),
        click.option("--operation", "operation", type=click.Choice(sorted(OPERATIONS)), default=None,
                     help="The operation (read, write, create, delete, alter, describe, cluster-action, "
                          "describe-configs, alter-configs, idempotent-write, all)."),
        click.option("--deny", is_flag=True, help="A DENY entry (wins over any ALLOW); default ALLOW."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group()
def acls() -> None:
    """Add, list and remove ACLs."""


@acls.command("add")
@click.argument("name", required=False)
@_selection
@client_command()
def add(client: Client, name: str | None, resource: str | None, prefixed: bool, principal: str | None,
        host: str | None, operation: str | None, deny: bool) -> None:
    """Allow (or --deny) PRINCIPAL an OPERATION on a resource, e.g.
    `tidelog acls add orders --topic --principal User:alice --operation write`."""
    if resource is None:
        raise click.UsageError("name the resource: --topic, --group, --cluster or --transactional-id")
    if principal is None or operation is None:
        raise click.UsageError("--principal and --operation are required")
    if resource != "cluster" and not name:
        raise click.UsageError(f"--{resource} needs NAME")
    restype, resource_name = _resource(resource, name)
    binding = AclBinding(restype, resource_name,
                         ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL, principal,
                         host or "*", OPERATIONS[operation], AclPermissionType.DENY if deny else AclPermissionType.ALLOW)
    admin = client.admin()  # kept while its futures are pending
    client.results(admin.create_acls([binding], request_timeout=client.timeout_s))
    if client.out.as_json:
        client.out.json(_rows([binding]))
    else:
        _show(client, _rows([binding]))


def _filter(name, resource, prefixed, principal, host, operation, deny) -> AclBindingFilter:
    restype, resource_name = _resource(resource, name) if resource else (ResourceType.ANY, name)
    pattern = ResourcePatternType.PREFIXED if prefixed else (ResourcePatternType.ANY if resource_name is None
                                                             else ResourcePatternType.LITERAL)
    permission = AclPermissionType.DENY if deny else AclPermissionType.ANY
    return AclBindingFilter(restype, resource_name, pattern, principal, host,
                            OPERATIONS[operation] if operation else AclOperation.ANY, permission)


@acls.command("list")
@click.argument("name", required=False)
@_selection
@client_command()
def list_acls(client: Client, **selection) -> None:
    """List the ACLs matching the options (all without any)."""
    admin = client.admin()
    bindings = client.result(admin.describe_acls(_filter(**selection), request_timeout=client.timeout_s))
    _show(client, _rows(bindings))


@acls.command("remove")
@click.argument("name", required=False)
@_selection
@client_command()
def remove(client: Client, **selection) -> None:
    """Remove the ACLs matching the options; prints what was removed."""
    if not any(v for k, v in selection.items() if k not in ("prefixed", "deny")):
        raise click.UsageError("name what to remove (use `tidelog acls list` to see them)")
    admin = client.admin()
    futures = admin.delete_acls([_filter(**selection)], request_timeout=client.timeout_s)
    removed = [b for bindings in client.results(futures).values() for b in bindings]
    _show(client, _rows(removed))
