"""A pure, seeded process model of a flow line: machines, buffers, cycles, scrap and faults.

No I/O and no clock: model time moves only when `LineModel.step` is called, so a test can run
hours of production in milliseconds and a server can drive it from its own tick. Every machine has
its own `random.Random` derived from the plant seed and the machine id, so a run is reproducible.
Events (cycle ends, faults, repairs) are processed at their exact model time, so the counters do
not depend on how the time is cut into steps (the temperature noise does, and has its own
generator so that it cannot disturb the production draws).

The line: the first machine has an infinite raw supply; a buffer of `buffer_capacity` parts sits
between consecutive machines; a machine starts a cycle when it has an input part and room for
its output (the last machine always has room). A good part goes to the next buffer, scrap leaves
the line. Faults strike after an exponential amount of *running* time (mean `mtbf_s`) and last an
exponential repair time (mean `mttr_s`); the interrupted cycle resumes after the repair.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

from taktline_contract.metrics import COUNTER_MODULUS, MachineState
from taktline_simulators.config import MachineConfig, PlantSimConfig
from taktline_simulators.errors import IllegalValueError, SimulatorError

FAULT_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {11: "material jam", 12: "drive overload", 13: "sensor fault", 14: "safety door opened"}
)
"""Codes a random fault may show in the fault-code register (0 means no fault)."""

DEFAULT_SPEED_PCT: Final = 100
MAX_SPEED_PCT: Final = 1000
UINT32_MAX: Final = COUNTER_MODULUS - 1

_MIN_CYCLE_FACTOR = 0.1  # jitter never shortens a cycle below 10 % of nominal (and never to 0)
_TEMPERATURE_TIME_CONSTANT_S = 30.0
_TEMPERATURE_NOISE_C = 0.3  # standard deviation of the temperature around its target
_RUNNING_RISE = 0.04  # the process runs this fraction of |set point| hotter while cycling
_MIN_RUNNING_RISE_C = 0.5


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """What a machine's PLC shows at one instant."""

    machine_id: str
    state: MachineState
    good: int
    scrap: int
    fault_code: int
    cycle_time_ms: int
    temperature_c: float
    speed_pct: int
    run_enabled: bool


class _Event(Enum):
    CYCLE_END = "cycle end"
    FAULT = "fault"
    REPAIRED = "repaired"


class Machine:
    """One machine's process state and its controls; `LineModel` moves parts between machines."""

    def __init__(self, config: MachineConfig, seed: int) -> None:
        self.config = config
        # String seeds are hashed with SHA-512: stable across processes, unlike hash().
        self._rng = random.Random(f"{seed}/{config.id}/process")
        self._temperature_rng = random.Random(f"{seed}/{config.id}/temperature")
        self._good = 0
        self._scrap = 0
        self._speed_pct = DEFAULT_SPEED_PCT
        self._run_enabled = True
        self._work_left: float | None = None  # nominal (100 %) seconds left; None: no part
        self._cycle_elapsed = 0.0
        self._last_cycle_ms = 0
        self._fault_code = 0
        self._repair_left = 0.0
        self._time_to_failure = self._draw_time_to_failure()
        self._temperature = config.temperature_c

    @property
    def id(self) -> str:
        """The machine id from the config."""
        return self.config.id

    @property
    def state(self) -> MachineState:
        """DOWN while faulted, RUNNING while a cycle progresses, IDLE otherwise."""
        if self._fault_code:
            return MachineState.DOWN
        if self._progressing:
            return MachineState.RUNNING
        return MachineState.IDLE

    def snapshot(self) -> MachineSnapshot:
        """The machine's PLC values now."""
        return MachineSnapshot(
            machine_id=self.id,
            state=self.state,
            good=self._good,
            scrap=self._scrap,
            fault_code=self._fault_code,
            cycle_time_ms=self._last_cycle_ms,
            temperature_c=self._temperature,
            speed_pct=self._speed_pct,
            run_enabled=self._run_enabled,
        )

    def set_speed(self, speed_pct: int) -> None:
        """Run at `speed_pct` % of nominal (0 holds the machine, even mid-cycle)."""
        if not 0 <= speed_pct <= MAX_SPEED_PCT:
            raise IllegalValueError(f"{self.id}: speed {speed_pct} % is outside 0..{MAX_SPEED_PCT}")
        self._speed_pct = speed_pct

    def set_run_enabled(self, enabled: bool) -> None:
        """Allow new cycles, or stop after the current one."""
        self._run_enabled = enabled

    def reset_counters(self) -> None:
        """Set the good and scrap counters to 0, as the PLC's reset command does."""
        self._good = 0
        self._scrap = 0

    def preset_counters(self, good: int, scrap: int) -> None:
        """Load counter values, as a PLC's retentive memory holds them across a restart."""
        for name, value in (("good", good), ("scrap", scrap)):
            if not 0 <= value <= UINT32_MAX:
                raise IllegalValueError(f"{self.id}: {name} counter {value} is not a uint32")
        self._good = good
        self._scrap = scrap

    # --- used by LineModel -------------------------------------------------------------------

    @property
    def _progressing(self) -> bool:
        return self._work_left is not None and not self._fault_code and self._speed_pct > 0

    @property
    def _rate(self) -> float:
        """Nominal seconds of work done per second of model time."""
        return self._speed_pct / 100

    def _can_start(self) -> bool:
        return (
            self._work_left is None
            and not self._fault_code
            and self._run_enabled
            and self._speed_pct > 0
        )

    def _start_cycle(self) -> None:
        factor = self._rng.gauss(1.0, self.config.cycle_jitter)
        self._work_left = self.config.cycle_time_s * max(factor, _MIN_CYCLE_FACTOR)
        self._cycle_elapsed = 0.0

    def _next_event(self) -> tuple[float, _Event] | None:
        if self._fault_code:
            return self._repair_left, _Event.REPAIRED
        if not self._progressing or self._work_left is None:
            return None
        to_end = self._work_left / self._rate
        if self._time_to_failure < to_end:
            return self._time_to_failure, _Event.FAULT
        return to_end, _Event.CYCLE_END

    def _advance(self, seconds: float) -> None:
        """Let `seconds` of model time pass with no event of this machine inside them."""
        running = self.state is MachineState.RUNNING
        if self._fault_code:
            self._repair_left = max(self._repair_left - seconds, 0.0)
        elif self._progressing and self._work_left is not None:
            self._work_left = max(self._work_left - self._rate * seconds, 0.0)
            self._time_to_failure = max(self._time_to_failure - seconds, 0.0)
            self._cycle_elapsed += seconds
        self._drift_temperature(seconds, running)

    def _fire(self, event: _Event) -> bool:
        """Apply `event`; True when it produced a good part for the next buffer."""
        if event is _Event.REPAIRED:
            self._fault_code = 0
            self._repair_left = 0.0
            return False
        if event is _Event.FAULT:
            self._fault_code = self._rng.choice(sorted(FAULT_CODES))
            self._repair_left = self._rng.expovariate(1.0 / self.config.mttr_s)
            self._time_to_failure = self._draw_time_to_failure()
            return False
        self._work_left = None
        self._last_cycle_ms = min(round(self._cycle_elapsed * 1000), UINT32_MAX)
        if self._rng.random() < self.config.scrap_rate:
            self._scrap = (self._scrap + 1) % COUNTER_MODULUS
            return False
        self._good = (self._good + 1) % COUNTER_MODULUS
        return True

    def _draw_time_to_failure(self) -> float:
        return self._rng.expovariate(1.0 / self.config.mtbf_s)

    def _drift_temperature(self, seconds: float, running: bool) -> None:
        if seconds <= 0:
            return
        set_point = self.config.temperature_c
        rise = max(abs(set_point) * _RUNNING_RISE, _MIN_RUNNING_RISE_C) if running else 0.0
        target = set_point + rise
        # Exact Ornstein-Uhlenbeck step: the spread stays the same whatever the step length.
        decay = math.exp(-seconds / _TEMPERATURE_TIME_CONSTANT_S)
        noise = _TEMPERATURE_NOISE_C * math.sqrt(1.0 - decay * decay)
        self._temperature = (
            target
            + (self._temperature - target) * decay
            + noise * self._temperature_rng.gauss(0.0, 1.0)
        )


