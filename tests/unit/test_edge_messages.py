"""The edge node's Sparkplug messages: seq, births, deaths, DDATA batching of outbox rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_contract.sparkplug import DataType, Metric, decode_payload, encode_payload
from taktline_edge.messages import (
    SeqCounter,
    device_birth,
    device_data,
    device_death,
    node_birth,
    node_death,
    wire_value,
)
from taktline_edge.outbox import Sample, StoredSample
from taktline_edge.tags import Tag, TagType

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ALIASES = {
    "M1": {"Production/GoodCount": 1, "Process/Temperature": 2},
    "M2": {"Production/GoodCount": 3},
}


def _row(
    row_id: int, device: str, metric: str, value: int | float, historical: bool = False
) -> StoredSample:
    kind = DataType.FLOAT if isinstance(value, float) else DataType.UINT32
    stamp = T0 + timedelta(milliseconds=row_id)
    return StoredSample(row_id, Sample(device, metric, stamp, value, kind), historical)


def test_seq_starts_at_zero_on_birth_and_wraps_after_255() -> None:
    seq = SeqCounter()
    assert seq.reset() == 0
    numbers = [seq.next() for _ in range(300)]
    assert numbers[:3] == [1, 2, 3]
    assert numbers[254:257] == [255, 0, 1]
    assert seq.reset() == 0
    assert seq.next() == 1


def test_node_birth_and_death_share_the_bd_seq() -> None:
    birth = decode_payload(encode_payload(node_birth(T0, 7)))
    assert birth.seq == 0
    assert [(m.name, m.datatype, m.value) for m in birth.metrics] == [
        ("bdSeq", DataType.UINT64, 7),
        ("Node Control/Rebirth", DataType.BOOLEAN, False),
    ]
    death = decode_payload(encode_payload(node_death(T0, 7)))
    assert death.seq is None
    assert [(m.name, m.value) for m in death.metrics] == [("bdSeq", 7)]


def test_device_birth_names_every_metric_with_alias_and_current_value() -> None:
    tags = (
        Tag("Production/GoodCount", 0, TagType.UINT32),
        Tag("Process/Temperature", 8, TagType.INT16, scale=Decimal("0.1")),
    )
    current = {
        "Process/Temperature": Sample(
            "M1", "Process/Temperature", T0, Decimal("62.5"), DataType.DOUBLE
        )
    }
    payload = decode_payload(encode_payload(device_birth(T0, 1, tags, current, ALIASES["M1"])))
    assert payload.seq == 1
    good, temperature = payload.metrics
    assert (good.name, good.alias, good.datatype, good.value) == (
        "Production/GoodCount",
        1,
        DataType.UINT32,
        None,
    )
    assert good.is_null, "never read yet: a null, still with its datatype"
    assert (temperature.alias, temperature.datatype, temperature.value) == (
        2,
        DataType.DOUBLE,
        62.5,
    )
    assert temperature.timestamp == T0


def test_device_data_groups_per_device_in_order_with_aliases_only() -> None:
    rows = [
        _row(1, "M1", "Production/GoodCount", 10, historical=True),
        _row(2, "M2", "Production/GoodCount", 20),
        _row(3, "M1", "Process/Temperature", 61.5),
        _row(4, "M1", "Production/GoodCount", 11),
    ]
    messages, orphans = device_data(rows, ALIASES, max_metrics=250)
    assert orphans == []
    assert [(m.device, m.row_ids) for m in messages] == [("M1", (1, 3, 4)), ("M2", (2,))]
    m1 = messages[0].metrics
    assert [(m.name, m.alias, m.value, m.is_historical) for m in m1] == [
        (None, 1, 10, True),
        (None, 2, 61.5, False),
        (None, 1, 11, False),
    ]
    assert [m.timestamp for m in m1] == [r.sample.timestamp for r in (rows[0], rows[2], rows[3])]
    payload = decode_payload(encode_payload(messages[0].payload(T0, 42)))
    assert payload.seq == 42
    assert payload.metrics == m1


def test_device_data_splits_long_runs_and_drops_unknown_metrics() -> None:
    rows = [_row(i, "M1", "Production/GoodCount", i) for i in range(1, 8)]
    rows.append(_row(8, "M1", "Retired/Metric", 1))
    rows.append(_row(9, "M9", "Production/GoodCount", 1))
    messages, orphans = device_data(rows, ALIASES, max_metrics=3)
    assert [m.row_ids for m in messages] == [(1, 2, 3), (4, 5, 6), (7,)]
    assert orphans == [8, 9]
    with pytest.raises(ValueError, match="max_metrics"):
        device_data(rows, ALIASES, max_metrics=0)


def test_decimal_values_travel_as_doubles() -> None:
    assert wire_value(Decimal("62.5")) == 62.5
    assert isinstance(wire_value(Decimal("1")), float)
    assert wire_value(7) == 7
    assert wire_value(None) is None
    metric = Metric(None, DataType.DOUBLE, wire_value(Decimal("0.1")), alias=1)
    assert metric.value == 0.1


def test_device_death_carries_its_moment_and_the_node_seq_only() -> None:
    death = decode_payload(encode_payload(device_death(T0, 42)))
    assert (death.timestamp, death.seq, death.metrics) == (T0, 42, ())


def test_text_values_travel_as_sparkplug_strings() -> None:
    sample = Sample("M1", "Production/GoodCount", T0, "WO-4711", DataType.STRING)
    messages, _ = device_data([StoredSample(1, sample, False)], ALIASES, max_metrics=250)
    payload = decode_payload(encode_payload(messages[0].payload(T0, 1)))
    assert [(m.alias, m.datatype, m.value) for m in payload.metrics] == [
        (1, DataType.STRING, "WO-4711")
    ]
