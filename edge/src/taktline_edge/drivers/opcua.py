"""OPC UA driver: the only module of the edge agent that imports asyncua.

One `OpcUaSource` per device (one server). It connects, creates subscriptions of at most
`max_items_per_subscription` monitored items each (servers commonly cap at 1 000), and turns
every data-change notification into a `Sample` for the same durable sink the Modbus pollers
feed. `write` sends a DCMD's value to a writable tag.

Quality. `Sample` has no quality field, so a status code maps onto "value" or "no value":
Good and Uncertain carry the value (an uncertain value - last usable value, sensor not accurate,
initial value - is still the PLC's best knowledge; nulling it would punch holes into a counter's
series), counted in `status.uncertain` and logged once per metric; Bad becomes a null sample
(Sparkplug ``is_null``), counted in `status.bad`.

Timestamps. A sample carries the source timestamp (else the server timestamp, else arrival
time), to the millisecond, even when it is older than the metric's last one (a server may
backfill; the cloud orders by time). A notification that repeats the metric's last sample (the
initial value sent again after a reconnect) is skipped, not stored twice; a different value
with the same millisecond is moved 1 ms on, so a (metric, timestamp) stays one sample.

Reconnects are ours, not asyncua's auto-reconnect: a lost connection (asyncua's watchdog, a
server shutdown, a subscription ended by the server, or no publish response within its keep-alive
period) ends the session; the source then waits the shared backoff and builds a fresh client,
session and subscriptions, so a restarted server (which forgot every subscription) is subscribed
again. Each change of availability is logged once, stamped in `status.since` and handed to
`on_availability`, as the Modbus `Poller` does.

Security. Before connecting, the server's endpoints are read and the configured security policy,
mode and user identity checked against them, so a mismatch fails with a message that says what
the server offers instead of a bare status code. With a security policy the agent's application
certificate and key are created in `certificate_dir` on first start (self-signed, then reused).

Load. asyncua hands each notification to a handler in a task of its own; at 10 000 items a
second that overhead alone costs a core. `_BatchSubscription` takes each publish response
whole instead, and the samples go through a bounded queue to one forwarding task that stores
them in batches. Overflow policy: drop newest, counted in `status.dropped` and logged once per
episode (the queue holds minutes of a large device's changes; it fills only while the outbox
refuses to store).

Errors: `DriverError` for the connection and the server's refusals (with the status code),
`CommandError` for a write refused before it is sent.
"""

import asyncio
import collections
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from taktline_contract.backoff import Backoff
from taktline_contract.sparkplug import DataType
from taktline_edge.cancellation import raise_if_cancelling
from taktline_edge.config import OpcUaConfig, OpcUaTag
from taktline_edge.errors import CommandError, DriverError, OutboxError
from taktline_edge.outbox import Sample, SampleValue
from taktline_edge.poller import AvailabilityListener, DeviceStatus, SampleSink

log = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_LIMIT = 100_000
"""Notifications waiting to be stored, per device."""
_BATCH = 5_000
CERTIFICATE_FILE = "taktline-edge-cert.der"
KEY_FILE = "taktline-edge-key.pem"
SESSION_TIMEOUT_MS: Final = 60_000
KEEPALIVE_S: Final = 10.0
"""A subscription with nothing to report still answers this often (a keep-alive), so a
subscription the server dropped is noticed within about this time."""

