"""OPC UA driver: the only module of the edge agent that imports asyncua.

One `OpcUaSource` per device (one server). It connects, creates subscriptions of at most
`max_items_per_subscription` monitored items each (servers commonly cap at 1 000), and turns
every data-change notification into a `Sample` for the same durable sink the Modbus pollers
feed. Source timestamps are kept (server timestamp, then arrival time, when the server sends
none). A bad status code becomes a null sample (Sparkplug ``is_null``): `Sample` has no quality
field yet, so "value unknown" is the only bad quality the outbox can carry.

Reconnects are ours, not asyncua's auto-reconnect: a lost connection (detected by asyncua's
watchdog, a failed subscription or a server shutdown) ends the session; the source then waits
the shared backoff and builds a fresh client, session and subscriptions, so a restarted server
(which forgot every subscription) is subscribed again. Failure is logged once, recovery once.

Notifications arrive in asyncua's dispatch tasks and go into a bounded queue; one forwarding
task stores them in batches. Overflow policy: drop newest, counted in `status.dropped` and
logged once per episode (the queue holds minutes of a large device's changes; it only fills when
the outbox cannot store).
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from taktline_contract.backoff import Backoff
from taktline_contract.sparkplug import DataType
from taktline_edge.cancellation import raise_if_cancelling
from taktline_edge.config import OpcUaConfig, OpcUaTag
from taktline_edge.errors import DriverError, OutboxError
from taktline_edge.outbox import Sample, SampleValue
from taktline_edge.poller import DeviceStatus, SampleSink

log = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_LIMIT = 100_000
"""Notifications waiting to be stored, per device."""
_BATCH = 5_000
CERTIFICATE_FILE = "taktline-edge-cert.der"
KEY_FILE = "taktline-edge-key.pem"

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
_INTEGERS = frozenset(VARIANT_DATATYPES.values()) - {
    DataType.BOOLEAN,
    DataType.FLOAT,
    DataType.DOUBLE,
}
_ABSOLUTE_DEADBAND = 1  # DeadbandType: 1 absolute, 2 percent


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


def sample_time(data_value: ua.DataValue, now: datetime) -> datetime:
    """Source timestamp (else server timestamp, else `now`), aware UTC, to the millisecond."""
    stamp = data_value.SourceTimestamp or data_value.ServerTimestamp or now
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # asyncua decodes UtcTime naive
    stamp = stamp.astimezone(UTC)
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def application_uri() -> str:
    """The agent's OPC UA application URI (also in its certificate)."""
    return f"urn:{socket.gethostname()}:taktline:edge"


async def ensure_certificate(client: Client, directory: Path) -> tuple[Path, Path]:
    """The agent's certificate and key in `directory`, created (self-signed) when missing."""
    cert, key = directory / CERTIFICATE_FILE, directory / KEY_FILE
    created = not (cert.exists() and key.exists())
    await client.setup_self_signed_certificate(key, cert)
    if created:
        log.info("created OPC UA application certificate %s", cert)
    return cert, key


