"""The durable outbox (real SQLite): order, delete after acknowledgement, flags, node state."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import OutboxError, OutboxFullError
from taktline_edge.outbox import Outbox, Sample

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _sample(n: int, device: str = "M1", metric: str = "Production/GoodCount") -> Sample:
    return Sample(device, metric, T0 + timedelta(milliseconds=n), n, DataType.UINT32)


def test_samples_come_back_oldest_first_and_go_only_when_deleted(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        ids = outbox.append([_sample(1), _sample(2, "M2")])
        ids += outbox.append([_sample(3)])
        assert ids == sorted(ids)
        rows = outbox.oldest(10)
        assert [r.id for r in rows] == ids
        assert [r.sample for r in rows] == [_sample(1), _sample(2, "M2"), _sample(3)]
        assert outbox.oldest(2) == rows[:2]
        # Reading is not consuming: only an acknowledged (deleted) row leaves.
        assert outbox.depth() == 3
        outbox.delete([ids[0], ids[2]])
        assert [r.id for r in outbox.oldest(10)] == [ids[1]]
        outbox.delete([ids[1], ids[1]])  # a repeated delete is harmless
        assert outbox.depth() == 0
        # Ids keep increasing after the table emptied: order survives draining.
        assert outbox.append([_sample(4)])[0] > ids[-1]


def test_values_round_trip_exactly(tmp_path: Path) -> None:
    samples = [
        Sample("M1", "a", T0, 2**64 - 1, DataType.UINT64),
        Sample("M1", "b", T0, -(2**63), DataType.INT64),
        Sample("M1", "c", T0, 61.099998474121094, DataType.FLOAT),
        Sample("M1", "d", T0, Decimal("62.5"), DataType.DOUBLE),
        Sample("M1", "e", T0, True, DataType.BOOLEAN),
        Sample("M1", "f", T0, None, DataType.UINT16),
        Sample("M1", "g", T0, "WO-4711", DataType.STRING),
        Sample("M1", "h", T0, "", DataType.STRING),
        Sample("M1", "i", T0, "1", DataType.STRING),
    ]
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append(samples)
        values = [r.sample.value for r in outbox.oldest(10)]
    assert values == [2**64 - 1, -(2**63), 61.099998474121094, 62.5, True, None, "WO-4711", "", "1"]


def test_historical_flags(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append([_sample(1)], historical=False)
        outbox.append([_sample(2)], historical=True)
        assert [r.historical for r in outbox.oldest(10)] == [False, True]
        assert outbox.mark_all_historical() == 1
        outbox.append([_sample(3)])
        assert [r.historical for r in outbox.oldest(10)] == [True, True, False]


def test_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "o.db"
    with Outbox(path) as outbox:
        outbox.append([_sample(n) for n in range(100)])
    with Outbox(path) as outbox:
        assert [r.sample.value for r in outbox.oldest(1000)] == list(range(100))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bd_seq_is_persistent_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        assert [outbox.next_bd_seq() for _ in range(3)] == [0, 1, 2]
    with Outbox(path) as outbox:
        assert outbox.next_bd_seq() == 3, "a restart never reuses a bdSeq"
        seen = [outbox.next_bd_seq() for _ in range(252)]
        assert seen[-1] == 255
        assert outbox.next_bd_seq() == 0


def test_aliases_are_stable_and_unique_across_devices(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        m1 = outbox.aliases("M1", ["a", "b"])
        m2 = outbox.aliases("M2", ["a", "b"])
    assert len(set(m1.values()) | set(m2.values())) == 4
    assert 0 not in m1.values()
    with Outbox(path) as outbox:
        assert outbox.aliases("M1", ["a", "b"]) == m1
        extended = outbox.aliases("M1", ["c", "a"])
    assert extended["a"] == m1["a"]
    assert extended["c"] not in {*m1.values(), *m2.values()}


def test_a_full_outbox_refuses_new_samples(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=64 * 1024) as outbox:
        appended = 0
        while outbox.size_bytes() < 64 * 1024:
            outbox.append([_sample(appended + i) for i in range(100)])
            appended += 100
        with pytest.raises(OutboxFullError, match="reached 65536 bytes"):
            outbox.append([_sample(appended)])
        assert [r.sample.value for r in outbox.oldest(10**6)] == list(range(appended))
        depth = outbox.depth()
        assert 0 < depth < 100_000
        outbox.delete(r.id for r in outbox.oldest(depth))
        outbox.append([_sample(1)])  # room again once drained
        assert outbox.depth() == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(OutboxError, match="newer than this agent"):
        Outbox(path)
