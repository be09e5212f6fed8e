"""The pure rules of lots (FIFO allocation, lot codes) and cycle counts (threshold, four eyes)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from taktline_cloud.errors import Conflict, Forbidden, Invalid, MasterDataError
from taktline_cloud.inventory.counts import (
    Count,
    CountStatus,
    check_counted,
    check_decision,
    check_postable,
    check_user,
    first_status,
)
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.inventory.lots import allocate, lot_changes, receipt_lot
from taktline_cloud.masterdata import load_plant

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
D = Decimal


@pytest.mark.parametrize(
    ("quantity", "unlotted", "lots", "expected"),
    [
        # Stock without a lot first, then the lots oldest first.
        (D(10), D(5), [("A", D(3)), ("B", D(10))], [(None, D(5)), ("A", D(3)), ("B", D(2))]),
        (D(4), D(5), [("A", D(3))], [(None, D(4))]),
        (D(2), D(0), [("A", D(3))], [("A", D(2))]),
        # Beyond everything: the rest without a lot (it goes below zero).
        (D(10), D(2), [("A", D(3))], [(None, D(7)), ("A", D(3))]),
        (D(5), D(-4), [("A", D(3))], [(None, D(2)), ("A", D(3))]),
        (D("1.5"), D(0), [], [(None, D("1.5"))]),
    ],
)
def test_an_outflow_is_allocated_fifo(
    quantity: Decimal,
    unlotted: Decimal,
    lots: list[tuple[str, Decimal]],
    expected: list[tuple[str | None, Decimal]],
) -> None:
    parts = allocate(quantity, unlotted, lots)
    assert parts == expected
    assert sum(q for _, q in parts) == quantity


def test_an_allocation_needs_a_positive_quantity() -> None:
    with pytest.raises(Invalid, match="must be > 0"):
        allocate(D(0), D(1), [])


def test_lot_changes_follow_only_the_moves_with_a_lot() -> None:
    moves = [
        Move("X", "S", "R", D(5), "r", "REF", T0, lot="A"),
        Move("X", "R", "F", D(2), "r", "REF", T0, lot="A"),
        Move("X", "R", "F", D(9), "r", "REF", T0),
    ]
    assert lot_changes(moves) == {
        ("X", "S", "A"): D(-5),
        ("X", "R", "A"): D(3),
        ("X", "F", "A"): D(2),
    }


def test_lot_codes() -> None:
    assert receipt_lot("PO-7", 1, 2) == "PO-7-1-2"
    with pytest.raises(Invalid, match="lot 'a b'"):
        Move("X", "S", "R", D(1), "r", "REF", T0, lot="a b")


def count(**changes: object) -> Count:
    values: dict[str, object] = {
        "id": 7,
        "item": "RM-HOUSING",
        "location": "WH1/RAW",
        "lot": None,
        "counted": D(5900),
        "book": D(6000),
        "unit_cost": D("12.50"),
        "threshold": D(500),
        "status": CountStatus.PENDING,
        "counted_by": "anna",
        "counted_at": T0,
    }
    values.update(changes)
    return Count(**values)  # type: ignore[arg-type]


def test_the_threshold_decides_whether_a_count_waits() -> None:
    assert first_status(D(-40), D("12.50"), D(500)) is CountStatus.POSTED  # exactly 500
    assert first_status(D(-41), D("12.50"), D(500)) is CountStatus.PENDING
    assert first_status(D(41), D("12.50"), D(500)) is CountStatus.PENDING  # found more
    assert first_status(D(1), D(0), D(0)) is CountStatus.POSTED  # worth nothing
    assert first_status(D(1), D("0.01"), D(0)) is CountStatus.PENDING
    assert (count().difference, count().value) == (D(-100), D(1250))


def test_another_user_approves_and_only_a_pending_count() -> None:
    with pytest.raises(Forbidden, match="anna counted count 7 of RM-HOUSING at WH1/RAW"):
        check_decision(count(), "anna", approve=True)
    check_decision(count(), "anna", approve=False)  # the counter may withdraw it
    check_decision(count(), "bob", approve=True)
    done = count(status=CountStatus.APPROVED, decided_by="bob")
    with pytest.raises(
        Conflict, match="count 7 of RM-HOUSING at WH1/RAW is already approved by bob"
    ):
        check_decision(done, "carl", approve=True)


def test_a_count_that_would_take_the_books_below_zero_is_not_posted() -> None:
    check_postable(count(), D(100), None)
    with pytest.raises(Conflict, match="takes 100 but the books hold 99 of RM-HOUSING in WH1/RAW"):
        check_postable(count(), D(99), None)
    with pytest.raises(Conflict, match="in lot L1 at WH1/RAW"):
        check_postable(count(lot="L1"), D(500), D(50))
    check_postable(count(counted=D(7000)), D(0), None)  # found more: always postable


def test_user_and_counted_quantity_are_checked() -> None:
    assert check_user("anna") == "anna"
    for bad in (None, "", "  "):
        with pytest.raises(Invalid, match="X-Taktline-User header"):
            check_user(bad)
    with pytest.raises(Invalid, match="no spaces at either end"):
        check_user(" anna")
    assert check_counted(D(0)) == 0
    for wrong in (D(-1), D("NaN"), True, 1.5):
        with pytest.raises(Invalid, match="counted quantity"):
            check_counted(wrong)


PLANT = Path(__file__).resolve().parents[2] / "config" / "plant.yaml"


def test_the_plant_file_sets_the_approval_threshold(tmp_path: Path) -> None:
    assert load_plant(PLANT).inventory.adjustment_approval_value == D("500.00")
    raw = yaml.safe_load(PLANT.read_text(encoding="utf-8"))
    del raw["inventory"]
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_plant(path).inventory.adjustment_approval_value == 0  # every valued one waits
    raw["inventory"] = {"adjustment_approval_value": "-1"}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(MasterDataError, match=r"inventory\.adjustment_approval_value"):
        load_plant(path)
