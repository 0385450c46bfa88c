"""The web console in a real browser: Debian's chromium, headless, driven by Playwright.

Loads every page against a broker with traffic, creates a topic through the form, produces
through the topic page and browses the records (text, JSON, hex). Screenshots go to the
test's tmp dir; with TIDELOG_UPDATE_SCREENSHOTS=1 the overview is also copied to
docs/console.png for the README (off by default, so a test run leaves the tree unchanged).
Needs /usr/bin/chromium (installed here with apt-get when running as root) and the
``playwright`` package (the test extra); the browser build Playwright downloads is never used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from tests.brokerproc import wait_until
from tests.integration.clients import produce
from tests.integration.group_clients import confluent_consumer, poll_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"


def _ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0:
        pytest.skip("needs Debian's chromium: sudo apt-get install -y chromium")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"apt-get install chromium failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert CHROMIUM.exists()


@pytest.fixture
def page(tmp_path):
    _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (playwright)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(20_000)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            # Console errors, except the failed load of the 409 the test provokes on purpose.
            page.on("console", lambda message: message.type == "error" and "status of 409" not in message.text
                    and page.errors.append(message.text))
            yield page
        finally:
            browser.close()


@pytest.mark.timeout(1500)
def test_console_pages(broker, page, tmp_path):
    base = f"http://127.0.0.1:{broker.metrics_port}"
    api = base + "/api/v1"
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> Path:
        path = shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    # A group with a live member and lag: 6 records in "jobs", 2 committed.
    produce("confluent", broker.bootstrap, "jobs", [(None, b"job-%d" % i, None, None) for i in range(6)], partition=0)
    consumer = confluent_consumer(broker.bootstrap, "billing")
    consumer.subscribe(["jobs"])
    poll_until([consumer], lambda: consumer.assignment(), message="the consumer's assignment")
    from confluent_kafka import TopicPartition

    consumer.commit(offsets=[TopicPartition("jobs", 0, 2)], asynchronous=False)
    # Traffic for the throughput chart while the overview is open.
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            requests.post(api + "/topics/jobs/records", json={"records": [{"value": "x" * 200}] * 20}, timeout=10)
            stop.wait(0.2)

    try:
        # Overview.
        cluster_id = requests.get(api + "/cluster", timeout=10).json()["cluster_id"]
        page.goto(base + "/")
        page.wait_for_selector("[data-testid=cluster-id]")
        assert page.inner_text("[data-testid=cluster-id]") == cluster_id
        assert page.inner_text("#status") == "ready"
        # The event loop's lag of the last minute in the brokers table (GET /cluster's event_loop).
        for cell in ("loop-p99-1", "loop-max-1"):  # "-" until the monitor's first wake-up (0.5 s)
            page.wait_for_function(f"() => document.querySelector('[data-testid={cell}]')?.textContent.endsWith(' ms')")
        assert page.inner_text("[data-testid=loop-stalls-1]").count(" / ") == 1
        # internal writes timed out (tidelog_internal_write_timeouts_total, robust16): none
        assert page.inner_text("[data-testid=write-timeouts-1]") == "0"
        sender = threading.Thread(target=traffic)
        sender.start()
        page.wait_for_function("() => { const el = document.querySelector('[data-testid=produced-rate]');"
                               " return el && !el.textContent.startsWith('0 B'); }")
        page.wait_for_timeout(3000)  # a few more points on the live chart for the screenshot
        stop.set()
        sender.join(10)
        overview = shot("overview")
        if os.environ.get("TIDELOG_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(overview, DOCS_SCREENSHOT)

        # Topics: create one through the form.
        page.click("nav >> text=Topics")
        page.wait_for_selector("[data-testid=topics-table] [data-row=jobs]")
        page.fill("[data-testid=topic-name]", "console-topic")
        page.fill("[data-testid=topic-partitions]", "3")
        page.fill("[data-testid=topic-configs]", "retention.ms=3600000")
        page.click("[data-testid=create-topic]")
        page.wait_for_selector("[data-testid=notice] >> text=Created topic console-topic")
        page.wait_for_selector("[data-testid=topics-table] [data-row=console-topic]")
        created = requests.get(api + "/topics/console-topic", timeout=10).json()
        assert created["partition_count"] == 3
        assert {c["name"]: c["value"] for c in created["configs"] if c["source"] == "topic"} == {"retention.ms": "3600000"}
        # The form reports the broker's error.
        page.fill("[data-testid=topic-name]", "console-topic")
        page.click("[data-testid=create-topic]")
        page.wait_for_selector("[data-testid=error] >> text=TOPIC_ALREADY_EXISTS")
        shot("topics")

        # Topic detail: partitions, produce through the form.
        page.click("[data-testid=topics-table] [data-row=console-topic] a >> nth=0")
        page.wait_for_selector("[data-testid=partitions-table]")
        assert page.locator("[data-testid=partitions-table] tbody tr").count() == 3
        page.select_option("[data-testid=produce-form] select[name=partition]", "1")
        page.fill("[data-testid=produce-key]", "order-1")
        page.fill("[data-testid=produce-value]", '{"id": 42, "item": "book"}')
        page.click("[data-testid=produce]")
        page.wait_for_selector("[data-testid=notice] >> text=Produced at partition 1, offset 0")
        shot("topic")
        produce("confluent", broker.bootstrap, "console-topic", [(b"bin", b"\x00\x01\x02binary", [("trace", b"abc")], None)], partition=1)

        # Message browser: the produced records, as JSON and hex.
        page.goto(base + "/#/topics/console-topic/messages?partition=1")
        page.wait_for_selector("[data-testid=records-table] [data-row='1']")
        assert page.locator("[data-testid=records-table] tbody tr").count() == 2
        page.click("[data-testid=records-table] [data-row='0']")
        page.select_option("[data-testid=value-mode]", "json")
        page.wait_for_selector("[data-testid=value-json]")
        assert '"id": 42' in page.inner_text("[data-testid=value-json]")
        shot("messages")
        page.click("[data-testid=records-table] [data-row='1']")
        page.select_option("[data-testid=value-mode]", "hex")
        page.wait_for_function("() => document.querySelector('[data-testid=record-detail]').dataset.offset === '1'")
        hex_dump = page.locator("[data-testid=value-hex]").last.inner_text()
        assert "00 01 02 62 69 6e 61 72 79" in hex_dump
        assert "trace" in page.inner_text("[data-testid=record-detail]")
        shot("messages-hex")
        # From an offset.
        page.fill("[data-testid=browse-offset]", "1")
        page.click("[data-testid=browse]")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=records-table] tbody tr').length === 1")
        assert "1 records" in page.inner_text("[data-testid=browse-summary]")

        # Consumer groups: the member, its assignment and the lag.
        page.click("nav >> text=Consumer groups")
        page.wait_for_selector("[data-testid=groups-table] [data-row=billing]")
        shot("groups")
        page.click("[data-testid=groups-table] [data-row=billing] a")
        page.wait_for_selector("[data-testid=members-table] >> text=jobs: 0")
        lag = int(page.inner_text("[data-testid=group-lag]").replace(",", ""))
        expected = requests.get(api + "/groups/billing", timeout=10).json()["lag"]
        assert lag > 0 and abs(lag - expected) <= 400  # traffic may still be landing between the two reads
        assert page.inner_text("[data-testid=group-state]") == "Stable"
        wait_until(lambda: page.locator("[data-testid=offsets-table] tbody tr").count() == 1, message="the offsets table")
        shot("group")
    finally:
        stop.set()
        consumer.close()
    assert page.errors == []
    assert sorted(p.name for p in shots.iterdir()) == [
        "group.png", "groups.png", "messages-hex.png", "messages.png", "overview.png", "topic.png", "topics.png"]


@pytest.mark.timeout(600)
def test_console_of_any_cluster_broker_shows_the_whole_cluster(page, tmp_path):
    """On a broker of a 3-broker cluster: every broker and the real controller, partitions led
    by the others with their offsets, records read from another broker's partition, and a dead
    broker's partitions shown offline with leader "none"."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tests.clusterproc import Cluster
    from tests.etcdproc import etcd_binary

    etcd_binary()  # skips without etcd
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster", 3, settings={"http.port": "0"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 20, message="three brokers")
        for future in admin.create_topics([NewTopic("shared", 3, 3), NewTopic("single", 3, 1)]).values():
            future.result(10)
        for topic, replicas in (("shared", 3), ("single", 1)):
            wait_until(lambda: all(p.leader > 0 and len(p.isrs) == replicas
                                   for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()),
                       20, message=f"{topic} led with a full ISR")
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        for partition in range(3):
            producer.produce("shared", value=b"from-p%d" % partition, partition=partition)
        assert producer.flush(30) == 0
        controller = admin.describe_cluster().result(10).controller.id
        leaders = {p: m.leader for p, m in admin.list_topics("shared", timeout=5).topics["shared"].partitions.items()}
        viewer = cluster.brokers[3]
        base = f"http://127.0.0.1:{viewer.metrics_port}"

        page.goto(base + "/")
        page.wait_for_selector("[data-testid=brokers-table] [data-row='3']")
        assert page.locator("[data-testid=brokers-table] tbody tr").count() == 3
        assert page.inner_text("[data-testid=controller]") == f"#{controller}"
        assert page.inner_text("[data-testid=broker-count]") == "3"
        assert page.inner_text("[data-testid=under-replicated]") == "0"
        for node_id in (1, 2, 3):  # each broker's event-loop lag, the others' asked of them by broker 3
            page.wait_for_function(f"() => document.querySelector('[data-testid=loop-p99-{node_id}]')"
                                   "?.textContent.endsWith(' ms')")

        page.goto(base + "/#/topics/shared")
        page.wait_for_selector("[data-testid=partitions-table] [data-row='2']")
        for partition, leader in leaders.items():
            cells = page.locator(f"[data-testid=partitions-table] [data-row='{partition}'] td").all_inner_texts()
            assert cells[1] == str(leader) and cells[5] == "ok", cells
            assert cells[8] == "1", (cells, viewer.log())  # the high watermark, from the leader wherever it is
        other = next(p for p, leader in leaders.items() if leader != 3)
        page.goto(base + f"/#/topics/shared/messages?partition={other}")
        page.wait_for_selector("[data-testid=records-table] [data-row='0']")
        assert f"from-p{other}" in page.inner_text("[data-testid=records-table]")

        # A broker dies: its single-replica partitions are offline, with leader "none".
        single = {p: m.leader for p, m in admin.list_topics("single", timeout=5).topics["single"].partitions.items()}
        victim = next(b for b in (1, 2) if b in single.values())
        cluster.brokers[victim].kill()
        lost = [p for p, leader in single.items() if leader == victim]
        page.goto(base + "/#/topics/single")
        page.wait_for_selector("[data-testid=partitions-table]")
        row = f"[data-testid=partitions-table] [data-row='{lost[0]}']"

        def offline_row() -> list[str] | None:
            page.reload()
            page.wait_for_selector(row)
            cells = page.locator(row + " td").all_inner_texts()
            return cells if cells[1] == "none" else None

        cells = wait_until(offline_row, 30, interval_s=0.5, message="the dead broker's partition shown offline")
        assert cells[4] == str(victim) and cells[5] == "offline", cells
        page.goto(base + "/")
        wait_until(lambda: page.inner_text("[data-testid=broker-count]") == "2", 30, interval_s=0.5, message="two brokers")
        assert int(page.inner_text("[data-testid=offline]")) >= len(lost)
        page.screenshot(path=str(tmp_path / "cluster-overview.png"), full_page=True)
    finally:
        cluster.stop()
    assert page.errors == []


