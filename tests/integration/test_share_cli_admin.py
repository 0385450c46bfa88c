"""``tidelog share-groups`` as a user runs it (subprocesses) against a real broker: list, describe
(an HTTP member seen through Kafka's ShareGroupDescribe and DescribeShareGroupOffsets),
reset-offsets (refused with members, a dry run, then --execute), delete."""

from __future__ import annotations

import json

import requests

from tests.integration.test_cli import ERROR, USAGE, ok, tidelog
from tests.integration.test_share_cli import api_url, join_http_member, produce_http


def test_share_groups_list_describe_reset_delete(broker):
    ok("topics", "create", "orders", "--partitions", "2", broker=broker)
    join_http_member(broker, "billing", "orders", "http-member-1")
    produce_http(broker, "orders", 6)
    assert ok("share-groups", "list", broker=broker).split() == ["billing"]
    assert json.loads(ok("share-groups", "list", "--json", broker=broker)) == [
        {"group": "billing", "state": "stable", "type": "share"}]
    described = json.loads(ok("share-groups", "describe", "billing", "--json", broker=broker))
    assert [(m["member_id"], m["client_id"]) for m in described["members"]] == [("http-member-1", "tidelog-http")]
    assert described["members"][0]["assignment"] == [{"topic": "orders", "partition": 0}, {"topic": "orders", "partition": 1}]
    assert [(o["partition"], o["start_offset"], o["lag"]) for o in described["offsets"]] == [(0, 0, 3), (1, 0, 3)]
    assert described["total_lag"] == 6
    assert described["queue_configs"] == {"tidelog.filter": "", "tidelog.retry.backoff.initial.ms": "0",
                                          "tidelog.retry.backoff.max.ms": "300000",
                                          "tidelog.retry.backoff.multiplier": "2.0"}
    ok("share-groups", "alter-config", "billing", "--config", "tidelog.retry.backoff.initial.ms=500", broker=broker)
    text = ok("share-groups", "describe", "billing", broker=broker)
    assert "http-member-1" in text and "orders" in text and "tidelog.retry.backoff.initial.ms=500" in text

    # reset-offsets: refused while the group has a member, a dry run changes nothing
    refused = tidelog("share-groups", "reset-offsets", "billing", "--topic", "orders", "--to-latest", "--execute", broker=broker)
    assert refused.returncode == ERROR and b"has 1 member" in refused.stderr and b"Traceback" not in refused.stderr
    requests.delete(f"{api_url(broker)}/share-groups/billing/members/http-member-1", timeout=30).raise_for_status()
    plan = json.loads(ok("share-groups", "reset-offsets", "billing", "--topic", "orders:1", "--to-latest", "--json",
                         broker=broker))
    assert plan == {"group": "billing", "executed": False, "offsets": [{"topic": "orders", "partition": 1, "current": 0, "new": 3}]}
    ok("share-groups", "reset-offsets", "billing", "--all-topics", "--to-latest", "--execute", broker=broker)
    described = json.loads(ok("share-groups", "describe", "billing", "--json", broker=broker))
    assert [(o["partition"], o["start_offset"], o["lag"]) for o in described["offsets"]] == [(0, 3, 0), (1, 3, 0)]
    usage = tidelog("share-groups", "reset-offsets", "billing", "--all-topics", broker=broker)
    assert usage.returncode == USAGE and b"exactly one of" in usage.stderr

    ok("share-groups", "delete", "billing", broker=broker)
    assert ok("share-groups", "list", broker=broker) == ""
    missing = tidelog("share-groups", "describe", "billing", broker=broker)
    assert missing.returncode == ERROR and b"unknown share group: billing" in missing.stderr
