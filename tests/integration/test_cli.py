"""The ``tidelog`` client commands, run as a user runs them (``python -m tidelog ...`` in a
subprocess) against a real broker: topics, produce, consume, groups, cluster, bench; --json
output parsed; plain output when piped, tables on a terminal; one-line errors and exit codes."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer

from tests.brokerproc import wait_until

CLI_TIMEOUT_S = 60
# Exit codes: click's ClickException is 1, a usage error 2.
ERROR, USAGE = 1, 2


def tidelog(*args: str, broker=None, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``tidelog ARGS`` (with ``-b`` for ``broker``), capturing bytes."""
    command = [sys.executable, "-m", "tidelog", *args]
    if broker is not None:
        command += ["--bootstrap-server", broker.bootstrap]
    base = {k: v for k, v in os.environ.items() if k != "TIDELOG_BOOTSTRAP_SERVER"}
    return subprocess.run(command, input=stdin, capture_output=True, timeout=CLI_TIMEOUT_S, env={**base, **(env or {})})


def ok(*args: str, **kwargs) -> str:
    """Run and expect success; stdout as text."""
    result = tidelog(*args, **kwargs)
    assert result.returncode == 0, (args, result.returncode, result.stderr.decode(), result.stdout.decode())
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def ok_json(*args: str, **kwargs):
    return json.loads(ok(*args, "--json", **kwargs))


def fails(*args: str, code: int = ERROR, **kwargs) -> str:
    """Run and expect exit ``code`` with a one-line error; stderr as text."""
    result = tidelog(*args, **kwargs)
    stderr = result.stderr.decode()
    assert result.returncode == code, (args, result.returncode, stderr, result.stdout.decode())
    assert "Traceback" not in stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr


def on_terminal(*args: str, env: dict) -> str:
    """Run ``tidelog ARGS`` on a pseudo-terminal (as a person at one), expecting success; what it printed."""
    controller, worker = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tidelog", *args], stdout=worker, stderr=worker, env={**os.environ, **env})
    os.close(worker)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        assert proc.wait(CLI_TIMEOUT_S) == 0, output.decode(errors="replace")
    return output.decode()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_topics_create_list_describe_alter_delete(broker):
    assert ok("topics", "create", "orders", "--partitions", "3", "--replication-factor", "1",
              "--config", "retention.ms=3600000", broker=broker) == "orders\n"
    assert "already exists" in fails("topics", "create", "orders", broker=broker)
    assert ok_json("topics", "create", "orders", "--if-not-exists", broker=broker) == {"topic": "orders", "created": False}
    ok("topics", "create", "audit", broker=broker)  # the broker's default partition count
    assert ok("topics", "list", broker=broker).split() == ["audit", "orders"]  # plain when piped: a name a line
    listed = {t["name"]: t for t in ok_json("topics", "list", broker=broker)}
    assert listed["orders"] == {"name": "orders", "partitions": 3, "replication_factor": 1, "internal": False}

    ok("produce", "orders", "--partition", "1", broker=broker, stdin=b"a\nb\n")
    described = ok_json("topics", "describe", "orders", broker=broker)
    assert described["partition_count"] == 3 and described["replication_factor"] == 1
    p1 = described["partitions"][1]
    assert (p1["partition"], p1["leader"], p1["replicas"], p1["isr"]) == (1, 1, [1], [1])
    assert (p1["log_start_offset"], p1["high_watermark"]) == (0, 2)
    assert described["partitions"][0]["high_watermark"] == 0
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "3600000" and configs["retention.ms"]["source"] == "dynamic_topic_config"
    assert configs["segment.bytes"]["default"] is True
    plain = ok("topics", "describe", "orders", "--all-configs", broker=broker)
    assert "HIGH_WATERMARK" in plain and "retention.ms\t3600000\tdynamic_topic_config" in plain and "segment.bytes" in plain

    altered = ok_json("topics", "alter", "orders", "--partitions", "4", "--config", "cleanup.policy=compact",
                      "--delete-config", "retention.ms", broker=broker)
    assert altered["partitions"] == {"from": 3, "to": 4}
    described = ok_json("topics", "describe", "orders", broker=broker)
    configs = {c["name"]: c for c in described["configs"]}
    assert described["partition_count"] == 4
    assert configs["cleanup.policy"]["value"] == "compact" and configs["retention.ms"]["source"] != "dynamic_topic_config"
    assert "partitions can only be added" in fails("topics", "alter", "orders", "--partitions", "2", broker=broker)
    assert "bogus.name" in fails("topics", "alter", "orders", "--config", "bogus.name=1", broker=broker)

    assert ok_json("topics", "delete", "orders", "audit", broker=broker) == {"deleted": ["orders", "audit"]}
    fails("topics", "delete", "orders", broker=broker)
    assert ok_json("topics", "delete", "orders", "--if-exists", broker=broker) == {"deleted": []}
    # Describing an unknown topic is an error and does not auto-create it.
    assert fails("topics", "describe", "ghost", broker=broker) == "error: unknown topic: ghost\n"
    assert [t["name"] for t in ok_json("topics", "list", "--internal", broker=broker)] == ["__consumer_offsets"]


