"""The ``tidelog`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import click

from tidelog import __version__
from tidelog.cli.lazy import LazyGroup
from tidelog.config import BrokerConfig, ConfigError
from tidelog.logging import configure_logging

logger = logging.getLogger("tidelog")


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected name=value, got {item!r}", param_hint="--set")
        overrides[name.strip()] = value.strip()
    return overrides


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="tidelog")
def main() -> None:
    """Tidelog: a durable message queue that speaks the Kafka protocol."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9092, show_default=True, type=int, help="Kafka listener port (0 picks a free one).")
@click.option("--http-port", type=int, default=None, help="HTTP port for /metrics, /health, the API and console (default 9644; 0 picks a free one, -1 disables).")
@click.option("--data-dir", default="./tidelog-data", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file of broker settings.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="A broker setting, by its Kafka name (repeatable).")
@click.option("--log-level", default=os.environ.get("TIDELOG_LOG_LEVEL", "INFO"), show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=os.environ.get("TIDELOG_LOG_FORMAT", "text"),
              show_default=True, help="json: one JSON object a line, for log shippers.")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path), help="Write the bound port here once listening.")
@click.option("--cluster", metavar="etcd://HOST:PORT[,HOST:PORT...]", help="Join a cluster coordinated by etcd (default: a single node).")
@click.option("--broker-id", type=int, default=None, help="This broker's id in the cluster (node.id).")
def serve(host: str, port: int, http_port: int | None, data_dir: Path, config_file: Path | None, sets: tuple[str, ...], log_level: str, log_format: str, port_file: Path | None,
          cluster: str | None, broker_id: int | None) -> None:
    """Start a broker."""
    configure_logging(log_level.upper(), log_format)
    try:
        overrides = _parse_sets(sets)
        if http_port is not None:
            overrides["http.port"] = str(http_port)
        if broker_id is not None:
            overrides["node.id"] = str(broker_id)
        if cluster:
            from tidelog.cluster.etcd_store import parse_cluster_url

            parse_cluster_url(cluster)
        config = BrokerConfig.load(config_file, overrides=overrides)
    except (ConfigError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    try:
        import uvloop
    except ImportError:  # not on every platform
        uvloop = None
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
    with runner:
        runner.run(_serve(config, data_dir, host, port, port_file, cluster))


async def _serve(config: BrokerConfig, data_dir: Path, host: str, port: int, port_file: Path | None, cluster: str | None = None) -> None:
    from tidelog.server.broker import Broker

    broker = Broker(config, data_dir, host, port, cluster=cluster)
    await broker.start()
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        http_port = broker.http.port if broker.http is not None else -1
        tmp.write_text(f"{broker.port}\n{http_port}\n")
        os.replace(tmp, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()


if __name__ == "__main__":
    main()
