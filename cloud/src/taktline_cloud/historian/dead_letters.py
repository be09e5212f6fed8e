"""Dead letters: MQTT messages the primary host could not use, kept with their raw bytes.

A rejected message is never just logged and lost: it is stored with its topic, its payload as
received and the reason, so an operator can see what a gateway sent and replay it once the
cause is fixed (a missing birth, a contract mismatch). The SQL lives here, not in the session,
because the table has nothing to do with the plant's transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taktline_cloud.errors import Invalid, NotFound
from taktline_cloud.storage import Database
from taktline_cloud.storage.sql import to_datetime, to_datetime_or_none

MAX_PAGE = 500
"""The most dead letters one listing returns."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message as received: topic, raw payload, why, and when (aware UTC)."""

    topic: str
    payload: bytes
    reason: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as stored, with its id and when (if ever) it was replayed."""

    id: int
    topic: str
    payload: bytes
    reason: str
    received_at: datetime
    replayed_at: datetime | None


_COLUMNS = "id, topic, payload, reason, received_at, replayed_at"


def _stored(row: Sequence[Any]) -> StoredDeadLetter:
    return StoredDeadLetter(
        id=int(row[0]),
        topic=str(row[1]),
        payload=bytes(row[2]),
        reason=str(row[3]),
        received_at=to_datetime(row[4]),
        replayed_at=to_datetime_or_none(row[5]),
    )


def _utc(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise Invalid(f"{what} {at.isoformat()} has no time zone")
    return at.astimezone(UTC)


class DeadLetterStore:
    """Reads and writes the dead_letters table; call it from the service's worker thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Store letters in one transaction; how many were stored."""
        if not letters:
            return 0
        rows = [
            (
                _utc(letter.received_at, "dead letter time"),
                letter.topic,
                bytes(letter.payload),
                letter.reason,
            )
            for letter in letters
        ]
        with self._db.transaction() as tx:
            x = tx.executor
            for row in rows:
                x.execute(
                    "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                    " VALUES (?, ?, ?, ?)",
                    x.dialect.params(row),
                )
        return len(rows)

    def list(
        self,
        *,
        topic_prefix: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[StoredDeadLetter]:
        """Dead letters oldest first, with id > `after_id` (the paging cursor), filtered."""
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid(f"limit must be between 1 and {MAX_PAGE}")
        where = ["id > ?"]
        params: list[object] = [after_id]
        if topic_prefix:
            # substr, not LIKE: a topic may contain % or _.
            where.append("substr(topic, 1, ?) = ?")
            params += [len(topic_prefix), topic_prefix]
        if since is not None:
            where.append("received_at >= ?")
            params.append(_utc(since, "since"))
        if until is not None:
            where.append("received_at < ?")
            params.append(_utc(until, "until"))
        params.append(limit)
        with self._db.transaction(write=False) as tx:
            x = tx.executor
            rows = x.query(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE {' AND '.join(where)}"
                " ORDER BY id LIMIT ?",
                x.dialect.params(params),
            )
        return [_stored(r) for r in rows]

    def get(self, letter_id: int) -> StoredDeadLetter:
        """One dead letter; `NotFound` when there is none with that id."""
        with self._db.transaction(write=False) as tx:
            rows = tx.executor.query(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE id = ?", (letter_id,)
            )
        if not rows:
            raise NotFound(f"no dead letter {letter_id}")
        return _stored(rows[0])

    def mark_replayed(self, letter_id: int, at: datetime) -> StoredDeadLetter:
        """Record that the letter was replayed successfully at `at`."""
        with self._db.transaction() as tx:
            x = tx.executor
            changed = x.execute(
                "UPDATE dead_letters SET replayed_at = ? WHERE id = ?",
                x.dialect.params((_utc(at, "replay time"), letter_id)),
            )
        if changed == 0:
            raise NotFound(f"no dead letter {letter_id}")
        return self.get(letter_id)

    def count(self) -> int:
        """How many dead letters are stored."""
        with self._db.transaction(write=False) as tx:
            rows = tx.executor.query("SELECT COUNT(*) FROM dead_letters")
        return int(rows[0][0])
