"""Sales order lines with their delivery promises, and each line's promise history with its
reason chains."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from taktline_cloud.api.deps import Service
from taktline_cloud.readmodels import PromiseRow, SalesOrderLineRow

router = APIRouter(prefix="/api/sales-orders", tags=["sales"])


@router.get("")
async def sales_orders(service: Service) -> list[SalesOrderLineRow]:
    """Every sales order line with its current promise."""
    return await service.read(lambda plant: plant.sales_orders())


@router.get("/{order}/lines/{line}/promises", responses={404: {"description": "No such line"}})
async def promises(
    order: str, line: Annotated[int, Path(ge=1)], service: Service
) -> list[PromiseRow]:
    """Every promise given for one order line, oldest first, with its time, its reason and,
    for a capable-to-promise date, its reason chain (`steps`: stock, queue, component - naming
    the purchase order -, purchase, production, short)."""
    return await service.read(lambda plant: plant.promise_history(order, line))
