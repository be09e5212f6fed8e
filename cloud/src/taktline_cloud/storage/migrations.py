"""Versioned schema migrations, applied in order at open; `schema_version` records each one.

A migration is frozen once released: change the schema by adding a new one. Invariants are
named constraints, so a violation names the rule it broke.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from taktline_cloud.storage.sql import Dialect

log = logging.getLogger(__name__)


class Migrator(Protocol):
    """What a migration may do: run statements, and ask PostgreSQL about extensions."""

    dialect: Dialect

    def execute(self, statement: str, params: Sequence[object] = ()) -> object:
        """Run one DDL statement."""

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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "master data, samples, work orders, ledger, promises", _v1_core_schema),
    Migration(2, "counter checkpoints: posting reads only new readings", _v2_counter_checkpoints),
)
