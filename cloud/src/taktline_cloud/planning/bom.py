"""Bills of materials: lines with scrap factors, and low-level codes from the BOM graph.

Errors: `PlanningError` is the base of the planning package's errors; `BomCycleError` names
the cycle found in a BOM (an item that is, through its components, its own component).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal


class PlanningError(Exception):
    """Base of the planning package's errors: bad planning data or a misuse of a plan."""


class BomCycleError(PlanningError):
    """The BOM graph has a cycle, so no low-level codes (and no plan) exist."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("BOM cycle: " + " -> ".join(cycle))


@dataclass(frozen=True, slots=True)
class BomLine:
    """One component of a parent item.

    Component need = parent quantity x `per` x (1 + `scrap`): `scrap` is the fraction of the
    component lost in making the parent (component scrap, e.g. 0.05 = 5 % extra), not a yield.
    """

    parent: str
    component: str
    per: Decimal
    scrap: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.per <= 0:
            raise PlanningError(f"{self.parent} -> {self.component}: quantity per must be > 0")
        if self.scrap < 0:
            raise PlanningError(f"{self.parent} -> {self.component}: scrap must be >= 0")
        if self.parent == self.component:
            raise BomCycleError([self.parent, self.parent])

    @property
    def factor(self) -> Decimal:
        """Component quantity per one parent, scrap included."""
        return self.per * (1 + self.scrap)


def explosion_factors(lines: Iterable[BomLine]) -> dict[str, tuple[tuple[str, Decimal], ...]]:
    """Per parent, its components with their factor (lines of the same component added up)."""
    by_parent: dict[str, dict[str, Decimal]] = {}
    for line in lines:
        components = by_parent.setdefault(line.parent, {})
        components[line.component] = components.get(line.component, Decimal(0)) + line.factor
    return {parent: tuple(sorted(components.items())) for parent, components in by_parent.items()}


def low_level_codes(
    items: Iterable[str], children: Mapping[str, Iterable[tuple[str, Decimal]]]
) -> dict[str, int]:
    """Each item's lowest level in any BOM (0 = no parent); raises BomCycleError on a cycle.

    MRP plans an item only after every parent that can add dependent demand to it, so it
    processes items in this order (Kahn's topological order, keeping the longest path).
    """
    codes = dict.fromkeys(items, 0)
    indegree = dict.fromkeys(codes, 0)
    for parent, components in children.items():
        for component, _ in components:
            if component not in indegree or parent not in indegree:
                missing = component if component not in indegree else parent
                raise PlanningError(f"BOM names unknown item {missing!r}")
            indegree[component] += 1
    ready = [item for item, count in indegree.items() if count == 0]
    done = 0
    while ready:
        parent = ready.pop()
        done += 1
        level = codes[parent] + 1
        for component, _ in children.get(parent, ()):
            codes[component] = max(codes[component], level)
            indegree[component] -= 1
            if indegree[component] == 0:
                ready.append(component)
    if done < len(codes):
        raise BomCycleError(_find_cycle({i for i, n in indegree.items() if n > 0}, children))
    return codes


def _find_cycle(
    remaining: set[str], children: Mapping[str, Iterable[tuple[str, Decimal]]]
) -> list[str]:
    """A cycle among the items Kahn's algorithm could not order, as a path back to its start."""
    # Every remaining item has a remaining parent, so walking parent links must repeat an item.
    parent_of: dict[str, str] = {}
    for parent, components in children.items():
        if parent in remaining:
            for component, _ in components:
                if component in remaining:
                    parent_of.setdefault(component, parent)
    item = min(remaining)
    seen: dict[str, int] = {}
    path: list[str] = []
    while item not in seen:
        seen[item] = len(path)
        path.append(item)
        item = parent_of[item]
    cycle = path[seen[item] :]
    cycle.reverse()
    return [*cycle, cycle[0]]
