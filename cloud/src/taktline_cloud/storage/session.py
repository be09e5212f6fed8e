"""The session: every query the service runs, inside one transaction (SQL lives only here)."""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from taktline_cloud.errors import Conflict, Invalid, StorageError
from taktline_cloud.historian.current import Latest, LatestKey
from taktline_cloud.historian.samples import Sample, SampleValue
from taktline_cloud.inventory.balances import Balance, allows_negative_by_default
from taktline_cloud.inventory.ledger import BalanceKey, Move, balance_changes
from taktline_cloud.inventory.lots import LotBalance, allocate, lot_changes
from taktline_cloud.inventory.reservations import CONSUMPTION, Reservation
from taktline_cloud.inventory.valuation import average_after_receipt, move_value
from taktline_cloud.org.hierarchy import OrgNode
from taktline_cloud.org.plant import ItemRef, LineRef, MachineRef, PlantModel
from taktline_cloud.production.counters import Checkpoint, CounterPoint
from taktline_cloud.production.posting import BomLine, PostingPlaces
from taktline_cloud.production.work_orders import WorkOrder, WorkOrderStatus
from taktline_cloud.readmodels import LedgerRow, NodeChangeRow, NodeRow, PromiseRow
from taktline_cloud.storage.sql import (
    Dialect,
    to_date,
    to_datetime,
    to_datetime_or_none,
    to_decimal,
)

_INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)
_SAMPLE_COLUMNS = (
    "machine",
    "metric",
    "ts",
    "value_num",
    "value_bool",
    "value_text",
    "is_historical",
)


