"""All four Modbus tables over real sockets: a pymodbus server with coils, discrete inputs,
input and holding registers; the agent's driver, poller and config read every type from it."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from taktline_contract.sparkplug import DataType
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from taktline_edge.drivers.modbus import ModbusDriver
from taktline_edge.errors import DriverError, TagError
from taktline_edge.outbox import Sample
from taktline_edge.planner import Block, plan_reads
from taktline_edge.poller import Poller
from taktline_edge.tags import Table, Tag, TagType
from tests.support import free_port, wait_for

# pymodbus server function codes for setValues/getValues per table.
_FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


class FourTablePlc:
    """A Modbus TCP server whose four tables are separate (as on most PLCs), any unit id."""

    def __init__(self) -> None:
        bits = [SimData(0, count=100, values=False, datatype=SimType.BITS)]
        more_bits = [SimData(0, count=100, values=False, datatype=SimType.BITS)]
        holding = [SimData(0, count=200, values=0, datatype=SimType.REGISTERS)]
        inputs = [SimData(0, count=200, values=0, datatype=SimType.REGISTERS)]
        device = SimDevice(id=0, simdata=(bits, more_bits, holding, inputs))
        self.server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        self.port = 0

    async def start(self) -> None:
        await self.server.serve_forever(background=True)
        transport: Any = self.server.transport
        self.port = int(transport.sockets[0].getsockname()[1])

    async def set(self, table: Table, address: int, values: Sequence[int | bool]) -> None:
        await self.server.async_setValues(1, _FC[table], address, list(values))

    async def get(self, table: Table, address: int, count: int = 1) -> list[int]:
        values = await self.server.async_getValues(1, _FC[table], address, count)
        return [int(v) for v in values]

    async def stop(self) -> None:
        await self.server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def four_table_plc() -> AsyncIterator[FourTablePlc]:
    plc = FourTablePlc()
    await plc.start()
    try:
        yield plc
    finally:
        await plc.stop()


def _words(fmt: str, value: float | int) -> list[int]:
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


# Tag map and the values the PLC holds for it; every type and every table.
TAGS: list[dict[str, Any]] = [
    {"metric": "Coil/Run", "address": 3, "table": "coil", "writable": True},
    {"metric": "Coil/Jog", "address": 4, "table": "coil"},
    {"metric": "Discrete/Door", "address": 9, "table": "discrete"},
    {"metric": "Input/Alarm", "address": 0, "table": "input", "type": "bit", "bit": 14},
    {"metric": "Input/Level", "address": 1, "table": "input", "type": "int16", "scale": 0.1},
    {"metric": "Input/Flow", "address": 2, "table": "input", "type": "float64"},
    {"metric": "Holding/U16", "address": 0, "type": "uint16"},
    {"metric": "Holding/I16", "address": 1, "type": "int16"},
    {"metric": "Holding/U32", "address": 2, "type": "uint32", "word_order": "little"},
    {"metric": "Holding/I32", "address": 4, "type": "int32", "byte_order": "little"},
    {"metric": "Holding/U64", "address": 6, "type": "uint64"},
    {"metric": "Holding/I64", "address": 10, "type": "int64"},
    {"metric": "Holding/F32", "address": 14, "type": "float32"},
    {"metric": "Holding/F64", "address": 16, "type": "float64", "word_order": "little"},
    {"metric": "Holding/Ready", "address": 20, "type": "bit", "bit": 0},
    {
        "metric": "Holding/Speed",
        "address": 21,
        "type": "uint16",
        "scale": 0.5,
        "offset": 1,
        "writable": True,
    },
    {"metric": "Holding/Order", "address": 22, "type": "string", "length": 4},
]
EXPECTED: dict[str, tuple[object, DataType]] = {
    "Coil/Run": (True, DataType.BOOLEAN),
    "Coil/Jog": (False, DataType.BOOLEAN),
    "Discrete/Door": (True, DataType.BOOLEAN),
    "Input/Alarm": (True, DataType.BOOLEAN),
    "Input/Level": (Decimal("-12.5"), DataType.DOUBLE),
    "Input/Flow": (2.5e-3, DataType.DOUBLE),
    "Holding/U16": (65535, DataType.UINT16),
    "Holding/I16": (-2, DataType.INT16),
    "Holding/U32": (0x12345678, DataType.UINT32),
    "Holding/I32": (-123456, DataType.INT32),
    "Holding/U64": (2**63 + 5, DataType.UINT64),
    "Holding/I64": (-(2**40), DataType.INT64),
    "Holding/F32": (-61.25, DataType.FLOAT),
    "Holding/F64": (1234.5678, DataType.DOUBLE),
    "Holding/Ready": (False, DataType.BOOLEAN),
    "Holding/Speed": (Decimal("41.0"), DataType.DOUBLE),
    "Holding/Order": ("WO-4711", DataType.STRING),
}


async def _load(plc: FourTablePlc) -> None:
    await plc.set(Table.COIL, 3, [True, False])
    await plc.set(Table.DISCRETE, 9, [True])
    await plc.set(Table.INPUT, 0, [0x4000, (-125) & 0xFFFF, *_words(">d", 2.5e-3)])
    i32 = _words(">i", -123456)
    f64 = _words(">d", 1234.5678)
    await plc.set(
        Table.HOLDING,
        0,
        [
            0xFFFF,
            0xFFFE,
            0x5678,
            0x1234,  # word swap
            *[int.from_bytes(w.to_bytes(2, "big"), "little") for w in i32],  # byte swap
            *_words(">Q", 2**63 + 5),
            *_words(">q", -(2**40)),
            *_words(">f", -61.25),
            *reversed(f64),
            0b1111_1111_1111_1110,  # bit 0 clear
            80,  # 80 * 0.5 + 1
            *[int.from_bytes(b"WO-4711\0"[i : i + 2], "big") for i in range(0, 8, 2)],
        ],
    )


def _config(port: int, outbox: Path) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "sparkplug": {"group_id": "P", "edge_node_id": "G", "primary_host_id": "H"},
            "mqtt": {"host": "127.0.0.1", "port": free_port(), "client_id": "edge-tables"},
            "outbox": {"path": str(outbox)},
            "devices": [
                {
                    "id": "M1",
                    "modbus": {"host": "127.0.0.1", "port": port, "unit_id": 3, "timeout_s": 1},
                    "poll_interval_ms": 20,
                    "max_gap": 2,
                    "tags": TAGS,
                }
            ],
        }
    )


async def test_the_agent_polls_every_type_from_every_table(tmp_path: Path) -> None:
    async with four_table_plc() as plc:
        await _load(plc)
        config = _config(plc.port, tmp_path / "outbox.db")
        async with EdgeAgent(config) as agent:
            await wait_for(lambda: len(agent.current("M1")) == len(TAGS), what="all tags read")
            got = {m: (s.value, s.datatype) for m, s in agent.current("M1").items()}
            assert got == EXPECTED
            assert agent.devices["M1"].available

            await plc.set(Table.COIL, 4, [True])
            await plc.set(Table.INPUT, 0, [0])
            await wait_for(
                lambda: (
                    agent.current("M1")["Coil/Jog"].value is True
                    and agent.current("M1")["Input/Alarm"].value is False
                ),
                what="bit changes polled",
            )


async def test_the_driver_reads_per_function_code_and_writes_coils() -> None:
    async with four_table_plc() as plc:
        await _load(plc)
        config = _config(plc.port, Path("unused.db"))
        tags = config.devices[0].to_tags()
        blocks = plan_reads(tags, max_gap=2)
        assert [(b.table, b.start, b.count) for b in blocks] == [
            (Table.COIL, 3, 2),
            (Table.DISCRETE, 9, 1),
            (Table.INPUT, 0, 6),
            (Table.HOLDING, 0, 26),
        ]
        driver = ModbusDriver("M1", "127.0.0.1", plc.port, unit_id=3, timeout_s=1.0)
        try:
            replies = await driver.read_blocks(blocks)
            assert replies[0] == [1, 0], "exactly the bits asked for, not the padded byte"
            by_metric = {t.metric: t for t in tags}
            await driver.write_tag(by_metric["Coil/Run"], False)
            assert await plc.get(Table.COIL, 3) == [0]
            await driver.write_tag(by_metric["Coil/Run"], 1)
            assert await plc.get(Table.COIL, 3) == [1]
            await driver.write_tag(by_metric["Holding/Speed"], Decimal(11))
            assert await plc.get(Table.HOLDING, 21) == [20]
            with pytest.raises(TagError, match="read-only"):
                await driver.write_tag(by_metric["Coil/Jog"], True)
            with pytest.raises(DriverError, match="refused"):
                await driver.read_blocks([Block(1990, 20, (), Table.COIL)])
            with pytest.raises(DriverError, match="block of 2001 bits"):
                await driver.read_blocks([Block(0, 2001, (), Table.DISCRETE)])
            with pytest.raises(DriverError, match="block of 126 registers"):
                await driver.read_blocks([Block(0, 126, (), Table.INPUT)])
            assert driver.connected, "exception replies keep the link"
        finally:
            await driver.close()


async def test_a_poller_marks_its_device_unavailable_and_back() -> None:
    async with four_table_plc() as plc:
        await _load(plc)
        tags = [Tag("Run", 3, TagType.BOOL, table=Table.COIL)]
        driver = ModbusDriver("M1", "127.0.0.1", plc.port, unit_id=1, timeout_s=0.5)
        stored: list[Sample] = []

        async def sink(device: str, samples: Sequence[Sample]) -> None:
            stored.extend(samples)

        changes: list[bool] = []
        poller = Poller("M1", tags, 0.05, driver, sink)
        poller.on_availability = lambda _d, up, _r: changes.append(up)
        try:
            assert await poller.poll_once()
            await plc.stop()
            assert not await poller.poll_once()
            assert poller.status.available is False
            assert changes == [True, False]
            assert [s.value for s in stored] == [True]
        finally:
            await driver.close()