def test_produce_then_consume_round_trip(broker, tmp_path):
    ok("topics", "create", "events", "--partitions", "2", broker=broker)
    produced = ok_json("produce", "events", "--key-separator", ":", "--header", "source=cli", "--header", "v=1",
                       "--partition", "0", "--acks", "1", "--compression", "zstd", broker=broker,
                       stdin=b"k1:first\nk2:second:with:colons\r\nk3:\nk4:\xff\xfe\n")
    assert produced == {"topic": "events", "produced": 4, "failed": 0}
    records_file = tmp_path / "records.txt"
    records_file.write_bytes(b"one\ntwo\n")
    assert ok("produce", "events", "--file", str(records_file), "--partition", "1", "--acks", "all",
              "--compression", "gzip", broker=broker) == "2\n"
    before = int(time.time() * 1000)
    ok("produce", "events", "--partition", "1", broker=broker, stdin=b"three\n")

    records = json_lines(ok("consume", "events", "--from-beginning", "--exit-at-end", "--json", broker=broker))
    assert sorted((r["partition"], r["offset"], r["key"], r["value"]) for r in records) == [
        (0, 0, "k1", "first"), (0, 1, "k2", "second:with:colons"), (0, 2, "k3", ""), (0, 3, "k4", "//4="),
        (1, 0, None, "one"), (1, 1, None, "two"), (1, 2, None, "three"),
    ]
    first = next(r for r in records if r["key"] == "k1")
    assert first["headers"] == [{"key": "source", "value": "cli", "value_encoding": "text"},
                                {"key": "v", "value": "1", "value_encoding": "text"}]
    assert first["topic"] == "events"
    assert first["timestamp_type"] == "CreateTime" and abs(first["timestamp"] - before) < 600_000
    # Bytes that are not UTF-8 come back in base64.
    k4 = next(r for r in records if r["key"] == "k4")
    assert (k4["value"], k4["value_encoding"], k4["key_encoding"]) == ("//4=", "base64", "text")

    # Default format: values only, a line each.
    assert ok("consume", "events", "--partition", "1", "--from-beginning", "-e", broker=broker) == "one\ntwo\nthree\n"
    # kcat-style template (newline added).
    assert ok("consume", "events", "-p", "0", "--offset", "1", "-n", "2", "--format", "%k=%v p%p o%o %h", broker=broker) \
        == "k2=second:with:colons p0 o1 source=cli,v=1\nk3= p0 o2 source=cli,v=1\n"
    assert ok("consume", "events", "-p", "1", "--offset", "-1", "-e", broker=broker) == "three\n"
    # By time: epoch ms, then an ISO date-time from before any record.
    assert ok("consume", "events", "-p", "1", "--from-time", str(before), "-e", broker=broker) == "three\n"
    assert ok("consume", "events", "-p", "1", "--from-time", "2001-01-01T00:00:00Z", "-e", broker=broker) == "one\ntwo\nthree\n"
    assert ok("consume", "events", "--from-beginning", "--max-messages", "2", "-p", "1", broker=broker) == "one\ntwo\n"
    # The default start is the end; --timeout: stop after that long without a record.
    started = time.monotonic()
    assert ok("consume", "events", "--timeout", "1", broker=broker) == ""
    assert time.monotonic() - started < 20

    assert "no key separator" in fails("produce", "events", "-K", "|", broker=broker, stdin=b"nokey\n")
    assert "no partition 9" in fails("produce", "events", "-p", "9", broker=broker, stdin=b"x\n")
    assert fails("consume", "ghost", "-e", broker=broker) == "error: unknown topic: ghost\n"
    fails("consume", "events", "--from-beginning", "--offset", "3", broker=broker, code=USAGE)


