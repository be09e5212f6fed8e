"""The simulated plant over real TCP: pymodbus and the independent `mbpoll` see the model's values.

Registers are decoded here with plain `struct`, independently of `taktline_simulators.registers`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from taktline_contract.metrics import MachineState
from taktline_simulators import (
    MachineConfig,
    PlantSimConfig,
    SimulatedPlant,
    SimulatorError,
    run_plant,
)
from tests.support import free_port, missing_service, wait_for

CYCLE_S = 0.1  # fast machines: the line makes 10 parts a second
MODBUS_TIMEOUT_S = 3.0
MBPOLL = "/usr/bin/mbpoll"

T = TypeVar("T")


def fast_config(**machine_overrides: Any) -> PlantSimConfig:
    """Three fast, deterministic machines (no jitter, scrap or faults) on ephemeral ports."""
    machines = []
    for index in (1, 2, 3):
        fields: dict[str, Any] = {
            "id": f"M{index}",
            "name": f"machine {index}",
            "host": "127.0.0.1",
            "port": 0,
            "cycle_time_s": CYCLE_S,
            "cycle_jitter": 0.0,
            "scrap_rate": 0.0,
            "mtbf_s": 1e9,
            "mttr_s": 1.0,
            "temperature_c": 40.0 + index,
        }
        machines.append(MachineConfig(**(fields | machine_overrides)))
    return PlantSimConfig(
        plant="PLANT-T",
        line="LINE-T",
        seed=3,
        tick_ms=50,
        machines=tuple(machines),
        buffer_capacity=4,
    )


class Status(NamedTuple):
    good: int
    scrap: int
    state: int
    fault_code: int
    cycle_time_ms: int
    temperature_c: float


def decode_status(words: list[int]) -> Status:
    """Holding registers 0..9: uint32 good, uint32 scrap, state, fault, uint32 ms, float32 °C."""
    return Status(*struct.unpack(">IIHHIf", struct.pack(">10H", *words)))


@pytest.fixture
async def plant() -> AsyncIterator[SimulatedPlant]:
    async with run_plant(fast_config()) as running:
        yield running


@asynccontextmanager
async def modbus(plant: SimulatedPlant, machine_id: str) -> AsyncIterator[AsyncModbusTcpClient]:
    host, port = plant.endpoints[machine_id]
    client = AsyncModbusTcpClient(host, port=port, timeout=MODBUS_TIMEOUT_S, retries=0)
    assert await client.connect(), f"cannot connect to {machine_id} at {host}:{port}"
    try:
        yield client
    finally:
        client.close()


async def read_status(client: AsyncModbusTcpClient, device_id: int = 1) -> Status:
    response = await client.read_holding_registers(0, count=10, device_id=device_id)
    assert not response.isError(), response
    return decode_status(list(response.registers))


async def read_controls(client: AsyncModbusTcpClient) -> list[int]:
    response = await client.read_holding_registers(100, count=3, device_id=1)
    assert not response.isError(), response
    return list(response.registers)


async def write(client: AsyncModbusTcpClient, address: int, value: int) -> None:
    response = await client.write_register(address, value, device_id=1)
    assert not response.isError(), response


async def stop_line(plant: SimulatedPlant, clients: dict[str, AsyncModbusTcpClient]) -> None:
    """Disable every machine over Modbus and wait until the counters can no longer move."""
    for client in clients.values():
        await write(client, 102, 0)
    await wait_for(
        lambda: all(s.state is MachineState.IDLE for s in plant.model.snapshots().values()),
        timeout=5,
        what="every machine idle after run enable 0",
    )


# Conditions for tests.support.wait_for, typed as it expects (sync or async result).
Condition = Callable[[], T | Awaitable[T]]


def registers_show_model(
    plant: SimulatedPlant, clients: dict[str, AsyncModbusTcpClient]
) -> Condition[bool]:
    """True once every machine's registers, read over TCP, carry the model's values."""

    async def check() -> bool:
        for machine_id, client in clients.items():
            seen = await read_status(client)
            truth = plant.model.snapshot(machine_id)
            if (seen.good, seen.scrap, seen.state, seen.fault_code, seen.cycle_time_ms) != (
                truth.good, truth.scrap, int(truth.state), truth.fault_code, truth.cycle_time_ms,
            ):  # fmt: skip
                return False
        return True

    return check


def status_where(
    client: AsyncModbusTcpClient, test: Callable[[Status], bool]
) -> Condition[Status | None]:
    """The machine's status once `test` holds for it."""

    async def check() -> Status | None:
        status = await read_status(client)
        return status if test(status) else None

    return check


def controls_are(client: AsyncModbusTcpClient, expected: list[int]) -> Condition[bool]:
    """True once the control block reads `expected`."""

    async def check() -> bool:
        return await read_controls(client) == expected

    return check


