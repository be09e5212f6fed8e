"""The plant as the service sees it: lines and their machines, items, BOMs, where stock goes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from taktline_cloud.production.posting import BomLine, PostingPlaces


@dataclass(frozen=True, slots=True)
class MachineRef:
    """A machine of a line."""

    code: str
    name: str
    line: str


@dataclass(frozen=True, slots=True)
class LineRef:
    """A line with its machines in flow order; the last one's good counter is its output."""

    code: str
    name: str
    gateway: str
    standard_rate_per_hour: Decimal
    machines: tuple[MachineRef, ...]

    @property
    def output_machine(self) -> str:
        """The machine whose good counter is the line's output."""
        return self.machines[-1].code


@dataclass(frozen=True, slots=True)
class ItemRef:
    """An item's name and unit."""

    sku: str
    name: str
    kind: str
    uom: str


@dataclass(frozen=True, slots=True)
class PlantModel:
    """Master data of one plant, read once and shared by the service's operations."""

    code: str
    name: str
    places: PostingPlaces
    inventory_location: str
    lines: dict[str, LineRef]
    items: dict[str, ItemRef]
    boms: dict[str, tuple[BomLine, ...]]

    def machine(self, code: str) -> MachineRef | None:
        """The machine with this code, if the plant has it."""
        for line in self.lines.values():
            for machine in line.machines:
                if machine.code == code:
                    return machine
        return None

    @property
    def machines(self) -> list[MachineRef]:
        """Every machine, line by line in flow order."""
        return [m for line in self.lines.values() for m in line.machines]
