"""The closed loop end to end: PLC counters → edge → Mosquitto → cloud → work order, stock, promise.

Real simulated PLCs over Modbus TCP, the real edge agent, a private Mosquitto and the real cloud
on SQLite and on PostgreSQL. The line is stopped and started the way a supervisor's HMI does it
(Modbus writes to the run-enable and speed registers), so the counters' deltas are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.plant_harness import (
    DATABASES,
    PlantHarness,
    PlantSpec,
    assert_books_exact,
    balances,
    plant_harness,
)
from tests.plant_harness import database_url as _database_url
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

# About 6 parts/s from the line; the sales order needs hours of that, so its promise is far
# enough out that halving the speed moves it by far more than the one-minute tolerance.
SPEC = PlantSpec(
    sales_quantity="20000",
    work_order_quantity="60000",
    cycle_time_factor=0.1,
    mtbf_s=1e9,
    rate_window_s=5.0,
)
PARTS = 60
WARM_UP_PARTS = 35
"""Parts made at full speed before the promise is read: more than one rate window's worth."""


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _database_url(request, tmp_path)


async def promise(harness: PlantHarness) -> dict[str, Any]:
    """The SO-1001 line 1 row of GET /api/sales-orders."""
    rows = await harness.get("/api/sales-orders")
    (row,) = [r for r in rows if (r["order"], r["line"]) == ("SO-1001", 1)]
    return dict(row)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_counts_move_work_order_stock_and_promise_exactly(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    async with plant_harness(tmp_path, mosquitto, database_url, SPEC) as harness:
        await harness.wait_online()
        await harness.stop_line()
        before = harness.counters()
        await harness.wait_cloud_caught_up()
        stock_before = await balances(harness)

        assert (await harness.post("/api/work-orders/WO-1001/release"))["status"] == "released"
        assert (await harness.post("/api/work-orders/WO-1001/start"))["status"] == "running"
        await harness.start_line()

        # At full speed, once the measured rate covers a whole window of running: promise p1.
        output = before[harness.machines[-1]][0]
        await harness.wait_output(output + WARM_UP_PARTS)

        async def measured() -> bool:
            order = await harness.get("/api/work-orders/WO-1001")
            row = await promise(harness)
            return order["rate_basis"] == "measured" and row["promised_at"] is not None

        await wait_for(measured, timeout=15, interval=0.1, what="a measured promise")
        read_at = datetime.now(UTC)
        first = await promise(harness)
        promised = when(first["promised_at"])
        assert promised > read_at

        # Half speed: the line's measured rate halves, so the promise moves about twice as far.
        await harness.set_speed(50)
        later_than = read_at + (promised - read_at) * 1.3

        async def moved() -> dict[str, Any] | None:
            row = await promise(harness)
            at = row["promised_at"]
            return row if at is not None and when(at) >= later_than else None

        second = await wait_for(moved, timeout=20, interval=0.2, what=f"promise >= {later_than}")

        await harness.wait_output(output + PARTS)
        await harness.stop_line()
        after = harness.counters()
        await harness.wait_cloud_caught_up()
        good, _ = await assert_books_exact(harness, before, after, stock_before)
        assert good >= PARTS

        history = await harness.get("/api/sales-orders/SO-1001/lines/1/promises")
        given = [(h["promised_at"], h["reason"]) for h in history]
        assert (first["promised_at"], first["promise_reason"]) in given
        assert (second["promised_at"], second["promise_reason"]) in given
        assert given.index((first["promised_at"], first["promise_reason"])) < given.index(
            (second["promised_at"], second["promise_reason"])
        )
        assert all(reason for _, reason in given)
        assert "WO-1001" in second["promise_reason"]
        times = [when(h["at"]) for h in history]
        assert times == sorted(times)
