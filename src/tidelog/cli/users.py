"""``tidelog users``: create, list and delete SASL/SCRAM users (like ``kafka-configs --alter
--add-config 'SCRAM-SHA-256=[password=...]' --entity-type users``), through
AlterUserScramCredentials / DescribeUserScramCredentials: the broker keeps a salted, hashed
credential per user and mechanism in its metadata store, never the password."""

from __future__ import annotations

import click
from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion

from tidelog.cli.connection import CliError, Client, client_command

MECHANISMS = {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}


def _name(mechanism: ScramMechanism) -> str:
    return mechanism.name.replace("_", "-")


@click.group()
def users() -> None:
    """Create, list and delete SASL/SCRAM users."""


@users.command("create")
@click.argument("user")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, envvar="TIDELOG_USER_PASSWORD",
              help="The password (prompted for when not given; env TIDELOG_USER_PASSWORD).")
@click.option("--mechanism", "mechanisms", multiple=True, type=click.Choice(list(MECHANISMS)),
              help="SCRAM mechanism (repeatable; default both). SASL PLAIN checks the same credentials.")
@click.option("--iterations", type=click.IntRange(4096, 16384), default=8192, show_default=True,
              help="PBKDF2 iterations of the stored credential.")
@client_command()
def create(client: Client, user: str, password: str, mechanisms: tuple[str, ...], iterations: int) -> None:
    """Create USER, or set a new password for it."""
    if not password:
        raise CliError("--password: empty")
    alterations = [UserScramCredentialUpsertion(user, ScramCredentialInfo(MECHANISMS[m], iterations), password.encode())
                   for m in mechanisms or MECHANISMS]
    _alter(client, alterations)
    chosen = ", ".join(mechanisms or MECHANISMS)
    if client.out.as_json:
        client.out.json({"user": user, "mechanisms": list(mechanisms or MECHANISMS)})
    else:
        click.echo(f"user {user}: {chosen} credentials set")


def _alter(client: Client, alterations: list) -> None:
    admin = client.admin()
    # One change per user per request (Kafka's rule): one request per mechanism.
    for alteration in alterations:
        client.results(admin.alter_user_scram_credentials([alteration], request_timeout=client.timeout_s))


def _describe(client: Client, users: list[str] | None) -> dict[str, list[tuple[str, int]]]:
    admin = client.admin()
    if users is None:
        descriptions = client.result(admin.describe_user_scram_credentials(request_timeout=client.timeout_s))
    else:
        descriptions = client.results(admin.describe_user_scram_credentials(users, request_timeout=client.timeout_s))
    return {user: sorted((_name(info.mechanism), info.iterations) for info in d.scram_credential_infos)
            for user, d in sorted(descriptions.items())}


@users.command("list")
@client_command()
def list_users(client: Client) -> None:
    """List the SCRAM users with their mechanisms and iterations."""
    described = _describe(client, None)
    if client.out.as_json:
        client.out.json([{"user": u, "credentials": [{"mechanism": m, "iterations": i} for m, i in infos]}
                         for u, infos in described.items()])
    elif client.out.rich:
        client.out.table(["user", "mechanisms"], [(u, ", ".join(f"{m} ({i})" for m, i in infos))
                                                  for u, infos in described.items()])
    else:
        for user in described:
            click.echo(user)


@users.command("delete")
@click.argument("user")
@click.option("--mechanism", "mechanisms", multiple=True, type=click.Choice(list(MECHANISMS)),
              help="Delete only this mechanism's credential (repeatable; default every one the user has).")
@client_command()
def delete(client: Client, user: str, mechanisms: tuple[str, ...]) -> None:
    """Delete USER's SCRAM credentials: it can no longer authenticate."""
    if not mechanisms:
        try:
            mechanisms = tuple(m for m, _ in _describe(client, [user]).get(user, []))
        except CliError as e:
            raise CliError(f"unknown user: {user}") if "RESOURCE_NOT_FOUND" in str(e) else e from None
    _alter(client, [UserScramCredentialDeletion(user, MECHANISMS[m]) for m in mechanisms])
    if client.out.as_json:
        client.out.json({"user": user, "deleted": list(mechanisms)})
    else:
        click.echo(f"user {user}: {', '.join(mechanisms)} credentials deleted")
