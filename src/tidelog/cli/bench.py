"""``tidelog bench``: the benchmark suite (``python -m benchmarks``, owned by the benchmarks
package), reachable from the ``tidelog`` command when running from a source checkout."""

from __future__ import annotations

import sys
from pathlib import Path

import click

import tidelog


def _load_benchmarks_main():
    """``benchmarks.cli.main(argv)`` (what ``python -m benchmarks`` runs), or None.

    The benchmarks are not in the wheel: they sit beside ``src/`` in a checkout.
    ``benchmarks.__main__`` itself calls ``sys.exit(main())`` on import, hence ``benchmarks.cli``.
    """
    checkout = Path(tidelog.__file__).resolve().parents[2]
    if (checkout / "benchmarks" / "__main__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from benchmarks.cli import main
    except ImportError:
        return None
    return main


@click.command(short_help="Run the benchmarks (python -m benchmarks).", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks (arguments go to `python -m benchmarks`; try `tidelog bench --help`)."""
    run = _load_benchmarks_main()
    if run is None:
        raise click.ClickException(
            "the benchmarks ship with the source, not the package: in a Tidelog checkout run "
            "`pip install -e '.[bench]'` and then `tidelog bench` or `python -m benchmarks`"
        )
    sys.exit(run(list(args)))
