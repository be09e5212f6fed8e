"""Work orders: list, read, create, and move through release → start → complete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from taktline_cloud.api.deps import Service
from taktline_cloud.api.schemas import WorkOrderCreate
from taktline_cloud.readmodels import WorkOrderRow

router = APIRouter(prefix="/api/work-orders", tags=["work orders"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such work order"},
    409: {"description": "Not allowed in the work order's status"},
}


@router.get("")
async def list_work_orders(service: Service) -> list[WorkOrderRow]:
    """Every work order with its counts, rate and projected completion."""
    return await service.read(lambda plant: plant.work_orders())


@router.get("/{number}", responses={404: _ERRORS[404]})
async def get_work_order(number: str, service: Service) -> WorkOrderRow:
    """One work order."""
    return await service.read(lambda plant: plant.work_order(number))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Duplicate number"}, 422: {"description": "Refused input"}},
)
async def create_work_order(order: WorkOrderCreate, service: Service) -> WorkOrderRow:
    """Create a work order (status created)."""
    return await service.command(
        lambda plant: plant.create_work_order(order.item, order.quantity, order.line, order.number)
    )


@router.post("/{number}/release", responses=_ERRORS)
async def release_work_order(number: str, service: Service) -> WorkOrderRow:
    """Release a created work order to the shop floor."""
    return await service.command(lambda plant: plant.release_work_order(number))


@router.post("/{number}/start", responses=_ERRORS)
async def start_work_order(number: str, service: Service) -> WorkOrderRow:
    """Start a released work order on its line: from now on it owns the line's counts."""
    return await service.command(lambda plant: plant.start_work_order(number))


@router.post("/{number}/complete", responses=_ERRORS)
async def complete_work_order(number: str, service: Service) -> WorkOrderRow:
    """Complete a running work order (final posting)."""
    return await service.command(lambda plant: plant.complete_work_order(number))
