"""``tidelog push``: create, list, describe, update, pause, resume and delete push subscriptions
(issue 15, docs/push.md): the broker POSTs a topic's records to an HTTP endpoint.

Push subscriptions are Tidelog's own (Kafka has none), so these commands talk to a broker's HTTP
API (``/api/v1/push-subscriptions``), not the Kafka protocol: ``--url`` (env TIDELOG_HTTP_URL,
default http://127.0.0.1:9644), with ``--user NAME[:PASSWORD]`` (HTTP Basic; the password from
TIDELOG_HTTP_PASSWORD or asked for) or ``--token`` (a bearer token) once the broker has users,
and ``--cacert`` for HTTPS with a private CA, as every command that asks the HTTP API
(cli/http_api.py). Any broker of a cluster answers alike.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable
from urllib.parse import quote

import click

from tidelog.cli.http_api import DEFAULT_URL, HttpAccess, HttpApi, http_access_options
from tidelog.cli.output import Output, note

DEFAULT_TIMEOUT_S = 10.0
API = "/api/v1/push-subscriptions"
NOT_FOUND = "the broker has no push subscriptions API (a Tidelog broker older than push subscriptions?)"


def http_command(f: Callable) -> Callable:
    """Adds --url, --user, --token, --cacert (cli/http_api.py), --timeout and --json; passes (api, out) first."""

    @functools.wraps(f)
    def wrapper(url: str, http_access: HttpAccess, timeout: float, as_json: bool, **kwargs):
        api = HttpApi(url, timeout, http_access, NOT_FOUND)
        try:
            return f(api, Output(as_json), **kwargs)
        except BrokenPipeError:  # `tidelog push list | head`
            sys.stderr.close()
            raise SystemExit(0) from None

    wrapper = http_access_options(wrapper)
    options = [
        click.option("--url", envvar="TIDELOG_HTTP_URL", default=DEFAULT_URL, show_default=True, metavar="URL",
                     help="A broker's HTTP API (env TIDELOG_HTTP_URL)."),
        click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT_S, show_default=True,
                     metavar="SECONDS", help="Give up when the broker does not answer within this time."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _path(name: str, action: str = "") -> str:
    return f"{API}/{quote(name, safe='')}{action}"


# The subscription's settings as options: (option, the API's field, click type, help). The
# defaults are the broker's (docs/push.md); an option not given is not sent.
SETTINGS = [
    ("--batch-size", "batch_size", int, "Records per POST at the most (default 100)."),
    ("--linger-ms", "linger_ms", int, "Wait this long for a fuller batch (default 50)."),
    ("--max-concurrency", "max_concurrency", int, "POSTs in flight at the most (default 8)."),
    ("--ack-deadline-ms", "ack_deadline_ms", int, "The endpoint must answer within this (default 30000)."),
    ("--backoff-initial-ms", "backoff_initial_ms", int, "First retry delay (default 1000)."),
    ("--backoff-multiplier", "backoff_multiplier", float, "Each retry waits this much longer (default 2)."),
    ("--backoff-max-ms", "backoff_max_ms", int, "Longest retry delay (default 60000)."),
    ("--delivery-limit", "delivery_limit", int, "Deliveries of a record before it is dead-lettered (default 5)."),
    ("--dead-letter-topic", "dead_letter_topic", str, "Where records past the delivery limit go (default: none, dropped)."),
    ("--payload-format", "payload_format", click.Choice(["batch", "raw"]),
     "batch: one JSON POST per batch (default); raw: one POST per record, its value as the body."),
    ("--bearer-token", "bearer_token", str, "Sent as Authorization: Bearer to the endpoint."),
]


def settings_options(f: Callable) -> Callable:
    for option, field, kind, text in reversed(SETTINGS):
        f = click.option(option, field, type=kind, default=None, help=text)(f)
    return f


def _changes(kwargs: dict) -> dict:
    return {field: kwargs.pop(field) for _option, field, _kind, _text in SETTINGS if kwargs.get(field) is not None}


@click.group()
def push() -> None:
    """Push subscriptions: the broker POSTs records to an HTTP endpoint (docs/push.md)."""


@push.command()
@click.argument("name")
@click.option("--topic", "-t", "topics", multiple=True, required=True, metavar="TOPIC", help="A topic to deliver (repeatable).")
@click.option("--endpoint", required=True, metavar="URL", help="http:// or https:// URL the records are POSTed to.")
@settings_options
@click.option("--paused", is_flag=True, help="Create it paused (resume starts deliveries).")
@http_command
def create(api: HttpApi, out: Output, name: str, topics: tuple[str, ...], endpoint: str, paused: bool, **settings) -> None:
    """Create push subscription NAME. Prints its signing secret, once: store it for the endpoint."""
    created = api.call("POST", API, {"name": name, "topics": list(topics), "endpoint": endpoint, **_changes(settings),
                                     **({"paused": True} if paused else {})})
    if out.as_json:
        out.json(created)
    elif out.rich:
        out.done(f"Created push subscription {name}.", name)
        out.fields([("secret", created["secret"])])
        note("The secret signs every request to the endpoint (docs/push.md); it is not shown again.")
    else:
        click.echo(created["secret"])  # for SECRET=$(tidelog push create ...)
        note(f"created push subscription {name}; the line on stdout is its signing secret, not shown again")


def _scope(status: dict) -> str:
    """Whose deliveries the status counts: every broker delivers the share-partitions it leads."""
    brokers = ",".join(str(b) for b in status.get("brokers", [])) or "-"
    missing = f"; not answering: broker {','.join(str(b) for b in status['unreachable'])}" if status.get("unreachable") else ""
    return f"{len(status.get('partitions', []))} share-partitions, delivered by broker {brokers}{missing}"


def _latency(status: dict) -> str:
    p50, p99 = status.get("latency_p50_ms"), status.get("latency_p99_ms")
    return "-" if p50 is None else f"{p50:g} / {p99:g} ms"


@push.command("list")
@http_command
def list_subscriptions(api: HttpApi, out: Output) -> None:
    """List push subscriptions: state, topics, endpoint, delivered, backlog, last error."""
    subscriptions = api.call("GET", API)["subscriptions"]
    if out.as_json:
        out.json(subscriptions)
        return
    out.table(["name", "state", "topics", "endpoint", "delivered", "backlog", "last error"],
              [(s["name"], s["status"]["state"], s["topics"], s["endpoint"], s["status"]["delivered"], s["status"]["backlog"],
                s["status"].get("last_error")) for s in subscriptions],
              row_styles=[_STATE_STYLES.get(s["status"]["state"]) for s in subscriptions])


_STATE_STYLES = {"failing": "red", "paused": "yellow"}


def _describe(out: Output, s: dict) -> None:
    status = s["status"]
    out.fields([
        ("name", s["name"]), ("state", status["state"]), ("topics", s["topics"]), ("endpoint", s["endpoint"]),
        ("payload format", s["payload_format"]), ("share group", s["share_group"]), ("batch size", s["batch_size"]), ("linger", f"{s['linger_ms']} ms"),
        ("concurrency", f"{status['concurrency']} of {s['max_concurrency']}"), ("in flight", status["in_flight"]),
        ("ack deadline", f"{s['ack_deadline_ms']} ms"),
        ("retry back-off", f"{s['backoff_initial_ms']} ms x{s['backoff_multiplier']:g} up to {s['backoff_max_ms']} ms"),
        ("delivery limit", s["delivery_limit"]), ("dead-letter topic", s.get("dead_letter_topic")),
        ("bearer token", s["bearer_token"]),
        ("last error", status.get("last_error")),
        ("status of", _scope(status)),
    ], title=f"Push subscription {s['name']}")
    out.table(["delivered", "acknowledged", "retries", "dead-lettered", "backlog", "latency p50 / p99"],
              [(status["delivered"], status["acknowledged"], status["retries"], status["dead_lettered"], status["backlog"],
                _latency(status))], title="Records since the broker started")
    failed = status.get("failed_by_status") or {}
    if failed:
        out.table(["answer", "failed deliveries"], sorted(failed.items()), title="Failed deliveries by answer")


@push.command()
@click.argument("name")
@http_command
def describe(api: HttpApi, out: Output, name: str) -> None:
    """A subscription's settings and status: state, last error, in flight, concurrency, counters, backlog, latency."""
    described = api.call("GET", _path(name))
    if out.as_json:
        out.json(described)
    else:
        _describe(out, described)


