"""The agent's Modbus driver against another implementation: modbus-serial's ServerTCP (Node.js).

The server (tests/interop/modbus-node/server.js, locked by its package-lock.json; install with
`npm ci` in that folder) starts on a free port with known coils, discrete inputs, input and
holding registers; the agent's planner, driver and tag decoding read every type from it, and
its poller reads the tables in one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import struct
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

from taktline_edge.drivers.modbus import ModbusDriver
from taktline_edge.outbox import Sample
from taktline_edge.planner import plan_reads
from taktline_edge.poller import Poller
from taktline_edge.tags import Table, Tag, TagType, TagValue
from tests.support import free_port, missing_service

NODE_DIR = Path(__file__).parent / "modbus-node"
_START_TIMEOUT_S = 15.0


def _words(fmt: str, value: float) -> list[int]:
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _text(text: str, registers: int, byte_order: str = "big") -> list[int]:
    raw = text.encode("utf-8").ljust(registers * 2, b"\0")
    return [int.from_bytes(raw[i : i + 2], byte_order) for i in range(0, len(raw), 2)]  # type: ignore[arg-type]


HOLDING = [
    0xFFFF,  # 0 uint16
    0xFFFE,  # 1 int16 -2
    0x5678, 0x1234,  # 2 uint32 0x12345678, word swap
    *_words(">i", -123456),  # 4 int32
    *_words(">Q", 2**63 + 5),  # 6 uint64
    *_words(">q", -(2**40)),  # 10 int64
    *_words(">f", -61.25),  # 14 float32
    *_words(">d", 1234.5678),  # 16 float64
    0b1000_0000_0000_0001,  # 20 bits 0 and 15
    *_text("WO-42", 4),  # 21 ascii string, 4 registers
    *_text("Müller", 4, "little"),  # 25 utf-8 string, byte swapped
]  # fmt: skip
TAGS = [
    Tag("Run", 3, TagType.BOOL, table=Table.COIL),
    Tag("Jog", 4, TagType.BOOL, table=Table.COIL),
    Tag("Door", 9, TagType.BOOL, table=Table.DISCRETE),
    Tag("Alarm", 0, TagType.BIT, table=Table.INPUT, bit=14),
    Tag("Level", 1, TagType.INT16, table=Table.INPUT, scale=Decimal("0.1")),
    Tag("U16", 0, TagType.UINT16),
    Tag("I16", 1, TagType.INT16),
    Tag("U32", 2, TagType.UINT32, word_order="little"),
    Tag("I32", 4, TagType.INT32),
    Tag("U64", 6, TagType.UINT64),
    Tag("I64", 10, TagType.INT64),
    Tag("F32", 14, TagType.FLOAT32),
    Tag("F64", 16, TagType.FLOAT64),
    Tag("Bit0", 20, TagType.BIT, bit=0),
    Tag("Bit1", 20, TagType.BIT, bit=1),
    Tag("Bit15", 20, TagType.BIT, bit=15),
    Tag("Order", 21, TagType.STRING, length=4),
    Tag("Operator", 25, TagType.STRING, length=4, encoding="utf-8", byte_order="little"),
]
EXPECTED: dict[str, TagValue] = {
    "Run": True,
    "Jog": False,
    "Door": True,
    "Alarm": True,
    "Level": Decimal("-12.5"),
    "U16": 65535,
    "I16": -2,
    "U32": 0x12345678,
    "I32": -123456,
    "U64": 2**63 + 5,
    "I64": -(2**40),
    "F32": -61.25,
    "F64": 1234.5678,
    "Bit0": True,
    "Bit1": False,
    "Bit15": True,
    "Order": "WO-42",
    "Operator": "Müller",
}
VALUES = {
    "coils": {"3": True, "4": False},
    "discrete": {"9": True},
    "input": {"0": 0x4000, "1": (-125) & 0xFFFF},
    "holding": {str(a): w for a, w in enumerate(HOLDING)},
}


@contextlib.asynccontextmanager
async def node_server() -> AsyncIterator[int]:
    node = shutil.which("node")
    if node is None:
        missing_service("node (Debian package nodejs)")
    if not (NODE_DIR / "node_modules" / "modbus-serial").is_dir():
        missing_service(f"modbus-serial (run `npm ci` in {NODE_DIR})")
    assert node is not None
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "server.js"),
        str(port),
        json.dumps(VALUES),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(_START_TIMEOUT_S):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            assert process.stderr is not None
            error = await process.stderr.read()
            raise AssertionError(f"node server did not start: {line!r} {error.decode()}")
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_the_driver_reads_every_type_from_a_node_modbus_server() -> None:
    async with node_server() as port:
        driver = ModbusDriver("N1", "127.0.0.1", port, unit_id=1, timeout_s=2.0)
        try:
            blocks = plan_reads(TAGS, max_gap=4)
            assert [b.table for b in blocks] == [
                Table.COIL,
                Table.DISCRETE,
                Table.INPUT,
                Table.HOLDING,
            ]
            replies = await driver.read_blocks(blocks)
            got = {
                tag.metric: tag.decode(block.words(words, tag))
                for block, words in zip(blocks, replies, strict=True)
                for tag in block.tags
            }
            assert got == EXPECTED

            # Writes land in the other implementation too.
            run = Tag("Run", 3, TagType.BOOL, table=Table.COIL, writable=True)
            await driver.write_tag(run, False)
            speed = Tag("Speed", 40, TagType.FLOAT32, writable=True)
            await driver.write_tag(speed, 12.5)
            (coils, holding) = await driver.read_blocks(
                plan_reads([run, speed, Tag("Bit", 3, TagType.BOOL, table=Table.COIL)])
            )
            assert coils == [0]
            assert speed.decode(holding) == 12.5
        finally:
            await driver.close()


async def test_the_poller_reads_the_node_server_in_one_poll() -> None:
    numeric = [t for t in TAGS if t.type != TagType.STRING]
    stored: list[Sample] = []

    async def sink(device: str, samples: Sequence[Sample]) -> None:
        stored.extend(samples)

    async with node_server() as port:
        driver = ModbusDriver("N1", "127.0.0.1", port, unit_id=1, timeout_s=2.0)
        try:
            poller = Poller("N1", numeric, 1.0, driver, sink, max_gap=4)
            assert await poller.poll_once()
            assert {s.metric: s.value for s in stored} == {
                t.metric: EXPECTED[t.metric] for t in numeric
            }
            assert poller.status.available
        finally:
            await driver.close()
