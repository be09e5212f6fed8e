"""Modbus TCP driver: the only module that imports pymodbus.

Reads use the function code of each block's table: coils (1), discrete inputs (2), holding
registers (3), input registers (4). Writes: one coil (5) or holding registers (16).

One `AsyncModbusTcpClient` per device and a lock per connection, because one Modbus TCP link
carries one transaction at a time. Every request has an explicit timeout. pymodbus reports a
Modbus exception as a response (`isError()`), not a raised exception: both become
`DriverError`. After any failure the connection is closed and the next call reconnects; the
poller paces those attempts with the shared backoff.
"""

import asyncio
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from taktline_edge.errors import DriverError, TagError
from taktline_edge.planner import Block
from taktline_edge.tags import Table, Tag

log = logging.getLogger(__name__)

# A slow PLC may answer a little after pymodbus's own timeout; our deadline is the hard stop.
_GRACE_S = 0.5


def _unit(table: Table) -> str:
    return "bits" if table.is_bits else "registers"


class ModbusDriver:
    """Reads the four tables of one Modbus TCP device; writes coils and holding registers."""

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
        """The registers (or bits, as 0/1) of each block, in order; raise `DriverError`."""
        out = []
        for block in blocks:
            if not 1 <= block.count <= block.table.max_block:
                raise DriverError(f"{self.name}: block of {block.count} {_unit(block.table)}")
            reply = await self._transact(
                f"read {block.table}", block.start, self._read_request(block)
            )
            values: list[int]
            if block.table.is_bits:
                # The reply pads bits to whole bytes: keep exactly the ones asked for.
                values = [1 if bit else 0 for bit in getattr(reply, "bits", [])[: block.count]]
            else:
                values = list(getattr(reply, "registers", [])[: block.count])
            if len(values) < block.count:
                got = len(values)
                raise DriverError(
                    f"{self.name}: read {block.table} {block.start}+{block.count} returned {got}"
                )
            out.append(values)
        return out

    def _read_request(self, block: Block) -> Any:
        start, count, unit = block.start, block.count, self.unit_id
        table = block.table
        if table == Table.COIL:
            return lambda c: c.read_coils(start, count=count, device_id=unit)
        if table == Table.DISCRETE:
            return lambda c: c.read_discrete_inputs(start, count=count, device_id=unit)
        if table == Table.INPUT:
            return lambda c: c.read_input_registers(start, count=count, device_id=unit)
        return lambda c: c.read_holding_registers(start, count=count, device_id=unit)

    async def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write `values` from `address` (function code 16); raise `DriverError` on failure."""
        words = list(values)
        await self._transact(
            "write", address, lambda c: c.write_registers(address, words, device_id=self.unit_id)
        )

    async def write_coil(self, address: int, value: bool) -> None:
        """Set the coil at `address` (function code 5); raise `DriverError` on failure."""
        state = bool(value)
        await self._transact(
            "write coil", address, lambda c: c.write_coil(address, state, device_id=self.unit_id)
        )

    async def write_tag(self, tag: Tag, value: int | float | Decimal | bool | str) -> None:
        """Make `tag` read `value`: a coil (FC5) or holding registers (FC16).

        Raise `TagError` when the tag cannot take the value (a read-only table, a bit inside a
        register, out of range) and `DriverError` when the device refuses or fails.
        """
        if not tag.writable:
            raise TagError(f"{tag.metric} is read-only in the tag map")
        if tag.table == Table.COIL:
            await self.write_coil(tag.address, tag.encode_bit(value))
        else:
            await self.write_registers(tag.address, tag.encode(value))

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
