"""``tidelog consume --share-group`` as a user runs it (a subprocess) against a real broker: it
acknowledges each record printed (accept, or release so that the delivery count rises), and the
options that do not apply to a share group are usage errors."""

from __future__ import annotations

import json

import requests

from tests.integration.test_cli import USAGE, ok, tidelog


def api_url(broker) -> str:
    return f"http://127.0.0.1:{broker.metrics_port}/api/v1"


def join_http_member(broker, group: str, topic: str, member: str) -> None:
    """An HTTP member joins (the group's share-partitions start at the log end, latest)."""
    response = requests.post(f"{api_url(broker)}/share-groups/{group}/receive", json={"topic": topic, "member_id": member},
                             timeout=30)
    assert response.status_code == 200, response.text


def produce_http(broker, topic: str, count: int) -> None:
    response = requests.post(f"{api_url(broker)}/topics/{topic}/records", timeout=30,
                             json={"records": [{"value": f"v{i}", "partition": i % 2} for i in range(count)]})
    assert response.status_code == 200, response.text


def test_consume_share_group_accepts_or_releases_what_it_prints(broker):
    ok("topics", "create", "tasks", "--partitions", "2", broker=broker)
    join_http_member(broker, "cli-workers", "tasks", "starter")
    requests.delete(f"{api_url(broker)}/share-groups/cli-workers/members/starter", timeout=30).raise_for_status()
    produce_http(broker, "tasks", 20)
    # look without taking: released, so they come back with a higher delivery count
    peek = [json.loads(line) for line in ok("consume", "tasks", "--share-group", "cli-workers", "--ack", "release",
                                             "-n", "20", "--timeout", "20", "--json", broker=broker).splitlines()]
    assert len(peek) == 20 and {r["delivery_count"] for r in peek} == {1}
    taken = [json.loads(line) for line in ok("consume", "tasks", "--share-group", "cli-workers", "-n", "20",
                                              "--timeout", "20", "--json", broker=broker).splitlines()]
    assert sorted(r["value"] for r in taken) == sorted(f"v{i}" for i in range(20))
    assert {r["delivery_count"] for r in taken} == {2}
    # all accepted: nothing left
    assert ok("consume", "tasks", "--share-group", "cli-workers", "--timeout", "5", broker=broker) == ""
    group = requests.get(f"{api_url(broker)}/share-groups/cli-workers", timeout=30).json()
    assert group["members"] == [] and group["lag"] == 0  # the consumers left when they closed
    assert {(p["topic"], p["partition"], p["start_offset"]) for p in group["partitions"]} == {("tasks", 0, 10), ("tasks", 1, 10)}


def test_share_group_options_that_do_not_apply_are_usage_errors():
    nobody = ("-b", "127.0.0.1:1")  # refused before connecting
    result = tidelog("consume", "t", "--share-group", "g", "--from-beginning", "--partition", "1", *nobody)
    assert result.returncode == USAGE and b"--from-beginning, --partition: not with --share-group" in result.stderr
    result = tidelog("consume", "t", "--ack", "reject", *nobody)
    assert result.returncode == USAGE and b"--ack is for --share-group" in result.stderr
