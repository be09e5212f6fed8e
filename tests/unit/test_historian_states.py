"""State history from the state series: intervals, clipping, merging, durations, entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from taktline_cloud.historian.states import StateInterval, state_history
from taktline_contract.metrics import MachineState

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RUN, IDLE, DOWN = (
    Decimal(int(s)) for s in (MachineState.RUNNING, MachineState.IDLE, MachineState.DOWN)
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_intervals_are_clipped_merged_and_totalled() -> None:
    readings = [
        (at(-30), RUN),  # before the window: the state it opens in
        (at(10), RUN),  # a repeat (rebirth): no new interval
        (at(20), DOWN),
        (at(25), Decimal(99)),  # an unknown code
        (at(30), RUN),
        (at(50), DOWN),
        (at(60), IDLE),  # at the window's end: outside it
    ]
    history = state_history(readings, T0, at(60))
    assert history.intervals == [
        StateInterval("running", T0, at(20)),
        StateInterval("down", at(20), at(25)),
        StateInterval("unknown", at(25), at(30)),
        StateInterval("running", at(30), at(50)),
        StateInterval("down", at(50), at(60)),
    ]
    assert history.durations == {
        "running": timedelta(minutes=40),
        "down": timedelta(minutes=15),
        "unknown": timedelta(minutes=5),
    }
    assert history.entries == {"down": 2, "unknown": 1, "running": 1}
    assert sum(history.durations.values(), timedelta(0)) == timedelta(minutes=60)


def test_no_reading_before_the_window_opens_unknown() -> None:
    history = state_history([(at(15), IDLE)], T0, at(30))
    assert history.intervals == [
        StateInterval("unknown", T0, at(15)),
        StateInterval("idle", at(15), at(30)),
    ]
    assert history.entries == {"idle": 1}


def test_a_reading_at_the_window_start_is_its_opening_state() -> None:
    history = state_history([(T0, DOWN)], T0, at(1))
    assert history.intervals == [StateInterval("down", T0, at(1))]
    assert history.entries == {}
    assert state_history([], T0, at(1)).durations == {"unknown": timedelta(minutes=1)}
