"""Cycle counts on the supervisor page (#/supervisor, stock tab) in headless Chromium against the
running demo: user A counts less than the books say (worth more than the plant's 500.00
threshold), the count waits; A may not approve it, user B does, and the balance changes.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_big_screen import LOAD_TIMEOUT_MS

pytestmark = pytest.mark.browser

UI_TIMEOUT_MS = 10_000
HOUSING, RAW = "RM-HOUSING", "WH1/RAW"


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def _housing_on_hand(api: httpx.Client) -> Decimal:
    (row,) = _ok(api.get("/api/stock/balances", params={"item": HOUSING, "location": RAW}))
    return Decimal(row["on_hand"])


def test_a_count_above_the_threshold_is_approved_by_another_user(
    page: Page, api: httpx.Client, demo_url: str, tmp_path: Path
) -> None:
    # The running order ends: no backflush moves the housings while they are counted.
    _ok(api.post("/api/work-orders/WO-1001/complete"))
    receipt = {"item": HOUSING, "location": RAW, "quantity": "50", "unit_cost": "12.50"}
    _ok(api.post("/api/stock/receipts", json={**receipt, "reference": "DN-1", "lot": "L-TEST"}))
    book = _housing_on_hand(api)
    counted = book - 100  # 100 x 12.50 = 1 250 > 500.00: needs approval
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{demo_url}/#/supervisor", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector(
        "body[data-loaded='supervisor']", state="attached", timeout=LOAD_TIMEOUT_MS
    )
    balance = page.get_by_test_id(f"bal-{HOUSING}-{RAW}-on-hand")
    expect(balance).to_have_attribute("data-value", str(book), timeout=UI_TIMEOUT_MS)
    lot_row = page.get_by_test_id(f"lot-{HOUSING}-{RAW}-none-on-hand")
    expect(lot_row).to_have_attribute("data-value", str(book - 50))
    in_lot = page.get_by_test_id(f"lot-{HOUSING}-{RAW}-L-TEST-on-hand")
    expect(in_lot).to_have_attribute("data-value", "50")

    # A counts (a count needs a name: without one the page says so and sends nothing).
    page.get_by_test_id("count-user").fill("")
    page.get_by_test_id("count-item").fill(HOUSING)
    page.get_by_test_id("count-location").fill(RAW)
    page.get_by_test_id("count-quantity").fill(str(counted))
    page.get_by_test_id("count-submit").click()
    error = page.get_by_test_id("count-error")
    expect(error).to_contain_text("enter your name first", timeout=UI_TIMEOUT_MS)
    assert _ok(api.get("/api/stock/counts")) == []
    page.get_by_test_id("count-user").fill("alice")
    page.get_by_test_id("count-submit").click()
    result = page.get_by_test_id("count-result")
    expect(result).to_have_attribute("data-status", "pending", timeout=UI_TIMEOUT_MS)
    (count,) = _ok(api.get("/api/stock/counts", params={"status": "pending"}))
    assert (count["counted_by"], Decimal(count["difference"])) == ("alice", Decimal(-100))
    row = page.get_by_test_id(f"count-{count['id']}")
    expect(row).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert _housing_on_hand(api) == book  # nothing posted yet

    # A may not approve her own count: refused, with the reason.
    page.get_by_test_id(f"count-{count['id']}-approve").click()
    expect(error).to_contain_text("403", timeout=UI_TIMEOUT_MS)
    expect(error).to_contain_text("alice counted count")
    assert _housing_on_hand(api) == book

    # B approves: the difference is posted and the stock shows it. The name is remembered.
    page.get_by_test_id("count-user").fill("bob")
    page.get_by_test_id(f"count-{count['id']}-approve").click()
    expect(result).to_have_attribute("data-status", "approved", timeout=UI_TIMEOUT_MS)
    expect(error).to_be_hidden()
    expect(balance).to_have_attribute("data-value", str(counted), timeout=UI_TIMEOUT_MS)
    # The store counted short: the stock without a lot goes first (FIFO), the lot stays.
    expect(lot_row).to_have_attribute("data-value", str(counted - 50))
    expect(in_lot).to_have_attribute("data-value", "50")
    expect(row).to_have_count(0)
    assert _housing_on_hand(api) == counted
    (decided,) = _ok(api.get("/api/stock/counts", params={"status": "approved"}))
    assert decided["decided_by"] == "bob"
    assert page.evaluate("window.localStorage.getItem('taktline.user')") == "bob"
    page.screenshot(path=str(tmp_path / "supervisor-counts.png"), full_page=True)
    assert errors == []
