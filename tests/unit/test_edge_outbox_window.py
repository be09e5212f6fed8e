"""The outbox's replay window (real SQLite): sent rows are kept, purged after the window, re-armed.

A broker's PUBACK is not end to end (Sparkplug hosts use clean sessions), so acknowledged rows
stay for `replay_window_s` and can be made unsent again when the host may have lost them.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taktline_contract.sparkplug import DataType
from taktline_edge import outbox as outbox_module
from taktline_edge.config import EdgeConfig, parse_config
from taktline_edge.errors import EdgeConfigError, OutboxError, OutboxFullError
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
from tests.support import wait_for

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
SENT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
"""When the tests' rows were acknowledged (a manual clock: the window is not waited for)."""
BOUND = 64 * 1024


def _sample(n: int, device: str = "M1") -> Sample:
    return Sample(
        device, "Production/GoodCount", T0 + timedelta(milliseconds=n), n, DataType.UINT32
    )


def _values(outbox: Outbox, historical: bool | None = None) -> list[Any]:
    return [r.sample.value for r in outbox.oldest(10**6, historical)]


def test_sent_rows_are_kept_but_no_longer_waiting(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        assert outbox.replay_window_s == 60
        ids = outbox.append([_sample(n) for n in range(5)])
        outbox.mark_sent(ids[:3], at=SENT)
        assert _values(outbox) == [3, 4]
        assert _values(outbox, historical=False) == [3, 4]
        assert outbox.depth() == 2, "depth counts unsent rows only"
        assert outbox.retained() == 3
        assert outbox.oldest_timestamp() == _sample(3).timestamp, "age of the oldest unsent"
        outbox.mark_sent(ids[3:], at=SENT)
        assert outbox.oldest_timestamp() is None
        assert outbox.depth() == 0
        assert outbox.retained() == 5
        outbox.mark_sent(ids, at=SENT + timedelta(seconds=30))  # an ack repeated: no change
        assert outbox.purge_sent(SENT + timedelta(seconds=1)) == 5, "sent at SENT, not later"


def test_a_window_of_zero_deletes_at_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", replay_window_s=0) as outbox:
        ids = outbox.append([_sample(n) for n in range(5)])
        outbox.mark_sent(ids)
        assert outbox.retained() == 0
        assert outbox.depth() == 0
        assert outbox.rearm() == 0


def test_purge_deletes_only_rows_sent_before_the_window(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        count = 12_000  # more than one purge batch
        ids = outbox.append([_sample(n) for n in range(count + 100)])
        outbox.mark_sent(ids[:count], at=SENT)
        outbox.mark_sent(ids[count:], at=SENT + timedelta(seconds=60))
        assert outbox.purge_sent(SENT) == 0, "sent at the cutoff: still in the window"
        assert outbox.purge_sent(SENT + timedelta(seconds=59)) == count
        assert outbox.retained() == 100
        assert outbox.rearm() == 100, "only the rows in the window are left to re-arm"
        assert _values(outbox) == list(range(count, count + 100))


def test_rearm_brings_rows_back_historical_in_their_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        backlog = outbox.append([_sample(n) for n in range(10)], historical=True)
        live = outbox.append([_sample(n) for n in range(10, 20)])
        # The drain sent the live rows and half the backlog, a minute apart.
        outbox.mark_sent(backlog[:5], at=SENT)
        outbox.mark_sent(live[:6], at=SENT + timedelta(seconds=60))
        assert _values(outbox, historical=True) == [5, 6, 7, 8, 9]
        assert _values(outbox, historical=False) == [16, 17, 18, 19]

        assert outbox.rearm(since=SENT + timedelta(seconds=30)) == 6
        # The re-armed live rows are historical now, in id order with the rest of the backlog.
        assert _values(outbox, historical=True) == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        assert _values(outbox, historical=False) == [16, 17, 18, 19]
        assert outbox.retained() == 5
        assert outbox.rearm(since=SENT + timedelta(seconds=30)) == 0, "nothing twice"
        assert outbox.rearm() == 5, "None: every retained row"
        assert _values(outbox) == list(range(20))
        assert outbox.depth() == 20
        assert outbox.mark_all_historical() == 4, "at a birth only unsent live rows change"


def test_retained_rows_survive_a_restart_and_are_re_armed_then(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        ids = outbox.append([_sample(n) for n in range(10)])
        outbox.mark_sent(ids[:7], at=SENT)
    with Outbox(path) as outbox:
        assert outbox.retained() == 7
        assert _values(outbox) == [7, 8, 9]
        assert outbox.rearm() == 7  # what the agent does at its start
        rows = outbox.oldest(100)
        assert [r.sample.value for r in rows] == list(range(10))
        assert [r.historical for r in rows] == [True] * 7 + [False] * 3


_V2_SCHEMA = """
CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    datatype INTEGER NOT NULL,
    value TEXT,
    historical INTEGER NOT NULL CHECK (historical IN (0, 1))
);
CREATE TABLE node_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE aliases (
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    alias INTEGER NOT NULL CONSTRAINT aliases_alias_unique UNIQUE,
    PRIMARY KEY (device, metric)
);
"""


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_file_is_migrated_in_place_its_rows_unsent(tmp_path: Path, version: int) -> None:
    path = tmp_path / "o.db"
    db = sqlite3.connect(path, isolation_level=None)
    index = "CREATE INDEX samples_by_kind ON samples (historical, id);" if version == 2 else ""
    db.executescript(f"{_V2_SCHEMA} {index} PRAGMA user_version = {version};")
    db.executemany(
        "INSERT INTO samples (device, metric, ts_ms, datatype, value, historical)"
        " VALUES ('M1', 'Good', ?, 7, ?, ?)",
        [(1_795_000_000_000 + n, str(n), n % 2) for n in range(6)],
    )
    db.execute("INSERT INTO node_state VALUES ('next_bd_seq', 42)")
    db.execute("INSERT INTO aliases VALUES ('M1', 'Good', 3)")
    db.close()

    with Outbox(path) as outbox:
        assert _values(outbox) == list(range(6)), "every row kept, waiting"
        assert _values(outbox, historical=True) == [1, 3, 5]
        assert outbox.next_bd_seq() == 42
        assert outbox.aliases("M1", ["Good"]) == {"Good": 3}
        outbox.mark_sent([r.id for r in outbox.oldest(2)], at=SENT)
        assert outbox.depth() == 4
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"samples_unsent", "samples_sent"} <= indexes
        assert "samples_by_kind" not in indexes
        assert db.execute("SELECT count(*) FROM samples WHERE sent_ms IS NOT NULL").fetchone() == (
            2,
        )
    db.close()
    with Outbox(path) as outbox:  # and opening a version 3 file again changes nothing
        assert outbox.retained() == 2


def _fill(outbox: Outbox) -> int:
    appended = 0
    while outbox.size_bytes() < BOUND:
        outbox.append([_sample(appended + i) for i in range(100)])
        appended += 100
    return appended


@pytest.mark.parametrize("when_full", ["refuse", "drop_oldest"])
def test_at_the_bound_sent_rows_make_room_first(tmp_path: Path, when_full: str) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=BOUND, when_full=when_full) as outbox:  # type: ignore[arg-type]
        appended = _fill(outbox)
        sent = [r.id for r in outbox.oldest(appended // 2)]
        outbox.mark_sent(sent, at=SENT)
        waiting = _values(outbox)
        # Room for as much again as was sent, without refusing or dropping an unsent row.
        for n in range(appended, appended + len(sent) // 2, 10):
            outbox.append([_sample(n + i) for i in range(10)])
        assert not outbox.full
        assert outbox.refused == 0
        assert outbox.dropped() == 0
        assert outbox.retained() < len(sent), "sent rows were purged"
        assert _values(outbox)[: len(waiting)] == waiting, "every unsent row kept"
        assert outbox.size_bytes() < BOUND + 16 * 1024

        # Once no sent row is left, the policy applies to unsent ones.
        for n in range(10**6, 10**6 + appended * 2, 100):
            try:
                outbox.append([_sample(n + i) for i in range(100)])
            except OutboxFullError:
                break
        assert (outbox.full, outbox.retained()) == (True, 0)
        if when_full == "refuse":
            assert outbox.refused == 100
        else:
            assert outbox.dropped() > 0
        # While full, acknowledged rows are deleted at once: the drain ends the full state.
        outbox.mark_sent([r.id for r in outbox.oldest(10**6)], at=SENT)
        assert outbox.retained() == 0
        assert not outbox.full


def test_a_full_disk_purges_sent_rows(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.disk_full_hold_s = 0.0
        ids = outbox.append([_sample(n) for n in range(3000)])
        outbox.mark_sent(ids, at=SENT)
        pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
        outbox._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(OutboxFullError, match="the disk is full"):  # no page more ...
            outbox.append([_sample(n) for n in range(10_000, 10_500)])
        assert outbox.retained() == 0, "... so the sent rows gave theirs"
        for n in range(10_000, 12_000, 500):  # to unsent rows: as many again fit now
            outbox.append([_sample(n + i) for i in range(500)])
        assert outbox.depth() == 2000


def _cost(outbox: Outbox, read: Callable[[], object]) -> int:
    """SQLite virtual machine steps (in thousands) that `read` takes."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    outbox._db.set_progress_handler(count, 1000)
    try:
        read()
    finally:
        outbox._db.set_progress_handler(None, 1000)
    return steps[0]


def test_reading_the_waiting_rows_does_not_step_over_the_sent_ones(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append([_sample(n) for n in range(20)], historical=True)
        outbox.append([_sample(n) for n in range(20, 40)])
        reads: dict[str, Callable[[], object]] = {
            "oldest": lambda: outbox.oldest(5),
            "oldest live": lambda: outbox.oldest(5, historical=False),
            "oldest historical": lambda: outbox.oldest(5, historical=True),
            "oldest timestamp": outbox.oldest_timestamp,
            "depth": outbox.depth,
        }
        before = {name: _cost(outbox, read) for name, read in reads.items()}
        # A window's worth of sent rows, ahead of the waiting ones (lower ids) ...
        for start in range(0, 200_000, 20_000):
            ids = outbox.append([_sample(n) for n in range(start, start + 20_000)])
            outbox.mark_sent(ids, at=SENT)
        for stream in (True, False):
            outbox.mark_sent([r.id for r in outbox.oldest(1000, stream)], at=SENT)
        outbox.append([_sample(n) for n in range(20)], historical=True)
        outbox.append([_sample(n) for n in range(20, 40)])
        assert outbox.retained() == 200_040
        after = {name: _cost(outbox, read) for name, read in reads.items()}
    # ... cost the reads nothing: a scan over them would take hundreds of thousands of steps.
    assert after == before
    assert max(after.values()) <= 1


async def test_the_async_outbox_marks_purges_and_re_arms(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", replay_window_s=5) as sync:
        outbox = AsyncOutbox(sync)
        assert outbox.replay_window_s == 5
        ids = await outbox.append([_sample(n) for n in range(4)])
        await outbox.mark_sent(ids)
        assert sync.depth() == 0
        assert await outbox.purge_sent(datetime.now(UTC) - timedelta(seconds=5)) == 0
        assert await outbox.rearm(datetime.now(UTC) - timedelta(seconds=5)) == 4
        await outbox.mark_sent(ids[:2])
        assert await asyncio.to_thread(sync.purge_sent, datetime.now(UTC) + timedelta(1)) == 2


@pytest.mark.parametrize("window", [-1.0, math.inf, math.nan])
def test_a_window_that_is_no_duration_is_refused(tmp_path: Path, window: float) -> None:
    with pytest.raises(ValueError, match="replay_window_s must be a number of seconds"):
        Outbox(tmp_path / "o.db", replay_window_s=window)


def _config(**outbox: object) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "sparkplug": {"group_id": "P", "edge_node_id": "GW", "primary_host_id": "H"},
            "mqtt": {"host": "127.0.0.1", "client_id": "gw"},
            "outbox": {"path": "o.db", **outbox},
            "devices": [
                {
                    "id": "M1",
                    "modbus": {"host": "127.0.0.1"},
                    "tags": [{"metric": "Count", "address": 0, "type": "uint32"}],
                }
            ],
        }
    )


_YAML = """\
sparkplug: {group_id: P, edge_node_id: GW, primary_host_id: H}
mqtt: {host: 127.0.0.1, client_id: gw}
outbox:
  path: o.db
  replay_window_s: WINDOW
devices:
  - id: M1
    modbus: {host: 127.0.0.1}
    tags: [{metric: Count, address: 0, type: uint32}]
"""


def test_the_window_is_configured_under_outbox() -> None:
    assert _config().outbox.replay_window_s == 60
    assert _config(replay_window_s=0).outbox.replay_window_s == 0
    assert parse_config(_YAML.replace("WINDOW", "2.5")).outbox.replay_window_s == 2.5
    for value, problem in [
        ("-1", "Input should be greater than or equal to 0 (got -1)"),
        ("7200", "Input should be less than or equal to 3600 (got 7200)"),
        ("a minute", "Input should be a valid number"),
        (".nan", "Input should be a finite number"),
    ]:
        with pytest.raises(EdgeConfigError) as caught:
            parse_config(_YAML.replace("WINDOW", value), source="edge.yaml")
        expected = f"edge.yaml:5: outbox.replay_window_s: {problem}"
        assert str(caught.value).startswith(expected), str(caught.value)


def test_salvaged_rows_come_back_unsent(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        for start in range(0, 20_000, 500):
            ids = outbox.append([_sample(n) for n in range(start, start + 500)])
            if start < 10_000:
                outbox.mark_sent(ids, at=SENT)
    with path.open("r+b") as f:  # a power cut that lost the file's tail
        f.truncate(path.stat().st_size * 2 // 3)
    with Outbox(path) as outbox:
        assert outbox.recovered_from is not None
        values = _values(outbox)
        assert outbox.retained() == 0
        assert values[0] == 0, "a sent row salvaged is waiting again (sent twice: harmless)"
        assert values == sorted(values)


async def test_an_append_cancelled_during_its_commit_leaves_no_unread_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At shutdown a poller is cancelled while its group commit still runs (and may fail: the
    outbox is being closed); its answer then has no reader and must not be logged as an
    unretrieved error (the agent's log would show a traceback)."""
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    settled = threading.Event()
    original = outbox_module._settle

    def settle(batch: Any, commit: Any) -> None:
        original(batch, commit)
        settled.set()

    gate = threading.Event()

    def closed(batches: object) -> list[list[int]]:
        gate.wait(10)
        raise OutboxError("the outbox is closed")

    with Outbox(tmp_path / "o.db") as sync:
        outbox = AsyncOutbox(sync)
        monkeypatch.setattr(outbox_module, "_settle", settle)
        monkeypatch.setattr(sync, "append_batches", closed)
        try:
            appending = asyncio.create_task(outbox.append([_sample(1)]))
            await wait_for(lambda: outbox.commits == 1, what="the commit running")
            appending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await appending
            gate.set()
            await wait_for(settled.is_set, what="the commit's answer handed out")
            del appending
            gc.collect()
        finally:
            gate.set()
            loop.set_exception_handler(None)
    assert unretrieved == []
