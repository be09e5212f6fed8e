"""The poll loop with a manual clock: steady cadence, report by exception, unavailable devices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_contract.backoff import Backoff
from taktline_contract.sparkplug import DataType
from taktline_edge.errors import DriverError, OutboxFullError
from taktline_edge.outbox import Sample
from taktline_edge.planner import Block
from taktline_edge.poller import Poller
from taktline_edge.tags import Table, Tag, TagType

TAGS = (
    Tag("Production/GoodCount", 0, TagType.UINT32),
    Tag("Process/Temperature", 8, TagType.FLOAT32, deadband=Decimal("0.5")),
)


class StopPollingError(Exception):
    """Ends a poll loop under test."""


@dataclass
class Clock:
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    limit: int = 10

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) >= self.limit:
            raise StopPollingError


@dataclass
class Plc:
    """Registers 0..9 of a fake PLC; each read costs `read_s` of the manual clock."""

    clock: Clock
    registers: list[int] = field(default_factory=lambda: [0] * 10)
    read_s: float = 0.05
    failing: bool = False
    starts: list[float] = field(default_factory=list)

    async def read_blocks(self, blocks: Sequence[Block]) -> list[list[int]]:
        self.starts.append(self.clock.now)
        self.clock.now += self.read_s
        if self.failing:
            raise DriverError("M1: cannot connect to 127.0.0.1:5021")
        return [self.registers[b.start : b.end] for b in blocks]

    def set_float(self, address: int, words: tuple[int, int]) -> None:
        self.registers[address : address + 2] = list(words)


@dataclass
class Sink:
    stored: list[Sample] = field(default_factory=list)
    full: bool = False

    async def __call__(self, device: str, samples: Sequence[Sample]) -> None:
        if self.full:
            raise OutboxFullError("outbox reached 65536 bytes")
        self.stored.extend(samples)


def _poller(clock: Clock, plc: Plc, sink: Sink, interval_s: float = 0.2) -> Poller:
    wall = iter(
        datetime(2026, 11, 24, tzinfo=UTC) + timedelta(seconds=i / 10) for i in range(10**6)
    )
    return Poller(
        device="M1",
        tags=TAGS,
        interval_s=interval_s,
        reader=plc,
        sink=sink,
        backoff=Backoff(initial=1.0, maximum=4.0, jitter=0.0),
        clock=clock,
        sleep=clock.sleep,
        now=lambda: next(wall),
    )


def _available(poller: Poller) -> bool | None:
    return poller.status.available


async def test_polls_keep_a_steady_cadence_without_drift() -> None:
    clock = Clock(limit=50)
    plc = Plc(clock, read_s=0.07)
    poller = _poller(clock, plc, Sink())
    with pytest.raises(StopPollingError):
        await poller.run()
    assert plc.starts == pytest.approx([0.2 * k for k in range(50)])


async def test_an_overrun_skips_missed_ticks_instead_of_bursting() -> None:
    clock = Clock(limit=4)
    plc = Plc(clock, read_s=0.05)
    poller = _poller(clock, plc, Sink())
    plc.read_s = 0.5  # the first read takes two and a half intervals
    with pytest.raises(StopPollingError):
        await poller.run()
    assert plc.starts[:2] == pytest.approx([0.0, 0.6])


async def test_one_block_read_per_poll_and_only_changes_are_stored() -> None:
    clock = Clock()
    plc, sink = Plc(clock), Sink()
    poller = _poller(clock, plc, sink)
    assert [(b.start, b.count) for b in poller.blocks] == [(0, 2), (8, 2)]
    plc.registers[1] = 5
    plc.set_float(8, (0x41A0, 0x0000))  # 20.0
    assert await poller.poll_once()
    assert [(s.metric, s.value) for s in sink.stored] == [
        ("Production/GoodCount", 5),
        ("Process/Temperature", 20.0),
    ]
    plc.set_float(8, (0x41A3, 0x3333))  # 20.4: within the 0.5 deadband
    assert await poller.poll_once()
    assert len(sink.stored) == 2
    assert poller.current["Process/Temperature"].value == pytest.approx(20.4), "latest read kept"
    plc.registers[1] = 6
    plc.set_float(8, (0x41A4, 0xCCCD))  # 20.6: beyond the deadband from the stored 20.0
    assert await poller.poll_once()
    assert [(s.metric, s.value) for s in sink.stored[2:]] == [
        ("Production/GoodCount", 6),
        ("Process/Temperature", pytest.approx(20.6)),
    ]
    stamps = [s.timestamp for s in sink.stored]
    assert all(s.tzinfo is UTC and s.microsecond % 1000 == 0 for s in stamps)
    assert poller.status.samples == 4


async def test_timestamps_stay_increasing_when_the_wall_clock_steps_back() -> None:
    clock = Clock()
    plc, sink = Plc(clock), Sink()
    poller = _poller(clock, plc, sink)
    stuck = datetime(2026, 11, 24, 8, 0, 0, 123456, tzinfo=UTC)
    poller.now = lambda: stuck
    for value in range(3):
        plc.registers[1] = value
        await poller.poll_once()
    goods = [s.timestamp for s in sink.stored if s.metric == "Production/GoodCount"]
    assert goods == [
        stuck.replace(microsecond=123000) + timedelta(milliseconds=i) for i in range(3)
    ]


async def test_a_full_outbox_keeps_the_baseline_so_nothing_is_skipped() -> None:
    clock = Clock()
    plc, sink = Plc(clock), Sink()
    poller = _poller(clock, plc, sink)
    await poller.poll_once()
    sink.full = True
    plc.registers[1] = 1
    await poller.poll_once()
    sink.full = False
    await poller.poll_once()  # the value did not change since, but it was never stored
    assert [s.value for s in sink.stored if s.metric == "Production/GoodCount"] == [0, 1]


async def test_a_failing_device_is_unavailable_logged_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(limit=5)
    plc, sink = Plc(clock), Sink()
    poller = _poller(clock, plc, sink)
    plc.failing = True
    with (
        caplog.at_level(logging.DEBUG, logger="taktline_edge.poller"),
        pytest.raises(StopPollingError),
    ):
        await poller.run()
    assert _available(poller) is False
    assert poller.status.failures == 5
    assert "cannot connect" in (poller.status.last_error or "")
    # Retries follow the backoff (1, 2, 4, 4, ...), not the 0.2 s poll cadence.
    assert clock.sleeps == [1.0, 2.0, 4.0, 4.0, 4.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "M1 unavailable: M1: cannot connect to 127.0.0.1:5021"
    ]

    caplog.clear()
    plc.failing = False
    clock.limit, clock.sleeps = 3, []
    with (
        caplog.at_level(logging.INFO, logger="taktline_edge.poller"),
        pytest.raises(StopPollingError),
    ):
        await poller.run()
    assert _available(poller) is True
    assert [r.getMessage() for r in caplog.records] == ["M1 available again"]
    assert clock.sleeps == pytest.approx([0.15, 0.15, 0.15]), "back on the cadence"


async def test_availability_changes_are_stamped_and_reported_once_each() -> None:
    clock = Clock()
    plc, sink = Plc(clock), Sink()
    poller = _poller(clock, plc, sink)
    changes: list[tuple[str, bool, str | None]] = []
    poller.on_availability = lambda device, up, reason: changes.append((device, up, reason))
    assert poller.status.since is None
    assert await poller.poll_once()
    first = poller.status.since
    assert first is not None
    assert first.tzinfo is UTC
    assert await poller.poll_once()
    assert poller.status.since == first, "no change, no new stamp"
    plc.failing = True
    assert not await poller.poll_once()
    assert not await poller.poll_once()
    down = poller.status.since
    assert down is not None
    assert down > first
    plc.failing = False
    assert await poller.poll_once()
    assert changes == [
        ("M1", True, None),
        ("M1", False, "M1: cannot connect to 127.0.0.1:5021"),
        ("M1", True, None),
    ]


@dataclass
class Tables:
    """A fake PLC with all four tables; replies per block table."""

    values: dict[Table, list[int]]

    async def read_blocks(self, blocks: Sequence[Block]) -> list[list[int]]:
        return [self.values[b.table][b.start : b.end] for b in blocks]


async def test_one_poll_reads_every_table_into_typed_samples() -> None:
    tags = (
        Tag("Run", 1, TagType.BOOL, table=Table.COIL),
        Tag("Door", 0, TagType.BOOL, table=Table.DISCRETE),
        Tag("Alarm", 0, TagType.BIT, table=Table.INPUT, bit=2),
        Tag("Level", 1, TagType.INT16, table=Table.INPUT, scale=Decimal("0.5")),
        Tag("Count", 0, TagType.UINT32),
    )
    plc = Tables(
        {
            Table.COIL: [0, 1],
            Table.DISCRETE: [1],
            Table.INPUT: [0b100, 0xFFFE],
            Table.HOLDING: [0, 70_000 - 65_536],
        }
    )
    sink = Sink()
    clock = Clock()
    poller = Poller("M1", tags, 1.0, plc, sink, clock=clock, sleep=clock.sleep)
    assert [(b.table, b.start, b.count) for b in poller.blocks] == [
        (Table.COIL, 1, 1),
        (Table.DISCRETE, 0, 1),
        (Table.INPUT, 0, 2),
        (Table.HOLDING, 0, 2),
    ]
    assert await poller.poll_once()
    got = {s.metric: (s.value, s.datatype) for s in sink.stored}
    assert got == {
        "Run": (True, DataType.BOOLEAN),
        "Door": (True, DataType.BOOLEAN),
        "Alarm": (True, DataType.BOOLEAN),
        "Level": (Decimal("-1.0"), DataType.DOUBLE),
        "Count": (4464, DataType.UINT32),
    }
    plc.values[Table.COIL][1] = 0
    assert await poller.poll_once()
    assert [(s.metric, s.value) for s in sink.stored[5:]] == [("Run", False)]


async def test_a_reply_per_block_or_the_device_is_unavailable() -> None:
    class Short:
        async def read_blocks(self, blocks: Sequence[Block]) -> list[list[int]]:
            return []

    clock = Clock()
    poller = Poller("M1", TAGS, 1.0, Short(), Sink(), clock=clock, sleep=clock.sleep)
    assert not await poller.poll_once()
    assert poller.status.last_error == "M1: 0 replies to 2 blocks"
