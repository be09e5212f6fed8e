"""Taktline edge agent: polls PLCs, buffers every change durably, publishes Sparkplug B 3.0.

Data flow: driver (Modbus block reads) -> tag decoding and deadband (poller) -> durable SQLite
outbox -> Sparkplug B edge node over MQTT (publisher). `agent.EdgeAgent` wires them.

Exceptions::

    EdgeError
    ├── EdgeConfigError     invalid configuration (names file, line, field and what is wrong)
    ├── TagError            register words that cannot be decoded, a value that cannot be written
    ├── DriverError         a device read or write failed (connection, timeout, exception reply)
    ├── OutboxError         the outbox cannot store or read
    │   └── OutboxFullError      the outbox reached its size bound (new samples are refused)
    └── CommandError        an NCMD/DCMD that cannot be carried out
"""

from taktline_edge.errors import (
    CommandError,
    DriverError,
    EdgeConfigError,
    EdgeError,
    OutboxError,
    OutboxFullError,
    TagError,
)

__all__ = [
    "CommandError",
    "DriverError",
    "EdgeConfigError",
    "EdgeError",
    "OutboxError",
    "OutboxFullError",
    "TagError",
]
