"""`taktline demo` end to end: the real command, its REST API, and a clean stop on Ctrl-C.

The demo runs as a subprocess exactly as a user starts it (embedded broker, simulated PLCs on
free ports, edge agent, cloud on SQLite, big screen). For about 30 s the test watches the loop
through the REST API: machines run, WO-1001 counts up, every component's stock has fallen by
exactly (good + scrap) x its BOM quantity, and SO-1001 carries a promise.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.demo_support import (
    CONFIG,
    DIST,
    HTTP_TIMEOUT_S,
    OBSERVE_S,
    REPO,
    SALES_ORDER,
    WORK_ORDER,
    running_demo,
    wait_until,
)
from tests.support import missing_service, wait_for_sync

# --- what the plant's master data says ------------------------------------------------------


@dataclass(frozen=True)
class MasterData:
    bom: dict[str, Decimal]
    """Component -> quantity per finished part (of the work order's item)."""
    opening: dict[tuple[str, str], Decimal]
    """(item, location) -> opening stock."""
    component_location: str
    finished_location: str
    item: str


def _master_data() -> MasterData:
    plant: dict[str, Any] = yaml.safe_load((CONFIG / "plant.yaml").read_text(encoding="utf-8"))
    order = next(wo for wo in plant["work_orders"] if wo["number"] == WORK_ORDER)
    item = str(order["item"])
    return MasterData(
        bom={str(c["component"]): Decimal(str(c["quantity"])) for c in plant["boms"][item]},
        opening={
            (str(s["item"]), str(s["location"])): Decimal(str(s["quantity"]))
            for s in plant["opening_stock"]
        },
        component_location=str(plant["production"]["component_location"]),
        finished_location=str(plant["production"]["finished_location"]),
        item=item,
    )


# --- reading the API --------------------------------------------------------------------------


def _get(client: httpx.Client, path: str) -> Any:
    response = client.get(path)
    response.raise_for_status()
    return response.json()


def _work_order(dashboard: dict[str, Any]) -> dict[str, Any]:
    return next(wo for wo in dashboard["work_orders"] if wo["number"] == WORK_ORDER)


def _stock(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Decimal]:
    return {(r["item"], r["location"]): Decimal(r["on_hand"]) for r in rows}


def _check_backflush(dashboard: dict[str, Any], master: MasterData) -> tuple[Decimal, Decimal]:
    """Stock moved by exactly the work order's counts in this one snapshot; (good, scrap)."""
    order = _work_order(dashboard)
    good, scrap = Decimal(order["good"]), Decimal(order["scrap"])
    stock = _stock(dashboard["stock"])
    for component, per_part in master.bom.items():
        where = (component, master.component_location)
        consumed = master.opening[where] - stock[where]
        # Components are consumed for scrapped parts too (a scrapped part used its material).
        assert consumed == (good + scrap) * per_part, (
            f"{component}: consumed {consumed}, expected ({good} good + {scrap} scrap)"
            f" x {per_part} at {dashboard['generated_at']}"
        )
    finished = (master.item, master.finished_location)
    assert stock[finished] - master.opening[finished] == good, "finished goods receipt"
    return good, scrap


def _consistent_reads(
    client: httpx.Client,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]] | None:
    """/api/stock and the ledger read between two identical dashboards (no posting between)."""
    before = _get(client, "/api/dashboard")
    stock = _get(client, "/api/stock")
    ledger = _get(client, "/api/stock/ledger?limit=10000")
    after = _get(client, "/api/dashboard")
    counts = [(_work_order(d)["good"], _work_order(d)["scrap"]) for d in (before, after)]
    # The projection moves with the clock; the counts and stock only move when a posting runs.
    same = before["stock"] == after["stock"] and counts[0] == counts[1]
    return (before, stock, ledger) if same else None


def _ledger_balances(ledger: list[dict[str, Any]]) -> dict[tuple[str, str], Decimal]:
    balances: dict[tuple[str, str], Decimal] = {}
    for move in ledger:
        quantity = Decimal(move["quantity"])
        for location, sign in ((move["from_location"], -1), (move["to_location"], 1)):
            key = (move["item"], location)
            balances[key] = balances.get(key, Decimal(0)) + sign * quantity
    return balances


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_demo_closes_the_loop_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    if not (DIST / "index.html").is_file():
        missing_service("built dashboards (cd dashboards && npm ci && npm run build)")
    master = _master_data()
    started = time.monotonic()
    with (
        running_demo(tmp_path / "demo") as (demo, url),
        httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as client,
    ):
        page = client.get("/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]

        def machines_running() -> list[str]:
            rows = _get(client, "/api/machines")
            return [m["code"] for m in rows if m["state"] == "running"]

        wait_for_sync(machines_running, timeout=20, interval=0.2, what="a machine running")

        def order_running() -> dict[str, Any] | None:
            order = _work_order(_get(client, "/api/dashboard"))
            return order if order["status"] == "running" else None

        first = wait_until(order_running, 10, f"{WORK_ORDER} running")
        first_good = Decimal(first["good"])

        # Watch the loop for the rest of the window: every snapshot must balance.
        observe_until = time.monotonic() + OBSERVE_S
        snapshots = 0
        good = first_good
        while time.monotonic() < observe_until:
            good, _ = _check_backflush(_get(client, "/api/dashboard"), master)
            snapshots += 1
            time.sleep(0.5)  # a sampling cadence, not a wait for something to happen
        assert good >= first_good + 3, f"{WORK_ORDER} good went {first_good} -> {good} only"

        # /api/stock and the ledger agree with the dashboard read around them.
        dashboard, stock, ledger = wait_until(
            lambda: _consistent_reads(client), 15, "reads with no posting between"
        )
        good, _ = _check_backflush(dashboard, master)
        assert good > first_good
        assert _stock(stock) == _stock(dashboard["stock"])
        balances = _ledger_balances(ledger)
        for key, on_hand in _stock(stock).items():
            assert balances.get(key, Decimal(0)) == on_hand, f"ledger sum of {key}"
        backflushed = [m for m in ledger if m["reason"] == "backflush"]
        assert backflushed, "no backflush moves in the ledger"
        assert all(m["reference"] == WORK_ORDER for m in backflushed)

        def promised() -> dict[str, Any] | None:
            lines = _get(client, "/api/dashboard")["sales_orders"]
            line = next(row for row in lines if row["order"] == SALES_ORDER)
            return line if line["promised_at"] else None

        line = wait_until(promised, 10, f"{SALES_ORDER} promise")
        assert line["promise_reason"], "a promise says why"

        code = demo.interrupt()
        output = demo.output

    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code}:\n{output[-4000:]}"
    assert "Traceback" not in output, output[-6000:]
    errors = [ln for ln in output.splitlines() if " ERROR " in ln or " CRITICAL " in ln]
    assert not errors, "\n".join(errors)
    assert snapshots >= 20, f"only {snapshots} dashboard snapshots checked"
    assert elapsed < 90, f"took {elapsed:.0f}s"


@pytest.mark.timeout(60)
def test_demo_rejects_a_missing_config_dir_with_a_message(tmp_path: Path) -> None:
    """Bad input gets a clear error, not a traceback."""
    missing = tmp_path / "no-such-config"
    command = [sys.executable, "-m", "taktline", "demo", "--config-dir", str(missing)]
    command += ["--data-dir", str(tmp_path / "d"), "--http-port", "0", "--mqtt-port", "0"]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(missing) in result.stderr, result.stderr[-3000:]
