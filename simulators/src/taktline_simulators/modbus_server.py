"""The simulated line on the network: one real Modbus TCP server (pymodbus) per machine.

A tick loop advances the `LineModel` by the real (monotonic) time elapsed, every `tick_ms`, on a
steady cadence, then writes each machine's registers. Writes by Modbus masters to the control
block are checked against the register map and applied to the model as they arrive; every other
write is refused with a Modbus exception (illegal address or illegal value), as a PLC would.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from taktline_simulators.config import PlantSimConfig
from taktline_simulators.errors import IllegalAddressError, IllegalValueError, SimulatorError
from taktline_simulators.machine import LineModel, Machine
from taktline_simulators.registers import (
    CONTROL_ADDRESS,
    STATUS_ADDRESS,
    decode_control_write,
    encode_controls,
    encode_status,
)

log = logging.getLogger(__name__)

_ANY_DEVICE: Final = 0  # pymodbus: device id 0 answers every unit id not defined otherwise
_WRITE_REGISTERS: Final = 16
_REGISTER_WRITE_FUNCTIONS: Final = frozenset({6, 16, 22, 23})
_CLOSE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class SimulatedPlant:
    """A running simulated plant: where each machine listens, and the model behind them."""

    config: PlantSimConfig
    model: LineModel
    endpoints: Mapping[str, tuple[str, int]]
    """Machine id -> (host, port) actually bound (port 0 in the config is resolved here)."""


@asynccontextmanager
async def run_plant(config: PlantSimConfig) -> AsyncIterator[SimulatedPlant]:
    """Serve every machine of `config` over Modbus TCP until the block exits."""
    model = LineModel(config)
    servers = [_MachineServer(machine) for machine in model.machines]
    started: list[_MachineServer] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
        plant = SimulatedPlant(
            config=config,
            model=model,
            endpoints=MappingProxyType({server.machine.id: server.endpoint for server in started}),
        )
        async with asyncio.TaskGroup() as tasks:
            ticker = tasks.create_task(_tick(config, model, servers), name="taktline-sim tick")
            try:
                yield plant
            finally:
                ticker.cancel()
    finally:
        # Close every server before waiting on any, so a cancellation here leaves none open.
        for server in started:
            await server.close()
        for server in started:
            await server.wait_closed()


async def _tick(config: PlantSimConfig, model: LineModel, servers: list[_MachineServer]) -> None:
    """Step the model by the real time elapsed every tick, then publish the registers."""
    interval = config.tick_ms / 1000
    last = time.monotonic()
    deadline = last
    while True:
        # Deadlines are multiples of the interval from the start: no drift from slow ticks.
        deadline += interval
        await asyncio.sleep(max(deadline - time.monotonic(), 0.0))
        now = time.monotonic()
        model.step(now - last)
        last = now
        for server in servers:
            await server.refresh()
        behind = now - deadline
        if behind >= interval:
            # The loop was held up: skip the missed ticks (the step above covered their time)
            # instead of running them back to back.
            deadline += math.floor(behind / interval) * interval


class _MachineServer:
    """One machine's Modbus TCP server: its register image and the master's control writes."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._host = machine.config.host
        self._publishing = False
        snapshot = machine.snapshot()
        device = SimDevice(
            id=_ANY_DEVICE,
            simdata=[
                SimData(
                    STATUS_ADDRESS, values=encode_status(snapshot), datatype=DataType.REGISTERS
                ),
                SimData(
                    CONTROL_ADDRESS, values=encode_controls(snapshot), datatype=DataType.REGISTERS
                ),
            ],
            action=self._on_request,
        )
        self._server = ModbusTcpServer(device, address=(self._host, machine.config.port))
        self._listener: asyncio.Server | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        """(configured host, bound port); valid once started."""
        if self._listener is None or not self._listener.sockets:
            raise SimulatorError(f"{self.machine.id}: the Modbus server is not listening")
        return self._host, int(self._listener.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and listen (port 0: an ephemeral port, read back by `endpoint`)."""
        where = f"{self._host}:{self.machine.config.port}"
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports any bind failure this way
            raise SimulatorError(
                f"{self.machine.id}: cannot listen on {where} (address in use or not local?)"
            ) from exc
        # pymodbus keeps the asyncio.Server from loop.create_server as the listener's transport.
        listener = self._server.transport
        if not isinstance(listener, asyncio.Server):
            raise SimulatorError(f"{self.machine.id}: unexpected pymodbus listener {listener!r}")
        self._listener = listener

    async def refresh(self) -> None:
        """Write the machine's current values into its registers."""
        snapshot = self.machine.snapshot()
        # The server's datastore calls `_on_request` for these writes too; the flag tells them
        # apart from a master's. No await in between suspends: pymodbus applies them at once.
        self._publishing = True
        try:
            await self._server.async_setValues(
                _ANY_DEVICE, _WRITE_REGISTERS, STATUS_ADDRESS, encode_status(snapshot)
            )
            await self._server.async_setValues(
                _ANY_DEVICE, _WRITE_REGISTERS, CONTROL_ADDRESS, encode_controls(snapshot)
            )
        finally:
            self._publishing = False

    async def close(self) -> None:
        """Stop listening and drop the masters' connections (does not wait for the sockets)."""
        await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it bare

    async def wait_closed(self) -> None:
        """Wait, within a timeout, until the listening socket is closed."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        try:
            await asyncio.wait_for(listener.wait_closed(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "%s: Modbus server still closing after %ss", self.machine.id, _CLOSE_TIMEOUT_S
            )

    async def _on_request(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        _count: int,
        _registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before every read or write; a master's write must be checked."""
        if values is None or self._publishing:
            return None
        if function_code not in _REGISTER_WRITE_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            write = decode_control_write(address, [int(value) for value in values])
        except IllegalAddressError as exc:
            log.info("%s: refused write: %s", self.machine.id, exc)
            return ExcCodes.ILLEGAL_ADDRESS
        except IllegalValueError as exc:
            log.info("%s: refused write: %s", self.machine.id, exc)
            return ExcCodes.ILLEGAL_VALUE
        if write.speed_pct is not None:
            self.machine.set_speed(write.speed_pct)
        if write.run_enabled is not None:
            self.machine.set_run_enabled(write.run_enabled)
        if write.reset_counters:
            self.machine.reset_counters()
        log.info("%s: master wrote %s", self.machine.id, write)
        return None
