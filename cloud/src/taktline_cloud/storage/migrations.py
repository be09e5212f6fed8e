"""Versioned schema migrations, applied in order at open; `schema_version` records each one.

A migration is frozen once released: change the schema by adding a new one. Invariants are
named constraints, so a violation names the rule it broke.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from taktline_cloud.storage.sql import Dialect, to_decimal

log = logging.getLogger(__name__)


class Migrator(Protocol):
    """What a migration may do: run statements, and ask PostgreSQL about extensions."""

    dialect: Dialect

    def execute(self, statement: str, params: Sequence[object] = ()) -> object:
        """Run one DDL statement."""

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a statement (to look at what an earlier version left)."""

    def extension_available(self, name: str) -> bool:
        """True when PostgreSQL can install extension `name`."""

    def try_execute(self, statements: list[str]) -> bool:
        """Run statements in a savepoint; False (rolled back, logged) when one fails."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version."""

    version: int
    description: str
    apply: Callable[[Migrator], None]


def _v1_core_schema(m: Migrator) -> None:
    d = m.dialect
    dec, ts, day = d.decimal, d.timestamp, d.date
    n = d.number
    statements = [
        """CREATE TABLE org_nodes (
            level TEXT NOT NULL,
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            parent_level TEXT,
            parent_code TEXT,
            CONSTRAINT org_nodes_key PRIMARY KEY (level, code),
            CONSTRAINT org_nodes_level_valid
                CHECK (level IN ('group', 'company', 'plant', 'area', 'line', 'machine'))
        )""",
        """CREATE TABLE locations (
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            CONSTRAINT locations_key PRIMARY KEY (code),
            CONSTRAINT locations_kind_valid
                CHECK (kind IN ('internal', 'production', 'supplier', 'customer', 'inventory'))
        )""",
        """CREATE TABLE plants (
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            component_location TEXT NOT NULL REFERENCES locations (code),
            finished_location TEXT NOT NULL REFERENCES locations (code),
            production_location TEXT NOT NULL REFERENCES locations (code),
            inventory_location TEXT NOT NULL REFERENCES locations (code),
            CONSTRAINT plants_key PRIMARY KEY (code)
        )""",
        f"""CREATE TABLE lines (
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            plant TEXT NOT NULL REFERENCES plants (code),
            gateway TEXT NOT NULL,
            work_centre TEXT NOT NULL,
            standard_rate_per_hour {dec} NOT NULL,
            CONSTRAINT lines_key PRIMARY KEY (code),
            CONSTRAINT lines_standard_rate_positive CHECK ({n("standard_rate_per_hour")} > 0)
        )""",
        """CREATE TABLE machines (
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            line TEXT NOT NULL REFERENCES lines (code),
            position INTEGER NOT NULL,
            CONSTRAINT machines_key PRIMARY KEY (code)
        )""",
        """CREATE TABLE items (
            sku TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            uom TEXT NOT NULL,
            CONSTRAINT items_key PRIMARY KEY (sku),
            CONSTRAINT items_kind_valid CHECK (kind IN ('raw', 'semi_finished', 'finished'))
        )""",
        f"""CREATE TABLE bom_lines (
            parent TEXT NOT NULL REFERENCES items (sku),
            component TEXT NOT NULL REFERENCES items (sku),
            quantity {dec} NOT NULL,
            CONSTRAINT bom_lines_key PRIMARY KEY (parent, component),
            CONSTRAINT bom_lines_quantity_positive CHECK ({n("quantity")} > 0)
        )""",
        f"""CREATE TABLE stock_moves (
            id {d.id_key},
            at {ts} NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            from_location TEXT NOT NULL REFERENCES locations (code),
            to_location TEXT NOT NULL REFERENCES locations (code),
            quantity {dec} NOT NULL,
            reason TEXT NOT NULL,
            reference TEXT NOT NULL,
            CONSTRAINT stock_moves_quantity_positive CHECK ({n("quantity")} > 0),
            CONSTRAINT stock_moves_locations_differ CHECK (from_location <> to_location)
        )""",
        "CREATE INDEX stock_moves_item ON stock_moves (item, id)",
        "CREATE INDEX stock_moves_reference ON stock_moves (reference, reason)",
        f"""CREATE TABLE stock_balances (
            item TEXT NOT NULL REFERENCES items (sku),
            location TEXT NOT NULL REFERENCES locations (code),
            on_hand {dec} NOT NULL,
            CONSTRAINT stock_balances_key PRIMARY KEY (item, location)
        )""",
        """CREATE TABLE customers (
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            CONSTRAINT customers_key PRIMARY KEY (code)
        )""",
        f"""CREATE TABLE sales_orders (
            number TEXT NOT NULL,
            customer TEXT NOT NULL REFERENCES customers (code),
            created_at {ts} NOT NULL,
            CONSTRAINT sales_orders_key PRIMARY KEY (number)
        )""",
        f"""CREATE TABLE sales_order_lines (
            order_number TEXT NOT NULL REFERENCES sales_orders (number),
            line_no INTEGER NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            quantity {dec} NOT NULL,
            requested_date {day} NOT NULL,
            is_open BOOLEAN NOT NULL,
            promised_at {ts},
            promise_kind TEXT,
            promise_reason TEXT NOT NULL,
            CONSTRAINT sales_order_lines_key PRIMARY KEY (order_number, line_no),
            CONSTRAINT sales_order_lines_quantity_positive CHECK ({n("quantity")} > 0)
        )""",
        f"""CREATE TABLE promises (
            id {d.id_key},
            order_number TEXT NOT NULL,
            line_no INTEGER NOT NULL,
            promised_at {ts},
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            at {ts} NOT NULL,
            CONSTRAINT promises_line_fk FOREIGN KEY (order_number, line_no)
                REFERENCES sales_order_lines (order_number, line_no),
            CONSTRAINT promises_kind_valid CHECK (kind IN ('stock', 'production', 'short'))
        )""",
        "CREATE INDEX promises_line ON promises (order_number, line_no, id)",
        f"""CREATE TABLE work_orders (
            number TEXT NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            line TEXT NOT NULL REFERENCES lines (code),
            quantity {dec} NOT NULL,
            status TEXT NOT NULL,
            created_at {ts} NOT NULL,
            released_at {ts},
            started_at {ts},
            completed_at {ts},
            good {dec} NOT NULL,
            scrap {dec} NOT NULL,
            CONSTRAINT work_orders_number_unique PRIMARY KEY (number),
            CONSTRAINT work_orders_quantity_positive CHECK ({n("quantity")} > 0),
            CONSTRAINT work_orders_status_valid CHECK (status IN ('created', 'released',
                'dispatched', 'running', 'held', 'completed', 'aborted', 'closed'))
        )""",
        # One running work order per line: it owns the line's counts.
        """CREATE UNIQUE INDEX work_orders_one_running_per_line
            ON work_orders (line) WHERE status = 'running'""",
        f"""CREATE TABLE samples (
            machine TEXT NOT NULL,
            metric TEXT NOT NULL,
            ts {ts} NOT NULL,
            value_num {dec},
            value_bool BOOLEAN,
            value_text TEXT,
            is_historical BOOLEAN NOT NULL,
            CONSTRAINT samples_key UNIQUE (machine, metric, ts)
        )""",
        f"""CREATE TABLE latest_values (
            machine TEXT NOT NULL,
            metric TEXT NOT NULL,
            ts {ts} NOT NULL,
            value_num {dec},
            value_bool BOOLEAN,
            value_text TEXT,
            CONSTRAINT latest_values_key PRIMARY KEY (machine, metric)
        )""",
        # device '' is the edge node itself (a NULL could not be part of the key).
        f"""CREATE TABLE node_status (
            edge_node TEXT NOT NULL,
            device TEXT NOT NULL,
            online BOOLEAN NOT NULL,
            since {ts} NOT NULL,
            CONSTRAINT node_status_key PRIMARY KEY (edge_node, device)
        )""",
    ]
    for statement in statements:
        m.execute(statement)
    if d.backend == "postgresql" and m.extension_available("timescaledb"):
        # Needs timescaledb in shared_preload_libraries; without it samples stays a plain table.
        m.try_execute(
            [
                "CREATE EXTENSION IF NOT EXISTS timescaledb",
                "SELECT create_hypertable('samples', 'ts', if_not_exists => TRUE)",
            ]
        )


