"""The durable store-and-forward outbox: samples wait here (SQLite, WAL) until the broker has them.

A sample is appended in a committed transaction before anything is published, read back oldest
first, and deleted only after the broker acknowledged the message that carried it (QoS 1
PUBACK). The same file keeps the edge node's small persistent state: the bdSeq counter and the
stable metric alias table.

Durability: WAL with ``synchronous=FULL``. A gateway's worst day is a power cut, not a process
crash; FULL syncs the WAL on every commit, so a committed sample survives both. The cost is one
fsync per commit, and commits are few: one per device poll that changed something and one per
drain round (deletes are batched), far below what a gateway disk sustains.

Bounded on disk: with `max_bytes` set, the outbox never grows past the bound; `when_full` names
what happens at the bound, and neither is silent (the `full` flag and the `dropped` / `refused`
counters are published as node metrics, and entering or leaving the full state is logged once):

- ``refuse`` (default): `append` raises `OutboxFullError`. The poller then keeps its
  report-by-exception baseline, so the first poll after the outbox drains stores the current
  values; PLC counters are absolute, so counts are still exact afterwards (the series only loses
  resolution for the refused period).
- ``drop_oldest``: `append` deletes the oldest samples (in the same transaction) to make room;
  the newest data wins, and the persistent `dropped` counter says how many went.

Power loss: opening runs ``PRAGMA quick_check``. A file that fails it (a torn tail, garbage) is
moved aside as ``<name>.corrupt-<UTC time>``, every row that can still be read (walking the
samples forwards and backwards from both ends, plus bdSeq and aliases) is copied into a fresh
file, and the agent starts; the loss is logged as an error, never a reason to refuse to start.

`Outbox` is synchronous and thread-safe (one connection behind a lock); `AsyncOutbox` runs its
calls in a worker thread so the event loop never waits on an fsync.
"""

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeAlias

from taktline_contract.sparkplug import DataType, from_millis, to_millis
from taktline_edge.errors import OutboxError, OutboxFullError

log = logging.getLogger(__name__)

SampleValue: TypeAlias = int | float | Decimal | bool | str | None
WhenFull: TypeAlias = Literal["refuse", "drop_oldest"]

_SCHEMA_VERSION = 2
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
CREATE INDEX IF NOT EXISTS samples_by_kind ON samples (historical, id);
"""
# Rows deleted at once under drop_oldest: freeing whole pages needs more than one batch's rows.
_DROP_CHUNK = 512
_RECOVER_CHUNK = 1000
_LOW_WATER = 0.9
_FLOATS = frozenset({DataType.FLOAT, DataType.DOUBLE})
_TEXTS = frozenset({DataType.STRING, DataType.TEXT})


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
    return str(value)  # int, Decimal and str round-trip through their text


def _from_text(text: str | None, datatype: DataType) -> SampleValue:
    if text is None:
        return None
    if datatype in _TEXTS:
        return text
    if datatype == DataType.BOOLEAN:
        return text == "1"
    if datatype in _FLOATS:
        return float(text)
    return int(text)


class Outbox:
    """The SQLite outbox file; every method is one transaction."""

    def __init__(
        self, path: str | Path, max_bytes: int | None = None, when_full: WhenFull = "refuse"
    ) -> None:
        if when_full not in ("refuse", "drop_oldest"):
            raise ValueError(f"when_full must be 'refuse' or 'drop_oldest', not {when_full!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.when_full: WhenFull = when_full
        self.full = False
        """Whether the last append met the bound (refused or dropped to make room)."""
        self.refused = 0
        """Samples refused by this process (policy refuse)."""
        self.recovered_from: Path | None = None
        """Where a corrupt file was moved at open, if it was."""
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not _healthy(self.path):
                self._db = self._recover()
            else:
                self._db = self._connect()
                self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode; transactions are explicit (BEGIN IMMEDIATE) in each method.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def _recover(self) -> sqlite3.Connection:
        """Move a corrupt file aside and start a fresh one with every row that can be read."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        self.recovered_from = aside
        samples, state, aliases = _salvage(aside)
        db = self._connect()
        self._db = db
        self._migrate()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO samples (id, device, metric, ts_ms, datatype, value, historical)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            samples,
        )
        db.executemany("INSERT OR REPLACE INTO node_state (key, value) VALUES (?, ?)", state)
        db.executemany(
            "INSERT OR IGNORE INTO aliases (device, metric, alias) VALUES (?, ?, ?)", aliases
        )
        db.execute("COMMIT")
        log.error(
            "outbox %s was corrupt (power loss?): moved to %s; recovered %d buffered samples,"
            " %d aliases; samples in damaged pages are lost",
            self.path,
            aside,
            len(samples),
            len(aliases),
        )
        return db

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > _SCHEMA_VERSION:
            raise OutboxError(f"outbox {self.path} has schema {version}, newer than this agent")
        if version < _SCHEMA_VERSION:
            # The schema is idempotent (IF NOT EXISTS), so version 1 gains the index here.
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
            at_bound = self.max_bytes is not None and self._size_bytes() >= self.max_bytes
            if at_bound and self.when_full == "refuse":
                self.refused += len(rows)
                self._set_full(True)
                raise OutboxFullError(f"outbox {self.path} reached {self.max_bytes} bytes")
            try:
                cursor = self._db.execute("BEGIN IMMEDIATE")
                if at_bound:
                    self._drop_oldest(max(_DROP_CHUNK, 2 * len(rows)))
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
            if at_bound:
                self._set_full(True)
        return ids

    def _low_water(self) -> float:
        # Hysteresis: "full" ends well below the bound, so a drain that frees a page or two
        # does not flap the alarm (and the log) on every poll.
        return (self.max_bytes or 0) * _LOW_WATER

    def _drop_oldest(self, count: int) -> None:
        """Inside a transaction: delete the `count` oldest samples and count them as dropped."""
        cursor = self._db.execute(
            "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
            (count,),
        )
        self._db.execute(
            "INSERT INTO node_state (key, value) VALUES ('dropped', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (cursor.rowcount,),
        )

    def _set_full(self, full: bool) -> None:
        if full == self.full:
            return
        self.full = full
        if full:
            action = "refusing new samples" if self.when_full == "refuse" else "dropping oldest"
            log.error("outbox %s is full (%s bytes): %s", self.path, self.max_bytes, action)
        else:
            log.warning("outbox %s has room again", self.path)

    def dropped(self) -> int:
        """Samples dropped to make room (policy drop_oldest), over the life of the file."""
        with self._lock:
            row = self._db.execute("SELECT value FROM node_state WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row is not None else 0

    def oldest_timestamp(self) -> datetime | None:
        """The timestamp of the oldest waiting sample (None when empty)."""
        with self._lock:
            row = self._db.execute("SELECT ts_ms FROM samples ORDER BY id LIMIT 1").fetchone()
        return from_millis(int(row[0])) if row is not None else None

    def oldest(self, limit: int, historical: bool | None = None) -> list[StoredSample]:
        """Up to `limit` samples, oldest (first appended) first; only of one kind if given."""
        query = "SELECT id, device, metric, ts_ms, datatype, value, historical FROM samples"
        with self._lock:
            if historical is None:
                rows = self._db.execute(f"{query} ORDER BY id LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._db.execute(
                    f"{query} WHERE historical = ? ORDER BY id LIMIT ?", (int(historical), limit)
                ).fetchall()
        out = []
        for row_id, device, metric, ts_ms, datatype, value, flag in rows:
            kind = DataType(datatype)
            sample = Sample(device, metric, from_millis(ts_ms), _from_text(value, kind), kind)
            out.append(StoredSample(row_id, sample, bool(flag)))
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
            # Only a drain ends the full state (dropping makes room too, but is still "full").
            if self.full and self._size_bytes() < self._low_water():
                self._set_full(False)

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

    async def oldest(self, limit: int, historical: bool | None = None) -> list[StoredSample]:
        """See `Outbox.oldest`."""
        return await asyncio.to_thread(self.sync.oldest, limit, historical)

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


def _healthy(path: Path) -> bool:
    """Whether `path` opens as a database that passes SQLite's quick_check."""
    try:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        log.error("outbox %s cannot be read: %s", path, exc)
        return False
    if rows == [("ok",)]:
        return True
    log.error("outbox %s failed its integrity check: %s", path, "; ".join(r[0] for r in rows[:5]))
    return False


_Row: TypeAlias = tuple[object, ...]


def _salvage(path: Path) -> tuple[list[_Row], list[_Row], list[_Row]]:
    """Every readable sample (by id), node state and alias row of a corrupt file."""
    copy = path.with_name(path.name + ".salvage")
    if not _padded_copy(path, copy):
        return [], [], []
    try:
        db = sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True)
        try:
            samples = _salvage_samples(db)
            state = _salvage_all(db, "SELECT key, value FROM node_state")
            aliases = _salvage_all(db, "SELECT device, metric, alias FROM aliases")
        finally:
            db.close()
    except sqlite3.Error:
        return [], [], []
    finally:
        copy.unlink(missing_ok=True)
    return samples, state, aliases


