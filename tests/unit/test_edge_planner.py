"""Read planning: tags coalesced into Modbus block reads."""

from __future__ import annotations

import pytest

from taktline_edge.planner import Block, plan_reads
from taktline_edge.tags import Tag, TagType


def _tag(address: int, kind: TagType = TagType.UINT16, name: str | None = None) -> Tag:
    return Tag(name or f"m{address}", address, kind)


def _spans(blocks: tuple[Block, ...]) -> list[tuple[int, int]]:
    return [(b.start, b.count) for b in blocks]


def test_the_demo_machine_map_is_one_read() -> None:
    tags = [
        _tag(0, TagType.UINT32),
        _tag(2, TagType.UINT32),
        _tag(4),
        _tag(5),
        _tag(6, TagType.UINT32),
        _tag(8, TagType.FLOAT32),
    ]
    (block,) = plan_reads(tags)
    assert (block.start, block.count) == (0, 10)
    assert {t.metric for t in block.tags} == {t.metric for t in tags}


def test_gaps_split_blocks_unless_within_tolerance() -> None:
    tags = [_tag(0), _tag(1), _tag(5), _tag(100, TagType.UINT32)]
    assert _spans(plan_reads(tags)) == [(0, 2), (5, 1), (100, 2)]
    assert _spans(plan_reads(tags, max_gap=3)) == [(0, 6), (100, 2)]
    assert _spans(plan_reads(tags, max_gap=94)) == [(0, 102)]


def test_blocks_never_exceed_125_registers() -> None:
    tags = [_tag(a, TagType.UINT32) for a in range(0, 300, 2)]
    blocks = plan_reads(tags)
    assert all(b.count <= 125 for b in blocks)
    assert _spans(blocks) == [(0, 124), (124, 124), (248, 52)]
    assert sum(len(b.tags) for b in blocks) == len(tags)
    assert _spans(plan_reads([_tag(0), _tag(130)], max_gap=124)) == [(0, 1), (130, 1)]


def test_unsorted_and_overlapping_tags() -> None:
    raw = _tag(10, TagType.UINT32, "raw")
    high_word = _tag(10, TagType.UINT16, "high")
    blocks = plan_reads([_tag(12), raw, high_word])
    assert _spans(blocks) == [(10, 3)]
    (block,) = blocks
    registers = [0x0001, 0x0002, 0x0003]
    assert block.words(registers, raw) == [0x0001, 0x0002]
    assert block.words(registers, high_word) == [0x0001]
    assert block.words(registers, _tag(12)) == [0x0003]


def test_bad_plan_arguments() -> None:
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads([_tag(0)], max_gap=-1)
    with pytest.raises(ValueError, match="max_count"):
        plan_reads([_tag(0)], max_count=126)
    assert plan_reads([]) == ()
