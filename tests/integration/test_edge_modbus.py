"""The Modbus driver and pollers against real Modbus TCP servers (pymodbus, real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taktline_edge.agent import EdgeAgent
from taktline_edge.drivers.modbus import ModbusDriver
from taktline_edge.errors import DriverError, OutboxError
from taktline_edge.planner import Block, plan_reads
from taktline_edge.tags import Tag, TagType
from tests.edge_support import edge_config, plc, wait_polled
from tests.support import free_port, wait_for


async def test_block_reads_writes_and_exception_replies() -> None:
    async with plc() as server:
        await server.set(0, [0x0001, 0x86A0, 7])
        driver = ModbusDriver("M1", "127.0.0.1", server.port, unit_id=1, timeout_s=1.0)
        try:
            tags = [Tag("a", 0, TagType.UINT32), Tag("b", 2, TagType.UINT16)]
            (block,) = plan_reads(tags)
            (registers,) = await driver.read_blocks([block])
            assert tags[0].decode(block.words(registers, tags[0])) == 100_000
            assert driver.connected

            await driver.write_registers(100, [80, 1])
            assert await server.get(100, 2) == [80, 1]

            # Beyond the PLC's 200 registers: a Modbus exception reply, not a dead link.
            with pytest.raises(DriverError, match="refused"):
                await driver.read_blocks([Block(190, 20, ())])
            assert driver.connected
            with pytest.raises(DriverError, match="block of 126"):
                await driver.read_blocks([Block(0, 126, ())])
        finally:
            await driver.close()


async def test_nothing_listening_is_a_driver_error_and_the_driver_reconnects() -> None:
    port = free_port()
    driver = ModbusDriver("M9", "127.0.0.1", port, unit_id=1, timeout_s=0.5)
    with pytest.raises(DriverError, match="cannot connect"):
        await driver.read_blocks([Block(0, 1, ())])
    async with plc() as server:
        await server.stop()
        server.port = port
        await server.restart()
        await server.set(0, [42])
        assert await driver.read_blocks([Block(0, 1, ())]) == [[42]]
    with pytest.raises(DriverError):
        await driver.read_blocks([Block(0, 1, ())])
    await driver.close()


async def test_a_failed_device_is_unavailable_while_the_others_keep_polling(
    tmp_path: Path,
) -> None:
    async with plc() as m1, plc() as m2:
        ports = {"M1": m1.port, "M2": m2.port}
        # No broker at all: polling and buffering do not depend on MQTT.
        config = edge_config(free_port(), ports, tmp_path / "outbox.db", poll_ms=20)
        async with EdgeAgent(config) as agent:
            await wait_for(lambda: agent.status().devices == {"M1": True, "M2": True})
            await m1.stop()
            await wait_for(lambda: agent.devices["M1"].available is False, what="M1 down")
            for value in (1, 2, 3):
                await m2.set_u32(0, value)
                await wait_polled(agent, "M2", value)
            assert agent.devices["M2"].available

            await m1.restart()
            await m1.set_u32(0, 9)
            await wait_polled(agent, "M1", 9)
            assert agent.status().devices == {"M1": True, "M2": True}
            assert not agent.link.connected
            # Every stored sample is in the outbox (a poll's append may still be in flight).
            await wait_for(
                lambda: agent.outbox_depth() == agent.status().samples_stored,
                what="outbox depth == samples stored",
            )


async def test_the_agent_refuses_to_start_without_its_outbox(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = edge_config(free_port(), {"M1": free_port()}, blocker / "outbox.db")
    with pytest.raises(OutboxError, match="cannot open outbox"):
        async with EdgeAgent(config):
            pass
