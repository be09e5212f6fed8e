"""Shift calendars and routings of the master data (SQL only here; tables of migration 11).

Both are replaced whole at every load of the plant file, so the file stays the truth: a line
whose calendar is taken out of the file works round the clock again, an item whose routes are
taken out can be made on every line again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal

from taktline_cloud.storage.session import Session
from taktline_cloud.storage.sql import to_decimal_or_none


@dataclass(frozen=True, slots=True)
class StoredCalendar:
    """A line's calendar: IANA time zone, {weekday (Monday = 0): [(start, end)]}, holidays."""

    line: str
    timezone: str
    week: Mapping[int, list[tuple[time, time]]]
    holidays: tuple[date, ...]


@dataclass(frozen=True, slots=True)
class StoredRoute:
    """A line that makes an item, at the item's own standard rate there (None: the line's)."""

    item: str
    line: str
    standard_rate_per_hour: Decimal | None


def replace_calendars(session: Session, calendars: Iterable[StoredCalendar]) -> None:
    """Store exactly these line calendars (the lines not named work round the clock)."""
    x = session.executor
    x.execute("DELETE FROM line_calendar")
    rows = [
        (
            c.line,
            c.timezone,
            json.dumps(
                [
                    [day, f"{start:%H:%M}", f"{end:%H:%M}"]
                    for day in sorted(c.week)
                    for start, end in c.week[day]
                ]
            ),
            json.dumps([d.isoformat() for d in sorted(c.holidays)]),
        )
        for c in calendars
    ]
    if rows:
        x.executemany(
            "INSERT INTO line_calendar (line, timezone, shifts, holidays) VALUES (?, ?, ?, ?)",
            rows,
        )


def calendars(session: Session) -> dict[str, StoredCalendar]:
    """The stored line calendars by line."""
    found: dict[str, StoredCalendar] = {}
    for line, zone, shifts, holidays in session.executor.query(
        "SELECT line, timezone, shifts, holidays FROM line_calendar ORDER BY line"
    ):
        week: dict[int, list[tuple[time, time]]] = {}
        for day, start, end in json.loads(shifts):
            shift = (time.fromisoformat(start), time.fromisoformat(end))
            week.setdefault(int(day), []).append(shift)
        days = tuple(date.fromisoformat(text) for text in json.loads(holidays))
        found[str(line)] = StoredCalendar(str(line), str(zone), week, days)
    return found


def replace_routes(session: Session, routes: Iterable[StoredRoute]) -> None:
    """Store exactly these routes (the items not named can be made on every line)."""
    x = session.executor
    x.execute("DELETE FROM item_route")
    rows = [(r.item, r.line, r.standard_rate_per_hour) for r in routes]
    if rows:
        x.executemany(
            "INSERT INTO item_route (item, line, standard_rate_per_hour) VALUES (?, ?, ?)", rows
        )


def routes(session: Session) -> dict[str, list[StoredRoute]]:
    """The stored routes by item, each item's lines in code order."""
    found: dict[str, list[StoredRoute]] = {}
    for item, line, rate in session.executor.query(
        "SELECT item, line, standard_rate_per_hour FROM item_route ORDER BY item, line"
    ):
        found.setdefault(str(item), []).append(
            StoredRoute(str(item), str(line), to_decimal_or_none(rate))
        )
    return found
