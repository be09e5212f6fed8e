"""The outbox at its bound while the broker is away, and on a full disk: never a silent loss.

Real parts: the edge agent (in this process, so its counters can be read exactly; as its own
process for the disk), two pymodbus PLCs whose counters step every 10 ms, Mosquitto stopped and
started again, a Sparkplug host.

* refuse: the alarm (Outbox/Full, Outbox/Refused > 0) is in the NBIRTH once the broker is back
  and clears after the drain; every sample the outbox accepted arrives once, and the counters,
  being absolute, still end exact (the final count arrives).
* drop_oldest: Outbox/Dropped > 0 in the NBIRTH, the error is logged; the newest samples are
  kept (the oldest went) and delivered + dropped covers everything stored.
* a full disk: SQLite's own page limit (SQLITE_FULL) makes `append` raise a clear
  `OutboxFullError` (to every append a group commit carried) and the outbox recover once it
  drains; the agent, given a file size limit
  (RLIMIT_FSIZE, what a full file system looks like to SQLite), keeps running, raises the alarm,
  and delivers everything it stored once the broker is back.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taktline_contract.sparkplug import DataType, MessageType, to_millis
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig, HealthConfig
from taktline_edge.errors import OutboxError, OutboxFullError
from taktline_edge.messages import OUTBOX_DROPPED, OUTBOX_FULL, OUTBOX_REFUSED
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
from tests.edge_process import (
    GOOD,
    AgentProcess,
    Arrival,
    counter_config,
    decode,
    live_outbox_rows,
    plc_count,
    run_line,
    write_config,
)
from tests.edge_support import Plc, SparkplugHost, plc
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

BOUND = 64 * 1024
"""The smallest bound the configuration allows: about 1 300 samples, 1.2 s of this line."""


def _config(broker_port: int, plcs: dict[str, Plc], outbox: Path, **options: Any) -> EdgeConfig:
    config = counter_config(broker_port, {d: s.port for d, s in plcs.items()}, outbox, **options)
    return config.model_copy(update={"health": HealthConfig(metrics_interval_s=0.2)})


def _node_metrics(host: SparkplugHost) -> list[dict[str, Any]]:
    """Every NBIRTH/NDATA as {metric name: value} (NDATA names resolved by the NBIRTH's aliases)."""
    out: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    for message in host.messages:
        if message.kind == MessageType.NBIRTH:
            names = {m.alias: m.name for m in message.payload.metrics if m.alias and m.name}
        elif message.kind != MessageType.NDATA:
            continue
        out.append(
            {
                "kind": message.kind,
                **{(m.name or names[m.alias or 0]): m.value for m in message.payload.metrics},
            }
        )
    return out


def _unique(arrivals: list[Arrival]) -> dict[tuple[str, str, int], Arrival]:
    keys = [a.key for a in arrivals]
    assert len(keys) == len(set(keys)), "a sample arrived twice"
    return {a.key: a for a in arrivals}


def _counters_never_go_back(arrivals: list[Arrival], final: dict[str, int]) -> None:
    for device, last in final.items():
        by_time = sorted((a for a in arrivals if a.device == device), key=lambda a: a.ts_ms)
        for metric in {a.metric for a in by_time}:
            values = [a.value for a in by_time if a.metric == metric]
            assert values == sorted(values), f"{device} {metric} went back"
        assert [a.value for a in by_time if a.metric == GOOD][-1] == last


async def _finish(
    plcs: dict[str, Plc], host: SparkplugHost, line: asyncio.Task[None], depth: Callable[[], Any]
) -> dict[str, int]:
    """Stop the line; wait until the host has each PLC's final count and the outbox is empty."""
    line.cancel()
    final = {device: await plc_count(server) for device, server in plcs.items()}

    def arrived() -> bool:
        last = {a.device: a.value for a in decode(host.messages).arrivals if a.metric == GOOD}
        return last == final

    await wait_for(arrived, timeout=30, interval=0.1, what=f"the final counts {final}")
    await wait_for(depth, timeout=30, what="the outbox drained")
    return final


async def test_refuse_raises_the_alarm_and_counts_stay_exact(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.db"
    await asyncio.to_thread(mosquitto.stop)
    async with plc() as m1, plc() as m2:
        plcs = {"M1": m1, "M2": m2}
        config = _config(mosquitto.port, plcs, outbox, max_bytes=BOUND, when_full="refuse")
        async with EdgeAgent(config) as agent, asyncio.TaskGroup() as tasks:
            line = tasks.create_task(run_line(plcs, [0]), name="line")

            async def refusing() -> bool:
                o = (await agent.health())["outbox"]
                return bool(o["full"] and o["refused"] > 200)

            await wait_for(refusing, what="the outbox full and refusing")
            held = await asyncio.to_thread(live_outbox_rows, outbox)
            await asyncio.to_thread(mosquitto.start)
            async with SparkplugHost(mosquitto.port) as host:
                await host.wait(lambda: host.of(MessageType.NBIRTH), "NBIRTH")
                nbirth = _node_metrics(host)[0]
                assert nbirth["kind"] == MessageType.NBIRTH
                assert nbirth[OUTBOX_FULL] is True
                assert nbirth[OUTBOX_REFUSED] > 0
                assert nbirth[OUTBOX_DROPPED] == 0
                await host.wait(
                    lambda: any(m.get(OUTBOX_FULL) is False for m in _node_metrics(host)),
                    "the alarm cleared (NDATA Outbox/Full false) after the drain",
                )
                final = await _finish(plcs, host, line, lambda: agent.outbox_depth() == 0)
                stored = {device: status.samples for device, status in agent.devices.items()}
                record = decode(host.messages)
    arrived = _unique(record.arrivals)
    # Exact: every stored sample arrived once (refused ones were never stored) ...
    for device, count in stored.items():
        assert sum(a.device == device for a in arrived.values()) == count
    # ... among them every row the full outbox held ...
    assert held
    assert all((r.device, r.metric, r.ts_ms) in arrived for r in held)
    # ... and the counters, absolute, end exact: the refused period only lost resolution.
    _counters_never_go_back(record.arrivals, final)


async def test_drop_oldest_keeps_the_newest_and_says_so(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="taktline_edge.outbox")
    outbox = tmp_path / "outbox.db"
    await asyncio.to_thread(mosquitto.stop)
    count = [0]
    async with plc() as m1, plc() as m2:
        plcs = {"M1": m1, "M2": m2}
        config = _config(mosquitto.port, plcs, outbox, max_bytes=BOUND, when_full="drop_oldest")
        async with EdgeAgent(config) as agent, asyncio.TaskGroup() as tasks:
            first_count = count[0]
            line = tasks.create_task(run_line(plcs, count), name="line")

            async def dropping() -> bool:
                o = (await agent.health())["outbox"]
                return bool(o["full"] and o["dropped"] > 1000)

            await wait_for(dropping, what="the outbox full and dropping the oldest")
            await asyncio.to_thread(mosquitto.start)
            async with SparkplugHost(mosquitto.port) as host:
                await host.wait(lambda: host.of(MessageType.NBIRTH), "NBIRTH")
                nbirth = _node_metrics(host)[0]
                born_ms = to_millis(host.of(MessageType.NBIRTH)[0].payload.timestamp)
                assert nbirth[OUTBOX_FULL] is True
                assert nbirth[OUTBOX_DROPPED] > 0
                assert nbirth[OUTBOX_REFUSED] == 0
                final = await _finish(plcs, host, line, lambda: agent.outbox_depth() == 0)
                stored = sum(status.samples for status in agent.devices.values())
                dropped = (await agent.health())["outbox"]["dropped"]
                record = decode(host.messages)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is full" in m and "dropping oldest" in m for m in messages) >= 1
    arrived = _unique(record.arrivals)
    # Never silent: whatever was stored either arrived or is counted as dropped.
    assert len(arrived) + dropped >= stored
    assert len(arrived) < stored
    for device in plcs:
        goods = sorted(
            (a for a in arrived.values() if a.device == device and a.metric == GOOD),
            key=lambda a: a.ts_ms,
        )
        # The oldest went: the first counts polled never arrived ...
        assert goods[0].value > first_count + 20, f"{device}: the oldest samples were dropped"
        # ... the newest stayed: the backlog reaches up to the birth.
        backlog = [a for a in goods if a.historical]
        assert backlog
        assert backlog[-1].ts_ms > born_ms - 1000, f"{device}: the newest samples were kept"
    _counters_never_go_back(record.arrivals, final)


T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _fill(outbox: Outbox) -> None:
    """Append batches of 10 until the outbox raises."""
    for n in range(10_000):
        outbox.append([Sample("M1", "Good", T0, n * 10 + i, DataType.UINT32) for i in range(10)])


def test_sqlite_full_is_a_clear_error_and_the_outbox_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.disk_full_hold_s = 0.0
        # SQLite's own limit stands in for a full disk: the same SQLITE_FULL, raised on a write.
        outbox._db.execute("PRAGMA max_page_count = 40")
        with caplog.at_level(logging.ERROR, logger="taktline_edge.outbox"):
            with pytest.raises(OutboxFullError, match="the disk is full") as raised:
                _fill(outbox)
            assert isinstance(raised.value, OutboxError)
            assert "database or disk is full" in str(raised.value)
            assert outbox.full
            assert outbox.refused == 10
        assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1
        rows = outbox.oldest(10**6)
        stored = len(rows)
        assert stored > 100
        assert [r.sample.value for r in rows] == list(range(stored)), "nothing stored was lost"
        outbox.delete(r.id for r in rows)  # the drain still works on a full disk
        outbox.append([Sample("M1", "Good", T0, 1, DataType.UINT32)])
        assert not outbox.full, "room again once an append succeeds"
        assert outbox.depth() == 1


LIMIT = 768 * 1024
"""Largest file the agent process may write: a small, full file system as SQLite meets it."""


def _small_file_system() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


async def test_the_agent_keeps_running_when_the_disk_is_full(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.db"
    await asyncio.to_thread(mosquitto.stop)
    async with plc() as m1, plc() as m2:
        plcs = {"M1": m1, "M2": m2}
        config = _config(mosquitto.port, plcs, outbox)  # no bound: only the disk stops it
        agent = AgentProcess(write_config(config, tmp_path / "edge.yaml"), _small_file_system)
        try:
            async with asyncio.TaskGroup() as tasks:
                line = tasks.create_task(run_line(plcs, [0]), name="line")
                await agent.start()
                health = await agent.wait_health(
                    lambda h: h["outbox"]["full"] and h["outbox"]["refused"] > 0,
                    "the disk full: samples refused",
                )
                polls = {d: s["polls"] for d, s in health["devices"].items()}
                # Still running: polling goes on, the endpoint answers.
                await agent.wait_health(
                    lambda h: all(h["devices"][d]["polls"] > polls[d] + 10 for d in polls),
                    "polling goes on",
                )
                await asyncio.to_thread(mosquitto.start)
                async with SparkplugHost(mosquitto.port) as host:
                    await host.wait(lambda: host.of(MessageType.NBIRTH), "NBIRTH", timeout=30)
                    nbirth = _node_metrics(host)[0]
                    assert nbirth[OUTBOX_FULL] is True
                    assert nbirth[OUTBOX_REFUSED] > 0

                    async def drained() -> bool:
                        health = await agent.health()
                        return health is not None and health["outbox"]["depth"] == 0

                    final = await _finish(plcs, host, line, drained)
                    health = await agent.wait_health(lambda h: True, "health")
                    stored = {d: s["samples"] for d, s in health["devices"].items()}
                    assert await agent.stop() == 0
                    record = decode(host.messages)
        finally:
            await agent.close()
            print(agent.log(200))  # shown when the test fails
    log = "\n".join(agent.lines)
    assert "cannot be written (the disk cannot be written" in log
    assert "Traceback" not in log
    arrived = _unique(record.arrivals)
    for device, count in stored.items():
        assert sum(a.device == device for a in arrived.values()) == count
    _counters_never_go_back(record.arrivals, final)


async def test_group_commit_answers_every_append_with_its_ids_or_the_error(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as sync:
        outbox = AsyncOutbox(sync)

        async def append(device: str, n: int) -> list[int]:
            return await outbox.append([Sample(device, "Good", T0, n, DataType.UINT32)] * 3)

        ids = await asyncio.gather(*(append(f"M{n}", n) for n in range(50)))
        assert outbox.commits < 50, "appends that waited shared a commit"
        rows = {r.id: r.sample for r in sync.oldest(1000)}
        for n, batch in enumerate(ids):
            assert [(rows[i].device, rows[i].value) for i in batch] == [(f"M{n}", n)] * 3

        # No page more: the next commit (whichever appends it groups) fails for room.
        pages = sync._db.execute("PRAGMA page_count").fetchone()[0]
        sync._db.execute(f"PRAGMA max_page_count = {pages}")
        big = [Sample("M1", "Good", T0, n, DataType.UINT32) for n in range(2000)]
        results = await asyncio.gather(
            *(outbox.append(big) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, OutboxFullError) for r in results), results
        assert sync.refused == 5 * 2000
