"""Composition root of the edge agent: outbox, drivers, pollers and publisher in one TaskGroup.

In-process use (the demo, tests)::

    async with EdgeAgent(config) as agent:     # started: outbox open, tasks running
        ...                                     # agent.status(), agent.link, agent.devices
    # leaving the block cancels the tasks, publishes NDEATH if born, closes the outbox

    await run_agent(config, stop_event)         # the same, until stop_event is set
"""

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import cast

from taktline_contract.sparkplug import DataType
from taktline_contract.sparkplug.codec import Value
from taktline_edge.config import EdgeConfig
from taktline_edge.device_states import DeviceState
from taktline_edge.drivers.modbus import ModbusDriver
from taktline_edge.drivers.opcua import OpcUaSource
from taktline_edge.errors import CommandError, EdgeError, TagError
from taktline_edge.health import HealthServer
from taktline_edge.messages import (
    DEVICE_CONNECTED,
    DEVICE_ERRORS,
    DEVICE_POLL_LATENCY,
    NODE_SCAN_RATE,
    OUTBOX_BYTES,
    OUTBOX_DEPTH,
    OUTBOX_DROPPED,
    OUTBOX_FULL,
    OUTBOX_OLDEST_AGE,
    OUTBOX_REFUSED,
    OUTBOX_RETAINED,
    NodeMetric,
    device_metric,
)
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
from taktline_edge.planner import Block
from taktline_edge.poller import DeviceStatus, Poller, RegisterReader
from taktline_edge.publisher import DeviceModel, LinkStatus, Publisher, PublisherSettings
from taktline_edge.tags import Tag

log = logging.getLogger(__name__)

_STOP_ATTEMPTS = 30
MIN_SCAN_RATE_MS = 10
MAX_SCAN_RATE_MS = 3_600_000
"""The range `DeviceConfig.poll_interval_ms` allows, applied to NCMD Scan Rate too."""


@dataclass(frozen=True, slots=True)
class OutboxHealth:
    """The outbox as the node metrics and the health endpoint report it."""

    depth: int = 0
    """Unsent samples."""
    retained: int = 0
    """Sent samples kept for the replay window."""
    bytes: int = 0
    oldest_age_ms: int = 0
    full: bool = False
    dropped: int = 0
    refused: int = 0


def _outbox_health(outbox: Outbox) -> OutboxHealth:
    oldest = outbox.oldest_timestamp()
    age = 0 if oldest is None else (datetime.now(UTC) - oldest) // _ONE_MS
    return OutboxHealth(
        depth=outbox.depth(),
        retained=outbox.retained(),
        bytes=outbox.size_bytes(),
        oldest_age_ms=max(0, int(age)),
        full=outbox.full,
        dropped=outbox.dropped(),
        refused=outbox.refused,
    )


_ONE_MS = timedelta(milliseconds=1)


