"""Metric names that carry production meaning, and the machine state codes.

An edge tag map may publish any metric; the cloud derives counts and states from these names.
"""

from enum import IntEnum
from typing import Final

GOOD_COUNT: Final = "Production/GoodCount"
"""Absolute good-part counter (uint32, monotonic; a drop means the PLC reset it)."""
SCRAP_COUNT: Final = "Production/ScrapCount"
"""Absolute scrap counter (uint32, monotonic; a drop means the PLC reset it)."""
MACHINE_STATE: Final = "Production/State"
"""Machine state code, a `MachineState`."""
FAULT_CODE: Final = "Production/FaultCode"
"""Active fault code, 0 when none."""
CYCLE_TIME_MS: Final = "Production/CycleTimeMs"
"""Duration of the last completed cycle, milliseconds."""
TEMPERATURE: Final = "Process/Temperature"
"""Process temperature, degrees Celsius."""

COUNTER_METRICS: Final = frozenset({GOOD_COUNT, SCRAP_COUNT})

# Sparkplug node metrics (specification names).
BD_SEQ: Final = "bdSeq"
NODE_REBIRTH: Final = "Node Control/Rebirth"

COUNTER_MODULUS: Final = 2**32
"""PLC counters are uint32: they roll over to 0 after 2**32 - 1."""


class MachineState(IntEnum):
    """The state code a machine's PLC reports."""

    IDLE = 0
    RUNNING = 1
    DOWN = 2
