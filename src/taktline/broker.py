"""The embedded MQTT broker (amqtt, MQTT 3.1.1) that the demo runs in-process.

Production uses Mosquitto or EMQX; this exists so that one command runs the whole plant with no
server to install. amqtt 0.12 refuses MQTT 5 connects and ignores `$share/...` subscriptions,
which is why every Taktline client speaks MQTT 3.1.1 and the demo runs one ingest worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from amqtt.broker import Broker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where the embedded broker listens."""

    host: str
    port: int


@asynccontextmanager
async def embedded_broker(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[BrokerEndpoint]:
    """Run an amqtt broker on `host:port` (0 = a free port, read back) for the life of the block."""
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 256}},
        # No $SYS publisher and no packet logger: the demo's log is for the plant, not the broker.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config, loop=asyncio.get_running_loop())
    await broker.start()
    try:
        server = broker._servers["default"].instance  # amqtt has no public accessor for the socket
        bound = server.sockets[0].getsockname()[1] if isinstance(server, asyncio.Server) else port
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) on %s:%s", host, bound)
        yield BrokerEndpoint(host, int(bound))
    finally:
        await broker.shutdown()
