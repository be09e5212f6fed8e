"""Composition root of the edge agent: outbox, drivers, pollers and publisher in one TaskGroup.

In-process use (the demo, tests)::

    async with EdgeAgent(config) as agent:     # started: outbox open, tasks running
        ...                                     # agent.status(), agent.link, agent.devices
    # leaving the block cancels the tasks, publishes NDEATH if born, closes the outbox

    await run_agent(config, stop_event)         # the same, until stop_event is set
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from taktline_contract.sparkplug.codec import Value
from taktline_edge.config import EdgeConfig
from taktline_edge.drivers.modbus import ModbusDriver
from taktline_edge.errors import CommandError, EdgeError, TagError
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
from taktline_edge.poller import DeviceStatus, Poller
from taktline_edge.publisher import DeviceModel, LinkStatus, Publisher, PublisherSettings
from taktline_edge.tags import Tag

log = logging.getLogger(__name__)

_STOP_ATTEMPTS = 30


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of the agent for tests and screens."""

    connected: bool
    host_online: bool
    live: bool
    bd_seq: int | None
    births: int
    outbox_depth: int
    samples_stored: int
    samples_published: int
    devices: Mapping[str, bool | None]
    """Device id -> available (None before its first poll)."""


class EdgeAgent:
    """The edge agent for one configuration; an async context manager or `run()` until cancelled."""

    def __init__(self, config: EdgeConfig, settings: PublisherSettings | None = None) -> None:
        self.config = config
        self.settings = settings or PublisherSettings.from_config(config)
        self._tags: dict[str, dict[str, Tag]] = {
            d.id: {t.metric: t for t in d.to_tags()} for d in config.devices
        }
        self._outbox: Outbox | None = None
        self._publisher: Publisher | None = None
        self._async_outbox: AsyncOutbox | None = None
        self._pollers: dict[str, Poller] = {}
        self._drivers: dict[str, ModbusDriver] = {}
        self._depth_at_stop = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # composition

    async def run(self) -> None:
        """Open the outbox, then poll and publish until cancelled."""
        outbox = await asyncio.to_thread(
            Outbox, self.config.outbox.path, self.config.outbox.max_bytes
        )
        try:
            self._build(outbox)
            assert self._publisher is not None
            async with asyncio.TaskGroup() as tasks:
                for device_id, poller in self._pollers.items():
                    tasks.create_task(poller.run(), name=f"poll:{device_id}")
                tasks.create_task(self._publisher.run(), name="publish")
                self._ready.set()
                log.info(
                    "edge node %s/%s running: %d device(s), outbox %s",
                    self.settings.group_id,
                    self.settings.edge_node_id,
                    len(self._pollers),
                    self.config.outbox.path,
                )
        finally:
            for driver in self._drivers.values():
                await driver.close()
            self._outbox = None
            self._depth_at_stop = outbox.depth()
            outbox.close()

    def _build(self, outbox: Outbox) -> None:
        self._outbox = outbox
        async_outbox = AsyncOutbox(outbox)
        for device in self.config.devices:
            m = device.modbus
            driver = ModbusDriver(device.id, m.host, m.port, m.unit_id, m.timeout_s)
            self._drivers[device.id] = driver
            self._pollers[device.id] = Poller(
                device=device.id,
                tags=tuple(self._tags[device.id].values()),
                interval_s=device.poll_interval_ms / 1000,
                reader=driver,
                sink=self._store,
                max_gap=device.max_gap,
            )
        models = [DeviceModel(d, tuple(tags.values())) for d, tags in self._tags.items()]
        self._publisher = Publisher(
            self.settings, async_outbox, models, self._current, commands=self._write
        )
        self._async_outbox = async_outbox

    async def _store(self, device: str, samples: Sequence[Sample]) -> None:
        """Poller sink: durably append, flagged historical unless the node is live."""
        assert self._publisher is not None
        assert self._async_outbox is not None
        historical = not self._publisher.status.live
        await self._async_outbox.append(samples, historical)
        self._publisher.wake()

    def _current(self, device: str) -> Mapping[str, Sample]:
        poller = self._pollers.get(device)
        return dict(poller.current) if poller is not None else {}

    async def _write(self, device: str, metric: str, value: Value) -> None:
        """DCMD: write a tag, if the tag map allows it."""
        tag = self._tags.get(device, {}).get(metric)
        if tag is None:
            raise CommandError(f"{device} has no metric {metric!r}")
        if not tag.writable:
            raise CommandError(f"{device}/{metric} is read-only in the tag map")
        if value is None or isinstance(value, str | bytes):
            raise CommandError(f"{device}/{metric}: {value!r} cannot be written")
        try:
            words = tag.encode(value)
        except TagError as exc:
            raise CommandError(str(exc)) from exc
        await self._drivers[device].write_registers(tag.address, words)

    # context manager

    async def __aenter__(self) -> "EdgeAgent":
        if self._task is not None:
            raise EdgeError("the agent is already running")
        self._task = asyncio.create_task(self.run(), name="edge-agent")
        ready = asyncio.create_task(self._ready.wait(), name="edge-agent-ready")
        try:
            await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._task.done():
            await self._task  # start-up failed: raise its error here
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Cancel the agent's tasks and wait for a clean shutdown."""
        task, self._task = self._task, None
        if task is None:
            return
        # Cancel again while it runs: on 3.11 a library's wait_for can swallow one request.
        for _ in range(_STOP_ATTEMPTS):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                break
        else:
            raise EdgeError(f"the edge agent did not stop within {_STOP_ATTEMPTS} s")
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just our agent task

    # introspection

    @property
    def link(self) -> LinkStatus:
        """The MQTT side: connected, host online, live, bdSeq, counters."""
        if self._publisher is None:
            return LinkStatus()
        return self._publisher.status

    @property
    def devices(self) -> Mapping[str, DeviceStatus]:
        """Per-device poll status."""
        return {device: poller.status for device, poller in self._pollers.items()}

    def current(self, device: str) -> Mapping[str, Sample]:
        """The latest sample of each of `device`'s metrics."""
        return self._current(device)

    def outbox_depth(self) -> int:
        """Samples waiting in the outbox (0 before start; as left at stop after it)."""
        return self._outbox.depth() if self._outbox is not None else self._depth_at_stop

    def status(self) -> AgentStatus:
        """A snapshot of everything above."""
        link = self.link
        return AgentStatus(
            connected=link.connected,
            host_online=link.host_online,
            live=link.live,
            bd_seq=link.bd_seq,
            births=link.births,
            outbox_depth=self.outbox_depth(),
            samples_stored=sum(p.status.samples for p in self._pollers.values()),
            samples_published=link.samples_published,
            devices={d: p.status.available for d, p in self._pollers.items()},
        )


async def run_agent(config: EdgeConfig, stop: asyncio.Event) -> None:
    """Run the edge agent in-process until `stop` is set."""
    async with EdgeAgent(config):
        await stop.wait()
