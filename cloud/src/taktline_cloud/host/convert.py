"""Turn Sparkplug metrics into historian samples: exact decimals, the right timestamp."""

from __future__ import annotations

import math
import struct
from datetime import datetime
from decimal import Decimal

from taktline_cloud.errors import CloudError
from taktline_cloud.events import iso_utc
from taktline_cloud.historian.samples import Sample
from taktline_contract.sparkplug import DataType, Metric, from_millis


class UnstorableValueError(CloudError):
    """A metric value the historian has no column for (bytes, files)."""


def sample_value(metric: Metric) -> Decimal | bool | str | None:
    """The exact value of `metric` as a sample stores it; raise `UnstorableValueError` for bytes."""
    value = metric.value
    if type(value) is float and metric.datatype == DataType.DOUBLE:  # the common case first
        return Decimal(repr(value)) if math.isfinite(value) else None
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, bytes):
        raise UnstorableValueError(f"{metric.datatype.name} values are not stored")
    if metric.datatype == DataType.DATETIME and isinstance(value, int):
        return iso_utc(from_millis(value))
    if isinstance(value, int):
        return Decimal(value)
    if not math.isfinite(value):
        # A PLC float register holding NaN/inf means "no valid reading", not a number.
        return None
    if metric.datatype == DataType.FLOAT:
        return Decimal(_float32_text(value))
    return Decimal(repr(value))


_FLOAT32_MIN_NORMAL = 2.0**-126


def _float32_text(value: float) -> str:
    """The shortest decimal text that reads back as the same float32 (62.1, not 62.0999984741)."""
    packed = struct.pack("<f", value)
    # Rounded to 6 significant digits (%g drops trailing zeros), a float32 that has a shorter
    # text gives exactly that text: its error (< 6e-8 relative) is far below half a 6-digit
    # step. So 6 first, and only when that does not read back, 7 to 9 (9 always does).
    # Subnormals (below 2**-126) have fewer significant bits: there every length is tried.
    for digits in range(6 if abs(value) >= _FLOAT32_MIN_NORMAL else 1, 10):
        text = f"{value:.{digits}g}"
        if _reads_back(text, packed):
            return text
    return repr(value)


def _reads_back(text: str, packed: bytes) -> bool:
    """Whether `text` parses to the float32 `packed` (near the float32 maximum, rounding up
    can leave the float32 range: that text is not it)."""
    try:
        return struct.pack("<f", float(text)) == packed
    except OverflowError:
        return False


def to_sample(machine: str, name: str, metric: Metric, payload_timestamp: datetime) -> Sample:
    """The sample of one device metric: its own timestamp when it has one, else the payload's."""
    return Sample(
        machine=machine,
        metric=name,
        timestamp=metric.timestamp or payload_timestamp,
        value=sample_value(metric),
        is_historical=metric.is_historical,
    )
