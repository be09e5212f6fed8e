"""The same edge node against the demo's embedded broker (amqtt, MQTT 3.1.1 only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taktline.broker import embedded_broker
from taktline_contract.sparkplug import MessageType
from taktline_edge.agent import EdgeAgent
from tests.edge_support import (
    Plc,
    SparkplugHost,
    edge_config,
    plc,
    series,
    wait_polled,
)
from tests.support import wait_for


@pytest.fixture
async def broker_port() -> AsyncIterator[int]:
    async with embedded_broker() as endpoint:
        yield endpoint.port


async def test_birth_data_and_host_outage_over_amqtt(broker_port: int, tmp_path: Path) -> None:
    async with plc() as m1:
        plcs: dict[str, Plc] = {"M1": m1}
        config = edge_config(broker_port, {"M1": m1.port}, tmp_path / "outbox.db", poll_ms=20)
        async with SparkplugHost(broker_port) as host, EdgeAgent(config) as agent:
            await host.wait(lambda: host.of(MessageType.DBIRTH), "DBIRTH over amqtt")
            await plcs["M1"].set_u32(0, 5)

            def goods() -> list[object]:
                samples = series(host.messages).get("M1")
                return (
                    [v for n, _, v, _ in samples.samples if n == "Production/GoodCount"]
                    if samples
                    else []
                )

            await host.wait(lambda: 5 in goods(), "DDATA over amqtt")

            await host.publish_state(False)
            await host.wait(lambda: host.of(MessageType.NDEATH), "NDEATH after host offline")
            await wait_for(lambda: agent.link.connected and not agent.link.live, what="waiting")
            for value in range(6, 9):
                await plcs["M1"].set_u32(0, value)
                await wait_polled(agent, "M1", value)
            await host.publish_state(True)
            await host.wait(lambda: len(host.of(MessageType.NBIRTH)) == 2, "born again")
            await host.wait(lambda: 8 in goods(), "buffered counts replayed")
            first: dict[object, object] = {}
            repeats: list[tuple[object, bool]] = []
            for name, stamp, value, historical in series(host.messages)["M1"].samples:
                if name != "Production/GoodCount":
                    continue
                if stamp in first:
                    repeats.append((value, historical))
                else:
                    first[stamp] = value
            values = [v for v in first.values() if isinstance(v, int)]
            assert values[values.index(5) :] == [5, 6, 7, 8], "every count, in order"
            # What the host may have lost going offline (the replay window) came again, flagged
            # historical; what was buffered while it was away came once.
            assert (5, True) in repeats
            assert all(historical and value in range(6) for value, historical in repeats)
