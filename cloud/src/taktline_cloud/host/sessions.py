"""The primary host's view of edge node sessions: births, aliases, deaths, and what they yield.

Pure logic (no MQTT): `SparkplugSessions.handle` takes one received message and returns the
samples and status changes it carries, and whether the edge node must be asked for a rebirth.

With a reorder timeout, every message of an edge node after its NBIRTH must carry the next `seq`
(mod 256). MQTT keeps one connection's messages in order, but Sparkplug asks a host to tolerate
reordering (e.g. through a bridge) for a while: a message ahead of the expected `seq` is held,
and applied once the missing ones arrive. When they have not arrived within the timeout (checked
on every message and by `tick`), the held messages are applied anyway - their data is still good -
and the node is asked for a rebirth, since a missing message may have been a DBIRTH or DDEATH.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    """An edge node (device None) or one of its devices went online or offline at `at`.

    `at` is the DDEATH payload's timestamp (the edge node's time of the device's failure), and
    the receipt time for births and NDEATH (an NDEATH is usually the broker publishing the will,
    whose payload was stamped when the edge node connected).
    """

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


SEQ_MODULUS = 256
DEFAULT_REORDER_TIMEOUT_S = 2.0
"""Sparkplug B 3.0 suggests a host wait a couple of seconds for a missing `seq` before a rebirth."""


@dataclass(frozen=True, slots=True)
class _Held:
    """A message that arrived ahead of its `seq`, waiting for the ones before it."""

    topic: Topic
    raw: bytes
    payload: Payload
    received_at: datetime


@dataclass(slots=True)
class _Sequence:
    expected: int | None = None
    """The `seq` the next message of the node must carry; None outside a session (no NBIRTH)."""
    held: dict[int, _Held] = field(default_factory=dict)
    gap_since: datetime | None = None
    """When the first held message arrived (the reorder timeout runs from then)."""


class SparkplugSessions:
    """Tracks every edge node of one Sparkplug group as a primary host must (Sparkplug B 3.0).

    `reorder_timeout_s` None turns `seq` checking off: ingest workers sharing the data through a
    shared subscription each see only part of a node's messages, so gaps would be normal there.
    """

    def __init__(self, group_id: str, *, reorder_timeout_s: float | None = None) -> None:
        self.group_id = group_id
        self._nodes: dict[str, _Node] = {}
        self._reorder_timeout = (
            None if reorder_timeout_s is None else timedelta(seconds=reorder_timeout_s)
        )
        self._sequences: dict[str, _Sequence] = {}

    def online(self) -> dict[str, list[str]]:
        """Edge nodes that are online, each with its born (online) devices."""
        return {
            name: sorted(node.devices) for name, node in sorted(self._nodes.items()) if node.online
        }

    def handle(
        self, topic: str, raw: bytes, received_at: datetime, *, check_seq: bool = True
    ) -> Outcome:
        """Apply one received message; raise `RejectedMessageError` when it is unusable.

        `check_seq` False: a replayed dead letter, outside the live sequence of its node.
        """
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
        if self._reorder_timeout is None or not check_seq:
            return self._apply(parsed, payload, received_at)
        return self._sequenced(parsed, raw, payload, received_at, self._reorder_timeout)

    def tick(self, now: datetime) -> list[Outcome]:
        """Give up on gaps older than the reorder timeout: the held messages' outcomes, each
        asking for a rebirth. A host calls this periodically (no message may come to do it)."""
        timeout = self._reorder_timeout
        if timeout is None:
            return []
        outcomes: list[Outcome] = []
        for edge_node, sequence in sorted(self._sequences.items()):
            if sequence.gap_since is not None and now - sequence.gap_since >= timeout:
                outcome = Outcome(edge_node=edge_node)
                self._give_up(sequence, outcome)
                outcomes.append(outcome)
        return outcomes

    def _sequenced(
        self, topic: Topic, raw: bytes, payload: Payload, now: datetime, timeout: timedelta
    ) -> Outcome:
        """Apply a message in `seq` order, holding it while earlier ones may still arrive."""
        sequence = self._sequences.setdefault(topic.edge_node_id, _Sequence())
        out = Outcome(edge_node=topic.edge_node_id)
        if topic.message_type in (MessageType.NBIRTH, MessageType.NDEATH):
            # NDEATH carries no seq and NBIRTH starts a new count: what is held belongs to the
            # session that ends here, so it comes first (no rebirth: this is one, or a death).
            self._release(sequence, out, everything=True)
            _merge(out, self._apply(topic, payload, now))
            seq = payload.seq if topic.message_type is MessageType.NBIRTH else None
            sequence.expected = None if seq is None else _next(seq)
            return out
        expected, seq = sequence.expected, payload.seq
        if expected is None or seq is None:
            _merge(out, self._apply(topic, payload, now))  # no session, or no seq to check
            return out
        ahead = (seq - expected) % SEQ_MODULUS
        if ahead == 0:
            _merge(out, self._apply(topic, payload, now))
            sequence.expected = _next(seq)
            self._release(sequence, out, everything=False)
        elif ahead < SEQ_MODULUS // 2:
            sequence.held.setdefault(seq, _Held(topic, raw, payload, now))
            if sequence.gap_since is None:
                sequence.gap_since = now
            elif now - sequence.gap_since >= timeout:
                self._give_up(sequence, out)
        else:
            # Behind: it comes after we gave up on it (or is a duplicate). Its data is still
            # good and a sample's key makes a repeat harmless.
            _merge(out, self._apply(topic, payload, now))
        return out

    def _release(self, sequence: _Sequence, out: Outcome, *, everything: bool) -> None:
        """Apply held messages in `seq` order: those now next in line, or (`everything`) all."""
        while sequence.held:
            expected = sequence.expected
            if expected is None or expected not in sequence.held:
                if not everything:
                    break
                start = expected if expected is not None else min(sequence.held)
                expected = min(sequence.held, key=lambda s: (s - start) % SEQ_MODULUS)
            held = sequence.held.pop(expected)
            released = self._apply(held.topic, self._redecode(held), held.received_at)
            released.problems[:] = [f"{held.topic} seq {expected}: {p}" for p in released.problems]
            _merge(out, released)
            sequence.expected = _next(expected)
        # A further gap among what is still held is timed from its oldest message.
        sequence.gap_since = min((h.received_at for h in sequence.held.values()), default=None)

    def _give_up(self, sequence: _Sequence, out: Outcome) -> None:
        first = min(sequence.held, key=lambda s: (s - (sequence.expected or 0)) % SEQ_MODULUS)
        out.ask_rebirth(f"seq gap: expected {sequence.expected}, got {first}")
        self._release(sequence, out, everything=True)

    def _redecode(self, held: _Held) -> Payload:
        """The held payload, decoded again with the births applied since it arrived."""
        try:
            return decode_payload(held.raw, self._birth_datatypes(held.topic))
        except ContractError:
            return held.payload  # it decoded when it arrived: that reading still stands

    def _apply(self, parsed: Topic, payload: Payload, received_at: datetime) -> Outcome:
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
        def datatype_of(name: str | None, alias: int | None) -> DataType | None:
            if alias is not None and alias in table:
                return table[alias].datatype
            if name is None:
                return None
            # Rare (data by name without its datatype): a scan, not a table per message.
            return next((d.datatype for d in table.values() if d.name == name), None)

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
        # The edge node stamps a DDEATH when the device failed, which may be well before it
        # reaches us (it goes out after the samples the device had waiting). Sparkplug requires
        # the timestamp and a payload without one is rejected on decoding, so the receipt time
        # (`now`) is never needed as a fallback here.
        out.items.append(NodeStatus(topic.edge_node_id, device, False, payload.timestamp))

    def _ddata(self, topic: Topic, payload: Payload, now: datetime, out: Outcome) -> None:
        device = _device(topic)
        node = self._nodes.get(topic.edge_node_id)
        aliases = node.devices.get(device) if node is not None else None
        if aliases is None:
            out.ask_rebirth(f"DDATA from device {device} without DBIRTH")
            aliases = {}
        for metric in payload.metrics:
            name = metric.name
            definition = aliases.get(metric.alias) if metric.alias is not None else None
            if name is None:
                if definition is None:
                    out.ask_rebirth(f"unknown metric alias {metric.alias} of device {device}")
                    out.problems.append(f"{device}: alias {metric.alias} is unknown: dropped")
                    continue
                name = definition.name
            if definition is not None and metric.datatype != definition.datatype:
                # Valid on the wire but not what the birth declared: the edge's tag map changed
                # without a rebirth, and the value's meaning (scale, signedness) is unknown.
                reason = (
                    f"{device}/{name}: datatype {metric.datatype.name}, but its DBIRTH says"
                    f" {definition.datatype.name}"
                )
                out.ask_rebirth(reason)
                out.problems.append(f"{reason}: dropped")
                continue
            _add_sample(out, device, name, metric, payload)


def _next(seq: int) -> int:
    return (seq + 1) % SEQ_MODULUS


def _merge(out: Outcome, other: Outcome) -> None:
    """Append `other`'s items and problems to `out`, keeping the first rebirth reason."""
    out.items.extend(other.items)
    out.problems.extend(other.problems)
    if other.rebirth_reason is not None:
        out.ask_rebirth(other.rebirth_reason)


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
