"""The delivery promise rule (pure): stock first, then running work orders' projected output.

Open lines of one item, in order of (requested date, order, line), consume cumulatively the
finished stock on hand, then the output of the item's running work orders, which produce in
parallel from now at their rate until their remaining quantity is made. A line is promised when
its cumulative demand is covered: now if stock covers it, otherwise the covering instant rounded
up to the whole minute; None when stock and projected output together fall short.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from taktline_cloud.inventory.quantities import display
from taktline_cloud.production.rate import time_to_make


class PromiseKind(StrEnum):
    """What a promise rests on."""

    STOCK = "stock"
    PRODUCTION = "production"
    SHORT = "short"


@dataclass(frozen=True, slots=True)
class Demand:
    """An open sales order line of the item."""

    order: str
    line: int
    quantity: Decimal
    requested_date: date


@dataclass(frozen=True, slots=True)
class Supply:
    """A running work order of the item and how fast its line makes it (None: no projection)."""

    work_order: str
    line: str
    quantity: Decimal
    good: Decimal
    rate_per_hour: Decimal | None
    basis: str | None

    @property
    def remaining(self) -> Decimal:
        """What is left to make (never negative)."""
        return max(self.quantity - self.good, Decimal(0))

    @property
    def projectable(self) -> bool:
        """True when it will make something at a known, positive rate."""
        return self.remaining > 0 and self.rate_per_hour is not None and self.rate_per_hour > 0


@dataclass(frozen=True, slots=True)
class Promise:
    """The promise for one line, with the sentence that explains it."""

    order: str
    line: int
    promised_at: datetime | None
    kind: PromiseKind
    reason: str
    at_risk: bool


def ceil_minute(at: datetime) -> datetime:
    """`at` rounded up to the whole minute."""
    floor = at.replace(second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(minutes=1)


def _clock(at: datetime, now: datetime) -> str:
    return at.strftime("%H:%M") if at.date() == now.date() else at.strftime("%Y-%m-%d %H:%M")


def _describe(supply: Supply) -> str:
    assert supply.rate_per_hour is not None  # only projectable supplies are described
    rate = supply.rate_per_hour.quantize(Decimal(1))
    return (
        f"{supply.work_order} on {supply.line} at {supply.basis} {display(rate)}/h: "
        f"{display(supply.remaining)} of {display(supply.quantity)} left"
    )


def covering_time(needed: Decimal, supplies: Sequence[Supply]) -> timedelta | None:
    """How long until the supplies, producing in parallel, have made `needed` (None: never)."""
    if needed <= 0:
        return timedelta(0)
    running = [s for s in supplies if s.projectable]
    # Each supply runs at its rate until its remaining quantity is made; between those finish
    # instants the combined output grows linearly at the sum of the rates still running.
    finishing = sorted(running, key=lambda s: s.remaining / _rate(s))
    elapsed = Decimal(0)  # hours
    made = Decimal(0)
    combined = sum((_rate(s) for s in running), Decimal(0))
    for supply in finishing:
        finish = supply.remaining / _rate(supply)
        made_at_finish = made + combined * (finish - elapsed)
        if made_at_finish >= needed:
            return time_to_make(needed - made, combined) + _hours(elapsed)
        made, elapsed = made_at_finish, finish
        combined -= _rate(supply)
    return None


def _rate(supply: Supply) -> Decimal:
    assert supply.rate_per_hour is not None
    return supply.rate_per_hour


def _hours(hours: Decimal) -> timedelta:
    return time_to_make(hours, Decimal(1))


def promise_lines(
    demands: Iterable[Demand], on_hand: Decimal, supplies: Sequence[Supply], now: datetime
) -> list[Promise]:
    """Promise every open line of one item (see the module docstring)."""
    promises: list[Promise] = []
    cumulative = Decimal(0)
    stock = max(on_hand, Decimal(0))
    projectable = [s for s in supplies if s.projectable]
    projected = sum((s.remaining for s in projectable), Decimal(0))
    for demand in sorted(demands, key=lambda d: (d.requested_date, d.order, d.line)):
        before = cumulative
        cumulative += demand.quantity
        from_stock = max(min(stock, cumulative) - before, Decimal(0))
        if cumulative <= stock:
            promised_at: datetime | None = now
            kind = PromiseKind.STOCK
            reason = f"from stock: {display(stock)} on hand"
        else:
            wait = covering_time(cumulative - stock, projectable)
            sources = "; ".join(_describe(s) for s in projectable)
            prefix = f"{display(from_stock)} from stock + " if from_stock else ""
            if wait is not None:
                promised_at = ceil_minute(now + wait)
                kind = PromiseKind.PRODUCTION
                reason = f"{prefix}{sources} → covered at {_clock(promised_at, now)}"
            else:
                promised_at = None
                kind = PromiseKind.SHORT
                reason = _shortfall(cumulative, stock, projected, supplies)
        at_risk = promised_at is None or promised_at.date() > demand.requested_date
        promises.append(Promise(demand.order, demand.line, promised_at, kind, reason, at_risk))
    return promises


def _shortfall(
    needed: Decimal, stock: Decimal, projected: Decimal, supplies: Sequence[Supply]
) -> str:
    short = needed - stock - projected
    parts = [f"{display(stock)} on hand"]
    if projected:
        parts.append(f"{display(projected)} to come from running work orders")
    reason = f"not covered: short by {display(short)} ({' + '.join(parts)} < {display(needed)})"
    stalled = [s.work_order for s in supplies if s.remaining > 0 and not s.projectable]
    if stalled:
        reason += f"; no measured output on {', '.join(stalled)}"
    elif not supplies:
        reason += "; no running work order"
    return reason


def promise_moved(
    previous_at: datetime,
    current_at: datetime,
    now: datetime | None,
    tolerance: timedelta,
    relative: Fraction = Fraction(0),
) -> bool:
    """True when a projected promise moved from `previous_at` to `current_at` by more than
    `tolerance`, or by more than the `relative` share of how far ahead of `now` it was.

    A measured rate jitters with every count, and a promise days ahead moves with it by
    minutes: to a customer that is the same promise, and re-giving it on every count would
    fill its history with noise. So a promise 5 days out with `relative` 1/100 stands until it
    moves by more than 72 minutes; one due within the hour still moves by the minute.
    """
    allowed = tolerance
    if now is not None and relative > 0 and previous_at > now:
        share = (previous_at - now) * relative.numerator / relative.denominator
        allowed = max(allowed, share)
    return abs(current_at - previous_at) > allowed


def promise_changed(
    previous_at: datetime | None,
    previous_kind: str | None,
    current: Promise,
    tolerance: timedelta = timedelta(0),
    *,
    now: datetime | None = None,
    relative: Fraction = Fraction(0),
) -> bool:
    """True when `current` is a new promise rather than the one already given.

    A promise from stock keeps the instant it was first made (it stays "available now"). A
    projected promise that moved by no more than `tolerance` (or the `relative` share of its
    distance from `now`, see `promise_moved`) stands: a measured rate jittering across a
    minute boundary must not re-time a customer's promise back and forth.
    """
    if previous_kind != current.kind:
        return True
    if current.kind is PromiseKind.STOCK:
        return False
    if previous_at is None or current.promised_at is None:
        return previous_at != current.promised_at
    return promise_moved(previous_at, current.promised_at, now, tolerance, relative)