def test_consume_with_group_commits_and_groups_describe_shows_lag(broker_factory):
    broker = broker_factory({"group.initial.rebalance.delay.ms": "0"})
    ok("topics", "create", "jobs", "--partitions", "2", broker=broker)
    ok("produce", "jobs", "-p", "0", broker=broker, stdin=b"a\nb\nc\n")
    ok("produce", "jobs", "-p", "1", broker=broker, stdin=b"d\n")
    # consume --group commits under the group (assign mode with --partition).
    assert ok("consume", "jobs", "--group", "cli-group", "-p", "0", "--from-beginning", "-n", "2", broker=broker) == "a\nb\n"
    described = ok_json("groups", "describe", "cli-group", broker=broker)
    assert [(o["partition"], o["committed"], o["high_watermark"], o["lag"]) for o in described["offsets"]] == [(0, 2, 3, 1)]
    # Joining the group: resumes from the committed offset on partition 0, earliest on 1.
    out = ok("consume", "jobs", "--group", "cli-group", "--from-beginning", "-n", "2", broker=broker)
    assert sorted(out.split()) == ["c", "d"]

    # A confluent consumer in a live group: members, assignments and lag.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "app", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "client.id": "app-client"})
    try:
        consumer.subscribe(["jobs"])
        seen = []
        wait_until(lambda: seen.extend(m for m in [consumer.poll(0.2)] if m is not None and not m.error()) or len(seen) >= 4,
                   timeout_s=30, message="4 records")
        consumer.commit(asynchronous=False)
        ok("produce", "jobs", "-p", "1", broker=broker, stdin=b"e\nf\n")
        described = ok_json("groups", "describe", "app", broker=broker)
        assert described["state"] == "stable" and len(described["members"]) == 1
        member = described["members"][0]
        assert member["client_id"] == "app-client"
        assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [("jobs", 0), ("jobs", 1)]
        lag = {o["partition"]: (o["committed"], o["high_watermark"], o["lag"], o["member_id"]) for o in described["offsets"]}
        assert lag == {0: (3, 3, 0, member["member_id"]), 1: (1, 3, 2, member["member_id"])}
        assert described["total_lag"] == 2
        listed = {g["group"]: g for g in ok_json("groups", "list", broker=broker)}
        assert listed["app"]["state"] == "stable" and listed["cli-group"]["state"] == "empty"

        # Offsets of an active group are shown but not reset; nor is the group deleted.
        dry = ok_json("groups", "reset-offsets", "app", "--topic", "jobs", "--to-earliest", broker=broker)
        assert dry["executed"] is False
        assert "no consumer is in the group" in fails("groups", "reset-offsets", "app", "--all-topics", "--to-earliest",
                                                       "--execute", broker=broker)
        assert "group app" in fails("groups", "delete", "app", broker=broker)
    finally:
        consumer.close()

    wait_until(lambda: ok_json("groups", "describe", "app", broker=broker)["state"] == "empty", timeout_s=30, message="group empty")
    # Dry run (the default) changes nothing.
    dry = ok_json("groups", "reset-offsets", "app", "--topic", "jobs:1", "--to-offset", "0", broker=broker)
    assert dry == {"group": "app", "executed": False, "offsets": [{"topic": "jobs", "partition": 1, "current": 1, "new": 0}]}
    result = tidelog("groups", "reset-offsets", "app", "--all-topics", "--to-latest", broker=broker)
    assert result.returncode == 0 and b"add --execute" in result.stderr
    assert result.stdout.decode().splitlines()[1:] == ["jobs\t0\t3\t3", "jobs\t1\t1\t3"]
    assert ok_json("groups", "describe", "app", broker=broker)["total_lag"] == 2
    # --execute commits them.
    executed = ok_json("groups", "reset-offsets", "app", "--all-topics", "--to-earliest", "--execute", broker=broker)
    assert executed["executed"] is True and [o["new"] for o in executed["offsets"]] == [0, 0]
    offsets = ok_json("groups", "describe", "app", broker=broker)["offsets"]
    assert [(o["committed"], o["lag"]) for o in offsets] == [(0, 3), (0, 3)]
    ok("groups", "reset-offsets", "app", "--topic", "jobs:0", "--shift-by", "2", "--execute", broker=broker)
    ok("groups", "reset-offsets", "app", "--topic", "jobs:1", "--to-datetime", "2001-01-01T00:00:00", "--execute", broker=broker)
    assert [o["committed"] for o in ok_json("groups", "describe", "app", broker=broker)["offsets"]] == [2, 0]
    # A consumer of the group resumes where the reset put it.
    resumed = ok("consume", "jobs", "--group", "app", "-n", "4", "--timeout", "20", broker=broker)
    assert sorted(resumed.split()) == ["c", "d", "e", "f"]
    fails("groups", "reset-offsets", "app", "--to-earliest", broker=broker, code=USAGE)

    assert ok_json("groups", "delete", "app", "cli-group", broker=broker) == {"deleted": ["app", "cli-group"]}
    assert "GROUP_ID_NOT_FOUND" in fails("groups", "delete", "app", broker=broker)
    assert fails("groups", "describe", "app", broker=broker) == "error: unknown group: app\n"