@pytest.mark.timeout(300)
def test_console_lists_transactions(broker, page):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "console-txn"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce("txn-topic", b"open", partition=0)
    producer.flush(30)
    page.goto(f"http://127.0.0.1:{broker.metrics_port}/#/transactions")
    row = "[data-testid=transactions-table] [data-row=console-txn]"
    page.wait_for_selector(row)
    cells = page.locator(row + " td").all_inner_texts()
    assert cells[0] == "console-txn" and cells[1] == "Ongoing" and "txn-topic: 0" in cells[6], cells
    producer.commit_transaction(30)
    page.wait_for_function(f"() => document.querySelector('{row} td:nth-child(2)')?.textContent === 'CompleteCommit'")
    assert page.errors == []


@pytest.mark.timeout(300)
def test_console_security_page(broker_factory, page):
    """Users with their SCRAM mechanisms (never a secret), ACLs and client quotas; a user without
    DESCRIBE on the cluster sees the refusal."""
    import base64

    from tests.integration.test_http_auth import AUTHORIZER, _set_quota
    from tests.integration.test_sasl import SECRET, tidelog

    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:admin;User:ANONYMOUS"})
    for name in ("admin", "alice"):
        assert tidelog("users", "create", name, "--password", SECRET, "-b", broker.bootstrap).returncode == 0
    assert tidelog("acls", "add", "orders-", "--topic", "--prefixed", "--principal", "User:alice", "--operation", "write",
                   "-b", broker.bootstrap).returncode == 0
    _set_quota(broker, "alice", 2048)

    def login(user: str) -> None:
        token = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
        page.set_extra_http_headers({"Authorization": f"Basic {token}"})

    login("admin")
    page.goto(f"http://127.0.0.1:{broker.metrics_port}/#/security")
    page.wait_for_selector("[data-testid=users-table] [data-row=alice]")
    assert "SCRAM-SHA-256 (8,192 iterations)" in page.locator("[data-testid=users-table] [data-row=alice]").inner_text()
    acl = page.locator("[data-testid=acls-table] tbody tr").all_inner_texts()
    assert any("User:alice" in row and "WRITE" in row and "TOPIC:PREFIXED:orders-" in row for row in acl), acl
    assert "user: alice" in page.locator("[data-testid=quotas-table]").inner_text()
    assert page.locator("[data-testid=acls-enabled]").inner_text() == "on"
    assert SECRET not in page.content() and "stored_key" not in page.content()
    assert page.locator("nav a.active").inner_text() == "Security"
    login("alice")
    page.reload()
    page.wait_for_selector("[data-testid=error]")
    assert "CLUSTER_AUTHORIZATION_FAILED" in page.locator("[data-testid=error]").inner_text()
    assert [e for e in page.errors if "status of 403" not in e] == []
