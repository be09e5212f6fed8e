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


def _float32_text(value: float) -> str:
    """The shortest decimal text that reads back as the same float32 (62.1, not 62.0999984741)."""
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return text
    return repr(value)


def to_sample(machine: str, name: str, metric: Metric, payload_timestamp: datetime) -> Sample:
    """The sample of one device metric: its own timestamp when it has one, else the payload's."""
    return Sample(
        machine=machine,
        metric=name,
        timestamp=metric.timestamp or payload_timestamp,
        value=sample_value(metric),
        is_historical=metric.is_historical,
    )
