"""The posting rule: receipts for good parts, backflush for good + scrap, reversals, idempotence."""

from __future__ import annotations

from decimal import Decimal

from taktline_cloud.production.posting import (
    BACKFLUSH,
    RECEIPT,
    REVERSAL,
    BomLine,
    Counts,
    Posting,
    PostingPlaces,
    plan_posting,
)

PLACES = PostingPlaces(production="VIRTUAL/PRODUCTION", components="WH1/RAW", finished="WH1/FG")
BOM = (BomLine("RM-HOUSING", Decimal(1)), BomLine("RM-SEALANT", Decimal("2.5")))


def post(good: str, scrap: str, booked_good: str = "0", booked_scrap: str = "0") -> Posting:
    return plan_posting(
        work_order="WO-1",
        item="FG-100",
        produced=Counts(Decimal(good), Decimal(scrap)),
        booked=Counts(Decimal(booked_good), Decimal(booked_scrap)),
        bom=BOM,
        places=PLACES,
    )


def moves(posting: Posting) -> set[tuple[str, str, str, Decimal, str]]:
    return {(m.item, m.from_location, m.to_location, m.quantity, m.reason) for m in posting.moves}


def test_receipt_for_good_and_backflush_for_good_and_scrap() -> None:
    posting = post("10", "2")
    assert (posting.good_delta, posting.scrap_delta) == (Decimal(10), Decimal(2))
    assert moves(posting) == {
        ("FG-100", "VIRTUAL/PRODUCTION", "WH1/FG", Decimal(10), RECEIPT),
        ("RM-HOUSING", "WH1/RAW", "VIRTUAL/PRODUCTION", Decimal(12), BACKFLUSH),
        ("RM-SEALANT", "WH1/RAW", "VIRTUAL/PRODUCTION", Decimal("30.0"), BACKFLUSH),
    }
    assert all(isinstance(m.quantity, Decimal) for m in posting.moves)


def test_only_the_difference_to_what_is_booked_is_posted() -> None:
    posting = post("15", "3", booked_good="10", booked_scrap="2")
    assert moves(posting) == {
        ("FG-100", "VIRTUAL/PRODUCTION", "WH1/FG", Decimal(5), RECEIPT),
        ("RM-HOUSING", "WH1/RAW", "VIRTUAL/PRODUCTION", Decimal(6), BACKFLUSH),
        ("RM-SEALANT", "WH1/RAW", "VIRTUAL/PRODUCTION", Decimal("15.0"), BACKFLUSH),
    }


def test_posting_twice_books_nothing_the_second_time() -> None:
    first = post("7", "1")
    assert first.moves
    second = post("7", "1", booked_good="7", booked_scrap="1")
    assert second.empty
    assert second.moves == ()


def test_scrap_alone_consumes_components_but_receives_nothing() -> None:
    posting = post("10", "3", booked_good="10", booked_scrap="2")
    assert moves(posting) == {
        ("RM-HOUSING", "WH1/RAW", "VIRTUAL/PRODUCTION", Decimal(1), BACKFLUSH),
        ("RM-SEALANT", "WH1/RAW", "VIRTUAL/PRODUCTION", Decimal("2.5"), BACKFLUSH),
    }


def test_negative_difference_books_reversals() -> None:
    posting = post("8", "2", booked_good="10", booked_scrap="2")
    assert posting.good_delta == -2
    assert moves(posting) == {
        ("FG-100", "WH1/FG", "VIRTUAL/PRODUCTION", Decimal(2), REVERSAL),
        ("RM-HOUSING", "VIRTUAL/PRODUCTION", "WH1/RAW", Decimal(2), REVERSAL),
        ("RM-SEALANT", "VIRTUAL/PRODUCTION", "WH1/RAW", Decimal("5.0"), REVERSAL),
    }
    assert all(m.quantity > 0 for m in posting.moves)


def test_good_turned_scrap_moves_finished_goods_only() -> None:
    # Total consumption unchanged (12 → 12): no component moves, the receipt is reversed.
    posting = post("9", "3", booked_good="10", booked_scrap="2")
    assert moves(posting) == {("FG-100", "WH1/FG", "VIRTUAL/PRODUCTION", Decimal(1), REVERSAL)}
