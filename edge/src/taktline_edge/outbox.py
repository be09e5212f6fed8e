"""The durable store-and-forward outbox: samples wait here (SQLite, WAL) until the broker has them.

A sample is appended in a committed transaction before anything is published, read back oldest
first, and deleted only after the broker acknowledged the message that carried it (QoS 1
PUBACK). The same file keeps the edge node's small persistent state: the bdSeq counter and the
stable metric alias table.

Durability: WAL with ``synchronous=FULL``. A gateway's worst day is a power cut, not a process
crash; FULL syncs the WAL on every commit, so a committed sample survives both. The cost is one
fsync per commit, and commits are few: one per device poll that changed something and one per
drain round (deletes are batched), far below what a gateway disk sustains.

Bounded on disk: with `max_bytes` set, `append` raises `OutboxFullError` instead of growing past the
bound (policy: refuse newest). The poller then keeps its report-by-exception baseline, so the
first poll after the outbox drains stores the current values; PLC counters are absolute, so
counts are still exact afterwards (the series only loses resolution for the refused period).

`Outbox` is synchronous and thread-safe (one connection behind a lock); `AsyncOutbox` runs its
calls in a worker thread so the event loop never waits on an fsync.
"""

import asyncio
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeAlias

from taktline_contract.sparkplug import DataType, from_millis, to_millis
from taktline_edge.errors import OutboxError, OutboxFullError

SampleValue: TypeAlias = int | float | Decimal | bool | None

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    datatype INTEGER NOT NULL,
    value TEXT,
    historical INTEGER NOT NULL CHECK (historical IN (0, 1))
);
CREATE TABLE IF NOT EXISTS node_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    alias INTEGER NOT NULL CONSTRAINT aliases_alias_unique UNIQUE,
    PRIMARY KEY (device, metric)
);
"""
_FLOATS = frozenset({DataType.FLOAT, DataType.DOUBLE})


@dataclass(frozen=True, slots=True)
class Sample:
    """One reported value of one device's metric at one moment (UTC)."""

    device: str
    metric: str
    timestamp: datetime
    value: SampleValue
    datatype: DataType


@dataclass(frozen=True, slots=True)
class StoredSample:
    """A sample in the outbox: its row id (the publish order) and whether it is historical."""

    id: int
    sample: Sample
    historical: bool


def _to_text(value: SampleValue) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def _from_text(text: str | None, datatype: DataType) -> SampleValue:
    if text is None:
        return None
    if datatype == DataType.BOOLEAN:
        return text == "1"
    if datatype in _FLOATS:
        return float(text)
    return int(text)