class LineModel:
    """A flow line of machines with buffers between them, advanced by `step`."""

    def __init__(self, config: PlantSimConfig) -> None:
        self.config = config
        self._machines = tuple(Machine(machine, config.seed) for machine in config.machines)
        self._by_id = {machine.id: machine for machine in self._machines}
        self._buffers = [0] * (len(self._machines) - 1)
        self._clock = 0.0

    @property
    def clock_s(self) -> float:
        """Model seconds elapsed since the line was created."""
        return self._clock

    @property
    def machines(self) -> tuple[Machine, ...]:
        """The machines in flow order (the last one's good counter is the line's output)."""
        return self._machines

    @property
    def buffer_levels(self) -> tuple[int, ...]:
        """Parts waiting in each buffer; buffer i sits after machine i."""
        return tuple(self._buffers)

    def machine(self, machine_id: str) -> Machine:
        """The machine with this id."""
        try:
            return self._by_id[machine_id]
        except KeyError:
            raise SimulatorError(f"no machine {machine_id!r} on line {self.config.line}") from None

    def snapshot(self, machine_id: str) -> MachineSnapshot:
        """One machine's PLC values now."""
        return self.machine(machine_id).snapshot()

    def snapshots(self) -> dict[str, MachineSnapshot]:
        """Every machine's PLC values now, by machine id."""
        return {machine.id: machine.snapshot() for machine in self._machines}

    def step(self, seconds: float) -> None:
        """Advance the line by `seconds` of model time, processing every event inside it."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise SimulatorError(f"cannot step the line by {seconds!r} seconds")
        left = seconds
        while True:
            self._start_cycles()
            upcoming = [(machine, machine._next_event()) for machine in self._machines]
            due = min((event[0] for _, event in upcoming if event is not None), default=math.inf)
            if due > left:
                for machine in self._machines:
                    machine._advance(left)
                self._clock += left
                return
            for index, (machine, event) in enumerate(upcoming):
                machine._advance(due)
                # Exact comparison on purpose: `due` is one of these very values.
                if event is not None and event[0] == due:
                    produced = machine._fire(event[1])
                    if produced and index < len(self._buffers):
                        self._buffers[index] += 1
            self._clock += due
            left -= due

    def _start_cycles(self) -> None:
        # Downstream first: a machine that takes a part frees room for the one before it.
        capacity = self.config.buffer_capacity
        for index in reversed(range(len(self._machines))):
            machine = self._machines[index]
            has_input = index == 0 or self._buffers[index - 1] > 0
            has_room = index == len(self._buffers) or self._buffers[index] < capacity
            if has_input and has_room and machine._can_start():
                if index > 0:
                    self._buffers[index - 1] -= 1
                machine._start_cycle()
