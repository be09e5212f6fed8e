"""kill -9 at random moments while polling, publishing and replaying: nothing accepted is lost.

Real parts: the agent as its own process (``python -m taktline_edge run``), two pymodbus PLCs
whose counters step every 10 ms, a Mosquitto that is sometimes stopped (the agent buffers) and
started again (it replays), and a persistent Sparkplug host recording everything.

The agent is killed with SIGKILL several times, each at a seeded-random moment of a phase
(starting up, publishing live, buffering with the broker down, replaying a backlog), and started
again. After each kill the outbox file is read as the next agent will find it (a copy of the
database and its WAL). At the end:

* every sample any of those outbox files held reached the host (nothing accepted is lost);
* per device and stream (live / historical, as flagged on the wire), samples arrive in order and
  the counters never go backwards;
* a sample that arrived twice is exactly accounted for: a byte-identical QoS 1 redelivery by the
  broker, or a row sent again by a later session, flagged historical: an unacknowledged row, or
  an acknowledged one kept for the replay window (60 s) and re-armed because the host may have
  lost it (after a kill, the row was in that kill's outbox file; after a broker stop, its PUBACK
  never came or the broker's restart lost it);
* each PLC's final counter value arrives.

The seed is printed; ``TAKTLINE_KILL_SEED=<seed>`` repeats a run's choices.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.edge_process import (
    GOOD,
    AgentProcess,
    Arrival,
    OutboxRow,
    OutboxWatcher,
    counter_config,
    decode,
    outbox_rows,
    plc_count,
    run_line,
    write_config,
)
from tests.edge_support import SparkplugHost, plc
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

PHASES = ("startup", "publish", "publish", "buffer", "buffer", "replay", "replay", "replay")
"""One kill in each; their order is shuffled by the seed."""
BACKLOG = 6000
"""Rows buffered before a replay: its drain outlasts the random delay before the kill."""


@dataclass
class Kill:
    """One kill: in which phase, after what delay, and the outbox it left."""

    phase: str
    delay_s: float
    rows: list[OutboxRow]


async def test_random_kills_lose_nothing_the_outbox_accepted(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    seed = int(os.environ.get("TAKTLINE_KILL_SEED", random.randrange(2**32)))
    print(f"kill seed {seed} (TAKTLINE_KILL_SEED={seed} repeats it)")
    rng = random.Random(seed)
    phases = list(PHASES)
    rng.shuffle(phases)
    outbox = tmp_path / "outbox.db"
    kills: list[Kill] = []
    broker_stops = 0
    async with plc() as m1, plc() as m2, SparkplugHost(mosquitto.port, persistent=True) as host:
        plcs = {"M1": m1, "M2": m2}
        config = counter_config(mosquitto.port, {d: s.port for d, s in plcs.items()}, outbox)
        agent = AgentProcess(write_config(config, tmp_path / "edge.yaml"))
        broker_up = True

        async def set_broker(up: bool) -> None:
            nonlocal broker_up, broker_stops
            if up and not broker_up:
                await asyncio.to_thread(mosquitto.start)
            elif not up and broker_up:
                broker_stops += 1
                await asyncio.to_thread(mosquitto.stop)
            broker_up = up

        def depth(h: dict[str, Any]) -> int:
            return int(h["outbox"]["depth"])

        count = [0]
        watcher = OutboxWatcher(outbox)
        try:
            async with asyncio.TaskGroup() as line:
                running = line.create_task(run_line(plcs, count), name="line")
                watching = line.create_task(watcher.run(), name="outbox-watcher")
                for phase in phases:
                    delay = 0.0
                    if phase == "startup":
                        await set_broker(True)
                        delay = rng.uniform(0.0, 1.5)
                        await agent.start()
                        await asyncio.sleep(delay)  # the random moment (not a synchronisation)
                    else:
                        if not agent.running:
                            await agent.start()
                        if phase == "publish":
                            await set_broker(True)
                            await agent.wait_health(
                                lambda h: h["mqtt"]["live"] and h["mqtt"]["samples_published"],
                                "publishing live",
                            )
                            delay = rng.uniform(0.0, 0.5)
                        elif phase == "buffer":
                            await set_broker(False)
                            start = depth(await agent.wait_health(lambda h: True, "health"))
                            await agent.wait_health(
                                lambda h, s=start: depth(h) > s + 200, "buffering"
                            )
                            delay = rng.uniform(0.0, 0.5)
                        else:  # replay: a backlog, then the broker back
                            await set_broker(False)
                            await agent.wait_health(lambda h: depth(h) > BACKLOG, "a backlog")
                            await set_broker(True)
                            await agent.wait_health(lambda h: h["mqtt"]["live"], "born again")
                            delay = rng.uniform(0.0, 0.05)  # within the backlog's drain
                        await asyncio.sleep(delay)  # the random moment (not a synchronisation)
                    await agent.kill()
                    kill = Kill(phase, delay, outbox_rows(outbox))
                    kills.append(kill)
                    print(
                        f"killed while {phase} after {delay:.3f} s: outbox held"
                        f" {len(kill.rows)} rows ({sum(r.historical for r in kill.rows)}"
                        " historical)"
                    )

                await set_broker(True)
                await agent.start()
                await agent.wait_health(lambda h: h["mqtt"]["live"], "live at the end")
                running.cancel()
                watching.cancel()
            final = {device: await plc_count(server) for device, server in plcs.items()}

            def last_goods() -> dict[str, Any]:
                last: dict[str, Any] = {}
                for a in decode(host.messages).arrivals:
                    if a.metric == GOOD and a.value == final[a.device]:
                        last[a.device] = a.value
                return last

            await wait_for(
                lambda: last_goods() == final, timeout=30, interval=0.1, what="final counts"
            )
            await agent.wait_health(lambda h: depth(h) == 0, "outbox drained")
            assert await agent.stop() == 0
        finally:
            await agent.close()
            print(agent.log(200))  # shown when the test fails

    record = decode(host.messages)
    assert any(k.phase == "replay" and any(r.historical for r in k.rows) for k in kills)

    # Duplicates, exactly accounted for.
    first: dict[tuple[str, str, int], Arrival] = {}
    in_kill_files = {(r.device, r.metric, r.ts_ms) for k in kills for r in k.rows}
    resent = Counter[str]()
    unique: list[Arrival] = []
    for a in record.arrivals:
        key = a.key
        earlier = first.get(key)
        if earlier is None:
            first[key] = a
            unique.append(a)
            continue
        assert a.value == earlier.value, f"{key}: two different values"
        assert a.session > earlier.session, f"{key}: sent twice in one session"
        assert a.historical, f"{key}: sent again, so it must be flagged historical"
        if key in in_kill_files:
            resent["after a kill"] += 1
        else:
            assert broker_stops, f"{key}: resent with neither a kill nor a broker stop"
            resent["after a broker stop"] += 1
    print(
        f"{len(record.arrivals)} samples received, {len(unique)} unique;"
        f" {record.redelivered} DDATA redelivered by the broker; resent: {dict(resent)}"
    )

    # Nothing any outbox held is lost: every row reached the host with its value.
    for kill in kills:
        missing = [
            r
            for r in kill.rows
            if (r.device, r.metric, r.ts_ms) not in first
            or str(first[(r.device, r.metric, r.ts_ms)].value) != r.value
        ]
        assert not missing, (
            f"{len(missing)} rows of the outbox killed while {kill.phase}: {missing[:5]}"
        )
    # ... nor any row seen in it while the agent ran (a row deleted before its PUBACK would be).
    lost = [
        (key, value)
        for key, value in watcher.seen.items()
        if key not in first or str(first[key].value) != value
    ]
    assert watcher.reads > 50
    assert not lost, f"{len(lost)} rows seen in the outbox never arrived: {lost[:5]}"

    # Order per device and stream; counters never go backwards.
    for device, last in final.items():
        for historical in (False, True):
            stream = [a for a in unique if a.device == device and a.historical == historical]
            stamps = [a.ts_ms for a in stream]
            assert stamps == sorted(stamps), f"{device} historical={historical}: out of order"
            for metric in {a.metric for a in stream}:
                values = [a.value for a in stream if a.metric == metric]
                assert values == sorted(values), f"{device} {metric}: a counter went back"
        merged = sorted((a for a in unique if a.device == device), key=lambda a: a.ts_ms)
        goods = [a.value for a in merged if a.metric == GOOD]
        assert goods == sorted(goods), f"{device}: the good count went back"
        assert goods[-1] == last, f"{device}: the final count arrived last"
