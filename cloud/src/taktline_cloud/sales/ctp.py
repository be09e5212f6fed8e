"""Capable-to-promise (pure): the earliest instant each line of one sales order can be delivered.

The model, kept simple enough for a planner to recompute a promise by hand:

* **Stock.** A line first takes the item's available-to-promise stock: finished stock on hand
  less what is already promised to other orders (`FinishedStock.available`). What stock covers
  is available now. The output of work orders already queued counts as promised elsewhere
  (the available-to-promise rule, `sales.promise`, gives it out); here they only take time.
* **Production.** The rest is made on one of the lines with a `Route` for the item, at the
  route's *measured* rate (its standard rate when nothing is measured or the line stands), in
  the line's `WorkingCalendar` only. The line first finishes its queued work orders, in queue
  order, each at its own item's rate on that line; then it starts this quantity once every
  component is there. Among the lines that make the item, the one finishing first is chosen.
* **Components.** Multi-level BOMs (`planning.bom.BomLine`, scrap included; a cycle is
  refused): every component of the quantity made is needed at the production start. A
  purchased component (one with a `ComponentSupply`) comes from its on-hand stock, then from
  its open purchase orders in order of confirmed date (an overdue one counts as arriving now),
  then - when those are used up - from a new purchase arriving its purchase lead time
  (calendar time) from now. A component with neither supply nor a lead time cannot be promised
  (kind SHORT, no date). A semi-finished component (an item with routes or finished stock and
  no `ComponentSupply`) comes from its stock, and the rest is made first on its own line by
  the same rules, one level further down.
* **Consumption.** Lines are promised in line order, and each one takes the stock, line time
  and components it uses (component stock first, then purchase orders in date order), so a
  later line sees what earlier lines took. A line that cannot be promised takes nothing. Lines
  are chosen greedily, one order line (and one BOM level) at a time: this is a promise, not an
  optimal schedule of the whole order. A `Promiser` carries the same state from one order to
  the next, so orders promised one after the other (the earliest requested first) share the
  plant: a purchase order the first order took is not there for the second.
* **Rounding.** A produced line is promised at its finish rounded up to the whole minute; a
  line from stock at `now`. So a promise never precedes `now`.

Working calendar: for each weekday (Monday = 0) a tuple of shifts, each a start and an end
time of day on the wall clock of the calendar's time zone (UTC unless given); a shift whose end
is not after its start runs past midnight into the next day. A shift belongs to the (local)
day it starts on, so a holiday drops the shifts starting on it (a night shift that began the
evening before still runs to its end). Overlapping shifts count once. Instants going in and
out are aware datetimes; what comes out is in UTC, and a shift across a daylight-saving change
lasts the real time between its wall-clock start and end. When the line waits for its shift to
open, or its run is cut by time off shift, the reason chain says so (a `calendar` step).

Errors: bad input raises `taktline_cloud.errors.Invalid` (naive datetimes, quantities < 0,
a route with no positive rate, an unknown item or line, a calendar with no working time).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import StrEnum
from functools import partial

from taktline_cloud.errors import Invalid
from taktline_cloud.inventory.quantities import display
from taktline_cloud.planning.bom import (
    BomLine,
    PlanningError,
    explosion_factors,
    low_level_codes,
)
from taktline_cloud.production.rate import time_to_make
from taktline_cloud.sales.promise import ceil_minute

ZERO = Decimal(0)
_HORIZON_DAYS = 3 * 366  # a calendar walk that finds no time this far out has none at all
_DAY = timedelta(days=1)
# How far a round-the-clock walk is sure to stay inside the horizon: its windows run from the
# day before the start's local day for `_HORIZON_DAYS` days; beyond, walk it (and find the end).
_CONTINUOUS_REACH = timedelta(days=_HORIZON_DAYS - 2)
_NO_TIME = timedelta(0)


class CtpKind(StrEnum):
    """What a capable-to-promise date rests on."""

    STOCK = "stock"  # finished stock covers the line
    PRODUCTION = "production"  # made on a line from components on hand or on order
    PURCHASE = "purchase"  # made, with components still to be bought (their lead time)
    SHORT = "short"  # cannot be promised: no line makes it, or a component has no supply


class StepKind(StrEnum):
    """One link in a promise's reason chain."""

    STOCK = "stock"  # finished stock taken (reference: item)
    QUEUE = "queue"  # the line is busy until then (reference: work order or order line)
    COMPONENT = "component"  # a component arrives then (reference: purchase order)
    PURCHASE = "purchase"  # a component is bought, arriving after its lead time (ref: item)
    PRODUCTION = "production"  # made on a line, finished then (reference: line)
    CALENDAR = "calendar"  # the line's shifts delay it: closed, or off shift mid-run (ref: line)
    SHORT = "short"  # what makes the line impossible to promise (reference: item)