def _padded_copy(path: Path, copy: Path) -> bool:
    """Copy `path`, zero-padded to the size its header claims (SQLite rejects a short file)."""
    data = path.read_bytes()
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        return False
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(data[28:32], "big")
    if page_size < 512:
        return False
    wanted = max(pages * page_size, -(-len(data) // page_size) * page_size)
    copy.write_bytes(data + bytes(wanted - len(data)))
    return True


def _salvage_samples(db: sqlite3.Connection) -> list[_Row]:
    columns = "id, device, metric, ts_ms, datatype, value, historical"
    found: dict[int, _Row] = {}
    # Forwards from the start, then backwards from the end: a torn page in between costs only
    # the rows on it (and the rows between, which a b-tree walk cannot reach past it).
    for order, compare, start in (("ASC", ">", -1), ("DESC", "<", 2**63 - 1)):
        last = start
        chunk = _RECOVER_CHUNK
        while True:
            try:
                rows = db.execute(
                    f"SELECT {columns} FROM samples WHERE id {compare} ? ORDER BY id {order}"
                    " LIMIT ?",
                    (last, chunk),
                ).fetchall()
            except sqlite3.DatabaseError:
                if chunk == 1:
                    break
                chunk = max(1, chunk // 8)  # creep up to the damaged page
                continue
            if not rows:
                break
            for row in rows:
                if _valid_sample(row):
                    found[int(row[0])] = row
            last = int(rows[-1][0])
    return [found[i] for i in sorted(found)]


def _valid_sample(row: _Row) -> bool:
    row_id, device, metric, ts_ms, datatype, _value, historical = row
    if not (isinstance(row_id, int) and isinstance(device, str) and isinstance(metric, str)):
        return False
    if not (isinstance(ts_ms, int) and isinstance(datatype, int) and historical in (0, 1)):
        return False
    try:
        DataType(datatype)
    except ValueError:
        return False
    return True


def _salvage_all(db: sqlite3.Connection, query: str) -> list[_Row]:
    out: list[_Row] = []
    try:
        for row in db.execute(query):
            out.append(tuple(row))
    except sqlite3.DatabaseError:
        pass  # keep what was read before the damaged page
    return out
