"""The supplier portal (#/supplier) in headless Chromium against the running demo.

A buyer drafts and sends a purchase order to supplier SUPA through the API; on the page, as SUPA
(the code is a stand-in for a login, sent as X-Taktline-Supplier), the supplier sees the order,
confirms line 1 two days later with a smaller quantity (the page and the buyer's API show the new
promise), gets the cloud's reason next to the line for a negative quantity, and as another
supplier sees none of SUPA's orders.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_big_screen import LOAD_TIMEOUT_MS

pytestmark = pytest.mark.browser

UI_TIMEOUT_MS = 10_000
HOUSING = "RM-HOUSING"
SUPPLIER = "SUPA"
OTHER = "SUPB"


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def _sent_order(api: httpx.Client, needed: date) -> str:
    """A buyer's order of 3000 housings from SUPA, drafted from a requisition and sent."""
    for code in (SUPPLIER, OTHER):
        supplier = {"code": code, "name": f"Supplier {code}", "lead_days": 5}
        _ok(api.put(f"/api/suppliers/{code}", json=supplier))
    offer = {"item": HOUSING, "unit_price": "14.50", "preferred": True}
    _ok(api.put(f"/api/suppliers/{SUPPLIER}/items", json=offer))
    wanted = {"item": HOUSING, "quantity": "3000", "needed": needed.isoformat()}
    (draft,) = _ok(api.post("/api/purchase-orders", json={"requisitions": [wanted]}))
    assert draft["supplier"] == SUPPLIER
    number: str = draft["number"]
    assert _ok(api.post(f"/api/purchase-orders/{number}/send"))["status"] == "sent"
    return number


def _loaded(page: Page) -> None:
    page.wait_for_selector(
        "body[data-loaded='supplier']", state="attached", timeout=LOAD_TIMEOUT_MS
    )


def _show_orders_of(page: Page, code: str) -> None:
    page.get_by_test_id("supplier-code").fill(code)
    page.get_by_test_id("supplier-show").click()
    expect(page.get_by_test_id("supplier-orders")).to_have_attribute(
        "data-supplier", code, timeout=UI_TIMEOUT_MS
    )


def test_supplier_sees_its_own_orders_and_confirms_a_line(
    page: Page, api: httpx.Client, demo_url: str, tmp_path: Path
) -> None:
    needed = datetime.now(UTC).date() + timedelta(days=30)
    po = _sent_order(api, needed)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Reached through the nav link; no code entered yet: no orders, and the page says why.
    page.goto(f"{demo_url}/#/supervisor", timeout=LOAD_TIMEOUT_MS)
    page.get_by_test_id("nav-supplier").click()
    _loaded(page)
    expect(page.get_by_test_id("supplier-auth-note")).to_contain_text("Stand-in")
    expect(page.get_by_test_id("supplier-empty")).to_contain_text("supplier code")

    # As SUPA: the sent order with its line, the form prefilled with the asked date and quantity.
    _show_orders_of(page, SUPPLIER)
    order = page.get_by_test_id(f"spo-{po}")
    expect(order).to_have_attribute("data-status", "sent", timeout=UI_TIMEOUT_MS)
    line = f"spo-{po}-line-1"
    expect(page.get_by_test_id(f"{line}-item")).to_have_text(HOUSING)
    expect(page.get_by_test_id(f"{line}-quantity")).to_have_text("3,000")
    expect(page.get_by_test_id(f"{line}-needed")).to_have_text(needed.isoformat())
    expect(page.get_by_test_id(f"{line}-confirmed-date")).to_have_text("—")
    expect(page.get_by_test_id(f"{line}-received")).to_have_attribute("data-value", "0")
    expect(page.get_by_test_id(f"{line}-date")).to_have_value(needed.isoformat())
    expect(page.get_by_test_id(f"{line}-qty")).to_have_value("3000")
    for row in page.locator("[data-testid^='spo-'][data-supplier]").all():
        assert row.get_attribute("data-supplier") == SUPPLIER

    # Confirm two days later and 500 fewer: the list reloads with the new promise.
    promised = needed + timedelta(days=2)
    page.get_by_test_id(f"{line}-date").fill(promised.isoformat())
    page.get_by_test_id(f"{line}-qty").fill("2500")
    page.get_by_test_id(f"{line}-confirm").click()
    expect(order).to_have_attribute("data-status", "changed", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id(f"{line}-confirmed-date")).to_have_text(promised.isoformat())
    expect(page.get_by_test_id(f"{line}-confirmed-quantity")).to_have_attribute(
        "data-value", "2500"
    )
    expect(page.get_by_test_id(f"{line}-confirmed-quantity")).to_have_text("2,500")
    expect(page.get_by_test_id("supplier-result")).to_contain_text(f"{po} line 1 confirmed")
    page.screenshot(path=str(tmp_path / "supplier.png"), full_page=True)

    # The buyer sees the supplier's answer, and who gave it.
    detail = _ok(api.get(f"/api/purchase-orders/{po}"))
    assert detail["status"] == "changed"
    assert detail["lines"][0]["confirmed_date"] == promised.isoformat()
    assert Decimal(detail["lines"][0]["confirmed_quantity"]) == Decimal(2500)
    assert detail["confirmations"][-1]["confirmed_by"] == f"supplier:{SUPPLIER}"

    # A negative quantity: the cloud's reason next to the line, the promise unchanged.
    refused = api.post(
        f"/api/purchase-orders/{po}/confirmation",
        json={"lines": [{"line": 1, "quantity": "-5"}]},
        headers={"X-Taktline-Supplier": SUPPLIER},
    )
    assert refused.status_code == 422
    reason = refused.json()["detail"][0]["msg"]
    page.get_by_test_id(f"{line}-qty").fill("-5")
    page.get_by_test_id(f"{line}-confirm").click()
    error = page.get_by_test_id(f"{line}-error")
    expect(error).to_contain_text("422", timeout=UI_TIMEOUT_MS)
    expect(error).to_contain_text(reason)
    expect(page.get_by_test_id(f"{line}-confirmed-quantity")).to_have_attribute(
        "data-value", "2500"
    )
    confirmed = _ok(api.get(f"/api/purchase-orders/{po}"))["lines"][0]["confirmed_quantity"]
    assert Decimal(confirmed) == Decimal(2500)

    # The code survives a reload (localStorage): the orders come back without typing it again.
    page.reload(timeout=LOAD_TIMEOUT_MS)
    _loaded(page)
    expect(page.get_by_test_id("supplier-code")).to_have_value(SUPPLIER)
    expect(order).to_have_attribute("data-status", "changed", timeout=UI_TIMEOUT_MS)

    # Another supplier sees none of SUPA's orders (and the API does not find it for them).
    _show_orders_of(page, OTHER)
    expect(page.get_by_test_id("supplier-empty")).to_contain_text(f"No purchase orders for {OTHER}")
    expect(page.locator("[data-testid^='spo-']")).to_have_count(0)
    hidden = api.get(f"/api/purchase-orders/{po}", headers={"X-Taktline-Supplier": OTHER})
    assert hidden.status_code == 404
    assert errors == []
