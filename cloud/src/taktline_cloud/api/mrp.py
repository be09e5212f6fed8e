"""MRP: run the planner on the plant's data, and read the latest run's planned orders,
action messages and pegging."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field

from taktline_cloud.api.deps import Context, Service
from taktline_cloud.planning_approve import approve
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


class ApprovalOut(BaseModel):
    """The document an approved planned order became."""

    run: int = Field(description="the MRP run the planned order is of (ids are per run)")
    planned_order: PlannedOrderRow
    document: Literal["purchase_order", "work_order"]
    number: str = Field(description="the purchase order's or the work order's number")
    created: bool = Field(description="false: approved before, this is the same document")


@router.post(
    "/planned-orders/{planned_order:path}/approve",
    responses={
        200: {"description": "Approved before: the document it already became"},
        201: {"description": "The draft purchase order or the created work order"},
        404: {"description": "No MRP run yet, or no such planned order in the latest run"},
        409: {"description": "No supplier sells the item; an MRP run in progress"},
    },
    status_code=status.HTTP_201_CREATED,
)
async def approve_planned_order(
    planned_order: Annotated[str, Path(min_length=1, max_length=200)],
    service: Service,
    context: Context,
    response: Response,
) -> ApprovalOut:
    """Approve a planned order of the latest run: buy -> a draft purchase order (its supplier
    chosen by the sourcing rule), make -> a work order in status created. Idempotent per run:
    approving again answers the same document with 200 and `created: false`."""
    purchasing = context.purchasing
    if purchasing is None:
        raise RuntimeError("the cloud runs without purchasing: ApiContext.purchasing unset")
    approval = await service.command(lambda plant: approve(plant, purchasing, planned_order))
    if not approval.created:
        response.status_code = status.HTTP_200_OK
    return ApprovalOut(
        run=approval.run,
        planned_order=approval.planned_order,
        document=approval.document,
        number=approval.number,
        created=approval.created,
    )
