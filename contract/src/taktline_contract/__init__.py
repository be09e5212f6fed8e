"""Taktline's MQTT contract, shared by edge, cloud and simulators.

Everything that crosses the broker is defined here once: the Sparkplug B 3.0 topic namespace
and payload codec, the primary host STATE message, and the names of the metrics that carry
production meaning (counters, machine state). It also holds the one retry policy every process
uses (`taktline_contract.backoff`), since the components must not import each other.

Exceptions::

    ContractError
    ├── TopicError          a topic outside the Sparkplug namespace
    └── PayloadError        bytes that are not a valid Sparkplug payload / STATE message
"""

from taktline_contract.errors import ContractError, PayloadError, TopicError

__all__ = ["ContractError", "PayloadError", "TopicError"]
