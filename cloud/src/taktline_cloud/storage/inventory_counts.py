"""Cycle counts' queries (SQL only here).

Beside `Session`, on its connection and inside its transaction: a count's row and the
adjustment moves it posts (through `Session.append_moves`) commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from taktline_cloud.errors import StorageError
from taktline_cloud.inventory.counts import Count, CountStatus
from taktline_cloud.storage.session import Session
from taktline_cloud.storage.sql import to_datetime, to_datetime_or_none, to_decimal

_COLUMNS = (
    "id, item, location, lot, counted, book, unit_cost, threshold, status, counted_by,"
    " counted_at, decided_by, decided_at"
)


def _count(row: Sequence[Any]) -> Count:
    try:
        status = CountStatus(row[8])
    except ValueError as exc:
        raise StorageError(f"count {row[0]} has unknown status {row[8]!r}") from exc
    return Count(
        id=int(row[0]),
        item=row[1],
        location=row[2],
        lot=row[3],
        counted=to_decimal(row[4]),
        book=to_decimal(row[5]),
        unit_cost=to_decimal(row[6]),
        threshold=to_decimal(row[7]),
        status=status,
        counted_by=row[9],
        counted_at=to_datetime(row[10]),
        decided_by=row[11],
        decided_at=to_datetime_or_none(row[12]),
    )


class CountStore:
    """Counts over one session's transaction."""

    def __init__(self, tx: Session) -> None:
        self._tx = tx
        self._x = tx.executor

    def insert(self, count: Count) -> Count:
        """Store a new count (its `id` is ignored); the stored count with its id."""
        inserted = self._x.query(
            "INSERT INTO inventory_counts (item, location, lot, counted, book, difference,"
            " unit_cost, value, threshold, status, counted_by, counted_at, decided_by,"
            " decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                count.item,
                count.location,
                count.lot,
                count.counted,
                count.book,
                count.difference,
                count.unit_cost,
                count.value,
                count.threshold,
                str(count.status),
                count.counted_by,
                count.counted_at,
                count.decided_by,
                count.decided_at,
            ),
        )
        return Count(
            int(inserted[0][0]),
            count.item,
            count.location,
            count.lot,
            count.counted,
            count.book,
            count.unit_cost,
            count.threshold,
            count.status,
            count.counted_by,
            count.counted_at,
            count.decided_by,
            count.decided_at,
        )

    def get(self, count_id: int, *, lock: bool = False) -> Count | None:
        """The count with this id, if any (`lock`: FOR UPDATE on PostgreSQL, so two decisions
        on one count run one after the other; SQLite has one writer)."""
        suffix = " FOR UPDATE" if lock and self._x.dialect.backend == "postgresql" else ""
        rows = self._x.query(
            f"SELECT {_COLUMNS} FROM inventory_counts WHERE id = ?" + suffix, (count_id,)
        )
        return _count(rows[0]) if rows else None

    def decide(self, count_id: int, status: CountStatus, user: str, at: datetime) -> None:
        """Record the decision on a (locked, pending) count."""
        self._x.execute(
            "UPDATE inventory_counts SET status = ?, decided_by = ?, decided_at = ?"
            " WHERE id = ? AND status = ?",
            (str(status), user, at, count_id, str(CountStatus.PENDING)),
        )

    def counts(self, status: CountStatus | None = None, item: str | None = None) -> list[Count]:
        """Counts, newest first (of one status and/or item, or all)."""
        where: list[str] = []
        params: list[object] = []
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        if item is not None:
            where.append("item = ?")
            params.append(item)
        statement = f"SELECT {_COLUMNS} FROM inventory_counts"
        if where:
            statement += " WHERE " + " AND ".join(where)
        return [_count(r) for r in self._x.query(statement + " ORDER BY id DESC", params)]
