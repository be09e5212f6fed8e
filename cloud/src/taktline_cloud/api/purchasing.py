"""Purchasing: suppliers, purchase orders (draft, send, confirm, receive, cancel, close), alerts.

Who is calling: a request with the header `X-Taktline-Supplier: <code>` acts as that supplier's
user, one without it as a buyer. This header is a STAND-IN for real authentication (a later
issue): anyone can set it, so it only shows the scoping rule (`purchasing.scope`), it does not
protect anything. A supplier sees only its own orders once sent (others are 404) and may only
confirm them (other actions 403).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from taktline_cloud.api.deps import Context
from taktline_cloud.api.schemas import Code
from taktline_cloud.errors import Invalid
from taktline_cloud.inventory.quantities import canonical
from taktline_cloud.purchasing.alerts import SupplyAlert
from taktline_cloud.purchasing.confirmations import LineAnswer
from taktline_cloud.purchasing.orders import PoLine, PurchaseOrder
from taktline_cloud.purchasing.scope import Actor
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.purchasing_service import (
    BUYER,
    OrderDetail,
    PurchasingService,
    RequisitionInput,
    statuses_of,
)

router = APIRouter(tags=["purchasing"])
T = TypeVar("T")

_AUTH_NOTE = (
    " Caller: the `X-Taktline-Supplier` header makes the request a supplier's (a stand-in for"
    " real authentication, which comes later; it protects nothing)."
)


def _actor(
    x_taktline_supplier: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=64,
            description="act as this supplier's user (STAND-IN for real authentication, a "
            "later issue: anyone can set it); absent: a buyer",
        ),
    ] = None,
) -> Actor:
    if x_taktline_supplier is None:
        return BUYER
    return Actor(f"supplier:{x_taktline_supplier}", x_taktline_supplier)


Caller = Annotated[Actor, Depends(_actor)]


class _Purchasing:
    """The purchasing service, run on the cloud's single database worker thread."""

    def __init__(self, context: Context) -> None:
        if context.purchasing is None:
            raise RuntimeError("the cloud runs without purchasing: ApiContext.purchasing unset")
        self._service = context.purchasing
        self._worker = context.gateway.worker

    async def __call__(self, call: Callable[[PurchasingService], T]) -> T:
        service = self._service
        return await self._worker.run(lambda: call(service))


Purchasing = Annotated[_Purchasing, Depends(_Purchasing)]


# --- models ------------------------------------------------------------------------------------


class SupplierBody(BaseModel):
    """A supplier: default lead time, currency and over-receipt tolerance (0.05 = 5 %)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Code = Field(examples=["ACME"])
    name: str = Field(min_length=1, max_length=200, examples=["Acme Castings"])
    lead_days: int = Field(ge=0, examples=[10])
    currency: str = Field("EUR", min_length=3, max_length=3, examples=["EUR"])
    over_receipt_tolerance: Decimal = Field(
        Decimal(0), ge=0, allow_inf_nan=False, examples=["0.05"]
    )

    @classmethod
    def of(cls, supplier: Supplier) -> SupplierBody:
        return cls(
            code=supplier.code,
            name=supplier.name,
            lead_days=supplier.lead_days,
            currency=supplier.currency,
            over_receipt_tolerance=canonical(supplier.over_receipt_tolerance),
        )


class SupplierItemBody(BaseModel):
    """What a supplier sells of an item: price, minimum, pack size (0: any), own lead time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["RM-HOUSING"])
    unit_price: Decimal = Field(ge=0, allow_inf_nan=False, examples=["14.50"])
    minimum: Decimal = Field(Decimal(0), ge=0, allow_inf_nan=False)
    pack_size: Decimal = Field(Decimal(0), ge=0, allow_inf_nan=False)
    lead_days: int | None = Field(None, ge=0)
    preferred: bool = False

    @classmethod
    def of(cls, offer: SupplierItem) -> SupplierItemBody:
        return cls(
            item=offer.item,
            unit_price=canonical(offer.unit_price),
            minimum=canonical(offer.minimum),
            pack_size=canonical(offer.pack_size),
            lead_days=offer.lead_days,
            preferred=offer.preferred,
        )


