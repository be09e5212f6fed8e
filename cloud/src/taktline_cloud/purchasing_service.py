"""Purchasing over the database: suppliers, purchase orders, confirmations, receipts, alerts.

A service of its own beside `PlantService`, over the same `Database`: each call is one
transaction that loads orders, lets the pure rules in `purchasing/` decide, and stores the
result. Who may do what is `purchasing.scope`'s rule, checked here on every call, so any adapter
(the REST API today) gets it.

A receipt books a stock move from the plant's supplier location into a store at the line's
unit price (it moves the item's moving average, as `PlantService.receive` does) and keeps the
receipt row naming that move, in the same transaction; the order's row is locked first, so two
receipts on one line check the over-receipt tolerance one after the other. What this service
does not do itself: re-time sales promises and re-plan MRP after a change of an order (that
belongs to `PlantService`: the `on_supply_changed` and `on_items_changed` hooks, which the app
points at it), publish live stock events, and plan: alerts follow the plant service's latest
MRP plan (the `plan` source), else only the pegs kept on each line (an approved planned
order's; none for manual requisitions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal

from taktline_cloud.errors import Conflict, Forbidden, Invalid, NotFound
from taktline_cloud.inventory.ledger import Move
from taktline_cloud.inventory.lots import receipt_lot
from taktline_cloud.planning.buckets import Buckets
from taktline_cloud.planning.mrp import MrpPlan
from taktline_cloud.production.posting import RECEIPT
from taktline_cloud.purchasing import scope
from taktline_cloud.purchasing.alerts import SupplyAlert, confirmation_alerts, delivery_alerts
from taktline_cloud.purchasing.confirmations import LineAnswer, confirm
from taktline_cloud.purchasing.orders import PoStatus, PurchaseOrder, draft_orders
from taktline_cloud.purchasing.receipts import receive
from taktline_cloud.purchasing.requisitions import (
    PeggedDemand,
    Requisition,
    RequisitionSource,
    manual_requisition,
)
from taktline_cloud.purchasing.scope import Action, Actor
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.readmodels import LedgerRow
from taktline_cloud.storage import Database
from taktline_cloud.storage.purchasing import PurchasingStore, StoredConfirmation, StoredReceipt

BUYER = Actor("buyer")
"""The internal user every unauthenticated call acts as (real users come with authentication)."""
DEFAULT_WINDOW_DAYS = 7
_LOT = re.compile(r"^\S{1,64}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RequisitionInput:
    """A requisition: `quantity` of `item` by `needed`, entered by hand, or an approved MRP
    planned order's (`planned_order` and its `pegged` demands, kept on the order line so its
    supply alerts name the customer orders behind it)."""

    item: str
    quantity: Decimal
    needed: date
    id: str | None = None
    planned_order: str | None = None
    pegged: tuple[PeggedDemand, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderDetail:
    """An order with its confirmation history and receipts."""

    order: PurchaseOrder
    confirmations: tuple[StoredConfirmation, ...]
    receipts: tuple[StoredReceipt, ...]


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """The order after a receipt, the receipt row and the ledger entry it booked."""

    order: PurchaseOrder
    receipt: StoredReceipt
    move: LedgerRow
    line_closed: bool


def empty_plan(today: date) -> MrpPlan:
    """A plan with nothing in it: alerts then follow only the pegs kept on each line."""
    return MrpPlan(Buckets(today, 1, 1), {}, {}, (), {})


class PurchasingService:
    """Purchasing's commands and reads over one database (one transaction per call)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = _utc_now,
        on_supply_changed: Callable[[], None] | None = None,
        on_items_changed: Callable[[frozenset[str]], None] | None = None,
        plan: Callable[[], MrpPlan | None] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        # Called like `on_supply_changed`, with the changed order's items: the app runs a
        # net-change MRP of them there (their scheduled receipts moved).
        self._on_items_changed = on_items_changed
        # The latest MRP plan (the plant service's), which alerts follow to the customer orders
        # a purchase order line serves; None or no plan: only the pegs kept on each line.
        self._plan = plan
        # Called on the caller's thread once an order's sending, cancelling, closing,
        # confirmation or receipt is committed: the app re-times the sales promises there,
        # which this service cannot do itself.
        self._on_supply_changed = on_supply_changed

    def _supply_changed(self, order: PurchaseOrder | None = None) -> None:
        if order is not None and self._on_items_changed is not None:
            self._on_items_changed(frozenset(line.item for line in order.lines))
        if self._on_supply_changed is not None:
            self._on_supply_changed()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise Invalid("the service clock must return an aware datetime (UTC)")
        return now.astimezone(UTC)

    # --- suppliers ---------------------------------------------------------------------------

    def upsert_supplier(self, supplier: Supplier, actor: Actor = BUYER) -> Supplier:
        """Add or change a supplier (buyers only)."""
        _buyer_only(actor, "maintain suppliers")
        with self._db.transaction() as tx:
            PurchasingStore(tx).upsert_supplier(supplier)
        return supplier

    def suppliers(self, actor: Actor = BUYER) -> list[Supplier]:
        """Every supplier (buyers only)."""
        _buyer_only(actor, "list suppliers")
        with self._db.transaction(write=False) as tx:
            return list(PurchasingStore(tx).suppliers().values())

    def upsert_supplier_item(self, offer: SupplierItem, actor: Actor = BUYER) -> SupplierItem:
        """Add or change what a supplier sells of an item (buyers only)."""
        _buyer_only(actor, "maintain supplier items")
        with self._db.transaction() as tx:
            store = PurchasingStore(tx)
            if offer.supplier not in store.suppliers():
                raise NotFound(f"no supplier {offer.supplier!r}")
            if not store.item_exists(offer.item):
                raise Invalid(f"unknown item {offer.item!r}")
            store.upsert_supplier_item(offer)
        return offer

    def supplier_items(self, supplier: str, actor: Actor = BUYER) -> list[SupplierItem]:
        """What one supplier sells (buyers only)."""
        _buyer_only(actor, "list supplier items")
        with self._db.transaction(write=False) as tx:
            store = PurchasingStore(tx)
            if supplier not in store.suppliers():
                raise NotFound(f"no supplier {supplier!r}")
            return store.supplier_items(supplier)

    # --- purchase orders ---------------------------------------------------------------------

    def draft(
        self,
        requisitions: Sequence[RequisitionInput],
        *,
        window_days: int = DEFAULT_WINDOW_DAYS,
        actor: Actor = BUYER,
    ) -> list[PurchaseOrder]:
        """Source manual requisitions and draft orders from them (`orders.draft_orders`' rule)."""
        _buyer_only(actor, "draft purchase orders")
        if not requisitions:
            raise Invalid("drafting needs at least one requisition")
        now = self._now()
        today = now.date()
        with self._db.transaction() as tx:
            store = PurchasingStore(tx)
            suppliers = store.suppliers()
            offers = store.supplier_items()
            sourced: list[Requisition] = []
            for index, wanted in enumerate(requisitions, 1):
                if not store.item_exists(wanted.item):
                    raise Invalid(f"unknown item {wanted.item!r}")
                id_ = wanted.id or f"MAN/{now:%Y%m%dT%H%M%S}/{index}"
                requisition = manual_requisition(
                    id_,
                    wanted.item,
                    wanted.quantity,
                    wanted.needed,
                    today=today,
                    suppliers=suppliers,
                    supplier_items=offers,
                )
                if wanted.planned_order is not None:
                    requisition = replace(
                        requisition,
                        source=RequisitionSource.MRP,
                        planned_order=wanted.planned_order,
                        pegged=wanted.pegged,
                    )
                sourced.append(requisition)
            orders = draft_orders(
                sourced,
                suppliers,
                today=today,
                window_days=window_days,
                numbers=store.next_numbers(),
                created_at=now,
            )
            for order in orders:
                store.insert_order(order)
        return orders

    def orders(
        self,
        actor: Actor = BUYER,
        *,
        supplier: str | None = None,
        statuses: Sequence[PoStatus] | None = None,
        item: str | None = None,
    ) -> list[PurchaseOrder]:
        """The orders the actor may see, filtered by supplier, status and item, by number."""
        with self._db.transaction(write=False) as tx:
            found = PurchasingStore(tx).orders(supplier=supplier, statuses=statuses)
        return [
            order
            for order in scope.visible_orders(actor, found)
            if item is None or any(line.item == item for line in order.lines)
        ]

    def order(self, number: str, actor: Actor = BUYER) -> OrderDetail:
        """One order with its confirmations and receipts (NotFound if the actor may not see it)."""
        with self._db.transaction(write=False) as tx:
            store = PurchasingStore(tx)
            order = _require(store.order(number), number, actor, Action.VIEW)
            return OrderDetail(
                order, tuple(store.confirmations(number)), tuple(store.receipts(number))
            )

    def send(self, number: str, actor: Actor = BUYER) -> PurchaseOrder:
        """Send a draft to its supplier."""
        return self._change(number, actor, Action.SEND, lambda o, at: o.sent(at))

    def cancel(self, number: str, actor: Actor = BUYER) -> PurchaseOrder:
        """Cancel an order before any goods arrived."""
        return self._change(number, actor, Action.CANCEL, lambda o, at: o.cancelled(at))

    def close(self, number: str, actor: Actor = BUYER) -> PurchaseOrder:
        """Close an order: fully received, or closed short (nothing more expected)."""
        return self._change(number, actor, Action.CLOSE, lambda o, at: o.closed(at))

    def _change(
        self,
        number: str,
        actor: Actor,
        action: Action,
        change: Callable[[PurchaseOrder, datetime], PurchaseOrder],
    ) -> PurchaseOrder:
        now = self._now()
        with self._db.transaction() as tx:
            store = PurchasingStore(tx)
            order = _require(store.order(number, lock=True), number, actor, action)
            changed = change(order, now)
            store.update_order(changed)
        self._supply_changed(changed)  # a sent order is expected supply, a cancelled one is not
        return changed

    def confirm(
        self, number: str, answers: Mapping[int, LineAnswer], actor: Actor = BUYER
    ) -> OrderDetail:
        """The supplier's confirmation (or a buyer's on its behalf), kept in the history."""
        now = self._now()
        with self._db.transaction() as tx:
            store = PurchasingStore(tx)
            order = _require(store.order(number, lock=True), number, actor, Action.CONFIRM)
            confirmation = confirm(order, answers, now)
            store.update_order(confirmation.order)
            store.add_confirmation(number, confirmation.changes, actor.user, now)
            detail = OrderDetail(
                confirmation.order,
                tuple(store.confirmations(number)),
                tuple(store.receipts(number)),
            )
        self._supply_changed(confirmation.order)
        return detail

    def receive(
        self,
        number: str,
        line: int,
        quantity: Decimal,
        lot: str | None = None,
        *,
        location: str | None = None,
        actor: Actor = BUYER,
    ) -> ReceiptResult:
        """Receive goods on a line into `lot` at `location` (the plant's component store by
        default): a stock move at the line's unit price into the lot and a receipt row, one
        transaction. Without a lot the receipt gets its own: `lots.receipt_lot` (PO-7-1-2 is
        PO-7 line 1's second receipt)."""
        if lot is not None and not _LOT.match(lot):
            raise Invalid(f"lot {lot!r}: 1-64 characters without spaces")
        now = self._now()
        with self._db.transaction() as tx:
            store = PurchasingStore(tx)
            # Locked before anything is read from it: a concurrent receipt waits, then sees
            # this one's quantity in the tolerance check.
            order = _require(store.order(number, lock=True), number, actor, Action.RECEIVE)
            if lot is None:
                on_line = sum(1 for r in store.receipts(number) if r.line == line)
                lot = receipt_lot(number, line, on_line + 1)
            received, receipt = receive(order, line, quantity, lot, now)
            kinds = tx.location_kinds()
            target = location
            if target is None:
                model = tx.plant_model()
                if model is None:
                    raise Invalid("no master data loaded yet: no store to receive into")
                target = model.places.components
            if kinds.get(target) != "internal":
                raise Invalid(f"{target!r} is not a store (an internal location)")
            sources = [code for code, kind in sorted(kinds.items()) if kind == "supplier"]
            if not sources:
                raise Conflict("the plant has no supplier location to receive from")
            move = Move(
                receipt.item,
                sources[0],
                target,
                receipt.quantity,
                RECEIPT,
                f"{number}/{line}",
                now,
                receipt.unit_price,
                lot,
            )
            (row,) = tx.append_moves([move])
            stored = store.add_receipt(
                number,
                line=line,
                lot=lot,
                quantity=quantity,
                location=target,
                stock_move=row.id,
                at=now,
            )
            store.update_order(received)
        self._supply_changed(received)  # stock up, scheduled receipt down: re-plan its items
        return ReceiptResult(received, stored, row, receipt.line_closed)

    # --- alerts ------------------------------------------------------------------------------

    def alerts(
        self, actor: Actor = BUYER, *, today: date | None = None, plan: MrpPlan | None = None
    ) -> list[SupplyAlert]:
        """Late and short confirmations and deliveries of the open orders the actor sees.

        The affected demands follow `plan`, else the service's latest MRP plan (the `plan`
        source it was given): a line's scheduled receipt in it, else the planned order it was
        approved from; without a plan only the pegs kept on each line (an approved planned
        order's, none for manual requisitions).
        """
        day = self._now().date() if today is None else today
        if plan is None and self._plan is not None:
            plan = self._plan()
        against = empty_plan(day) if plan is None else plan
        alerts: list[SupplyAlert] = []
        for order in self.orders(actor):
            alerts += confirmation_alerts(against, order)
            alerts += delivery_alerts(against, order, day)
        return alerts


def _require(
    order: PurchaseOrder | None, number: str, actor: Actor, action: Action
) -> PurchaseOrder:
    """The order if the actor may take `action` on it: NotFound when it may not see it (or
    there is none), Forbidden when it sees it but may not act."""
    if order is None:
        raise NotFound(f"purchase order {number} not found")
    scope.require(actor, order, action)
    return order


def _buyer_only(actor: Actor, what: str) -> None:
    if actor.supplier is not None:
        raise Forbidden(f"{actor.user} may not {what}: buyers only")


def statuses_of(values: Iterable[str]) -> list[PoStatus]:
    """Status names as `PoStatus` (Invalid for an unknown one)."""
    try:
        return [PoStatus(v) for v in values]
    except ValueError as exc:
        allowed = ", ".join(s.value for s in PoStatus)
        raise Invalid(f"{exc}; a status is one of {allowed}") from exc
