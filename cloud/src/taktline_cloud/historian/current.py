"""A machine's current values: the latest sample of each metric, by sample time (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from taktline_cloud.historian.samples import Sample, SampleValue
from taktline_contract.metrics import MachineState

UNKNOWN_STATE = "unknown"


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest value of one metric of one machine."""

    timestamp: datetime
    value: SampleValue


LatestKey = tuple[str, str]
"""(machine, metric)."""


def newest(samples: Iterable[Sample]) -> dict[LatestKey, Latest]:
    """The newest sample per (machine, metric) in a batch (the first of equal timestamps wins)."""
    result: dict[LatestKey, Latest] = {}
    for sample in samples:
        key = (sample.machine, sample.metric)
        held = result.get(key)
        if held is None or sample.timestamp > held.timestamp:
            result[key] = Latest(sample.timestamp, sample.value)
    return result


def merge_latest(
    stored: Mapping[LatestKey, Latest], incoming: Mapping[LatestKey, Latest]
) -> dict[LatestKey, Latest]:
    """The entries of `incoming` newer than what is stored (a late sample changes nothing)."""
    return {
        key: latest
        for key, latest in incoming.items()
        if key not in stored or latest.timestamp > stored[key].timestamp
    }


def state_name(value: SampleValue) -> str:
    """The state code's name ("running", "idle", "down"), or "unknown"."""
    if not isinstance(value, Decimal) or not value.is_finite() or value != value.to_integral():
        return UNKNOWN_STATE
    try:
        return MachineState(int(value)).name.lower()
    except ValueError:
        return UNKNOWN_STATE


def as_decimal(value: SampleValue) -> Decimal | None:
    """The value as a number, or None when it is not one."""
    return value if isinstance(value, Decimal) else None
