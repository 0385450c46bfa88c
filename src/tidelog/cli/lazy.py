"""The ``tidelog`` group loads a client command's module only when that command runs, so
``tidelog serve`` never imports confluent-kafka (~100 ms and librdkafka in the broker)."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute"
CLIENT_COMMANDS = {
    "topics": "tidelog.cli.topics:topics",
    "produce": "tidelog.cli.produce:produce",
    "consume": "tidelog.cli.consume:consume",
    "groups": "tidelog.cli.groups:groups",
    "cluster": "tidelog.cli.cluster:cluster",
    "bench": "tidelog.cli.bench:bench",
    "dev-cluster": "tidelog.cli.dev_cluster:dev_cluster",
}


class LazyGroup(click.Group):
    """A click group whose client commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *CLIENT_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in CLIENT_COMMANDS:
            module, _, attribute = CLIENT_COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)