@dataclass
class OpcUaStatus(DeviceStatus):
    """A device's status plus the OPC UA counters."""

    sessions: int = 0
    monitored_items: int = 0
    subscriptions: int = 0
    dropped: int = 0
    """Notifications dropped because the queue was full (policy: drop newest)."""


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
    ) -> None:
        if not tags:
            raise ValueError(f"{device}: an OPC UA device needs at least one tag")
        self.device = device
        self.config = config
        self.tags = tuple(tags)
        self.sink = sink
        self.password = password
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.status = OpcUaStatus()
        self.current: dict[str, Sample] = {}
        self._queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._overflowing = False
        self._refused = False
        self._mismatch_logged: set[str] = set()
        self._lost = asyncio.Event()

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
                except (OSError, TimeoutError, UaError, DriverError, ValueError) as exc:
                    self._mark_unavailable(_describe(exc))
                else:
                    self._mark_unavailable("connection lost")
                await asyncio.sleep(self.backoff.next_delay())

    # the session

    async def _session(self) -> None:
        """One connection: returns when it is lost (raises when it cannot be set up)."""
        client = Client(self.config.endpoint, timeout=self.config.timeout_s)
        client.application_uri = application_uri()
        client.name = client.description = f"Taktline edge ({self.device})"
        self._lost = asyncio.Event()
        lost = self._lost

        async def connection_lost(exc: Exception) -> None:
            log.debug("%s: connection lost: %r", self.device, exc)
            lost.set()

        client.connection_lost_callback = connection_lost
        if self.config.username:
            client.set_user(self.config.username)
            if self.password is not None:
                client.set_password(self.password)
        try:
            async with asyncio.timeout(self.config.timeout_s * 3):
                await self._secure(client)
                await client.connect()
            self.status.sessions += 1
            async with asyncio.timeout(self.config.timeout_s * 3 + len(self.tags) / 1000):
                await self._subscribe(client)
            self.backoff.reset()
            self._mark_available()
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout_s):
                    await client.disconnect()

    async def _secure(self, client: Client) -> None:
        if self.config.security_policy == "None":
            return
        assert self.config.certificate_dir is not None  # the config validator requires it
        cert, key = await ensure_certificate(client, self.config.certificate_dir)
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            certificate=str(cert),
            private_key=str(key),
            mode=ua.MessageSecurityMode[self.config.security_mode],
        )

    async def _subscribe(self, client: Client) -> None:
        requests = [self._request(client, handle, tag) for handle, tag in enumerate(self.tags)]
        created = 0
        groups = split_items(requests, self.config.max_items_per_subscription)
        for group in groups:
            subscription: Subscription = await client.create_subscription(
                self.config.publishing_interval_ms, self
            )
            results = await subscription.create_monitored_items(group)
            for request, result in zip(group, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    tag = self.tags[request.RequestedParameters.ClientHandle]
                    log.warning("%s: cannot monitor %s: %s", self.device, tag.node_id, result)
                    self._offer(Sample(self.device, tag.metric, _now_ms(), None, tag.datatype))
                else:
                    created += 1
        if created == 0:
            raise DriverError(f"no tag of {self.device} could be monitored")
        self.status.subscriptions = len(groups)
        self.status.monitored_items = created

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

    # asyncua's subscription handler (called in its dispatch tasks)

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        """One monitored item changed: queue its sample."""
        handle = data.monitored_item.ClientHandle
        if not 0 <= handle < len(self.tags):
            return
        tag = self.tags[handle]
        data_value = data.monitored_item.Value
        stamp = sample_time(data_value, datetime.now(UTC))
        status = data_value.StatusCode
        value: SampleValue = None
        if status is None or not status.is_bad():
            try:
                value = convert_value(val, tag.datatype)
            except DriverError as exc:
                if tag.metric not in self._mismatch_logged:
                    log.error("%s/%s: %s; reported as null", self.device, tag.metric, exc)
                    self._mismatch_logged.add(tag.metric)
        self._offer(Sample(self.device, tag.metric, stamp, value, tag.datatype))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """The server ended a subscription (e.g. timed out): start over."""
        log.debug("%s: subscription status %s", self.device, status.Status)
        if status.Status is not None and not status.Status.is_good():
            self._lost.set()

    def _offer(self, sample: Sample) -> None:
        self.current[sample.metric] = sample
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.status.dropped += 1
            if not self._overflowing:
                log.error("%s: sample queue full, dropping new samples", self.device)
                self._overflowing = True

    # storing

    async def _forward(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._store(batch)
            if self._overflowing and self._queue.qsize() < QUEUE_LIMIT // 2:
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
        self.status.failures += 1
        self.status.last_error = reason
        if self.status.available is not False:
            log.warning("%s unavailable: %s", self.device, reason)
        else:
            log.debug("%s still unavailable: %s", self.device, reason)
        self.status.available = False

    def _mark_available(self) -> None:
        if self.status.available is False:
            log.info("%s available again (%d items)", self.device, self.status.monitored_items)
        elif self.status.available is None:
            log.info("%s available (%d items)", self.device, self.status.monitored_items)
        self.status.available = True
        self.status.last_error = None


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
    """None when the value's variant type is not one the agent can carry."""
    variant: str


_MAX_DEPTH = 8


async def browse_variables(
    endpoint: str,
    root: str | None = None,
    *,
    timeout_s: float = 5.0,
    username: str | None = None,
    password: str | None = None,
) -> list[BrowsedVariable]:
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
        found: list[BrowsedVariable] = []
        await _walk(start, (), found, skip_standard=root is None, seen=set())
        return found
    except (OSError, TimeoutError, UaError) as exc:
        raise DriverError(f"browsing {endpoint} failed: {_describe(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await client.disconnect()


async def _walk(
    node: Node,
    path: tuple[str, ...],
    found: list[BrowsedVariable],
    *,
    skip_standard: bool,
    seen: set[str],
) -> None:
    if len(path) >= _MAX_DEPTH:
        return
    for child in await node.get_children():
        node_id = child.nodeid.to_string()
        if node_id in seen or (skip_standard and child.nodeid.NamespaceIndex == 0):
            continue
        seen.add(node_id)
        name = (await child.read_browse_name()).Name or node_id
        kind = await child.read_node_class()
        if kind == ua.NodeClass.Variable:
            value = await child.read_data_value(raise_on_bad_status=False)
            variant = value.Value.VariantType if value.Value is not None else None
            datatype = variant_datatype(variant) if variant is not None else None
            label = variant.name if variant is not None else "Null"
            found.append(BrowsedVariable((*path, name), node_id, datatype, label))
        elif kind == ua.NodeClass.Object:
            await _walk(child, (*path, name), found, skip_standard=False, seen=seen)
