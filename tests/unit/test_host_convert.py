"""Metric → sample conversion: exact decimals, the right timestamp, historical flag."""

from __future__ import annotations

import contextlib
import math
import random
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_cloud.host.convert import UnstorableValueError, sample_value, to_sample
from taktline_contract.sparkplug import DataType, Metric

PAYLOAD_AT = datetime(2026, 11, 24, 19, 40, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [
        (DataType.UINT32, 4_294_967_295, Decimal(4_294_967_295)),
        (DataType.INT64, -(2**63), Decimal(-(2**63))),
        (DataType.DOUBLE, 0.1, Decimal("0.1")),
        (DataType.DOUBLE, 1580.25, Decimal("1580.25")),
        (DataType.DOUBLE, 1e-7, Decimal("1E-7")),
        (DataType.BOOLEAN, True, True),
        (DataType.STRING, "running", "running"),
        (DataType.UINT16, None, None),
    ],
)
def test_values_are_exact(datatype: DataType, value: object, expected: object) -> None:
    result = sample_value(Metric("m", datatype, value))  # type: ignore[arg-type]
    assert result == expected
    assert type(result) is type(expected)


def test_float32_keeps_the_digits_the_plc_meant() -> None:
    # 62.1 stored in a float32 register reads back as 62.099998474121094 in a Python float.
    as_float32 = 62.099998474121094
    assert sample_value(Metric("t", DataType.FLOAT, as_float32)) == Decimal("62.1")
    assert sample_value(Metric("t", DataType.DOUBLE, as_float32)) == Decimal("62.099998474121094")


def _shortest_float32_text(value: float) -> str:
    """Brute force: the fewest significant digits that read back as the same float32."""
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        with contextlib.suppress(OverflowError):
            if struct.pack("<f", float(text)) == packed:
                return text
    raise AssertionError(f"no text for {value!r}")


def test_float32_text_is_the_shortest_for_any_bit_pattern() -> None:
    """The fast search (from 6 digits) gives the brute force's value for normal numbers,
    subnormals, the extremes and random bit patterns."""
    rng = random.Random(20261124)
    patterns = [0x00000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x80000001, 0x3DCCCCCD]
    patterns += [rng.getrandbits(32) for _ in range(20_000)]
    for bits in patterns:
        (value,) = struct.unpack("<f", struct.pack("<I", bits))
        if not math.isfinite(value):
            continue
        metric = Metric("t", DataType.FLOAT, value)
        assert sample_value(metric) == Decimal(_shortest_float32_text(value)), hex(bits)


def test_boolean_is_not_a_number() -> None:
    assert sample_value(Metric("b", DataType.BOOLEAN, False)) is False


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_means_no_reading(value: float) -> None:
    assert sample_value(Metric("t", DataType.FLOAT, value)) is None


def test_datetime_metric_becomes_iso_utc_text() -> None:
    value = sample_value(Metric("d", DataType.DATETIME, 1_795_000_000_123))
    assert value == "2026-11-18T11:06:40.123Z"


def test_bytes_cannot_be_stored() -> None:
    with pytest.raises(UnstorableValueError, match="BYTES"):
        sample_value(Metric("blob", DataType.BYTES, b"\x00"))


def test_metric_timestamp_wins_over_payload_timestamp() -> None:
    own = PAYLOAD_AT - timedelta(minutes=3)
    metric = Metric(None, DataType.UINT32, 7, timestamp=own, alias=1, is_historical=True)
    sample = to_sample("M1", "Production/GoodCount", metric, PAYLOAD_AT)
    assert (sample.machine, sample.metric, sample.timestamp) == ("M1", "Production/GoodCount", own)
    assert sample.value == Decimal(7)
    assert sample.is_historical is True


def test_payload_timestamp_when_metric_has_none() -> None:
    sample = to_sample("M2", "x", Metric("x", DataType.UINT32, 1), PAYLOAD_AT)
    assert sample.timestamp == PAYLOAD_AT
    assert sample.is_historical is False
