"""Work order states: one transition table, enforced in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_cloud.errors import Conflict
from taktline_cloud.production.work_orders import (
    TRANSITIONS,
    WorkOrder,
    WorkOrderStatus,
    transition,
)

S = WorkOrderStatus
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def order(status: WorkOrderStatus = S.CREATED) -> WorkOrder:
    return WorkOrder("WO-1", "FG-100", "LINE-1", Decimal(100), status, T0)


def test_the_happy_path_is_allowed() -> None:
    status = S.CREATED
    for target in (S.RELEASED, S.RUNNING, S.COMPLETED, S.CLOSED):
        status = transition("WO-1", status, target)
    assert status is S.CLOSED


def test_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(WorkOrderStatus)
    assert TRANSITIONS[S.CLOSED] == frozenset()
    assert S.HELD in TRANSITIONS[S.RUNNING]
    assert S.RUNNING in TRANSITIONS[S.HELD]
    assert all(S.ABORTED in TRANSITIONS[s] for s in (S.CREATED, S.RELEASED, S.RUNNING, S.HELD))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.CREATED, S.RUNNING),  # must be released first
        (S.CREATED, S.COMPLETED),
        (S.RELEASED, S.COMPLETED),
        (S.RUNNING, S.RELEASED),
        (S.RUNNING, S.RUNNING),
        (S.COMPLETED, S.RUNNING),
        (S.CLOSED, S.RELEASED),
        (S.ABORTED, S.RUNNING),
    ],
)
def test_invalid_transitions_raise_conflict(
    current: WorkOrderStatus, target: WorkOrderStatus
) -> None:
    with pytest.raises(Conflict, match=f"WO-1 is {current}: cannot become {target}"):
        transition("WO-1", current, target)
    with pytest.raises(Conflict):
        order(current).moved_to(target, T0)


def test_moves_stamp_their_times() -> None:
    released = order().moved_to(S.RELEASED, T0 + timedelta(minutes=1))
    running = released.moved_to(S.RUNNING, T0 + timedelta(minutes=2))
    completed = running.moved_to(S.COMPLETED, T0 + timedelta(minutes=3))
    assert released.released_at == T0 + timedelta(minutes=1)
    assert running.started_at == T0 + timedelta(minutes=2)
    assert completed.completed_at == T0 + timedelta(minutes=3)
    assert completed.status is S.COMPLETED


def test_resuming_a_held_order_keeps_its_start() -> None:
    running = order(S.RELEASED).moved_to(S.RUNNING, T0)
    resumed = running.moved_to(S.HELD, T0 + timedelta(minutes=5)).moved_to(
        S.RUNNING, T0 + timedelta(minutes=9)
    )
    assert resumed.started_at == T0


def test_remaining_never_goes_negative() -> None:
    assert order().booked(Decimal(40), Decimal(3)).remaining == 60
    assert order().booked(Decimal(140), Decimal(0)).remaining == 0
