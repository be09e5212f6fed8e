"""The supervisor page (#/supervisor) in headless Chromium against the running demo.

A supervisor runs MRP, reads the planned orders with the sales orders they serve, approves the
screws' buy order (refused with the reason while no supplier sells screws, a draft purchase
order once one does) and the pump's make order (a work order), and sends the draft.
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
SCREWS = "RM-SCREW-M6"
PUMP = "FG-100"
COORDINATOR_SCREENSHOT = Path("/tmp/supervisor-demo.png")


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def _planned(api: httpx.Client, item: str, kind: str) -> dict[str, Any]:
    orders = _ok(api.get("/api/mrp/planned-orders", params={"item": item, "kind": kind}))
    assert orders, f"the plan has no {kind} order of {item}"
    first: dict[str, Any] = orders[0]
    return first


def _open(page: Page, url: str) -> None:
    page.goto(url, timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector(
        "body[data-loaded='supervisor']", state="attached", timeout=LOAD_TIMEOUT_MS
    )


def test_supervisor_runs_mrp_and_approves_a_buy_and_a_make_order(
    page: Page, api: httpx.Client, demo_url: str, tmp_path: Path
) -> None:
    # The running order ends early: the sales order now needs a new make order, and its
    # components pull the screws below their safety stock.
    _ok(api.post("/api/work-orders/WO-1001/complete"))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Reached from the big screen through the nav link.
    page.goto(f"{demo_url}/", timeout=LOAD_TIMEOUT_MS)
    page.get_by_test_id("nav-supervisor").click()
    page.wait_for_selector(
        "body[data-loaded='supervisor']", state="attached", timeout=LOAD_TIMEOUT_MS
    )

    # Stock: every balance, exactly as the API gives it, and available = on hand - reserved.
    balances = _ok(api.get("/api/stock/balances"))
    screws = next(b for b in balances if b["item"] == SCREWS)
    row = f"bal-{SCREWS}-{screws['location']}"
    expect(page.get_by_test_id(row)).to_be_visible(timeout=UI_TIMEOUT_MS)
    shown = {
        key: Decimal(page.get_by_test_id(f"{row}-{key}").get_attribute("data-value") or "NaN")
        for key in ("on-hand", "reserved", "available")
    }
    assert shown["available"] == shown["on-hand"] - shown["reserved"]
    assert page.get_by_test_id(f"{row}-value").inner_text().strip() != "—"

    # Planning: run MRP from the page.
    page.get_by_test_id("sup-tab-planning").click()
    page.get_by_test_id("mrp-run").click()
    latest = _ok(api.get("/api/mrp/runs/latest"))
    info = page.get_by_test_id("mrp-run-info")
    expect(info).to_have_attribute("data-run", str(latest["id"]), timeout=UI_TIMEOUT_MS)
    buy = _planned(api, SCREWS, "buy")
    make = _planned(api, PUMP, "make")
    buy_row, make_row = f"plan-{buy['id']}", f"plan-{make['id']}"
    expect(page.get_by_test_id(f"{buy_row}-kind")).to_have_text("buy")
    expect(page.get_by_test_id(f"{make_row}-kind")).to_have_text("make")
    expect(page.get_by_test_id(f"{make_row}-serves")).to_contain_text("SO-1001/1")

    # No supplier sells screws yet: refused, and the page says why.
    page.get_by_test_id(f"{buy_row}-approve").click()
    error = page.get_by_test_id("sup-error")
    expect(error).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(error).to_contain_text("409")
    expect(error).to_contain_text(f"no supplier sells {SCREWS}")
    assert _ok(api.get("/api/purchase-orders")) == []

    _ok(api.put("/api/suppliers/ACME", json={"code": "ACME", "name": "Acme", "lead_days": 3}))
    _ok(api.put("/api/suppliers/ACME/items", json={"item": SCREWS, "unit_price": "0.04"}))
    page.get_by_test_id(f"{buy_row}-approve").click()
    result = page.get_by_test_id(f"{buy_row}-result")
    expect(result).to_contain_text("created PO-", timeout=UI_TIMEOUT_MS)
    po = result.get_attribute("data-number")
    assert po is not None

    # Approving again answers the same order, it does not draft a second one.
    page.get_by_test_id(f"{buy_row}-approve").click()
    expect(result).to_have_text(f"already {po}", timeout=UI_TIMEOUT_MS)
    orders = _ok(api.get("/api/purchase-orders", params={"item": SCREWS}))
    assert [o["number"] for o in orders] == [po]
    (line,) = orders[0]["lines"]
    assert Decimal(line["quantity"]) == Decimal(buy["quantity"])
    assert line["requisition"] == f"MRP/{latest['id']}/{buy['id']}"

    # The make order becomes a created work order of the planned quantity.
    page.get_by_test_id(f"{make_row}-approve").click()
    made = page.get_by_test_id(f"{make_row}-result")
    expect(made).to_contain_text("created ", timeout=UI_TIMEOUT_MS)
    number = made.get_attribute("data-number")
    work_orders = {wo["number"]: wo for wo in _ok(api.get("/api/work-orders"))}
    assert number in work_orders
    assert work_orders[number]["status"] == "created"
    assert work_orders[number]["item"] == PUMP
    assert Decimal(work_orders[number]["quantity"]) == Decimal(make["quantity"])
    page.screenshot(path=str(COORDINATOR_SCREENSHOT), full_page=True)

    # Purchasing: the draft is listed; Send sends it.
    page.get_by_test_id("sup-tab-purchasing").click()
    order_row = page.get_by_test_id(f"po-{po}")
    expect(order_row).to_have_attribute("data-status", "draft", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id(f"po-{po}-line-1")).to_contain_text("unconfirmed")
    page.get_by_test_id(f"po-{po}-send").click()
    expect(order_row).to_have_attribute("data-status", "sent", timeout=UI_TIMEOUT_MS)
    assert _ok(api.get(f"/api/purchase-orders/{po}"))["status"] == "sent"
    page.screenshot(path=str(tmp_path / "supervisor.png"))
    assert errors == []


def test_approving_an_unknown_planned_order_is_404(api: httpx.Client) -> None:
    _ok(api.post("/api/mrp/runs"))
    response = api.post("/api/mrp/planned-orders/PLN/NO-SUCH/1/approve")
    assert response.status_code == 404
    assert "no planned order 'PLN/NO-SUCH/1'" in response.json()["detail"]
