"""Plan a device's reads: coalesce its tags into as few Modbus block reads as possible.

One request of 100 registers costs about the same as one of a single register, so tags of the
same table (function code) that are contiguous, or separated by at most `max_gap` unused
registers, are read together, in blocks of at most 125 registers (function codes 3 and 4) or
2000 bits (function codes 1 and 2). Bit tables tolerate `max_bit_gap` unused bits, by default
16 per register of `max_gap` (a register's worth of bits costs no more to read than a register).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from taktline_edge.tags import MAX_BITS, MAX_REGISTERS, Table, Tag

MAX_BLOCK = MAX_REGISTERS
"""Registers in one read (function codes 3 and 4)."""
MAX_BIT_BLOCK = MAX_BITS
"""Bits in one read (function codes 1 and 2)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One read: `count` registers (or bits) of `table` from `start`, covering `tags`."""

    start: int
    count: int
    tags: tuple[Tag, ...]
    table: Table = Table.HOLDING

    @property
    def end(self) -> int:
        """One past the block's last register (or bit)."""
        return self.start + self.count

    def words(self, registers: Sequence[int], tag: Tag) -> Sequence[int]:
        """The slice of this block's `registers` (or bits, as 0/1) that holds `tag`."""
        return registers[tag.address - self.start : tag.end - self.start]


def plan_reads(
    tags: Iterable[Tag],
    max_gap: int = 0,
    max_count: int = MAX_BLOCK,
    *,
    max_bit_gap: int | None = None,
    max_bit_count: int = MAX_BIT_BLOCK,
) -> tuple[Block, ...]:
    """Blocks that read every tag once, ordered by table then address; pure."""
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    if max_bit_gap is None:
        max_bit_gap = max_gap * 16
    if max_bit_gap < 0:
        raise ValueError("max_bit_gap must be >= 0")
    if not 1 <= max_count <= MAX_BLOCK:
        raise ValueError(f"max_count must be within 1..{MAX_BLOCK}")
    if not 1 <= max_bit_count <= MAX_BIT_BLOCK:
        raise ValueError(f"max_bit_count must be within 1..{MAX_BIT_BLOCK}")
    per_table: dict[Table, list[Tag]] = {table: [] for table in Table}
    for tag in tags:
        per_table[tag.table].append(tag)
    blocks: list[Block] = []
    for table, members in per_table.items():
        if table.is_bits:
            blocks.extend(_plan_table(table, members, max_bit_gap, max_bit_count))
        else:
            blocks.extend(_plan_table(table, members, max_gap, max_count))
    return tuple(blocks)


def _plan_table(table: Table, tags: list[Tag], max_gap: int, max_count: int) -> list[Block]:
    blocks: list[Block] = []
    start = end = 0
    members: list[Tag] = []
    for tag in sorted(tags, key=lambda t: (t.address, t.end)):
        if tag.words > max_count:
            raise ValueError(f"{tag.metric} needs {tag.words} registers, more than {max_count}")
        # Overlapping tags (two views of one register) share the block; a gap opens a new one.
        fits = members and tag.address - end <= max_gap and max(end, tag.end) - start <= max_count
        if fits:
            members.append(tag)
            end = max(end, tag.end)
            continue
        if members:
            blocks.append(Block(start, end - start, tuple(members), table))
        start, end, members = tag.address, tag.end, [tag]
    if members:
        blocks.append(Block(start, end - start, tuple(members), table))
    return blocks