class Outbox:
    """The SQLite outbox file; every method is one transaction."""

    def __init__(self, path: str | Path, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode; transactions are explicit (BEGIN IMMEDIATE) in each method.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > _SCHEMA_VERSION:
            raise OutboxError(f"outbox {self.path} has schema {version}, newer than this agent")
        if version < _SCHEMA_VERSION:
            self._db.executescript(
                f"BEGIN; {_SCHEMA} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;"
            )

    def close(self) -> None:
        """Close the file (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # samples

    def append(self, samples: Sequence[Sample], historical: bool = False) -> list[int]:
        """Store `samples` in one committed transaction; return their row ids (in order)."""
        if not samples:
            return []
        rows = [
            (
                s.device,
                s.metric,
                to_millis(s.timestamp),
                int(s.datatype),
                _to_text(s.value),
                int(historical),
            )
            for s in samples
        ]
        with self._lock:
            if self.max_bytes is not None and self._size_bytes() >= self.max_bytes:
                raise OutboxFullError(f"outbox {self.path} reached {self.max_bytes} bytes")
            try:
                cursor = self._db.execute("BEGIN IMMEDIATE")
                ids = []
                for row in rows:
                    cursor = self._db.execute(
                        "INSERT INTO samples (device, metric, ts_ms, datatype, value, historical)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot append to outbox {self.path}: {exc}") from exc
        return ids

    def oldest(self, limit: int) -> list[StoredSample]:
        """Up to `limit` samples, oldest (first appended) first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, device, metric, ts_ms, datatype, value, historical FROM samples"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        out = []
        for row_id, device, metric, ts_ms, datatype, value, historical in rows:
            kind = DataType(datatype)
            sample = Sample(device, metric, from_millis(ts_ms), _from_text(value, kind), kind)
            out.append(StoredSample(row_id, sample, bool(historical)))
        return out

    def delete(self, ids: Iterable[int]) -> None:
        """Remove acknowledged samples."""
        batch = [(i,) for i in ids]
        if not batch:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM samples WHERE id = ?", batch)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot delete from outbox {self.path}: {exc}") from exc

    def mark_all_historical(self) -> int:
        """Flag every waiting sample historical (at a new birth: they predate its values)."""
        with self._lock:
            cursor = self._db.execute("UPDATE samples SET historical = 1 WHERE historical = 0")
            return cursor.rowcount

    def depth(self) -> int:
        """Number of samples waiting."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM samples").fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes of the database pages in use (free pages are reused, so they do not count)."""
        with self._lock:
            return self._size_bytes()

    def _size_bytes(self) -> int:
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    # node state

    def next_bd_seq(self) -> int:
        """The bdSeq of the next MQTT session, 0..255 (persisted, so a restart never reuses one)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT value FROM node_state WHERE key = 'next_bd_seq'"
                ).fetchone()
                current = int(row[0]) if row is not None else 0
                self._db.execute(
                    "INSERT INTO node_state (key, value) VALUES ('next_bd_seq', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    ((current + 1) % 256,),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot update bdSeq in {self.path}: {exc}") from exc
        return current

    def aliases(self, device: str, metrics: Sequence[str]) -> dict[str, int]:
        """Stable aliases of `device`'s `metrics`; new ones are assigned and kept."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                known = dict(
                    self._db.execute(
                        "SELECT metric, alias FROM aliases WHERE device = ?", (device,)
                    ).fetchall()
                )
                # Alias 0 is left out: some hosts treat it as "no alias".
                next_alias = int(
                    self._db.execute("SELECT coalesce(max(alias), 0) + 1 FROM aliases").fetchone()[
                        0
                    ]
                )
                for metric in metrics:
                    if metric not in known:
                        self._db.execute(
                            "INSERT INTO aliases (device, metric, alias) VALUES (?, ?, ?)",
                            (device, metric, next_alias),
                        )
                        known[metric] = next_alias
                        next_alias += 1
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot assign aliases in {self.path}: {exc}") from exc
        return {metric: int(known[metric]) for metric in metrics}

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


class AsyncOutbox:
    """`Outbox` for the event loop: each call runs in a worker thread."""

    def __init__(self, outbox: Outbox) -> None:
        self.sync = outbox

    async def append(self, samples: Sequence[Sample], historical: bool = False) -> list[int]:
        """See `Outbox.append`."""
        return await asyncio.to_thread(self.sync.append, samples, historical)

    async def oldest(self, limit: int) -> list[StoredSample]:
        """See `Outbox.oldest`."""
        return await asyncio.to_thread(self.sync.oldest, limit)

    async def delete(self, ids: Sequence[int]) -> None:
        """See `Outbox.delete`."""
        await asyncio.to_thread(self.sync.delete, ids)

    async def mark_all_historical(self) -> int:
        """See `Outbox.mark_all_historical`."""
        return await asyncio.to_thread(self.sync.mark_all_historical)

    async def depth(self) -> int:
        """See `Outbox.depth`."""
        return await asyncio.to_thread(self.sync.depth)

    async def next_bd_seq(self) -> int:
        """See `Outbox.next_bd_seq`."""
        return await asyncio.to_thread(self.sync.next_bd_seq)

    async def aliases(self, device: str, metrics: Sequence[str]) -> dict[str, int]:
        """See `Outbox.aliases`."""
        return await asyncio.to_thread(self.sync.aliases, device, metrics)
