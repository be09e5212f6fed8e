"""Taktline's PLC simulators: a seeded process model of a flow line behind real Modbus TCP servers.

Public API::

    load_config(path) -> PlantSimConfig          config/simulators.yaml, validated (pydantic)
    LineModel(config)                            pure model; .step(seconds), .machine(id),
                                                 .snapshot(id) -> MachineSnapshot, .snapshots()
    Machine                                      .set_speed(pct), .set_run_enabled(bool),
                                                 .reset_counters(), .preset_counters(good, scrap)
    async with run_plant(config) as plant: ...   one Modbus TCP server per machine;
                                                 plant.endpoints {id: (host, port)}, plant.model
    taktline-sim --config FILE [--port-offset N] [--seed S]     the same from the command line

The register map is `taktline_simulators.registers.REGISTER_MAP` (documented for people at the
top of config/simulators.yaml).

Exceptions::

    SimulatorError
    ├── SimulatorConfigError     a config file that cannot be read or is invalid (names file, field)
    └── ControlError             a control the machine cannot accept
        ├── IllegalAddressError  a Modbus write outside the control registers (exception code 2)
        └── IllegalValueError    a control value out of range (exception code 3)
"""

from taktline_simulators.config import MachineConfig, PlantSimConfig, load_config
from taktline_simulators.errors import (
    ControlError,
    IllegalAddressError,
    IllegalValueError,
    SimulatorConfigError,
    SimulatorError,
)
from taktline_simulators.machine import FAULT_CODES, LineModel, Machine, MachineSnapshot
from taktline_simulators.modbus_server import SimulatedPlant, run_plant

__all__ = [
    "FAULT_CODES",
    "ControlError",
    "IllegalAddressError",
    "IllegalValueError",
    "LineModel",
    "Machine",
    "MachineConfig",
    "MachineSnapshot",
    "PlantSimConfig",
    "SimulatedPlant",
    "SimulatorConfigError",
    "SimulatorError",
    "load_config",
    "run_plant",
]
