"""The supervisor page's Sales and Forecast tabs in headless Chromium against the running demo.

A supervisor books an order in the page and sees it promised with its reason and its promise
history; an order wanted today that the plant cannot make by then shows at risk, with the
capable-to-promise reason chain; a change made elsewhere (the REST API) moves the promise on the
open page through the live feed; a cancelled line leaves the big screen. The Forecast tab shows
an item's backtest against the naive forecast exactly as the API computes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_big_screen import LOAD_TIMEOUT_MS

pytestmark = pytest.mark.browser

UI_TIMEOUT_MS = 10_000
PUMP = "FG-100"
GASKET = "RM-GASKET"  # sold only in the forecast test: its history disturbs no pump promise
SALES_SCREENSHOT = Path("/tmp/supervisor-sales.png")
FORECAST_SCREENSHOT = Path("/tmp/supervisor-forecast.png")


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def _line(api: httpx.Client, order: str, line: int = 1) -> dict[str, Any]:
    rows = _ok(api.get("/api/sales-orders"))
    found: dict[str, Any] = next(r for r in rows if (r["order"], r["line"]) == (order, line))
    return found


def _open(page: Page, url: str) -> None:
    page.goto(url, timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector(
        "body[data-loaded='supervisor']", state="attached", timeout=LOAD_TIMEOUT_MS
    )


def _book(page: Page, number: str, quantity: str, requested: str) -> None:
    page.get_by_test_id("sales-customer").select_option("CUST-ACME")
    page.get_by_test_id("sales-item").select_option(PUMP)
    page.get_by_test_id("sales-quantity").fill(quantity)
    page.get_by_test_id("sales-requested").fill(requested)
    page.get_by_test_id("sales-number").fill(number)
    page.get_by_test_id("sales-submit").click()
    expect(page.get_by_test_id("sales-result")).to_have_text(
        f"created {number}", timeout=UI_TIMEOUT_MS
    )


def test_book_an_order_see_its_promise_reason_history_and_risk_live(
    page: Page, api: httpx.Client, demo_url: str
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _open(page, f"{demo_url}/#/supervisor/sales")
    expect(page.get_by_test_id("sales-live")).to_have_attribute(
        "data-state", "live", timeout=UI_TIMEOUT_MS
    )
    # The demo's own order is listed.
    expect(page.get_by_test_id("sl-SO-1001-1")).to_be_visible(timeout=UI_TIMEOUT_MS)

    # A small order two weeks out: promised (finished stock or the running order), on time.
    today = datetime.now(UTC).date()
    _book(page, "SO-7001", "50", (today + timedelta(days=14)).isoformat())
    row = page.get_by_test_id("sl-SO-7001-1")
    expect(row).to_have_attribute("data-at-risk", "false", timeout=UI_TIMEOUT_MS)
    booked = _line(api, "SO-7001")
    assert booked["promised_at"] is not None
    expect(page.get_by_test_id("sl-SO-7001-1-promised")).to_have_attribute(
        "data-value", booked["promised_at"]
    )
    expect(page.get_by_test_id("sl-SO-7001-1-reason")).to_have_text(booked["promise_reason"])
    page.get_by_test_id("sl-SO-7001-1-toggle").click()
    expect(page.get_by_test_id("sl-SO-7001-1-h-1")).to_contain_text(booked["promise_reason"])

    # 100 000 pumps wanted today: no stock, no line makes that by tonight - at risk, and the
    # reason chain of the capable-to-promise date is shown step by step.
    _book(page, "SO-7002", "100000", today.isoformat())
    risky = page.get_by_test_id("sl-SO-7002-1")
    expect(risky).to_have_attribute("data-at-risk", "true", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("sl-SO-7002-1-risk")).to_contain_text("AT RISK")
    expect(page.get_by_test_id("so-SO-7002")).to_contain_text("at risk")
    line = _line(api, "SO-7002")
    assert line["at_risk"] is True
    expect(page.get_by_test_id("sl-SO-7002-1-reason")).to_have_text(line["promise_reason"])
    page.get_by_test_id("sl-SO-7002-1-toggle").click()
    history = _ok(api.get("/api/sales-orders/SO-7002/lines/1/promises"))
    steps = history[-1]["steps"]
    assert steps, "a capable-to-promise promise has a reason chain"
    newest = f"sl-SO-7002-1-h-{len(history)}"
    expect(page.get_by_test_id(f"{newest}-step-{len(steps)}")).to_contain_text(steps[-1]["text"])
    page.screenshot(path=str(SALES_SCREENSHOT), full_page=True)

    # Changed through the API by someone else: the open page follows the live feed.
    _ok(api.patch("/api/sales-orders/SO-7002/lines/1", json={"quantity": "200000"}))
    moved = _line(api, "SO-7002")
    assert moved["promised_at"] != line["promised_at"]
    expect(page.get_by_test_id("sl-SO-7002-1-promised")).to_have_attribute(
        "data-value", moved["promised_at"], timeout=UI_TIMEOUT_MS
    )
    expect(page.get_by_test_id("sl-SO-7002-1-quantity")).to_have_attribute("data-value", "200000")
    # Its history is open: the new promise is read into it.
    expect(page.get_by_test_id(f"sl-SO-7002-1-h-{len(history) + 1}")).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )

    # Cancelled in the page: closed, no longer at risk.
    page.get_by_test_id("sl-SO-7002-1-cancel").click()
    expect(risky).to_have_attribute("data-status", "cancelled", timeout=UI_TIMEOUT_MS)
    expect(risky).to_have_attribute("data-at-risk", "false")
    expect(page.get_by_test_id("so-SO-7002-status")).to_have_text("cancelled")
    assert _line(api, "SO-7002")["status"] == "cancelled"
    assert errors == []


def test_a_cancelled_line_leaves_the_big_screen(
    page: Page, api: httpx.Client, demo_url: str
) -> None:
    requested = (datetime.now(UTC).date() + timedelta(days=20)).isoformat()
    order = {
        "number": "SO-7101",
        "customer": "CUST-ACME",
        "lines": [{"item": PUMP, "quantity": "10", "requested_date": requested}],
    }
    _ok(api.post("/api/sales-orders", json=order))
    page.goto(f"{demo_url}/", timeout=LOAD_TIMEOUT_MS)
    row = page.get_by_test_id("promise-SO-7101-1")
    expect(row).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector("body[data-loaded='snapshot']", state="attached", timeout=UI_TIMEOUT_MS)
    _ok(api.post("/api/sales-orders/SO-7101/cancel"))
    expect(row).to_have_count(0, timeout=UI_TIMEOUT_MS)


def test_forecast_tab_shows_the_backtest_against_naive(
    page: Page, api: httpx.Client, demo_url: str
) -> None:
    # Ten weeks of gasket sales before this week (Wednesdays), booked through the API.
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday())
    weekly = ["100", "120", "90", "110", "100", "130", "95", "105", "115", "100"]
    first_wednesday = monday - timedelta(weeks=len(weekly)) + timedelta(days=2)
    lines = [
        {
            "item": GASKET,
            "quantity": quantity,
            "requested_date": (first_wednesday + timedelta(weeks=week)).isoformat(),
        }
        for week, quantity in enumerate(weekly)
    ]
    _ok(api.post("/api/sales-orders", json={"customer": "CUST-ACME", "lines": lines}))
    expected = _ok(api.get(f"/api/items/{GASKET}/forecast", params={"bucket": "week"}))
    backtest = expected["backtest"]

    _open(page, f"{demo_url}/#/supervisor/forecast")
    page.get_by_test_id("forecast-item").select_option(GASKET)
    expect(page.get_by_test_id("sup-forecast")).to_have_attribute("data-item", GASKET)
    mae = page.get_by_test_id("forecast-mae")
    expect(mae).to_have_attribute("data-value", backtest["model_mae"], timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("forecast-baseline-mae")).to_have_attribute(
        "data-value", backtest["baseline_mae"]
    )
    expect(page.get_by_test_id("forecast-mase")).to_have_attribute(
        "data-value", backtest["mase"] or ""
    )
    expect(page.get_by_test_id("forecast-relative-mae")).to_have_attribute(
        "data-value", backtest["relative_mae"] or ""
    )
    expect(page.get_by_test_id("forecast-history-line")).to_have_attribute(
        "data-points", str(len(expected["history"]))
    )
    assert len(expected["history"]) >= len(weekly)
    first = expected["forecast"][0]
    expect(page.get_by_test_id(f"forecast-bucket-{first['start']}")).to_be_visible()
    page.screenshot(path=str(FORECAST_SCREENSHOT), full_page=True)
    # An item without sales history: the page says so instead of failing.
    page.get_by_test_id("forecast-item").select_option("RM-SEALANT")
    expect(page.get_by_test_id("forecast-note")).to_contain_text(
        "a forecast needs at least", timeout=UI_TIMEOUT_MS
    )
    expect(page.get_by_test_id("sup-error")).to_be_hidden()