@dataclass
class _TimedReader:
    """Wraps a poller's reader to measure each poll's read latency."""

    inner: RegisterReader
    latency_ms: dict[str, int] = field(default_factory=dict)
    device: str = ""

    async def read_blocks(self, blocks: Sequence[Block]) -> Sequence[Sequence[int]]:
        started = time.monotonic()
        try:
            return await self.inner.read_blocks(blocks)
        finally:
            self.latency_ms[self.device] = round((time.monotonic() - started) * 1000)


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
        self._opcua: dict[str, OpcUaSource] = {}
        self._depth_at_stop = 0
        self._latency_ms: dict[str, int] = {}
        self._outbox_health = OutboxHealth()
        self._health: HealthServer | None = None
        intervals = {d.poll_interval_ms for d in config.devices}
        # One number for the node: the common interval, or the fastest if devices differ.
        self._scan_rate_ms = min(intervals)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # composition

    async def run(self) -> None:
        """Open the outbox, then poll and publish until cancelled."""
        cfg = self.config.outbox
        outbox = await asyncio.to_thread(
            Outbox, cfg.path, cfg.max_bytes, cfg.when_full, cfg.replay_window_s
        )
        try:
            # Rows a previous run sent and kept: whether its host ingested them is unknown (the
            # agent, or the whole plant, may have lost power with them in the host's hands).
            rearmed = await asyncio.to_thread(outbox.rearm)
            if rearmed:
                log.info(
                    "outbox %s: %d sample(s) sent by the previous run are sent again, flagged"
                    " historical",
                    cfg.path,
                    rearmed,
                )
            self._build(outbox)
            assert self._publisher is not None
            self._outbox_health = await asyncio.to_thread(_outbox_health, outbox)
            async with asyncio.TaskGroup() as tasks:
                if self.config.health.port is not None:
                    self._health = HealthServer(
                        self.config.health.host, self.config.health.port, self.health
                    )
                    await self._health.start()
                    tasks.create_task(self._health.serve(), name="health")
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
            if device.opcua is not None:
                tags = device.opcua_tags()
                source = OpcUaSource(
                    device.id,
                    device.opcua,
                    tags,
                    self._store,
                    password=device.opcua.resolved_password(os.environ),
                )
                # Interim bridge until the publisher and this class take a metric protocol
                # (metric, datatype, writable): births use only those, writes check writable.
                self._tags[device.id] = {t.metric: cast(Tag, t) for t in tags}
                self._pollers[device.id] = cast(Poller, source)
                self._opcua[device.id] = source
                continue
            m = device.modbus
            assert m is not None  # the config validator requires modbus or opcua
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
        for device_id, poller in self._pollers.items():
            if isinstance(poller, Poller):
                poller.reader = _TimedReader(poller.reader, self._latency_ms, device_id)
        models = [DeviceModel(d, tuple(tags.values())) for d, tags in self._tags.items()]
        self._publisher = Publisher(
            self.settings,
            async_outbox,
            models,
            self._current,
            commands=self._write,
            node_metrics=self._node_metrics,
            scan_rate=self.set_scan_rate,
        )
        self._async_outbox = async_outbox
        # A failed device gets its DDEATH, and its DBIRTH when back (Sparkplug device state);
        # Modbus pollers and OPC UA sources report availability alike.
        for poller in self._pollers.values():
            poller.on_availability = self._availability

    async def _store(self, device: str, samples: Sequence[Sample]) -> None:
        """Poller sink: durably append, flagged historical unless the node is live."""
        assert self._publisher is not None
        assert self._async_outbox is not None
        historical = not self._publisher.status.live
        ids = await self._async_outbox.append(samples, historical)
        self._publisher.stored(device, ids)

    def _availability(self, device: str, available: bool, reason: str | None) -> None:
        """A device's poller (or OPC UA source) found it available or not."""
        assert self._publisher is not None
        poller = self._pollers.get(device)
        at = poller.status.since if poller is not None else None
        self._publisher.device_availability(device, available, reason, at=at)

    def _current(self, device: str) -> Mapping[str, Sample]:
        poller = self._pollers.get(device)
        return dict(poller.current) if poller is not None else {}

    async def _node_metrics(self) -> list[NodeMetric]:
        """The agent's own health as Sparkplug node metrics (names stable for its life)."""
        if self._outbox is not None:
            self._outbox_health = await asyncio.to_thread(_outbox_health, self._outbox)
        o = self._outbox_health
        metrics = [
            NodeMetric(NODE_SCAN_RATE, DataType.INT64, self._scan_rate_ms),
            NodeMetric(OUTBOX_DEPTH, DataType.UINT64, o.depth),
            NodeMetric(OUTBOX_RETAINED, DataType.UINT64, o.retained),
            NodeMetric(OUTBOX_OLDEST_AGE, DataType.INT64, o.oldest_age_ms),
            NodeMetric(OUTBOX_BYTES, DataType.UINT64, o.bytes),
            NodeMetric(OUTBOX_FULL, DataType.BOOLEAN, o.full),
            NodeMetric(OUTBOX_DROPPED, DataType.UINT64, o.dropped),
            NodeMetric(OUTBOX_REFUSED, DataType.UINT64, o.refused),
        ]
        for device, poller in self._pollers.items():
            status = poller.status
            metrics += [
                NodeMetric(
                    device_metric(device, DEVICE_CONNECTED),
                    DataType.BOOLEAN,
                    status.available is True,
                ),
                NodeMetric(device_metric(device, DEVICE_ERRORS), DataType.UINT64, status.failures),
                NodeMetric(
                    device_metric(device, DEVICE_POLL_LATENCY),
                    DataType.INT64,
                    self._latency_ms.get(device, 0),
                ),
            ]
        return metrics

    def set_scan_rate(self, interval_ms: int) -> None:
        """Set the poll interval of every polled device (NCMD Node Control/Scan Rate)."""
        if not MIN_SCAN_RATE_MS <= interval_ms <= MAX_SCAN_RATE_MS:
            raise CommandError(
                f"scan rate {interval_ms} ms is outside {MIN_SCAN_RATE_MS}..{MAX_SCAN_RATE_MS}"
            )
        for poller in self._pollers.values():
            if isinstance(poller, Poller):  # subscriptions (OPC UA) have no poll interval
                poller.interval_s = interval_ms / 1000
        self._scan_rate_ms = interval_ms

    @property
    def scan_rate_ms(self) -> int:
        """The node's scan rate (poll interval) in milliseconds."""
        return self._scan_rate_ms

    @property
    def health_port(self) -> int | None:
        """The health endpoint's bound port (None when disabled or not started)."""
        return self._health.port if self._health is not None else None

    async def health(self) -> dict[str, object]:
        """The JSON document of the health endpoint; "ok" is false when something needs a look."""
        if self._outbox is not None:
            self._outbox_health = await asyncio.to_thread(_outbox_health, self._outbox)
        link = self.link
        o = self._outbox_health
        devices: dict[str, object] = {}
        for device, poller in self._pollers.items():
            st = poller.status
            devices[device] = {
                "available": st.available,
                "polls": st.polls,
                "failures": st.failures,
                "samples": st.samples,
                "last_error": st.last_error,
                "poll_latency_ms": self._latency_ms.get(device),
                "sparkplug": str(self.device_state(device)),
            }
        ok = link.live and not o.full and all(p.status.available for p in self._pollers.values())
        return {
            "ok": ok,
            "group_id": self.settings.group_id,
            "edge_node_id": self.settings.edge_node_id,
            "scan_rate_ms": self._scan_rate_ms,
            "mqtt": {
                "connected": link.connected,
                "host_online": link.host_online,
                "live": link.live,
                "bd_seq": link.bd_seq,
                "sessions": link.sessions,
                "births": link.births,
                "samples_published": link.samples_published,
                "last_error": link.last_error,
            },
            "outbox": {
                "depth": o.depth,
                "retained": o.retained,
                "replay_window_s": self.config.outbox.replay_window_s,
                "bytes": o.bytes,
                "max_bytes": self.config.outbox.max_bytes,
                "when_full": self.config.outbox.when_full,
                "oldest_age_ms": o.oldest_age_ms,
                "full": o.full,
                "dropped": o.dropped,
                "refused": o.refused,
            },
            "commands": {
                "received": link.commands,
                "refused": link.commands_refused,
                "last_refusal": link.last_refusal,
            },
            "devices": devices,
        }

    async def _write(self, device: str, metric: str, value: Value) -> None:
        """DCMD: write a tag, if the tag map marks it writable and the value fits it.

        Raise `CommandError` for a refusal (unknown or read-only metric, wrong type, outside
        `min`/`max`, does not fit the register) and `DriverError` when the device fails.
        """
        tag = self._tags.get(device, {}).get(metric)
        if tag is None:
            raise CommandError(f"{device} has no metric {metric!r}")
        if not tag.writable:
            raise CommandError(f"{device}/{metric} is read-only in the tag map")
        source = self._opcua.get(device)
        if source is not None:
            await source.write(metric, value)
            return
        try:
            checked = tag.write_value(value)
            await self._drivers[device].write_tag(tag, checked)
        except TagError as exc:
            raise CommandError(str(exc).removeprefix(f"{metric}: ")) from exc

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

    def device_state(self, device: str) -> DeviceState:
        """What the Sparkplug host has been told about `device` (born, dying, dead)."""
        if self._publisher is None:
            return DeviceState.UNBORN
        return self._publisher.device_state(device)

    def outbox_depth(self) -> int:
        """Unsent samples in the outbox (0 before start; as left at stop after it)."""
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
    """Run the edge agent in-process until `stop` is set, or until the agent itself fails
    (its error is raised here, so the process exits instead of hanging with a dead agent)."""
    async with EdgeAgent(config) as agent:
        running = agent._task
        assert running is not None
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({stopping, running}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if running.done() and not running.cancelled():
            running.result()  # raises the agent's error
