"""Purchasing's queries: suppliers, purchase orders, confirmations and receipts (SQL only here).

Kept beside `Session` rather than in it: it works on a session's connection, inside the same
transaction, so a receipt's stock move (booked through `Session.append_moves`) and its receipt
row commit or roll back together.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from taktline_cloud.errors import Conflict, StorageError
from taktline_cloud.purchasing.confirmations import LineChange
from taktline_cloud.purchasing.orders import LotReceipt, PoLine, PoStatus, PurchaseOrder
from taktline_cloud.purchasing.requisitions import PeggedDemand
from taktline_cloud.purchasing.suppliers import Supplier, SupplierItem
from taktline_cloud.storage.session import Session
from taktline_cloud.storage.sql import (
    to_date,
    to_datetime,
    to_datetime_or_none,
    to_decimal,
    to_decimal_or_none,
)

_INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)
_PO_NUMBER = re.compile(r"^PO-(\d+)$")
_FIRST_PO = 1
_ORDER_COLUMNS = (
    "number, supplier, currency, status, order_date, over_receipt_tolerance, created_at,"
    " sent_at, confirmed_at, closed_at"
)
_LINE_COLUMNS = (
    "po, line, item, quantity, unit_price, needed, requisition, requested, planned_order, pegged,"
    " confirmed_date, confirmed_quantity"
)


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A receipt row: which lot, how much, where to, and the ledger entry that booked it."""

    id: int
    order: str
    line: int
    lot: str
    quantity: Decimal
    location: str
    stock_move: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StoredConfirmation:
    """One line of one supplier confirmation, as kept in the history."""

    order: str
    line: int
    confirmation: int
    confirmed_by: str
    confirmed_at: datetime
    previous_date: date
    confirmed_date: date
    previous_quantity: Decimal
    confirmed_quantity: Decimal


