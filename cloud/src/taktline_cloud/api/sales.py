"""Sales orders and customers: book an order, change or cancel its lines, and read every line
with its delivery promise and each line's promise history with its reason chains.

    POST  /api/sales-orders                           {customer, lines: [{item, quantity,
                                                        requested_date}], number?}  -> 201
    PATCH /api/sales-orders/{order}/lines/{line}      {quantity?, requested_date?}
    POST  /api/sales-orders/{order}/lines/{line}/cancel
    POST  /api/sales-orders/{order}/cancel

Every change is one transaction with the re-promise of all open lines; MRP then re-plans the
ordered items by net change. Quantities are decimal strings ("12.5": a JSON number may be
inexact); a requested date is a day ("2026-12-03") or an instant with its zone (its UTC day).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from taktline_cloud.api.deps import Service
from taktline_cloud.api.schemas import Code
from taktline_cloud.readmodels import (
    CustomerRow,
    ItemRow,
    PromiseRow,
    SalesLineRow,
    SalesOrderLineRow,
    SalesOrderRow,
)
from taktline_cloud.sales.orders import NewLine

router = APIRouter(prefix="/api", tags=["sales"])


def _decimal_text(value: object) -> object:
    if isinstance(value, str):
        return value
    raise ValueError(
        f"quantity must be a decimal string such as \"12.5\", got {type(value).__name__}"
        " (a JSON number may not be exact)"
    )


DecimalText = Annotated[
    Decimal,
    BeforeValidator(_decimal_text),
    Field(allow_inf_nan=False, examples=["600"]),
]
Requested = Annotated[
    date | datetime,
    Field(
        description="the UTC day wanted: a date, or an instant with its zone (its UTC day)",
        examples=["2026-12-03"],
    ),
]


class SalesLineCreate(BaseModel):
    """A line of a new order: `quantity` of `item` wanted on `requested_date`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["FG-100"])
    quantity: DecimalText
    requested_date: Requested


class SalesOrderCreate(BaseModel):
    """A new sales order of a known customer (number SO-n assigned when not given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer: Code = Field(examples=["CUST-ACME"])
    lines: list[SalesLineCreate] = Field(min_length=1)
    number: Code | None = Field(None, examples=["SO-2001"])


class SalesLineChange(BaseModel):
    """A new quantity and/or requested date for an open line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: DecimalText | None = None
    requested_date: Requested | None = None


class CustomerCreate(BaseModel):
    """A new customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Code = Field(examples=["CUST-BETA"])
    name: Annotated[str, Field(min_length=1, max_length=200, examples=["Beta Valves Ltd"])]


_CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such order or line"},
    409: {"description": "The line (or every line of the order) is cancelled or closed"},
    422: {"description": "Refused input"},
}


@router.get("/sales-orders")
async def sales_orders(service: Service) -> list[SalesLineRow]:
    """Every sales order line with its current promise and its status (open, cancelled,
    closed)."""
    rows: list[SalesOrderLineRow] = await service.read(lambda plant: plant.sales_orders())
    return [SalesLineRow.model_validate(dict(row)) for row in rows]


@router.post(
    "/sales-orders",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Duplicate order number"}, 422: {"description": "Refused"}},
)
async def create_sales_order(order: SalesOrderCreate, service: Service) -> SalesOrderRow:
    """Book a sales order; it comes back promised (from stock, running work orders or, when
    short, capable-to-promise)."""
    lines = [NewLine(x.item, x.quantity, x.requested_date) for x in order.lines]
    return await service.command(
        lambda plant: plant.create_sales_order(order.customer, lines, order.number)
    )


@router.get("/sales-orders/{order}", responses={404: {"description": "No such order"}})
async def sales_order(order: str, service: Service) -> SalesOrderRow:
    """One sales order with all its lines (cancelled ones too)."""
    return await service.read(lambda plant: plant.sales_order(order))


@router.patch("/sales-orders/{order}/lines/{line}", responses=_CHANGE_ERRORS)
async def change_sales_line(
    order: str, line: Annotated[int, Path(ge=1)], change: SalesLineChange, service: Service
) -> SalesOrderRow:
    """Change an open line's quantity and/or requested date: it is promised anew."""
    return await service.command(
        lambda plant: plant.change_sales_line(
            order, line, quantity=change.quantity, requested=change.requested_date
        )
    )


@router.post("/sales-orders/{order}/lines/{line}/cancel", responses=_CHANGE_ERRORS)
async def cancel_sales_line(
    order: str, line: Annotated[int, Path(ge=1)], service: Service
) -> SalesOrderRow:
    """Cancel an open line (what was reserved for it is given back)."""
    return await service.command(lambda plant: plant.cancel_sales_line(order, line))


@router.post("/sales-orders/{order}/cancel", responses=_CHANGE_ERRORS)
async def cancel_sales_order(order: str, service: Service) -> SalesOrderRow:
    """Cancel every open line of an order."""
    return await service.command(lambda plant: plant.cancel_sales_order(order))


@router.get(
    "/sales-orders/{order}/lines/{line}/promises", responses={404: {"description": "No such line"}}
)
async def promises(
    order: str, line: Annotated[int, Path(ge=1)], service: Service
) -> list[PromiseRow]:
    """Every promise given for one order line, oldest first, with its time, its reason and,
    for a capable-to-promise date, its reason chain (`steps`: stock, queue, component - naming
    the purchase order -, purchase, production, short)."""
    return await service.read(lambda plant: plant.promise_history(order, line))


@router.get("/customers")
async def customers(service: Service) -> list[CustomerRow]:
    """Every customer, by code."""
    return await service.read(lambda plant: plant.customers())


@router.get("/items")
async def items(service: Service) -> list[ItemRow]:
    """Every item of the master data, by SKU."""
    return await service.read(lambda plant: plant.items())


@router.post(
    "/customers",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The code is taken"}, 422: {"description": "Refused"}},
)
async def add_customer(customer: CustomerCreate, service: Service) -> CustomerRow:
    """Add a customer sales orders may then name."""
    return await service.command(lambda plant: plant.add_customer(customer.code, customer.name))
