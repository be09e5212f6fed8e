"""The outbox at its bound (refuse / drop oldest, never silent) and after a torn or garbled file."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import OutboxFullError
from taktline_edge.outbox import Outbox, Sample

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
BOUND = 64 * 1024


def _sample(n: int, device: str = "M1") -> Sample:
    return Sample(
        device, "Production/GoodCount", T0 + timedelta(milliseconds=n), n, DataType.UINT32
    )


def _fill(outbox: Outbox) -> int:
    appended = 0
    while outbox.size_bytes() < BOUND:
        outbox.append([_sample(appended + i) for i in range(100)])
        appended += 100
    return appended


def test_refuse_policy_raises_counts_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=BOUND) as outbox:
        appended = _fill(outbox)
        assert not outbox.full
        with caplog.at_level(logging.WARNING, logger="taktline_edge.outbox"):
            for _ in range(3):
                with pytest.raises(OutboxFullError):
                    outbox.append([_sample(appended), _sample(appended + 1)])
            assert outbox.full
            assert outbox.refused == 6
            assert outbox.dropped() == 0
            outbox.delete(r.id for r in outbox.oldest(10**6))
            outbox.append([_sample(1)])
        assert not outbox.full
        messages = [r.getMessage() for r in caplog.records]
        assert sum("is full" in m and "refusing" in m for m in messages) == 1
        assert sum("has room again" in m for m in messages) == 1


def test_drop_oldest_policy_keeps_the_newest_and_counts_the_dropped(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_bytes=BOUND, when_full="drop_oldest") as outbox:
        appended = _fill(outbox)
        for n in range(appended, appended + 5000):
            outbox.append([_sample(n)])
        assert outbox.full
        rows = outbox.oldest(10**6)
        values = [r.sample.value for r in rows]
        assert values[-1] == appended + 4999, "the newest sample is kept"
        assert values == sorted(values), "order is kept"
        assert values == list(range(values[0], appended + 5000)), "only the oldest went"
        assert outbox.dropped() == values[0]
        assert outbox.size_bytes() < BOUND + 16 * 1024
        outbox.delete(r.id for r in rows)
        assert not outbox.full, "a drain ends the full state"
    with Outbox(path, max_bytes=BOUND, when_full="drop_oldest") as outbox:
        assert outbox.dropped() == values[0], "the counter survives a restart"


def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="when_full"):
        Outbox(tmp_path / "o.db", when_full="ignore")  # type: ignore[arg-type]


def test_oldest_timestamp_and_kind_filter(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        assert outbox.oldest_timestamp() is None
        outbox.append([_sample(5)], historical=True)
        outbox.append([_sample(7)])
        outbox.append([_sample(9)], historical=True)
        assert outbox.oldest_timestamp() == _sample(5).timestamp
        assert [r.sample.value for r in outbox.oldest(10, historical=True)] == [5, 9]
        assert [r.sample.value for r in outbox.oldest(10, historical=False)] == [7]


def _written(path: Path, count: int) -> dict[str, int]:
    with Outbox(path) as outbox:
        for start in range(0, count, 500):
            outbox.append([_sample(n) for n in range(start, min(count, start + 500))])
        bd = [outbox.next_bd_seq() for _ in range(3)]
        aliases = outbox.aliases("M1", ["a", "b"])
    assert bd == [0, 1, 2]
    return aliases


def test_a_truncated_file_is_moved_aside_and_its_readable_rows_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    aliases = _written(path, 20_000)
    size = path.stat().st_size
    with path.open("r+b") as f:  # a power cut that lost the file's tail
        f.truncate(size * 2 // 3)
    with caplog.at_level(logging.ERROR, logger="taktline_edge.outbox"), Outbox(path) as outbox:
        assert outbox.recovered_from is not None
        assert outbox.recovered_from.exists()
        assert outbox.recovered_from.name.startswith("o.db.corrupt-")
        values = [r.sample.value for r in outbox.oldest(10**6)]
        assert 0 < len(values) < 20_000
        assert values == sorted(values)
        assert values[0] == 0
        assert outbox.next_bd_seq() == 3, "bdSeq is not reused"
        assert outbox.aliases("M1", ["a", "b"]) == aliases
        outbox.append([_sample(99_999)])  # and the fresh file works
    assert any("was corrupt" in r.getMessage() for r in caplog.records)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_a_garbled_page_costs_only_unreadable_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    _written(path, 20_000)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
    with Outbox(path) as outbox:
        assert outbox.recovered_from is not None
        values = [r.sample.value for r in outbox.oldest(10**6)]
    assert values == sorted(values)
    assert 0 < len(values) < 20_000
    assert 19_999 in values or 0 in values


def test_garbage_is_not_a_reason_to_refuse_to_start(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not an SQLite database" * 1000)
    with Outbox(path) as outbox:
        assert outbox.recovered_from is not None
        assert outbox.depth() == 0
        assert outbox.next_bd_seq() == 0
        outbox.append([_sample(1)])
        assert outbox.depth() == 1
