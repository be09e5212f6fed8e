"""Sparkplug B 3.0 edge node over MQTT: the only module that imports aiomqtt.

One MQTT session at a time, each with a new bdSeq and its NDEATH as the will (QoS 1, not
retained). The node subscribes to its primary host's ``spBv1.0/STATE/{host}`` and to its
NCMD/DCMD topics, and births (NBIRTH, then a DBIRTH per device) only once the host's STATE says
online - Sparkplug 3.0 gating. It then drains the outbox in order as DDATA, about `window` QoS 1
publishes in flight, and marks rows sent only after their PUBACK. Rows stored before a birth are
flagged historical, so replayed data never overrides a host's current values.

Replay window: a PUBACK only says the broker has the message. The host connects with a clean
session (Sparkplug requires it), so what the broker had delivered or queued to a host worker
that is then killed, or what a non-persistent broker held when it restarted, is lost without a
trace on this side. So the outbox keeps sent rows for its `replay_window_s`, and the rows sent in
the window before such a moment are re-armed (unsent again, flagged historical) and go out again
with the historical stream, in order, after the births:

- an offline STATE of the primary host, a stale one too: a stale offline does not take the node
  offline (a newer online holds), but it still means one of the host's workers died, maybe with
  messages in hand; the re-sent rows go out in the current session;
- a lost broker connection, on the next successful connect;
- the agent's start (the agent re-arms whatever a previous run left retained).

Re-sending is always safe: the host keys samples by (machine, metric, timestamp), so a repeat is
a no-op there; at-least-once delivery with idempotent keys gives an exactly-once effect end to
end. Rows sent before the window are purged in batches by the drain loop.

Replay: rows stored before a birth (historical) and rows stored while live are read as two
streams, each in order; every round publishes the waiting live rows first, then up to
`historical_rounds` batches of the backlog, so live data is never stuck behind an outage's
backlog while the backlog drains at many times the live rate.

Node metrics (`messages.NodeMetric`, from the agent: outbox depth/age/full/dropped, per-device
connection state, errors and poll latency, scan rate, refused commands) go in the NBIRTH with
aliases, then as NDATA of the changed ones at most every `node_metrics_interval_s` (sooner, but
still rate-limited, after a command changed or refused something). NCMD ``Node Control/Scan
Rate`` sets the poll interval of every device. A refused or failed DCMD is never silent: it is
logged with its reason, counted in ``Commands/Refused`` / ``Commands/Last Refusal``, and the
metric's actual value is published back as DDATA.

Devices: the agent reports each device's availability (its poller's, `device_availability`)
and each sample it stored (`stored`). A device that fails gets a DDEATH once the samples it had
waiting are published, no DDATA while dead, and a DBIRTH with its current values when it is back;
the other devices carry on (`device_states` says why the rows of a failing device are published
before its death rather than held).

When the host goes offline (STATE online=false, or its will) the node stops publishing data,
publishes NDEATH, disconnects, reconnects with a new bdSeq and waits for the host again; polling
and buffering go on meanwhile. NCMD ``Node Control/Rebirth`` = true re-sends the births. Broker
failures reconnect with capped exponential backoff and jitter, logged once on failure and once
on recovery. Works against Mosquitto and the embedded amqtt (MQTT 3.1.1 only; amqtt may deliver
a retained message to a filter it does not match, so every received topic is checked).

Note: Sparkplug asks for QoS 0 on births and data; Taktline publishes them at QoS 1 because
the outbox marks a sample sent only on the broker's acknowledgement.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiomqtt

from taktline_contract import PayloadError
from taktline_contract.backoff import Backoff
from taktline_contract.metrics import NODE_REBIRTH
from taktline_contract.sparkplug import (
    DataType,
    HostState,
    MessageType,
    Topic,
    decode_payload,
    decode_state,
    encode_payload,
    state_topic,
)
from taktline_contract.sparkplug.codec import Value
from taktline_edge.cancellation import raise_if_cancelling, task_group
from taktline_edge.config import EdgeConfig
from taktline_edge.device_states import DeviceState, DeviceStates
from taktline_edge.errors import EdgeError
from taktline_edge.messages import (
    COMMANDS_LAST_REFUSAL,
    COMMANDS_REFUSED,
    NODE_SCAN_RATE,
    NodeMetric,
    SeqCounter,
    current_data,
    device_birth,
    device_data,
    device_death,
    node_birth,
    node_data,
    node_death,
)
from taktline_edge.outbox import AsyncOutbox, Sample, StoredSample
from taktline_edge.tags import Tag

log = logging.getLogger(__name__)

DEATH_PUBLISH_TIMEOUT_S = 2.0
"""How long an NDEATH before a reconnect may wait for its PUBACK (the will covers it)."""

# Inbound traffic is STATE and commands only; beyond this many unread messages paho drops the
# newest (a flood of commands is refused rather than queued without bound).
_MAX_INCOMING = 1000
# Refused DCMDs whose actual value is still to be published; beyond this the oldest report is
# dropped (the refusal itself is still logged and counted).
_MAX_REPORTS = 1000
_MIN_FORCED_GAP_S = 0.2
"""Least time between two NDATA even when commands force them (a command flood)."""
_PURGE_INTERVAL_S = 1.0
"""Most time between two purges of rows sent before the replay window (while draining)."""
_MAX_HELD_SCAN = 50_000
"""Most rows of dead devices a drain read steps over (they wait for their device's DBIRTH)."""
NODE_ALIAS_KEY = ""
"""The `Outbox.aliases` device key of node metrics (no device id is empty)."""

NodeMetricsSource = Callable[[], Awaitable[Sequence[NodeMetric]]]
"""The agent's current node metrics (names and datatypes stable for the agent's life)."""
ScanRateHandler = Callable[[int], None]
"""Sets every device's poll interval (ms); raises `CommandError` for an invalid one."""


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Broker connection and Sparkplug identity of the edge node."""

    group_id: str
    edge_node_id: str
    primary_host_id: str
    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    window: int = 100
    """QoS 1 publishes in flight while draining (≈ 5.5k msg/s measured; 1 000 is slower)."""
    round_rows: int = 2000
    """Outbox rows read per drain round."""
    max_metrics: int = 250
    """Metrics per DDATA message."""
    timeout_s: float = 10.0
    """Deadline of every network operation (connect, subscribe, publish acknowledgement)."""
    idle_poll_s: float = 1.0
    """How often an idle drain loop looks at the outbox without being woken."""
    historical_rounds: int = 4
    """Backlog batches published per batch of live rows (replay interleaving)."""
    node_metrics_interval_s: float = 5.0
    """Least time between two NDATA of changed node metrics."""

    @classmethod
    def from_config(cls, config: EdgeConfig) -> "PublisherSettings":
        """Settings from the agent's configuration."""
        mqtt = config.mqtt
        return cls(
            group_id=config.sparkplug.group_id,
            edge_node_id=config.sparkplug.edge_node_id,
            primary_host_id=config.sparkplug.primary_host_id,
            host=mqtt.host,
            port=mqtt.port,
            client_id=mqtt.client_id,
            keepalive_s=mqtt.keepalive_s,
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
            node_metrics_interval_s=config.health.metrics_interval_s,
        )


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """A device as its births describe it."""

    id: str
    tags: tuple[Tag, ...]


class CommandHandler(Protocol):
    """Carries out a DCMD write; raise `CommandError` (or another `EdgeError`) to refuse it."""

    async def __call__(self, device: str, metric: str, value: Value) -> None:
        """Write `value` to `device`'s `metric`."""
        ...


@dataclass
class LinkStatus:
    """What a test or a screen can ask about the MQTT side."""

    connected: bool = False
    host_online: bool = False
    live: bool = False
    """Born in the current session with the host online: new samples are not historical."""
    bd_seq: int | None = None
    sessions: int = 0
    births: int = 0
    messages_published: int = 0
    samples_published: int = 0
    commands: int = 0
    commands_refused: int = 0
    last_refusal: str | None = None
    node_data: int = 0
    """NDATA messages published (node metrics)."""
    device_deaths: int = 0
    """DDEATH messages published (a device stopped answering)."""
    device_rebirths: int = 0
    """DBIRTH messages published for a device back after its DDEATH."""
    last_error: str | None = None


class HostOfflineError(EdgeError):
    """The primary host's STATE turned offline after this node was born."""


@dataclass
class _Session:
    bd_seq: int
    seq: SeqCounter = field(default_factory=SeqCounter)
    host_online: asyncio.Event = field(default_factory=asyncio.Event)
    rebirth: asyncio.Event = field(default_factory=asyncio.Event)
    born: bool = False


class Publisher:
    """The Sparkplug edge node: sessions, births, outbox drain, commands."""

    def __init__(
        self,
        settings: PublisherSettings,
        outbox: AsyncOutbox,
        devices: Sequence[DeviceModel],
        current: Callable[[str], Mapping[str, Sample]],
        *,
        commands: CommandHandler | None = None,
        backoff: Backoff | None = None,
        node_metrics: NodeMetricsSource | None = None,
        scan_rate: ScanRateHandler | None = None,
    ) -> None:
        self.settings = settings
        self.status = LinkStatus()
        self._outbox = outbox
        self._devices = tuple(devices)
        self._current = current
        self._commands = commands
        self._backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self._wake = asyncio.Event()
        self._host: HostState | None = None
        self._aliases: dict[str, dict[str, int]] = {}
        self._by_alias: dict[int, tuple[str, str]] = {}
        self._failing = False
        self._node_metrics = node_metrics
        self._scan_rate = scan_rate
        self._node_aliases: dict[str, int] = {}
        self._node_by_alias: dict[int, str] = {}
        self._node_sent: dict[str, Value] = {}
        self._node_due = 0.0
        self._node_last = 0.0
        self._node_force = False
        self._reports: deque[tuple[str, str]] = deque(maxlen=_MAX_REPORTS)
        self._states = DeviceStates(d.id for d in self._devices)
        self._held = {False: 0, True: 0}
        """Rows of dead devices met by the last read of each stream (historical flag)."""
        self._rearm_since: datetime | None = None
        """Rows sent at or after this may be lost to the host: re-arm them (pending)."""
        self._rearm_reason = ""
        self._purge_due = 0.0
        s = settings
        self._state_topic = state_topic(s.primary_host_id)
        self._ncmd_topic = str(Topic(s.group_id, MessageType.NCMD, s.edge_node_id))
        self._dcmd_prefix = f"spBv1.0/{s.group_id}/DCMD/{s.edge_node_id}/"

    def wake(self) -> None:
        """Tell the drain loop that new samples are in the outbox."""
        self._wake.set()

    def stored(self, device: str, row_ids: Sequence[int]) -> None:
        """Rows `row_ids` of `device` were committed to the outbox: publish them."""
        self._states.stored(device, row_ids)
        self._wake.set()

    def device_availability(
        self, device: str, available: bool, reason: str | None = None, at: datetime | None = None
    ) -> None:
        """A poller found `device` available or not (at `at`, default now): see `DeviceStates`."""
        self._states.availability(device, available, at)
        self._wake.set()

    def device_state(self, device: str) -> DeviceState:
        """What the host has been told about `device` in the current session."""
        return self._states.state(device)

    def topic(self, kind: MessageType, device: str | None = None) -> str:
        """This node's topic of `kind` (for `device` when it is a device message)."""
        return str(Topic(self.settings.group_id, kind, self.settings.edge_node_id, device))

    async def run(self) -> None:
        """Keep an MQTT session up until cancelled."""
        while True:
            try:
                await self._session()
            except Exception as exc:  # the reconnect loop outlives any one session's error
                raise_if_cancelling()
                if self.status.connected:
                    self._window_at_risk("the MQTT session was lost")
                self._session_failed(exc)
                await asyncio.sleep(self._backoff.next_delay())
            finally:
                self.status.connected = False
                self.status.live = False
                self.status.host_online = False
                self._states.node_dead()

    def _session_failed(self, exc: Exception) -> None:
        reason = _describe(exc)
        self.status.last_error = reason
        if self._failing:
            log.debug("MQTT still unavailable: %s", reason)
            return
        self._failing = True
        expected = (aiomqtt.MqttError, OSError, TimeoutError)
        if all(issubclass(kind, expected) for kind in _leaves(exc)):
            log.warning(
                "MQTT broker %s:%s unavailable: %s; reconnecting with backoff",
                self.settings.host,
                self.settings.port,
                reason,
            )
        else:
            log.error("MQTT session failed: %s; reconnecting with backoff", reason, exc_info=exc)

    async def _session(self) -> None:
        s = self.settings
        session = _Session(await self._outbox.next_bd_seq())
        self.status.bd_seq = session.bd_seq
        will = aiomqtt.Will(
            self.topic(MessageType.NDEATH),
            encode_payload(node_death(datetime.now(UTC), session.bd_seq)),
            qos=1,
            retain=False,
        )
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=True,
            keepalive=s.keepalive_s,
            timeout=s.timeout_s,
            max_inflight_messages=s.window,
            max_queued_incoming_messages=_MAX_INCOMING,
        )
        # aiomqtt warns above this many pending calls; a full window is normal here.
        client.pending_calls_threshold = s.window + 10
        async with AsyncExitStack() as stack:
            async with asyncio.timeout(s.timeout_s + 1):
                await stack.enter_async_context(client)
            await client.subscribe(
                [(self._state_topic, 1), (self._ncmd_topic, 1), (self._dcmd_prefix + "+", 1)],
                timeout=s.timeout_s,
            )
            self._connected(session)
            await self._rearm()
            host_offline = False
            try:
                try:
                    async with task_group() as tasks:
                        tasks.create_task(self._receive(client, session), name="mqtt-receive")
                        tasks.create_task(self._send(client, session), name="mqtt-send")
                except* HostOfflineError:
                    host_offline = True
            except asyncio.CancelledError:
                await self._say_goodbye(client, session)
                raise
            raise_if_cancelling()
            if host_offline:
                # Sparkplug 3.0: stop, declare death, reconnect (new bdSeq), wait for the host.
                self.status.live = False
                # aiomqtt does not fail a pending QoS 1 publish when the connection drops (the
                # host's will often comes from a broker shutting down): wait briefly, since the
                # NDEATH will covers a death that could not be published.
                await self._publish(
                    client,
                    self.topic(MessageType.NDEATH),
                    self._death(session),
                    timeout_s=min(self.settings.timeout_s, DEATH_PUBLISH_TIMEOUT_S),
                )
                log.info(
                    "primary host %s offline: NDEATH published, reconnecting to wait for it",
                    s.primary_host_id,
                )

    def _connected(self, session: _Session) -> None:
        self.status.connected = True
        self.status.sessions += 1
        self.status.last_error = None
        self._backoff.reset()
        if self._failing:
            log.info("MQTT broker %s:%s reachable again", self.settings.host, self.settings.port)
            self._failing = False
        else:
            log.info(
                "connected to MQTT broker %s:%s (bdSeq %d)",
                self.settings.host,
                self.settings.port,
                session.bd_seq,
            )

    async def _say_goodbye(self, client: aiomqtt.Client, session: _Session) -> None:
        """Graceful shutdown: a clean disconnect does not fire the will, so publish NDEATH."""
        self.status.live = False
        if not session.born:
            return
        try:
            await client.publish(
                self.topic(MessageType.NDEATH), self._death(session), qos=1, timeout=2.0
            )
        except aiomqtt.MqttError as exc:
            log.debug("NDEATH on shutdown not acknowledged: %s", exc)

    def _death(self, session: _Session) -> bytes:
        return encode_payload(node_death(datetime.now(UTC), session.bd_seq))

    # receiving

    async def _receive(self, client: aiomqtt.Client, session: _Session) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            raw = message.payload
            data = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
            if topic == self._state_topic:
                self._on_state(data, session)
            elif topic == self._ncmd_topic:
                self._on_node_command(data, session)
            elif topic.startswith(self._dcmd_prefix) and "/" not in topic[len(self._dcmd_prefix) :]:
                await self._on_device_command(topic[len(self._dcmd_prefix) :], data)
            else:
                # amqtt can hand a retained message to a filter it does not match.
                log.debug("ignoring message on unexpected topic %s", topic)

    def _on_state(self, data: bytes, session: _Session) -> None:
        try:
            state = decode_state(data)
        except PayloadError as exc:
            log.warning("ignoring invalid STATE of %s: %s", self.settings.primary_host_id, exc)
            return
        stale = self._host is not None and state.timestamp < self._host.timestamp
        if not state.online:
            # Stale or not: a host worker ended, maybe with delivered messages in hand.
            what = "a stale STATE offline" if stale else "STATE offline"
            self._window_at_risk(f"{what} of {self.settings.primary_host_id}")
        if stale:
            log.debug("ignoring stale STATE from %s", state.timestamp)
            return
        self._host = state
        self.status.host_online = state.online
        if state.online:
            session.host_online.set()
            return
        session.host_online.clear()
        if session.born:
            raise HostOfflineError(self.settings.primary_host_id)

    def _on_node_command(self, data: bytes, session: _Session) -> None:
        try:
            payload = decode_payload(data)
        except PayloadError as exc:
            log.warning("ignoring undecodable NCMD: %s", exc)
            return
        self.status.commands += 1
        for metric in payload.metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                name = self._node_by_alias.get(metric.alias)
            if name == NODE_REBIRTH and metric.value is True:
                log.info("rebirth requested by NCMD")
                session.rebirth.set()
                self._wake.set()
            elif name == NODE_SCAN_RATE:
                self._on_scan_rate(metric.value)
            else:
                self._refuse(f"NCMD {name or metric.alias}", "unsupported node metric")

    def _on_scan_rate(self, value: Value) -> None:
        what = f"NCMD {NODE_SCAN_RATE} = {value!r}"
        if self._scan_rate is None:
            self._refuse(what, "this node has no scan rate")
            return
        if isinstance(value, bool) or not isinstance(value, int):
            self._refuse(what, "the scan rate is an integer number of milliseconds")
            return
        try:
            self._scan_rate(value)
        except EdgeError as exc:
            self._refuse(what, str(exc))
            return
        log.info("scan rate set to %d ms by NCMD", value)
        self._node_force = True
        self._wake.set()

    def _refuse(self, what: str, reason: str, report: tuple[str, str] | None = None) -> None:
        """Never silent: log, count, publish the reason (node metric) and the actual value."""
        log.warning("%s refused: %s", what, reason)
        self.status.commands_refused += 1
        self.status.last_refusal = f"{what}: {reason}"
        if report is not None:
            self._reports.append(report)
        self._node_force = True
        self._wake.set()

    async def _on_device_command(self, device: str, data: bytes) -> None:
        try:
            payload = decode_payload(data)
        except PayloadError as exc:
            log.warning("ignoring undecodable DCMD for %s: %s", device, exc)
            return
        self.status.commands += 1
        for metric in payload.metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                owner, name = self._by_alias.get(metric.alias, (device, None))
                if owner != device:
                    name = None
            if name is None:
                self._refuse(f"DCMD {device}/alias {metric.alias}", "unknown metric")
                continue
            what = f"DCMD {device}/{name} = {metric.value!r}"
            if self._commands is None:
                self._refuse(what, "this node accepts no writes", (device, name))
                continue
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    await self._commands(device, name, metric.value)
            except TimeoutError:
                self._refuse(what, "the write timed out", (device, name))
            except EdgeError as exc:
                self._refuse(what, str(exc), (device, name))
            else:
                log.info("%s written", what)

    # replay window

    def _window_at_risk(self, reason: str) -> None:
        """The host may have lost what was sent in the last window: re-arm it (see `_rearm`)."""
        window = self._outbox.replay_window_s
        if window <= 0:
            return
        self._pend_rearm(datetime.now(UTC) - timedelta(seconds=window))
        self._rearm_reason = reason
        self._wake.set()

    def _pend_rearm(self, since: datetime) -> None:
        if self._rearm_since is None or since < self._rearm_since:
            self._rearm_since = since

    async def _rearm(self) -> None:
        """Re-arm the rows sent since a pending `_window_at_risk` (between drain rounds)."""
        since, reason = self._rearm_since, self._rearm_reason
        if since is None:
            return
        self._rearm_since = None
        try:
            count = await self._outbox.rearm(since)
        except BaseException:
            self._pend_rearm(since)  # still to do (an event meanwhile may reach back less far)
            raise
        if count:
            log.info(
                "%s: %d sample(s) sent since %s are sent again, flagged historical",
                reason,
                count,
                since.isoformat(timespec="milliseconds"),
            )

    async def _purge(self) -> None:
        """Delete the rows sent before the window (at most every `_PURGE_INTERVAL_S`)."""
        now = time.monotonic()
        window = self._outbox.replay_window_s
        if now < self._purge_due or window <= 0:
            return  # window 0: acknowledged rows were deleted at once
        self._purge_due = now + min(_PURGE_INTERVAL_S, window / 2)
        before = datetime.now(UTC) - timedelta(seconds=window)
        if self._rearm_since is not None:
            before = min(before, self._rearm_since)  # a pending re-arm still needs its rows
        await self._outbox.purge_sent(before)

    # sending

    async def _send(self, client: aiomqtt.Client, session: _Session) -> None:
        await session.host_online.wait()
        await self._rearm()
        await self._birth(client, session)
        while True:
            raise_if_cancelling()
            if session.rebirth.is_set():
                session.rebirth.clear()
                await self._birth(client, session)
                continue
            self._wake.clear()
            # A stale STATE offline re-arms rows while the node stays born: nothing is in
            # flight here, so every row the broker acknowledged so far is covered.
            await self._rearm()
            await self._device_changes(client, session)
            await self._send_reports(client, session)
            await self._send_node_data(client, session)
            drained = await self._drain_round(client, session)
            await self._purge()
            if drained:
                continue
            if self._states.due_deaths():
                continue
            idle = self.settings.idle_poll_s
            if self._node_metrics is not None:
                idle = max(0.0, min(idle, self._node_due - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle):
                    await self._wake.wait()

    async def _drain_round(self, client: aiomqtt.Client, session: _Session) -> bool:
        """Live rows first, then some backlog batches; whether anything was published."""
        drained = await self._drain_stream(client, session, historical=False)
        for _ in range(self.settings.historical_rounds):
            if session.rebirth.is_set() or not await self._drain_stream(
                client, session, historical=True
            ):
                break
            drained = True
        return drained

    async def _drain_stream(
        self, client: aiomqtt.Client, session: _Session, *, historical: bool
    ) -> bool:
        """Publish the oldest rows of one stream; whether any was published."""
        # Rows of dead devices stay where they are: read past them.
        limit = self.settings.round_rows + min(self._held[historical], _MAX_HELD_SCAN)
        number = self._states.reading()
        rows = await self._outbox.oldest(limit, historical=historical)
        published = await self._drain(client, session, rows, historical=historical)
        if not session.rebirth.is_set():
            self._states.read(number, historical, rows, limit)
        return published > 0

    async def _device_changes(self, client: aiomqtt.Client, session: _Session) -> None:
        """DDEATH for failed devices whose earlier rows are out; DBIRTH for those back."""
        for device, since in self._states.due_deaths():
            payload = device_death(since, session.seq.next())
            await self._publish(
                client, self.topic(MessageType.DDEATH, device), encode_payload(payload)
            )
            self._states.died(device)
            self.status.device_deaths += 1
            log.info("%s: DDEATH published (unavailable since %s)", device, since.isoformat())
        for device in self._states.due_births():
            model = next(d for d in self._devices if d.id == device)
            await self._publish_device_birth(client, session, model)
            self._states.reborn(device)
            self.status.device_rebirths += 1
            log.info("%s: DBIRTH published (available again)", device)

    async def _send_reports(self, client: aiomqtt.Client, session: _Session) -> None:
        """After refused writes: the metrics' actual values, so the host's view is right."""
        per_device: dict[str, list[Sample]] = {}
        while self._reports:
            device, metric = self._reports.popleft()
            sample = self._current(device).get(metric)
            aliases = self._aliases.get(device, {})
            if sample is None or metric not in aliases:
                continue  # never polled yet: the node metric carries the refusal
            if self._states.state(device) == DeviceState.DEAD:
                continue  # a dead device gets no DDATA (its DBIRTH will carry the value)
            per_device.setdefault(device, []).append(sample)
        for device, samples in per_device.items():
            payload = current_data(
                datetime.now(UTC), session.seq.next(), samples, self._aliases[device]
            )
            await self._publish(
                client, self.topic(MessageType.DDATA, device), encode_payload(payload)
            )

    async def _current_node_metrics(self) -> list[NodeMetric]:
        metrics = list(await self._node_metrics()) if self._node_metrics is not None else []
        metrics.append(NodeMetric(COMMANDS_REFUSED, DataType.UINT64, self.status.commands_refused))
        metrics.append(
            NodeMetric(COMMANDS_LAST_REFUSAL, DataType.STRING, self.status.last_refusal or "")
        )
        return metrics

    async def _send_node_data(self, client: aiomqtt.Client, session: _Session) -> None:
        """NDATA of the node metrics that changed, rate-limited."""
        now = time.monotonic()
        due = now >= self._node_due
        forced = self._node_force and now - self._node_last >= _MIN_FORCED_GAP_S
        if not (due or forced):
            return
        self._node_force = False
        self._node_last = now
        self._node_due = now + self.settings.node_metrics_interval_s
        changed = [
            m
            for m in await self._current_node_metrics()
            if m.name in self._node_aliases and self._node_sent.get(m.name, _UNSENT) != m.value
        ]
        if not changed:
            return
        payload = node_data(datetime.now(UTC), session.seq.next(), changed, self._node_aliases)
        await self._publish(client, self.topic(MessageType.NDATA), encode_payload(payload))
        self._node_sent.update((m.name, m.value) for m in changed)
        self.status.node_data += 1

    async def _birth(self, client: aiomqtt.Client, session: _Session) -> None:
        session.born = True
        self.status.live = False
        # Everything waiting now predates the values the births are about to carry.
        await self._outbox.mark_all_historical()
        now = datetime.now(UTC)
        metrics = await self._current_node_metrics()
        known = await self._outbox.aliases(NODE_ALIAS_KEY, [m.name for m in metrics])
        self._node_aliases = known
        self._node_by_alias = {alias: name for name, alias in known.items()}
        self._node_sent = {m.name: m.value for m in metrics}
        self._node_last = time.monotonic()
        self._node_due = self._node_last + self.settings.node_metrics_interval_s
        session.seq.reset()  # NBIRTH is seq 0
        nbirth = node_birth(now, session.bd_seq, metrics, known)
        await self._publish(client, self.topic(MessageType.NBIRTH), encode_payload(nbirth))
        for device in self._devices:
            await self._publish_device_birth(client, session, device)
        self._states.node_born()
        self.status.live = True
        self.status.births += 1
        log.info(
            "born: NBIRTH bdSeq %d and %d DBIRTH(s) published", session.bd_seq, len(self._devices)
        )

    async def _publish_device_birth(
        self, client: aiomqtt.Client, session: _Session, device: DeviceModel
    ) -> None:
        aliases = await self._device_aliases(device)
        payload = device_birth(
            datetime.now(UTC), session.seq.next(), device.tags, self._current(device.id), aliases
        )
        await self._publish(
            client, self.topic(MessageType.DBIRTH, device.id), encode_payload(payload)
        )

    async def _device_aliases(self, device: DeviceModel) -> dict[str, int]:
        known = self._aliases.get(device.id)
        if known is None:
            known = await self._outbox.aliases(device.id, [t.metric for t in device.tags])
            self._aliases[device.id] = known
            for metric, alias in known.items():
                self._by_alias[alias] = (device.id, metric)
        return known

    async def _drain(
        self,
        client: aiomqtt.Client,
        session: _Session,
        rows: Sequence[StoredSample],
        *,
        historical: bool,
    ) -> int:
        """Publish `rows` but those of dead devices; the number published."""
        ready = [
            row
            if row.historical or not self._states.historical(row)
            else replace(row, historical=True)
            for row in rows
            if self._states.publishable(row)
        ]
        self._held[historical] = len(rows) - len(ready)
        messages, orphans = device_data(ready, self._aliases, self.settings.max_metrics)
        if orphans:
            log.warning(
                "discarding %d buffered samples of metrics no longer configured", len(orphans)
            )
            await self._outbox.delete(orphans)
        acked: list[int] = []
        window = asyncio.Semaphore(self.settings.window)

        async def publish(topic: str, payload: bytes, row_ids: Sequence[int]) -> None:
            try:
                await self._publish(client, topic, payload)
                acked.extend(row_ids)
                self.status.samples_published += len(row_ids)
            finally:
                window.release()

        settled = False
        try:
            async with task_group() as tasks:
                for message in messages:
                    if session.rebirth.is_set():
                        break  # the rest goes after the new births
                    await window.acquire()
                    payload = encode_payload(message.payload(datetime.now(UTC), session.seq.next()))
                    topic = self.topic(MessageType.DDATA, message.device)
                    # Tasks start in creation order, so paho queues them in seq order.
                    tasks.create_task(publish(topic, payload, message.row_ids))
            await self._outbox.mark_sent(acked)
            settled = True
        finally:
            if not settled and acked:
                # Interrupted (disconnect, host offline, shutdown): what the broker has is sent.
                self._outbox.sync.mark_sent(acked)
        return len(acked)

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, timeout_s: float | None = None
    ) -> None:
        """Publish at QoS 1 and wait (bounded) for the broker's PUBACK."""
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        await client.publish(topic, payload, qos=1, timeout=timeout)
        self.status.messages_published += 1


_UNSENT = object()


def _leaves(exc: BaseException) -> set[type[BaseException]]:
    if isinstance(exc, BaseExceptionGroup):
        out: set[type[BaseException]] = set()
        for inner in exc.exceptions:
            out |= _leaves(inner)
        return out
    return {type(exc)}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
