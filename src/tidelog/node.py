"""A Tidelog node: the broker composed with its HTTP listener, as ``tidelog serve`` runs it.

The broker (server/broker.py) knows nothing of HTTP; the HTTP side (http/) is built on the
broker. This module, above both, puts them together: the HTTP listener is made for the broker
when ``http.port`` is not -1, bound beside the Kafka listener and served from the start.
"""

from __future__ import annotations

from pathlib import Path

from tidelog.config import BrokerConfig
from tidelog.http.server import HttpServer
from tidelog.server.broker import Broker


def make_broker(config: BrokerConfig, data_dir: Path, host: str = "127.0.0.1", port: int = 9092,
                cluster: str | None = None) -> Broker:
    """A broker, with its HTTP listener unless ``http.port`` is -1."""
    http = None
    if config["http.port"] >= 0:
        http = lambda broker: HttpServer(broker, config["http.host"], config["http.port"])  # noqa: E731
    return Broker(config, data_dir, host, port, cluster=cluster, http=http)
