"""Modbus TCP at plant scale, over real sockets: many devices, one failing, one hung.

Twenty pymodbus PLCs of 100 tags each and one "hung PLC" (a TCP server that accepts and reads
but never answers) polled by the real agent: the hung one hits the driver's explicit timeout and
is unavailable, a stopped one is unavailable and back after a restart (reconnect, paced by the
backoff), and the others keep their cadence throughout (polls counted per device in a window).
At the driver: a hung PLC fails at the explicit deadline and the link is dropped; one connection
carries one transaction at a time, however many callers share it (a Modbus TCP server here
records the transactions it has open and the connections it was given).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from taktline_edge.drivers.modbus import ModbusDriver
from taktline_edge.errors import DriverError
from taktline_edge.planner import Block
from tests.edge_support import Plc
from tests.support import free_port, wait_for

DEVICES = 20
POLL_MS = 100
TIMEOUT_S = 1.0
"""The hung PLC's deadline: pymodbus's timeout, then the driver's hard one (2 x + 0.5 s)."""


def _tags() -> list[dict[str, Any]]:
    """100 tags in two blocks: numbers of three types, then 20 bits of two registers."""
    tags: list[dict[str, Any]] = []
    tags += [{"metric": f"U16/{i}", "address": i, "type": "uint16"} for i in range(40)]
    tags += [{"metric": f"I32/{i}", "address": 40 + 2 * i, "type": "int32"} for i in range(20)]
    tags += [{"metric": f"F32/{i}", "address": 80 + 2 * i, "type": "float32"} for i in range(20)]
    tags += [
        {"metric": f"Bit/{i}", "address": 130 + i // 16, "type": "bit", "bit": i % 16}
        for i in range(20)
    ]
    assert len(tags) == 100
    return tags


def _config(ports: Mapping[str, int], outbox: Path) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "sparkplug": {"group_id": "P", "edge_node_id": "G-scale", "primary_host_id": "H"},
            # No broker: polling and buffering do not depend on MQTT.
            "mqtt": {"host": "127.0.0.1", "port": free_port(), "client_id": "edge-scale"},
            "outbox": {"path": str(outbox)},
            "devices": [
                {
                    "id": device,
                    "modbus": {
                        "host": "127.0.0.1",
                        "port": port,
                        "unit_id": 1,
                        "timeout_s": TIMEOUT_S,
                    },
                    "poll_interval_ms": POLL_MS,
                    "tags": _tags(),
                }
                for device, port in ports.items()
            ],
        }
    )


@dataclass
class HungPlc:
    """Accepts Modbus TCP connections and reads every request, but never answers one."""

    port: int = 0
    connections: int = 0
    requests: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while await reader.read(512):
                self.requests += 1
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def hung_plc() -> AsyncIterator[HungPlc]:
    plc = HungPlc()
    await plc.start()
    try:
        yield plc
    finally:
        await plc.stop()


@contextlib.asynccontextmanager
async def plcs(count: int) -> AsyncIterator[dict[str, Plc]]:
    started: dict[str, Plc] = {}
    try:
        for i in range(count):
            plc = Plc()
            await plc.start()
            started[f"M{i:02}"] = plc
        yield started
    finally:
        for plc in started.values():
            await plc.stop()


@dataclass
class Cadence:
    """Watches the devices' poll counters over a window: how many polls, the longest pause."""

    agent: EdgeAgent
    devices: list[str]
    started: float = field(default_factory=time.monotonic)
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    changed_at: dict[str, float] = field(default_factory=dict)
    longest_pause: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.first = self.polls()
        self.last = dict(self.first)
        self.changed_at = dict.fromkeys(self.first, self.started)
        self.longest_pause = dict.fromkeys(self.first, 0.0)

    def polls(self) -> dict[str, int]:
        return {d: s.polls for d, s in self.agent.devices.items()}

    def sample(self) -> None:
        """Look at the counters now (call it often: each wait_for round does)."""
        now = time.monotonic()
        for device, count in self.polls().items():
            if count != self.last[device]:
                self.last[device], self.changed_at[device] = count, now
            pause = now - self.changed_at[device]
            self.longest_pause[device] = max(self.longest_pause[device], pause)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        def watched() -> bool:
            self.sample()
            return condition()

        await wait_for(watched, what=what)

    def polled(self, device: str) -> int:
        return self.last[device] - self.first[device]

    def assert_kept(self) -> None:
        """Each device polled at least half as often as its cadence asks, never paused long.

        Generous for a loaded CI machine; a device held up by another's timeout (1 s) would
        pause for a second or more.
        """
        seconds = time.monotonic() - self.started
        expected = seconds / (POLL_MS / 1000)
        slow = {d: self.polled(d) for d in self.devices if self.polled(d) < expected / 2}
        assert not slow, f"below half of {expected:.0f} polls in {seconds:.1f} s: {slow}"
        paused = {d: round(p, 2) for d, p in self.longest_pause.items() if d in self.devices}
        assert max(paused.values()) < 0.6, f"devices paused (s): {paused}"


