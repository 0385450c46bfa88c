"""The console's push-subscription pages in a real browser (Debian's chromium through Playwright, as
test_console.py): the list with a subscription present (topics, endpoint, state, backlog), creating
one through the form (its secret shown once), and a subscription's page: status cards, settings
changed through the form, pause, resume and delete."""

from __future__ import annotations

import pytest
import requests

from tests.integration.test_console import page  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.slow

ENDPOINT = "http://127.0.0.1:9/hook"  # nothing listens: deliveries are refused (see test_push_api.py)


@pytest.mark.timeout(600)
def test_push_pages(broker, page, tmp_path):  # noqa: F811 - the fixture
    base = f"http://127.0.0.1:{broker.metrics_port}"
    api = base + "/api/v1"
    assert requests.post(api + "/topics", json={"name": "orders", "partitions": 2}, timeout=30).status_code == 201
    created = requests.post(api + "/push-subscriptions", timeout=30,
                            json={"name": "orders-hook", "topics": ["orders"], "endpoint": ENDPOINT, "batch_size": 25})
    assert created.status_code == 201, created.text

    page.goto(base + "/#/push")
    page.wait_for_selector("[data-testid=push-table] [data-row=orders-hook]")
    row = page.inner_text("[data-testid=push-table] [data-row=orders-hook]")
    assert "orders" in row and ENDPOINT in row
    assert page.get_attribute("nav a[data-nav=push]", "class") == "active"

    # Create one through the form: the secret is on the page this once.
    page.fill("[data-testid=push-name]", "audit-hook")
    page.fill("[data-testid=push-topics]", "orders")
    page.fill("[data-testid=push-endpoint]", ENDPOINT)
    page.click("[data-testid=push-create]")
    page.wait_for_selector("[data-testid=push-secret]")
    secret = page.inner_text("[data-testid=push-secret]")
    assert len(secret) >= 32
    page.wait_for_selector("[data-testid=push-table] [data-row=audit-hook]")
    page.screenshot(path=str(tmp_path / "push.png"), full_page=True)
    # The same name again: the API's 409, shown.
    page.fill("[data-testid=push-name]", "audit-hook")
    page.fill("[data-testid=push-topics]", "orders")
    page.fill("[data-testid=push-endpoint]", ENDPOINT)
    page.click("[data-testid=push-create]")
    page.wait_for_selector("[data-testid=error] >> text=SUBSCRIPTION_ALREADY_EXISTS")
    assert secret not in requests.get(api + "/push-subscriptions", timeout=30).text

    page.click("[data-testid=push-table] [data-row=orders-hook] a")
    page.wait_for_selector("[data-testid=push-title] >> text=orders-hook")
    page.wait_for_selector("[data-testid=push-backlog]")
    assert page.inner_text("[data-testid=push-concurrency]").endswith("of 8")
    page.wait_for_selector("[data-testid=push-status-scope] >> text=2 share-partitions, delivered by broker 1 ")
    assert page.inner_text("[data-testid=push-count-dead_lettered]") == "0"
    assert page.input_value("[data-testid=push-setting-batch_size]") == "25"

    page.fill("[data-testid=push-setting-batch_size]", "40")
    page.fill("[data-testid=push-setting-linger_ms]", "5")
    page.click("[data-testid=push-save]")
    page.wait_for_selector("[data-testid=notice] >> text=Updated")
    described = requests.get(api + "/push-subscriptions/orders-hook", timeout=30).json()
    assert (described["batch_size"], described["linger_ms"], described["max_concurrency"]) == (40, 5, 8)

    page.click("[data-testid=push-pause]")
    page.wait_for_selector("[data-testid=push-detail-state] >> text=paused")
    assert requests.get(api + "/push-subscriptions/orders-hook", timeout=30).json()["paused"] is True
    assert page.is_disabled("[data-testid=push-pause]") and page.is_enabled("[data-testid=push-resume]")
    page.screenshot(path=str(tmp_path / "push-subscription.png"), full_page=True)
    page.click("[data-testid=push-resume]")
    page.wait_for_selector("[data-testid=push-pause]:not([disabled])")
    assert requests.get(api + "/push-subscriptions/orders-hook", timeout=30).json()["paused"] is False

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=push-delete]")
    page.wait_for_selector("[data-testid=push-table]")
    page.wait_for_function("() => !document.querySelector('[data-testid=push-table] [data-row=orders-hook]')")
    assert [s["name"] for s in requests.get(api + "/push-subscriptions", timeout=30).json()["subscriptions"]] == ["audit-hook"]
    assert page.errors == []