def _v2_counter_checkpoints(m: Migrator) -> None:
    d = m.dialect
    m.execute(
        f"""CREATE TABLE counter_checkpoints (
            work_order TEXT NOT NULL REFERENCES work_orders (number),
            machine TEXT NOT NULL,
            metric TEXT NOT NULL,
            through {d.timestamp} NOT NULL,
            counted {d.decimal} NOT NULL,
            CONSTRAINT counter_checkpoints_key PRIMARY KEY (work_order, machine, metric)
        )"""
    )


def _v3_dead_letters(m: Migrator) -> None:
    d = m.dialect
    blob = "BYTEA" if d.backend == "postgresql" else "BLOB"
    m.execute(
        f"""CREATE TABLE IF NOT EXISTS dead_letters (
            id {d.id_key},
            received_at {d.timestamp} NOT NULL,
            topic TEXT NOT NULL,
            payload {blob} NOT NULL,
            reason TEXT NOT NULL,
            replayed_at {d.timestamp}
        )"""
    )
    m.execute("CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at)")


def _v4_rollups(m: Migrator) -> None:
    """1-minute and 1-hour rollups of numeric samples, and the queue of buckets to redo.

    A trigger on samples queues the (machine, metric, minute) of every numeric sample stored,
    late ones included, so the rollup job recomputes exactly the buckets that changed; a time
    watermark alone cannot see a late sample landing in an old bucket.
    """
    d = m.dialect
    dec, ts = d.decimal, d.timestamp
    for table in ("rollup_1m", "rollup_1h"):
        m.execute(
            f"""CREATE TABLE IF NOT EXISTS {table} (
                machine TEXT NOT NULL,
                metric TEXT NOT NULL,
                bucket {ts} NOT NULL,
                value_min {dec} NOT NULL,
                value_max {dec} NOT NULL,
                value_sum {dec} NOT NULL,
                value_avg {dec} NOT NULL,
                value_last {dec} NOT NULL,
                last_ts {ts} NOT NULL,
                sample_count BIGINT NOT NULL,
                CONSTRAINT {table}_key PRIMARY KEY (machine, metric, bucket),
                CONSTRAINT {table}_count_positive CHECK (sample_count > 0)
            )"""
        )
    m.execute(
        f"""CREATE TABLE IF NOT EXISTS rollup_pending (
            machine TEXT NOT NULL,
            metric TEXT NOT NULL,
            bucket {ts} NOT NULL,
            CONSTRAINT rollup_pending_key PRIMARY KEY (machine, metric, bucket)
        )"""
    )
    m.execute(
        f"""CREATE TABLE IF NOT EXISTS rollup_watermark (
            rollup TEXT NOT NULL,
            refreshed_at {ts} NOT NULL,
            buckets BIGINT NOT NULL,
            CONSTRAINT rollup_watermark_key PRIMARY KEY (rollup)
        )"""
    )
    if d.backend == "postgresql":
        minute = "date_trunc('minute', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        # DO UPDATE, not DO NOTHING: it locks a queued row until the sample commits, so a job
        # taking that row off the queue waits and then reads the sample (or finds it re-queued).
        m.execute(
            f"""CREATE OR REPLACE FUNCTION rollup_queue_rows() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO rollup_pending (machine, metric, bucket)
                SELECT DISTINCT machine, metric, {minute} FROM new_samples
                WHERE value_num IS NOT NULL
                ON CONFLICT (machine, metric, bucket) DO UPDATE SET bucket = excluded.bucket;
                RETURN NULL;
            END $$"""
        )
        # One INSERT per statement (COPY batches of 10k); hypertables refuse transition
        # tables, so there a row trigger does the same work.
        statement_level = m.try_execute(
            [
                "CREATE OR REPLACE TRIGGER samples_rollup_queue AFTER INSERT ON samples"
                " REFERENCING NEW TABLE AS new_samples"
                " FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_rows()"
            ]
        )
        if not statement_level:
            m.execute(
                """CREATE OR REPLACE FUNCTION rollup_queue_row() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.value_num IS NOT NULL THEN
                        INSERT INTO rollup_pending (machine, metric, bucket) VALUES (NEW.machine,
                            NEW.metric, date_trunc('minute', NEW.ts AT TIME ZONE 'UTC')
                            AT TIME ZONE 'UTC') ON CONFLICT (machine, metric, bucket)
                            DO UPDATE SET bucket = excluded.bucket;
                    END IF;
                    RETURN NULL;
                END $$"""
            )
            m.execute(
                "CREATE OR REPLACE TRIGGER samples_rollup_queue AFTER INSERT ON samples"
                " FOR EACH ROW EXECUTE FUNCTION rollup_queue_row()"
            )
    else:
        # Times are fixed-width text: the first 16 characters are the minute.
        minute = "substr(ts, 1, 16) || ':00.000000Z'"
        m.execute(
            """CREATE TRIGGER IF NOT EXISTS samples_rollup_queue AFTER INSERT ON samples
            WHEN NEW.value_num IS NOT NULL
            BEGIN
                INSERT OR IGNORE INTO rollup_pending (machine, metric, bucket)
                VALUES (NEW.machine, NEW.metric, substr(NEW.ts, 1, 16) || ':00.000000Z');
            END"""
        )
    # Samples stored before this version are rolled up by the job's first run. (IF NOT EXISTS
    # throughout: re-applied over a schema_version rolled back by hand, it changes nothing.)
    m.execute(
        f"INSERT INTO rollup_pending (machine, metric, bucket)"
        f" SELECT DISTINCT machine, metric, {minute} FROM samples WHERE value_num IS NOT NULL"
        " ON CONFLICT DO NOTHING"
    )