async def test_devices_keep_their_cadence_while_one_hangs_and_one_restarts(
    tmp_path: Path,
) -> None:
    async with plcs(DEVICES) as devices, hung_plc() as hung:
        for index, plc in enumerate(devices.values()):
            await plc.set(0, [index])
        ports = {name: plc.port for name, plc in devices.items()} | {"HUNG": hung.port}
        healthy = list(devices)
        async with EdgeAgent(_config(ports, tmp_path / "outbox.db")) as agent:
            await wait_for(
                lambda: all(agent.devices[d].available for d in healthy),
                what="every PLC polled",
            )
            assert all(len(agent.current(d)) == 100 for d in healthy)
            assert agent.current("M07")["U16/0"].value == 7

            # The hung PLC: an explicit timeout, then unavailable; the others do not wait for it.
            cadence = Cadence(agent, healthy)
            await cadence.until(
                lambda: agent.devices["HUNG"].failures >= 2, "the hung PLC timed out twice"
            )
            cadence.assert_kept()
            status = agent.devices["HUNG"]
            assert status.available is False
            # Connected and asked, never answered: the request's timeout, not a refused link.
            assert (status.last_error or "").startswith("HUNG: read holding at 0 ")
            assert hung.requests >= 2
            assert hung.connections >= 2, "a timed-out link is dropped and opened again"
            assert agent.current("HUNG") == {}

            # A PLC switched off: unavailable, retried on the backoff, the others poll on.
            stopped = devices["M03"]
            await stopped.stop()
            await wait_for(lambda: agent.devices["M03"].available is False, what="M03 down")
            failures = agent.devices["M03"].failures
            cadence = Cadence(agent, [d for d in healthy if d != "M03"])
            await cadence.until(
                lambda: agent.devices["M03"].failures >= failures + 2, "M03 retried twice"
            )
            cadence.assert_kept()
            fewest = min(cadence.polled(d) for d in cadence.devices)
            assert cadence.polled("M03") < fewest / 2, (
                "reconnects follow the backoff, not the cadence"
            )
            assert agent.current("M03")["U16/0"].value == 3, "the last values are kept"

            # Switched on again (registers start from 0): reconnected and polled.
            await stopped.restart()
            await stopped.set(0, [33])
            await wait_for(
                lambda: agent.current("M03")["U16/0"].value == 33, what="M03 polled again"
            )
            assert agent.devices["M03"].available is True
            assert all(agent.devices[d].available for d in healthy)
            assert agent.devices["HUNG"].available is False


async def test_a_hung_plc_fails_at_the_explicit_deadline_and_the_link_is_dropped() -> None:
    async with hung_plc() as hung:
        timeout_s = 0.3
        driver = ModbusDriver("HUNG", "127.0.0.1", hung.port, unit_id=1, timeout_s=timeout_s)
        try:
            for attempt in (1, 2):
                started = time.monotonic()
                # The driver's own deadline is 2 x timeout + 0.5 s; 5 s only guards the test.
                async with asyncio.timeout(5):
                    with pytest.raises(DriverError, match="HUNG: read holding at 0"):
                        await driver.read_blocks([Block(0, 10, ())])
                assert time.monotonic() - started >= timeout_s
                assert not driver.connected, "a link that timed out is not reused"
                await wait_for(lambda n=attempt: hung.connections == n, what="a new connection")
            assert hung.requests >= 2
        finally:
            await driver.close()


@dataclass
class RecordingPlc:
    """A Modbus TCP server (function codes 3 and 16) that answers after `delay_s` and records
    how many transactions it had open at once and how many connections it was given."""

    delay_s: float = 0.02
    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    served: int = 0
    registers: list[int] = field(default_factory=lambda: [0] * 100)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        answers: set[asyncio.Task[None]] = set()
        try:
            while True:
                header = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
                # Answer later, without blocking the next request: a second transaction sent
                # before this one is answered is seen as two open at once.
                task = asyncio.create_task(self._answer(writer, header, body))
                answers.add(task)
                task.add_done_callback(answers.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for task in answers:
                task.cancel()
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, header: bytes, body: bytes) -> None:
        await asyncio.sleep(self.delay_s)
        code, start, count = body[0], int.from_bytes(body[1:3]), int.from_bytes(body[3:5])
        if code == 3:
            words = self.registers[start : start + count]
            pdu = bytes([3, 2 * count]) + b"".join(w.to_bytes(2) for w in words)
        else:  # 16: write multiple registers
            values = body[6 : 6 + 2 * count]
            self.registers[start : start + count] = [
                int.from_bytes(values[i : i + 2]) for i in range(0, len(values), 2)
            ]
            pdu = body[:5]
        self.open_now -= 1
        self.served += 1
        writer.write(header[:4] + (len(pdu) + 1).to_bytes(2) + header[6:7] + pdu)
        await writer.drain()


async def test_one_connection_carries_one_transaction_at_a_time() -> None:
    plc = RecordingPlc()
    await plc.start()
    driver = ModbusDriver("M1", "127.0.0.1", plc.port, unit_id=1, timeout_s=2.0)
    try:
        blocks = [Block(0, 10, ()), Block(20, 5, ())]
        # Polls and writes from several tasks at once, on a driver not yet connected.
        results = await asyncio.gather(
            *(driver.read_blocks(blocks) for _ in range(4)),
            driver.write_registers(20, [7, 8]),
            driver.write_registers(30, [9]),
            *(driver.read_blocks(blocks) for _ in range(2)),
        )
        assert plc.served == 6 * 2 + 2
        assert plc.most_open == 1, "a second request was sent before the first was answered"
        assert plc.connections == 1, "callers opened connections of their own"
        assert plc.registers[20:21] + plc.registers[30:31] == [7, 9]
        reads = [r for r in results if r is not None]
        assert all(len(r) == 2 for r in reads)
    finally:
        await driver.close()
        await plc.stop()
