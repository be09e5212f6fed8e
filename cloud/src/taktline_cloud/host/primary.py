"""The Sparkplug B 3.0 primary host application over MQTT 3.1.1 (aiomqtt).

On every connection: the will is our STATE offline (retained, QoS 1); we subscribe to our own
STATE topic and to the group, then publish STATE online (retained, QoS 1) with the will's
timestamp. Received messages go through `SparkplugSessions`; their samples and status changes go
to the bounded ingest queue (awaiting `put` is the back-pressure). Unknown aliases or data
without a birth make us ask the edge node for a rebirth. A graceful stop publishes STATE offline.

Ingest workers (N processes, one host id, data split by a shared subscription) share one STATE
topic; each has its own will and timestamp. Edge nodes take the STATE with the newest timestamp
and ignore older ones (Sparkplug 3.0), so a worker that sees the topic say offline while it runs:
- offline older than our timestamp (our will from before a crash, another worker's older will):
  the edges ignore it, but the retained message is now offline: publish online again with our
  timestamp (our will still carries it, so our own death stays newest);
- offline as of our timestamp or later (a worker that connected after us died or stopped): the
  edges now see us offline, and an online with our old timestamp would be ignored. We start a
  new session whose will and online STATE carry a timestamp newer than any STATE seen on the
  topic. The old session first stops the group's messages (unsubscribe: shared data goes to the
  other workers meanwhile) and takes in everything already received (subscribing to our STATE
  topic again makes the broker send its retained message behind them); then it disconnects
  cleanly, so the broker discards its will: a restart never publishes offline.
Only an offline STATE starts a new session and new sessions publish only online, so workers
restarting cannot set each other off: each death or stop costs at most one restart per worker.

Dead letters (stored with topic, raw bytes and reason, in order through the same queue): a
message rejected whole (bad topic, foreign group, undecodable or oversize payload), and one whose
data was not all taken in (data before its birth, unknown aliases, unstorable metrics - whatever
was usable is still ingested; a replay is harmless since a sample's key makes it a no-op).
Ignored without a dead letter: only messages outside our group filter (a broker's stray
retained message) and STATE and command messages, which carry no plant data.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiomqtt

from taktline_cloud.historian.dead_letters import DeadLetter
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.batcher import IngestItem
from taktline_cloud.host.sessions import (
    Outcome,
    RebirthLimiter,
    RejectedMessageError,
    SparkplugSessions,
)
from taktline_cloud.observability import IngestMetrics
from taktline_cloud.settings import CloudSettings
from taktline_contract import ContractError
from taktline_contract.backoff import Backoff
from taktline_contract.metrics import NODE_REBIRTH
from taktline_contract.sparkplug import (
    DataType,
    HostState,
    MessageType,
    Metric,
    Payload,
    Topic,
    decode_state,
    encode_payload,
    encode_state,
    state_topic,
)

log = logging.getLogger(__name__)

DEAD_LETTER_KEEP_BYTES = 65_536
"""How much of an oversize payload a dead letter keeps (the reason gives the full size)."""
_STATE_RESOLUTION = timedelta(milliseconds=1)
"""STATE timestamps are whole milliseconds on the wire."""


class _Next(enum.Enum):
    """What the consumer does after a message."""

    CONSUME = enum.auto()
    """Go on."""
    STOPPED = enum.auto()
    """Our own offline STATE came back at stop: everything received before it is taken in."""
    RESTART = enum.auto()
    """Declared offline as of our timestamp or later: start a new session with a newer one."""


@dataclass(frozen=True, slots=True)
class HostOptions:
    """How the primary host connects and what it listens to."""

    broker_host: str
    broker_port: int
    client_id: str
    host_id: str = "taktline-cloud"
    group_id: str = "PLANT-1"
    shared_group: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 15
    timeout_s: float = 10.0
    rebirth_interval_s: float = 5.0
    reconnect_initial_s: float = 0.5
    reconnect_cap_s: float = 30.0
    max_payload_bytes: int = 1_048_576
    """Larger payloads are dead-lettered undecoded (a flood of huge messages must not stall us)."""
    reorder_timeout_s: float | None = 2.0
    """How long a message ahead of its Sparkplug seq waits for the missing ones before the node
    is asked for a rebirth; None (and any shared subscription, which splits a node's data
    between workers) turns seq checking off."""
    dead_letter_put_s: float = 5.0
    """How long a dead letter may wait for room in the ingest queue before it is logged and
    counted lost: rejected input must never hold ingestion up indefinitely."""

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> HostOptions:
        """The options `settings` describe."""
        return cls(
            broker_host=settings.mqtt_host,
            broker_port=settings.mqtt_port,
            client_id=settings.client_id,
            host_id=settings.host_id,
            group_id=settings.group_id,
            shared_group=settings.mqtt_shared_group,
            username=settings.mqtt_username,
            password=(
                settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            ),
            keepalive_s=settings.mqtt_keepalive_s,
            timeout_s=settings.mqtt_timeout_s,
        )

    @property
    def group_filter(self) -> str:
        """The topic filter of the group's messages (without any $share prefix)."""
        return f"spBv1.0/{self.group_id}/#"

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The filters subscribed: the whole group, or (ingest workers sharing the load) shared
        data with births and deaths to every worker, so each knows every alias table."""
        if self.shared_group is None:
            return (self.group_filter,)
        base = f"spBv1.0/{self.group_id}"
        data = ("NDATA", "DDATA")
        lifecycle = ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH")
        shared = tuple(f"$share/{self.shared_group}/{base}/{kind}/#" for kind in data)
        return shared + tuple(f"{base}/{kind}/#" for kind in lifecycle)

    @property
    def state_topic(self) -> str:
        """This host's STATE topic."""
        return state_topic(self.host_id)


