"""The simulated plant's configuration (``config/simulators.yaml``), validated at the boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from taktline_simulators.errors import SimulatorConfigError

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_PORT = 65535

Identifier = Annotated[str, Field(pattern=_ID_PATTERN, max_length=64)]


class _Model(BaseModel):
    # strict: a quoted number in YAML is a mistake worth reporting, not something to coerce.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class MachineConfig(_Model):
    """One machine of the line: its Modbus endpoint and process parameters."""

    id: Identifier
    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(ge=0, le=MAX_PORT, description="0 binds an ephemeral port")
    cycle_time_s: float = Field(gt=0, description="nominal cycle time at 100 % speed")
    cycle_jitter: float = Field(ge=0, le=1, description="relative std. deviation of a cycle")
    scrap_rate: float = Field(ge=0, le=1, description="probability a cycle ends in scrap")
    mtbf_s: float = Field(gt=0, description="mean running time between random faults")
    mttr_s: float = Field(gt=0, description="mean time to repair a fault")
    temperature_c: float = Field(description="process temperature set point")


class PlantSimConfig(_Model):
    """The simulated plant: one flow line of machines separated by buffers."""

    plant: Identifier
    line: Identifier
    seed: int
    tick_ms: int = Field(ge=1, le=60_000, description="model step and register refresh period")
    # YAML gives a list; the config keeps an immutable tuple.
    machines: tuple[MachineConfig, ...] = Field(min_length=1, strict=False)
    buffer_capacity: int = Field(ge=1, description="parts that fit between two machines")

    @field_validator("machines")
    @classmethod
    def _unique_machines(cls, machines: tuple[MachineConfig, ...]) -> tuple[MachineConfig, ...]:
        ids: set[str] = set()
        endpoints: set[tuple[str, int]] = set()
        for machine in machines:
            if machine.id in ids:
                raise PydanticCustomError(
                    "duplicate_id", "duplicate machine id '{id}'", {"id": machine.id}
                )
            ids.add(machine.id)
            endpoint = (machine.host, machine.port)
            if machine.port != 0 and endpoint in endpoints:
                raise PydanticCustomError(
                    "duplicate_endpoint",
                    "machine '{id}' uses {endpoint} like an earlier machine",
                    {"id": machine.id, "endpoint": f"{machine.host}:{machine.port}"},
                )
            endpoints.add(endpoint)
        return machines

    def with_port_offset(self, offset: int) -> PlantSimConfig:
        """This config with every fixed port moved by `offset` (ephemeral ports stay 0)."""
        machines = []
        for machine in self.machines:
            if machine.port == 0:
                machines.append(machine)
                continue
            port = machine.port + offset
            if not 1 <= port <= MAX_PORT:
                raise SimulatorConfigError(
                    f"port offset {offset} moves machine {machine.id}'s port {machine.port} "
                    f"to {port}, outside 1..{MAX_PORT}"
                )
            machines.append(machine.model_copy(update={"port": port}))
        return self.model_copy(update={"machines": tuple(machines)})

    def with_seed(self, seed: int) -> PlantSimConfig:
        """This config with another random seed."""
        return self.model_copy(update={"seed": seed})


def load_config(path: str | Path) -> PlantSimConfig:
    """Read and validate a simulators YAML file; `SimulatorConfigError` names file and field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulatorConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SimulatorConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(data, source=str(path))


def parse_config(data: object, *, source: str = "<config>") -> PlantSimConfig:
    """Validate already-parsed config data; errors are prefixed with `source`."""
    if not isinstance(data, dict):
        raise SimulatorConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return PlantSimConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_location(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise SimulatorConfigError("\n".join(lines)) from exc


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"
