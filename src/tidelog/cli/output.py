"""How client commands print: rich tables and colours on a terminal, tab-separated plain text
when piped, JSON with ``--json``. Data goes to stdout, notes and warnings to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import click


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(_plain(v) for v in value) if value else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Output:
    """One command's output channel."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.terminal = sys.stdout.isatty()
        self._console = None
        self._printed = False

    @property
    def rich(self) -> bool:
        """Tables and colours: only for a person at a terminal."""
        return self.terminal and not self.as_json

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=False)
        return self._console

    def json(self, obj: Any) -> None:
        click.echo(json.dumps(obj, indent=2, default=str))

    def _gap(self) -> None:
        if self._printed:
            click.echo("")
        self._printed = True

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
              row_styles: Sequence[str | None] | None = None, caption: str | None = None) -> None:
        """Rows under column headers; ``row_styles`` colours whole rows on a terminal."""
        rows = [list(r) for r in rows]
        self._gap()
        if not self.rich:
            click.echo("\t".join(c.upper().replace(" ", "_") for c in columns))
            for row in rows:
                click.echo("\t".join(_plain(v) for v in row))
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left", title_style="bold", header_style="bold cyan",
                      caption=caption, caption_justify="left")
        for c in columns:
            table.add_column(c, overflow="fold")
        for i, row in enumerate(rows):
            style = row_styles[i] if row_styles else None
            table.add_row(*(_plain(v) for v in row), style=style)
        if not rows:
            table.add_row(*(["[dim](none)[/dim]"] + [""] * (len(columns) - 1)))
        self.console.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]], title: str | None = None) -> None:
        """``name: value`` lines (a record, not a list)."""
        self._gap()
        if not self.rich:
            for name, value in pairs:
                click.echo(f"{name}\t{_plain(value)}")
            return
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for name, value in pairs:
            grid.add_row(name, value if isinstance(value, str) and value.startswith("[") else _plain(value))
        if title:
            self.console.print(f"[bold]{title}[/bold]")
        self.console.print(grid)

    def done(self, human: str, plain: str) -> None:
        """A result line: the sentence on a terminal, ``plain`` (e.g. just a number) when piped."""
        if self.rich:
            self.console.print(f"[green]{human}[/green]")
        else:
            click.echo(plain)


def note(text: str, style: str = "yellow") -> None:
    """A line for the person on stderr (coloured when stderr is a terminal)."""
    if sys.stderr.isatty():
        click.secho(text, err=True, fg=style)
    else:
        click.echo(text, err=True)