@push.command()
@click.argument("name")
@click.option("--topic", "-t", "topics", multiple=True, metavar="TOPIC", help="The new topics, all of them (repeatable).")
@click.option("--endpoint", default=None, metavar="URL", help="A new endpoint.")
@settings_options
@click.option("--no-dead-letter-topic", is_flag=True, help="Stop dead-lettering (records past the limit are dropped).")
@click.option("--no-bearer-token", is_flag=True, help="Stop sending a bearer token.")
@http_command
def update(api: HttpApi, out: Output, name: str, topics: tuple[str, ...], endpoint: str | None, no_dead_letter_topic: bool,
           no_bearer_token: bool, **settings) -> None:
    """Change a subscription's settings: those given, the others kept."""
    changes = _changes(settings)
    if topics:
        changes["topics"] = list(topics)
    if endpoint is not None:
        changes["endpoint"] = endpoint
    for flag, field in ((no_dead_letter_topic, "dead_letter_topic"), (no_bearer_token, "bearer_token")):
        if flag:
            if field in changes:
                raise click.UsageError(f"--{field.replace('_', '-')} and --no-{field.replace('_', '-')} are exclusive")
            changes[field] = None
    if not changes:
        raise click.UsageError("nothing to change: give an option (see 'tidelog push update --help')")
    updated = api.call("PATCH", _path(name), changes)
    if out.as_json:
        out.json(updated)
    else:
        out.done(f"Updated push subscription {name}: {', '.join(sorted(changes))}.", name)


def _state_change(action: str, done: str) -> Callable:
    @click.argument("names", metavar="NAME...", nargs=-1, required=True)
    @http_command
    def command(api: HttpApi, out: Output, names: tuple[str, ...]) -> None:
        answers = [api.call("POST", _path(name, f"/{action}")) for name in names]
        if out.as_json:
            out.json(answers if len(answers) > 1 else answers[0])
        else:
            for name in names:
                out.done(f"{done} push subscription {name}.", name)

    return command


push.command("pause", help="Stop delivering (records wait in the subscription's share group).")(_state_change("pause", "Paused"))
push.command("resume", help="Start delivering again.")(_state_change("resume", "Resumed"))


@push.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@http_command
def delete(api: HttpApi, out: Output, names: tuple[str, ...]) -> None:
    """Delete subscriptions: their deliveries stop."""
    answers = [api.call("DELETE", _path(name)) for name in names]
    if out.as_json:
        out.json(answers if len(answers) > 1 else answers[0])
    else:
        for name in names:
            out.done(f"Deleted push subscription {name}.", name)
