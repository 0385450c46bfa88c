"""The ``tidelog`` group: client commands are imported on first use, so ``tidelog serve`` never
imports confluent-kafka (~100 ms and librdkafka in the broker); errors are one line (errors.py)."""

from __future__ import annotations

import importlib
import sys

import click

from tidelog.cli.errors import USAGE_EXIT, show_usage_error

# command name -> "module:attribute" (the client commands, and others serve does not need)
CLIENT_COMMANDS = {
    "topics": "tidelog.cli.topics:topics",
    "produce": "tidelog.cli.produce:produce",
    "consume": "tidelog.cli.consume:consume",
    "groups": "tidelog.cli.groups:groups",
    "share-groups": "tidelog.cli.share_groups:share_groups",
    "push": "tidelog.cli.push:push",
    "transactions": "tidelog.cli.transactions:transactions",
    "cluster": "tidelog.cli.cluster:cluster",
    "bench": "tidelog.cli.bench:bench",
    "dev-cluster": "tidelog.cli.dev_cluster:dev_cluster",
    "settings": "tidelog.cli.settings:settings",
    "users": "tidelog.cli.users:users",
    "acls": "tidelog.cli.acls:acls",
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

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main, with usage errors shown as one line (``error: ...``, exit code 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # `tidelog topics`: the help text
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            show_usage_error(e)
            sys.exit(USAGE_EXIT)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)