def test_cluster(broker):
    ok("topics", "create", "c1", "--partitions", "3", broker=broker)
    info = ok_json("cluster", broker=broker)
    assert [{k: b[k] for k in ("id", "host", "port", "rack", "controller")} for b in info["brokers"]] == [
        {"id": 1, "host": "127.0.0.1", "port": broker.port, "rack": None, "controller": True}]
    assert info["controller"] == 1 and info["cluster_id"]
    assert info["partitions"] >= 3 and info["under_replicated_partitions"] == 0 and info["offline_partitions"] == 0
    plain = ok("cluster", broker=broker)
    assert f"cluster id\t{info['cluster_id']}" in plain and "under-replicated partitions\t0" in plain
    assert f"1\t127.0.0.1\t{broker.port}\t-\tyes" in plain


def test_bootstrap_from_environment_and_unreachable_broker(broker):
    env = {"TIDELOG_BOOTSTRAP_SERVER": broker.bootstrap}
    ok("topics", "create", "via-env", env=env)
    assert "via-env" in ok("topics", "list", env=env)

    # Nothing listens on this port: every command says so in one line, within --timeout. The port
    # stays bound (never listening) while the commands run, so no other test's broker can take it
    # in between; a connect() to a bound socket that does not listen is refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
        # (The admin commands share one connection path; consume and produce have their own.)
        commands = (["groups", "list"], ["consume", "x"], ["produce", "x"])
        started = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "tidelog", *args, "--timeout", "1", "-b", dead],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for args in commands]
        for args, proc in zip(commands, procs):
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
            message = stderr.decode()
            assert proc.returncode == ERROR and stdout == b"", (args, message)
            assert message.startswith(f"error: cannot reach a broker at {dead} within 1s") and message.count("\n") == 1, message
            assert "Connection refused" in message
        assert time.monotonic() - started < 30
    assert "No such option" in fails("topics", "list", "--no-such-option", code=USAGE)


