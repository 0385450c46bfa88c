"""What every client command shares: the broker address, the timeout, confluent-kafka clients
built from them, and Kafka errors turned into one-line CLI errors.

The client commands are Kafka clients (confluent-kafka / librdkafka), so they work against any
Kafka-compatible broker, not only Tidelog.
"""

from __future__ import annotations

import functools
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from tidelog.cli.errors import CliError
from tidelog.cli.output import Output

__all__ = ["CliError", "Client", "client_command", "describe_error", "parse_pairs"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT_S = 10.0
# librdkafka errors meaning "no broker answered": reported as unreachable, not as a failure.
_UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
                KafkaError._RESOLVE, KafkaError._MSG_TIMED_OUT}


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``k=v`` options into a dict, in order."""
    pairs = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        pairs[name] = value
    return pairs


@dataclass
class Client:
    """The connection settings of one command, and the clients made from them."""

    bootstrap: str
    timeout_s: float
    timeout_given: float | None
    extra: dict[str, str]
    out: Output
    _errors: list[KafkaError] = field(default_factory=list)

    def config(self, **settings: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": "tidelog-cli",
            # librdkafka's own log lines are not for CLI users: errors come back as one line.
            "log_level": 0,
            "error_cb": self._errors.append,
            **settings,
            **self.extra,
        }

    def admin(self) -> AdminClient:
        return AdminClient(self.config())

    def producer(self, **settings: Any) -> Producer:
        return Producer(self.config(**settings))

    def consumer(self, **settings: Any) -> Consumer:
        return Consumer(self.config(**settings))

    def metadata(self, client, topic: str | None = None):
        """Cluster metadata, or a clear error when no broker answers within the timeout."""
        try:
            return client.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as e:
            client.poll(0)  # serves error_cb: why the connection failed
            raise self.error(e) from None

    def topic_metadata(self, client, topic: str, auto_create: bool = False):
        """One existing topic's metadata; an unknown topic is an error.

        Unless ``auto_create`` (a producer's request, as Kafka's tools do), all topics are asked
        for: a request naming the topic makes a broker with auto.create.topics.enable create it.
        """
        tmd = self.metadata(client, topic if auto_create else None).topics.get(topic)
        if tmd is None:
            raise CliError(f"unknown topic: {topic}")
        if tmd.error is not None and tmd.error.code() != KafkaError.NO_ERROR:
            raise CliError(f"topic {topic}: {describe_error(tmd.error)}")
        return tmd

    def result(self, future):
        """Wait for an admin future; a Kafka error becomes a CliError."""
        try:
            return future.result(timeout=self.timeout_s + 1)
        except KafkaException as e:
            raise self.error(e) from None
        except TimeoutError:
            raise self.unreachable("no answer") from None

    def results(self, futures: dict) -> dict:
        return {key: self.result(f) for key, f in futures.items()}

    def error(self, e: KafkaException | KafkaError) -> CliError:
        err = e.args[0] if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError) else e
        if isinstance(err, KafkaError):
            if err.code() in _UNREACHABLE:
                return self.unreachable(err.str())
            return CliError(describe_error(err))
        return CliError(str(e))

    def unreachable(self, detail: str) -> CliError:
        # The transport errors librdkafka reported say why (refused, unresolvable, ...).
        causes = [e.str() for e in self._errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        cause = causes[-1] if causes else detail
        return CliError(f"cannot reach a broker at {self.bootstrap} within {self.timeout_s:g}s: {cause}")


def describe_error(err: KafkaError) -> str:
    """``UNKNOWN_TOPIC_OR_PART: Broker: Unknown topic or partition`` style, one line."""
    text = err.str()
    name = err.name()
    return text if name.startswith("_") or not name else f"{text} ({name})"


def client_command(*, timeout_default: float | None = DEFAULT_TIMEOUT_S, timeout_help: str | None = None, json_option: bool = True):
    """Decorate a click command as a Kafka client command.

    Adds ``--bootstrap-server``, ``--timeout``, ``-X/--client-config`` and ``--json``, passes a
    ``Client`` as the first argument, and turns Kafka errors into one-line errors.
    """

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(bootstrap_server: str, timeout: float | None, client_config: tuple[str, ...], **kwargs):
            as_json = kwargs.pop("as_json", False)
            client = Client(
                bootstrap=bootstrap_server,
                timeout_s=timeout if timeout is not None else DEFAULT_TIMEOUT_S,
                timeout_given=timeout,
                extra=parse_pairs(client_config, "--client-config"),
                out=Output(as_json),
            )
            try:
                return f(client, **kwargs)
            except KafkaException as e:
                raise client.error(e) from None
            except BrokenPipeError:  # `tidelog ... | head`
                sys.stderr.close()
                raise SystemExit(0) from None
            except (click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
                raise
            except Exception as e:  # a bug of ours: still one line, with what and where
                tb = traceback.extract_tb(e.__traceback__)[-1]
                raise CliError(f"unexpected {type(e).__name__}: {e} ({Path(tb.filename).name}:{tb.lineno})") from None

        params = [
            click.option("--bootstrap-server", "-b", envvar="TIDELOG_BOOTSTRAP_SERVER", default=DEFAULT_BOOTSTRAP,
                         show_default=True, metavar="HOST:PORT",
                         help="Kafka broker(s) to connect to, comma-separated (env TIDELOG_BOOTSTRAP_SERVER)."),
            click.option("--timeout", type=click.FloatRange(min=0), default=timeout_default, metavar="SECONDS",
                         show_default=timeout_default is not None,
                         help=timeout_help or "Give up when the brokers do not answer within this time."),
            click.option("--client-config", "-X", multiple=True, metavar="NAME=VALUE",
                         help="A librdkafka client setting, e.g. security.protocol=SSL (repeatable)."),
        ]
        if json_option:
            params.append(click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."))
        for param in reversed(params):
            wrapper = param(wrapper)
        return wrapper

    return decorate

