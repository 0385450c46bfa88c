"""How the ``tidelog`` command reports errors: one line on stderr, never a traceback.

``error: <what went wrong, naming the option or setting>``, exit code 1; a usage error (an
unknown option, a malformed value click rejects) is one line too, with exit code 2.
"""

from __future__ import annotations

import click

ERROR_EXIT, USAGE_EXIT = 1, 2


class CliError(click.ClickException):
    """A one-line error, printed without a traceback; exit code 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def show_usage_error(e: click.UsageError) -> None:
    """``error: No such option: --x (see 'tidelog serve --help')``: one line, not click's three."""
    hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
    click.echo(f"error: {e.format_message().rstrip('.')}{hint}", err=True)
