"""The durable store-and-forward outbox: samples wait here (SQLite, WAL) until the broker has them.

A sample is appended in a committed transaction before anything is published, read back oldest
first, and marked sent only after the broker acknowledged the message that carried it (QoS 1
PUBACK). The same file keeps the edge node's small persistent state: the bdSeq counter and the
stable metric alias table.

Replay window: a broker's PUBACK is not end to end. A Sparkplug primary host must connect with a
clean session, so what the broker delivered (or was about to deliver) to a host ingest worker
that is then killed, and what a non-persistent broker held when it restarted, is gone. So an
acknowledged row is not deleted at once: `mark_sent` stamps it with the time and keeps it for
`replay_window_s` (0: delete at once). `rearm` makes the rows sent since a moment unsent again,
flagged historical (so replayed values never override a host's current values); the publisher
calls it when the host may have lost them (an offline STATE, a lost broker connection, the
agent's start) and they go out again, in order, with the backlog. Re-sending is always safe: the
host keys samples by (machine, metric, timestamp), so a repeat is a no-op there, and at-least-once
delivery plus idempotent keys gives an exactly-once effect end to end. `purge_sent` deletes
rows sent before the window, in batches. Sent rows are invisible to reading and to the depth
and age (`oldest`, `depth`, `oldest_timestamp` see unsent rows only, through a partial index,
so retained rows cost the drain nothing); they count towards `max_bytes`, and they are the first
thing to go when room is needed (see below). The window is measured on the wall clock.

Durability: WAL with ``synchronous=FULL``. A gateway's worst day is a power cut, not a process
crash; FULL syncs the WAL on every commit, so a committed sample survives both. Commits are few:
`AsyncOutbox` merges the appends that arrive while a commit is in progress into the next one (group
commit: one fsync for many devices' polls), and the publisher marks sent in batches (one
statement per run of consecutive ids). Marking sent, purging, re-arming and deleting commit with
``synchronous=NORMAL``: a power cut can undo only the last of them, which brings acknowledged rows
back to be sent again (at least once, as QoS 1 is anyway; the host keys samples by timestamp),
never loses one; the next append's sync makes them durable too.

Bounded on disk: with `max_bytes` set, the outbox never grows past the bound (sent rows in the
window count too). At the bound, sent rows are purged first (oldest first, until below the
bound); only when none is left does `when_full` decide, and neither choice is silent (the `full`
flag and the `dropped` / `refused` counters are published as node metrics, and entering or
leaving the full state is logged once). While full, acknowledged rows are deleted at once (no
window): unsent data needs the room more than a replay does.

- ``refuse`` (default): `append` raises `OutboxFullError`. The poller then keeps its
  report-by-exception baseline, so the first poll after the outbox drains stores the current
  values; PLC counters are absolute, so counts are still exact afterwards (the series only loses
  resolution for the refused period).
- ``drop_oldest``: `append` deletes the oldest unsent samples (in the same transaction) to make
  room; the newest data wins, and the persistent `dropped` counter says how many went.

A full disk (SQLite's SQLITE_FULL; a file size limit or a failing disk shows as SQLITE_IOERR) is
met like the bound, whatever `when_full` says (there is no room even to drop into): `append`
raises `OutboxFullError` naming the disk (`OutboxError` for an I/O error), the samples count as
refused and `full` stays set until appends succeed again (for `disk_full_hold_s`, so a disk that
has room only now and then does not flap the alarm). After such a failure the WAL is
checkpointed, so the next transactions reuse its space rather than grow it, the sent rows are
purged, and a mark or delete that failed for room is tried once more (as a delete): the drain
that frees space keeps working. Every other SQLite failure is an `OutboxError`, never a bare
``sqlite3`` exception.

Power loss: a WAL left behind by a crash is looked at before anything opens the file: frames
written after its last intact commit (a transaction cut short, or a torn or lost tail) are
discarded by SQLite, and how many were is logged. Opening then runs ``PRAGMA quick_check``. A
file that fails it (a torn tail, garbage) is moved aside as ``<name>.corrupt-<UTC time>`` (with
its WAL), every row that can still be read (walking the samples forwards and backwards from both
ends, plus bdSeq and aliases) is copied into a fresh file, and the agent starts; the loss is
logged as an error, never a reason to refuse to start. Salvaged rows come back unsent (a sent
one is sent again: harmless, see the replay window).

`Outbox` is synchronous and thread-safe (one connection behind a lock); `AsyncOutbox` runs its
calls in a worker thread so the event loop never waits on an fsync.
"""

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

