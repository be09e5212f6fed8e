"""The lines' capacity as the master data gives it: shift calendars and routings.

Stored at each load of the plant file (`store_capacity`) and read back for capable-to-promise
(`working_calendars`, `item_lines`) and for approving a planned make order (`item_lines`).

* A line's calendar: its own shifts, else the plant's, on the plant's wall clock (time zone),
  with the plant's and its own holidays; no shifts anywhere: round the clock, as before
  calendars were in the master data.
* An item's routes: the lines the file names for it, each at the item's own standard rate
  there or the line's; an item the file names no line for can be made on every line.
"""

from __future__ import annotations

from collections.abc import Iterable
from zoneinfo import ZoneInfo

from taktline_cloud.masterdata import PlantData
from taktline_cloud.sales.ctp import WorkingCalendar
from taktline_cloud.storage import Session
from taktline_cloud.storage.calendars import (
    StoredCalendar,
    StoredRoute,
    calendars,
    replace_calendars,
    replace_routes,
    routes,
)


def store_capacity(tx: Session, plant: PlantData) -> None:
    """Replace the stored calendars and routes with the plant file's (idempotent)."""
    stored = []
    for line in plant.lines:
        calendar = plant.line_calendar(line.code)
        if calendar is not None:
            stored.append(
                StoredCalendar(line.code, calendar.timezone, calendar.week, calendar.holidays)
            )
    replace_calendars(tx, stored)
    replace_routes(
        tx,
        (
            StoredRoute(item, route.line, route.standard_rate_per_hour)
            for item, item_routes in plant.routes.items()
            for route in item_routes
        ),
    )


def working_calendars(tx: Session, lines: Iterable[str]) -> dict[str, WorkingCalendar]:
    """Each line's working calendar (round the clock for a line without one)."""
    stored = calendars(tx)
    found = {}
    for line in lines:
        calendar = stored.get(line)
        if calendar is None:
            found[line] = WorkingCalendar.always()
        else:
            found[line] = WorkingCalendar.weekly(
                calendar.week, calendar.holidays, ZoneInfo(calendar.timezone)
            )
    return found


def item_routes(tx: Session) -> dict[str, list[StoredRoute]]:
    """The routes the master data names, by item (an item not in it: every line)."""
    return routes(tx)
