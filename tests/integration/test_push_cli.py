"""``tidelog push`` as a user runs it (a subprocess) against a real broker's HTTP API: create (the
secret on stdout, once), list, describe, update, pause, resume, delete; --json parsed, plain text
when piped, a table on a terminal; one-line errors naming the field, the subscription or the URL;
credentials from the options or the environment once the broker has users."""

from __future__ import annotations

import socket

from tests.integration.test_cli import USAGE, fails, ok, ok_json, on_terminal, tidelog
from tests.integration.test_sasl import SECRET

ENDPOINT = "http://127.0.0.1:9/hook"  # nothing listens: deliveries are refused (see test_push_api.py)


def url(broker) -> str:
    return f"http://127.0.0.1:{broker.metrics_port}"


def test_create_list_describe_update_pause_resume_delete(broker):
    ok("topics", "create", "orders", "--partitions", "2", broker=broker)
    ok("topics", "create", "audit", broker=broker)
    u = ("--url", url(broker))
    result = tidelog("push", "create", "hook", "-t", "orders", "--endpoint", ENDPOINT, "--batch-size", "20",
                     "--bearer-token", "endpoint-token", *u)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.decode().strip()
    assert len(secret) >= 32 and "\n" not in secret  # plain: the secret alone, for SECRET=$(tidelog push create ...)
    assert b"not shown again" in result.stderr
    created = ok_json("push", "create", "second", "-t", "orders", "-t", "audit", "--endpoint", ENDPOINT, "--paused",
                      "--payload-format", "raw", *u)
    assert created["topics"] == ["orders", "audit"] and created["paused"] is True and created["secret"]
    assert created["payload_format"] == "raw"

    lines = ok("push", "list", *u).splitlines()
    assert lines[0].split("\t") == ["NAME", "STATE", "TOPICS", "ENDPOINT", "DELIVERED", "BACKLOG", "LAST_ERROR"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert sorted(rows) == ["hook", "second"] and rows["second"][1:4] == ["paused", "orders,audit", ENDPOINT]
    listed = {s["name"]: s for s in ok_json("push", "list", *u)}
    assert listed["hook"]["batch_size"] == 20 and "secret" not in listed["hook"]
    everything = ok("push", "list", "--json", *u) + ok("push", "describe", "hook", "--json", *u)
    assert secret not in everything and "endpoint-token" not in everything

    described = ok_json("push", "describe", "hook", *u)
    assert described["share_group"] == "push.hook" and described["bearer_token"] == "***"
    assert {"state", "last_error", "in_flight", "concurrency", "delivered", "backlog", "latency_p50_ms"} <= set(described["status"])
    plain = dict(line.split("\t", 1) for line in ok("push", "describe", "hook", *u).splitlines() if "\t" in line)
    assert plain["name"] == "hook" and plain["endpoint"] == ENDPOINT and plain["batch size"] == "20"
    assert plain["share group"] == "push.hook" and plain["concurrency"].endswith("of 8")
    assert plain["status of"].endswith("share-partitions, delivered by broker 1")  # 2 once its engine took it up

    assert ok("push", "update", "hook", "--batch-size", "50", "-t", "orders", "-t", "audit", "--no-bearer-token", *u) == "hook\n"
    updated = ok_json("push", "describe", "hook", *u)
    assert updated["batch_size"] == 50 and updated["topics"] == ["orders", "audit"] and updated["bearer_token"] is None
    assert "nothing to change" in fails("push", "update", "hook", *u, code=USAGE)

    assert ok("push", "pause", "hook", *u) == "hook\n"
    assert ok_json("push", "describe", "hook", *u)["status"]["state"] == "paused"
    resumed = ok_json("push", "resume", "hook", "second", *u)
    assert [s["paused"] for s in resumed] == [False, False]
    assert ok("push", "delete", "hook", "second", *u) == "hook\nsecond\n"
    assert ok_json("push", "list", *u) == []


def test_errors_are_one_line(broker):
    ok("topics", "create", "orders", broker=broker)
    u = ("--url", url(broker))
    assert fails("push", "describe", "ghost", *u) == "error: push subscription 'ghost' does not exist (SUBSCRIPTION_NOT_FOUND)\n"
    message = fails("push", "create", "hook", "-t", "missing", "--endpoint", ENDPOINT, *u)
    assert message.startswith("error: topics: ") and "missing" in message and "INVALID_REQUEST" in message
    assert fails("push", "create", "hook", "-t", "orders", "--endpoint", "ftp://x/", *u).startswith("error: endpoint: ")
    assert fails("push", "create", "hook", "-t", "orders", "--endpoint", ENDPOINT, "--delivery-limit", "99", *u).startswith(
        "error: delivery_limit: ")
    ok("push", "create", "hook", "-t", "orders", "--endpoint", ENDPOINT, *u)
    assert "SUBSCRIPTION_ALREADY_EXISTS" in fails("push", "create", "hook", "-t", "orders", "--endpoint", ENDPOINT, *u)
    assert "Missing option '--endpoint'" in fails("push", "create", "x", "-t", "orders", *u, code=USAGE)
    assert "--url" in fails("push", "list", "--url", "127.0.0.1:1")
    with socket.socket() as held:  # bound, not listening: refused, and no other test's broker can take it
        held.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{held.getsockname()[1]}"
        message = fails("push", "list", "--url", dead, "--timeout", "2")
        assert message.startswith(f"error: cannot reach the HTTP API at {dead} within 2s") and "refused" in message
    # The Kafka port is not the HTTP API: the broker closes the connection on a malformed frame.
    assert fails("push", "list", "--url", f"http://{broker.bootstrap}").startswith(
        f"error: cannot reach the HTTP API at http://{broker.bootstrap}")


def test_credentials_from_options_or_environment(broker_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("ops-token User:ops\n")
    tokens.chmod(0o600)
    broker = broker_factory({"http.bearer.tokens.file": str(tokens)})
    ok("users", "create", "alice", "--password", SECRET, broker=broker)
    u = ("--url", url(broker))
    message = fails("push", "list", *u)
    assert "authentication required" in message and "--user" in message
    assert ok_json("push", "list", "--token", "ops-token", *u) == []
    assert ok_json("push", "list", "--user", f"alice:{SECRET}", *u) == []
    assert ok_json("push", "list", *u, env={"TIDELOG_HTTP_USER": "alice", "TIDELOG_HTTP_PASSWORD": SECRET}) == []
    assert "invalid credentials" in fails("push", "list", "--user", "alice:wrong", *u)


def test_terminal_gets_tables(broker):
    ok("topics", "create", "orders", broker=broker)
    ok("push", "create", "pretty", "-t", "orders", "--endpoint", ENDPOINT, "--url", url(broker))
    for args, expected in ((["list"], "│ pretty │"), (["describe", "pretty"], "Push subscription pretty")):
        text = on_terminal("push", *args, env={"COLUMNS": "160", "TIDELOG_HTTP_URL": url(broker)})
        assert "┏━" in text and "\x1b[" in text and expected in text, text
