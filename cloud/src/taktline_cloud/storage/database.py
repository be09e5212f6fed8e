"""The database handle: opens SQLite or PostgreSQL from a URL, migrates, hands out transactions.

    sqlite:///relative/path.db   sqlite:////absolute/path.db   sqlite:///:memory:
    postgresql://user@host:5432/dbname   (postgres:// and postgresql+psycopg:// also accepted)

One connection, used by one thread at a time (a lock serialises callers). PostgreSQL runs in
autocommit mode and every unit of work is an explicit transaction, so the connection is never
left idle in a transaction holding locks.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

import psycopg

from taktline_cloud.errors import CloudError, StorageError
from taktline_cloud.storage.migrations import MIGRATIONS
from taktline_cloud.storage.session import Executor, Session
from taktline_cloud.storage.sql import Backend, Dialect

log = logging.getLogger(__name__)

_MIGRATION_LOCK: Final = 0x7A4B_71E0  # advisory lock id: one migrator at a time per database
_DRIVER_ERRORS: Final = (sqlite3.Error, psycopg.Error)
_COPY_THRESHOLD: Final = 500  # rows; below it executemany (pipelined) is as fast and simpler


class _SqliteExecutor(Executor):
    def __init__(self, path: str) -> None:
        super().__init__(Dialect("sqlite"))
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE for writes).
        # check_same_thread=False: opened in the event loop thread, used by one worker thread;
        # the Database lock guarantees one caller at a time.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA busy_timeout = 10000")
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(statement, self.dialect.params(params)).fetchall()

    def execute(self, statement: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(statement, self.dialect.params(params)).rowcount

    def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> int:
        cursor = self._conn.executemany(statement, [self.dialect.params(r) for r in rows])
        return cursor.rowcount

    @contextmanager
    def transaction(self, write: bool) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: the next unit of work must not find one open.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def try_execute(self, statements: list[str]) -> bool:
        self._conn.execute("SAVEPOINT try_execute")
        try:
            for statement in statements:
                self._conn.execute(statement)
        except sqlite3.Error as exc:
            log.warning("optional schema step skipped: %s", exc)
            self._conn.execute("ROLLBACK TO try_execute")
            return False
        finally:
            self._conn.execute("RELEASE try_execute")
        return True

    @property
    def usable(self) -> bool:
        return True

    def close(self) -> None:
        self._conn.close()


class _PostgresExecutor(Executor):
    def __init__(self, url: str) -> None:
        super().__init__(Dialect("postgresql"))
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self._conn.execute("SET TIME ZONE 'UTC'")
        self._conn.execute("SET statement_timeout = '60s'")

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            cursor.execute(self.dialect.sql(statement).encode(), params)
            return cursor.fetchall() if cursor.description is not None else []

    def execute(self, statement: str, params: Sequence[object] = ()) -> int:
        with self._conn.cursor() as cursor:
            cursor.execute(self.dialect.sql(statement).encode(), params)
            return cursor.rowcount

    def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> int:
        with self._conn.cursor() as cursor:
            cursor.executemany(self.dialect.sql(statement).encode(), rows)
            return cursor.rowcount

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> None:
        with (
            self._conn.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN".encode()) as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def insert_ignoring_duplicates(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> int:
        if len(rows) < _COPY_THRESHOLD:
            return super().insert_ignoring_duplicates(table, columns, rows)
        # Large batches are nearly always new rows (replays and redeliveries are the
        # exception): COPY them straight in, inside a savepoint. Only when a key exists already
        # does the unique index refuse the COPY, and the batch takes the slower path below.
        try:
            with self._conn.transaction():  # a savepoint in the caller's transaction
                self.copy_rows(table, columns, rows)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass
        # COPY into a session-private staging table, then one INSERT … SELECT that skips keys
        # already stored (COPY itself cannot skip conflicts).
        # Created in the transaction each time: a rollback would take a remembered one away.
        staging = f"{table}_incoming"
        self.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        self.copy_rows(staging, columns, rows)
        names = ", ".join(columns)
        return self.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} ON CONFLICT DO NOTHING"
        )

    @contextmanager
    def transaction(self, write: bool) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def try_execute(self, statements: list[str]) -> bool:
        try:
            with self._conn.transaction():  # nested: a savepoint
                for statement in statements:
                    self._conn.execute(statement.encode())
        except psycopg.Error as exc:
            log.warning("optional schema step skipped: %s", str(exc).strip())
            return False
        return True

    @property
    def usable(self) -> bool:
        return not (self._conn.closed or self._conn.broken)

    def close(self) -> None:
        self._conn.close()


def _parse_url(url: str) -> tuple[Backend, str]:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise StorageError(f"database URL {url!r} has no file path")
        return "sqlite", path
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql", "postgresql://" + url.removeprefix(prefix)
    raise StorageError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://…"
    )


class Database:
    """An open database with the current schema; `transaction()` is the unit of work."""

    def __init__(self, url: str) -> None:
        self.backend, self._target = _parse_url(url)
        self._lock = threading.RLock()
        self._executor: _SqliteExecutor | _PostgresExecutor | None = None
        self.schema_version = 0
        self.hypertable = False
        with self._lock:
            self._connect()
            try:
                self._migrate()
            except BaseException:
                self.close()
                raise

    @classmethod
    def open(cls, url: str) -> Self:
        """Open (and migrate) the database at `url`."""
        return cls(url)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None

    def _connect(self) -> _SqliteExecutor | _PostgresExecutor:
        if self._executor is not None and self._executor.usable:
            return self._executor
        if self._executor is not None:
            log.warning("database connection lost; reconnecting")
            self._executor.close()
            self._executor = None
        try:
            if self.backend == "sqlite":
                self._executor = _SqliteExecutor(self._target)
            else:
                self._executor = _PostgresExecutor(self._target)
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"cannot open the {self.backend} database: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot open the {self.backend} database: {exc}") from exc
        return self._executor

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back when it raises."""
        with self._lock:
            executor = self._connect()
            try:
                with executor.transaction(write):
                    yield Session(executor)
            except CloudError:
                raise
            except _DRIVER_ERRORS as exc:
                raise StorageError(f"{self.backend} database error: {exc}") from exc

    def _migrate(self) -> None:
        with self.transaction() as session:
            executor = session.executor
            if self.backend == "postgresql":
                executor.query("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            executor.execute(
                f"""CREATE TABLE IF NOT EXISTS schema_version (
                    version INTEGER NOT NULL,
                    description TEXT NOT NULL,
                    applied_at {executor.dialect.timestamp} NOT NULL,
                    CONSTRAINT schema_version_key PRIMARY KEY (version)
                )"""
            )
            found = executor.query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            current = int(found[0][0])
            latest = MIGRATIONS[-1].version
            if current > latest:
                raise StorageError(
                    f"database schema version {current} is newer than this code knows ({latest})"
                )
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                log.info("migrating database to v%d: %s", migration.version, migration.description)
                migration.apply(executor)
                executor.execute(
                    "INSERT INTO schema_version (version, description, applied_at)"
                    " VALUES (?, ?, ?)",
                    (migration.version, migration.description, datetime.now(UTC)),
                )
            self.schema_version = latest
            if self.backend == "postgresql":
                self.hypertable = bool(
                    executor.query(
                        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
                    )
                ) and bool(
                    executor.query(
                        "SELECT 1 FROM timescaledb_information.hypertables"
                        " WHERE hypertable_name = 'samples'"
                    )
                )