def test_terminal_gets_tables_and_broker_ignores_cli_env(broker, monkeypatch):
    ok("topics", "create", "pretty", broker=broker)
    text = on_terminal("topics", "list", env={"COLUMNS": "100", "TIDELOG_BOOTSTRAP_SERVER": broker.bootstrap})
    assert "┏━" in text and "\x1b[" in text and "│ pretty │" in text and "replication factor" in text

    # TIDELOG_BOOTSTRAP_SERVER is the CLI's, not a broker setting: serve starts with it set.
    from tidelog.config import BrokerConfig

    monkeypatch.setenv("TIDELOG_BOOTSTRAP_SERVER", "127.0.0.1:1")
    BrokerConfig.load(None)


def test_serve_does_not_load_kafka_clients_and_bench_forwards():
    code = "import sys, tidelog.cli.main; assert 'confluent_kafka' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=CLI_TIMEOUT_S).returncode == 0
    help_text = ok("bench", "--help")
    assert "python -m benchmarks" in help_text and "--records" in help_text


def test_cli_and_http_api_give_a_record_the_same_shape(broker):
    """consume --json and GET .../records agree: timestamp_type names, headers a list, encodings."""
    import urllib.request

    from tests.integration.clients import produce

    produce("confluent", broker.bootstrap, "shapes", [(b"k", b"\x00binary", [("trace", b"abc"), ("trace", b"\xff"), ("none", None)],
                                                       1_700_000_000_000)], partition=0)
    [cli] = json_lines(ok("consume", "shapes", "--from-beginning", "--exit-at-end", "--json", broker=broker))
    url = f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/shapes/partitions/0/records?offset=0"
    with urllib.request.urlopen(url, timeout=10) as response:
        [http] = json.loads(response.read())["records"]
    assert cli.pop("topic") == "shapes" and cli.pop("partition") == 0
    assert cli == http
    assert http["timestamp_type"] == "CreateTime" and http["timestamp"] == 1_700_000_000_000
    assert http["headers"] == [{"key": "trace", "value": "abc", "value_encoding": "text"},
                               {"key": "trace", "value": "/w==", "value_encoding": "base64"},
                               {"key": "none", "value": None, "value_encoding": "text"}]
    assert (http["value"], http["value_encoding"]) == ("AGJpbmFyeQ==", "base64")


def test_version_help_and_completion():
    from tidelog import __version__

    assert ok("version").startswith(f"tidelog {__version__} ")
    assert ok("--version") == f"tidelog, version {__version__}\n"
    assert ok("-h") == ok("--help") and "serve" in ok("-h")
    assert "Start a broker." in ok("serve", "-h") and "--data-dir" in ok("serve", "-h")
    assert "_tidelog_completion" in ok("completion", "bash")
    assert "#compdef tidelog" in ok("completion", "zsh")
    assert "complete" in ok("completion", "fish")
    completed = tidelog(env={"_TIDELOG_COMPLETE": "bash_complete", "COMP_WORDS": "tidelog to", "COMP_CWORD": "1"})
    assert completed.returncode == 0 and completed.stdout.decode().split() == ["plain,topics"]
    completed = tidelog("serve", env={"_TIDELOG_COMPLETE": "bash_complete", "COMP_WORDS": "tidelog serve --data", "COMP_CWORD": "2"})
    assert "plain,--data-dir" in completed.stdout.decode().split()


def test_usage_errors_are_one_line_and_name_the_option():
    assert fails("consume", "x", "--from-time", "yesterday", code=USAGE) == (
        "error: Invalid value for --from-time: expected milliseconds since the epoch or an ISO 8601 date-time, "
        "got 'yesterday' (see 'tidelog consume --help')\n")
    assert fails("groups", "reset-offsets", "g", "--all-topics", "--to-datetime", "soon", code=USAGE).startswith(
        "error: Invalid value for --to-datetime: ")
    message = fails("topics", "list", "--no-such-option", code=USAGE)
    assert message.startswith("error: No such option") and "--no-such-option" in message  # click's words vary by version
    assert message.endswith(" (see 'tidelog topics list --help')\n")


