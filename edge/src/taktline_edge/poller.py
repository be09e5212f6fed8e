"""Per-device poll loop: a steady cadence, block reads, decoding, report by exception.

Cadence: polls are scheduled on monotonic deadlines (start + k * interval), so the time a poll
takes never accumulates into drift; a poll that overruns skips the ticks it missed rather than
bursting to catch up. A device that fails is marked unavailable (logged once), retried with the
shared backoff, and marked available again when a read succeeds (logged once); the other
devices' pollers are independent tasks and keep polling. Each change of availability is stamped
in `DeviceStatus.since` and handed to `on_availability` (the publisher turns it into the
device's Sparkplug state: its metrics' quality).

Hot path (200 devices x 100 tags a second per agent): a block is decoded in one pass
(`BlockDecoder`), and a block read with the same words as at the last fully reported poll is not
decoded at all (decoding is pure, so it has nothing new to report): a plant's mostly static
registers cost one comparison per block.
"""

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from taktline_contract.backoff import Backoff
from taktline_contract.sparkplug import DataType
from taktline_edge.cancellation import raise_if_cancelling
from taktline_edge.errors import DriverError, OutboxError, TagError
from taktline_edge.outbox import Sample
from taktline_edge.planner import Block, plan_reads
from taktline_edge.tags import BlockDecoder, Tag, TagValue

log = logging.getLogger(__name__)


class RegisterReader(Protocol):
    """What a poller needs from a driver."""

    async def read_blocks(self, blocks: Sequence[Block]) -> Sequence[Sequence[int]]:
        """The registers (or bits, as 0/1) of each block; raise `DriverError` on failure."""
        ...


_Meta = tuple[Tag, str, DataType, bool]
"""A tag, its metric, its Sparkplug datatype, and whether it has no deadband."""

AvailabilityListener = Callable[[str, bool, str | None], None]
"""Called with (device, available, reason) when a device becomes available or unavailable."""


class SampleSink(Protocol):
    """Where changed samples go (the outbox); raise `OutboxError` (e.g. full) to refuse them."""

    async def __call__(self, device: str, samples: Sequence[Sample]) -> None:
        """Store `samples` durably."""
        ...


@dataclass
class DeviceStatus:
    """What a test or a screen can ask about one device."""

    available: bool | None = None
    """None before the first poll, then whether the last poll succeeded."""
    since: datetime | None = None
    """When `available` last changed (UTC)."""
    last_error: str | None = None
    polls: int = 0
    failures: int = 0
    samples: int = 0
    """Samples stored (after deadband)."""

    def mark_unavailable(
        self, device: str, reason: str, at: datetime, listener: AvailabilityListener | None
    ) -> None:
        """Count a failure; on the change to unavailable log it once and tell `listener`."""
        self.failures += 1
        self.last_error = reason
        if self.available is False:
            log.debug("%s still unavailable: %s", device, reason)
            return
        log.warning("%s unavailable: %s", device, reason)
        self._change(device, False, reason, at, listener)

    def mark_available(
        self,
        device: str,
        at: datetime,
        listener: AvailabilityListener | None,
        detail: str = "",
    ) -> None:
        """A success; on the change to available log it once (with `detail`), tell `listener`."""
        self.last_error = None
        if self.available is True:
            return
        again = " again" if self.available is False else ""
        log.info("%s available%s%s", device, again, detail)
        self._change(device, True, None, at, listener)

    def _change(
        self,
        device: str,
        available: bool,
        reason: str | None,
        at: datetime,
        listener: AvailabilityListener | None,
    ) -> None:
        self.available = available
        self.since = at
        if listener is not None:
            listener(device, available, reason)


