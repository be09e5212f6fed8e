"""The edge node's Sparkplug B messages, built as pure values (no MQTT here).

Sequence numbers: NBIRTH carries seq 0; every later message of the node (DBIRTH, DDATA, NDATA,
DDEATH) carries the next number, wrapping 255 -> 0. bdSeq ties an NBIRTH to the NDEATH will of
the same MQTT session. After birth, DDATA names metrics by alias only.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from taktline_contract.metrics import BD_SEQ, NODE_REBIRTH
from taktline_contract.sparkplug import DataType, Metric, Payload
from taktline_contract.sparkplug.codec import Value
from taktline_edge.outbox import Sample, SampleValue, StoredSample
from taktline_edge.tags import Tag


class SeqCounter:
    """Sparkplug message sequence numbers of one edge node."""

    def __init__(self) -> None:
        self._next = 0

    def reset(self) -> int:
        """Start a birth: return 0 (the NBIRTH's seq)."""
        self._next = 1
        return 0

    def next(self) -> int:
        """The seq of the next message after the NBIRTH, wrapping 255 -> 0."""
        seq = self._next
        self._next = (seq + 1) % 256
        return seq


def wire_value(value: SampleValue) -> Value:
    """A sample value as the codec carries it (Decimal travels as a Double)."""
    if isinstance(value, Decimal):
        return float(value)
    return value


NODE_SCAN_RATE = "Node Control/Scan Rate"
"""Int64, milliseconds: the poll interval of every device; an NCMD sets it."""
OUTBOX_DEPTH = "Outbox/Depth"
"""UInt64: samples waiting in the outbox (unsent; not those kept for the replay window)."""
OUTBOX_OLDEST_AGE = "Outbox/Oldest Age"
"""Int64, milliseconds: age of the oldest waiting (unsent) sample (0 when none waits)."""
OUTBOX_RETAINED = "Outbox/Retained"
"""UInt64: samples sent but kept for the replay window (sent again if the host may have lost
them)."""
OUTBOX_BYTES = "Outbox/Bytes"
"""UInt64: bytes of the outbox file in use (unsent and retained samples alike)."""
OUTBOX_FULL = "Outbox/Full"
"""Boolean alarm: the outbox is at its bound (refusing new samples or dropping the oldest)."""
OUTBOX_DROPPED = "Outbox/Dropped"
"""UInt64: samples dropped to make room (policy drop_oldest), over the file's life."""
OUTBOX_REFUSED = "Outbox/Refused"
"""UInt64: samples refused (policy refuse) since the agent started."""
COMMANDS_REFUSED = "Commands/Refused"
"""UInt64: NCMD/DCMD refused or failed since the agent started."""
COMMANDS_LAST_REFUSAL = "Commands/Last Refusal"
"""String: which command was refused and why."""


def device_metric(device: str, leaf: str) -> str:
    """A node metric about one device: ``Devices/{device}/{leaf}``."""
    return f"Devices/{device}/{leaf}"


DEVICE_CONNECTED = "Connected"
"""Boolean: the device answered its last poll (connection state)."""
DEVICE_ERRORS = "Errors"
"""UInt64: failed polls since the agent started."""
DEVICE_POLL_LATENCY = "Poll Latency"
"""Int64, milliseconds: how long the last poll's reads took."""


@dataclass(frozen=True, slots=True)
class NodeMetric:
    """One node metric's current value (for NBIRTH and NDATA)."""

    name: str
    datatype: DataType
    value: Value


def node_birth(
    timestamp: datetime,
    bd_seq: int,
    metrics: Sequence[NodeMetric] = (),
    aliases: Mapping[str, int] | None = None,
) -> Payload:
    """The NBIRTH payload (seq 0): bdSeq, Rebirth and the node's own metrics with aliases."""
    known = aliases or {}
    return Payload.of(
        timestamp,
        [
            Metric(BD_SEQ, DataType.UINT64, bd_seq, timestamp=timestamp),
            Metric(NODE_REBIRTH, DataType.BOOLEAN, False, timestamp=timestamp),
            *(
                Metric(m.name, m.datatype, m.value, timestamp=timestamp, alias=known.get(m.name))
                for m in metrics
            ),
        ],
        seq=0,
    )


def node_data(
    timestamp: datetime, seq: int, metrics: Sequence[NodeMetric], aliases: Mapping[str, int]
) -> Payload:
    """An NDATA of changed node metrics, by alias (metrics without one go by name)."""
    return Payload(
        timestamp,
        tuple(
            Metric(
                None if m.name in aliases else m.name,
                m.datatype,
                m.value,
                timestamp=timestamp,
                alias=aliases.get(m.name),
            )
            for m in metrics
        ),
        seq,
    )


def current_data(
    timestamp: datetime, seq: int, samples: Sequence[Sample], aliases: Mapping[str, int]
) -> Payload:
    """A DDATA of current values (e.g. the actual value after a refused write), not historical."""
    return Payload(
        timestamp,
        tuple(
            Metric(
                None,
                s.datatype,
                wire_value(s.value),
                timestamp=s.timestamp,
                alias=aliases[s.metric],
            )
            for s in samples
        ),
        seq,
    )


def node_death(timestamp: datetime, bd_seq: int) -> Payload:
    """The NDEATH payload (the MQTT will, and what a graceful shutdown publishes)."""
    return Payload.of(timestamp, [Metric(BD_SEQ, DataType.UINT64, bd_seq, timestamp=timestamp)])


def device_death(timestamp: datetime, seq: int) -> Payload:
    """A DDEATH: the device stopped answering at `timestamp`; its metrics are stale from then."""
    return Payload(timestamp, (), seq)


def device_birth(
    timestamp: datetime,
    seq: int,
    tags: Sequence[Tag],
    current: Mapping[str, Sample],
    aliases: Mapping[str, int],
) -> Payload:
    """A DBIRTH: every metric of the device with its name, alias and current value (or null)."""
    metrics = []
    for tag in tags:
        sample = current.get(tag.metric)
        metrics.append(
            Metric(
                tag.metric,
                tag.datatype,
                wire_value(sample.value) if sample is not None else None,
                timestamp=sample.timestamp if sample is not None else timestamp,
                alias=aliases[tag.metric],
            )
        )
    return Payload.of(timestamp, metrics, seq=seq)


@dataclass(frozen=True, slots=True)
class DeviceData:
    """The metrics of one DDATA message and the outbox rows they come from."""

    device: str
    row_ids: tuple[int, ...]
    metrics: tuple[Metric, ...]

    def payload(self, timestamp: datetime, seq: int) -> Payload:
        """The DDATA payload with `seq`."""
        return Payload(timestamp, self.metrics, seq)


def device_data(
    rows: Sequence[StoredSample],
    aliases: Mapping[str, Mapping[str, int]],
    max_metrics: int,
) -> tuple[list[DeviceData], list[int]]:
    """Group outbox rows into DDATA messages: per device, oldest first, `max_metrics` at most.

    Order is kept within each device (devices are independent in Sparkplug), so a device's
    samples reach the host in the order they were polled. Rows of a device or metric that is
    no longer in the tag map cannot be published (the host never saw their birth): their ids
    come back as the second element, to be discarded.
    """
    if max_metrics < 1:
        raise ValueError("max_metrics must be >= 1")
    per_device: dict[str, list[StoredSample]] = {}
    orphans: list[int] = []
    for row in rows:
        known = aliases.get(row.sample.device)
        if known is None or row.sample.metric not in known:
            orphans.append(row.id)
            continue
        per_device.setdefault(row.sample.device, []).append(row)
    out = []
    for device, device_rows in per_device.items():
        device_aliases = aliases[device]
        for start in range(0, len(device_rows), max_metrics):
            chunk = device_rows[start : start + max_metrics]
            metrics = tuple(
                Metric(
                    None,
                    row.sample.datatype,
                    wire_value(row.sample.value),
                    timestamp=row.sample.timestamp,
                    alias=device_aliases[row.sample.metric],
                    is_historical=row.historical,
                )
                for row in chunk
            )
            out.append(DeviceData(device, tuple(r.id for r in chunk), metrics))
    return out, orphans
