"""The machines' Modbus register map, as data, and its pure encoding and decoding.

Holding registers, 0-based addresses; 32-bit values are big-endian, high word first, each word
high byte first ("ABCD"). `config/simulators.yaml` documents the same map for people; the table
`REGISTER_MAP` below is the one the code uses.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from taktline_simulators.errors import IllegalAddressError, IllegalValueError, SimulatorError
from taktline_simulators.machine import MAX_SPEED_PCT, MachineSnapshot


class RegisterType(StrEnum):
    """How a register's words encode its value."""

    UINT16 = "uint16"
    UINT32 = "uint32"
    FLOAT32 = "float32"

    @property
    def words(self) -> int:
        """Number of 16-bit registers a value of this type occupies."""
        return 1 if self is RegisterType.UINT16 else 2


class Access(StrEnum):
    """Whether a Modbus master reads or writes the register."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Register:
    """One entry of the register map."""

    name: str
    address: int
    type: RegisterType
    access: Access
    meaning: str

    @property
    def words(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return self.type.words


GOOD_COUNT: Final = Register(
    "good_count", 0, RegisterType.UINT32, Access.READ,
    "good-part counter (absolute, only goes up; reset by command 1)",
)  # fmt: skip
SCRAP_COUNT: Final = Register(
    "scrap_count", 2, RegisterType.UINT32, Access.READ,
    "scrap counter (absolute, only goes up; reset by command 1)",
)  # fmt: skip
STATE: Final = Register(
    "state", 4, RegisterType.UINT16, Access.READ,
    "state: 0 idle (starved/blocked/disabled), 1 running, 2 down (fault)",
)  # fmt: skip
FAULT_CODE: Final = Register(
    "fault_code", 5, RegisterType.UINT16, Access.READ,
    "fault code (0 none, otherwise the active fault's code)",
)  # fmt: skip
CYCLE_TIME_MS: Final = Register(
    "cycle_time_ms", 6, RegisterType.UINT32, Access.READ, "last cycle time, milliseconds"
)
TEMPERATURE: Final = Register(
    "temperature", 8, RegisterType.FLOAT32, Access.READ,
    "process temperature, degrees Celsius",
)  # fmt: skip
SPEED: Final = Register(
    "speed", 100, RegisterType.UINT16, Access.WRITE,
    f"speed, percent of nominal (default 100, 0..{MAX_SPEED_PCT}; 0 stops the machine)",
)  # fmt: skip
COMMAND: Final = Register(
    "command", 101, RegisterType.UINT16, Access.WRITE,
    "command: 1 = reset counters to 0 (reads back 0 when done)",
)  # fmt: skip
RUN_ENABLE: Final = Register(
    "run_enable", 102, RegisterType.UINT16, Access.WRITE,
    "run enable: 1 run (default), 0 stop after the current cycle",
)  # fmt: skip

REGISTER_MAP: Final[tuple[Register, ...]] = (
    GOOD_COUNT, SCRAP_COUNT, STATE, FAULT_CODE, CYCLE_TIME_MS, TEMPERATURE,
    SPEED, COMMAND, RUN_ENABLE,
)  # fmt: skip
"""Every register a machine serves, in address order."""

STATUS_ADDRESS: Final = GOOD_COUNT.address
STATUS_COUNT: Final = TEMPERATURE.address + TEMPERATURE.words - STATUS_ADDRESS
"""The read-only status block (10 registers from address 0): one block read gets it all."""
CONTROL_ADDRESS: Final = SPEED.address
CONTROL_COUNT: Final = RUN_ENABLE.address + RUN_ENABLE.words - CONTROL_ADDRESS
"""The writable control block (3 registers from address 100): speed, command, run enable."""

COMMAND_NONE: Final = 0
COMMAND_RESET_COUNTERS: Final = 1


@dataclass(frozen=True, slots=True)
class ControlWrite:
    """What a master asked for with one write to the control block (None: not written)."""

    speed_pct: int | None = None
    reset_counters: bool = False
    run_enabled: bool | None = None


def encode_status(snapshot: MachineSnapshot) -> list[int]:
    """The status block (addresses 0..9) showing `snapshot`."""
    return _encode_block(
        STATUS_ADDRESS,
        STATUS_COUNT,
        {
            GOOD_COUNT: snapshot.good,
            SCRAP_COUNT: snapshot.scrap,
            STATE: int(snapshot.state),
            FAULT_CODE: snapshot.fault_code,
            CYCLE_TIME_MS: snapshot.cycle_time_ms,
            TEMPERATURE: snapshot.temperature_c,
        },
    )


def encode_controls(snapshot: MachineSnapshot) -> list[int]:
    """The control block (addresses 100..102) as it reads back: any command is done."""
    return _encode_block(
        CONTROL_ADDRESS,
        CONTROL_COUNT,
        {SPEED: snapshot.speed_pct, COMMAND: COMMAND_NONE, RUN_ENABLE: int(snapshot.run_enabled)},
    )


def encode_value(register_type: RegisterType, value: float) -> list[int]:
    """The words of one value, high word first, each word high byte first."""
    try:
        match register_type:
            case RegisterType.UINT16:
                data = struct.pack(">H", int(value))
            case RegisterType.UINT32:
                data = struct.pack(">I", int(value))
            case RegisterType.FLOAT32:
                data = struct.pack(">f", value)
    except (struct.error, OverflowError) as exc:
        raise SimulatorError(f"{value!r} does not fit a {register_type}") from exc
    return list(struct.unpack(f">{len(data) // 2}H", data))


def decode_control_write(address: int, values: list[int]) -> ControlWrite:
    """Check and decode a master's write of `values` starting at `address`."""
    end = address + len(values)
    if not values or address < CONTROL_ADDRESS or end > CONTROL_ADDRESS + CONTROL_COUNT:
        raise IllegalAddressError(
            f"registers {address}..{end - 1} are not writable "
            f"(only {CONTROL_ADDRESS}..{CONTROL_ADDRESS + CONTROL_COUNT - 1})"
        )
    written = dict(zip(range(address, end), values, strict=True))
    speed = written.get(SPEED.address)
    if speed is not None and not 0 <= speed <= MAX_SPEED_PCT:
        raise IllegalValueError(f"speed {speed} is outside 0..{MAX_SPEED_PCT}")
    command = written.get(COMMAND.address, COMMAND_NONE)
    if command not in (COMMAND_NONE, COMMAND_RESET_COUNTERS):
        raise IllegalValueError(f"command {command} is unknown (1 resets the counters)")
    run = written.get(RUN_ENABLE.address)
    if run is not None and run not in (0, 1):
        raise IllegalValueError(f"run enable {run} is not 0 or 1")
    return ControlWrite(
        speed_pct=speed,
        reset_counters=command == COMMAND_RESET_COUNTERS,
        run_enabled=None if run is None else bool(run),
    )


def _encode_block(start: int, count: int, values: Mapping[Register, float]) -> list[int]:
    words = [0] * count
    for register, value in values.items():
        offset = register.address - start
        words[offset : offset + register.words] = encode_value(register.type, value)
    return words
