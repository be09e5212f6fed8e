"""What differs between the two backends: parameter style, column types, value conversion.

SQLite has no exact decimal type (its NUMERIC affinity stores 2.5 as a binary float), so Decimals
are stored there as TEXT and converted back to Decimal on read; sums are done in Python. Times
are TEXT in one fixed-width UTC format on SQLite, so they sort and compare as text exactly as
TIMESTAMPTZ does on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from taktline_cloud.errors import StorageError

Backend = Literal["sqlite", "postgresql"]

_SQLITE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class Dialect:
    """SQL fragments and value conversion for one backend."""

    backend: Backend

    @property
    def decimal(self) -> str:
        """Column type of an exact decimal."""
        return "NUMERIC" if self.backend == "postgresql" else "TEXT"

    @property
    def timestamp(self) -> str:
        """Column type of an instant."""
        return "TIMESTAMPTZ" if self.backend == "postgresql" else "TEXT"

    @property
    def date(self) -> str:
        """Column type of a calendar date."""
        return "DATE" if self.backend == "postgresql" else "TEXT"

    @property
    def id_key(self) -> str:
        """An auto-numbered integer primary key column (without its name)."""
        if self.backend == "postgresql":
            return "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        return "INTEGER PRIMARY KEY AUTOINCREMENT"

    def number(self, column: str) -> str:
        """`column` as a number in a CHECK (TEXT decimals compare as text on SQLite)."""
        return column if self.backend == "postgresql" else f"CAST({column} AS REAL)"

    def sql(self, statement: str) -> str:
        """The statement in this backend's parameter style (written with `?`)."""
        return statement.replace("?", "%s") if self.backend == "postgresql" else statement

    def param(self, value: object) -> object:
        """A Python value as this backend stores it."""
        if self.backend == "postgresql":
            return value
        if isinstance(value, datetime):
            return sqlite_time(value)
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, date):
            return value.isoformat()
        return value

    def params(self, values: Sequence[object]) -> tuple[object, ...]:
        """All parameters of one statement converted with `param`."""
        if self.backend == "postgresql":
            return tuple(values)
        # Every sample row passes here on SQLite: look converters up by exact type, and send
        # only other types (subclasses) through `param`.
        return tuple(
            v if type(v) in _AS_IS else _CONVERT.get(type(v), self.param)(v) for v in values
        )


def sqlite_time(at: datetime) -> str:
    """An aware datetime in the fixed-width UTC text form used on SQLite."""
    if at.tzinfo is None:
        raise StorageError(f"naive datetime {at.isoformat()} cannot be stored (use UTC)")
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    if at.year >= 1000:  # isoformat pads the year to 4 digits; strftime's %Y may not
        return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return at.strftime(_SQLITE_TIME)


_AS_IS: frozenset[type] = frozenset({str, int, float, bool, bytes, type(None)})
_CONVERT: dict[type, Callable[[Any], object]] = {
    datetime: sqlite_time,
    Decimal: str,
    date: date.isoformat,
}


def to_decimal(value: Any) -> Decimal:
    """A stored decimal (NUMERIC or TEXT) as a Decimal."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation as exc:
            raise StorageError(f"stored decimal {value!r} is not a number") from exc
    raise StorageError(f"stored decimal has unexpected type {type(value).__name__}")


def to_decimal_or_none(value: Any) -> Decimal | None:
    """`to_decimal`, keeping NULL."""
    return None if value is None else to_decimal(value)


def to_datetime(value: Any) -> datetime:
    """A stored instant (TIMESTAMPTZ or TEXT) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return datetime.strptime(value, _SQLITE_TIME).replace(tzinfo=UTC)
        except ValueError as exc:
            raise StorageError(f"stored time {value!r} is not in the expected form") from exc
    raise StorageError(f"stored time has unexpected type {type(value).__name__}")


def to_datetime_or_none(value: Any) -> datetime | None:
    """`to_datetime`, keeping NULL."""
    return None if value is None else to_datetime(value)


def to_date(value: Any) -> date:
    """A stored date (DATE or TEXT) as a date."""
    if isinstance(value, datetime):
        raise StorageError("stored date is a datetime")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise StorageError(f"stored date {value!r} is not ISO-8601") from exc
    raise StorageError(f"stored date has unexpected type {type(value).__name__}")
