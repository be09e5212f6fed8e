"""Stock balances and the stock ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from taktline_cloud.api.deps import Service
from taktline_cloud.readmodels import LedgerRow, StockRow

router = APIRouter(prefix="/api/stock", tags=["stock"])


@router.get("")
async def stock(service: Service) -> list[StockRow]:
    """On-hand of every item at every internal location (derived from the ledger)."""
    return await service.read(lambda plant: plant.stock())


@router.get("/ledger")
async def ledger(
    service: Service,
    item: Annotated[str | None, Query(min_length=1, description="only this item")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest entries first")] = 200,
) -> list[LedgerRow]:
    """The stock ledger's latest entries."""
    return await service.read(lambda plant: plant.ledger(item, limit))
