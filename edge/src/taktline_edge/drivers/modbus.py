"""Modbus TCP driver: the only module that imports pymodbus.

One `AsyncModbusTcpClient` per device and a lock per connection, because one Modbus TCP link
carries one transaction at a time. Every request has an explicit timeout. pymodbus reports a
Modbus exception as a response (`isError()`), not a raised exception: both become
`DriverError`. After any failure the connection is closed and the next call reconnects; the
poller paces those attempts with the shared backoff.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from taktline_edge.errors import DriverError
from taktline_edge.planner import MAX_BLOCK, Block

log = logging.getLogger(__name__)

# A slow PLC may answer a little after pymodbus's own timeout; our deadline is the hard stop.
_GRACE_S = 0.5


class ModbusDriver:
    """Reads and writes the holding registers of one Modbus TCP device."""

    def __init__(self, name: str, host: str, port: int, unit_id: int, timeout_s: float) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None

    def __repr__(self) -> str:
        return f"ModbusDriver({self.name} at {self.host}:{self.port} unit {self.unit_id})"

    @property
    def connected(self) -> bool:
        """True while the TCP connection is open."""
        return self._client is not None and bool(self._client.connected)

    async def read_blocks(self, blocks: Sequence[Block]) -> list[list[int]]:
        """The registers of each block, in order; raise `DriverError` on any failure."""
        out = []
        for block in blocks:
            if not 1 <= block.count <= MAX_BLOCK:
                raise DriverError(f"{self.name}: block of {block.count} registers")
            reply = await self._transact(
                "read",
                block.start,
                lambda c, b=block: c.read_holding_registers(
                    b.start, count=b.count, device_id=self.unit_id
                ),
            )
            registers = list(getattr(reply, "registers", []))
            if len(registers) < block.count:
                got = len(registers)
                raise DriverError(f"{self.name}: read {block.start}+{block.count} returned {got}")
            out.append(registers[: block.count])
        return out

    async def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write `values` from `address` (function code 16); raise `DriverError` on failure."""
        words = list(values)
        await self._transact(
            "write", address, lambda c: c.write_registers(address, words, device_id=self.unit_id)
        )

    async def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        async with self._lock:
            self._drop()

    async def _transact(self, what: str, address: int, request: Any) -> Any:
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout_s * 2 + _GRACE_S):
                    client = await self._connected_client()
                    reply = await request(client)
            except TimeoutError as exc:
                self._drop()
                raise DriverError(f"{self.name}: {what} at {address} timed out") from exc
            except (ModbusException, OSError) as exc:
                self._drop()
                raise DriverError(f"{self.name}: {what} at {address} failed: {exc}") from exc
            if reply is None or reply.isError():
                # An exception reply leaves the link healthy: keep the connection.
                raise DriverError(f"{self.name}: {what} at {address} refused: {reply}")
            return reply

    async def _connected_client(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        # reconnect_delay=0: pymodbus must not reconnect behind our back; retries=0: the
        # poller decides when to try again.
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=self.name,
        )
        if not await client.connect():
            client.close()
            raise DriverError(f"{self.name}: cannot connect to {self.host}:{self.port}")
        self._client = client
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
