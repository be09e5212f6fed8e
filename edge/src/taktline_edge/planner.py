"""Plan a device's reads: coalesce its tags into as few Modbus block reads as possible.

One request of 100 registers costs about the same as one of a single register, so tags that are
contiguous (or separated by at most `max_gap` unused registers) are read together, in blocks of
at most 125 registers (the Modbus limit for function code 3).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from taktline_edge.tags import Tag

MAX_BLOCK = 125


@dataclass(frozen=True, slots=True)
class Block:
    """One read: `count` registers from `start`, covering `tags`."""

    start: int
    count: int
    tags: tuple[Tag, ...]

    @property
    def end(self) -> int:
        """One past the block's last register."""
        return self.start + self.count

    def words(self, registers: Sequence[int], tag: Tag) -> Sequence[int]:
        """The slice of this block's `registers` that holds `tag`."""
        return registers[tag.address - self.start : tag.end - self.start]


def plan_reads(
    tags: Iterable[Tag], max_gap: int = 0, max_count: int = MAX_BLOCK
) -> tuple[Block, ...]:
    """Blocks that read every tag once, ordered by address; pure."""
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    if not 1 <= max_count <= MAX_BLOCK:
        raise ValueError(f"max_count must be within 1..{MAX_BLOCK}")
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
            blocks.append(Block(start, end - start, tuple(members)))
        start, end, members = tag.address, tag.end, [tag]
    if members:
        blocks.append(Block(start, end - start, tuple(members)))
    return tuple(blocks)
