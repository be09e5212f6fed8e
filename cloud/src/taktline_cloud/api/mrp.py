"""MRP: run the planner on the plant's data, and read the latest run's planned orders,
action messages and pegging."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status

from taktline_cloud.api.deps import Service
from taktline_cloud.readmodels import MrpExceptionRow, MrpRunRow, PeggingRow, PlannedOrderRow

router = APIRouter(prefix="/api/mrp", tags=["mrp"])

_NO_RUN: dict[int | str, dict[str, Any]] = {404: {"description": "No MRP run yet, or no item"}}
ItemFilter = Annotated[str | None, Query(min_length=1, description="only this item")]


@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Another MRP run holds the planner lock"},
        422: {"description": "No master data loaded, or the planning data cannot be planned"},
    },
)
async def run(service: Service) -> MrpRunRow:
    """A regenerative run on the plant's data now; its result replaces the latest one."""
    return await service.command(lambda plant: plant.run_mrp())


@router.get("/runs/latest", responses=_NO_RUN)
async def latest_run(service: Service) -> MrpRunRow:
    """The latest run's summary: when, how long, how many orders, pegs and messages."""
    return await service.read(lambda plant: plant.mrp_latest_run())


@router.get("/planned-orders", responses=_NO_RUN)
async def planned_orders(
    service: Service,
    item: ItemFilter = None,
    kind: Annotated[
        Literal["make", "buy"] | None,
        Query(description="make (work orders) or buy (purchase orders)"),
    ] = None,
) -> list[PlannedOrderRow]:
    """The latest run's planned orders, by item and due date."""
    return await service.read(lambda plant: plant.mrp_planned_orders(item, kind))


@router.get("/exceptions", responses=_NO_RUN)
async def exceptions(service: Service, item: ItemFilter = None) -> list[MrpExceptionRow]:
    """The latest run's action messages: expedite, defer, cancel, past due."""
    return await service.read(lambda plant: plant.mrp_exceptions(item))


@router.get(
    "/pegging",
    responses={
        404: {"description": "No MRP run yet, no such item, or the supply serves nothing"},
        422: {"description": "The supply id is a supply of several items: name the item"},
    },
)
async def pegging(
    service: Service,
    supply: Annotated[
        str,
        Query(
            min_length=1,
            description="a planned order (PLN/FG-100/2), a work order, or on-hand (with item)",
        ),
    ],
    item: ItemFilter = None,
) -> PeggingRow:
    """What a supply serves, traced up the BOM to the sales order lines behind it."""
    return await service.read(lambda plant: plant.mrp_pegging(supply, item))