class RequisitionBody(BaseModel):
    """A manual requisition: `quantity` of `item` needed by `needed`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Code = Field(examples=["RM-HOUSING"])
    quantity: Decimal = Field(gt=0, allow_inf_nan=False, examples=["500"])
    needed: date = Field(examples=["2026-12-10"])
    id: Code | None = Field(None, description="the requisition's id (assigned when left out)")


class DraftBody(BaseModel):
    """Requisitions to source and draft orders from (one per supplier and order window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requisitions: list[RequisitionBody] = Field(min_length=1)
    window_days: int = Field(7, ge=1, le=365, description="length of an order window in days")


class LineAnswerBody(BaseModel):
    """The supplier's answer for one line; a field left out keeps the current promise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    line: int = Field(ge=1)
    date: dt.date | None = None
    quantity: Decimal | None = Field(None, ge=0, allow_inf_nan=False)


class ConfirmationBody(BaseModel):
    """A confirmation of the whole order: lines not named keep their current promise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[LineAnswerBody] = Field(default_factory=list)


class ReceiptBody(BaseModel):
    """Goods received on a line into a lot (into the plant's component store by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Decimal = Field(gt=0, allow_inf_nan=False, examples=["200"])
    lot: Code | None = Field(
        None,
        examples=["LOT-2026-001"],
        description="the lot received into; left out: PO-line-receipt (PO-7-1-2)",
    )
    location: Code | None = Field(None, examples=["WH1/RAW"])


class LotReceiptOut(BaseModel):
    lot: str
    quantity: Decimal
    received_at: datetime


class PoLineOut(BaseModel):
    number: int
    item: str
    quantity: Decimal
    unit_price: Decimal
    needed: date
    requisition: str
    requested: Decimal
    confirmed_date: date | None
    confirmed_quantity: Decimal | None
    agreed_quantity: Decimal
    expected_date: date
    received: Decimal
    open_quantity: Decimal
    fully_received: bool
    receipts: list[LotReceiptOut]

    @classmethod
    def of(cls, line: PoLine) -> PoLineOut:
        def opt(value: Decimal | None) -> Decimal | None:
            return None if value is None else canonical(value)

        return cls(
            number=line.number,
            item=line.item,
            quantity=canonical(line.quantity),
            unit_price=canonical(line.unit_price),
            needed=line.needed,
            requisition=line.requisition,
            requested=canonical(line.requested),
            confirmed_date=line.confirmed_date,
            confirmed_quantity=opt(line.confirmed_quantity),
            agreed_quantity=canonical(line.agreed_quantity),
            expected_date=line.expected_date,
            received=canonical(line.received),
            open_quantity=canonical(line.open_quantity),
            fully_received=line.fully_received,
            receipts=[
                LotReceiptOut(lot=r.lot, quantity=canonical(r.quantity), received_at=r.received_at)
                for r in line.receipts
            ],
        )


class PurchaseOrderOut(BaseModel):
    number: str
    supplier: str
    currency: str
    status: str
    order_date: date
    over_receipt_tolerance: Decimal
    amount: Decimal
    created_at: datetime
    sent_at: datetime | None
    confirmed_at: datetime | None
    closed_at: datetime | None
    lines: list[PoLineOut]

    @classmethod
    def of(cls, order: PurchaseOrder) -> PurchaseOrderOut:
        return cls(
            number=order.number,
            supplier=order.supplier,
            currency=order.currency,
            status=str(order.status),
            order_date=order.order_date,
            over_receipt_tolerance=canonical(order.over_receipt_tolerance),
            amount=canonical(order.amount),
            created_at=order.created_at,
            sent_at=order.sent_at,
            confirmed_at=order.confirmed_at,
            closed_at=order.closed_at,
            lines=[PoLineOut.of(line) for line in order.lines],
        )


class ConfirmationOut(BaseModel):
    confirmation: int
    line: int
    confirmed_by: str
    confirmed_at: datetime
    previous_date: date
    confirmed_date: date
    previous_quantity: Decimal
    confirmed_quantity: Decimal


class ReceiptOut(BaseModel):
    id: int
    line: int
    lot: str
    quantity: Decimal
    location: str
    stock_move: int = Field(description="the ledger entry that booked it")
    received_at: datetime


class PurchaseOrderDetail(PurchaseOrderOut):
    confirmations: list[ConfirmationOut]
    receipt_rows: list[ReceiptOut]

    @classmethod
    def of_detail(cls, detail: OrderDetail) -> PurchaseOrderDetail:
        return cls(
            **PurchaseOrderOut.of(detail.order).model_dump(),
            confirmations=[
                ConfirmationOut(
                    confirmation=c.confirmation,
                    line=c.line,
                    confirmed_by=c.confirmed_by,
                    confirmed_at=c.confirmed_at,
                    previous_date=c.previous_date,
                    confirmed_date=c.confirmed_date,
                    previous_quantity=canonical(c.previous_quantity),
                    confirmed_quantity=canonical(c.confirmed_quantity),
                )
                for c in detail.confirmations
            ],
            receipt_rows=[
                ReceiptOut(
                    id=r.id,
                    line=r.line,
                    lot=r.lot,
                    quantity=canonical(r.quantity),
                    location=r.location,
                    stock_move=r.stock_move,
                    received_at=r.received_at,
                )
                for r in detail.receipts
            ],
        )


class ReceiptResultOut(BaseModel):
    order: PurchaseOrderOut
    receipt: ReceiptOut
    line_closed: bool
    unit_cost: Decimal = Field(description="the cost the stock move carried (the line's price)")


class AffectedDemandOut(BaseModel):
    item: str
    demand: str
    kind: str | None
    quantity: Decimal


class AlertOut(BaseModel):
    kind: str
    order: str
    line: int
    item: str
    needed: date
    expected: date
    days: int
    quantity: Decimal
    affected: list[AffectedDemandOut]
    message: str

    @classmethod
    def of(cls, alert: SupplyAlert) -> AlertOut:
        return cls(
            kind=str(alert.kind),
            order=alert.order,
            line=alert.line,
            item=alert.item,
            needed=alert.needed,
            expected=alert.expected,
            days=alert.days,
            quantity=canonical(alert.quantity),
            affected=[
                AffectedDemandOut(
                    item=a.item,
                    demand=a.demand,
                    kind=None if a.kind is None else str(a.kind),
                    quantity=canonical(a.quantity),
                )
                for a in alert.affected
            ],
            message=alert.message,
        )


# --- routes ------------------------------------------------------------------------------------

PoNumber = Annotated[str, Path(min_length=1, max_length=64, description="the order's number")]
LineNumber = Annotated[int, Path(ge=1, description="the line's number")]
_BUYER_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "A supplier's request"}}
_ORDER_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "A supplier may not take this action"},
    404: {"description": "No such order (or not the calling supplier's)"},
    409: {"description": "Not allowed in the order's status"},
}


@router.get("/api/suppliers", responses=_BUYER_ONLY, description="Every supplier." + _AUTH_NOTE)
async def suppliers(purchasing: Purchasing, actor: Caller) -> list[SupplierBody]:
    found = await purchasing(lambda p: p.suppliers(actor))
    return [SupplierBody.of(s) for s in found]


@router.put(
    "/api/suppliers/{code}",
    responses={**_BUYER_ONLY, 422: {"description": "Refused input"}},
    description="Add or change a supplier (the body's code must match the path)." + _AUTH_NOTE,
)
async def put_supplier(
    code: Annotated[str, Path(min_length=1, max_length=64)],
    body: SupplierBody,
    purchasing: Purchasing,
    actor: Caller,
) -> SupplierBody:
    if body.code != code:
        raise Invalid(f"the body names supplier {body.code!r}, the path {code!r}")
    supplier = Supplier(
        body.code, body.name, body.lead_days, body.currency, body.over_receipt_tolerance
    )
    return SupplierBody.of(await purchasing(lambda p: p.upsert_supplier(supplier, actor)))


@router.get(
    "/api/suppliers/{code}/items",
    responses={**_BUYER_ONLY, 404: {"description": "No such supplier"}},
    description="What a supplier sells." + _AUTH_NOTE,
)
async def supplier_items(
    code: Annotated[str, Path(min_length=1, max_length=64)], purchasing: Purchasing, actor: Caller
) -> list[SupplierItemBody]:
    found = await purchasing(lambda p: p.supplier_items(code, actor))
    return [SupplierItemBody.of(o) for o in found]


@router.put(
    "/api/suppliers/{code}/items",
    responses={
        **_BUYER_ONLY,
        404: {"description": "No such supplier"},
        422: {"description": "Unknown item; refused input"},
    },
    description="Add or change what a supplier sells of an item." + _AUTH_NOTE,
)
async def put_supplier_item(
    code: Annotated[str, Path(min_length=1, max_length=64)],
    body: SupplierItemBody,
    purchasing: Purchasing,
    actor: Caller,
) -> SupplierItemBody:
    offer = SupplierItem(
        code,
        body.item,
        body.unit_price,
        body.minimum,
        body.pack_size,
        body.lead_days,
        body.preferred,
    )
    return SupplierItemBody.of(await purchasing(lambda p: p.upsert_supplier_item(offer, actor)))


@router.post(
    "/api/purchase-orders",
    status_code=status.HTTP_201_CREATED,
    responses={**_BUYER_ONLY, 422: {"description": "Unknown item, no supplier sells it"}},
    description="Source manual requisitions and draft purchase orders from them: one per "
    "supplier and order window." + _AUTH_NOTE,
)
async def draft(body: DraftBody, purchasing: Purchasing, actor: Caller) -> list[PurchaseOrderOut]:
    wanted = [RequisitionInput(r.item, r.quantity, r.needed, r.id) for r in body.requisitions]
    orders = await purchasing(lambda p: p.draft(wanted, window_days=body.window_days, actor=actor))
    return [PurchaseOrderOut.of(o) for o in orders]


@router.get(
    "/api/purchase-orders",
    responses={422: {"description": "Unknown status"}},
    description="Purchase orders by number (a supplier: only its own, sent ones)." + _AUTH_NOTE,
)
async def orders(
    purchasing: Purchasing,
    actor: Caller,
    supplier: Annotated[str | None, Query(min_length=1, description="only this supplier")] = None,
    status_: Annotated[
        list[str] | None, Query(alias="status", description="only these statuses")
    ] = None,
    item: Annotated[str | None, Query(min_length=1, description="orders with this item")] = None,
) -> list[PurchaseOrderOut]:
    statuses = None if status_ is None else statuses_of(status_)
    found = await purchasing(
        lambda p: p.orders(actor, supplier=supplier, statuses=statuses, item=item)
    )
    return [PurchaseOrderOut.of(o) for o in found]


@router.get(
    "/api/purchase-orders/{number}",
    responses={404: _ORDER_ERRORS[404]},
    description="One order with its confirmation history and receipts." + _AUTH_NOTE,
)
async def order(number: PoNumber, purchasing: Purchasing, actor: Caller) -> PurchaseOrderDetail:
    return PurchaseOrderDetail.of_detail(await purchasing(lambda p: p.order(number, actor)))


@router.post(
    "/api/purchase-orders/{number}/send",
    responses=_ORDER_ERRORS,
    description="Send a draft to its supplier (buyers)." + _AUTH_NOTE,
)
async def send(number: PoNumber, purchasing: Purchasing, actor: Caller) -> PurchaseOrderOut:
    return PurchaseOrderOut.of(await purchasing(lambda p: p.send(number, actor)))


@router.post(
    "/api/purchase-orders/{number}/cancel",
    responses=_ORDER_ERRORS,
    description="Cancel an order before goods arrived (buyers)." + _AUTH_NOTE,
)
async def cancel(number: PoNumber, purchasing: Purchasing, actor: Caller) -> PurchaseOrderOut:
    return PurchaseOrderOut.of(await purchasing(lambda p: p.cancel(number, actor)))


@router.post(
    "/api/purchase-orders/{number}/close",
    responses=_ORDER_ERRORS,
    description="Close an order, fully received or short (buyers)." + _AUTH_NOTE,
)
async def close(number: PoNumber, purchasing: Purchasing, actor: Caller) -> PurchaseOrderOut:
    return PurchaseOrderOut.of(await purchasing(lambda p: p.close(number, actor)))


@router.post(
    "/api/purchase-orders/{number}/confirmation",
    responses={**_ORDER_ERRORS, 422: {"description": "Refused input"}},
    description="The supplier's confirmation of dates and quantities (kept in the history); "
    "a buyer may confirm on the supplier's behalf." + _AUTH_NOTE,
)
async def confirmation(
    number: PoNumber, body: ConfirmationBody, purchasing: Purchasing, actor: Caller
) -> PurchaseOrderDetail:
    answers = {a.line: LineAnswer(a.date, a.quantity) for a in body.lines}
    if len(answers) != len(body.lines):
        raise Invalid("a confirmation names each line at most once")
    return PurchaseOrderDetail.of_detail(
        await purchasing(lambda p: p.confirm(number, answers, actor))
    )


@router.post(
    "/api/purchase-orders/{number}/lines/{line}/receipts",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_ORDER_ERRORS,
        409: {"description": "Not confirmed yet, fully received, or beyond the tolerance"},
        422: {"description": "Not a store; refused input"},
    },
    description="Receive goods on a line into a lot: a stock move from the supplier location "
    "at the line's price (moving the average) and a receipt row, in one transaction (buyers)."
    + _AUTH_NOTE,
)
async def receipt(
    number: PoNumber,
    line: LineNumber,
    body: ReceiptBody,
    purchasing: Purchasing,
    actor: Caller,
) -> ReceiptResultOut:
    result = await purchasing(
        lambda p: p.receive(
            number, line, body.quantity, body.lot, location=body.location, actor=actor
        )
    )
    stored = result.receipt
    return ReceiptResultOut(
        order=PurchaseOrderOut.of(result.order),
        receipt=ReceiptOut(
            id=stored.id,
            line=stored.line,
            lot=stored.lot,
            quantity=canonical(stored.quantity),
            location=stored.location,
            stock_move=stored.stock_move,
            received_at=stored.received_at,
        ),
        line_closed=result.line_closed,
        unit_cost=canonical(result.move.unit_cost),
    )


@router.get(
    "/api/purchasing/alerts",
    description="Late and short confirmations and deliveries of open orders, each with the "
    "customer order lines (and other demands) it hits, traced through the latest MRP plan's "
    "pegging. Before the first MRP run since the cloud started, affected demands are the pegs "
    "kept on each line (none for manual requisitions)." + _AUTH_NOTE,
)
async def alerts(
    purchasing: Purchasing,
    actor: Caller,
    today: Annotated[date | None, Query(description="the day to judge by (default: today)")] = None,
) -> list[AlertOut]:
    found = await purchasing(lambda p: p.alerts(actor, today=today))
    return [AlertOut.of(a) for a in found]
