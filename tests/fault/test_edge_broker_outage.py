"""Broker outage while the line runs: the host gets every sample exactly once, in order."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

from taktline_contract.sparkplug import MessageType
from taktline_edge.agent import EdgeAgent
from tests.edge_support import (
    Plc,
    Received,
    SparkplugHost,
    edge_config,
    plc,
    series,
    wait_polled,
)
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto


async def _count_up(plcs: dict[str, Plc], every_s: float) -> None:
    """The line runs: each machine's good counter goes up by one every `every_s`."""
    count = 0
    while True:
        count += 1
        for server in plcs.values():
            await server.set_u32(0, count)
        await asyncio.sleep(every_s)


def _without_redeliveries(messages: list[Received]) -> list[Received]:
    """Drop byte-identical repeats: QoS 1 redelivery by the broker (at-least-once by design).

    A replay by the edge is a new message (new payload timestamp and seq), so it is kept and
    would show up as a duplicate sample below.
    """
    seen: set[bytes] = set()
    out = []
    for message in messages:
        if message.kind == MessageType.DDATA and message.raw in seen:
            continue
        seen.add(message.raw)
        out.append(message)
    return out


async def test_broker_restart_loses_and_repeats_nothing(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taktline_edge.publisher")
    async with plc() as m1, plc() as m2:
        plcs = {"M1": m1, "M2": m2}
        ports = {device: server.port for device, server in plcs.items()}
        config = edge_config(mosquitto.port, ports, tmp_path / "outbox.db", poll_ms=30)
        async with (
            SparkplugHost(mosquitto.port, persistent=True) as host,
            EdgeAgent(config) as agent,
        ):
            await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "births")
            async with asyncio.TaskGroup() as line:
                counting = line.create_task(_count_up(plcs, every_s=0.01), name="line")
                await wait_for(lambda: agent.link.samples_published > 20, what="live data flows")

                await asyncio.to_thread(mosquitto.stop)
                await wait_for(lambda: not agent.link.connected, what="edge notices the outage")
                depth = agent.outbox_depth()
                await wait_for(lambda: agent.outbox_depth() > depth + 40, what="buffering")
                assert all(agent.status().devices.values()), "polling goes on without the broker"

                await asyncio.to_thread(mosquitto.start)
                await wait_for(lambda: agent.link.live, timeout=20, what="edge born again")
                await wait_for(lambda: agent.link.samples_published > 0, what="draining")
                counting.cancel()

            final = {}
            for device, server in plcs.items():
                high, low = await server.get(0, 2)
                final[device] = high << 16 | low
                await wait_polled(agent, device, final[device])

            def last_counts() -> dict[str, object]:
                data = series(_without_redeliveries(host.messages))
                return {
                    d: [v for name, _, v, _ in s.samples if name == "Production/GoodCount"][-1]
                    for d, s in data.items()
                }

            await wait_for(lambda: last_counts() == final, timeout=20, what="last counts arrive")
            await wait_for(lambda: agent.outbox_depth() == 0, timeout=20, what="outbox drained")

            def received() -> dict[str, int]:
                data = series(_without_redeliveries(host.messages))
                return {d: len(s.samples) for d, s in data.items()}

            # Every sample the pollers stored (values only change through the counter, which
            # has stopped) reached the host.
            stored = {d: s.samples for d, s in agent.devices.items()}
            assert received() == stored
            assert len(host.of(MessageType.NBIRTH)) >= 2, "the edge was born again after the outage"

        # However many reconnect attempts it took: one line down, one line back up.
        publisher_log = [r.getMessage() for r in caplog.records if r.name.endswith("publisher")]
        assert len([m for m in publisher_log if "unavailable" in m]) == 1
        assert len([m for m in publisher_log if "reachable again" in m]) == 1

        data = series(_without_redeliveries(host.messages))
        for device in plcs:
            samples = data[device].samples
            keys = Counter((name, stamp) for name, stamp, _, _ in samples)
            assert [k for k, n in keys.items() if n > 1] == [], f"{device}: no sample twice"
            goods = [
                (stamp, value)
                for name, stamp, value, _ in samples
                if name == "Production/GoodCount"
            ]
            assert [s for s, _ in goods] == sorted(s for s, _ in goods), f"{device}: in order"
            values = [v for _, v in goods]
            assert values == sorted(values), f"{device}: counter never goes back"
            assert values[-1] == final[device], f"{device}: the last count arrived"
            assert any(h for _, _, _, h in samples), f"{device}: outage samples were historical"
