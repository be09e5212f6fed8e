"""Sparkplug B 3.0: topic namespace, payload codec and primary host STATE messages."""

from taktline_contract.sparkplug.codec import (
    DataType,
    Metric,
    Payload,
    decode_payload,
    encode_payload,
    from_millis,
    to_millis,
)
from taktline_contract.sparkplug.state import HostState, decode_state, encode_state
from taktline_contract.sparkplug.topics import (
    NAMESPACE,
    MessageType,
    StateTopic,
    Topic,
    parse_topic,
    state_topic,
)

__all__ = [
    "NAMESPACE",
    "DataType",
    "HostState",
    "MessageType",
    "Metric",
    "Payload",
    "StateTopic",
    "Topic",
    "decode_payload",
    "decode_state",
    "encode_payload",
    "encode_state",
    "from_millis",
    "parse_topic",
    "state_topic",
    "to_millis",
]
