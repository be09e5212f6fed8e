"""Each device's Sparkplug state within one session of the edge node: born, dying or dead.

Pure bookkeeping (no MQTT, no outbox I/O): the publisher asks it what to publish and when.

A device whose poller reports it unavailable is *dying*: samples polled while it was up may
still wait in the outbox, and they go out first, as its DDATA in their order; its DDEATH follows
once both outbox streams (live and historical) have been read past the last row stored when it
failed. So the host receives every device's history in order, and the drain never holds rows
back: holding a dead device's rows at the head of the outbox (which is read oldest first) would
stall every device queued behind them. Once its DDEATH is out the device is *dead*: it gets no
DDATA; rows stored for it meanwhile (e.g. an OPC UA notification still queued when the link
dropped) wait for its DBIRTH, which goes out (with current values) as soon as its poller reports
it available again, and then they are flagged historical, like everything that predates a birth.
A device that is back before its DDEATH went out is simply alive again: its data has a gap and
the node metrics (``Devices/{id}/Errors``) counted the failure.

A node birth (NBIRTH, also on NCMD Rebirth) births every device again; the ones that are down
at that moment start dying at once, so the host gets their DBIRTH (last known values) and then,
after their queued rows, their DDEATH.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from taktline_edge.outbox import StoredSample


class DeviceState(StrEnum):
    """A device's state as the host sees it in the current session."""

    UNBORN = "unborn"
    """No DBIRTH yet in this session (before the node's birth)."""
    BORN = "born"
    DYING = "dying"
    """Unavailable; its DDEATH waits for the rows stored before it failed."""
    DEAD = "dead"
    """DDEATH published; no DDATA until its DBIRTH."""


@dataclass
class _Dying:
    since: datetime
    watermark: int | None
    """The highest outbox row id stored (by any device) when it failed; None: none yet."""
    after_read: int
    """Reads numbered above this one started after it failed."""
    passed: set[bool] = field(default_factory=set)
    """The streams (historical flag) read past `watermark` since it failed."""


class DeviceStates:
    """Availability reported by the pollers, and what the host has been told about it."""

    def __init__(self, devices: Iterable[str]) -> None:
        self._devices = tuple(devices)
        self._available: dict[str, bool | None] = dict.fromkeys(self._devices)
        self._since: dict[str, datetime] = {}
        self._last_row: int | None = None
        self._last_row_of: dict[str, int] = {}
        self._reads = 0
        self._state: dict[str, DeviceState] = dict.fromkeys(self._devices, DeviceState.UNBORN)
        self._dying: dict[str, _Dying] = {}
        self._historical_until: dict[str, int] = {}

    # what the agent reports

    def stored(self, device: str, row_ids: Sequence[int]) -> None:
        """Rows `row_ids` of `device` were committed to the outbox."""
        if not row_ids:
            return
        last = max(row_ids)
        self._last_row = last if self._last_row is None else max(self._last_row, last)
        self._last_row_of[device] = max(self._last_row_of.get(device, last), last)

    def availability(self, device: str, available: bool, at: datetime | None = None) -> None:
        """`device`'s poller found it available (or not) at `at`."""
        if device not in self._available:
            return
        self._available[device] = available
        self._since[device] = at or datetime.now(UTC)
        state = self._state[device]
        if not available and state == DeviceState.BORN:
            self._start_dying(device)
        elif available and state == DeviceState.DYING:
            del self._dying[device]
            self._state[device] = DeviceState.BORN

    # what the publisher asks

    def state(self, device: str) -> DeviceState:
        """`device`'s state in the current session."""
        return self._state[device]

    def node_born(self) -> None:
        """Every device had its DBIRTH (a node birth); every waiting row is historical now."""
        self._dying.clear()
        self._historical_until.clear()
        for device in self._devices:
            self._state[device] = DeviceState.BORN
            if self._available[device] is False:
                self._start_dying(device)

    def node_dead(self) -> None:
        """The session ended: no device is born until the next node birth."""
        self._dying.clear()
        self._historical_until.clear()
        self._state = dict.fromkeys(self._devices, DeviceState.UNBORN)

    def reading(self) -> int:
        """Number a read of the outbox that is about to start (see `read`)."""
        self._reads += 1
        return self._reads

    def read(self, number: int, historical: bool, rows: Sequence[StoredSample], limit: int) -> None:
        """Read `number` of one stream returned `rows` (asked for `limit`), all published."""
        complete = len(rows) < limit
        last = rows[-1].id if rows else None
        for dying in self._dying.values():
            reached = last is not None and dying.watermark is not None and last >= dying.watermark
            # Only a read that started after the failure saw every row stored before it.
            if reached or (complete and number > dying.after_read):
                dying.passed.add(historical)

    def due_deaths(self) -> list[tuple[str, datetime]]:
        """Dying devices whose earlier rows are all out: (device, when it failed)."""
        return [
            (device, dying.since)
            for device, dying in self._dying.items()
            if dying.passed >= {False, True}
        ]

    def died(self, device: str) -> None:
        """`device`'s DDEATH is published."""
        self._dying.pop(device, None)
        self._state[device] = DeviceState.DEAD

    def due_births(self) -> list[str]:
        """Dead devices that are available again."""
        return [
            d for d in self._devices if self._state[d] == DeviceState.DEAD and self._available[d]
        ]

    def reborn(self, device: str) -> None:
        """`device`'s DBIRTH is published: its rows stored until now predate it."""
        self._state[device] = DeviceState.BORN
        last = self._last_row_of.get(device)
        if last is not None:
            self._historical_until[device] = last

    def publishable(self, row: StoredSample) -> bool:
        """Whether `row` may go out as DDATA now (its device is not dead)."""
        return self._state.get(row.sample.device) != DeviceState.DEAD

    def historical(self, row: StoredSample) -> bool:
        """Whether `row` is historical: stored before a birth of its device."""
        if row.historical:
            return True
        until = self._historical_until.get(row.sample.device)
        return until is not None and row.id <= until

    def _start_dying(self, device: str) -> None:
        since = self._since.get(device) or datetime.now(UTC)
        self._dying[device] = _Dying(since, self._last_row, self._reads)
        self._state[device] = DeviceState.DYING