def _v5_node_history(m: Migrator) -> None:
    """Every online/offline change of edge nodes and devices (node_status keeps the latest).

    `at` is the Sparkplug time of the change, `recorded_at` when the cloud stored it; device is
    NULL for the edge node itself. A row is written only when a status flips, so in id order
    the rows of one node or device alternate, and a period lasts from one row to the next.
    """
    d = m.dialect
    ts = d.timestamp
    m.execute(
        f"""CREATE TABLE IF NOT EXISTS node_history (
            id {d.id_key},
            edge_node TEXT NOT NULL,
            device TEXT,
            online BOOLEAN NOT NULL,
            at {ts} NOT NULL,
            recorded_at {ts} NOT NULL,
            CONSTRAINT node_history_edge_node_not_empty CHECK (edge_node <> ''),
            CONSTRAINT node_history_device_not_empty CHECK (device <> '')
        )"""
    )
    m.execute("CREATE INDEX IF NOT EXISTS node_history_node_time ON node_history (edge_node, at)")
    # The statuses stored before this version start the history, as of their `since`. (Only
    # into an empty table: re-applied over a schema_version rolled back by hand, it adds none.)
    m.execute(
        "INSERT INTO node_history (edge_node, device, online, at, recorded_at)"
        " SELECT edge_node, NULLIF(device, ''), online, since, since FROM node_status"
        " WHERE NOT EXISTS (SELECT 1 FROM node_history) ORDER BY edge_node, device"
    )