@asynccontextmanager
async def all_clients(plant: SimulatedPlant) -> AsyncIterator[dict[str, AsyncModbusTcpClient]]:
    async with modbus(plant, "M1") as m1, modbus(plant, "M2") as m2, modbus(plant, "M3") as m3:
        yield {"M1": m1, "M2": m2, "M3": m3}


async def test_each_machine_listens_on_its_own_ephemeral_port(plant: SimulatedPlant) -> None:
    ports = [port for _, port in plant.endpoints.values()]
    assert sorted(plant.endpoints) == ["M1", "M2", "M3"]
    assert len(set(ports)) == 3
    assert all(port > 0 for port in ports)


async def test_registers_read_over_tcp_match_the_model(plant: SimulatedPlant) -> None:
    async with all_clients(plant) as clients:
        running = await wait_for(
            status_where(clients["M3"], lambda s: s.good >= 5 and s.state == 1),
            what="M3 running with 5 good parts",
        )
        assert running is not None
        assert running.cycle_time_ms == pytest.approx(CYCLE_S * 1000, abs=1)
        await stop_line(plant, clients)
        await wait_for(registers_show_model(plant, clients), what="registers = model")
        for machine_id, client in clients.items():
            seen = await read_status(client)
            truth = plant.model.snapshot(machine_id)
            assert seen.state == MachineState.IDLE
            assert seen.good == truth.good > 0
            assert seen.temperature_c == pytest.approx(truth.temperature_c, abs=1.0)
        # The line's output: parts leave the last machine only after passing the others.
        m1, m3 = plant.model.snapshot("M1").good, plant.model.snapshot("M3").good
        assert m1 >= m3


async def test_any_unit_id_answers(plant: SimulatedPlant) -> None:
    async with modbus(plant, "M2") as client:
        statuses = [await read_status(client, device_id) for device_id in (1, 17, 247)]
        assert all(status.temperature_c == pytest.approx(42.0, abs=3) for status in statuses)


async def test_speed_written_over_modbus_changes_the_rate(plant: SimulatedPlant) -> None:
    async with all_clients(plant) as clients:
        output = clients["M3"]
        await wait_for(status_where(output, lambda s: s.good >= 3), what="line warmed up")
        at_100 = await _seconds_for_parts(output, 20)

        for client in clients.values():
            await write(client, 100, 200)
        assert [c.speed_pct for c in plant.model.snapshots().values()] == [200, 200, 200]
        assert (await read_controls(output))[0] == 200
        await wait_for(
            status_where(output, lambda s: s.cycle_time_ms == CYCLE_S * 1000 / 2),
            what="M3 cycle time halved",
        )
        at_200 = await _seconds_for_parts(output, 20)
    assert 1.6 < at_100 / at_200 < 2.5, (at_100, at_200)


async def test_reset_counters_over_modbus(plant: SimulatedPlant) -> None:
    async with all_clients(plant) as clients:
        m3 = clients["M3"]
        await wait_for(status_where(m3, lambda s: s.good >= 3), what="M3 has made parts")
        await stop_line(plant, clients)

        await write(m3, 101, 1)
        assert (plant.model.snapshot("M3").good, plant.model.snapshot("M3").scrap) == (0, 0)
        await wait_for(controls_are(m3, [100, 0, 0]), what="command reads back 0")
        good, scrap, state, fault_code, cycle_time_ms, _ = await read_status(m3)
        assert (good, scrap, state, fault_code, cycle_time_ms) == (0, 0, 0, 0, 100)
        assert plant.model.snapshot("M2").good > 0  # only the addressed machine was reset

        for client in clients.values():
            await write(client, 102, 1)
        await wait_for(status_where(m3, lambda s: s.good >= 2), what="M3 counting again")


async def test_writes_outside_the_map_are_refused(plant: SimulatedPlant) -> None:
    async with modbus(plant, "M1") as client:
        illegal_address, illegal_value = 2, 3
        for address, values, code in [
            (0, [5], illegal_address),  # the good counter is read-only
            (100, [50, 0, 1, 0], illegal_address),  # 103 is not in the map
            (100, [1001], illegal_value),
            (101, [2], illegal_value),
            (102, [5], illegal_value),
        ]:
            response = await client.write_registers(address, values, device_id=1)
            assert response.isError(), (address, values)
            assert response.exception_code == code, (address, values)
        coil = await client.write_coil(100, True, device_id=1)
        assert coil.isError()
        assert coil.exception_code == 1  # illegal function: this PLC has registers only
        too_long = await client.read_holding_registers(0, count=11, device_id=1)
        assert too_long.isError()
        assert too_long.exception_code == illegal_address
        assert await read_controls(client) == [100, 0, 1]
        assert plant.model.snapshot("M1").speed_pct == 100