def test_every_command_that_asks_the_http_api_takes_a_ca_file_and_credentials(broker_factory, tmp_path):
    """``tidelog cluster --url``, ``tidelog topics describe --http`` and ``tidelog push`` reach an
    HTTPS API with a private CA and users the same way: --cacert (or TIDELOG_HTTP_CACERT), and
    --user NAME:PASSWORD or --token (or their TIDELOG_HTTP_* variables). Without the CA file the
    error says to give it; without credentials, to give them."""
    from tests.integration.security_clients import Pki

    pki = Pki.make(tmp_path / "pki")
    tokens, users = tmp_path / "tokens", tmp_path / "users"
    tokens.write_text("cli-token User:ops\n")
    users.write_text("ops:ops-secret\n")
    tokens.chmod(0o600)
    users.chmod(0o600)
    broker = broker_factory({"http.ssl.enable": "true", "ssl.keystore.location": str(pki.server_pem),
                             "http.bearer.tokens.file": str(tokens), "sasl.plain.users.file": str(users)})
    url, ca = f"https://127.0.0.1:{broker.metrics_port}", str(pki.ca_file)
    ok("topics", "create", "compacted", "--config", "cleanup.policy=compact", broker=broker)

    # tidelog cluster: the lag shown, through either credential, the CA given as an option or in the environment
    for access, env in ((["--cacert", ca, "--token", "cli-token"], {}),
                        (["--user", "ops:ops-secret"], {"TIDELOG_HTTP_CACERT": ca})):
        result = tidelog("cluster", "--url", url, *access, "--json", broker=broker, env=env)
        assert result.returncode == 0 and result.stderr == b"", (access, result.stderr)
        info = json.loads(result.stdout)
        assert info["brokers"][0]["event_loop"] is not None and info["brokers"][0]["event_loop_error"] is None, info
        assert info["brokers"][0]["internal_write_timeouts"] == {}, info  # robust16: the counter, by writer
    table = tidelog("cluster", "--url", url, "--cacert", ca, "--token", "cli-token", broker=broker)
    assert table.returncode == 0 and b"\tWRITE_TIMEOUTS\n" in table.stdout, table.stdout
    assert table.stdout.splitlines()[-1].endswith(b"\t0"), table.stdout  # none timed out
    result = tidelog("cluster", "--url", url, "--token", "cli-token", broker=broker)
    assert result.returncode == 0 and b"event-loop lag not shown: " in result.stderr
    assert b"give --cacert FILE" in result.stderr, result.stderr
    result = tidelog("cluster", "--url", url, "--cacert", ca, broker=broker)
    assert result.returncode == 0 and b"give --user NAME[:PASSWORD] or --token" in result.stderr, result.stderr

    # tidelog topics describe --http: the log cleaner's state from the HTTPS API
    described = ok_json("topics", "describe", "compacted", "--http", url, "--cacert", ca, "--token", "cli-token",
                        broker=broker)
    assert "cleaner" in described["partitions"][0], described
    error = fails("topics", "describe", "compacted", "--http", url, "--token", "cli-token", broker=broker)
    assert "give --cacert FILE" in error, error
    error = fails("topics", "describe", "compacted", "--url", url, "--cacert", ca, broker=broker)
    assert "give --user NAME[:PASSWORD] or --token" in error, error
    error = fails("topics", "describe", "compacted", "--http", "ftp://127.0.0.1:1", broker=broker)
    assert error == "error: --http: expected http://HOST:PORT or https://HOST:PORT, got 'ftp://127.0.0.1:1'\n", error

    # tidelog push: the same options
    assert ok_json("push", "list", "--url", url, "--cacert", ca, "--user", "ops:ops-secret") == []
    assert "give --cacert FILE" in fails("push", "list", "--url", url, "--token", "cli-token")
