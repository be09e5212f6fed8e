"""The equipment hierarchy as plain nodes (every record will belong to one, for grants)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """ISA-95 equipment hierarchy levels, top down."""

    GROUP = "group"
    COMPANY = "company"
    PLANT = "plant"
    AREA = "area"
    LINE = "line"
    MACHINE = "machine"


@dataclass(frozen=True, slots=True)
class OrgNode:
    """One node of the hierarchy; `parent` is None only for the group."""

    level: Level
    code: str
    name: str
    parent: tuple[Level, str] | None