async def test_mbpoll_reads_the_model_counters(plant: SimulatedPlant) -> None:
    if shutil.which(MBPOLL) is None:
        missing_service("mbpoll")
    async with all_clients(plant) as clients:
        await stop_line(plant, clients)
        # Values with both words in use, to catch a word-order mistake.
        plant.model.machine("M2").preset_counters(good=4_000_000_123, scrap=65_537)
        await wait_for(registers_show_model(plant, clients), what="registers = model")

        for machine_id, (host, port) in plant.endpoints.items():
            truth = plant.model.snapshot(machine_id)
            words = await _mbpoll(host, port, "-t", "4", "-r", "1", "-c", "10")
            seen = decode_status([int(w) for w in words])
            assert (seen.good, seen.scrap, seen.state, seen.fault_code, seen.cycle_time_ms) == (
                truth.good, truth.scrap, 0, 0, truth.cycle_time_ms,
            ), machine_id  # fmt: skip
            # mbpoll decodes the float32 itself (-B: high word first).
            [temperature] = await _mbpoll(host, port, "-t", "4:float", "-B", "-r", "9", "-c", "1")
            assert float(temperature) == pytest.approx(truth.temperature_c, abs=1.0)
        assert plant.model.snapshot("M2").good == 4_000_000_123

        host, port = plant.endpoints["M1"]
        await _mbpoll(host, port, "-t", "4", "-r", "101", "250", write=True)  # speed, 1-based
        assert plant.model.snapshot("M1").speed_pct == 250


async def test_plant_stops_cleanly_when_cancelled() -> None:
    ready = asyncio.Event()
    endpoints: dict[str, tuple[str, int]] = {}

    async def serve() -> None:
        async with run_plant(fast_config()) as running:
            endpoints.update(running.endpoints)
            ready.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(serve())
    await asyncio.wait_for(ready.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for host, port in endpoints.values():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)


async def test_a_busy_port_is_a_clear_error_and_nothing_stays_open() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        m1_port = free_port()
        base = fast_config()
        m1 = base.machines[0].model_copy(update={"port": m1_port})
        m2 = base.machines[1].model_copy(update={"port": busy_port})
        config = base.model_copy(update={"machines": (m1, m2, base.machines[2])})
        with pytest.raises(SimulatorError, match=f"M2: cannot listen on 127.0.0.1:{busy_port}"):
            async with run_plant(config):
                pass
    # M1 had started before M2 failed: it must have been closed again.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", m1_port), timeout=2)


async def test_the_command_line_serves_the_plant_until_sigterm(tmp_path: Path) -> None:
    config = fast_config().model_dump(mode="json")
    path = tmp_path / "simulators.yaml"
    path.write_text(yaml.safe_dump(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taktline_simulators", "--config", str(path), "--seed", "9",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        endpoints: dict[str, int] = {}
        async with asyncio.timeout(10):
            while len(endpoints) < 3:
                line = (await process.stderr.readline()).decode()
                assert line, "taktline-sim exited before listening"
                if found := re.search(r" (M\d) \(.*\): Modbus TCP on 127\.0\.0\.1:(\d+)$", line):
                    endpoints[found[1]] = int(found[2])
        client = AsyncModbusTcpClient("127.0.0.1", port=endpoints["M1"], timeout=3, retries=0)
        assert await client.connect()
        try:
            await wait_for(status_where(client, lambda s: s.good >= 1), what="M1 counts")
        finally:
            client.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _seconds_for_parts(client: AsyncModbusTcpClient, parts: int) -> float:
    """Real seconds the machine takes to add `parts` to its good counter."""
    start_count = (await read_status(client)).good
    await wait_for(status_where(client, lambda s: s.good != start_count), what="next part")
    started = time.monotonic()
    first = (await read_status(client)).good
    await wait_for(
        status_where(client, lambda s: s.good >= first + parts),
        timeout=15,
        what=f"{parts} more parts",
    )
    return time.monotonic() - started


async def _mbpoll(host: str, port: int, *args: str, write: bool = False) -> list[str]:
    """Run mbpoll once against a machine; the values it printed (reads) or [] (writes)."""
    command = [MBPOLL, "-m", "tcp", "-a", "1", "-1", "-o", "2", "-p", str(port), *args]
    # mbpoll takes the host after the options and the values to write after the host.
    if write:
        *options, value = command
        command = [*options, host, value]
    else:
        command.append(host)
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode == 0, (command, stdout.decode(), stderr.decode())
    if write:
        return []
    # "[1]: \t61035 (-4501)": the value, then mbpoll's signed reading of it.
    return re.findall(r"^\[\d+\]:\s+(\S+)", stdout.decode(), flags=re.MULTILINE)