class PurchasingStore:
    """Purchasing's reads and writes in one session's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._x = session.executor

    def _for_update(self, lock: bool) -> str:
        return " FOR UPDATE" if lock and self._x.dialect.backend == "postgresql" else ""

    # --- suppliers ---------------------------------------------------------------------------

    def upsert_supplier(self, supplier: Supplier) -> None:
        """Insert or update a supplier (orders already drafted keep their own copies)."""
        self._x.execute(
            "INSERT INTO supplier (code, name, lead_days, currency, over_receipt_tolerance)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET name = excluded.name,"
            " lead_days = excluded.lead_days, currency = excluded.currency,"
            " over_receipt_tolerance = excluded.over_receipt_tolerance",
            (
                supplier.code,
                supplier.name,
                supplier.lead_days,
                supplier.currency,
                supplier.over_receipt_tolerance,
            ),
        )

    def suppliers(self) -> dict[str, Supplier]:
        """Every supplier by code."""
        return {
            r[0]: Supplier(r[0], r[1], int(r[2]), r[3], to_decimal(r[4]))
            for r in self._x.query(
                "SELECT code, name, lead_days, currency, over_receipt_tolerance FROM supplier"
                " ORDER BY code"
            )
        }

    def upsert_supplier_item(self, offer: SupplierItem) -> None:
        """Insert or update what a supplier sells of an item."""
        self._x.execute(
            "INSERT INTO supplier_item (supplier, item, unit_price, minimum, pack_size, lead_days,"
            " preferred) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (supplier, item) DO UPDATE SET"
            " unit_price = excluded.unit_price, minimum = excluded.minimum,"
            " pack_size = excluded.pack_size, lead_days = excluded.lead_days,"
            " preferred = excluded.preferred",
            (
                offer.supplier,
                offer.item,
                offer.unit_price,
                offer.minimum,
                offer.pack_size,
                offer.lead_days,
                offer.preferred,
            ),
        )

    def supplier_items(self, supplier: str | None = None) -> list[SupplierItem]:
        """What the suppliers sell (one supplier's, or all), by supplier then item."""
        statement = (
            "SELECT supplier, item, unit_price, minimum, pack_size, lead_days, preferred"
            " FROM supplier_item"
        )
        params: list[object] = []
        if supplier is not None:
            statement += " WHERE supplier = ?"
            params.append(supplier)
        return [
            SupplierItem(
                r[0],
                r[1],
                to_decimal(r[2]),
                to_decimal(r[3]),
                to_decimal(r[4]),
                None if r[5] is None else int(r[5]),
                bool(r[6]),
            )
            for r in self._x.query(statement + " ORDER BY supplier, item", params)
        ]

    def item_exists(self, sku: str) -> bool:
        """True when the item is in the master data."""
        return bool(self._x.query("SELECT 1 FROM items WHERE sku = ?", (sku,)))

    # --- purchase orders ---------------------------------------------------------------------

    def next_numbers(self) -> _Numbers:
        """PO numbers after the highest stored one (PO-000001, PO-000002, …)."""
        highest = _FIRST_PO - 1
        for (number,) in self._x.query("SELECT number FROM purchase_order"):
            match = _PO_NUMBER.match(number)
            if match:
                highest = max(highest, int(match.group(1)))
        return _Numbers(highest + 1)

    def insert_order(self, order: PurchaseOrder) -> None:
        """Store a new order with its lines; Conflict when its number is taken."""
        try:
            self._x.execute(
                f"INSERT INTO purchase_order ({_ORDER_COLUMNS}) VALUES ({_marks(10)})",
                (
                    order.number,
                    order.supplier,
                    order.currency,
                    str(order.status),
                    order.order_date,
                    order.over_receipt_tolerance,
                    order.created_at,
                    order.sent_at,
                    order.confirmed_at,
                    order.closed_at,
                ),
            )
            self._x.executemany(
                f"INSERT INTO po_line ({_LINE_COLUMNS}) VALUES ({_marks(12)})",
                [
                    (
                        order.number,
                        line.number,
                        line.item,
                        line.quantity,
                        line.unit_price,
                        line.needed,
                        line.requisition,
                        line.requested,
                        line.planned_order,
                        _pegged_json(line.pegged),
                        line.confirmed_date,
                        line.confirmed_quantity,
                    )
                    for line in order.lines
                ],
            )
        except _INTEGRITY_ERRORS as exc:
            raise Conflict(f"purchase order {order.number} cannot be stored: {exc}") from exc

    def update_order(self, order: PurchaseOrder) -> None:
        """Store an order's status, times and each line's confirmed date and quantity."""
        try:
            self._x.execute(
                "UPDATE purchase_order SET status = ?, sent_at = ?, confirmed_at = ?,"
                " closed_at = ? WHERE number = ?",
                (
                    str(order.status),
                    order.sent_at,
                    order.confirmed_at,
                    order.closed_at,
                    order.number,
                ),
            )
            self._x.executemany(
                "UPDATE po_line SET confirmed_date = ?, confirmed_quantity = ?"
                " WHERE po = ? AND line = ?",
                [
                    (line.confirmed_date, line.confirmed_quantity, order.number, line.number)
                    for line in order.lines
                ],
            )
        except _INTEGRITY_ERRORS as exc:
            raise Conflict(f"purchase order {order.number} cannot be stored: {exc}") from exc

    def order(self, number: str, *, lock: bool = False) -> PurchaseOrder | None:
        """The order with its lines and receipts; `lock` takes its row (PostgreSQL: FOR UPDATE)
        first, so a check made on what it received holds until the transaction ends."""
        rows = self._x.query(
            f"SELECT {_ORDER_COLUMNS} FROM purchase_order WHERE number = ?"
            + self._for_update(lock),
            (number,),
        )
        if not rows:
            return None
        return self._assemble(rows)[0]

    def orders(
        self, *, supplier: str | None = None, statuses: Sequence[PoStatus] | None = None
    ) -> list[PurchaseOrder]:
        """Orders (of one supplier, in some states, or all), by number."""
        where: list[str] = []
        params: list[object] = []
        if supplier is not None:
            where.append("supplier = ?")
            params.append(supplier)
        if statuses is not None:
            if not statuses:
                return []
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params += [str(s) for s in statuses]
        statement = f"SELECT {_ORDER_COLUMNS} FROM purchase_order"
        if where:
            statement += " WHERE " + " AND ".join(where)
        return self._assemble(self._x.query(statement + " ORDER BY number", params))

    def _assemble(self, headers: list[tuple[Any, ...]]) -> list[PurchaseOrder]:
        if not headers:
            return []
        numbers = [h[0] for h in headers]
        marks = ", ".join("?" for _ in numbers)
        receipts: dict[tuple[str, int], list[LotReceipt]] = {}
        for po, line, lot, quantity, at in self._x.query(
            f"SELECT po, line, lot, quantity, received_at FROM po_receipt WHERE po IN ({marks})"
            " ORDER BY id",
            numbers,
        ):
            receipts.setdefault((po, int(line)), []).append(
                LotReceipt(lot, to_decimal(quantity), to_datetime(at))
            )
        lines: dict[str, list[PoLine]] = {}
        for r in self._x.query(
            f"SELECT {_LINE_COLUMNS} FROM po_line WHERE po IN ({marks}) ORDER BY po, line",
            numbers,
        ):
            lines.setdefault(r[0], []).append(
                PoLine(
                    number=int(r[1]),
                    item=r[2],
                    quantity=to_decimal(r[3]),
                    unit_price=to_decimal(r[4]),
                    needed=to_date(r[5]),
                    requisition=r[6],
                    requested=to_decimal(r[7]),
                    planned_order=r[8],
                    pegged=_pegged(r[9]),
                    confirmed_date=to_date_or_none(r[10]),
                    confirmed_quantity=to_decimal_or_none(r[11]),
                    receipts=tuple(receipts.get((r[0], int(r[1])), ())),
                )
            )
        orders = []
        for h in headers:
            try:
                status = PoStatus(h[3])
            except ValueError as exc:
                raise StorageError(f"purchase order {h[0]} has unknown status {h[3]!r}") from exc
            orders.append(
                PurchaseOrder(
                    number=h[0],
                    supplier=h[1],
                    currency=h[2],
                    status=status,
                    order_date=to_date(h[4]),
                    lines=tuple(lines.get(h[0], ())),
                    created_at=to_datetime(h[6]),
                    over_receipt_tolerance=to_decimal(h[5]),
                    sent_at=to_datetime_or_none(h[7]),
                    confirmed_at=to_datetime_or_none(h[8]),
                    closed_at=to_datetime_or_none(h[9]),
                )
            )
        return orders

    # --- confirmations and receipts ----------------------------------------------------------

    def add_confirmation(
        self, order: str, changes: Sequence[LineChange], by: str, at: datetime
    ) -> int:
        """Keep one supplier confirmation (a row per line); its sequence number on the order."""
        found = self._x.query(
            "SELECT COALESCE(MAX(confirmation), 0) FROM po_confirmation WHERE po = ?", (order,)
        )
        sequence = int(found[0][0]) + 1
        self._x.executemany(
            "INSERT INTO po_confirmation (po, line, confirmation, confirmed_by, confirmed_at,"
            " previous_date, confirmed_date, previous_quantity, confirmed_quantity)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    order,
                    c.line,
                    sequence,
                    by,
                    at,
                    c.previous_date,
                    c.date,
                    c.previous_quantity,
                    c.quantity,
                )
                for c in changes
            ],
        )
        return sequence

    def confirmations(self, order: str) -> list[StoredConfirmation]:
        """An order's confirmation history, oldest first."""
        return [
            StoredConfirmation(
                r[0],
                int(r[1]),
                int(r[2]),
                r[3],
                to_datetime(r[4]),
                to_date(r[5]),
                to_date(r[6]),
                to_decimal(r[7]),
                to_decimal(r[8]),
            )
            for r in self._x.query(
                "SELECT po, line, confirmation, confirmed_by, confirmed_at, previous_date,"
                " confirmed_date, previous_quantity, confirmed_quantity FROM po_confirmation"
                " WHERE po = ? ORDER BY confirmation, line",
                (order,),
            )
        ]

    def add_receipt(
        self,
        order: str,
        *,
        line: int,
        lot: str,
        quantity: Decimal,
        location: str,
        stock_move: int,
        at: datetime,
    ) -> StoredReceipt:
        """Keep a receipt into a lot, naming the ledger entry that booked it."""
        rows = self._x.query(
            "INSERT INTO po_receipt (po, line, lot, quantity, location, stock_move, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (order, line, lot, quantity, location, stock_move, at),
        )
        return StoredReceipt(int(rows[0][0]), order, line, lot, quantity, location, stock_move, at)

    def receipts(self, order: str) -> list[StoredReceipt]:
        """An order's receipts, oldest first."""
        return [
            StoredReceipt(
                int(r[0]),
                r[1],
                int(r[2]),
                r[3],
                to_decimal(r[4]),
                r[5],
                int(r[6]),
                to_datetime(r[7]),
            )
            for r in self._x.query(
                "SELECT id, po, line, lot, quantity, location, stock_move, received_at"
                " FROM po_receipt WHERE po = ? ORDER BY id",
                (order,),
            )
        ]


class _Numbers:
    """An iterator of PO numbers from `start` (what `orders.draft_orders` takes)."""

    def __init__(self, start: int) -> None:
        self._next = start

    def __iter__(self) -> _Numbers:
        return self

    def __next__(self) -> str:
        number = f"PO-{self._next:06d}"
        self._next += 1
        return number


def _marks(count: int) -> str:
    return ", ".join("?" for _ in range(count))


def to_date_or_none(value: Any) -> date | None:
    """`to_date`, keeping NULL."""
    return None if value is None else to_date(value)


def _pegged_json(pegged: Sequence[PeggedDemand]) -> str:
    return json.dumps([[p.demand, str(p.quantity)] for p in pegged])


def _pegged(stored: Any) -> tuple[PeggedDemand, ...]:
    try:
        return tuple(PeggedDemand(str(d), Decimal(str(q))) for d, q in json.loads(stored))
    except (ValueError, TypeError) as exc:
        raise StorageError(f"stored pegging {stored!r} cannot be read") from exc