# OPC UA built-in variant types -> Sparkplug datatypes (numbers and booleans).
VARIANT_DATATYPES: dict[ua.VariantType, DataType] = {
    ua.VariantType.Boolean: DataType.BOOLEAN,
    ua.VariantType.SByte: DataType.INT8,
    ua.VariantType.Byte: DataType.UINT8,
    ua.VariantType.Int16: DataType.INT16,
    ua.VariantType.UInt16: DataType.UINT16,
    ua.VariantType.Int32: DataType.INT32,
    ua.VariantType.UInt32: DataType.UINT32,
    ua.VariantType.Int64: DataType.INT64,
    ua.VariantType.UInt64: DataType.UINT64,
    ua.VariantType.Float: DataType.FLOAT,
    ua.VariantType.Double: DataType.DOUBLE,
}
_VARIANT_TYPES = {datatype: variant for variant, datatype in VARIANT_DATATYPES.items()}
_INTEGERS = frozenset(VARIANT_DATATYPES.values()) - {
    DataType.BOOLEAN,
    DataType.FLOAT,
    DataType.DOUBLE,
}
_INTEGER_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT8: (-(2**7), 2**7 - 1),
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT8: (0, 2**8 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_ABSOLUTE_DEADBAND = 1  # DeadbandType: 1 absolute, 2 percent
_SECURITY_POLICY_URIS = {
    "None": security_policies.SecurityPolicyNone.URI,
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256.URI,
}
_SECURITY_MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_TOKEN_TYPES = {
    "anonymous": ua.UserTokenType.Anonymous,
    "username": ua.UserTokenType.UserName,
    "certificate": ua.UserTokenType.Certificate,
}
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
"""Before this a timestamp is a server's "none" (OPC UA's minimum is 1601-01-01)."""


def variant_datatype(variant_type: ua.VariantType) -> DataType | None:
    """The Sparkplug datatype of an OPC UA variant type, None when the agent cannot carry it."""
    return VARIANT_DATATYPES.get(variant_type)


def split_items(items: Sequence[T], per_subscription: int) -> list[Sequence[T]]:
    """`items` in consecutive groups of at most `per_subscription` (one per subscription)."""
    if per_subscription < 1:
        raise ValueError("a subscription holds at least one item")
    return [items[i : i + per_subscription] for i in range(0, len(items), per_subscription)]


def convert_value(value: Any, datatype: DataType) -> SampleValue:
    """`value` as the tag's datatype; raise `DriverError` when it does not fit."""
    if datatype == DataType.BOOLEAN:
        if isinstance(value, bool):
            return value
    elif datatype in _INTEGERS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise DriverError(f"{value!r} ({type(value).__name__}) is not a {datatype.name}")


def write_variant(tag: OpcUaTag, value: object) -> ua.Variant:
    """`value` as the variant a write of `tag` sends; raise `CommandError` when it does not fit.

    Integers accept an integral float or Decimal (5.0 -> 5); floats accept any finite number.
    The type's own range and the tag's `min`/`max` (inclusive) are checked.
    """
    name = tag.datatype.name
    if value is None or isinstance(value, str | bytes):
        raise CommandError(f"{tag.metric}: {value!r} cannot be written to a {name} tag")
    number: int | float
    if tag.datatype == DataType.BOOLEAN:
        if not isinstance(value, bool):
            raise CommandError(f"{tag.metric}: {value!r} is not a Boolean")
        return ua.Variant(value, ua.VariantType.Boolean)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise CommandError(f"{tag.metric}: {value!r} is not a number for a {name} tag")
    if isinstance(value, Decimal | float) and not _finite(value):
        raise CommandError(f"{tag.metric}: {value!r} is not a finite number")
    if tag.datatype in _INTEGERS:
        if value != int(value):
            raise CommandError(f"{tag.metric}: {value!r} is not a whole number for a {name} tag")
        number = int(value)
        low, high = _INTEGER_RANGES[tag.datatype]
        if not low <= number <= high:
            raise CommandError(f"{tag.metric}: {value!r} is outside the {name} range {low}..{high}")
    else:
        number = float(value)
        if tag.datatype == DataType.FLOAT and abs(number) > _FLOAT32_MAX:
            raise CommandError(f"{tag.metric}: {value!r} is outside the Float range")
    exact = _decimal(value)
    if tag.min is not None and exact < tag.min:
        raise CommandError(f"{tag.metric}: {value!r} is below the tag's minimum {tag.min}")
    if tag.max is not None and exact > tag.max:
        raise CommandError(f"{tag.metric}: {value!r} is above the tag's maximum {tag.max}")
    return ua.Variant(number, _VARIANT_TYPES[tag.datatype])


def _finite(value: float | Decimal) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def _decimal(value: int | float | Decimal) -> Decimal:
    # A float as written (0.1 -> 0.1), not its binary expansion (0.1000000000000000055...).
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:  # pragma: no cover - finite numbers always convert
        raise CommandError(f"{value!r} is not a number") from None


def sample_time(data_value: ua.DataValue, now: datetime) -> datetime:
    """Source timestamp (else server timestamp, else `now`), aware UTC, to the millisecond."""
    stamp: datetime = now
    for given in (data_value.SourceTimestamp, data_value.ServerTimestamp):
        if given is not None and (given.tzinfo is None or given >= _EARLIEST):
            stamp = given
            break
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # older asyncua versions decode UtcTime naive
    elif stamp.utcoffset():
        stamp = stamp.astimezone(UTC)
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def application_uri() -> str:
    """The agent's OPC UA application URI (also in its certificate)."""
    return f"urn:{socket.gethostname()}:taktline:edge"


async def ensure_certificate(client: Client, directory: Path) -> tuple[Path, Path]:
    """The agent's certificate and key in `directory`, created (self-signed) when missing.

    An existing, valid pair is reused (an expired one, or one for another host name, is
    replaced). The directory is made private to the agent's user, the key readable by it only.
    """
    cert, key = directory / CERTIFICATE_FILE, directory / KEY_FILE
    before = await asyncio.to_thread(_certificate_files, directory, create=True)
    await client.setup_self_signed_certificate(key, cert)
    after = await asyncio.to_thread(_certificate_files, directory, create=False)
    if before is None:
        log.info("created OPC UA application certificate %s", cert)
    elif before != after:
        log.warning("renewed OPC UA application certificate %s (servers must trust it)", cert)
    return cert, key


def _certificate_files(directory: Path, *, create: bool) -> tuple[int, int] | None:
    """The certificate's and key's modification times (None: missing); keeps the key private."""
    if create and not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    cert, key = directory / CERTIFICATE_FILE, directory / KEY_FILE
    if not (cert.exists() and key.exists()):
        return None
    if os.name == "posix":
        key.chmod(0o600)
    return cert.stat().st_mtime_ns, key.stat().st_mtime_ns


@dataclass
class OpcUaStatus(DeviceStatus):
    """A device's status plus the OPC UA counters."""

    sessions: int = 0
    monitored_items: int = 0
    subscriptions: int = 0
    notifications: int = 0
    """Data changes received (before the repeats after a reconnect are skipped)."""
    uncertain: int = 0
    """Notifications with an Uncertain status (their values are stored)."""
    bad: int = 0
    """Notifications with a Bad status (stored as null samples)."""
    dropped: int = 0
    """Notifications dropped because the queue was full (policy: drop newest)."""
    writes: int = 0
    """Writes the server accepted."""


class _BatchSubscription(Subscription):
    """An asyncua subscription that hands each publish response's data changes over whole.

    asyncua's own `publish_callback` starts one task per notification for a handler (or queues
    one event object per notification for its iterator); here one call handles them all.
    """

    def __init__(self, client: Client, params: ua.CreateSubscriptionParameters) -> None:
        # No handler: asyncua would queue events for an iterator, but this class never
        # delivers any (publish_callback is replaced), so the queue stays empty.
        super().__init__(client.uaclient.session, params, None, queue_maxsize=1)
        self.on_data_changes: Callable[[Sequence[ua.MonitoredItemNotification]], None] = (
            lambda items: None
        )
        self.on_status_change: Callable[[ua.StatusChangeNotification], None] = lambda s: None
        self.first_publish = asyncio.Event()
        self.keepalive_s = KEEPALIVE_S

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        """One publish response (data changes, a status change or a keep-alive)."""
        self.last_publish_at = time.monotonic()
        self.first_publish.set()
        message = publish_result.NotificationMessage
        if not message.NotificationData:
            return
        self.last_sequence_number = int(message.SequenceNumber)
        for notification in message.NotificationData:
            if isinstance(notification, ua.DataChangeNotification):
                self.on_data_changes(notification.MonitoredItems)
            elif isinstance(notification, ua.StatusChangeNotification):
                self.on_status_change(notification)


class OpcUaSource:
    """Subscribes to one OPC UA server's tags forever; `current` holds each metric's latest."""

    def __init__(
        self,
        device: str,
        config: OpcUaConfig,
        tags: Sequence[OpcUaTag],
        sink: SampleSink,
        *,
        password: str | None = None,
        backoff: Backoff | None = None,
        on_availability: AvailabilityListener | None = None,
    ) -> None:
        if not tags:
            raise ValueError(f"{device}: an OPC UA device needs at least one tag")
        self.device = device
        self.config = config
        self.tags = tuple(tags)
        self.sink = sink
        self.password = password
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.on_availability: AvailabilityListener | None = on_availability
        """Called with (device, available, reason) on each change of availability."""
        self.status = OpcUaStatus()
        self.current: dict[str, Sample] = {}
        self._by_metric = {tag.metric: tag for tag in self.tags}
        self._pending: collections.deque[Sample] = collections.deque()
        self._wake = asyncio.Event()
        self._overflowing = False
        self._refused = False
        self._logged: set[tuple[str, str]] = set()
        self._lost = asyncio.Event()
        self._loss: list[str] = []
        """Why the current session is lost (the first reason is reported)."""
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"OpcUaSource({self.device} at {self.config.endpoint})"

    async def run(self) -> None:
        """Connect, subscribe and forward samples until cancelled; reconnect on any loss."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._forward(), name=f"opcua-store:{self.device}")
            while True:
                raise_if_cancelling()
                try:
                    await self._session()
                except DriverError as exc:
                    self._mark_unavailable(str(exc))
                except (OSError, TimeoutError, UaError, ValueError) as exc:
                    self._mark_unavailable(_describe(exc))
                await asyncio.sleep(self.backoff.next_delay())

    async def write(self, metric: str, value: object) -> None:
        """Write `value` to the tag `metric`, as the tag's OPC UA type.

        Raises `CommandError` when the write is refused before it is sent (no such metric, a
        read-only tag, a value of the wrong type or out of range) and `DriverError` when the
        server is not connected, refuses the write (the message names the status code) or
        does not answer within `timeout_s`.
        """
        tag = self._by_metric.get(metric)
        if tag is None:
            raise CommandError(f"{self.device} has no metric {metric!r}")
        if not tag.writable:
            raise CommandError(f"{self.device}/{metric} is read-only in the tag map")
        try:
            variant = write_variant(tag, value)
        except CommandError as exc:
            raise CommandError(f"{self.device}/{exc}") from None
        client = self._client
        if client is None:
            reason = self.status.last_error or "not connected yet"
            raise DriverError(f"{self.device}/{metric}: not written, the server is away ({reason})")
        write = ua.WriteValue()
        write.NodeId = client.get_node(tag.node_id).nodeid
        write.AttributeId = AttributeIds.Value
        # Value only, no timestamps: many PLCs refuse a write that sets them.
        write.Value = ua.DataValue(variant)
        params = ua.WriteParameters()
        params.NodesToWrite = [write]
        try:
            async with asyncio.timeout(self.config.timeout_s):
                (result,) = await client.get_node(write.NodeId).write_params(params)
        except (OSError, TimeoutError, UaError) as exc:
            raise DriverError(f"{self.device}/{metric}: write failed: {_describe(exc)}") from exc
        if not result.is_good():
            raise DriverError(
                f"{self.device}/{metric}: the server refused the write:"
                f" {result.name} (0x{result.value:08X}) {result.doc}".rstrip()
            )
        self.status.writes += 1
        log.info("%s/%s written: %r", self.device, metric, variant.Value)

    # the session

    async def _session(self) -> None:
        """One connection; raises when it cannot be set up or is lost (`DriverError`: why)."""
        # The watchdog reads the server state every timeout_s: a dead peer that never closed
        # the socket is noticed, yet a loop busy with a large publish response is not.
        client = Client(
            self.config.endpoint,
            timeout=self.config.timeout_s,
            watchdog_intervall=self.config.timeout_s,
        )
        client.application_uri = application_uri()
        client.name = client.description = f"Taktline edge ({self.device})"
        # A session we lost (a network cut) holds one of the PLC's few session slots until it
        # times out: a minute, not asyncua's hour. Our requests keep a live one open.
        client.session_timeout = max(SESSION_TIMEOUT_MS, int(self.config.timeout_s * 4000))
        self._lost = lost = asyncio.Event()
        self._loss = loss = []

        async def connection_lost(exc: Exception) -> None:
            log.debug("%s: connection lost: %r", self.device, exc)
            loss.append(f"connection lost: {_describe(exc)}")
            lost.set()

        client.connection_lost_callback = connection_lost
        try:
            async with asyncio.timeout(self.config.timeout_s * 3):
                await self._check_endpoints(client)
                await self._secure(client)
                await self._identify(client)
                await client.connect()
            self.status.sessions += 1
            async with asyncio.timeout(self.config.timeout_s * 3 + len(self.tags) / 1000):
                subscriptions = await self._subscribe(client)
            with contextlib.suppress(TimeoutError):
                # Wait for the initial values, so `current` is complete when we say available.
                async with asyncio.timeout(self.config.timeout_s):
                    for subscription in subscriptions:
                        await subscription.first_publish.wait()
            self.backoff.reset()
            self._client = client
            self._mark_available()
            stale = await self._watch(subscriptions, lost)
            raise DriverError(stale or (loss[0] if loss else "connection lost"))
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout_s):
                    await client.disconnect()

    async def _watch(
        self, subscriptions: Sequence[_BatchSubscription], lost: asyncio.Event
    ) -> str | None:
        """Until the connection is lost (None) or a subscription goes quiet (what happened)."""
        limit = max(s.keepalive_s for s in subscriptions) + 2 * self.config.timeout_s
        started = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit / 2):
                    await lost.wait()
                    return None
            now = time.monotonic()
            for subscription in subscriptions:
                last = subscription.last_publish_at or started
                if now - last > limit:
                    return (
                        f"subscription {subscription.subscription_id} sent nothing"
                        f" for {now - last:.0f} s (keep-alive every {subscription.keepalive_s:g} s)"
                    )

    async def _check_endpoints(self, client: Client) -> None:
        """Raise `DriverError` naming what the server offers when it lacks what we are set to."""
        endpoints = await client.connect_and_get_server_endpoints()
        policy, mode = self.config.security_policy, self.config.security_mode
        identity = self.config.user_identity
        matching = [
            e
            for e in endpoints
            if e.SecurityPolicyUri == _SECURITY_POLICY_URIS[policy]
            and e.SecurityMode == _SECURITY_MODES[mode]
        ]
        if not matching:
            offered = ", ".join(sorted({_security_label(e) for e in endpoints})) or "nothing"
            raise DriverError(
                f"the server offers no endpoint with security {policy}/{mode}; it offers {offered}"
            )
        tokens = {t.TokenType for e in matching for t in e.UserIdentityTokens or ()}
        if _TOKEN_TYPES[identity] not in tokens:
            accepted = ", ".join(sorted(t.name.lower() for t in tokens)) or "none"
            raise DriverError(
                f"the server's {policy}/{mode} endpoint does not accept {identity} users;"
                f" it accepts {accepted}"
            )

    async def _secure(self, client: Client) -> None:
        if self.config.security_policy == "None":
            return
        assert self.config.certificate_dir is not None  # the config validator requires it
        cert, key = await ensure_certificate(client, self.config.certificate_dir)
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            certificate=str(cert),
            private_key=str(key),
            mode=_SECURITY_MODES[self.config.security_mode],
        )

    async def _identify(self, client: Client) -> None:
        identity = self.config.user_identity
        if identity == "username":
            assert self.config.username is not None  # the config validator requires it
            client.set_user(self.config.username)
            if self.password is not None:
                client.set_password(self.password)
        elif identity == "certificate":
            cert, key = self.config.user_certificate, self.config.user_private_key
            if cert is None or key is None:
                assert self.config.certificate_dir is not None  # the config validator requires it
                cert, key = await ensure_certificate(client, self.config.certificate_dir)
            try:
                await client.load_client_certificate(str(cert), await _encoding(cert))
                await client.load_private_key(key, extension=await _encoding(key))
            except (OSError, ValueError) as exc:
                raise DriverError(
                    f"cannot load the user certificate {cert} or key {key}: {exc}"
                ) from exc

    async def _subscribe(self, client: Client) -> list[_BatchSubscription]:
        requests = [self._request(client, handle, tag) for handle, tag in enumerate(self.tags)]
        created = 0
        subscriptions: list[_BatchSubscription] = []
        for group in split_items(requests, self.config.max_items_per_subscription):
            subscription = await self._create_subscription(client)
            subscriptions.append(subscription)
            results = await subscription.create_monitored_items(group)
            for request, result in zip(group, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    tag = self.tags[request.RequestedParameters.ClientHandle]
                    log.warning("%s: cannot monitor %s: %s", self.device, tag.node_id, result)
                    self._offer([Sample(self.device, tag.metric, _now_ms(), None, tag.datatype)])
                else:
                    created += 1
        if created == 0:
            raise DriverError(f"no tag of {self.device} could be monitored")
        self.status.subscriptions = len(subscriptions)
        self.status.monitored_items = created
        return subscriptions

    async def _create_subscription(self, client: Client) -> _BatchSubscription:
        interval = float(self.config.publishing_interval_ms)
        keepalive = max(1, math.ceil(KEEPALIVE_S * 1000 / interval))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = interval
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = max(10_000, 3 * keepalive)
        params.MaxNotificationsPerPublish = 10_000
        params.PublishingEnabled = True
        params.Priority = 0
        subscription = _BatchSubscription(client, params)
        subscription.on_data_changes = self._data_changes
        subscription.on_status_change = self._status_change
        result = await subscription.init()
        if result.RevisedPublishingInterval != interval:
            log.info(
                "%s: the server publishes every %g ms, not %g ms",
                self.device,
                result.RevisedPublishingInterval,
                interval,
            )
        subscription.keepalive_s = (
            result.RevisedPublishingInterval * max(result.RevisedMaxKeepAliveCount, 1) / 1000
        )
        return subscription

    def _request(self, client: Client, handle: int, tag: OpcUaTag) -> ua.MonitoredItemCreateRequest:
        params = ua.MonitoringParameters()
        # Our handle is the tag's index: unique across this device's subscriptions.
        params.ClientHandle = handle
        params.SamplingInterval = float(self.config.sampling_interval_ms)
        params.QueueSize = self.config.queue_size
        params.DiscardOldest = True
        if tag.deadband is not None:
            deadband = ua.DataChangeFilter()
            deadband.Trigger = ua.DataChangeTrigger.StatusValue
            deadband.DeadbandType = _ABSOLUTE_DEADBAND
            deadband.DeadbandValue = float(tag.deadband)
            params.Filter = deadband
        item = ua.ReadValueId()
        item.NodeId = client.get_node(tag.node_id).nodeid
        item.AttributeId = AttributeIds.Value
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = item
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    # notifications (called in asyncua's publish loop: no awaits, nothing slow)

    def _data_changes(self, items: Sequence[ua.MonitoredItemNotification]) -> None:
        """One publish response's data changes: update `current`, queue new samples."""
        now = datetime.now(UTC)
        tags, current, device = self.tags, self.current, self.device
        samples: list[Sample] = []
        self.status.notifications += len(items)
        for item in items:
            handle = item.ClientHandle
            if not 0 <= handle < len(tags):
                continue
            tag = tags[handle]
            data_value = item.Value
            stamp = sample_time(data_value, now)
            status = data_value.StatusCode
            value: SampleValue = None
            if status is not None and status.value & 0x80000000:  # Bad (10, and reserved 11)
                self.status.bad += 1
                self._log_once(tag, "bad", f"{status.name}; reported as null", logging.WARNING)
            else:
                if status is not None and status.value & 0x40000000:  # Uncertain
                    self.status.uncertain += 1
                    self._log_once(tag, "uncertain", f"{status.name}; value kept", logging.INFO)
                variant = data_value.Value
                raw = variant.Value if variant is not None else None
                try:
                    value = convert_value(raw, tag.datatype)
                except DriverError as exc:
                    self._log_once(tag, "type", f"{exc}; reported as null", logging.ERROR)
            last = current.get(tag.metric)
            if last is not None and stamp == last.timestamp:
                if value == last.value:
                    continue  # the same sample again (the initial value after a reconnect)
                stamp += timedelta(milliseconds=1)  # two values within a millisecond
            sample = Sample(device, tag.metric, stamp, value, tag.datatype)
            current[tag.metric] = sample
            samples.append(sample)
        if samples:
            self._offer(samples)

    def _status_change(self, status: ua.StatusChangeNotification) -> None:
        """The server ended a subscription (e.g. timed out): start over."""
        log.debug("%s: subscription status %s", self.device, status.Status)
        if status.Status is not None and not status.Status.is_good():
            self._loss.append(f"the server ended a subscription: {status.Status.name}")
            self._lost.set()

    def _log_once(self, tag: OpcUaTag, kind: str, text: str, level: int) -> None:
        if (tag.metric, kind) not in self._logged:
            self._logged.add((tag.metric, kind))
            log.log(level, "%s/%s: %s", self.device, tag.metric, text)

    def _offer(self, samples: Sequence[Sample]) -> None:
        room = QUEUE_LIMIT - len(self._pending)
        if len(samples) > room:
            self.status.dropped += len(samples) - room
            samples = samples[: max(room, 0)]
            if not self._overflowing:
                log.error("%s: sample queue full, dropping new samples", self.device)
                self._overflowing = True
        self._pending.extend(samples)
        self._wake.set()

    # storing

    async def _forward(self) -> None:
        pending = self._pending
        while True:
            await self._wake.wait()
            self._wake.clear()
            while pending:
                batch = [pending.popleft() for _ in range(min(_BATCH, len(pending)))]
                await self._store(batch)
                if self._overflowing and len(pending) < QUEUE_LIMIT // 2:
                    log.warning("%s: sample queue has room again", self.device)
                    self._overflowing = False

    async def _store(self, batch: Sequence[Sample]) -> None:
        """Store `batch`, retrying on the backoff's pace while the outbox refuses it."""
        retry = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                await self.sink(self.device, batch)
            except OutboxError as exc:
                if not self._refused:
                    log.error("%s: samples not stored: %s; retrying", self.device, exc)
                    self._refused = True
                await asyncio.sleep(retry.next_delay())
                continue
            if self._refused:
                log.warning("%s: samples are stored again", self.device)
                self._refused = False
            self.status.samples += len(batch)
            return

    # status

    def _mark_unavailable(self, reason: str) -> None:
        self.status.mark_unavailable(self.device, reason, datetime.now(UTC), self.on_availability)

    def _mark_available(self) -> None:
        items = f" ({self.status.monitored_items} items)"
        self.status.mark_available(self.device, datetime.now(UTC), self.on_availability, items)


async def _encoding(path: Path) -> str:
    """The encoding of a certificate or key file ("pem" or "der"), by its content."""

    def head() -> bytes:
        with path.open("rb") as file:
            return file.read(64)

    return "pem" if (await asyncio.to_thread(head)).lstrip().startswith(b"-----BEGIN") else "der"


def _security_label(endpoint: ua.EndpointDescription) -> str:
    policy = (endpoint.SecurityPolicyUri or "").rsplit("#", 1)[-1] or "?"
    mode = endpoint.SecurityMode.name.rstrip("_") if endpoint.SecurityMode is not None else "?"
    return f"{policy}/{mode}"


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now - timedelta(microseconds=now.microsecond % 1000)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    """A variable found by `browse_variables`: its browse path below the root and its type."""

    path: tuple[str, ...]
    node_id: str
    datatype: DataType | None
    """None when the agent cannot carry the value (a string, an array, a structure)."""
    variant: str
    """The OPC UA type as found, e.g. ``UInt32``, ``Double[]`` or ``String``."""


@dataclass(frozen=True, slots=True)
class BrowseResult:
    """What `browse_variables` found below one root node."""

    root_name: str
    """The root's browse name (``Objects`` by default)."""
    variables: tuple[BrowsedVariable, ...]


_MAX_DEPTH = 8
_READ_BATCH = 500
"""Nodes per Read request: within what servers commonly allow (MaxNodesPerRead)."""


async def browse_variables(
    endpoint: str,
    root: str | None = None,
    *,
    timeout_s: float = 5.0,
    username: str | None = None,
    password: str | None = None,
) -> BrowseResult:
    """Every variable below `root` (default: Objects, without the server's own ns=0 nodes)."""
    client = Client(endpoint, timeout=timeout_s)
    client.application_uri = application_uri()
    if username:
        client.set_user(username)
        if password is not None:
            client.set_password(password)
    try:
        async with asyncio.timeout(timeout_s * 3):
            await client.connect()
    except (OSError, TimeoutError, UaError) as exc:
        raise DriverError(f"cannot connect to {endpoint}: {_describe(exc)}") from exc
    try:
        start = client.get_node(root) if root else client.nodes.objects
        root_name = (await start.read_browse_name()).Name or start.nodeid.to_string()
        found = await _walk(client, start, skip_standard=root is None)
        return BrowseResult(root_name, tuple(found))
    except (OSError, TimeoutError, UaError) as exc:
        raise DriverError(f"browsing {endpoint} failed: {_describe(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await client.disconnect()


async def _walk(client: Client, start: Node, *, skip_standard: bool) -> list[BrowsedVariable]:
    """Breadth first: one Browse per object, then the variables' types in batched Reads.

    A Browse returns each child's name and node class, so a large address space costs one
    request per object and two per `_READ_BATCH` variables, not three per node.
    """
    variables: list[tuple[tuple[str, ...], ua.NodeId]] = []
    seen = {start.nodeid}
    level: list[tuple[Node, tuple[str, ...]]] = [(start, ())]
    while level:
        below: list[tuple[Node, tuple[str, ...]]] = []
        for node, path in level:
            for child in await node.get_children_descriptions():
                node_id = child.NodeId
                standard = skip_standard and not path and node_id.NamespaceIndex == 0
                if node_id in seen or standard:
                    continue
                seen.add(node_id)
                name = child.BrowseName.Name or node_id.to_string()
                if child.NodeClass == ua.NodeClass.Variable:
                    variables.append(((*path, name), node_id))
                elif child.NodeClass == ua.NodeClass.Object and len(path) + 1 < _MAX_DEPTH:
                    below.append((client.get_node(node_id), (*path, name)))
        level = below
    found: list[BrowsedVariable] = []
    for i in range(0, len(variables), _READ_BATCH):
        batch = variables[i : i + _READ_BATCH]
        nodes = [client.get_node(node_id) for _, node_id in batch]
        values = await client.read_attributes(nodes, AttributeIds.Value)
        types = await client.read_attributes(nodes, AttributeIds.DataType)
        for (path, node_id), value, declared in zip(batch, values, types, strict=True):
            datatype, label = _variable_type(value, declared)
            found.append(BrowsedVariable(path, node_id.to_string(), datatype, label))
    return found


def _variable_type(value: ua.DataValue, declared: ua.DataValue) -> tuple[DataType | None, str]:
    """The Sparkplug datatype (None: not carried) and a label of a variable's type.

    The value's variant type decides; the DataType attribute stands in when the value is
    null or unreadable (only for the built-in types, ids 1..25). Arrays are not carried.
    """
    variant = value.Value
    kind: ua.VariantType
    if variant is not None and variant.VariantType != ua.VariantType.Null:
        kind, array = variant.VariantType, bool(variant.is_array)
    else:
        type_id = declared.Value.Value if declared.Value is not None else None
        if not (
            isinstance(type_id, ua.NodeId)
            and type_id.NamespaceIndex == 0
            and isinstance(type_id.Identifier, int)
            and 1 <= type_id.Identifier <= 25
        ):
            return None, "Null"
        kind, array = ua.VariantType(type_id.Identifier), False
    label = f"{kind.name}[]" if array else kind.name
    return (None if array else variant_datatype(kind)), label