class PrimaryHost:
    """Runs the primary host until stopped; reconnects with capped, jittered backoff."""

    def __init__(
        self,
        options: HostOptions,
        queue: asyncio.Queue[IngestItem],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.options = options
        self.sessions = SparkplugSessions(
            options.group_id,
            reorder_timeout_s=None if options.shared_group else options.reorder_timeout_s,
        )
        self.metrics = metrics or IngestMetrics()
        self.metrics.watch_online(self.sessions.online)
        self._queue = queue
        self._clock = clock
        self._limiter = RebirthLimiter(options.rebirth_interval_s)
        self._backoff = Backoff(options.reconnect_initial_s, options.reconnect_cap_s)
        self._stopping = False
        self._failing = False
        self._newest_state: datetime | None = None
        """The newest STATE timestamp seen on our topic (any worker's, online or offline)."""
        self.connected = False
        self.state_timestamp: datetime | None = None
        """The timestamp of the current session's STATE (its will and its online)."""
        self.state_restarts = 0
        """Sessions ended to say online with a newer timestamp (another worker's STATE offline)."""
        self.messages_received = 0
        self.messages_rejected = 0
        self.rebirths_requested = 0
        self.dead_letters_queued = 0
        self.dead_letters_lost = 0

    def online_nodes(self) -> dict[str, list[str]]:
        """Online edge nodes, each with its online devices."""
        return self.sessions.online()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, ingest and reconnect until `stop` is set; then publish STATE offline.

        A session that ends for a restart (see the module docstring) returns normally: the next
        one starts at once, without a backoff.
        """
        while not stop.is_set():
            try:
                await self._session(stop)
            except aiomqtt.MqttError as exc:
                self.connected = False
                if not self._failing:
                    log.warning(
                        "MQTT broker %s:%s unavailable (%s); retrying with backoff",
                        self.options.broker_host,
                        self.options.broker_port,
                        exc,
                    )
                    self._failing = True
                await _wait(stop, self._backoff.next_delay())

    def _new_state_timestamp(self) -> datetime:
        """A timestamp for a new session's STATE: now (whole milliseconds, as on the wire), and
        strictly newer than any STATE seen on our topic, so edge nodes never take it as stale."""
        now = self._clock()
        born = now.replace(microsecond=now.microsecond // 1000 * 1000)
        newest = self._newest_state
        if newest is not None and born <= newest:
            born = newest + _STATE_RESOLUTION
        return born

    async def _session(self, stop: asyncio.Event) -> None:
        options = self.options
        born = self._new_state_timestamp()
        self.state_timestamp = born
        offline = encode_state(HostState(online=False, timestamp=born))
        client = aiomqtt.Client(
            options.broker_host,
            options.broker_port,
            identifier=options.client_id,
            username=options.username,
            password=options.password,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(options.state_topic, offline, qos=1, retain=True),
            clean_session=True,
            keepalive=options.keepalive_s,
            timeout=options.timeout_s,
        )
        self._stopping = False
        async with client:
            timeout = options.timeout_s
            await client.subscribe(options.state_topic, qos=1, timeout=timeout)
            for subscription in options.subscriptions:
                await client.subscribe(subscription, qos=1, timeout=timeout)
            await self._publish_state(client, online=True, timestamp=born)
            self.connected = True
            self._backoff.reset()
            if self._failing:
                self._failing = False
                log.info("MQTT broker %s:%s is back", options.broker_host, options.broker_port)
            log.info(
                "Sparkplug primary host %r online as of %s on %s:%s, ingesting %s",
                options.host_id,
                born.isoformat(),
                options.broker_host,
                options.broker_port,
                " ".join(options.subscriptions),
            )
            try:
                await self._serve(client, stop, offline, born)
            except asyncio.CancelledError:
                # Torn down without a graceful stop: a clean DISCONNECT discards the will, so
                # say offline ourselves (best effort, briefly) before leaving.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(min(2.0, options.timeout_s)):
                        await client.publish(options.state_topic, offline, qos=1, retain=True)
                raise
            finally:
                self.connected = False

    async def _serve(
        self, client: aiomqtt.Client, stop: asyncio.Event, offline: bytes, born: datetime
    ) -> None:
        """Consume until `stop`; then publish STATE offline and take in what came before it."""
        timeout = self.options.timeout_s
        async with asyncio.TaskGroup() as tasks:
            consumer = tasks.create_task(self._consume(client, born), name="sparkplug-consume")
            stopped = tasks.create_task(stop.wait(), name="sparkplug-stop")
            ticker = tasks.create_task(self._seq_timeouts(client), name="sparkplug-seq-timeouts")
            await asyncio.wait({consumer, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not consumer.done():
                # Edge nodes buffer from the moment they see us offline. The broker echoes our
                # offline STATE back to us after everything it delivered before it: when the
                # consumer sees it, nothing received has been left unprocessed.
                self._stopping = True
                await client.publish(
                    self.options.state_topic, offline, qos=1, retain=True, timeout=timeout
                )
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(consumer)
                except TimeoutError:
                    log.warning("our offline STATE did not come back in time: stopping anyway")
                log.info("Sparkplug primary host %r offline (stopped)", self.options.host_id)
            consumer.cancel()
            stopped.cancel()
            ticker.cancel()
        ended = consumer.result() if not consumer.cancelled() else None
        if isinstance(ended, aiomqtt.MqttError):
            raise ended
        # Stopped, or a restart: leaving the client's context disconnects cleanly (no will).

    async def _consume(self, client: aiomqtt.Client, born: datetime) -> _Next | aiomqtt.MqttError:
        """Ingest messages until our offline STATE comes back (STOPPED), a restart is due and
        what was received is taken in (RESTART), or the connection drops (the error)."""
        try:
            async for message in client.messages:
                match await self._receive(client, message, born):
                    case _Next.STOPPED:
                        return _Next.STOPPED
                    case _Next.RESTART:
                        self.state_restarts += 1
                        return await self._hand_over(client, born)
        except aiomqtt.MqttError as exc:
            return exc
        return aiomqtt.MqttError("the message stream ended")  # aiomqtt raises instead

    async def _hand_over(self, client: aiomqtt.Client, born: datetime) -> _Next:
        """Before a restart: stop the group's messages and take in those already received
        (acknowledged to the broker, they exist nowhere else), then say RESTART."""
        options = self.options
        # Short waits: our offline often comes from a broker shutting down, and aiomqtt does not
        # fail a pending call when the connection drops (the consumer sees the drop anyway).
        brief = min(options.timeout_s, 2.0)
        for subscription in options.subscriptions:
            await client.unsubscribe(subscription, timeout=brief)
        # Subscribing again makes the broker send the topic's retained message again (MQTT
        # 3.1.1, retain flag set), queued behind every message already on its way to us.
        await client.subscribe(options.state_topic, qos=1, timeout=brief)
        while True:
            try:
                async with asyncio.timeout(options.timeout_s):
                    message = await anext(client.messages)
            except TimeoutError:
                log.warning("our retained STATE did not come back in time: restarting anyway")
                return _Next.RESTART
            if message.retain and message.topic.value == options.state_topic:
                self._note_state(message.payload)
                return _Next.RESTART
            # (Another offline meanwhile needs no second restart: the next session's timestamp
            # will be newer than it too.)
            if await self._receive(client, message, born) is _Next.STOPPED:
                return _Next.STOPPED

    async def _seq_timeouts(self, client: aiomqtt.Client) -> None:
        """Release messages held for a seq gap once the reorder timeout has passed (no message
        may come to do it), and ask their nodes for a rebirth."""
        timeout = self.options.reorder_timeout_s
        if timeout is None or self.options.shared_group is not None:
            return
        while True:
            await asyncio.sleep(max(timeout / 4, 0.05))
            for outcome in self.sessions.tick(self._clock()):
                await self.requeue(outcome)
                reason = outcome.rebirth_reason
                for problem in [reason, *outcome.problems]:
                    log.warning("edge node %s: %s", outcome.edge_node, problem)
                if reason is not None and outcome.edge_node:
                    try:
                        await self._request_rebirth(client, outcome.edge_node, reason)
                    except aiomqtt.MqttError as exc:  # the consumer sees the connection drop
                        log.warning("rebirth request to %s failed: %s", outcome.edge_node, exc)

    async def _publish_state(
        self,
        client: aiomqtt.Client,
        *,
        online: bool,
        timestamp: datetime,
        timeout_s: float | None = None,
    ) -> None:
        await client.publish(
            self.options.state_topic,
            encode_state(HostState(online=online, timestamp=timestamp)),
            qos=1,
            retain=True,
            timeout=self.options.timeout_s if timeout_s is None else timeout_s,
        )

    async def _receive(
        self, client: aiomqtt.Client, message: aiomqtt.Message, born: datetime
    ) -> _Next:
        """Ingest one message; what the consumer does next."""
        self.messages_received += 1
        topic = message.topic.value
        self.metrics.message(topic)
        raw = message.payload
        if topic == self.options.state_topic:
            return await self._own_state(client, raw, born)
        if not message.topic.matches(self.options.group_filter):
            # amqtt can hand a retained message to a client whatever it subscribed.
            log.debug("ignored %s: outside %s", topic, self.options.group_filter)
            return _Next.CONSUME
        outcome = await self.ingest(topic, _as_bytes(raw))
        if outcome is not None and outcome.rebirth_reason is not None and outcome.edge_node:
            await self._request_rebirth(client, outcome.edge_node, outcome.rebirth_reason)
        return _Next.CONSUME

    async def ingest(self, topic: str, raw: bytes) -> Outcome | None:
        """Take one group message in: its items to the queue, or a dead letter with the reason.

        None when the message was rejected whole. Never raises for bad input.
        """
        received_at = self._clock()
        outcome, reason = self._decode(topic, raw, received_at)
        if outcome is not None:
            await self.requeue(outcome)
        if reason is not None:
            self.messages_rejected += 1
            log.warning("dead letter on %s: %s", topic, reason)
            oversize = len(raw) > self.options.max_payload_bytes
            # A fixed kind per series, never the reason text (every label value is a series).
            self.metrics.dead_letter(
                "oversize" if oversize else "rejected" if outcome is None else "partial"
            )
            if oversize:
                reason += f" (first {DEAD_LETTER_KEEP_BYTES} bytes kept)"
                raw = raw[:DEAD_LETTER_KEEP_BYTES]
            await self._dead_letter(DeadLetter(topic, raw, reason, received_at))
        return outcome

    def now(self) -> datetime:
        """The host's clock (aware UTC)."""
        return self._clock()

    def replay(self, topic: str, raw: bytes) -> tuple[Outcome | None, str | None]:
        """Decode a dead letter again (the operator fixed the cause): the outcome, and the
        reason it is still not fully usable (None when it is). Queue the items with `requeue`."""
        return self._decode(topic, raw, self._clock(), check_seq=False)

    async def requeue(self, outcome: Outcome) -> None:
        """Send a message's items down the ingest path, in order."""
        self.metrics.received(outcome.items)
        # Consecutive samples go as one item (see IngestQueue); the queue is bounded: put waits
        # while the database catches up.
        run: list[Sample] = []
        for item in outcome.items:
            if isinstance(item, Sample):
                run.append(item)
                continue
            if run:
                await self._queue.put(run)
                run = []
            await self._queue.put(item)
        if run:
            await self._queue.put(run)

    def _decode(
        self, topic: str, raw: bytes, received_at: datetime, *, check_seq: bool = True
    ) -> tuple[Outcome | None, str | None]:
        """What a message yields, and why it (or part of it) is a dead letter."""
        if len(raw) > self.options.max_payload_bytes:
            return None, (
                f"payload of {len(raw)} bytes exceeds the limit of {self.options.max_payload_bytes}"
            )
        try:
            outcome = self.sessions.handle(topic, raw, received_at, check_seq=check_seq)
        except RejectedMessageError as exc:
            return None, str(exc)
        except Exception as exc:
            # One message must never stop ingestion, whatever is wrong with it (or with us).
            log.exception("message on %s: unexpected error", topic)
            return None, f"unexpected error: {type(exc).__name__}: {exc}"
        reasons = list(outcome.problems)
        if outcome.rebirth_reason is not None and outcome.rebirth_reason not in reasons:
            reasons.insert(0, outcome.rebirth_reason)
        return outcome, ("; ".join(reasons) if reasons else None)

    async def _dead_letter(self, letter: DeadLetter) -> None:
        try:
            async with asyncio.timeout(self.options.dead_letter_put_s):
                await self._queue.put(letter)
        except TimeoutError:
            self.dead_letters_lost += 1
            log.error(
                "dead letter on %s not stored (ingest queue full): %s", letter.topic, letter.reason
            )
            return
        self.dead_letters_queued += 1

    def _note_state(self, raw: object) -> HostState | None:
        """Decode a STATE of our topic and remember its timestamp if it is the newest seen."""
        try:
            if not isinstance(raw, bytes | bytearray):
                raise ContractError(f"payload is {type(raw).__name__}, not bytes")
            state = decode_state(bytes(raw))
        except ContractError as exc:
            log.warning("our STATE topic holds a bad payload (%s)", exc)
            return None
        if self._newest_state is None or state.timestamp > self._newest_state:
            self._newest_state = state.timestamp
        return state

    async def _own_state(self, client: aiomqtt.Client, raw: object, born: datetime) -> _Next:
        """Sparkplug: a host that sees itself declared offline while alive says it is online
        (with a newer timestamp when needed: see the module docstring)."""
        state = self._note_state(raw)
        if state is not None and state.online:
            return _Next.CONSUME
        if self._stopping:
            # Another worker's offline is not ours coming back.
            ours = state is not None and state.timestamp == born
            return _Next.STOPPED if ours else _Next.CONSUME
        topic, client_id = self.options.state_topic, self.options.client_id
        if state is not None and state.timestamp >= born:
            log.info(
                "STATE %s says offline as of %s, not older than %s's session (%s): starting a"
                " new session to say online as of a newer time",
                topic,
                state.timestamp.isoformat(),
                client_id,
                born.isoformat(),
            )
            return _Next.RESTART
        log.info(
            "STATE %s says offline (as of %s, older than %s's session) while we run:"
            " publishing online",
            topic,
            state.timestamp.isoformat() if state is not None else "?",
            client_id,
        )
        # Our offline will often arrives because the broker is shutting down, and aiomqtt does
        # not fail a pending publish when the connection drops: wait briefly, not the full
        # timeout, so the reconnect (which publishes online anyway) is not held up.
        await self._publish_state(
            client, online=True, timestamp=born, timeout_s=min(self.options.timeout_s, 2.0)
        )
        return _Next.CONSUME

    async def _request_rebirth(self, client: aiomqtt.Client, edge_node: str, reason: str) -> None:
        if not self._limiter.allow(edge_node, time.monotonic()):
            return
        self.rebirths_requested += 1
        log.info("asking edge node %s for a rebirth: %s", edge_node, reason)
        command = Payload.of(self._clock(), [Metric(NODE_REBIRTH, DataType.BOOLEAN, True)])
        topic = Topic(self.options.group_id, MessageType.NCMD, edge_node)
        # Sparkplug: commands are QoS 0, not retained.
        await client.publish(
            str(topic), encode_payload(command), qos=0, retain=False, timeout=self.options.timeout_s
        )


def _as_bytes(raw: object) -> bytes:
    """A received payload as bytes (aiomqtt hands bytes; anything else is kept as text)."""
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    return b"" if raw is None else str(raw).encode()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Wait up to `seconds`, or less when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
