"""The ``tidelog`` command: ``serve`` (a broker), ``version``, ``completion``; the client
commands (topics, produce, consume, groups, cluster, dev-cluster, bench) load lazily (lazy.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from tidelog import __version__
from tidelog.cli.errors import CliError
from tidelog.cli.lazy import LazyGroup
from tidelog.config import BrokerConfig, ConfigError
from tidelog.logging import FORMATS, LEVELS, configure_logging

logger = logging.getLogger("tidelog")

PORT = click.IntRange(0, 65535)


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--set: expected NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    return overrides


def _choice(value: str | None, env_var: str, option: str, choices: tuple[str, ...], default: str) -> str:
    """An option that may also come from the environment, checked with its source named."""
    source = ""
    if value is None:
        value, source = os.environ.get(env_var), f" (from environment variable {env_var})"
    if value is None:
        return default
    if value.lower() not in choices:
        raise CliError(f"{option}: {value!r}{source} is not one of {', '.join(choices)}")
    return value.lower()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="tidelog")
def main() -> None:
    """Tidelog: a durable message queue that speaks the Kafka protocol."""


@main.command()
def version() -> None:
    """Print Tidelog's version."""
    click.echo(f"tidelog {__version__} (Python {sys.version.split()[0]})")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(tidelog completion bash)"   (in ~/.bashrc)
    zsh:  eval "$(tidelog completion zsh)"    (in ~/.zshrc)
    fish: tidelog completion fish > ~/.config/fish/completions/tidelog.fish
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(main, {}, "tidelog", "_TIDELOG_COMPLETE")
    click.echo(completer.source())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TIDELOG_HOST",
              help="Address the Kafka listener binds (env TIDELOG_HOST).")
@click.option("--port", default=9092, show_default=True, type=PORT, envvar="TIDELOG_PORT",
              help="Kafka listener port, 0 picks a free one (env TIDELOG_PORT).")
@click.option("--http-port", type=click.IntRange(-1, 65535), default=None,
              help="HTTP port for the console, API, /metrics, /health, /ready (default 9644; 0 picks a free one, -1 disables). "
                   "It binds http.host (default 127.0.0.1).")
@click.option("--data-dir", default="./tidelog-data", show_default=True, type=click.Path(path_type=Path), envvar="TIDELOG_DATA_DIR",
              help="Where the logs and metadata live; one broker per directory (env TIDELOG_DATA_DIR).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file of broker settings.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="A broker setting, by its Kafka name (repeatable).")
@click.option("--log-level", default=None, metavar="LEVEL", help=f"{', '.join(LEVELS)} (default info; env TIDELOG_LOG_LEVEL).")
@click.option("--log-format", default=None, metavar="FORMAT",
              help="text (default) or json: one JSON object a line, for log shippers (env TIDELOG_LOG_FORMAT).")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path), help="Write the bound Kafka (first listener) and HTTP ports here once serving; with several listeners, a third line NAME=port,...")
@click.option("--cluster", metavar="etcd://HOST:PORT[,HOST:PORT...]", envvar="TIDELOG_CLUSTER",
              help="Join a cluster coordinated by etcd (default: a single node; env TIDELOG_CLUSTER).")
@click.option("--broker-id", type=click.IntRange(0), default=None, help="This broker's id in the cluster (node.id).")
def serve(host: str, port: int, http_port: int | None, data_dir: Path, config_file: Path | None, sets: tuple[str, ...],
          log_level: str | None, log_format: str | None, port_file: Path | None, cluster: str | None, broker_id: int | None) -> None:
    """Start a broker.

    Settings come from, later winning: defaults < --config FILE < TIDELOG_* environment
    variables < --set NAME=VALUE (and --http-port, --broker-id). A wrong setting or a port in
    use is one line on stderr and exit code 1.
    """
    level = _choice(log_level, "TIDELOG_LOG_LEVEL", "--log-level", LEVELS, "info")
    log_format = _choice(log_format, "TIDELOG_LOG_FORMAT", "--log-format", FORMATS, "text")
    overrides = _parse_sets(sets)
    flags = {}
    if http_port is not None:
        overrides["http.port"], flags["http.port"] = str(http_port), "--http-port"
    if broker_id is not None:
        overrides["node.id"], flags["node.id"] = str(broker_id), "--broker-id"
    if cluster:
        # Here, not at the top (no cycle: cli is the top layer): this module runs for every
        # command, and the broker's modules (aiohttp, kio: ~0.5 s) are for serve alone.
        from tidelog.cluster.etcd_store import parse_cluster_url

        try:
            parse_cluster_url(cluster)
        except ValueError as e:
            raise CliError(f"--cluster: {e}") from None
    try:
        config = BrokerConfig.load(config_file, overrides=overrides, flags=flags)
    except ConfigError as e:
        raise CliError(str(e)) from None
    configure_logging(level.upper(), log_format)
    try:
        import uvloop
    except ImportError:  # not on every platform
        uvloop = None
    from tidelog.server.broker import StartupError

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
            runner.run(_serve(config, data_dir, host, port, port_file, cluster))
    except StartupError as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:  # Ctrl-C before the broker was serving
        sys.exit(130)


async def _serve(config: BrokerConfig, data_dir: Path, host: str, port: int, port_file: Path | None, cluster: str | None = None) -> None:
    from tidelog.node import make_broker
    from tidelog.storage import gc_policy, heap_policy

    gc_policy.enable()  # this process is a broker: its logs stay out of full garbage collections
    heap_policy.enable()  # and its large buffers come from the heap, not a fresh mapping each
    broker = make_broker(config, data_dir, host, port, cluster=cluster)
    await broker.start()
    # What the start built (modules, configs, logs, partitions) lives as long as the process:
    # out of the cyclic collector's sight, a full collection no longer walks it. A gen-2
    # collection of a started broker held the event loop for 10-150 ms (lat-5k, issue 19.5).
    # Logs created later are frozen as they come (storage/gc_policy.py).
    gc_policy.freeze_soon()
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        http_port = broker.http.port if broker.http is not None else -1
        listeners = broker.listeners.bound
        # With several listeners, a third line: NAME=port of each.
        extra = "" if len(listeners) == 1 else ",".join(f"{n}={e.port}" for n, e in listeners.items()) + "\n"
        tmp.write_text(f"{broker.port}\n{http_port}\n{extra}")
        os.replace(tmp, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()


if __name__ == "__main__":
    main()
