"""Broker outage while the line runs: the host gets every sample, in order, and the replay window.

The broker restarts. What it held for the host may be lost with it (all of it, if it is not
persistent; a Sparkplug host's clean session too), without a trace on the edge's side: its PUBACK
came. So on reconnecting (its connection was lost; here the host's STATE offline, its will, says
so as well) the edge sends again, flagged historical, what it had sent in its replay window (60 s,
the default: here everything sent before the outage). The host keys samples by (machine, metric,
timestamp), so a repeat is a no-op there.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from taktline_contract.sparkplug import MessageType
from taktline_edge.agent import EdgeAgent
from tests.edge_process import Arrival, decode
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

GOOD = "Production/GoodCount"


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

    A replay by the edge is a new message (new payload timestamp and seq), so it is kept: see
    `_window_resent`.
    """
    seen: set[bytes] = set()
    out = []
    for message in messages:
        if message.kind == MessageType.DDATA and message.raw in seen:
            continue
        seen.add(message.raw)
        out.append(message)
    return out


Sample = tuple[str, datetime, Any, bool]


def _first_arrivals(samples: list[Sample]) -> list[Sample]:
    """Each sample as it first arrived (a repeat is a replay of the window, see below)."""
    seen: set[tuple[str, datetime]] = set()
    out = []
    for sample in samples:
        if (sample[0], sample[1]) not in seen:
            seen.add((sample[0], sample[1]))
            out.append(sample)
    return out


def _window_resent(messages: list[Received]) -> bool:
    """Whether every sample of the first session came again, historical, in a later one, and
    nothing else came twice: the replay window (everything here was sent within it)."""
    record = decode(messages)
    first: dict[tuple[str, str, int], Arrival] = {}
    repeats: dict[tuple[str, str, int], Arrival] = {}
    for a in record.arrivals:
        earlier = first.setdefault(a.key, a)
        if earlier is a:
            continue
        assert a.key not in repeats, f"{a.key}: sent a third time"
        assert a.historical, f"{a.key}: a replayed sample must be historical"
        assert a.value == earlier.value, f"{a.key}: replayed with another value"
        assert earlier.session == 1 < a.session, f"{a.key}: replayed, but not from the window"
        repeats[a.key] = a
    for stream in (True, False):  # each stream in order, the replay included
        for device in {a.device for a in record.arrivals}:
            stamps = [
                a.ts_ms
                for a in record.arrivals
                if a.device == device and a.historical == stream and a.session > 1
            ]
            assert stamps == sorted(stamps), f"{device} historical={stream}: out of order"
    return all(key in repeats for key, a in first.items() if a.session == 1)


async def test_broker_restart_loses_nothing_and_repeats_only_the_window(
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

            def last_counts_arrived() -> bool:
                data = series(_without_redeliveries(host.messages))
                return all(
                    (GOOD, final[d]) in {(name, v) for name, _, v, _ in data[d].samples}
                    for d in final
                )

            await wait_for(last_counts_arrived, timeout=20, what="last counts arrive")
            await wait_for(lambda: agent.outbox_depth() == 0, timeout=20, what="outbox drained")

            def received() -> dict[str, int]:
                """Distinct samples per device."""
                data = series(_without_redeliveries(host.messages))
                return {d: len({(n, t) for n, t, _, _ in s.samples}) for d, s in data.items()}

            # Every sample the pollers stored (values only change through the counter, which
            # has stopped) reached the host.
            stored = {d: s.samples for d, s in agent.devices.items()}
            assert received() == stored
            await wait_for(
                lambda: _window_resent(host.messages), timeout=20, what="the window sent again"
            )
            assert len(host.of(MessageType.NBIRTH)) >= 2, "the edge was born again after the outage"

        # However many reconnect attempts it took: one line down, one line back up.
        publisher_log = [r.getMessage() for r in caplog.records if r.name.endswith("publisher")]
        assert len([m for m in publisher_log if "unavailable" in m]) == 1
        assert len([m for m in publisher_log if "reachable again" in m]) == 1

        data = series(_without_redeliveries(host.messages))
        for device in plcs:
            samples = _first_arrivals(data[device].samples)
            for stream in (True, False):
                stamps = [stamp for name, stamp, _, h in samples if name == GOOD and h == stream]
                assert stamps == sorted(stamps), f"{device} historical={stream}: in order"
            goods = sorted((stamp, value) for name, stamp, value, _ in samples if name == GOOD)
            values = [v for _, v in goods]
            assert values == sorted(values), f"{device}: counter never goes back"
            assert values[-1] == final[device], f"{device}: the last count arrived"
            assert any(h for _, _, _, h in samples), f"{device}: outage samples were historical"
