"""The Sparkplug B topic namespace: ``spBv1.0/{group}/{type}/{edge node}[/{device}]``."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from taktline_contract.errors import TopicError

NAMESPACE: Final = "spBv1.0"
_FORBIDDEN = frozenset("/+#")


class MessageType(StrEnum):
    """Sparkplug message types that appear in an edge node's topics."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        """True for the types whose topic names a device."""
        return self.value[0] == "D"


@dataclass(frozen=True, slots=True)
class Topic:
    """An edge node or device topic."""

    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None

    def __post_init__(self) -> None:
        for part in (self.group_id, self.edge_node_id, self.device_id):
            if part is not None:
                _check_id(part)
        if self.message_type.is_device != (self.device_id is not None):
            must = "must" if self.message_type.is_device else "must not"
            raise TopicError(f"{self.message_type} topics {must} name a device")

    def __str__(self) -> str:
        tail = f"/{self.device_id}" if self.device_id is not None else ""
        return f"{NAMESPACE}/{self.group_id}/{self.message_type}/{self.edge_node_id}{tail}"


@dataclass(frozen=True, slots=True)
class StateTopic:
    """A primary host application's STATE topic: ``spBv1.0/STATE/{host id}``."""

    host_id: str

    def __str__(self) -> str:
        return state_topic(self.host_id)


def state_topic(host_id: str) -> str:
    """The STATE topic of a primary host (Sparkplug 3.0 form)."""
    _check_id(host_id)
    return f"{NAMESPACE}/STATE/{host_id}"


def parse_topic(topic: str) -> Topic | StateTopic:
    """Parse a topic string; raise `TopicError` naming what is wrong."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE:
        raise TopicError(f"not a Sparkplug B topic: {topic!r}")
    if parts[1] == "STATE":
        if len(parts) != 3 or not parts[2]:
            raise TopicError(f"STATE topic must be {NAMESPACE}/STATE/<host id>: {topic!r}")
        return StateTopic(parts[2])
    if len(parts) not in (4, 5):
        raise TopicError(f"Sparkplug topic must have 4 or 5 levels: {topic!r}")
    try:
        message_type = MessageType(parts[2])
    except ValueError:
        raise TopicError(f"unknown Sparkplug message type {parts[2]!r} in {topic!r}") from None
    device = parts[4] if len(parts) == 5 else None
    return Topic(parts[1], message_type, parts[3], device)


def _check_id(part: str) -> None:
    if not part or _FORBIDDEN & set(part):
        raise TopicError(f"invalid Sparkplug id {part!r}: must be non-empty without '/', '+', '#'")