from taktline_contract.sparkplug import DataType, from_millis, to_millis
from taktline_edge.errors import OutboxError, OutboxFullError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
SampleValue: TypeAlias = int | float | Decimal | bool | str | None
WhenFull: TypeAlias = Literal["refuse", "drop_oldest"]

DEFAULT_REPLAY_WINDOW_S = 60.0
"""How long acknowledged samples are kept to be sent again if the host may have lost them."""

_SCHEMA_VERSION = 3
# Version 3 added sent_ms (NULL: not sent yet; else when the broker acknowledged it, Unix ms).
_TABLES = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    datatype INTEGER NOT NULL,
    value TEXT,
    historical INTEGER NOT NULL CHECK (historical IN (0, 1)),
    sent_ms INTEGER
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
# Partial indexes: the drain reads each stream (historical flag) of unsent rows in id order
# without stepping over the retained sent rows, and purge / re-arm find those by time alone.
_INDEXES = """
DROP INDEX IF EXISTS samples_by_kind;
CREATE INDEX IF NOT EXISTS samples_unsent ON samples (historical, id) WHERE sent_ms IS NULL;
CREATE INDEX IF NOT EXISTS samples_sent ON samples (sent_ms) WHERE sent_ms IS NOT NULL;
"""
_COLUMNS = "id, device, metric, ts_ms, datatype, value, historical"
# Unsent rows of both streams, merged in id order (SQLite merges the two index walks).
_UNSENT = (
    "SELECT {columns} FROM samples WHERE sent_ms IS NULL AND historical = 0"
    " UNION ALL SELECT {columns} FROM samples WHERE sent_ms IS NULL AND historical = 1"
    " ORDER BY id LIMIT ?"
)
# Rows deleted at once under drop_oldest: freeing whole pages needs more than one batch's rows.
_DROP_CHUNK = 512
# Sent rows deleted per purge transaction (appends wait for the lock in between).
_PURGE_CHUNK = 5000
_RECOVER_CHUNK = 1000
_LOW_WATER = 0.9
_FLOATS = frozenset({DataType.FLOAT, DataType.DOUBLE})
_DATATYPES = {int(kind): kind for kind in DataType}
_FullReason: TypeAlias = Literal["bound", "disk"]
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
        self,
        path: str | Path,
        max_bytes: int | None = None,
        when_full: WhenFull = "refuse",
        replay_window_s: float = DEFAULT_REPLAY_WINDOW_S,
    ) -> None:
        if when_full not in ("refuse", "drop_oldest"):
            raise ValueError(f"when_full must be 'refuse' or 'drop_oldest', not {when_full!r}")
        if not 0 <= replay_window_s < float("inf"):
            raise ValueError(
                f"replay_window_s must be a number of seconds >= 0, not {replay_window_s!r}"
            )
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.when_full: WhenFull = when_full
        self.replay_window_s = replay_window_s
        """How long `mark_sent` keeps acknowledged rows (0: it deletes them at once)."""
        self._full: _FullReason | None = None
        self.refused = 0
        """Samples refused by this process (policy refuse, or a full disk)."""
        self.recovered_from: Path | None = None
        """Where a corrupt file was moved at open, if it was."""
        self.disk_full_hold_s = 10.0
        """After a write failed for room, `full` stays set until appends succeed this long."""
        self._write_failed_at = 0.0
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

    @property
    def full(self) -> bool:
        """Whether the outbox is at its bound (refusing or dropping) or the disk is full."""
        return self._full is not None

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
            # The schema is idempotent (IF NOT EXISTS): a new file gets it whole; versions 1 and
            # 2 gain the sent_ms column (their rows are unsent) and version 3's indexes.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
            add = (
                "ALTER TABLE samples ADD COLUMN sent_ms INTEGER;"
                if columns and "sent_ms" not in columns
                else ""
            )
            self._db.executescript(
                f"BEGIN; {_TABLES} {add} {_INDEXES} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;"
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
        return self.append_batches([(samples, historical)])[0]

    def append_batches(self, batches: Sequence[tuple[Sequence[Sample], bool]]) -> list[list[int]]:
        """Store several (samples, historical) batches in one committed transaction.

        Returns each batch's row ids, in order. All or nothing: at the bound (policy refuse), on
        a full disk or any other failure no batch is stored and the error is raised.
        """
        rows = [
            (
                s.device,
                s.metric,
                to_millis(s.timestamp),
                int(s.datatype),
                _to_text(s.value),
                int(historical),
            )
            for samples, historical in batches
            for s in samples
        ]
        if not rows:
            return [[] for _ in batches]
        with self._lock:
            try:
                at_bound = self._at_bound()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read the size of outbox {self.path}: {exc}") from exc
            if at_bound:
                # Sent rows go first: unsent ones are dropped or refused only when none is left.
                at_bound = self._purge_for_room(max(_DROP_CHUNK, 2 * len(rows)))
            if at_bound and self.when_full == "refuse":
                self.refused += len(rows)
                self._set_full("bound")
                raise OutboxFullError(f"outbox {self.path} reached {self.max_bytes} bytes")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if at_bound:
                    self._drop_oldest(max(_DROP_CHUNK, 2 * len(rows)))
                self._db.executemany(
                    "INSERT INTO samples (device, metric, ts_ms, datatype, value, historical)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # One writer, AUTOINCREMENT: the rows of one transaction get consecutive ids.
                last = int(self._db.execute("SELECT last_insert_rowid()").fetchone()[0])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                reason = _cannot_write(exc)
                if reason is None:
                    raise OutboxError(f"cannot append to outbox {self.path}: {exc}") from exc
                self.refused += len(rows)
                self._write_failed_at = time.monotonic()
                self._set_full("disk", f"{reason}: {exc}")
                self._make_room()
                error = OutboxFullError if reason == _DISK_FULL else OutboxError
                raise error(
                    f"outbox {self.path}: {reason} ({exc}); samples are refused until it can"
                    " be written again"
                ) from exc
            if at_bound:
                self._set_full("bound")
            elif self._full == "disk" and time.monotonic() - self._write_failed_at > (
                self.disk_full_hold_s
            ):
                self._set_full(None)  # the disk has had room for a while
        out = []
        next_id = last - len(rows) + 1
        for samples, _ in batches:
            out.append(list(range(next_id, next_id + len(samples))))
            next_id += len(samples)
        return out

    def _low_water(self) -> float:
        # Hysteresis: "full" ends well below the bound, so a drain that frees a page or two
        # does not flap the alarm (and the log) on every poll.
        return (self.max_bytes or 0) * _LOW_WATER

    def _at_bound(self) -> bool:
        return self.max_bytes is not None and self._size_bytes() >= self.max_bytes

    def _purge_for_room(self, chunk: int) -> bool:
        """At the bound: purge sent rows, oldest first, until below it; whether still at it."""
        try:
            while True:
                purged = self._write_relaxed(lambda: self._purge_chunk(None, chunk))
                if purged == 0:
                    return True
                if not self._at_bound():
                    return False
                if purged < chunk:
                    return True
        except sqlite3.Error as exc:
            if _cannot_write(exc) is None:
                raise OutboxError(f"cannot purge sent rows from {self.path}: {exc}") from exc
            return True  # no room even to delete: the append meets the disk below

    def _purge_chunk(self, before_ms: int | None, limit: int) -> int:
        """Inside a transaction: delete up to `limit` sent rows (sent before `before_ms`)."""
        where = "sent_ms IS NOT NULL" if before_ms is None else "sent_ms < ?"
        params: tuple[int, ...] = (limit,) if before_ms is None else (before_ms, limit)
        cursor = self._db.execute(
            "DELETE FROM samples WHERE id IN"
            f" (SELECT id FROM samples WHERE {where} ORDER BY sent_ms LIMIT ?)",
            params,
        )
        return cursor.rowcount

    def _drop_oldest(self, count: int) -> None:
        """Inside a transaction: delete the `count` oldest unsent samples, counted as dropped."""
        cursor = self._db.execute(
            f"DELETE FROM samples WHERE id IN ({_UNSENT.format(columns='id')})", (count,)
        )
        self._db.execute(
            "INSERT INTO node_state (key, value) VALUES ('dropped', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (cursor.rowcount,),
        )

    def _set_full(self, reason: "_FullReason | None", detail: str = "") -> None:
        if reason == self._full:
            return
        self._full = reason
        if reason == "bound":
            action = "refusing new samples" if self.when_full == "refuse" else "dropping oldest"
            log.error("outbox %s is full (%s bytes): %s", self.path, self.max_bytes, action)
        elif reason == "disk":
            log.error("outbox %s cannot be written (%s): refusing new samples", self.path, detail)
        else:
            log.warning("outbox %s has room again", self.path)

    def dropped(self) -> int:
        """Samples dropped to make room (policy drop_oldest), over the life of the file."""
        row = self._read_one("SELECT value FROM node_state WHERE key = 'dropped'")
        return int(row[0]) if row is not None else 0

    def oldest_timestamp(self) -> datetime | None:
        """The timestamp of the oldest waiting (unsent) sample (None when there is none)."""
        row = self._read_one(
            f"SELECT ts_ms FROM samples WHERE id = ({_UNSENT.format(columns='id')})", (1,)
        )
        return from_millis(int(row[0])) if row is not None else None

    def oldest(self, limit: int, historical: bool | None = None) -> list[StoredSample]:
        """Up to `limit` unsent samples, oldest (first appended) first; of one kind if given."""
        with self._lock:
            try:
                if historical is None:
                    query = _UNSENT.format(columns=_COLUMNS)
                    rows = self._db.execute(query, (limit,)).fetchall()
                else:
                    rows = self._db.execute(
                        f"SELECT {_COLUMNS} FROM samples"
                        " WHERE sent_ms IS NULL AND historical = ? ORDER BY id LIMIT ?",
                        (int(historical), limit),
                    ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        # The replay's hot path: a poll's samples share one timestamp, so convert each once.
        stamps: dict[int, datetime] = {}
        out = []
        unreadable: list[tuple[int, str]] = []
        for row_id, device, metric, ts_ms, datatype, value, flag in rows:
            try:
                kind = _datatype(datatype)
                stamp = stamps.get(ts_ms)
                if stamp is None:
                    stamp = stamps[ts_ms] = from_millis(ts_ms)
                sample = Sample(device, metric, stamp, _from_text(value, kind), kind)
            except (ValueError, OverflowError, OSError) as exc:
                unreadable.append((row_id, str(exc)))
                continue
            out.append(StoredSample(row_id, sample, flag == 1))
        if unreadable:
            self._discard(unreadable)
        return out

    def _discard(self, rows: Sequence[tuple[int, str]]) -> None:
        """Delete rows that cannot be decoded: left in place they would block the drain forever."""
        self.delete(row_id for row_id, _ in rows)
        first_id, reason = rows[0]
        log.error(
            "outbox %s: %d unreadable sample row(s) discarded (row %d: %s)",
            self.path,
            len(rows),
            first_id,
            reason,
        )

    def delete(self, ids: Iterable[int]) -> None:
        """Remove samples for good (rows that can never be published; acks go to `mark_sent`)."""
        self._settle(ids, None)

    def mark_sent(self, ids: Iterable[int], at: datetime | None = None) -> None:
        """Acknowledged samples: keep them as sent at `at` (default now) for the replay window.

        They are deleted at once when the window is 0, and while the outbox is full (the room
        is worth more than a replay).
        """
        self._settle(ids, to_millis(at or datetime.now(UTC)))

    def _settle(self, ids: Iterable[int], sent_ms: int | None) -> None:
        """Delete rows `ids` (`sent_ms` None) or mark them sent at `sent_ms`."""
        runs = _runs(ids)
        if not runs:
            return
        with self._lock:
            keep = sent_ms is not None and self.replay_window_s > 0 and self._full is None
            try:
                try:
                    self._write_relaxed(lambda: self._settle_runs(runs, sent_ms if keep else None))
                except sqlite3.Error as exc:
                    if _cannot_write(exc) is None:
                        raise
                    # A full disk: the WAL's space, once checkpointed, can take a delete.
                    self._make_room()
                    self._write_relaxed(lambda: self._settle_runs(runs, None))
                # Only a drain ends the full state (dropping makes room too, but is still "full").
                self._maybe_room_again()
            except sqlite3.Error as exc:
                what = "mark sent rows in" if sent_ms is not None else "delete from"
                raise OutboxError(f"cannot {what} outbox {self.path}: {exc}") from exc

    def _settle_runs(self, runs: Sequence[tuple[int, int]], sent_ms: int | None) -> None:
        if sent_ms is None:
            self._db.executemany("DELETE FROM samples WHERE id BETWEEN ? AND ?", runs)
        else:
            self._db.executemany(
                "UPDATE samples SET sent_ms = ? WHERE id BETWEEN ? AND ? AND sent_ms IS NULL",
                [(sent_ms, first, last) for first, last in runs],
            )

    def purge_sent(self, before: datetime) -> int:
        """Delete the rows sent before `before` (the window's start), in batches; how many."""
        before_ms = to_millis(before)
        total = 0
        while True:
            with self._lock:  # released between batches: appends need not wait for a purge
                try:
                    purged = self._write_relaxed(lambda: self._purge_chunk(before_ms, _PURGE_CHUNK))
                    if purged:
                        self._maybe_room_again()
                except sqlite3.Error as exc:
                    raise OutboxError(f"cannot purge outbox {self.path}: {exc}") from exc
            total += purged
            if purged < _PURGE_CHUNK:
                return total

    def rearm(self, since: datetime | None = None) -> int:
        """Make the rows sent at or after `since` (all sent rows: None) unsent again, historical.

        For when the host may have lost them; they go out again in order with the backlog.
        Returns how many.
        """
        where = "sent_ms IS NOT NULL" if since is None else "sent_ms >= ?"
        params: tuple[int, ...] = () if since is None else (to_millis(since),)

        def rearm() -> int:
            cursor = self._db.execute(
                f"UPDATE samples SET sent_ms = NULL, historical = 1 WHERE {where}", params
            )
            return cursor.rowcount

        with self._lock:
            try:
                return self._write_relaxed(rearm)
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot re-arm sent rows in {self.path}: {exc}") from exc

    def _write_relaxed(self, write: Callable[[], _T]) -> _T:
        """Run `write` in a transaction committed with synchronous=NORMAL; its result.

        Not FULL: whatever a power cut undoes of a delete, mark or re-arm only sends rows again
        (and at the next start every retained row is re-armed anyway).
        """
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = write()
            self._db.execute("COMMIT")
        finally:
            self._rollback()
            self._db.execute("PRAGMA synchronous=FULL")
        return result

    def _maybe_room_again(self) -> None:
        if self._full == "bound" and self._size_bytes() < self._low_water():
            self._set_full(None)

    def _make_room(self) -> None:
        """After a write failed for room: checkpoint, then purge the sent rows.

        Once the WAL is checkpointed, the next transaction writes it from its start again
        instead of growing it; on a full disk that is room that needs no new block. Rows kept
        only for a replay are the first to give their pages to unsent ones.
        """
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._write_relaxed(lambda: self._purge_chunk(None, -1))  # LIMIT -1: all of them
        except sqlite3.Error as exc:
            log.debug("making room in %s after a failed write failed too: %s", self.path, exc)

    def mark_all_historical(self) -> int:
        """Flag every waiting sample historical (at a new birth: they predate its values)."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "UPDATE samples SET historical = 1 WHERE historical = 0 AND sent_ms IS NULL"
                )
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot flag samples in outbox {self.path}: {exc}") from exc
            return cursor.rowcount

    def depth(self) -> int:
        """Number of samples waiting (unsent; rows kept for the replay window do not count)."""
        row = self._read_one("SELECT count(*) FROM samples WHERE sent_ms IS NULL")
        return int(row[0]) if row is not None else 0

    def retained(self) -> int:
        """Number of sent samples kept for the replay window."""
        row = self._read_one("SELECT count(*) FROM samples WHERE sent_ms IS NOT NULL")
        return int(row[0]) if row is not None else 0

    def size_bytes(self) -> int:
        """Bytes of the database pages in use (free pages are reused, so they do not count)."""
        with self._lock:
            try:
                return self._size_bytes()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read the size of outbox {self.path}: {exc}") from exc

    def _size_bytes(self) -> int:
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    def _read_one(self, query: str, params: tuple[int, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            try:
                row: tuple[Any, ...] | None = self._db.execute(query, params).fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return row

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


@dataclass(slots=True, eq=False)  # compared by identity: `in` must not compare samples
class _PendingAppend:
    samples: Sequence[Sample]
    historical: bool
    done: "asyncio.Future[list[int]]"


class AsyncOutbox:
    """`Outbox` for the event loop: each call runs in a worker thread; appends commit in groups."""

    def __init__(self, outbox: Outbox) -> None:
        self.sync = outbox
        self.commits = 0
        """Append transactions run (fewer than appends: group commit)."""
        self._pending: list[_PendingAppend] = []
        self._committing = asyncio.Lock()

    async def append(self, samples: Sequence[Sample], historical: bool = False) -> list[int]:
        """See `Outbox.append`; appends that arrive during a commit share the next one."""
        if not samples:
            return []
        loop = asyncio.get_running_loop()
        entry = _PendingAppend(samples, historical, loop.create_future())
        self._pending.append(entry)
        try:
            async with self._committing:
                # Still waiting (no commit took it while we queued for the lock): commit
                # everything that waits now, ours included, in one transaction.
                if not entry.done.done() and entry in self._pending:
                    batch, self._pending = self._pending, []
                    commit = loop.run_in_executor(
                        None, self.sync.append_batches, [(e.samples, e.historical) for e in batch]
                    )
                    commit.add_done_callback(lambda done: _settle(batch, done))
                    self.commits += 1
                    # wait() neither cancels the commit when this caller is cancelled (the
                    # others' samples still get their answer) nor raises its error: each waiter
                    # gets it.
                    await asyncio.wait({commit})
        except BaseException:
            # Cancelled (the agent stopping): nobody will read our answer, so a late error (the
            # outbox closed meanwhile) must not be logged as a never-retrieved one.
            entry.done.cancel()
            raise
        return await entry.done

    async def oldest(self, limit: int, historical: bool | None = None) -> list[StoredSample]:
        """See `Outbox.oldest`."""
        return await asyncio.to_thread(self.sync.oldest, limit, historical)

    @property
    def replay_window_s(self) -> float:
        """See `Outbox.replay_window_s`."""
        return self.sync.replay_window_s

    async def delete(self, ids: Sequence[int]) -> None:
        """See `Outbox.delete`."""
        await asyncio.to_thread(self.sync.delete, ids)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """See `Outbox.mark_sent`."""
        await asyncio.to_thread(self.sync.mark_sent, ids)

    async def purge_sent(self, before: datetime) -> int:
        """See `Outbox.purge_sent`."""
        return await asyncio.to_thread(self.sync.purge_sent, before)

    async def rearm(self, since: datetime | None = None) -> int:
        """See `Outbox.rearm`."""
        return await asyncio.to_thread(self.sync.rearm, since)

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


def _settle(batch: Sequence[_PendingAppend], commit: "asyncio.Future[list[list[int]]]") -> None:
    """Hand each waiting append its row ids, or the commit's error."""
    if commit.cancelled():
        for entry in batch:
            entry.done.cancel()
        return
    error = commit.exception()
    if error is None:
        for entry, ids in zip(batch, commit.result(), strict=True):
            if not entry.done.done():
                entry.done.set_result(ids)
        return
    for entry in batch:
        if not entry.done.done():
            entry.done.set_exception(_copy_error(error))


def _copy_error(error: BaseException) -> BaseException:
    """One exception object per waiter, so their tracebacks do not pile up on one object."""
    if isinstance(error, OutboxError):
        copy = type(error)(*error.args)
        copy.__cause__ = error.__cause__
        return copy
    return error


def _runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """`ids` as (first, last) runs of consecutive ids: a drain's acks are mostly one run."""
    runs: list[tuple[int, int]] = []
    for row_id in sorted(set(ids)):
        if runs and row_id == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], row_id)
        else:
            runs.append((row_id, row_id))
    return runs


def _datatype(code: int) -> DataType:
    kind = _DATATYPES.get(code)
    if kind is None:
        raise ValueError(f"unknown datatype {code}")
    return kind


_DISK_FULL = "the disk is full"


def _cannot_write(exc: sqlite3.Error) -> str | None:
    """Why SQLite could not write to the file (no room, an I/O error), or None for other errors.

    SQLITE_FULL is no space left on the device; a file size limit (EFBIG) or a failing disk
    shows as SQLITE_IOERR. Either way the outbox cannot take samples until it can write.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return _DISK_FULL
    if code & 0xFF == sqlite3.SQLITE_IOERR:
        return "the disk cannot be written"
    return None


def _healthy(path: Path) -> bool:
    """Whether `path` opens as a database that passes SQLite's quick_check.

    A WAL left by a crash is looked at first (before SQLite recovers it): frames after its last
    intact commit are discarded by SQLite, and that is logged, never silent.
    """
    wal = _wal_frames(path)
    try:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            if rows == [("ok",)] and wal is not None:
                # The second column: frames SQLite found in the WAL up to its last good commit.
                kept = int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
                _log_wal_loss(path, wal, max(0, kept))
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        log.error("outbox %s cannot be read: %s", path, exc)
        return False
    if rows == [("ok",)]:
        return True
    log.error("outbox %s failed its integrity check: %s", path, "; ".join(r[0] for r in rows[:5]))
    return False


@dataclass(frozen=True, slots=True)
class _WalScan:
    """What a WAL file holds before SQLite reads it."""

    size: int
    header_ok: bool
    frames: int
    """Frames of the WAL's current generation (salts matching its header), a torn one included."""


_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_WAL_FRAME_HEADER = 24


def _wal_frames(path: Path) -> _WalScan | None:
    """Scan the WAL beside `path` frame by frame (headers only); None when there is none."""
    wal = path.with_name(path.name + "-wal")
    try:
        with wal.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            header = f.read(_WAL_HEADER)
            if len(header) < _WAL_HEADER or int.from_bytes(header[:4], "big") not in _WAL_MAGIC:
                return _WalScan(size, header_ok=False, frames=0)
            page_size = int.from_bytes(header[8:12], "big")
            salts = header[16:24]
            frame_size = _WAL_FRAME_HEADER + page_size
            frames = 0
            offset = _WAL_HEADER
            while offset < size:
                f.seek(offset)
                frame = f.read(_WAL_FRAME_HEADER)
                # A frame of this generation, or a frame cut short (a torn tail).
                if len(frame) < _WAL_FRAME_HEADER or frame[8:16] == salts:
                    frames += 1
                offset += frame_size
    except FileNotFoundError:
        return None
    return _WalScan(size, header_ok=True, frames=frames)


def _log_wal_loss(path: Path, wal: _WalScan, kept: int) -> None:
    if not wal.header_ok:
        log.warning(
            "outbox %s: its WAL (%d bytes) has no valid header and was ignored: whatever it held"
            " after the last checkpoint is lost (a crash or power loss while it was written)",
            path,
            wal.size,
        )
    elif wal.frames > kept:
        log.warning(
            "outbox %s: %d WAL frame(s) after the last intact commit were discarded (a write cut"
            " short by a crash or power loss; with synchronous=FULL they are an unfinished"
            " transaction, unless the disk lost writes it had acknowledged); %d frame(s) kept",
            path,
            wal.frames - kept,
            kept,
        )


_Row: TypeAlias = tuple[object, ...]


def _salvage(path: Path) -> tuple[list[_Row], list[_Row], list[_Row]]:
    """Every readable sample (by id), node state and alias row of a corrupt file."""
    copy = path.with_name(path.name + ".salvage")
    if not _padded_copy(path, copy):
        return [], [], []
    wal = path.with_name(path.name + "-wal")
    if wal.exists():  # committed transactions not yet checkpointed into the main file
        copy.with_name(copy.name + "-wal").write_bytes(wal.read_bytes())
    try:
        # Read-write: SQLite needs to build a WAL index to read the copied WAL (a throwaway copy).
        db = sqlite3.connect(copy)
        try:
            samples = _salvage_samples(db)
            state = _salvage_all(db, "SELECT key, value FROM node_state")
            aliases = _salvage_all(db, "SELECT device, metric, alias FROM aliases")
        finally:
            db.close()
    except sqlite3.Error:
        return [], [], []
    finally:
        for side in ("", "-wal", "-shm"):
            copy.with_name(copy.name + side).unlink(missing_ok=True)
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
    """Whether a salvaged row is a sample (a damaged page can yield rows of zeros or garbage)."""
    row_id, device, metric, ts_ms, datatype, value, historical = row
    if not (isinstance(row_id, int) and isinstance(ts_ms, int) and historical in (0, 1)):
        return False
    if not (_a_name(device) and _a_name(metric) and ts_ms > 0 and isinstance(datatype, int)):
        return False
    if value is not None and not isinstance(value, str):
        return False
    try:
        _from_text(value, _datatype(datatype))
    except ValueError:
        return False
    return True


def _a_name(text: object) -> bool:
    return isinstance(text, str) and text != "" and text.isprintable()


def _salvage_all(db: sqlite3.Connection, query: str) -> list[_Row]:
    out: list[_Row] = []
    try:
        for row in db.execute(query):
            out.append(tuple(row))
    except sqlite3.DatabaseError:
        pass  # keep what was read before the damaged page
    return out
