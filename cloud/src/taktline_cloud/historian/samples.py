"""The sample: one value of one machine metric at one instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

SampleValue = Decimal | bool | str | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one machine metric; (machine, metric, timestamp) is its identity."""

    machine: str
    """Machine code = Sparkplug device id, e.g. "M1"."""
    metric: str
    """Metric name, e.g. `taktline_contract.metrics.GOOD_COUNT`."""
    timestamp: datetime
    """Aware UTC, millisecond precision."""
    value: SampleValue
    """Numbers are exact Decimals (floats converted via `Decimal(repr(f))`)."""
    is_historical: bool = False
