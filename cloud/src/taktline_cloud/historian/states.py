"""Machine state history: intervals with durations, derived from the state series (pure).

The PLC reports a state code on change (and again on rebirth), so a state holds from its sample
until the next one; repeats of the same state are one interval. Before the first known reading
the state is "unknown". Durations and entry counts per state are totals over the window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from taktline_cloud.historian.current import UNKNOWN_STATE, state_name


@dataclass(frozen=True, slots=True)
class StateInterval:
    """One stretch of one state, clipped to the window asked for."""

    state: str
    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        """How long the state held inside the window."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class StateHistory:
    """The intervals of a window, with totals per state."""

    intervals: list[StateInterval]
    durations: dict[str, timedelta] = field(default_factory=dict)
    """Time spent in each state."""
    entries: dict[str, int] = field(default_factory=dict)
    """How many times each state began inside the window (a stop count for "down")."""


def state_history(
    readings: Iterable[tuple[datetime, Decimal]], start: datetime, end: datetime
) -> StateHistory:
    """Intervals over [start, end) from readings sorted by time (the last one before `start`,
    if any, gives the state the window opens in)."""
    intervals: list[StateInterval] = []
    current, since = UNKNOWN_STATE, start
    entries: dict[str, int] = {}
    for at, code in readings:
        if at >= end:
            break
        state = state_name(code)
        if at <= start:
            current = state  # the state the window opens in, not an entry inside it
            continue
        if state == current:
            continue
        intervals.append(StateInterval(current, since, at))
        current, since = state, at
        entries[state] = entries.get(state, 0) + 1
    if since < end:
        intervals.append(StateInterval(current, since, end))
    durations: dict[str, timedelta] = {}
    for interval in intervals:
        durations[interval.state] = durations.get(interval.state, timedelta(0)) + interval.duration
    return StateHistory(intervals, durations, entries)
