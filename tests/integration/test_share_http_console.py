"""The console's share-group pages in a real browser (Debian's chromium through Playwright, as
test_console.py): the list with lag, records in flight and dead-lettered counts; a group's
members, share-partitions with records by state and delivery counts, and the records in flight
with the member holding them."""

from __future__ import annotations

import pytest
import requests

from tests.brokerproc import wait_until
from tests.integration.test_console import page  # noqa: F401 - the browser fixture
from tests.integration.test_queue_features import group_configs

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_share_group_pages(broker, page, tmp_path):  # noqa: F811 - the fixture
    base = f"http://127.0.0.1:{broker.metrics_port}"
    api = base + "/api/v1"

    def post(path: str, body: dict) -> dict:
        response = requests.post(api + path, json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    assert requests.post(api + "/topics", json={"name": "jobs", "partitions": 2}, timeout=30).status_code == 201
    post("/share-groups/workers/receive", {"topic": "jobs", "member_id": "console-member"})
    group_configs(broker.bootstrap, "workers", **{"tidelog.retry.backoff.initial.ms": "60000"})  # issue 14
    post("/topics/jobs/records", {"records": [{"value": f"job-{i}", "partition": i % 2} for i in range(10)]})
    held: list[dict] = []

    def receive_six() -> bool:
        held.extend(post("/share-groups/workers/receive", {"topic": "jobs", "member_id": "console-member",
                                                           "max_records": 6 - len(held), "timeout_ms": 1000})["records"])
        return len(held) >= 6

    wait_until(receive_six, message="six records received")
    post("/share-groups/workers/ack", {"member_id": "console-member", "receipts": [r["receipt"] for r in held[:2]]})
    post("/share-groups/workers/release", {"member_id": "console-member", "receipts": [held[2]["receipt"]]})

    page.goto(base + "/#/share-groups")
    page.wait_for_selector("[data-testid=share-groups-table] [data-row=workers]")
    row = page.inner_text("[data-testid=share-groups-table] [data-row=workers]")
    assert "jobs" in row and "Stable" in row
    page.screenshot(path=str(tmp_path / "share-groups.png"), full_page=True)

    page.click("[data-testid=share-groups-table] [data-row=workers] a")
    page.wait_for_selector("[data-testid=share-members-table] [data-row=console-member]")
    member = page.inner_text("[data-testid=share-members-table] [data-row=console-member]")
    assert "tidelog-http" in member and member.rstrip().endswith("3")  # records held: 6 taken, 2 acked, 1 released
    assert page.inner_text("[data-testid=share-group-lag]") == "8"
    assert page.inner_text("[data-testid=share-group-in-flight]") != "0"
    assert page.inner_text("[data-testid=count-acknowledged]") == "2"
    partitions = page.inner_text("[data-testid=share-partitions-table]")
    assert "acquired" in partitions and "jobs" in partitions
    assert "Delayed" in partitions  # the released record waits for its back-off (a minute)
    assert page.inner_text("[data-testid=share-group-queue-configs]") == "retry.backoff.initial.ms=60000 · " \
        "retry.backoff.multiplier=2 · retry.backoff.max.ms=300000"
    runs = page.inner_text("[data-testid=share-runs-table]")
    assert "console-member" in runs and "acquired" in runs and "available" in runs
    page.screenshot(path=str(tmp_path / "share-group.png"), full_page=True)
    page.goto(base + "/#/topics/jobs")  # the topic's page lists the share groups reading it (issue 14)
    page.wait_for_selector("[data-testid=topic-share-groups-table] [data-row=workers-1]")
    assert "workers" in page.inner_text("[data-testid=topic-share-groups-table] [data-row=workers-0]")
    assert page.errors == []