@dataclass
class Poller:
    """Polls one device forever; `current` always holds the latest value of every metric read."""

    device: str
    tags: Sequence[Tag]
    interval_s: float
    reader: RegisterReader
    sink: SampleSink
    max_gap: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=10.0))
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    status: DeviceStatus = field(default_factory=DeviceStatus)
    on_availability: AvailabilityListener | None = None
    _blocks: tuple[Block, ...] = field(init=False)
    _decoders: tuple[BlockDecoder, ...] = field(init=False)
    _metas: tuple[tuple[_Meta, ...], ...] = field(init=False)
    """Per block, per tag: what report by exception needs, looked up once."""
    _values: list[list[TagValue] | None] = field(init=False)
    """The latest decoded values of each block (None before its first read)."""
    _settled: list[tuple[int, ...] | None] = field(init=False)
    """Per block, the words last decoded and fully reported (their changes stored)."""
    _stamp: datetime | None = field(init=False, default=None)
    _reported: dict[str, TagValue] = field(init=False, default_factory=dict)
    _last_ms: datetime | None = field(init=False, default=None)
    _refused: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("poll interval must be positive")
        self._blocks = plan_reads(self.tags, max_gap=self.max_gap)
        self._decoders = tuple(BlockDecoder(b.tags, b.start, b.count) for b in self._blocks)
        self._metas = tuple(
            tuple((t, t.metric, t.datatype, t.deadband == 0) for t in b.tags) for b in self._blocks
        )
        self._values = [None] * len(self._blocks)
        self._settled = [None] * len(self._blocks)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The read plan."""
        return self._blocks

    @property
    def current(self) -> dict[str, Sample]:
        """The latest sample of every metric read (all stamped by the last successful poll)."""
        stamp = self._stamp
        if stamp is None:
            return {}
        out: dict[str, Sample] = {}
        for decoder, values in zip(self._decoders, self._values, strict=True):
            if values is not None:
                for tag, value in zip(decoder.tags, values, strict=True):
                    out[tag.metric] = Sample(self.device, tag.metric, stamp, value, tag.datatype)
        return out

    async def run(self) -> None:
        """Poll until cancelled."""
        deadline = self.clock()
        while True:
            raise_if_cancelling()
            ok = await self.poll_once()
            if not ok:
                # Unavailable: retry on the backoff's pace, then resume the cadence from now.
                await self.sleep(self.backoff.next_delay())
                deadline = self.clock()
                continue
            self.backoff.reset()
            deadline += self.interval_s
            now = self.clock()
            if deadline < now:
                missed = math.ceil((now - deadline) / self.interval_s)
                deadline += missed * self.interval_s
            await self.sleep(deadline - now)

    async def poll_once(self) -> bool:
        """Read, decode and store changes once; False when the device failed."""
        self.status.polls += 1
        try:
            replies = await self.reader.read_blocks(self._blocks)
            fresh = self._decode(replies)
        except (DriverError, TagError) as exc:
            self._mark_unavailable(str(exc))
            return False
        stamp = self._timestamp()
        self._stamp = stamp
        changed: list[Sample] = []
        reported, device = self._reported, self.device
        for index, _words, values in fresh:
            self._values[index] = values
            for (tag, metric, datatype, plain), value in zip(
                self._metas[index], values, strict=True
            ):
                if reportable(tag, plain, reported.get(metric), value):
                    changed.append(Sample(device, metric, stamp, value, datatype))
        self._mark_available()
        if changed and not await self._store(changed):
            return True
        for index, words, _values in fresh:
            self._settled[index] = words
        return True

    def _decode(
        self, replies: Sequence[Sequence[int]]
    ) -> list[tuple[int, tuple[int, ...], list[TagValue]]]:
        """(block index, words, values) of each block whose words differ from its settled ones.

        Decoding is pure and every value of a settled block was reported (or is within its
        deadband of the reported one), so a block read again with the same words has no
        change to report: most of a plant's registers, most of the time.
        """
        if len(replies) != len(self._blocks):
            got, asked = len(replies), len(self._blocks)
            raise DriverError(f"{self.device}: {got} replies to {asked} blocks")
        fresh = []
        for index, (decoder, reply) in enumerate(zip(self._decoders, replies, strict=True)):
            words = tuple(reply)
            if words == self._settled[index]:
                continue
            values = decoder.decode(words)
            fresh.append((index, words, values))
        return fresh

    async def _store(self, samples: Sequence[Sample]) -> bool:
        """Hand `samples` to the sink; False when it refused them (kept to retry)."""
        try:
            await self.sink(self.device, samples)
        except OutboxError as exc:
            # Full, or a disk error: keep the old baseline, so the first poll that can store
            # again stores the current values (absolute counters keep counts exact meanwhile).
            if not self._refused:
                log.error("%s: samples not stored: %s; retrying on every poll", self.device, exc)
                self._refused = True
            return False
        if self._refused:
            log.warning("%s: samples are stored again", self.device)
            self._refused = False
        for sample in samples:
            self._reported[sample.metric] = _tag_value(sample)
        self.status.samples += len(samples)
        return True

    def _timestamp(self) -> datetime:
        """Now, to the millisecond (Sparkplug's resolution), strictly after the previous poll's."""
        stamp = self.now()
        stamp = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)
        # A wall clock stepped back (NTP) must not reorder or collide this device's samples.
        if self._last_ms is not None and stamp <= self._last_ms:
            stamp = self._last_ms + timedelta(milliseconds=1)
        self._last_ms = stamp
        return stamp

    def _mark_unavailable(self, reason: str) -> None:
        self.status.mark_unavailable(self.device, reason, self.now(), self.on_availability)

    def _mark_available(self) -> None:
        self.status.mark_available(self.device, self.now(), self.on_availability)


def reportable(tag: Tag, plain: bool, old: TagValue | None, new: TagValue) -> bool:
    """`tag.changed(old, new)`, faster for the common cases; `plain`: the tag has no deadband.

    Equal values never differ by more than a deadband; without one, unequal values differ
    unless both are NaN (``x == x`` is false only for NaN).
    """
    if old is None:
        return True
    if new == old:
        return False
    if plain:
        return new == new or old == old  # noqa: PLR0124
    return tag.changed(old, new)


def _tag_value(sample: Sample) -> TagValue:
    value = sample.value
    if value is None:  # pragma: no cover - tags never decode to None
        raise TagError(f"{sample.metric}: None is not a tag value")
    return value
