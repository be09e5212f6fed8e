"""Stock: balances (on hand, reserved, available, value), the ledger, receipts, reservations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status

from taktline_cloud.api.deps import Service
from taktline_cloud.api.schemas import ReceiptCreate, ReservationConsume, ReservationCreate
from taktline_cloud.readmodels import BalanceRow, LedgerRow, ReservationRow, StockRow

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
    item: Annotated[str | None, Query(min_length=1, description="only this item")] = None,
    location: Annotated[
        str | None,
        Query(min_length=1, description="only this location (virtual ones too)"),
    ] = None,
) -> list[BalanceRow]:
    """On hand, reserved and available per item and location (internal ones by default)."""
    return await service.read(lambda plant: plant.balances(item, location))


@router.get("/ledger")
async def ledger(
    service: Service,
    item: Annotated[str | None, Query(min_length=1, description="only this item")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest entries first")] = 200,
) -> list[LedgerRow]:
    """The stock ledger's latest entries."""
    return await service.read(lambda plant: plant.ledger(item, limit))


@router.post(
    "/receipts",
    status_code=status.HTTP_201_CREATED,
    responses={422: {"description": "Unknown item, not a store; refused input"}},
)
async def receive(body: ReceiptCreate, service: Service) -> LedgerRow:
    """Receive stock from a supplier at a unit cost (it moves the item's moving average)."""
    return await service.command(
        lambda plant: plant.receive(
            body.item, body.location, body.quantity, body.unit_cost, body.reference
        )
    )


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