class Executor(ABC):
    """A connection of one backend: statements are written with `?` parameters."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    @abstractmethod
    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a statement."""

    @abstractmethod
    def execute(self, statement: str, params: Sequence[object] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> int:
        """Run a statement once per parameter row; the number of rows changed in all."""

    @abstractmethod
    def transaction(self, write: bool) -> AbstractContextManager[None]:
        """Commit at the end of the block, roll back when it raises."""

    @abstractmethod
    def try_execute(self, statements: list[str]) -> bool:
        """Run statements in a savepoint; False (rolled back, logged) when one fails."""

    @property
    @abstractmethod
    def usable(self) -> bool:
        """False when the connection is broken and must be opened again."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def extension_available(self, name: str) -> bool:
        """True when PostgreSQL can install extension `name` (always False on SQLite)."""
        if self.dialect.backend != "postgresql":
            return False
        return bool(self.query("SELECT 1 FROM pg_available_extensions WHERE name = ?", (name,)))

    def insert_ignoring_duplicates(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> int:
        """Insert rows; a row whose key exists is skipped. Returns how many were inserted."""
        placeholders = ", ".join("?" for _ in columns)
        return self.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
            " ON CONFLICT DO NOTHING",
            rows,
        )


def _sample_value(value: SampleValue) -> tuple[Decimal | None, bool | None, str | None]:
    if isinstance(value, bool):
        return None, value, None
    if isinstance(value, Decimal):
        return value, None, None
    if isinstance(value, str):
        return None, None, value
    return None, None, None


def _stored_value(number: Any, flag: Any, text: Any) -> SampleValue:
    if number is not None:
        return to_decimal(number)
    if flag is not None:
        return bool(flag)
    if text is not None:
        return str(text)
    return None


def _work_order(row: Sequence[Any]) -> WorkOrder:
    try:
        status = WorkOrderStatus(row[4])
    except ValueError as exc:
        raise StorageError(f"work order {row[0]} has unknown status {row[4]!r}") from exc
    return WorkOrder(
        number=row[0],
        item=row[1],
        line=row[2],
        quantity=to_decimal(row[3]),
        status=status,
        created_at=to_datetime(row[5]),
        released_at=to_datetime_or_none(row[6]),
        started_at=to_datetime_or_none(row[7]),
        completed_at=to_datetime_or_none(row[8]),
        good=to_decimal(row[9]),
        scrap=to_decimal(row[10]),
    )


_RESERVATION_COLUMNS = (
    "id, item, location, demand, quantity, open_quantity, consumed, created_at, closed_at"
)


def _reservation(row: Sequence[Any]) -> Reservation:
    return Reservation(
        id=int(row[0]),
        item=row[1],
        location=row[2],
        demand=row[3],
        quantity=to_decimal(row[4]),
        open=to_decimal(row[5]),
        consumed=to_decimal(row[6]),
        created_at=to_datetime(row[7]),
        closed_at=to_datetime_or_none(row[8]),
    )


_WO_COLUMNS = (
    "number, item, line, quantity, status, created_at, released_at, started_at, completed_at,"
    " good, scrap"
)

_MRP_RESULT_TABLES = ("mrp_planned_orders", "mrp_pegs", "mrp_exceptions", "mrp_demand_sources")
"""The tables of the latest MRP result, each with a row's `item` column."""
_MRP_ITEMS_PER_DELETE = 500
"""Items per `DELETE ... WHERE item IN (...)` (well under SQLite's bound-parameter limit)."""


@dataclass(frozen=True, slots=True)
class SalesLine:
    """A sales order line with its current promise (as stored)."""

    order: str
    line: int
    customer: str
    item: str
    quantity: Decimal
    requested_date: date
    promised_at: datetime | None
    promise_kind: str | None
    promise_reason: str
    is_open: bool = True
    cancelled_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SalesLine:
        """From the columns of `Session.sales_lines`."""
        return cls(
            order=row[0],
            line=int(row[1]),
            customer=row[2],
            item=row[3],
            quantity=to_decimal(row[4]),
            requested_date=to_date(row[5]),
            promised_at=to_datetime_or_none(row[6]),
            promise_kind=row[7],
            promise_reason=row[8],
            is_open=bool(row[9]) if len(row) > 9 else True,
            cancelled_at=to_datetime_or_none(row[10]) if len(row) > 10 else None,
        )


class Session:
    """Queries and writes of one transaction."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._x = executor

    # --- master data -------------------------------------------------------------------------

    def upsert_org_node(self, node: OrgNode) -> None:
        """Insert or update one node of the hierarchy."""
        parent_level = str(node.parent[0]) if node.parent else None
        parent_code = node.parent[1] if node.parent else None
        self._x.execute(
            "INSERT INTO org_nodes (level, code, name, parent_level, parent_code)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (level, code) DO UPDATE SET name = excluded.name,"
            " parent_level = excluded.parent_level, parent_code = excluded.parent_code",
            (str(node.level), node.code, node.name, parent_level, parent_code),
        )

    def org_nodes(self) -> list[tuple[str, str, str, str | None, str | None]]:
        """(level, code, name, parent level, parent code) of every node."""
        return [
            (r[0], r[1], r[2], r[3], r[4])
            for r in self._x.query(
                "SELECT level, code, name, parent_level, parent_code FROM org_nodes"
                " ORDER BY level, code"
            )
        ]

    def upsert_location(
        self, code: str, name: str, kind: str, *, allow_negative: bool | None = None
    ) -> None:
        """Insert or update a stock location (`allow_negative` None: the kind's default)."""
        if allow_negative is None:
            allow_negative = allows_negative_by_default(kind)
        self._x.execute(
            "INSERT INTO locations (code, name, kind, allow_negative) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind,"
            " allow_negative = excluded.allow_negative",
            (code, name, kind, allow_negative),
        )

    def negative_allowed(self) -> dict[str, bool]:
        """Whether each location (by code) may hold negative stock."""
        return {
            r[0]: bool(r[1]) for r in self._x.query("SELECT code, allow_negative FROM locations")
        }

    def upsert_item(self, item: ItemRef) -> None:
        """Insert or update an item."""
        self._x.execute(
            "INSERT INTO items (sku, name, kind, uom) VALUES (?, ?, ?, ?) ON CONFLICT (sku)"
            " DO UPDATE SET name = excluded.name, kind = excluded.kind, uom = excluded.uom",
            (item.sku, item.name, item.kind, item.uom),
        )

    def replace_bom(self, parent: str, lines: Sequence[BomLine]) -> None:
        """Make the BOM of `parent` exactly `lines`."""
        keep = [line.component for line in lines]
        existing = {
            r[0]
            for r in self._x.query("SELECT component FROM bom_lines WHERE parent = ?", (parent,))
        }
        for component in existing - set(keep):
            self._x.execute(
                "DELETE FROM bom_lines WHERE parent = ? AND component = ?", (parent, component)
            )
        for line in lines:
            self._x.execute(
                "INSERT INTO bom_lines (parent, component, quantity) VALUES (?, ?, ?)"
                " ON CONFLICT (parent, component) DO UPDATE SET quantity = excluded.quantity",
                (parent, line.component, line.quantity),
            )

    def upsert_plant(
        self, code: str, name: str, places: PostingPlaces, inventory_location: str
    ) -> None:
        """Insert or update the plant and where its lines draw and put stock."""
        self._x.execute(
            "INSERT INTO plants (code, name, component_location, finished_location,"
            " production_location, inventory_location) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (code) DO UPDATE SET name = excluded.name,"
            " component_location = excluded.component_location,"
            " finished_location = excluded.finished_location,"
            " production_location = excluded.production_location,"
            " inventory_location = excluded.inventory_location",
            (code, name, places.components, places.finished, places.production, inventory_location),
        )

    def upsert_line(self, plant: str, line: LineRef, work_centre: str) -> None:
        """Insert or update a line and its machines (positions in flow order)."""
        self._x.execute(
            "INSERT INTO lines (code, name, plant, gateway, work_centre, standard_rate_per_hour)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET name = excluded.name,"
            " plant = excluded.plant, gateway = excluded.gateway,"
            " work_centre = excluded.work_centre,"
            " standard_rate_per_hour = excluded.standard_rate_per_hour",
            (line.code, line.name, plant, line.gateway, work_centre, line.standard_rate_per_hour),
        )
        for position, machine in enumerate(line.machines, start=1):
            self._x.execute(
                "INSERT INTO machines (code, name, line, position) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (code) DO UPDATE SET name = excluded.name, line = excluded.line,"
                " position = excluded.position",
                (machine.code, machine.name, line.code, position),
            )

    def upsert_customer(self, code: str, name: str) -> None:
        """Insert or update a customer."""
        self._x.execute(
            "INSERT INTO customers (code, name) VALUES (?, ?)"
            " ON CONFLICT (code) DO UPDATE SET name = excluded.name",
            (code, name),
        )

    def plant_model(self) -> PlantModel | None:
        """The master data the service works with (None before the first load)."""
        plants = self._x.query(
            "SELECT code, name, component_location, finished_location, production_location,"
            " inventory_location FROM plants ORDER BY code"
        )
        if not plants:
            return None
        if len(plants) > 1:
            raise StorageError("more than one plant is stored; this version runs one plant")
        code, name, components, finished, production, inventory = plants[0]
        machines: dict[str, list[MachineRef]] = {}
        for m_code, m_name, m_line in self._x.query(
            "SELECT code, name, line FROM machines ORDER BY line, position, code"
        ):
            machines.setdefault(m_line, []).append(MachineRef(m_code, m_name, m_line))
        lines = {
            r[0]: LineRef(r[0], r[1], r[2], to_decimal(r[3]), tuple(machines.get(r[0], [])))
            for r in self._x.query(
                "SELECT code, name, gateway, standard_rate_per_hour FROM lines WHERE plant = ?"
                " ORDER BY code",
                (code,),
            )
        }
        items = {
            r[0]: ItemRef(r[0], r[1], r[2], r[3])
            for r in self._x.query("SELECT sku, name, kind, uom FROM items ORDER BY sku")
        }
        boms: dict[str, list[BomLine]] = {}
        for parent, component, quantity in self._x.query(
            "SELECT parent, component, quantity FROM bom_lines ORDER BY parent, component"
        ):
            boms.setdefault(parent, []).append(BomLine(component, to_decimal(quantity)))
        return PlantModel(
            code=code,
            name=name,
            places=PostingPlaces(production=production, components=components, finished=finished),
            inventory_location=inventory,
            lines=lines,
            items=items,
            boms={parent: tuple(entries) for parent, entries in boms.items()},
        )

    def location_kinds(self) -> dict[str, str]:
        """Kind of every location by code."""
        return {r[0]: r[1] for r in self._x.query("SELECT code, kind FROM locations")}

    # --- historian ---------------------------------------------------------------------------

    def insert_samples(self, samples: Sequence[Sample]) -> int:
        """Store samples; one already stored under its key is skipped. Returns how many were new."""
        # Numbers are nearly every sample: their row is built without a call.
        rows = [
            (s.machine, s.metric, s.timestamp, s.value, None, None, s.is_historical)
            if type(s.value) is Decimal
            else (s.machine, s.metric, s.timestamp, *_sample_value(s.value), s.is_historical)
            for s in samples
        ]
        return self._x.insert_ignoring_duplicates("samples", _SAMPLE_COLUMNS, rows)

    def counter_series(
        self, machine: str, metric: str, start: datetime, end: datetime | None
    ) -> list[CounterPoint]:
        """The last numeric reading at or before `start`, then every one in (start, end]."""
        # One round trip (it runs for every running order on every posting): the baseline's
        # ts <= start < every later one's, so ordering the union by ts keeps it first.
        statement = (
            "SELECT ts, value_num FROM (SELECT ts, value_num FROM samples WHERE machine = ?"
            " AND metric = ? AND ts <= ? AND value_num IS NOT NULL ORDER BY ts DESC LIMIT 1)"
            " AS baseline UNION ALL SELECT ts, value_num FROM samples WHERE machine = ?"
            " AND metric = ? AND ts > ? AND value_num IS NOT NULL"
        )
        params: list[object] = [machine, metric, start, machine, metric, start]
        if end is not None:
            statement += " AND ts <= ?"
            params.append(end)
        rows = self._x.query(statement + " ORDER BY ts", params)
        return [(to_datetime(ts), to_decimal(value)) for ts, value in rows]

    def samples(self, machine: str, metric: str) -> list[Sample]:
        """Every stored sample of one metric, by time (for inspection and tests)."""
        return [
            Sample(machine, metric, to_datetime(r[0]), _stored_value(r[1], r[2], r[3]), bool(r[4]))
            for r in self._x.query(
                "SELECT ts, value_num, value_bool, value_text, is_historical FROM samples"
                " WHERE machine = ? AND metric = ? ORDER BY ts",
                (machine, metric),
            )
        ]

    def latest_values(self, machines: Iterable[str] | None = None) -> dict[LatestKey, Latest]:
        """The stored newest value per (machine, metric), for some machines or all."""
        rows = self._x.query(
            "SELECT machine, metric, ts, value_num, value_bool, value_text FROM latest_values"
        )
        wanted = None if machines is None else set(machines)
        return {
            (r[0], r[1]): Latest(to_datetime(r[2]), _stored_value(r[3], r[4], r[5]))
            for r in rows
            if wanted is None or r[0] in wanted
        }

    def store_latest(self, values: Mapping[LatestKey, Latest]) -> None:
        """Replace the newest values of these (machine, metric) keys."""
        self._x.executemany(
            "INSERT INTO latest_values (machine, metric, ts, value_num, value_bool, value_text)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (machine, metric) DO UPDATE SET"
            " ts = excluded.ts, value_num = excluded.value_num,"
            " value_bool = excluded.value_bool, value_text = excluded.value_text",
            [
                (machine, metric, latest.timestamp, *_sample_value(latest.value))
                for (machine, metric), latest in values.items()
            ],
        )

    # --- node status -------------------------------------------------------------------------

    def node_statuses(self, edge_node: str | None = None) -> list[NodeRow]:
        """Online status of edge nodes and devices (of one node, or all)."""
        statement = "SELECT edge_node, device, online, since FROM node_status"
        params: tuple[object, ...] = ()
        if edge_node is not None:
            statement += " WHERE edge_node = ?"
            params = (edge_node,)
        return [
            NodeRow(edge_node=r[0], device=r[1] or None, online=bool(r[2]), since=to_datetime(r[3]))
            for r in self._x.query(statement + " ORDER BY edge_node, device", params)
        ]

    def set_node_status(
        self, edge_node: str, device: str | None, online: bool, since: datetime
    ) -> NodeRow:
        """Record that a node (device None) or device went online or offline at `since`."""
        self._x.execute(
            "INSERT INTO node_status (edge_node, device, online, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (edge_node, device) DO UPDATE SET online = excluded.online,"
            " since = excluded.since",
            (edge_node, device or "", online, since),
        )
        return NodeRow(edge_node=edge_node, device=device, online=online, since=since)

    # --- work orders -------------------------------------------------------------------------

    def work_order(self, number: str, *, lock: bool = False) -> WorkOrder | None:
        """The work order with this number, if any (`lock`: see `work_orders`)."""
        rows = self._x.query(
            f"SELECT {_WO_COLUMNS} FROM work_orders WHERE number = ?" + self._for_update(lock),
            (number,),
        )
        return _work_order(rows[0]) if rows else None

    def work_orders(
        self,
        statuses: Iterable[WorkOrderStatus] | None = None,
        lines: Iterable[str] | None = None,
        *,
        lock: bool = False,
    ) -> list[WorkOrder]:
        """Work orders, optionally only in some states / on some lines, in creation order.

        `lock` takes their rows for this transaction (PostgreSQL: FOR UPDATE), so two writers
        never post the same order from the same booked quantities; SQLite has one writer.
        """
        statement = f"SELECT {_WO_COLUMNS} FROM work_orders"
        params: list[object] = []
        if statuses is not None:
            wanted = sorted(str(s) for s in statuses)
            if not wanted:
                return []
            statement += f" WHERE status IN ({', '.join('?' for _ in wanted)})"
            params += wanted
        statement += " ORDER BY created_at, number" + self._for_update(lock)
        wanted_lines = None if lines is None else set(lines)
        return [
            wo
            for wo in (_work_order(r) for r in self._x.query(statement, params))
            if wanted_lines is None or wo.line in wanted_lines
        ]

    def _for_update(self, lock: bool) -> str:
        return " FOR UPDATE" if lock and self._x.dialect.backend == "postgresql" else ""

    def checkpoint(self, work_order: str, machine: str, metric: str) -> Checkpoint | None:
        """Where counting this order's counter can resume, if anywhere."""
        rows = self._x.query(
            "SELECT through, counted FROM counter_checkpoints WHERE work_order = ?"
            " AND machine = ? AND metric = ?",
            (work_order, machine, metric),
        )
        return Checkpoint(to_datetime(rows[0][0]), to_decimal(rows[0][1])) if rows else None

    def save_checkpoint(
        self, work_order: str, machine: str, metric: str, checkpoint: Checkpoint
    ) -> None:
        """Remember where counting this order's counter can resume."""
        self._x.execute(
            "INSERT INTO counter_checkpoints (work_order, machine, metric, through, counted)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (work_order, machine, metric) DO UPDATE SET"
            " through = excluded.through, counted = excluded.counted",
            (work_order, machine, metric, checkpoint.through, checkpoint.counted),
        )

    def work_order_numbers(self) -> list[str]:
        """Every work order number."""
        return [r[0] for r in self._x.query("SELECT number FROM work_orders")]

    def insert_work_order(self, wo: WorkOrder) -> None:
        """Store a new work order; Conflict when its number is taken."""
        try:
            self._x.execute(
                f"INSERT INTO work_orders ({_WO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    wo.number,
                    wo.item,
                    wo.line,
                    wo.quantity,
                    str(wo.status),
                    wo.created_at,
                    wo.released_at,
                    wo.started_at,
                    wo.completed_at,
                    wo.good,
                    wo.scrap,
                ),
            )
        except _INTEGRITY_ERRORS as exc:
            raise Conflict(f"work order {wo.number} cannot be stored: {exc}") from exc

    def update_work_order(self, wo: WorkOrder) -> None:
        """Store a work order's status, times and booked counts."""
        try:
            self._x.execute(
                "UPDATE work_orders SET status = ?, released_at = ?, started_at = ?,"
                " completed_at = ?, good = ?, scrap = ? WHERE number = ?",
                (
                    str(wo.status),
                    wo.released_at,
                    wo.started_at,
                    wo.completed_at,
                    wo.good,
                    wo.scrap,
                    wo.number,
                ),
            )
        except _INTEGRITY_ERRORS as exc:
            raise Conflict(f"work order {wo.number} cannot become {wo.status}: {exc}") from exc

    # --- stock ledger ------------------------------------------------------------------------

    def append_moves(
        self, moves: Sequence[Move], *, book_shortage: bool = False
    ) -> list[LedgerRow]:
        """Append moves to the ledger and apply them to the balances (same transaction).

        Conflict (and nothing booked, once the transaction rolls back) when a move would take a
        location that refuses negative stock below zero or into its reserved stock, unless
        `book_shortage`: a fact that already happened (a posted PLC count) is booked anyway.
        """
        # Valued against the stores as they were, then balances: a refused move is refused
        # before anything is written.
        costs = self._value_moves(moves)
        self._apply_balances(balance_changes(moves), book_shortage)
        self._apply_lot_balances(moves, book_shortage)
        rows: list[LedgerRow] = []
        for move, unit_cost in zip(moves, costs, strict=True):
            value = move_value(move.quantity, unit_cost)
            inserted = self._x.query(
                "INSERT INTO stock_moves (at, item, from_location, to_location, quantity, reason,"
                " reference, unit_cost, value, lot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    move.at,
                    move.item,
                    move.from_location,
                    move.to_location,
                    move.quantity,
                    move.reason,
                    move.reference,
                    unit_cost,
                    value,
                    move.lot,
                ),
            )
            rows.append(
                LedgerRow(
                    id=int(inserted[0][0]),
                    at=move.at,
                    item=move.item,
                    from_location=move.from_location,
                    to_location=move.to_location,
                    quantity=move.quantity,
                    reason=move.reason,
                    reference=move.reference,
                    unit_cost=unit_cost,
                    value=value,
                    lot=move.lot,
                )
            )
        return rows

    def _value_moves(self, moves: Sequence[Move]) -> list[Decimal]:
        """The unit cost of each move, in order; receipts at a cost move their item's average.

        The average's row is locked (PostgreSQL) while a receipt moves it, so two receipts of
        one item average one after the other.
        """
        kinds = self.location_kinds()
        averages: dict[str, Decimal] = {}
        stocked: dict[str, Decimal] = {}
        moved: set[str] = set()
        for item in sorted({m.item for m in moves}):
            costed = any(m.unit_cost is not None for m in moves if m.item == item)
            averages[item] = self.unit_cost(item, lock=costed)
            if costed:
                stocked[item] = self._internal_on_hand(item)
        costs: list[Decimal] = []
        for move in moves:
            inside_from = kinds.get(move.from_location) == "internal"
            inside_to = kinds.get(move.to_location) == "internal"
            if move.unit_cost is None:
                costs.append(averages[move.item])
            elif inside_to and not inside_from:
                on_hand = stocked[move.item]
                averages[move.item] = average_after_receipt(
                    on_hand, averages[move.item], move.quantity, move.unit_cost
                )
                moved.add(move.item)
                costs.append(move.unit_cost)
            else:
                raise Invalid(
                    f"stock move of {move.item} from {move.from_location} to"
                    f" {move.to_location}: a unit cost is given only for a receipt into a store"
                )
            if move.item in stocked:
                change = Decimal(inside_to) - Decimal(inside_from)
                stocked[move.item] += change * move.quantity
        for item in sorted(moved):
            self._x.execute(
                "INSERT INTO item_costs (item, unit_cost, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (item) DO UPDATE SET unit_cost = excluded.unit_cost,"
                " updated_at = excluded.updated_at",
                (item, averages[item], max(m.at for m in moves if m.item == item)),
            )
        return costs

    def _internal_on_hand(self, item: str) -> Decimal:
        """On hand of `item` in all the plant's stores together."""
        rows = self._x.query(
            "SELECT b.on_hand FROM stock_balances b JOIN locations l ON l.code = b.location"
            " WHERE b.item = ? AND l.kind = 'internal'",
            (item,),
        )
        return sum((to_decimal(r[0]) for r in rows), Decimal(0))

    def unit_cost(self, item: str, *, lock: bool = False) -> Decimal:
        """The moving-average cost of one unit of `item` (0 before any costed receipt)."""
        if lock and self._x.dialect.backend == "postgresql":
            # A row to lock even before the first receipt (no update: it keeps its value).
            self._x.execute(
                "INSERT INTO item_costs (item, unit_cost, updated_at) VALUES (?, 0, now())"
                " ON CONFLICT (item) DO NOTHING",
                (item,),
            )
        rows = self._x.query(
            "SELECT unit_cost FROM item_costs WHERE item = ?" + self._for_update(lock), (item,)
        )
        return to_decimal(rows[0][0]) if rows else Decimal(0)

    def unit_costs(self) -> dict[str, Decimal]:
        """The moving-average cost of every item that has one."""
        return {
            r[0]: to_decimal(r[1]) for r in self._x.query("SELECT item, unit_cost FROM item_costs")
        }

    def _apply_balances(self, changes: Mapping[BalanceKey, Decimal], book_shortage: bool) -> None:
        negative_allowed = {} if book_shortage else self.negative_allowed()
        # In sorted order, so concurrent writers lock balance rows in the same order.
        for (item, location), change in sorted(changes.items()):
            if not change:
                continue
            if change < 0 and not book_shortage and not negative_allowed.get(location, False):
                # Row locked (PostgreSQL) before the check: a concurrent move or reservation
                # of the same stock waits for this transaction and then sees its result.
                self.balance(item, location, lock=True).check_outflow(-change)
            self._add_to_balance(item, location, change, Decimal(0))

    def _add_to_balance(
        self, item: str, location: str, on_hand: Decimal, reserved: Decimal
    ) -> None:
        """Add to the on-hand and reserved of one balance (created when missing)."""
        if self._x.dialect.backend == "postgresql":
            # Atomic statements: concurrent postings to one balance cannot lose an update. An
            # UPDATE first: an upsert's proposed row must pass the CHECKs itself, and a
            # negative `reserved` change (release, consumption) would not.
            if self._x.execute(
                "UPDATE stock_balances SET on_hand = on_hand + ?, reserved = reserved + ?"
                " WHERE item = ? AND location = ?",
                (on_hand, reserved, item, location),
            ):
                return
            self._x.execute(
                "INSERT INTO stock_balances (item, location, on_hand, reserved)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (item, location) DO UPDATE SET"
                " on_hand = stock_balances.on_hand + excluded.on_hand,"
                " reserved = stock_balances.reserved + excluded.reserved",
                (item, location, on_hand, reserved),
            )
            return
        # SQLite holds decimals as TEXT (it would add them as floats): added up in Python,
        # safe because BEGIN IMMEDIATE makes each write transaction the only writer.
        current = self._x.query(
            "SELECT on_hand, reserved FROM stock_balances WHERE item = ? AND location = ?",
            (item, location),
        )
        if current:
            self._x.execute(
                "UPDATE stock_balances SET on_hand = ?, reserved = ?"
                " WHERE item = ? AND location = ?",
                (
                    to_decimal(current[0][0]) + on_hand,
                    to_decimal(current[0][1]) + reserved,
                    item,
                    location,
                ),
            )
        else:
            self._x.execute(
                "INSERT INTO stock_balances (item, location, on_hand, reserved)"
                " VALUES (?, ?, ?, ?)",
                (item, location, on_hand, reserved),
            )

    def balance(self, item: str, location: str, *, lock: bool = False) -> Balance:
        """On-hand and reserved of one item at one location (`lock`: FOR UPDATE on PostgreSQL,
        so a check made on it holds until the transaction ends; SQLite has one writer)."""
        rows = self._x.query(
            "SELECT on_hand, reserved FROM stock_balances WHERE item = ? AND location = ?"
            + self._for_update(lock),
            (item, location),
        )
        if not rows:
            return Balance(item, location)
        return Balance(item, location, to_decimal(rows[0][0]), to_decimal(rows[0][1]))

    def balance_rows(self, item: str | None = None, location: str | None = None) -> list[Balance]:
        """Balances by item and location (of one item and/or location, or all)."""
        where, params = _equal_to((("item", item), ("location", location)))
        statement = "SELECT item, location, on_hand, reserved FROM stock_balances"
        if where:
            statement += " WHERE " + " AND ".join(where)
        return [
            Balance(r[0], r[1], to_decimal(r[2]), to_decimal(r[3]))
            for r in self._x.query(statement + " ORDER BY item, location", params)
        ]

    # --- lots (inventory.lots) ---------------------------------------------------------------

    def _apply_lot_balances(self, moves: Sequence[Move], book_shortage: bool) -> None:
        """Apply the moves that carry a lot to the lot balances (lots are created on first use).

        After `_apply_balances`: every writer locks the item's balance rows before its lot rows.
        """
        changes = lot_changes(moves)
        if not changes:
            return
        first_seen: dict[tuple[str, str], datetime] = {}
        for move in moves:
            if move.lot is not None:
                key = (move.item, move.lot)
                first_seen[key] = min(first_seen.get(key, move.at), move.at)
        for (item, lot), at in sorted(first_seen.items()):
            self._x.execute(
                "INSERT INTO lots (item, code, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (item, code) DO NOTHING",
                (item, lot, at),
            )
        negative_allowed = {} if book_shortage else self.negative_allowed()
        for (item, location, lot), change in sorted(changes.items()):
            if not change:
                continue
            if change < 0 and not book_shortage and not negative_allowed.get(location, False):
                self.lot_balance(item, location, lot, lock=True).check_outflow(-change)
            self._add_to_lot_balance(item, location, lot, change)

    def _add_to_lot_balance(self, item: str, location: str, lot: str, change: Decimal) -> None:
        """Add to one lot balance (created when missing); atomic on PostgreSQL, in Python on
        SQLite (one writer), as `_add_to_balance`."""
        if self._x.dialect.backend == "postgresql":
            self._x.execute(
                "INSERT INTO stock_lot_balances (item, location, lot, on_hand) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (item, location, lot) DO UPDATE SET"
                " on_hand = stock_lot_balances.on_hand + excluded.on_hand",
                (item, location, lot, change),
            )
            return
        current = self.lot_balance(item, location, lot)
        self._x.execute(
            "INSERT INTO stock_lot_balances (item, location, lot, on_hand) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (item, location, lot) DO UPDATE SET on_hand = excluded.on_hand",
            (item, location, lot, current.on_hand + change),
        )

    def lot_balance(self, item: str, location: str, lot: str, *, lock: bool = False) -> LotBalance:
        """On hand of one lot of an item at one location (`lock`: see `balance`)."""
        rows = self._x.query(
            "SELECT on_hand FROM stock_lot_balances WHERE item = ? AND location = ? AND lot = ?"
            + self._for_update(lock),
            (item, location, lot),
        )
        return LotBalance(item, location, lot, to_decimal(rows[0][0]) if rows else Decimal(0))

    def lot_balances(
        self, item: str | None = None, location: str | None = None
    ) -> list[LotBalance]:
        """Lot balances (of one item and/or location, or all), by item, location and then
        the lots oldest first (FIFO order)."""
        where, params = _equal_to((("b.item", item), ("b.location", location)))
        statement = (
            "SELECT b.item, b.location, b.lot, b.on_hand FROM stock_lot_balances b"
            " JOIN lots l ON l.item = b.item AND l.code = b.lot"
        )
        if where:
            statement += " WHERE " + " AND ".join(where)
        return [
            LotBalance(r[0], r[1], r[2], to_decimal(r[3]))
            for r in self._x.query(statement + " ORDER BY b.item, b.location, l.id", params)
        ]

    def lot_exists(self, item: str, lot: str) -> bool:
        """True when `lot` is a lot of `item` (some move carried it)."""
        return bool(self._x.query("SELECT 1 FROM lots WHERE item = ? AND code = ?", (item, lot)))

    def split_by_lots(self, moves: Sequence[Move]) -> list[Move]:
        """The moves, each one without a lot out of a store that keeps lots of its item split
        FIFO (`lots.allocate`: stock without a lot first, then the lots oldest first, the rest
        without a lot). Moves in one call draw on one another's allocation."""
        kinds = self.location_kinds()
        held: dict[tuple[str, str], tuple[Decimal, list[tuple[str, Decimal]]]] = {}
        result: list[Move] = []
        for move in moves:
            key = (move.item, move.from_location)
            if move.lot is not None or kinds.get(move.from_location) != "internal":
                result.append(move)
                continue
            if key not in held:
                lots = [(b.lot, b.on_hand) for b in self.lot_balances(*key) if b.on_hand > 0]
                on_hand = self.balance(*key).on_hand
                held[key] = (on_hand - sum((q for _, q in lots), Decimal(0)), lots)
            unlotted, lots = held[key]
            if not lots:
                result.append(move)
                continue
            parts = allocate(move.quantity, unlotted, lots)
            for lot, quantity in parts:
                result.append(replace(move, quantity=quantity, lot=lot))
                if lot is None:
                    unlotted -= quantity
                else:
                    lots = [(c, q - quantity if c == lot else q) for c, q in lots]
            held[key] = (unlotted, [(c, q) for c, q in lots if q > 0])
        return result

    def adjustment_approval_value(self, plant: str) -> Decimal:
        """The plant's threshold: a count's adjustment worth more waits for approval."""
        rows = self._x.query(
            "SELECT adjustment_approval_value FROM plants WHERE code = ?", (plant,)
        )
        if not rows:
            raise StorageError(f"no plant {plant!r}")
        return to_decimal(rows[0][0])

    def set_adjustment_approval_value(self, plant: str, value: Decimal) -> None:
        """Store the plant's adjustment approval threshold."""
        self._x.execute(
            "UPDATE plants SET adjustment_approval_value = ? WHERE code = ?", (value, plant)
        )

    # --- reservations ------------------------------------------------------------------------

    def reserve(
        self, item: str, location: str, demand: str, quantity: Decimal, at: datetime
    ) -> Reservation:
        """Hold `quantity` of what is available for `demand`; Conflict when not available."""
        self.balance(item, location, lock=True).check_reservation(quantity)
        self._add_to_balance(item, location, Decimal(0), quantity)
        inserted = self._x.query(
            "INSERT INTO reservations (item, location, demand, quantity, open_quantity,"
            " consumed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (item, location, demand, quantity, quantity, Decimal(0), at),
        )
        return Reservation(
            int(inserted[0][0]), item, location, demand, quantity, quantity, Decimal(0), at, None
        )

    def reservation(self, number: int, *, lock: bool = False) -> Reservation | None:
        """The reservation with this id, if any (`lock`: see `balance`)."""
        rows = self._x.query(
            f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE id = ?"
            + self._for_update(lock),
            (number,),
        )
        return _reservation(rows[0]) if rows else None

    def reservations(
        self,
        *,
        item: str | None = None,
        location: str | None = None,
        demand: str | None = None,
        open_only: bool = True,
    ) -> list[Reservation]:
        """Reservations, oldest first (open ones only unless `open_only` is False)."""
        where, params = _equal_to((("item", item), ("location", location), ("demand", demand)))
        if open_only:
            where.append("closed_at IS NULL")
        statement = f"SELECT {_RESERVATION_COLUMNS} FROM reservations"
        if where:
            statement += " WHERE " + " AND ".join(where)
        return [_reservation(r) for r in self._x.query(statement + " ORDER BY id", params)]

    def _take_from_reservation(
        self, reservation: Reservation, quantity: Decimal, consumed: bool, at: datetime
    ) -> Reservation:
        """Reduce an open reservation (and its balance's reserved) by `quantity`."""
        left = reservation.open - quantity
        used = reservation.consumed + (quantity if consumed else Decimal(0))
        closed_at = at if left == 0 else None
        self._x.execute(
            "UPDATE reservations SET open_quantity = ?, consumed = ?, closed_at = ? WHERE id = ?",
            (left, used, closed_at, reservation.id),
        )
        self._add_to_balance(reservation.item, reservation.location, Decimal(0), -quantity)
        return Reservation(
            reservation.id,
            reservation.item,
            reservation.location,
            reservation.demand,
            reservation.quantity,
            left,
            used,
            reservation.created_at,
            closed_at,
        )

    def release_reservation(self, reservation: Reservation, at: datetime) -> Reservation:
        """Give back what the (open, locked) reservation still holds."""
        self.balance(reservation.item, reservation.location, lock=True)
        return self._take_from_reservation(reservation, reservation.open, False, at)

    def consume_reservation(
        self, reservation: Reservation, quantity: Decimal, to_location: str, at: datetime
    ) -> tuple[Reservation, LedgerRow]:
        """Turn `quantity` of the (open, locked) reservation into a move to `to_location`,
        split FIFO over the store's lots (`lots.allocate`); the first of its ledger rows."""
        self.balance(reservation.item, reservation.location, lock=True)
        taken = self._take_from_reservation(reservation, quantity, True, at)
        move = Move(
            reservation.item,
            reservation.location,
            to_location,
            quantity,
            CONSUMPTION,
            reservation.demand,
            at,
        )
        rows = self.append_moves(self.split_by_lots([move]))
        return taken, rows[0]

    def draw_reservations(
        self, item: str, location: str, demand: str, quantity: Decimal, at: datetime
    ) -> Decimal:
        """A posted consumption of `demand` uses up its open reservations of `item` at
        `location`, oldest first, up to `quantity`; how much they held of it."""
        drawn = Decimal(0)
        for reservation in self.reservations(item=item, location=location, demand=demand):
            if drawn >= quantity:
                break
            locked = self.reservation(reservation.id, lock=True)
            if locked is None or locked.closed_at is not None:
                continue
            take = min(locked.open, quantity - drawn)
            self._take_from_reservation(locked, take, True, at)
            drawn += take
        return drawn

    def has_moves(self, item: str, location: str, reason: str) -> bool:
        """True when a move of `reason` already brought `item` into `location`."""
        return bool(
            self._x.query(
                "SELECT 1 FROM stock_moves WHERE item = ? AND to_location = ? AND reason = ?"
                " LIMIT 1",
                (item, location, reason),
            )
        )

    def balances(self) -> dict[BalanceKey, Decimal]:
        """On-hand per (item, location), every location (virtual ones included)."""
        return {
            (r[0], r[1]): to_decimal(r[2])
            for r in self._x.query(
                "SELECT item, location, on_hand FROM stock_balances ORDER BY item, location"
            )
        }

    def on_hand(self, item: str, location: str) -> Decimal:
        """On-hand of one item at one location."""
        rows = self._x.query(
            "SELECT on_hand FROM stock_balances WHERE item = ? AND location = ?", (item, location)
        )
        return to_decimal(rows[0][0]) if rows else Decimal(0)

    def on_hand_by_item(self, location: str) -> dict[str, Decimal]:
        """On-hand of every item with a balance at one location (an item without one: none)."""
        return {
            r[0]: to_decimal(r[1])
            for r in self._x.query(
                "SELECT item, on_hand FROM stock_balances WHERE location = ?", (location,)
            )
        }

    def open_sales_items(self) -> set[str]:
        """The items of the open sales order lines."""
        return {
            r[0]
            for r in self._x.query(
                "SELECT DISTINCT item FROM sales_order_lines WHERE is_open = ?", (True,)
            )
        }

    def ledger(self, item: str | None = None, limit: int | None = 200) -> list[LedgerRow]:
        """Ledger entries, newest first (of one item, or all)."""
        statement = (
            "SELECT id, at, item, from_location, to_location, quantity, reason, reference,"
            " unit_cost, value, lot FROM stock_moves"
        )
        params: list[object] = []
        if item is not None:
            statement += " WHERE item = ?"
            params.append(item)
        statement += " ORDER BY id DESC"
        if limit is not None:
            statement += " LIMIT ?"
            params.append(limit)
        return [
            LedgerRow(
                id=int(r[0]),
                at=to_datetime(r[1]),
                item=r[2],
                from_location=r[3],
                to_location=r[4],
                quantity=to_decimal(r[5]),
                reason=r[6],
                reference=r[7],
                unit_cost=to_decimal(r[8]),
                value=to_decimal(r[9]),
                lot=r[10],
            )
            for r in self._x.query(statement, params)
        ]

    # --- sales -------------------------------------------------------------------------------

    def sales_order_exists(self, number: str) -> bool:
        """True when the sales order is stored."""
        return bool(self._x.query("SELECT 1 FROM sales_orders WHERE number = ?", (number,)))

    def insert_sales_order(
        self,
        number: str,
        customer: str,
        created_at: datetime,
        lines: Sequence[tuple[int, str, Decimal, date]],
    ) -> None:
        """Store a sales order with its lines (line number, item, quantity, requested date)."""
        self._x.execute(
            "INSERT INTO sales_orders (number, customer, created_at) VALUES (?, ?, ?)",
            (number, customer, created_at),
        )
        for line_no, item, quantity, requested in lines:
            self._x.execute(
                "INSERT INTO sales_order_lines (order_number, line_no, item, quantity,"
                " requested_date, is_open, promise_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (number, line_no, item, quantity, requested, True, "not promised yet"),
            )

    def sales_lines(self, open_only: bool = False) -> list[SalesLine]:
        """Sales order lines with their current promise, by order and line."""
        statement = (
            "SELECT l.order_number, l.line_no, o.customer, l.item, l.quantity, l.requested_date,"
            " l.promised_at, l.promise_kind, l.promise_reason, l.is_open, l.cancelled_at"
            " FROM sales_order_lines l JOIN sales_orders o ON o.number = l.order_number"
        )
        if open_only:
            statement += " WHERE l.is_open = ?"
        statement += " ORDER BY l.order_number, l.line_no"
        return [
            SalesLine.from_row(r) for r in self._x.query(statement, (True,) if open_only else ())
        ]

    # --- sales orders through the API (create, change, cancel) ------------------------------

    def customers(self) -> list[tuple[str, str]]:
        """(code, name) of every customer, by code."""
        rows = self._x.query("SELECT code, name FROM customers ORDER BY code")
        return [(r[0], r[1]) for r in rows]

    def customer_exists(self, code: str) -> bool:
        """True when the customer is stored."""
        return bool(self._x.query("SELECT 1 FROM customers WHERE code = ?", (code,)))

    def sales_order_head(self, number: str) -> tuple[str, datetime] | None:
        """(customer, created_at) of a sales order; None when there is none."""
        rows = self._x.query(
            "SELECT customer, created_at FROM sales_orders WHERE number = ?", (number,)
        )
        return (rows[0][0], to_datetime(rows[0][1])) if rows else None

    def sales_order_numbers(self) -> list[str]:
        """Every sales order number."""
        return [r[0] for r in self._x.query("SELECT number FROM sales_orders")]

    def lock_sales_order(self, number: str) -> bool:
        """Lock a sales order's row for this transaction (PostgreSQL; SQLite's write
        transaction is exclusive already); False when there is no such order."""
        lock = " FOR UPDATE" if self._x.dialect.backend == "postgresql" else ""
        return bool(self._x.query(f"SELECT 1 FROM sales_orders WHERE number = ?{lock}", (number,)))

    def change_sales_line(
        self, order: str, line: int, *, quantity: Decimal, requested_date: date
    ) -> None:
        """Set an open line's quantity and requested date; its promise is to be given anew (its
        kind is cleared, so the next re-promise records one, the previous instant is kept for
        the "was" of the change)."""
        self._x.execute(
            "UPDATE sales_order_lines SET quantity = ?, requested_date = ?, promise_kind = NULL"
            " WHERE order_number = ? AND line_no = ? AND is_open = ?",
            (quantity, requested_date, order, line, True),
        )

    def cancel_sales_line(self, order: str, line: int, at: datetime) -> None:
        """Close an open line as cancelled at `at` (its promise history stays)."""
        self._x.execute(
            "UPDATE sales_order_lines SET is_open = ?, cancelled_at = ?, promise_reason = ?"
            " WHERE order_number = ? AND line_no = ? AND is_open = ?",
            (False, at, "cancelled", order, line, True),
        )

    def record_promise(
        self,
        order: str,
        line: int,
        *,
        promised_at: datetime | None,
        kind: str,
        reason: str,
        at: datetime,
        steps: str | None = None,
    ) -> None:
        """Make this the line's current promise and keep it in the line's history (`steps`:
        its reason chain as JSON text, None for a promise without one)."""
        self._x.execute(
            "UPDATE sales_order_lines SET promised_at = ?, promise_kind = ?, promise_reason = ?"
            " WHERE order_number = ? AND line_no = ?",
            (promised_at, kind, reason, order, line),
        )
        self._x.execute(
            "INSERT INTO promises (order_number, line_no, promised_at, kind, reason, at, steps)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (order, line, promised_at, kind, reason, at, steps),
        )

    def promise_history(self, order: str, line: int) -> list[PromiseRow] | None:
        """Every promise given for the line, oldest first (None when the line does not exist)."""
        if not self._x.query(
            "SELECT 1 FROM sales_order_lines WHERE order_number = ? AND line_no = ?", (order, line)
        ):
            return None
        return [
            PromiseRow(
                order=order,
                line=line,
                promised_at=to_datetime_or_none(r[0]),
                reason=r[1],
                at=to_datetime(r[2]),
                steps=json.loads(r[3]) if r[3] else [],
            )
            for r in self._x.query(
                "SELECT promised_at, reason, at, steps FROM promises WHERE order_number = ?"
                " AND line_no = ? ORDER BY id",
                (order, line),
            )
        ]

    # --- node history ------------------------------------------------------------------------

    def append_node_change(self, change: NodeRow, recorded_at: datetime) -> None:
        """Keep a status change of a node (device None) or device, as of its `since`."""
        self._x.execute(
            "INSERT INTO node_history (edge_node, device, online, at, recorded_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (change.edge_node, change.device, change.online, change.since, recorded_at),
        )

    def node_known(self, edge_node: str, device: str | None = None) -> bool:
        """True when the edge node (or its device) has a status or a history."""
        where, params = "edge_node = ?", [edge_node]
        if device is not None:
            where += " AND device = ?"
            params.append(device)
        return any(
            self._x.query(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", params)
            for table in ("node_status", "node_history")
        )

    def node_changes(
        self,
        edge_node: str,
        *,
        device: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        as_of: datetime,
    ) -> list[NodeChangeRow]:
        """Changes of the node and its devices (or of one device) with `at` in [since, until),
        newest first, each lasting until the next change of the same node or device."""
        where = ["edge_node = ?"]
        params: list[object] = [edge_node]
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        outer = ""
        if until is not None:
            outer = " WHERE at < ?"
            params.append(until)
        # In id order the rows of one node or device alternate (one is written per flip), so
        # the next row is the end of the period: by id, not by `at` (edge and cloud clocks).
        statement = (
            "SELECT edge_node, device, online, at, recorded_at, ended_at FROM ("
            " SELECT id, edge_node, device, online, at, recorded_at,"
            " LEAD(at) OVER (PARTITION BY device ORDER BY id) AS ended_at"
            f" FROM node_history WHERE {' AND '.join(where)}) AS changes"
            f"{outer} ORDER BY at DESC, id DESC LIMIT ?"
        )
        return [
            NodeChangeRow.of(
                NodeRow(edge_node=r[0], device=r[1], online=bool(r[2]), since=to_datetime(r[3])),
                recorded_at=to_datetime(r[4]),
                ended_at=to_datetime_or_none(r[5]),
                as_of=as_of,
            )
            for r in self._x.query(statement, (*params, limit))
        ]

    # --- MRP: planning data and the latest run's result ------------------------------------

    def upsert_item_planning(
        self,
        item: str,
        *,
        lead_time_days: int,
        safety_stock: Decimal,
        lot_rule: str,
        lot_quantity: Decimal | None,
        lot_minimum: Decimal | None,
        lot_multiple: Decimal | None,
        lot_periods: int | None,
        source: str,
    ) -> None:
        """Insert or update an item's planning data (lead time, safety stock, lot size, source)."""
        self._x.execute(
            "INSERT INTO item_planning (item, lead_time_days, safety_stock, lot_rule,"
            " lot_quantity, lot_minimum, lot_multiple, lot_periods, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item) DO UPDATE SET"
            " lead_time_days = excluded.lead_time_days, safety_stock = excluded.safety_stock,"
            " lot_rule = excluded.lot_rule, lot_quantity = excluded.lot_quantity,"
            " lot_minimum = excluded.lot_minimum, lot_multiple = excluded.lot_multiple,"
            " lot_periods = excluded.lot_periods, source = excluded.source",
            (
                item,
                lead_time_days,
                safety_stock,
                lot_rule,
                lot_quantity,
                lot_minimum,
                lot_multiple,
                lot_periods,
                source,
            ),
        )

    def item_planning(
        self,
    ) -> dict[
        str,
        tuple[int, Decimal, str, Decimal | None, Decimal | None, Decimal | None, int | None, str],
    ]:
        """Per item: (lead time days, safety stock, lot rule, lot quantity, minimum, multiple,
        periods, source), as stored by `upsert_item_planning`."""
        return {
            r[0]: (
                int(r[1]),
                to_decimal(r[2]),
                str(r[3]),
                None if r[4] is None else to_decimal(r[4]),
                None if r[5] is None else to_decimal(r[5]),
                None if r[6] is None else to_decimal(r[6]),
                None if r[7] is None else int(r[7]),
                str(r[8]),
            )
            for r in self._x.query(
                "SELECT item, lead_time_days, safety_stock, lot_rule, lot_quantity, lot_minimum,"
                " lot_multiple, lot_periods, source FROM item_planning ORDER BY item"
            )
        }

    def set_bom_scrap(self, parent: str, component: str, scrap: Decimal) -> None:
        """The scrap factor of one BOM line (the line exists: `replace_bom` wrote it)."""
        self._x.execute(
            "UPDATE bom_lines SET scrap = ? WHERE parent = ? AND component = ?",
            (scrap, parent, component),
        )

    def bom_scrap(self) -> dict[tuple[str, str], Decimal]:
        """The scrap factor of every BOM line by (parent, component)."""
        return {
            (r[0], r[1]): to_decimal(r[2])
            for r in self._x.query("SELECT parent, component, scrap FROM bom_lines")
        }

    def set_mrp_settings(self, plant: str, bucket_days: int, horizon_days: int) -> None:
        """How MRP cuts time for the plant."""
        self._x.execute(
            "UPDATE plants SET mrp_bucket_days = ?, mrp_horizon_days = ? WHERE code = ?",
            (bucket_days, horizon_days, plant),
        )

    def mrp_settings(self, plant: str) -> tuple[int, int]:
        """(bucket days, horizon days) of the plant."""
        rows = self._x.query(
            "SELECT mrp_bucket_days, mrp_horizon_days FROM plants WHERE code = ?", (plant,)
        )
        if not rows:
            raise StorageError(f"no plant {plant!r}")
        return int(rows[0][0]), int(rows[0][1])

    def available_by_item(self) -> dict[str, Decimal]:
        """On hand minus reserved per item over the internal locations (summed in Python:
        SQLite holds decimals as text)."""
        available: dict[str, Decimal] = {}
        for item, on_hand, reserved in self._x.query(
            "SELECT b.item, b.on_hand, b.reserved FROM stock_balances b"
            " JOIN locations l ON l.code = b.location WHERE l.kind = 'internal'"
        ):
            available[item] = (
                available.get(item, Decimal(0)) + to_decimal(on_hand) - to_decimal(reserved)
            )
        return available

    def take_planner_lock(self, key: int) -> bool:
        """Take the planner lock for this transaction; False when another planner holds it.

        PostgreSQL: a transaction-level advisory lock (released at commit or rollback).
        SQLite: the write transaction (BEGIN IMMEDIATE) already excludes every other writer.
        """
        if self._x.dialect.backend != "postgresql":
            return True
        return bool(self._x.query("SELECT pg_try_advisory_xact_lock(?)", (key,))[0][0])

    def replace_mrp_result(
        self,
        run: Sequence[object],
        planned_orders: Sequence[Sequence[object]],
        pegs: Sequence[Sequence[object]],
        exceptions: Sequence[Sequence[object]],
        sources: Sequence[Sequence[object]],
        *,
        keep_runs: int = 1000,
    ) -> int:
        """Store a run and make its rows the only result rows; the run's id. Summaries of all
        but the latest `keep_runs` runs are deleted.

        `run`: (kind, started_at, finished_at, plan_start, bucket_days, bucket_count, items,
        items_planned, planned_orders, pegs, exceptions, beyond_horizon); the row sequences
        follow the columns of their tables after `run`.
        """
        run_id = self._insert_mrp_run(run, keep_runs)
        for table in _MRP_RESULT_TABLES:
            self._x.execute(f"DELETE FROM {table}")
        self._insert_mrp_rows(run_id, planned_orders, pegs, exceptions, sources)
        return run_id

    def replace_mrp_items(
        self,
        run: Sequence[object],
        planned_orders: Sequence[Sequence[object]],
        pegs: Sequence[Sequence[object]],
        exceptions: Sequence[Sequence[object]],
        sources: Sequence[Sequence[object]],
        *,
        items: Sequence[str],
        traced_items: Sequence[str],
        keep_runs: int = 1000,
    ) -> int:
        """Store a net-change run as a change of the stored result; the run's id.

        The planned orders, pegs and messages of `items` and the demand sources of
        `traced_items` are replaced by the rows given (which must be of those items only);
        every other item's rows stay as the earlier runs wrote them (their `run` column names
        the run that last wrote them). `run` and `keep_runs` as in `replace_mrp_result`.
        """
        run_id = self._insert_mrp_run(run, keep_runs)
        for table in _MRP_RESULT_TABLES:
            chosen = traced_items if table == "mrp_demand_sources" else items
            for start in range(0, len(chosen), _MRP_ITEMS_PER_DELETE):
                chunk = chosen[start : start + _MRP_ITEMS_PER_DELETE]
                marks = ", ".join("?" for _ in chunk)
                self._x.execute(f"DELETE FROM {table} WHERE item IN ({marks})", chunk)
        self._insert_mrp_rows(run_id, planned_orders, pegs, exceptions, sources)
        return run_id

    def _insert_mrp_run(self, run: Sequence[object], keep_runs: int) -> int:
        inserted = self._x.query(
            "INSERT INTO mrp_runs (kind, started_at, finished_at, plan_start, bucket_days,"
            " bucket_count, items, items_planned, planned_orders, pegs, exceptions,"
            " beyond_horizon) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            run,
        )
        run_id = int(inserted[0][0])
        # Net change runs after every posting: keep the summaries of the latest runs only.
        self._x.execute("DELETE FROM mrp_runs WHERE id <= ?", (run_id - keep_runs,))
        return run_id

    def _insert_mrp_rows(
        self,
        run_id: int,
        planned_orders: Sequence[Sequence[object]],
        pegs: Sequence[Sequence[object]],
        exceptions: Sequence[Sequence[object]],
        sources: Sequence[Sequence[object]],
    ) -> None:
        for table, columns, rows in (
            (
                "mrp_planned_orders",
                "id, item, source, quantity, due_bucket, release_bucket, due_date, release_date",
                planned_orders,
            ),
            ("mrp_pegs", "item, position, supply, demand, quantity", pegs),
            (
                "mrp_exceptions",
                "item, position, kind, order_ref, bucket, bucket_date, to_bucket, to_date,"
                " quantity",
                exceptions,
            ),
            (
                "mrp_demand_sources",
                "item, demand, source_item, source_demand, source_kind",
                sources,
            ),
        ):
            if rows:
                marks = ", ".join("?" for _ in range(columns.count(",") + 2))
                self._x.executemany(
                    f"INSERT INTO {table} (run, {columns}) VALUES ({marks})",
                    [(run_id, *row) for row in rows],
                )

    def mrp_run(self, run_id: int | None = None) -> tuple[Any, ...] | None:
        """The columns of `mrp_runs` of one run (None: the latest), or None."""
        statement = (
            "SELECT id, kind, started_at, finished_at, plan_start, bucket_days, bucket_count,"
            " items, items_planned, planned_orders, pegs, exceptions, beyond_horizon"
            " FROM mrp_runs"
        )
        if run_id is None:
            rows = self._x.query(statement + " ORDER BY id DESC LIMIT 1")
        else:
            rows = self._x.query(statement + " WHERE id = ?", (run_id,))
        if not rows:
            return None
        r = rows[0]
        return (int(r[0]), r[1], to_datetime(r[2]), to_datetime(r[3]), to_date(r[4]), *r[5:])

    def mrp_planned_orders(
        self, item: str | None = None, source: str | None = None
    ) -> list[tuple[str, str, str, Decimal, int, int, date, date]]:
        """(id, item, source, quantity, due bucket, release bucket, due date, release date) of
        the latest run's planned orders, by item and due bucket."""
        where, params = _equal_to((("item", item), ("source", source)))
        statement = (
            "SELECT id, item, source, quantity, due_bucket, release_bucket, due_date,"
            " release_date FROM mrp_planned_orders"
        )
        if where:
            statement += " WHERE " + " AND ".join(where)
        return [
            (
                r[0],
                r[1],
                r[2],
                to_decimal(r[3]),
                int(r[4]),
                int(r[5]),
                to_date(r[6]),
                to_date(r[7]),
            )
            for r in self._x.query(statement + " ORDER BY item, due_bucket, id", params)
        ]

    def mrp_exceptions(
        self, item: str | None = None
    ) -> list[tuple[str, str, str, int, date, int | None, date | None, Decimal]]:
        """(kind, item, order, bucket, bucket date, to bucket, to date, quantity) of the latest
        run's action messages, by item in the order the run made them."""
        statement = (
            "SELECT kind, item, order_ref, bucket, bucket_date, to_bucket, to_date, quantity"
            " FROM mrp_exceptions"
        )
        params: tuple[object, ...] = ()
        if item is not None:
            statement += " WHERE item = ?"
            params = (item,)
        return [
            (
                r[0],
                r[1],
                r[2],
                int(r[3]),
                to_date(r[4]),
                None if r[5] is None else int(r[5]),
                None if r[6] is None else to_date(r[6]),
                to_decimal(r[7]),
            )
            for r in self._x.query(statement + " ORDER BY item, position", params)
        ]

    def mrp_pegs_of_supply(
        self, supply: str, item: str | None = None
    ) -> list[tuple[str, str, Decimal]]:
        """(item, demand, quantity) of the latest run's pegs of one supply, in peg order."""
        statement = "SELECT item, demand, quantity FROM mrp_pegs WHERE supply = ?"
        params: list[object] = [supply]
        if item is not None:
            statement += " AND item = ?"
            params.append(item)
        return [
            (r[0], r[1], to_decimal(r[2]))
            for r in self._x.query(statement + " ORDER BY item, position", params)
        ]

    def mrp_demand_sources(self, item: str, demand: str) -> list[tuple[str, str, str]]:
        """(item, demand, kind) of the independent demands a requirement serves in the end."""
        return [
            (r[0], r[1], r[2])
            for r in self._x.query(
                "SELECT source_item, source_demand, source_kind FROM mrp_demand_sources"
                " WHERE item = ? AND demand = ? ORDER BY source_item, source_demand",
                (item, demand),
            )
        ]


def _equal_to(pairs: Iterable[tuple[str, object]]) -> tuple[list[str], list[object]]:
    """WHERE conditions `column = ?` and their parameters, for the pairs whose value is given
    (None: no condition on that column)."""
    given = [(column, value) for column, value in pairs if value is not None]
    return [f"{column} = ?" for column, _ in given], [value for _, value in given]
