"""A corrupt outbox after power loss: the agent starts, says what it repaired, sends what was saved.

The agent (its own process) buffers with the broker down and is stopped; the outbox file is then
damaged the way a power cut on a disk that lies about its writes leaves it, and the agent is
started with the broker back:

* WAL cut mid-frame, or garbage in a WAL frame (killed, so the WAL holds recent commits): SQLite
  keeps the WAL up to its last intact commit; the agent logs how many frames were discarded, and
  every row still readable is published;
* main file with garbage over its last pages, or cut mid-page (stopped cleanly, so every row is
  in the main file): the check at start fails, the file is moved aside (``.corrupt-<time>``), the
  readable rows are copied into a fresh file (logged with their count) and published.

Either way the agent then keeps working: live samples flow and the final count arrives. And a
row that cannot be decoded (garbage a repair let through) is discarded with an error logged,
never left to block the drain.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taktline_contract.sparkplug import DataType
from taktline_edge.outbox import Outbox, Sample
from tests.edge_process import (
    GOOD,
    AgentProcess,
    Arrival,
    OutboxRow,
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

BUFFERED = 1500
"""Rows the outbox holds before the damage, at least."""
_PAGE = 4096


def _wal_frames(wal: Path) -> tuple[int, int]:
    """(frames of the WAL's current generation, frame size) from its header and frame headers."""
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    frame = 24 + page_size
    count = 0
    for offset in range(32, len(data) - frame + 1, frame):
        if data[offset + 8 : offset + 16] == salts:
            count += 1
    return count, frame


def _damage(path: Path, kind: str) -> None:
    wal = path.with_name(path.name + "-wal")
    if kind.startswith("wal"):
        frames, frame = _wal_frames(wal)
        assert frames >= 4, f"the WAL holds only {frames} frames"
        cut = 32 + frames // 2 * frame
        with wal.open("r+b") as f:
            if kind == "wal-truncated":
                f.truncate(cut + frame // 2)  # the tail from the middle of a frame on is gone
            else:
                f.seek(cut + 24 + 100)  # inside that frame's page: its checksum fails
                f.write(b"\xa5" * 512)
        return
    assert not wal.exists(), "a clean stop leaves every row in the main file"
    size = path.stat().st_size
    with path.open("r+b") as f:
        if kind == "db-garbled-tail":
            f.seek(size - 2 * _PAGE)
            f.write(b"\x5a\xc3" * _PAGE)  # the last two pages are garbage
        else:
            f.truncate(size - _PAGE - _PAGE // 2)  # cut mid-page


@pytest.mark.parametrize(
    "kind", ["wal-truncated", "wal-garbled", "db-garbled-tail", "db-truncated"]
)
async def test_a_damaged_outbox_is_repaired_at_start_and_its_rows_sent(
    kind: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.db"
    await asyncio.to_thread(mosquitto.stop)
    async with plc() as m1, plc() as m2:
        plcs = {"M1": m1, "M2": m2}
        config = counter_config(mosquitto.port, {d: s.port for d, s in plcs.items()}, outbox)
        agent = AgentProcess(write_config(config, tmp_path / "edge.yaml"))
        count = [0]
        try:
            async with asyncio.TaskGroup() as line:
                running = line.create_task(run_line(plcs, count), name="line")
                await agent.start()
                await agent.wait_health(
                    lambda h: h["outbox"]["depth"] > BUFFERED, "buffering with the broker down"
                )
                if kind.startswith("wal"):
                    await agent.kill()  # the WAL stays, with the recent commits
                else:
                    assert await agent.stop() == 0  # checkpointed: all rows in the main file
                before = outbox_rows(outbox)
                _damage(outbox, kind)
                # What SQLite still reads through a damaged WAL is what the agent must send.
                readable = outbox_rows(outbox) if kind.startswith("wal") else None

                await asyncio.to_thread(mosquitto.start)
                async with SparkplugHost(mosquitto.port) as host:
                    await agent.start()
                    await agent.wait_health(lambda h: h["mqtt"]["live"], "born after the repair")
                    running.cancel()
                    final = {device: await plc_count(server) for device, server in plcs.items()}

                    def last_goods() -> dict[str, object]:
                        return {
                            a.device: a.value
                            for a in decode(host.messages).arrivals
                            if a.metric == GOOD and a.value == final[a.device]
                        }

                    await wait_for(
                        lambda: last_goods() == final,
                        timeout=30,
                        interval=0.1,
                        what=f"the final counts {final}",
                    )
                    await agent.wait_health(lambda h: h["outbox"]["depth"] == 0, "drained")
                    health = await agent.wait_health(lambda h: h["ok"], "healthy")
                    assert health["outbox"]["full"] is False
                    assert await agent.stop() == 0
                    record = decode(host.messages)
        finally:
            await agent.close()
            print(agent.log(200))  # shown when the test fails

    _check(tmp_path, "\n".join(agent.lines), before, readable, record.arrivals)


def _check(
    tmp_path: Path,
    log: str,
    before: list[OutboxRow],
    readable: list[OutboxRow] | None,
    arrivals: list[Arrival],
) -> None:
    """The repair was logged, every row it kept arrived, and the agent went on working."""
    assert "Traceback" not in log
    arrived = {a.key: a for a in arrivals}
    old = {(r.device, r.metric, r.ts_ms): r for r in before}
    sent_old = {key for key in arrived if key in old}
    if readable is not None:
        assert re.search(r"\d+ WAL frame\(s\) after the last intact commit were discarded", log)
        assert not list(tmp_path.glob("outbox.db.corrupt-*")), "a WAL tail is no reason to move"
        assert 0 < len(readable) < len(before), "the damage cost the WAL's tail, not more"
        missing = [r for r in readable if (r.device, r.metric, r.ts_ms) not in arrived]
        assert not missing, f"{len(missing)} readable rows never arrived: {missing[:5]}"
        assert sent_old == {(r.device, r.metric, r.ts_ms) for r in readable}
    else:
        match = re.search(r"was corrupt .*moved to (\S+); recovered (\d+) buffered samples", log)
        assert match, log
        aside, recovered = Path(match.group(1).rstrip(";")), int(match.group(2))
        assert aside.exists()
        assert aside.name.startswith("outbox.db.corrupt-")
        assert 0 < recovered < len(before), "the readable rows were saved, the damaged lost"
        assert len(sent_old) == recovered, "every recovered row was sent"
    assert all(str(arrived[key].value) == old[key].value for key in sent_old)
    # And the agent kept working: samples polled after the restart arrived live.
    assert [a for a in arrivals if a.key not in old and not a.historical], "no live samples"


def test_an_unreadable_row_is_discarded_not_a_poison_pill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row that cannot be decoded (garbage a repair let through) must not block the drain."""
    path = tmp_path / "o.db"
    t0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    with Outbox(path) as outbox:
        outbox.append([Sample("M1", "Good", t0, 1, DataType.UINT32)])
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO samples (device, metric, ts_ms, datatype, value, historical)"
            " VALUES ('M1', 'Good', 1795000000000, 7, ?, 1)",
            ("\x00\x00\x00",),
        )
    db.close()
    with Outbox(path) as outbox:
        outbox.append([Sample("M1", "Good", t0, 3, DataType.UINT32)])
        with caplog.at_level(logging.ERROR, logger="taktline_edge.outbox"):
            rows = outbox.oldest(10)
        assert [r.sample.value for r in rows] == [1, 3]
        assert outbox.depth() == 2, "the unreadable row is gone"
    assert any("1 unreadable sample row(s) discarded" in r.getMessage() for r in caplog.records)
