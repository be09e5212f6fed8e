"""Replay after an outage: the backlog drains flagged historical while live data keeps flowing.

Real parts: the edge agent, two pymodbus PLCs whose counters step every 10 ms, Mosquitto, a
Sparkplug host. The outbox starts with an hour of this line's history (stored as an agent that
could not publish stores it), the broker is down while the agent starts (it buffers more), then
comes back. The host must get:

* every buffered sample once, flagged ``is_historical``; every sample polled after the birth
  not flagged;
* live samples while the backlog is still draining (interleaved, not stuck behind an hour);
* each stream (live / historical) in order per device, and the final count.

The replay *rate* is measured in bench/replay_rate.py, not here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taktline_contract.sparkplug import DataType, MessageType, to_millis
from taktline_edge.agent import EdgeAgent
from taktline_edge.outbox import Outbox, Sample
from tests.edge_process import (
    COUNTERS,
    GOOD,
    Arrival,
    counter_config,
    decode,
    plc_count,
    run_line,
)
from tests.edge_support import SparkplugHost, plc
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

HOUR_S = 3600
START_COUNT = 10_000
"""The PLCs' counters start above anything in the pre-filled hour (counters never go back)."""
DEVICES = ("M1", "M2")


def _prefill(path: Path) -> set[tuple[str, str, int]]:
    """An hour of both devices' samples, one poll a second; returns their keys."""
    start = datetime.now(UTC) - timedelta(seconds=HOUR_S + 5)
    metrics = [GOOD, *(f"Counter/C{i:02d}" for i in range(COUNTERS))]
    keys = set()
    with Outbox(path) as outbox:
        batch = []
        for second in range(HOUR_S):
            stamp = start + timedelta(seconds=second)
            for device in DEVICES:
                for n, metric in enumerate(metrics):
                    batch.append(Sample(device, metric, stamp, second + n, DataType.UINT32))
                    keys.add((device, metric, to_millis(stamp)))
            if len(batch) >= 10_000:
                outbox.append(batch, historical=True)
                batch = []
        outbox.append(batch, historical=True)
    return keys


async def test_replay_interleaves_live_data_and_flags_history(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.db"
    backlog = await asyncio.to_thread(_prefill, outbox)
    await asyncio.to_thread(mosquitto.stop)
    async with plc() as m1, plc() as m2:
        plcs = {"M1": m1, "M2": m2}
        config = counter_config(mosquitto.port, {d: s.port for d, s in plcs.items()}, outbox)
        async with EdgeAgent(config) as agent, asyncio.TaskGroup() as tasks:
            line = tasks.create_task(run_line(plcs, [START_COUNT]), name="line")
            await wait_for(
                lambda: agent.outbox_depth() > len(backlog) + 500,
                what="the agent buffering on top of the backlog",
            )
            await asyncio.to_thread(mosquitto.start)
            async with SparkplugHost(mosquitto.port) as host:
                await wait_for(
                    lambda: agent.outbox_depth() == 0, timeout=60, what="the backlog drained"
                )
                line.cancel()
                final = {device: await plc_count(server) for device, server in plcs.items()}

                def last_goods() -> dict[str, object]:
                    arrivals = decode(host.messages).arrivals
                    return {a.device: a.value for a in arrivals if a.metric == GOOD}

                await wait_for(
                    lambda: last_goods() == final, timeout=20, interval=0.1, what="final counts"
                )
                born = [m for m in host.messages if m.kind == MessageType.NBIRTH]
                record = decode(host.messages)
    assert len(born) == 1
    _check(record.arrivals, backlog, to_millis(born[0].payload.timestamp), final)


def _check(
    arrivals: list[Arrival],
    backlog: set[tuple[str, str, int]],
    born_ms: int,
    final: dict[str, int],
) -> None:
    keys = [a.key for a in arrivals]
    assert len(keys) == len(set(keys)), "a sample arrived twice"
    arrived = {a.key: a for a in arrivals}
    # The hour of history arrived, all of it flagged historical ...
    assert backlog <= arrived.keys()
    assert all(arrived[key].historical for key in backlog)
    # ... so did what the agent buffered before its birth; nothing polled before it is "live".
    assert any(a.historical and a.key not in backlog for a in arrivals)
    assert all(a.ts_ms >= born_ms for a in arrivals if not a.historical)

    # Interleaved: live samples arrived, from many polls, before the backlog's last sample.
    last_historical = max(i for i, a in enumerate(arrivals) if a.historical)
    live_before = {a.ts_ms for a in arrivals[:last_historical] if not a.historical}
    assert len(live_before) >= 5, f"live data waited for the backlog ({len(live_before)} polls)"

    for device, last in final.items():
        for historical in (True, False):
            stream = [a for a in arrivals if a.device == device and a.historical == historical]
            stamps = [a.ts_ms for a in stream]
            assert stamps == sorted(stamps), f"{device} historical={historical} out of order"
            goods = [a.value for a in stream if a.metric == GOOD]
            assert goods == sorted(goods), f"{device}: the count went back"
        live_goods = [a.value for a in arrivals if a.device == device and a.metric == GOOD]
        assert last in live_goods
