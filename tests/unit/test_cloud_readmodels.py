"""JSON forms the adapters rely on: Decimal as plain strings, times as ISO-8601 UTC with "Z"."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from taktline_cloud.events import Event, iso_utc
from taktline_cloud.historian.current import merge_latest, newest, state_name
from taktline_cloud.historian.samples import Sample
from taktline_cloud.inventory.quantities import display, plain
from taktline_cloud.readmodels import SalesOrderLineRow, StockRow

AT = datetime(2026, 11, 24, 19, 40, 0, 123456, tzinfo=UTC)


def test_iso_utc_has_milliseconds_and_z() -> None:
    assert iso_utc(AT) == "2026-11-24T19:40:00.123Z"
    beijing = timezone(timedelta(hours=8))
    assert iso_utc(AT.astimezone(beijing)) == "2026-11-24T19:40:00.123Z"


def test_event_json() -> None:
    event = Event("stock.updated", {"on_hand": "5941"}, AT)
    assert event.to_json() == {
        "type": "stock.updated",
        "at": "2026-11-24T19:40:00.123Z",
        "data": {"on_hand": "5941"},
    }


def test_decimals_are_plain_strings() -> None:
    assert plain(Decimal("6E+3")) == "6000"
    assert plain(Decimal("2.50")) == "2.5"
    assert plain(Decimal("0.0570")) == "0.057"
    assert display(Decimal("2100.0")) == "2,100"
    row = StockRow(item="RM", name="Raw", location="WH1/RAW", on_hand=Decimal("6E+3"), uom="pcs")
    assert row.to_json()["on_hand"] == "6000"
    assert row.model_dump_json() == (
        '{"item":"RM","name":"Raw","location":"WH1/RAW","on_hand":"6000","uom":"pcs"}'
    )


def test_sales_line_json() -> None:
    row = SalesOrderLineRow(
        order="SO-1001",
        customer="CUST-ACME",
        line=1,
        item="FG-100",
        quantity=Decimal(600),
        requested_date=date(2026, 11, 25),
        promised_at=AT,
        promise_reason="from stock: 120 on hand",
        at_risk=False,
    )
    data = row.to_json()
    assert data["requested_date"] == "2026-11-25"
    assert data["promised_at"] == "2026-11-24T19:40:00.123Z"
    assert data["quantity"] == "600"


def test_machine_state_names() -> None:
    assert state_name(Decimal(1)) == "running"
    assert state_name(Decimal(0)) == "idle"
    assert state_name(Decimal(2)) == "down"
    assert state_name(Decimal(7)) == "unknown"
    assert state_name(Decimal("1.5")) == "unknown"
    assert state_name(None) == "unknown"
    assert state_name("running") == "unknown"


def test_latest_value_is_by_sample_time_not_arrival() -> None:
    older = Sample("M1", "Production/State", AT, Decimal(2))
    newer = Sample("M1", "Production/State", AT + timedelta(seconds=1), Decimal(1))
    batch = newest([newer, older])
    assert batch[("M1", "Production/State")].value == Decimal(1)
    late = newest([older])
    assert merge_latest(batch, late) == {}
