"""The simulators' register map: known bytes out, control writes checked on the way in."""

from __future__ import annotations

import re
import struct

import pytest

from taktline_contract.metrics import MachineState
from taktline_simulators import (
    IllegalAddressError,
    IllegalValueError,
    MachineSnapshot,
    SimulatorError,
)
from taktline_simulators.registers import (
    CONTROL_ADDRESS,
    CONTROL_COUNT,
    REGISTER_MAP,
    STATUS_ADDRESS,
    STATUS_COUNT,
    ControlWrite,
    RegisterType,
    decode_control_write,
    encode_controls,
    encode_status,
    encode_value,
)
from tests.conftest import CONFIG


def snapshot(**overrides: object) -> MachineSnapshot:
    fields: dict[str, object] = {
        "machine_id": "M1",
        "state": MachineState.DOWN,
        "good": 0x12345678,
        "scrap": 70_000,
        "fault_code": 12,
        "cycle_time_ms": 1600,
        "temperature_c": 62.5,
        "speed_pct": 150,
        "run_enabled": True,
    }
    return MachineSnapshot(**(fields | overrides))  # type: ignore[arg-type]


def test_status_block_has_known_bytes() -> None:
    words = encode_status(snapshot())
    assert struct.pack(">10H", *words) == bytes.fromhex(
        "12345678"  # good, high word first
        "00011170"  # scrap 70 000
        "0002"  # state DOWN
        "000c"  # fault code 12
        "00000640"  # cycle time 1600 ms
        "427a0000"  # 62.5 as float32 big-endian
    )


def test_uint32_extremes_and_negative_temperature() -> None:
    words = encode_status(snapshot(good=2**32 - 1, scrap=0, temperature_c=-1.0))
    assert words[0:4] == [0xFFFF, 0xFFFF, 0, 0]
    assert words[8:10] == [0xBF80, 0x0000]


def test_status_block_decodes_back_with_plain_struct() -> None:
    s = snapshot(state=MachineState.RUNNING, fault_code=0, temperature_c=180.25)
    good, scrap, state, fault, cycle, temperature = struct.unpack(
        ">IIHHIf", struct.pack(">10H", *encode_status(s))
    )
    assert (good, scrap, state, fault, cycle, temperature) == (
        s.good, s.scrap, 1, 0, s.cycle_time_ms, 180.25,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("register_type", "value"),
    [(RegisterType.UINT16, 65536), (RegisterType.UINT32, -1), (RegisterType.FLOAT32, 1e39)],
)
def test_a_value_that_does_not_fit_its_register_is_an_error(
    register_type: RegisterType, value: float
) -> None:
    with pytest.raises(SimulatorError, match="does not fit"):
        encode_value(register_type, value)


def test_controls_read_back_with_the_command_done() -> None:
    assert encode_controls(snapshot(speed_pct=150, run_enabled=False)) == [150, 0, 0]


def test_register_map_matches_the_table_in_the_yaml_comment() -> None:
    # "#   0     2      uint32   read    good-part counter ..."
    row = re.compile(r"^#\s+(\d+)\s+(\d)\s+(uint16|uint32|float32)\s+(read|write)\s+")
    documented = [
        (int(m[1]), int(m[2]), m[3], m[4])
        for line in (CONFIG / "simulators.yaml").read_text().splitlines()
        if (m := row.match(line))
    ]
    in_code = [(r.address, r.words, str(r.type), str(r.access)) for r in REGISTER_MAP]
    assert in_code == documented


def test_blocks_cover_the_map_without_gaps() -> None:
    status = [r for r in REGISTER_MAP if r.access == "read"]
    control = [r for r in REGISTER_MAP if r.access == "write"]
    assert (STATUS_ADDRESS, STATUS_COUNT) == (0, 10)
    assert (CONTROL_ADDRESS, CONTROL_COUNT) == (100, 3)
    for block, start, count in ((status, STATUS_ADDRESS, STATUS_COUNT),
                                (control, CONTROL_ADDRESS, CONTROL_COUNT)):  # fmt: skip
        covered = [a for r in block for a in range(r.address, r.address + r.words)]
        assert covered == list(range(start, start + count))


@pytest.mark.parametrize(
    ("address", "values", "expected"),
    [
        (100, [250], ControlWrite(speed_pct=250)),
        (100, [0], ControlWrite(speed_pct=0)),
        (101, [1], ControlWrite(reset_counters=True)),
        (101, [0], ControlWrite()),
        (102, [0], ControlWrite(run_enabled=False)),
        (100, [80, 1, 1], ControlWrite(speed_pct=80, reset_counters=True, run_enabled=True)),
        (101, [0, 0], ControlWrite(run_enabled=False)),
    ],
)
def test_control_writes_decode(address: int, values: list[int], expected: ControlWrite) -> None:
    assert decode_control_write(address, values) == expected


@pytest.mark.parametrize(
    ("address", "values"),
    [(0, [1]), (9, [1]), (99, [1, 100]), (103, [1]), (102, [1, 1]), (100, [])],
)
def test_writes_outside_the_control_block_are_illegal_addresses(
    address: int, values: list[int]
) -> None:
    with pytest.raises(IllegalAddressError, match="not writable"):
        decode_control_write(address, values)


@pytest.mark.parametrize(
    ("address", "values", "message"),
    [
        (100, [1001], "speed 1001"),
        (101, [2], "command 2"),
        (102, [2], "run enable 2"),
        (100, [100, 1, 7], "run enable 7"),
    ],
)
def test_out_of_range_controls_are_illegal_values(
    address: int, values: list[int], message: str
) -> None:
    with pytest.raises(IllegalValueError, match=message):
        decode_control_write(address, values)