@dataclass(frozen=True, slots=True)
class Shift:
    """A working period of a day, on the calendar's wall clock; an end not after the start runs
    into the next day."""

    start: time
    end: time


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Shifts per weekday (Monday = 0), holidays (local dates) and the time zone the shifts are
    read in; see the module docstring.

    Walking it is the inner loop of capable-to-promise (every route of every made item tries
    its line), so each local day's windows are worked out once per calendar and kept, and a
    round-the-clock calendar - every day one shift from a time of day to the same time the
    next day, no holidays, a fixed UTC offset - is walked in O(1): its windows join up, so
    working time is plain elapsed time (as far as the walk's horizon).
    """

    week: tuple[tuple[Shift, ...], ...]
    holidays: frozenset[date] = frozenset()
    zone: tzinfo = UTC
    # Derived in __post_init__ (not part of the value): shifts in start order per weekday,
    # whether the fast path applies, and the windows of the local days walked so far.
    _ordered: tuple[tuple[Shift, ...], ...] = field(init=False, repr=False, compare=False)
    _continuous: bool = field(init=False, repr=False, compare=False)
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise Invalid("a working calendar has 7 weekdays of shifts (Monday first)")
        if not any(self.week):
            raise Invalid("a working calendar needs at least one shift")
        for shifts in self.week:
            for shift in shifts:
                if shift.start.tzinfo is not None or shift.end.tzinfo is not None:
                    raise Invalid("shift times are plain times of day (the calendar has the zone)")
        ordered = tuple(tuple(sorted(shifts, key=lambda s: s.start)) for shifts in self.week)
        # Round the clock: every weekday only shifts from t to t the next day, one t for all.
        starts = {shift.start for shifts in self.week for shift in shifts}
        continuous = (
            not self.holidays
            and isinstance(self.zone, timezone)  # a fixed offset (UTC is one): no clock changes
            and all(self.week)
            and len(starts) == 1
            and all(shift.end == shift.start for shifts in self.week for shift in shifts)
        )
        object.__setattr__(self, "_ordered", ordered)
        object.__setattr__(self, "_continuous", continuous)

    @classmethod
    def weekly(
        cls,
        shifts: Mapping[int, Sequence[tuple[time, time]]],
        holidays: Sequence[date] = (),
        zone: tzinfo = UTC,
    ) -> WorkingCalendar:
        """A calendar from {weekday: [(start, end), ...]}; days not named do not work."""
        if any(day not in range(7) for day in shifts):
            raise Invalid("weekdays are 0 (Monday) to 6 (Sunday)")
        week = tuple(
            tuple(Shift(start, end) for start, end in shifts.get(day, ())) for day in range(7)
        )
        return cls(week, frozenset(holidays), zone)

    @classmethod
    def always(cls) -> WorkingCalendar:
        """Round the clock, every day."""
        return cls.weekly({day: [(time(0), time(0))] for day in range(7)})

    def _day(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The windows (UTC) of the shifts starting on local `day`, in start order; none on a
        holiday, and none of a shift lost to a clock change (its end not after its start)."""
        found = self._days.get(day)
        if found is None:
            spans = []
            if day not in self.holidays:
                zone = self.zone
                for shift in self._ordered[day.weekday()]:
                    begin = datetime.combine(day, shift.start, zone).astimezone(UTC)
                    ends = day + _DAY if shift.end <= shift.start else day
                    end = datetime.combine(ends, shift.end, zone).astimezone(UTC)
                    if end > begin:
                        spans.append((begin, end))
            found = self._days[day] = tuple(spans)
        return found

    def windows(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working windows (UTC) ending after `start`, in order of their start, clipped to it."""
        cursor = start.astimezone(UTC)
        day = cursor.astimezone(self.zone).date() - _DAY  # yesterday's night shift may still run
        for _ in range(_HORIZON_DAYS):
            for begin, end in self._day(day):
                if end > cursor:
                    yield max(begin, cursor), end
                    cursor = end
            day += _DAY
        raise Invalid(f"the working calendar has no working time within {_HORIZON_DAYS} days")

    def opens(self, at: datetime) -> datetime:
        """The first working instant at or after `at`."""
        if self._continuous:
            return at.astimezone(UTC)
        begin, _ = next(self.windows(at))
        return begin

    def advance(self, start: datetime, work: timedelta) -> datetime:
        """The instant `work` of working time after `start` is done."""
        if work <= _NO_TIME:
            return start
        if self._continuous and work <= _CONTINUOUS_REACH:
            return start.astimezone(UTC) + work
        return self._walk(start, work)

    def _walk(self, start: datetime, work: timedelta) -> datetime:
        """`advance` window by window (what the round-the-clock path must equal)."""
        left = work
        cursor = start.astimezone(UTC)
        day = cursor.astimezone(self.zone).date() - _DAY  # as `windows`, without the generator
        for _ in range(_HORIZON_DAYS):
            for opens, end in self._day(day):
                if end > cursor:
                    begin = max(opens, cursor)
                    span = end - begin
                    if left <= span:
                        return begin + left
                    left -= span
                    cursor = end
            day += _DAY
        raise Invalid(f"the working calendar has no working time within {_HORIZON_DAYS} days")


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of the sales order to promise."""

    line: int
    item: str
    quantity: Decimal
    requested_date: date


@dataclass(frozen=True, slots=True)
class FinishedStock:
    """An item's finished stock and what of it is already promised to other orders."""

    item: str
    on_hand: Decimal
    promised: Decimal = ZERO

    @property
    def available(self) -> Decimal:
        """Available to promise: on hand less already promised, never negative."""
        return max(self.on_hand - self.promised, ZERO)


@dataclass(frozen=True, slots=True)
class Route:
    """A line that makes an item, at its measured rate (per hour) or its standard rate."""

    item: str
    line: str
    measured_per_hour: Decimal | None
    standard_per_hour: Decimal | None = None
    _rate: tuple[Decimal, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        measured = self.measured_per_hour is not None and self.measured_per_hour > 0
        standard = self.standard_per_hour is not None and self.standard_per_hour > 0
        if not measured and not standard:
            raise Invalid(
                f"{self.item} on {self.line}: rate {self.measured_per_hour} is not > 0"
                " and there is no standard rate"
            )
        if measured:
            assert self.measured_per_hour is not None
            rate = (self.measured_per_hour, "measured")
        else:
            assert self.standard_per_hour is not None
            rate = (self.standard_per_hour, "standard")
        object.__setattr__(self, "_rate", rate)  # worked out once: routes are read per line

    @property
    def rate(self) -> tuple[Decimal, str]:
        """(parts per hour, "measured" or "standard")."""
        return self._rate


@dataclass(frozen=True, slots=True)
class QueuedWork:
    """A work order ahead on a line (the first one of a line may be running) and what is left."""

    work_order: str
    line: str
    item: str
    remaining: Decimal


@dataclass(frozen=True, slots=True)
class ComponentSupply:
    """A component's stock on hand and its purchase lead time (None: cannot be bought)."""

    item: str
    on_hand: Decimal
    lead_time: timedelta | None = None


@dataclass(frozen=True, slots=True)
class PurchaseOrder:
    """An open purchase order of a component, at its supplier-confirmed date."""

    number: str
    item: str
    quantity: Decimal
    confirmed_at: datetime


@dataclass(frozen=True, slots=True)
class Plant:
    """What capable-to-promise reads: stock, lines, their queues, BOMs and component supply."""

    calendars: Mapping[str, WorkingCalendar]
    routes: Sequence[Route] = ()
    queue: Sequence[QueuedWork] = ()
    stock: Sequence[FinishedStock] = ()
    bom: Sequence[BomLine] = ()
    components: Sequence[ComponentSupply] = ()
    purchase_orders: Sequence[PurchaseOrder] = ()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Step:
    """One machine-readable link of a reason chain, with its sentence ("" when another step's
    sentence already tells it, as the queue ahead is told in the production step).

    The sentence may be given as a function that writes it: it is written when first read
    (`text`), as most promises are worked out on every re-promise and only the changed ones
    are told. Steps are equal when their fields and sentences are.
    """

    kind: StepKind
    reference: str
    at: datetime | None
    quantity: Decimal
    sentence: str | Callable[[], str]

    @property
    def text(self) -> str:
        """The sentence."""
        sentence = self.sentence
        if not isinstance(sentence, str):
            sentence = sentence()
            object.__setattr__(self, "sentence", sentence)  # written once
        return sentence

    def _key(self) -> tuple[StepKind, str, datetime | None, Decimal, str]:
        return (self.kind, self.reference, self.at, self.quantity, self.text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Step(kind={self.kind!r}, reference={self.reference!r}, at={self.at!r},"
            f" quantity={self.quantity!r}, text={self.text!r})"
        )

    def to_json(self) -> dict[str, str | None]:
        """The step as JSON values."""
        return {
            "kind": str(self.kind),
            "reference": self.reference,
            "at": self.at.isoformat() if self.at else None,
            "quantity": format(self.quantity, "f"),
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class CtpPromise:
    """The promise of one order line with its reason chain."""

    order: str
    line: int
    item: str
    quantity: Decimal
    requested_date: date
    promised_at: datetime | None
    kind: CtpKind
    steps: tuple[Step, ...] = field(default=())

    @property
    def at_risk(self) -> bool:
        """True when it cannot be promised, or only after the requested date."""
        return self.promised_at is None or self.promised_at.date() > self.requested_date

    @property
    def reason(self) -> str:
        """The reason chain as one sentence: "SO-12 line 1: 40 from stock; 60 made on L1 …"."""
        told = (step.text for step in self.steps if step.text)
        return f"{self.order} line {self.line}: " + "; ".join(told)


def when(at: datetime) -> str:
    """A short UTC instant for sentences, rounded up to the minute: "2 Dec 14:00"."""
    at = ceil_minute(at)
    return f"{at.day} {at:%b %H:%M}"


def _aware(at: datetime, what: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise Invalid(f"{what} must be an aware (UTC) datetime, got {at.isoformat()}")


def _non_negative(value: Decimal, what: str) -> None:
    if value < 0:
        raise Invalid(f"{what} must be >= 0, got {value}")


class _Component:
    """One component's supply as a cumulative timeline, and how much of it is taken."""

    __slots__ = ("arrivals", "cumulative", "lead_time", "on_hand", "taken")

    def __init__(self, supply: ComponentSupply, orders: list[PurchaseOrder]) -> None:
        self.on_hand = supply.on_hand
        self.lead_time = supply.lead_time
        self.arrivals = sorted(orders, key=lambda po: (po.confirmed_at, po.number))
        self.cumulative: list[Decimal] = []
        total = supply.on_hand
        for po in self.arrivals:
            total += po.quantity
            self.cumulative.append(total)
        self.taken = ZERO


@dataclass(slots=True)
class _Line:
    calendar: WorkingCalendar
    free_at: datetime
    after: str | None = None  # what the line finishes last before it is free


_Factors = dict[str, tuple[tuple[str, Decimal], ...]]
_last_exploded: list[tuple[tuple[BomLine, ...], _Factors] | None] = [None]


def _exploded(bom: Sequence[BomLine]) -> _Factors:
    """Each parent's components with their factors; a BOM cycle is refused.

    The service promises against the same BOM (one tuple, read once per plant model) on every
    re-promise: the last tuple's explosion is kept (a tuple of frozen lines cannot change).
    """
    last = _last_exploded[0]  # (read once: another thread may replace it)
    if last is not None and last[0] is bom:
        return last[1]
    try:
        factors = explosion_factors(bom)
        named = {c for components in factors.values() for c, _ in components}
        low_level_codes(named | factors.keys(), factors)  # refuses a cycle
    except PlanningError as error:
        raise Invalid(str(error)) from error
    if isinstance(bom, tuple):
        _last_exploded[0] = (bom, factors)
    return factors


_Way = tuple[_Line, str, tuple[Decimal, str], Callable[[datetime, timedelta], datetime]]


class _Context:
    """The plant indexed for one order, with what earlier lines of the order took."""

    def __init__(self, plant: Plant, now: datetime) -> None:
        self.now = now
        self.stock = {s.item: s.available for s in plant.stock}
        for s in plant.stock:
            _non_negative(s.on_hand, f"stock of {s.item}")
        self.routes: dict[str, list[Route]] = {}
        self.rates: dict[tuple[str, str], tuple[Decimal, str]] = {}
        for route in plant.routes:
            if route.line not in plant.calendars:
                raise Invalid(f"route of {route.item} names unknown line {route.line!r}")
            self.routes.setdefault(route.item, []).append(route)
            self.rates[(route.item, route.line)] = route.rate
        for routes in self.routes.values():
            routes.sort(key=lambda r: r.line)
        self.factors = _exploded(plant.bom)
        orders: dict[str, list[PurchaseOrder]] = {}
        for po in plant.purchase_orders:
            _aware(po.confirmed_at, f"confirmed date of {po.number}")
            _non_negative(po.quantity, f"quantity of {po.number}")
            orders.setdefault(po.item, []).append(po)
        self.components: dict[str, _Component] = {}
        for supply in plant.components:
            _non_negative(supply.on_hand, f"on hand of component {supply.item}")
            self.components[supply.item] = _Component(supply, orders.pop(supply.item, []))
        if orders:
            raise Invalid(f"purchase order for unknown component {min(orders)!r}")
        self.lines = {
            name: _Line(calendar, now) for name, calendar in sorted(plant.calendars.items())
        }
        # Per item, its routes in line order as (line state, line, (rate, basis), the line's
        # calendar's advance).
        advances = {name: line.calendar.advance for name, line in self.lines.items()}
        self.ways: dict[str, list[_Way]] = {
            item: [(self.lines[r.line], r.line, r.rate, advances[r.line]) for r in routes]
            for item, routes in self.routes.items()
        }
        for work in plant.queue:
            self._queue(work)
        # Undo logs since `save`: (item, old or None: no entry), (component, old taken),
        # (line, old free_at, old after).
        self._stock_undo: list[tuple[str, Decimal | None]] = []
        self._taken_undo: list[tuple[_Component, Decimal]] = []
        self._line_undo: list[tuple[_Line, datetime, str | None]] = []

    def _queue(self, work: QueuedWork) -> None:
        line = self.lines.get(work.line)
        if line is None:
            raise Invalid(f"{work.work_order} is queued on unknown line {work.line!r}")
        rate = self.rates.get((work.item, work.line))
        if rate is None:
            raise Invalid(f"{work.work_order}: no rate for {work.item} on {work.line}")
        _non_negative(work.remaining, f"remaining quantity of {work.work_order}")
        if work.remaining > 0:
            line.free_at = line.calendar.advance(
                line.free_at, time_to_make(work.remaining, rate[0])
            )
            line.after = work.work_order

    def known(self, item: str) -> bool:
        return item in self.stock or item in self.routes

    def save(self) -> None:
        """Start the undo log of an order line: what it changes from here can be put back.

        An undo log, not a snapshot: a line touches a few entries of stock, component and
        line state, and copying all of them (hundreds of items) per line was the cost.
        """
        self._stock_undo.clear()
        self._taken_undo.clear()
        self._line_undo.clear()

    def restore(self) -> None:
        """Put back everything changed since `save` (a line that cannot be promised).

        Each log is undone newest first; the three touch different state, so their order
        among each other does not matter."""
        stock = self.stock
        for item, old in reversed(self._stock_undo):
            if old is None:
                del stock[item]  # it had no entry before
            else:
                stock[item] = old
        for component, taken in reversed(self._taken_undo):
            component.taken = taken
        for line, free_at, after in reversed(self._line_undo):
            line.free_at = free_at
            line.after = after
        self.save()

    def set_stock(self, item: str, left: Decimal) -> None:
        """What is left of `item`'s available stock (logged for `restore`)."""
        self._stock_undo.append((item, self.stock.get(item)))
        self.stock[item] = left

    def take(self, component: _Component, upto: Decimal) -> None:
        """How much of `component` is taken in all (logged for `restore`)."""
        self._taken_undo.append((component, component.taken))
        component.taken = upto

    def occupy(self, line: _Line, free_at: datetime, after: str) -> None:
        """The line is busy until `free_at` with `after` (logged for `restore`)."""
        self._line_undo.append((line, line.free_at, line.after))
        line.free_at = free_at
        line.after = after


def _components(
    context: _Context,
    item: str,
    quantity: Decimal,
    label: str,
    steps: list[Step],
    *,
    prefix: str,
) -> tuple[datetime | None, bool]:
    """Take the components of `quantity` of `item`: (when all are there or None, bought?)."""
    now = context.now
    ready: datetime | None = now
    bought = False
    for name, factor in context.factors.get(item, ()):
        need = quantity * factor
        component = context.components.get(name)
        if component is None:
            if not context.known(name):
                raise Invalid(f"component {name!r} of {item} has no supply record")
            # A semi-finished component: its stock, then made on its own line first.
            finish, sub_bought = _take_or_make(
                context, name, need, label, steps, prefix=f"{name}: "
            )
            bought = bought or sub_bought
            ready = None if finish is None or ready is None else max(ready, finish)
            continue
        upto = component.taken + need
        short = min(need, upto - component.on_hand)  # what of this need on hand misses
        context.take(component, upto)
        if short <= 0:
            continue  # on hand covers it: not a limit, not in the reason
        index = bisect.bisect_left(component.cumulative, upto)
        if index < len(component.arrivals):
            po = component.arrivals[index]
            at = max(po.confirmed_at, now)
            text = partial(_short_until, prefix, name, short, po)
            steps.append(Step(StepKind.COMPONENT, po.number, at, short, text))
        elif component.lead_time is not None:
            at = now + component.lead_time
            supplied = component.cumulative[-1] if component.cumulative else component.on_hand
            to_buy = min(need, upto - supplied)
            if component.arrivals and upto - need < supplied:
                # The need spans the last open purchase order too: what it brings is there
                # only when it arrives, however soon a new purchase could come.
                po = component.arrivals[-1]  # the latest to arrive of those it spans
                cumulative = component.cumulative
                before = cumulative[-2] if len(cumulative) > 1 else component.on_hand
                from_po = supplied - max(upto - need, before)
                po_at = max(po.confirmed_at, now)
                text = partial(_from_order, prefix, name, from_po, po)
                steps.append(Step(StepKind.COMPONENT, po.number, po_at, from_po, text))
                at = max(at, po_at)
            arrives = now + component.lead_time
            lead = component.lead_time
            text = partial(_to_buy, prefix, name, short, to_buy, lead=lead, arrives=arrives)
            steps.append(Step(StepKind.PURCHASE, name, arrives, to_buy, text))
            bought = True
        else:
            text = partial(_no_supply, prefix, name, short)
            steps.append(Step(StepKind.SHORT, name, None, short, text))
            ready = None
            continue
        ready = None if ready is None else max(ready, at)
    return ready, bought


# The reason sentences, written only when read (see `Step`).


def _short_until(prefix: str, name: str, short: Decimal, po: PurchaseOrder) -> str:
    return (
        f"{prefix}component {name} short by {display(short)} until {po.number}"
        f" confirmed {when(po.confirmed_at)}"
    )


def _from_order(prefix: str, name: str, from_po: Decimal, po: PurchaseOrder) -> str:
    return (
        f"{prefix}component {name}: {display(from_po)} from {po.number}"
        f" confirmed {when(po.confirmed_at)}"
    )


def _to_buy(
    prefix: str, name: str, short: Decimal, to_buy: Decimal, *, lead: timedelta, arrives: datetime
) -> str:
    return (
        f"{prefix}component {name} short by {display(short)}: {display(to_buy)} to buy,"
        f" {_span(lead)} lead time → {when(arrives)}"
    )


def _no_supply(prefix: str, name: str, short: Decimal) -> str:
    return f"{prefix}component {name} short by {display(short)}: no open supply, no lead time"


def _from_stock(prefix: str, quantity: Decimal) -> str:
    return f"{prefix}{display(quantity)} from stock"


def _no_line(prefix: str, quantity: Decimal, item: str) -> str:
    return f"{prefix}{display(quantity)} short: no stock left and no line makes {item}"


def _made(
    prefix: str,
    quantity: Decimal,
    line: str,
    *,
    queue: tuple[str, datetime] | None,
    rate: tuple[Decimal, str],
    run: tuple[datetime, datetime],
    closed: bool,
    off: timedelta | None,
) -> str:
    """The production sentence: the queue ahead, rate, run and what the calendar did to it."""
    per_hour, basis = rate
    start, finish = run
    made = f"{prefix}{display(quantity)} made on {line}"
    if queue is not None:
        after, done = queue
        made += f" after {after} (done {when(done)})"
    made += f" at {display(per_hour.quantize(Decimal(1)))}/h {basis}"
    made += f", {when(start)} to {when(finish)}"
    waits = []
    if closed:
        waits.append(f"closed until {when(start)}")
    if off is not None:
        waits.append(f"{_span(off)} off shift during the run")
    if waits:
        made += f" (shift calendar: {', '.join(waits)})"
    return made


def _span(lead: timedelta) -> str:
    if lead % _DAY == timedelta(0):
        days = lead // _DAY
        return f"{days} day" if days == 1 else f"{days} days"
    hours = Decimal(lead // timedelta(microseconds=1)) / Decimal(3_600_000_000)
    return f"{display(hours.quantize(Decimal('0.1')))} h"


def _take_or_make(
    context: _Context, item: str, quantity: Decimal, label: str, steps: list[Step], *, prefix: str
) -> tuple[datetime | None, bool]:
    """Take `quantity` of a made item from stock, make the rest: (finish or None, bought?)."""
    now = context.now
    available = context.stock.get(item, ZERO)
    from_stock = min(available, quantity)
    to_make = quantity - from_stock
    context.set_stock(item, available - from_stock)
    if from_stock > 0:
        text = partial(_from_stock, prefix, from_stock)
        steps.append(Step(StepKind.STOCK, item, now, from_stock, text))
    if to_make <= 0:
        return now, False
    ways = context.ways.get(item)
    if not ways:
        text = partial(_no_line, prefix, to_make, item)
        steps.append(Step(StepKind.SHORT, item, None, to_make, text))
        return None, False
    ready, bought = _components(context, item, to_make, label, steps, prefix=prefix)
    if ready is None:
        return None, bought
    # The line finishing first (the first in line order of those finishing together).
    best: tuple[datetime, _Way, timedelta] | None = None
    runs: dict[Decimal, timedelta] = {}  # run time by rate (lines often share a rate)
    for way in ways:
        state, _, rate, advance = way
        run = runs.get(rate[0])
        if run is None:
            run = runs[rate[0]] = time_to_make(to_make, rate[0])
        free_at = state.free_at
        finish = advance(ready if ready > free_at else free_at, run)  # max(free_at, ready)
        if best is None or finish < best[0]:
            best = (finish, way, run)
    assert best is not None  # ways is not empty
    finish, (state, line, rate, _), run = best
    queue = None
    if state.after is not None and state.free_at > now:
        queue = (state.after, state.free_at)
        # Told inside the production sentence; the step keeps it machine-readable.
        steps.append(Step(StepKind.QUEUE, state.after, state.free_at, ZERO, ""))
    begin = max(state.free_at, ready)
    start = state.calendar.opens(begin)
    spent = finish - start - run
    off = spent if spent > timedelta(minutes=1) else None  # (sub-minute rounding: no wait)
    closed = start > begin
    if closed or off is not None:
        # Told inside the production sentence; the step keeps it machine-readable.
        steps.append(Step(StepKind.CALENDAR, line, start, ZERO, ""))
    made = partial(
        _made,
        prefix,
        to_make,
        line,
        queue=queue,
        rate=rate,
        run=(start, finish),
        closed=closed,
        off=off,
    )
    steps.append(Step(StepKind.PRODUCTION, line, ceil_minute(finish), to_make, made))
    context.occupy(state, finish, f"{prefix[:-2]} for {label}" if prefix else label)
    return finish, bought


def _promise_line(context: _Context, order: str, line: OrderLine) -> CtpPromise:
    steps: list[Step] = []
    label = f"{order} line {line.line}"
    context.save()
    finish, bought = _take_or_make(context, line.item, line.quantity, label, steps, prefix="")
    if finish is None:
        context.restore()  # a line that cannot be promised takes nothing
        kind = CtpKind.SHORT
        promised = None
    else:
        produced = any(step.kind is StepKind.PRODUCTION for step in steps)
        kind = CtpKind.PURCHASE if bought else CtpKind.PRODUCTION if produced else CtpKind.STOCK
        promised = ceil_minute(finish) if produced else context.now
    return CtpPromise(
        order,
        line.line,
        line.item,
        line.quantity,
        line.requested_date,
        promised,
        kind,
        tuple(steps),
    )


class Promiser:
    """Promises orders one after the other against one plant, each seeing what the orders
    before it took: finished stock, line time, component stock and purchase orders.

    The caller chooses the order of the orders (the service: earliest requested first). An
    order refused as invalid takes nothing, and the next one is promised as if it never came.
    """

    def __init__(self, plant: Plant, now: datetime) -> None:
        _aware(now, "now")
        self._context = _Context(plant, now)

    def promise(self, order: str, lines: Sequence[OrderLine]) -> list[CtpPromise]:
        """Promise the lines of `order` in line order (see the module docstring)."""
        context = self._context
        numbers = [line.line for line in lines]
        if len(set(numbers)) != len(numbers):
            raise Invalid(f"{order}: line numbers repeat")
        for line in lines:
            if line.quantity <= 0:
                raise Invalid(f"{order} line {line.line}: quantity must be > 0")
            if not context.known(line.item):
                raise Invalid(f"{order} line {line.line}: unknown item {line.item!r}")
        ordered = sorted(lines, key=lambda x: x.line)
        return [_promise_line(context, order, line) for line in ordered]


def promise_order(
    order: str, lines: Sequence[OrderLine], plant: Plant, now: datetime
) -> list[CtpPromise]:
    """Promise the lines of one order in line order (see the module docstring)."""
    return Promiser(plant, now).promise(order, lines)
