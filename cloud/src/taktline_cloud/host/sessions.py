"""The primary host's view of edge node sessions: births, aliases, deaths, and what they yield.

Pure logic (no MQTT): `SparkplugSessions.handle` takes one received message and returns the
samples and status changes it carries, and whether the edge node must be asked for a rebirth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from taktline_cloud.errors import CloudError
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.convert import UnstorableValueError, to_sample
from taktline_contract import ContractError
from taktline_contract.metrics import BD_SEQ
from taktline_contract.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    StateTopic,
    Topic,
    decode_payload,
    parse_topic,
)
from taktline_contract.sparkplug.codec import DatatypeLookup


class RejectedMessageError(CloudError):
    """A whole message the host cannot use (bad topic, undecodable payload); says why."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """An edge node (device None) or one of its devices went online or offline."""

    edge_node: str
    device: str | None
    online: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """What a birth certificate says an alias stands for."""

    name: str
    datatype: DataType


@dataclass(slots=True)
class Outcome:
    """What one message yields, in the order it must be applied."""

    items: list[Sample | NodeStatus] = field(default_factory=list)
    rebirth_reason: str | None = None
    """Set when the sending edge node must be asked for a rebirth (NCMD Node Control/Rebirth)."""
    edge_node: str | None = None
    problems: list[str] = field(default_factory=list)
    """Metrics dropped from an otherwise good message, each with the reason."""

    def ask_rebirth(self, reason: str) -> None:
        """Remember the first reason a rebirth is needed."""
        if self.rebirth_reason is None:
            self.rebirth_reason = reason


@dataclass(slots=True)
class _Node:
    online: bool
    bd_seq: int | None
    aliases: dict[int, MetricDefinition] = field(default_factory=dict)
    devices: dict[str, dict[int, MetricDefinition]] = field(default_factory=dict)
    """Devices born in the current session, with their alias tables."""


class SparkplugSessions:
    """Tracks every edge node of one Sparkplug group as a primary host must (Sparkplug B 3.0)."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self._nodes: dict[str, _Node] = {}

    def online(self) -> dict[str, list[str]]:
        """Edge nodes that are online, each with its born (online) devices."""
        return {
            name: sorted(node.devices) for name, node in sorted(self._nodes.items()) if node.online
        }

    def handle(self, topic: str, raw: bytes, received_at: datetime) -> Outcome:
        """Apply one received message; raise `RejectedMessageError` when it is unusable."""
        try:
            parsed = parse_topic(topic)
        except ContractError as exc:
            raise RejectedMessageError(str(exc)) from exc
        if isinstance(parsed, StateTopic):
            return Outcome()  # another host's (or our own) STATE: nothing to ingest
        if parsed.group_id != self.group_id:
            raise RejectedMessageError(
                f"group {parsed.group_id!r} is not this host's {self.group_id!r}"
            )
        if parsed.message_type in (MessageType.NCMD, MessageType.DCMD):
            return Outcome()  # commands (ours, echoed back by the group subscription)
        try:
            payload = decode_payload(raw, self._birth_datatypes(parsed))
        except ContractError as exc:
            raise RejectedMessageError(str(exc)) from exc
        outcome = Outcome(edge_node=parsed.edge_node_id)
        handler = {
            MessageType.NBIRTH: self._nbirth,
            MessageType.NDEATH: self._ndeath,
            MessageType.NDATA: self._ndata,
            MessageType.DBIRTH: self._dbirth,
            MessageType.DDEATH: self._ddeath,
            MessageType.DDATA: self._ddata,
        }[parsed.message_type]
        handler(parsed, payload, received_at, outcome)
        return outcome

    def _birth_datatypes(self, topic: Topic) -> DatatypeLookup | None:
        """Datatypes from the birth of the topic's node or device (DATA may omit them)."""
        if topic.message_type not in (MessageType.NDATA, MessageType.DDATA):
            return None
        node = self._nodes.get(topic.edge_node_id)
        if node is None:
            return None
        table = node.aliases if topic.device_id is None else node.devices.get(topic.device_id)
        if not table:
            return None
        by_name = {d.name: d.datatype for d in table.values()}

        def datatype_of(name: str | None, alias: int | None) -> DataType | None:
            if alias is not None and alias in table:
                return table[alias].datatype
            return by_name.get(name) if name is not None else None

        return datatype_of

    def _nbirth(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        bd_seq = _bd_seq(payload)
        if bd_seq is None:
            out.problems.append("NBIRTH without an integer bdSeq: any NDEATH will be accepted")
        # A new session: devices must send DBIRTH again before their data is understood.
        self._nodes[topic.edge_node_id] = _Node(True, bd_seq, _alias_table(payload, out))
        out.items.append(NodeStatus(topic.edge_node_id, None, True, now))

    def _ndeath(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        node = self._nodes.get(topic.edge_node_id)
        bd_seq = _bd_seq(payload)
        if node is not None and None not in (node.bd_seq, bd_seq) and bd_seq != node.bd_seq:
            # The will of an earlier connection, delivered after the node was born again.
            out.problems.append(f"stale NDEATH: bdSeq {bd_seq}, current session {node.bd_seq}")
            return
        out.items.append(NodeStatus(topic.edge_node_id, None, False, now))
        if node is not None:
            out.items.extend(
                NodeStatus(topic.edge_node_id, dev, False, now) for dev in sorted(node.devices)
            )
            node.online = False
            node.aliases.clear()
            node.devices.clear()

    def _ndata(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        node = self._nodes.get(topic.edge_node_id)
        if node is None or not node.online:
            out.ask_rebirth("NDATA from an edge node without NBIRTH")
            return
        for metric in payload.metrics:
            if metric.name is None and metric.alias not in node.aliases:
                out.ask_rebirth(f"unknown node metric alias {metric.alias}")
                out.problems.append(f"node metric alias {metric.alias} is unknown: dropped")

    def _dbirth(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        device = _device(topic)
        node = self._nodes.get(topic.edge_node_id)
        if node is None or not node.online:
            out.ask_rebirth("DBIRTH from an edge node without NBIRTH")
            node = self._nodes.setdefault(topic.edge_node_id, _Node(False, None))
        node.devices[device] = _alias_table(payload, out)
        out.items.append(NodeStatus(topic.edge_node_id, device, True, now))
        for metric in payload.metrics:
            if metric.name is None:
                out.problems.append(f"DBIRTH metric alias {metric.alias} has no name: dropped")
                continue
            _add_sample(out, device, metric.name, metric, payload)

    def _ddeath(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        device = _device(topic)
        node = self._nodes.get(topic.edge_node_id)
        if node is not None:
            node.devices.pop(device, None)
        out.items.append(NodeStatus(topic.edge_node_id, device, False, now))

    def _ddata(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        device = _device(topic)
        node = self._nodes.get(topic.edge_node_id)
        aliases = node.devices.get(device) if node is not None else None
        if aliases is None:
            out.ask_rebirth(f"DDATA from device {device} without DBIRTH")
            aliases = {}
        for metric in payload.metrics:
            name = metric.name
            if name is None:
                definition = aliases.get(metric.alias) if metric.alias is not None else None
                if definition is None:
                    out.ask_rebirth(f"unknown metric alias {metric.alias} of device {device}")
                    out.problems.append(f"{device}: alias {metric.alias} is unknown: dropped")
                    continue
                name = definition.name
            _add_sample(out, device, name, metric, payload)


def _device(topic: Topic) -> str:
    assert topic.device_id is not None  # parse_topic guarantees it for device message types
    return topic.device_id


def _bd_seq(payload: Payload) -> int | None:
    for metric in payload.metrics:
        if metric.name == BD_SEQ:
            value = metric.value
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def _alias_table(payload: Payload, out: Outcome) -> dict[int, MetricDefinition]:
    table: dict[int, MetricDefinition] = {}
    for metric in payload.metrics:
        if metric.alias is None or metric.name is None:
            continue
        known = table.get(metric.alias)
        if known is not None and known.name != metric.name:
            out.problems.append(
                f"alias {metric.alias} given to both {known.name!r} and {metric.name!r}"
            )
        table[metric.alias] = MetricDefinition(metric.name, metric.datatype)
    return table


def _add_sample(out: Outcome, device: str, name: str, metric: Metric, payload: Payload) -> None:
    if metric.is_transient:
        return  # Sparkplug: transient metrics are not to be historised
    if not name:
        out.problems.append(f"{device}: a metric with an empty name: dropped")
        return
    try:
        out.items.append(to_sample(device, name, metric, payload.timestamp))
    except UnstorableValueError as exc:
        out.problems.append(f"{device}/{name}: {exc}: dropped")


class RebirthLimiter:
    """At most one rebirth request per edge node per `interval_s` (a node needs time to rebirth)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def allow(self, edge_node: str, now: float) -> bool:
        """True (and remembered) when a request to `edge_node` may go out at monotonic `now`."""
        last = self._last.get(edge_node)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[edge_node] = now
        return True