def _columns(m: Migrator, table: str) -> set[str]:
    if m.dialect.backend == "postgresql":
        rows = m.query(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    else:
        rows = m.query(f"SELECT name FROM pragma_table_info('{table}')")
    return {str(r[0]) for r in rows}


def _v6_reservations(m: Migrator) -> None:
    """Reserved quantities beside on-hand, reservations, which locations may go negative, and
    moving-average valuation (unit cost and value of every move, an average per item).

    Virtual locations (supplier, customer, production, inventory adjustment) may go negative:
    they stand for the world outside the plant's stores. Balances are rebuilt from the ledger
    and the open reservations, so the version starts from the invariant it then keeps.
    (Re-applied over a schema_version rolled back by hand, it adds nothing and rebuilds.)
    """
    d = m.dialect
    dec, ts, n = d.decimal, d.timestamp, d.number
    zero = "0" if d.backend == "postgresql" else "'0'"
    if "allow_negative" not in _columns(m, "locations"):
        m.execute("ALTER TABLE locations ADD COLUMN allow_negative BOOLEAN NOT NULL DEFAULT FALSE")
        m.execute("UPDATE locations SET allow_negative = ? WHERE kind <> 'internal'", (True,))
    if "reserved" not in _columns(m, "stock_balances"):
        m.execute(
            f"ALTER TABLE stock_balances ADD COLUMN reserved {dec} NOT NULL DEFAULT {zero}"
            f" CONSTRAINT stock_balances_reserved_not_negative CHECK ({n('reserved')} >= 0)"
        )
    m.execute(
        f"""CREATE TABLE IF NOT EXISTS reservations (
            id {d.id_key},
            item TEXT NOT NULL REFERENCES items (sku),
            location TEXT NOT NULL REFERENCES locations (code),
            demand TEXT NOT NULL,
            quantity {dec} NOT NULL,
            open_quantity {dec} NOT NULL,
            consumed {dec} NOT NULL,
            created_at {ts} NOT NULL,
            closed_at {ts},
            CONSTRAINT reservations_quantity_positive CHECK ({n("quantity")} > 0),
            CONSTRAINT reservations_open_within_quantity
                CHECK ({n("open_quantity")} >= 0 AND {n("open_quantity")} <= {n("quantity")}),
            CONSTRAINT reservations_consumed_within_quantity
                CHECK ({n("consumed")} >= 0 AND {n("consumed")} <= {n("quantity")}),
            CONSTRAINT reservations_closed_when_nothing_open
                CHECK ((closed_at IS NULL) = ({n("open_quantity")} > 0))
        )"""
    )
    # Moving-average valuation: every move carries its unit cost and value (moves booked
    # before this version are worth 0: no cost was known), one average per item.
    moves = _columns(m, "stock_moves")
    for column in ("unit_cost", "value"):
        if column not in moves:
            m.execute(f"ALTER TABLE stock_moves ADD COLUMN {column} {dec} NOT NULL DEFAULT {zero}")
    m.execute(
        f"""CREATE TABLE IF NOT EXISTS item_costs (
            item TEXT NOT NULL REFERENCES items (sku),
            unit_cost {dec} NOT NULL,
            updated_at {ts} NOT NULL,
            CONSTRAINT item_costs_key PRIMARY KEY (item),
            CONSTRAINT item_costs_unit_cost_not_negative CHECK ({n("unit_cost")} >= 0)
        )"""
    )
    m.execute("CREATE INDEX IF NOT EXISTS reservations_demand ON reservations (demand, id)")
    m.execute("CREATE INDEX IF NOT EXISTS reservations_balance ON reservations (item, location)")
    # Rebuilt in Python: SQLite holds decimals as TEXT and would add them as floats.
    on_hand: dict[tuple[str, str], Decimal] = {}
    for item, source, target, quantity in m.query(
        "SELECT item, from_location, to_location, quantity FROM stock_moves"
    ):
        amount = to_decimal(quantity)
        on_hand[(item, source)] = on_hand.get((item, source), Decimal(0)) - amount
        on_hand[(item, target)] = on_hand.get((item, target), Decimal(0)) + amount
    reserved: dict[tuple[str, str], Decimal] = {}
    for item, location, quantity in m.query(
        "SELECT item, location, open_quantity FROM reservations WHERE closed_at IS NULL"
    ):
        key = (item, location)
        reserved[key] = reserved.get(key, Decimal(0)) + to_decimal(quantity)
    m.execute("DELETE FROM stock_balances")
    for key in sorted(on_hand.keys() | reserved.keys()):
        m.execute(
            "INSERT INTO stock_balances (item, location, on_hand, reserved) VALUES (?, ?, ?, ?)",
            (*key, on_hand.get(key, Decimal(0)), reserved.get(key, Decimal(0))),
        )


def _v7_mrp(m: Migrator) -> None:
    """Item planning data, BOM scrap, MRP buckets, and the latest MRP run's result.

    Runs keep their summary rows; planned orders, pegs, exceptions and the demands each peg
    traces to hold only the latest run (a run replaces them in its transaction).
    (Re-applied over a schema_version rolled back by hand, it adds nothing.)
    """
    d = m.dialect
    dec, ts, day, n = d.decimal, d.timestamp, d.date, d.number
    zero = "0" if d.backend == "postgresql" else "'0'"
    if "scrap" not in _columns(m, "bom_lines"):
        m.execute(
            f"ALTER TABLE bom_lines ADD COLUMN scrap {dec} NOT NULL DEFAULT {zero}"
            f" CONSTRAINT bom_lines_scrap_not_negative CHECK ({n('scrap')} >= 0)"
        )
    plants = _columns(m, "plants")
    for column, default in (("mrp_bucket_days", 1), ("mrp_horizon_days", 56)):
        if column not in plants:
            m.execute(
                f"ALTER TABLE plants ADD COLUMN {column} INTEGER NOT NULL DEFAULT {default}"
                f" CONSTRAINT plants_{column}_positive CHECK ({column} > 0)"
            )
    statements = [
        f"""CREATE TABLE IF NOT EXISTS item_planning (
            item TEXT NOT NULL REFERENCES items (sku),
            lead_time_days INTEGER NOT NULL,
            safety_stock {dec} NOT NULL,
            lot_rule TEXT NOT NULL,
            lot_quantity {dec},
            lot_minimum {dec},
            lot_multiple {dec},
            lot_periods INTEGER,
            source TEXT NOT NULL,
            CONSTRAINT item_planning_key PRIMARY KEY (item),
            CONSTRAINT item_planning_lead_time_not_negative CHECK (lead_time_days >= 0),
            CONSTRAINT item_planning_safety_stock_not_negative CHECK ({n("safety_stock")} >= 0),
            CONSTRAINT item_planning_lot_rule_valid CHECK (lot_rule IN
                ('lot-for-lot', 'fixed', 'min-multiple', 'periods-of-supply')),
            CONSTRAINT item_planning_source_valid CHECK (source IN ('make', 'buy'))
        )""",
        f"""CREATE TABLE IF NOT EXISTS mrp_runs (
            id {d.id_key},
            kind TEXT NOT NULL,
            started_at {ts} NOT NULL,
            finished_at {ts} NOT NULL,
            plan_start {day} NOT NULL,
            bucket_days INTEGER NOT NULL,
            bucket_count INTEGER NOT NULL,
            items INTEGER NOT NULL,
            items_planned INTEGER NOT NULL,
            planned_orders INTEGER NOT NULL,
            pegs INTEGER NOT NULL,
            exceptions INTEGER NOT NULL,
            beyond_horizon INTEGER NOT NULL,
            CONSTRAINT mrp_runs_kind_valid CHECK (kind IN ('regenerative', 'net-change'))
        )""",
        f"""CREATE TABLE IF NOT EXISTS mrp_planned_orders (
            id TEXT NOT NULL,
            run INTEGER NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            source TEXT NOT NULL,
            quantity {dec} NOT NULL,
            due_bucket INTEGER NOT NULL,
            release_bucket INTEGER NOT NULL,
            due_date {day} NOT NULL,
            release_date {day} NOT NULL,
            CONSTRAINT mrp_planned_orders_key PRIMARY KEY (id),
            CONSTRAINT mrp_planned_orders_source_valid CHECK (source IN ('make', 'buy'))
        )""",
        "CREATE INDEX IF NOT EXISTS mrp_planned_orders_item ON mrp_planned_orders (item, id)",
        f"""CREATE TABLE IF NOT EXISTS mrp_pegs (
            run INTEGER NOT NULL,
            position INTEGER NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            supply TEXT NOT NULL,
            demand TEXT NOT NULL,
            quantity {dec} NOT NULL,
            CONSTRAINT mrp_pegs_key PRIMARY KEY (item, position)
        )""",
        "CREATE INDEX IF NOT EXISTS mrp_pegs_supply ON mrp_pegs (supply, item)",
        f"""CREATE TABLE IF NOT EXISTS mrp_exceptions (
            run INTEGER NOT NULL,
            position INTEGER NOT NULL,
            kind TEXT NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            order_ref TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            bucket_date {day} NOT NULL,
            to_bucket INTEGER,
            to_date {day},
            quantity {dec} NOT NULL,
            CONSTRAINT mrp_exceptions_key PRIMARY KEY (item, position)
        )""",
        """CREATE TABLE IF NOT EXISTS mrp_demand_sources (
            run INTEGER NOT NULL,
            item TEXT NOT NULL,
            demand TEXT NOT NULL,
            source_item TEXT NOT NULL,
            source_demand TEXT NOT NULL,
            source_kind TEXT NOT NULL,
            CONSTRAINT mrp_demand_sources_key
                PRIMARY KEY (item, demand, source_item, source_demand)
        )""",
    ]
    for statement in statements:
        m.execute(statement)


def _v8_purchasing(m: Migrator) -> None:
    """Suppliers and what they sell, purchase orders with their lines, the supplier's
    confirmations (every one kept, a row per line) and the receipts into lots.

    A receipt names the stock move it booked, so the ledger and the order agree on what came.
    (Re-applied over a schema_version rolled back by hand, it adds nothing.)
    """
    d = m.dialect
    dec, ts, day, n = d.decimal, d.timestamp, d.date, d.number
    statuses = (
        "'draft', 'sent', 'confirmed', 'changed', 'partially-received', 'received', 'closed',"
        " 'cancelled'"
    )
    statements = [
        f"""CREATE TABLE IF NOT EXISTS supplier (
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            lead_days INTEGER NOT NULL,
            currency TEXT NOT NULL,
            over_receipt_tolerance {dec} NOT NULL,
            CONSTRAINT supplier_key PRIMARY KEY (code),
            CONSTRAINT supplier_lead_days_not_negative CHECK (lead_days >= 0),
            CONSTRAINT supplier_tolerance_not_negative
                CHECK ({n("over_receipt_tolerance")} >= 0)
        )""",
        f"""CREATE TABLE IF NOT EXISTS supplier_item (
            supplier TEXT NOT NULL REFERENCES supplier (code),
            item TEXT NOT NULL REFERENCES items (sku),
            unit_price {dec} NOT NULL,
            minimum {dec} NOT NULL,
            pack_size {dec} NOT NULL,
            lead_days INTEGER,
            preferred BOOLEAN NOT NULL,
            CONSTRAINT supplier_item_key PRIMARY KEY (supplier, item),
            CONSTRAINT supplier_item_price_not_negative CHECK ({n("unit_price")} >= 0),
            CONSTRAINT supplier_item_minimum_not_negative CHECK ({n("minimum")} >= 0),
            CONSTRAINT supplier_item_pack_not_negative CHECK ({n("pack_size")} >= 0),
            CONSTRAINT supplier_item_lead_days_not_negative
                CHECK (lead_days IS NULL OR lead_days >= 0)
        )""",
        f"""CREATE TABLE IF NOT EXISTS purchase_order (
            number TEXT NOT NULL,
            supplier TEXT NOT NULL REFERENCES supplier (code),
            currency TEXT NOT NULL,
            status TEXT NOT NULL,
            order_date {day} NOT NULL,
            over_receipt_tolerance {dec} NOT NULL,
            created_at {ts} NOT NULL,
            sent_at {ts},
            confirmed_at {ts},
            closed_at {ts},
            CONSTRAINT purchase_order_key PRIMARY KEY (number),
            CONSTRAINT purchase_order_status_valid CHECK (status IN ({statuses})),
            CONSTRAINT purchase_order_tolerance_not_negative
                CHECK ({n("over_receipt_tolerance")} >= 0)
        )""",
        f"""CREATE TABLE IF NOT EXISTS po_line (
            po TEXT NOT NULL REFERENCES purchase_order (number),
            line INTEGER NOT NULL,
            item TEXT NOT NULL REFERENCES items (sku),
            quantity {dec} NOT NULL,
            unit_price {dec} NOT NULL,
            needed {day} NOT NULL,
            requisition TEXT NOT NULL,
            requested {dec} NOT NULL,
            planned_order TEXT,
            pegged TEXT NOT NULL,
            confirmed_date {day},
            confirmed_quantity {dec},
            CONSTRAINT po_line_key PRIMARY KEY (po, line),
            CONSTRAINT po_line_quantity_positive CHECK ({n("quantity")} > 0),
            CONSTRAINT po_line_requested_positive CHECK ({n("requested")} > 0),
            CONSTRAINT po_line_price_not_negative CHECK ({n("unit_price")} >= 0),
            CONSTRAINT po_line_confirmed_not_negative
                CHECK (confirmed_quantity IS NULL OR {n("confirmed_quantity")} >= 0)
        )""",
        f"""CREATE TABLE IF NOT EXISTS po_receipt (
            id {d.id_key},
            po TEXT NOT NULL,
            line INTEGER NOT NULL,
            lot TEXT NOT NULL,
            quantity {dec} NOT NULL,
            location TEXT NOT NULL REFERENCES locations (code),
            stock_move BIGINT NOT NULL REFERENCES stock_moves (id),
            received_at {ts} NOT NULL,
            CONSTRAINT po_receipt_line FOREIGN KEY (po, line) REFERENCES po_line (po, line),
            CONSTRAINT po_receipt_quantity_positive CHECK ({n("quantity")} > 0),
            CONSTRAINT po_receipt_lot_not_empty CHECK (lot <> '')
        )""",
        f"""CREATE TABLE IF NOT EXISTS po_confirmation (
            id {d.id_key},
            po TEXT NOT NULL,
            line INTEGER NOT NULL,
            confirmation INTEGER NOT NULL,
            confirmed_by TEXT NOT NULL,
            confirmed_at {ts} NOT NULL,
            previous_date {day} NOT NULL,
            confirmed_date {day} NOT NULL,
            previous_quantity {dec} NOT NULL,
            confirmed_quantity {dec} NOT NULL,
            CONSTRAINT po_confirmation_line FOREIGN KEY (po, line) REFERENCES po_line (po, line),
            CONSTRAINT po_confirmation_once_per_line UNIQUE (po, confirmation, line),
            CONSTRAINT po_confirmation_quantity_not_negative
                CHECK ({n("confirmed_quantity")} >= 0)
        )""",
        "CREATE INDEX IF NOT EXISTS purchase_order_supplier ON purchase_order (supplier, status)",
        "CREATE INDEX IF NOT EXISTS po_receipt_po_line ON po_receipt (po, line, id)",
    ]
    for statement in statements:
        m.execute(statement)


def _v9_promise_steps(m: Migrator) -> None:
    """A promise's reason chain kept with it: the capable-to-promise steps as JSON text (a
    list of {kind, reference, at, quantity, text}; NULL for promises made before, or by the
    available-to-promise rule, which has no steps). Re-applied, it adds nothing."""
    if "steps" not in _columns(m, "promises"):
        m.execute("ALTER TABLE promises ADD COLUMN steps TEXT")


def _v13_sales_cancellation(m: Migrator) -> None:
    """A cancelled sales order line keeps when it was cancelled (NULL while it is not): it is
    closed (no promise, no MRP demand, no sales history) but stays readable with its promises.
    Re-applied, it adds nothing."""
    if "cancelled_at" not in _columns(m, "sales_order_lines"):
        m.execute(f"ALTER TABLE sales_order_lines ADD COLUMN cancelled_at {m.dialect.timestamp}")


def _v10_lots_and_counts(m: Migrator) -> None:
    """Lots and cycle counts: a move may carry a lot (a lot code per item, `lots`), lot balances
    per (item, location, lot) kept with the move like `stock_balances`, the plant's approval
    threshold for adjustments, and counts with their approval (another user approves one above
    the threshold: a named constraint). Moves before this version carry no lot, so the lot
    balances start empty. Re-applied, it adds nothing.
    """
    d = m.dialect
    dec, ts, n = d.decimal, d.timestamp, d.number
    zero = "0" if d.backend == "postgresql" else "'0'"
    if "lot" not in _columns(m, "stock_moves"):
        m.execute("ALTER TABLE stock_moves ADD COLUMN lot TEXT")
    if "adjustment_approval_value" not in _columns(m, "plants"):
        m.execute(
            f"ALTER TABLE plants ADD COLUMN adjustment_approval_value {dec} NOT NULL DEFAULT {zero}"
        )
    statements = [
        f"""CREATE TABLE IF NOT EXISTS lots (
            id {d.id_key},
            item TEXT NOT NULL REFERENCES items (sku),
            code TEXT NOT NULL,
            created_at {ts} NOT NULL,
            CONSTRAINT lots_code_per_item UNIQUE (item, code),
            CONSTRAINT lots_code_not_empty CHECK (code <> '')
        )""",
        f"""CREATE TABLE IF NOT EXISTS stock_lot_balances (
            item TEXT NOT NULL,
            location TEXT NOT NULL REFERENCES locations (code),
            lot TEXT NOT NULL,
            on_hand {dec} NOT NULL,
            CONSTRAINT stock_lot_balances_key PRIMARY KEY (item, location, lot),
            CONSTRAINT stock_lot_balances_lot FOREIGN KEY (item, lot) REFERENCES lots (item, code)
        )""",
        f"""CREATE TABLE IF NOT EXISTS inventory_counts (
            id {d.id_key},
            item TEXT NOT NULL REFERENCES items (sku),
            location TEXT NOT NULL REFERENCES locations (code),
            lot TEXT,
            counted {dec} NOT NULL,
            book {dec} NOT NULL,
            difference {dec} NOT NULL,
            unit_cost {dec} NOT NULL,
            value {dec} NOT NULL,
            threshold {dec} NOT NULL,
            status TEXT NOT NULL,
            counted_by TEXT NOT NULL,
            counted_at {ts} NOT NULL,
            decided_by TEXT,
            decided_at {ts},
            CONSTRAINT inventory_counts_counted_not_negative CHECK ({n("counted")} >= 0),
            CONSTRAINT inventory_counts_status_valid
                CHECK (status IN ('pending', 'posted', 'approved', 'rejected')),
            CONSTRAINT inventory_counts_decided_unless_pending
                CHECK ((status = 'pending') = (decided_at IS NULL)),
            CONSTRAINT inventory_counts_approved_by_another
                CHECK (status <> 'approved' OR (decided_by IS NOT NULL
                    AND decided_by <> counted_by))
        )""",
        "CREATE INDEX IF NOT EXISTS stock_moves_lot ON stock_moves (item, lot)",
        "CREATE INDEX IF NOT EXISTS inventory_counts_status ON inventory_counts (status, id)",
    ]
    for statement in statements:
        m.execute(statement)


def _v11_calendars_and_routes(m: Migrator) -> None:
    """Shift calendars and routings from the master data (replaced whole at every load).

    `line_calendar`: a line's weekly shifts as JSON text ([[weekday, "HH:MM", "HH:MM"], ...],
    Monday = 0, on the wall clock of `timezone`, an IANA name) and its holidays (JSON list of
    ISO dates); a line without a row works round the clock. `item_route`: a line that makes an
    item, at the item's own standard rate there (NULL: the line's). An item without a row can
    be made on every line. Re-applied, it adds nothing.
    """
    n = m.dialect.number
    statements = [
        """CREATE TABLE IF NOT EXISTS line_calendar (
            line TEXT NOT NULL REFERENCES lines (code),
            timezone TEXT NOT NULL,
            shifts TEXT NOT NULL,
            holidays TEXT NOT NULL,
            CONSTRAINT line_calendar_key PRIMARY KEY (line)
        )""",
        f"""CREATE TABLE IF NOT EXISTS item_route (
            item TEXT NOT NULL REFERENCES items (sku),
            line TEXT NOT NULL REFERENCES lines (code),
            standard_rate_per_hour {m.dialect.decimal},
            CONSTRAINT item_route_key PRIMARY KEY (item, line),
            CONSTRAINT item_route_rate_positive
                CHECK (standard_rate_per_hour IS NULL OR {n("standard_rate_per_hour")} > 0)
        )""",
    ]
    for statement in statements:
        m.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "master data, samples, work orders, ledger, promises", _v1_core_schema),
    Migration(2, "counter checkpoints: posting reads only new readings", _v2_counter_checkpoints),
    Migration(3, "dead letters: rejected MQTT messages kept for replay", _v3_dead_letters),
    Migration(4, "1-minute and 1-hour rollups of numeric samples", _v4_rollups),
    Migration(5, "node history: online/offline changes of nodes and devices", _v5_node_history),
    Migration(6, "reservations, negative-stock rule, moving-average valuation", _v6_reservations),
    Migration(7, "item planning data, BOM scrap, MRP runs and their result", _v7_mrp),
    Migration(8, "purchasing: suppliers, orders, confirmations, receipts", _v8_purchasing),
    Migration(9, "promise reason chains: capable-to-promise steps", _v9_promise_steps),
    Migration(10, "lots, lot balances, cycle counts with approval", _v10_lots_and_counts),
    Migration(11, "shift calendars per line, routings", _v11_calendars_and_routes),
    Migration(13, "sales order lines: cancellation", _v13_sales_cancellation),
)
