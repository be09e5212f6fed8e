"""Stock: balances (on hand, reserved, available, value), lots, the ledger, receipts,
reservations, and cycle counts with approval.

Who is counting or deciding: the header `X-Taktline-User: <name>`, required by the count
commands. It is a STAND-IN for real authentication (a later issue): anyone can set it, so it
shows the four-eyes rule (an adjustment above the plant's threshold is approved by a user other
than its counter), it does not protect anything.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from taktline_cloud.api.deps import Service
from taktline_cloud.api.schemas import (
    Code,
    ItemFilter,
    LocationFilter,
    ReceiptCreate,
    ReservationConsume,
    ReservationCreate,
)
from taktline_cloud.readmodels import (
    BalanceRow,
    CountRow,
    LedgerRow,
    LotRow,
    ReservationRow,
    StockRow,
)

router = APIRouter(prefix="/api/stock", tags=["stock"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such reservation"}}
_RESERVATION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    409: {"description": "Already released or consumed, or not enough stock"},
}
ReservationId = Annotated[int, Path(ge=1, description="the reservation's id")]


@router.get("")
async def stock(service: Service) -> list[StockRow]:
    """On-hand of every item at every internal location (derived from the ledger)."""
    return await service.read(lambda plant: plant.stock())


@router.get("/balances", responses={404: {"description": "No such item or location"}})
async def balances(
    service: Service,
    item: ItemFilter = None,
    location: LocationFilter = None,
) -> list[BalanceRow]:
    """On hand, reserved and available per item and location (internal ones by default)."""
    return await service.read(lambda plant: plant.balances(item, location))


@router.get("/ledger")
async def ledger(
    service: Service,
    item: ItemFilter = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest entries first")] = 200,
) -> list[LedgerRow]:
    """The stock ledger's latest entries."""
    return await service.read(lambda plant: plant.ledger(item, limit))


class StockReceipt(ReceiptCreate):
    """Stock received from a supplier into a store at a known cost per unit, into a lot."""

    lot: Code | None = Field(
        None, examples=["L-2026-11-25"], description="the lot; left out: kept without a lot"
    )


@router.post(
    "/receipts",
    status_code=status.HTTP_201_CREATED,
    responses={422: {"description": "Unknown item, not a store; refused input"}},
)
async def receive(body: StockReceipt, service: Service) -> LedgerRow:
    """Receive stock from a supplier at a unit cost (it moves the item's moving average)."""
    return await service.command(
        lambda plant: plant.receive(
            body.item, body.location, body.quantity, body.unit_cost, body.reference, lot=body.lot
        )
    )


@router.get("/lots", responses={404: {"description": "No such item or location"}})
async def lots(
    service: Service,
    item: ItemFilter = None,
    location: LocationFilter = None,
) -> list[LotRow]:
    """Stock by item, location and lot (internal locations by default): one row per lot,
    oldest first, and a row with lot null for the stock kept without a lot."""
    return await service.read(lambda plant: plant.lots(item, location))


# --- cycle counts ------------------------------------------------------------------------------

User = Annotated[
    str | None,
    Header(
        max_length=64,
        description="the user counting or deciding (STAND-IN for real authentication, a later"
        " issue: anyone can set it); required",
    ),
]
CountId = Annotated[int, Path(ge=1, description="the count's id")]
_COUNT_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The counter may not approve their own count"},
    404: {"description": "No such count"},
    409: {"description": "Not pending (already decided), or it would take the books below 0"},
    422: {"description": "No X-Taktline-User header"},
}


class CountCreate(BaseModel):
    """What a user counted of an item at a store (in one lot, when given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["RM-GASKET"])
    location: Code = Field(examples=["WH1/RAW"])
    lot: Code | None = Field(None, examples=["PO-1-1-1"], description="only this lot")
    counted: Decimal = Field(ge=0, allow_inf_nan=False, examples=["5200"])


@router.post(
    "/counts",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Within the threshold, but it would take the books below 0"},
        422: {"description": "Unknown item, location or lot; not a store; no user; bad input"},
    },
)
async def count(body: CountCreate, service: Service, x_taktline_user: User = None) -> CountRow:
    """Record a count: the difference to the book quantity is posted (to or from the
    inventory location, at the moving average) at once when its value is within the plant's
    threshold, else the count is pending until another user approves it."""
    return await service.command(
        lambda plant: plant.count_stock(
            body.item, body.location, body.counted, x_taktline_user, body.lot
        )
    )


@router.get(
    "/counts",
    responses={404: {"description": "No such item"}, 422: {"description": "Unknown status"}},
)
async def counts(
    service: Service,
    status_: Annotated[
        str | None,
        Query(alias="status", description="pending | posted | approved | rejected"),
    ] = None,
    item: ItemFilter = None,
) -> list[CountRow]:
    """Counts, newest first."""
    return await service.read(lambda plant: plant.counts(status_, item))


@router.post("/counts/{count_id}/approve", responses=_COUNT_ERRORS)
async def approve_count(
    count_id: CountId, service: Service, x_taktline_user: User = None
) -> CountRow:
    """Approve a pending count (a user other than its counter): its difference as at the
    count is posted."""
    return await service.command(lambda plant: plant.approve_count(count_id, x_taktline_user))


@router.post("/counts/{count_id}/reject", responses=_COUNT_ERRORS)
async def reject_count(
    count_id: CountId, service: Service, x_taktline_user: User = None
) -> CountRow:
    """Reject a pending count: nothing is posted."""
    return await service.command(lambda plant: plant.reject_count(count_id, x_taktline_user))


@router.get("/reservations")
async def reservations(
    service: Service,
    demand: Annotated[
        str | None, Query(min_length=1, description="only this work order or order line")
    ] = None,
    closed: Annotated[bool, Query(description="also released and consumed ones")] = False,
) -> list[ReservationRow]:
    """Reservations, oldest first (open ones unless `closed`)."""
    return await service.read(lambda plant: plant.reservations(demand, open_only=not closed))


@router.post(
    "/reservations",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Not that much available, or the work order is finished"},
        422: {"description": "Unknown item, location or demand; refused input"},
    },
)
async def reserve(body: ReservationCreate, service: Service) -> ReservationRow:
    """Reserve stock for a work order component or a sales order line."""
    return await service.command(
        lambda plant: plant.reserve(body.item, body.location, body.demand, body.quantity)
    )


@router.delete("/reservations/{number}", responses=_RESERVATION_ERRORS)
async def release(number: ReservationId, service: Service) -> ReservationRow:
    """Release a reservation: what it still holds becomes available again."""
    return await service.command(lambda plant: plant.release_reservation(number))


@router.post("/reservations/{number}/consume", responses=_RESERVATION_ERRORS)
async def consume(
    number: ReservationId,
    service: Service,
    body: Annotated[ReservationConsume | None, Body()] = None,
) -> ReservationRow:
    """Turn a reservation into a stock move (to production, or to the customer)."""
    quantity = body.quantity if body is not None else None
    return await service.command(lambda plant: plant.consume_reservation(number, quantity))
