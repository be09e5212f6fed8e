"""Read planning: tags coalesced into Modbus block reads per function code."""

from __future__ import annotations

import pytest

from taktline_edge.planner import Block, plan_reads
from taktline_edge.tags import Table, Tag, TagType


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


def _bit(address: int, table: Table = Table.COIL) -> Tag:
    return Tag(f"{table}{address}", address, TagType.BOOL, table=table)


def test_blocks_are_planned_per_function_code() -> None:
    tags = [
        _tag(0),
        Tag("in0", 0, TagType.UINT32, table=Table.INPUT),
        Tag("in2", 2, TagType.BIT, table=Table.INPUT, bit=5),
        _bit(0),
        _bit(1),
        _bit(0, Table.DISCRETE),
        Tag("h1.3", 1, TagType.BIT, bit=3),
        Tag("name", 2, TagType.STRING, length=4),
    ]
    blocks = plan_reads(tags)
    assert [(b.table, b.start, b.count) for b in blocks] == [
        (Table.COIL, 0, 2),
        (Table.DISCRETE, 0, 1),
        (Table.INPUT, 0, 3),
        (Table.HOLDING, 0, 6),
    ]
    assert [b.table.function_code for b in blocks] == [1, 2, 4, 3]
    holding = blocks[3]
    assert {t.metric for t in holding.tags} == {"m0", "h1.3", "name"}
    # The same address in two tables never shares a read.
    assert all(len({t.table for t in b.tags}) == 1 for b in blocks)


def test_bit_blocks_stop_at_2000_bits() -> None:
    coils = [_bit(a) for a in range(4500)]
    blocks = plan_reads(coils)
    assert _spans(blocks) == [(0, 2000), (2000, 2000), (4000, 500)]
    assert all(b.table == Table.COIL for b in blocks)
    assert _spans(plan_reads(coils[:10], max_bit_count=4)) == [(0, 4), (4, 4), (8, 2)]


def test_bit_gap_tolerance_defaults_to_16_bits_per_register_of_gap() -> None:
    coils = [_bit(0), _bit(10), _bit(40)]
    assert _spans(plan_reads(coils)) == [(0, 1), (10, 1), (40, 1)]
    assert _spans(plan_reads(coils, max_gap=1)) == [(0, 11), (40, 1)]
    assert _spans(plan_reads(coils, max_gap=2)) == [(0, 41)]
    assert _spans(plan_reads(coils, max_gap=5, max_bit_gap=0)) == [(0, 1), (10, 1), (40, 1)]
    # The register gap is unaffected by the bit gap.
    assert _spans(plan_reads([_tag(0), _tag(3)], max_bit_gap=100)) == [(0, 1), (3, 1)]


def test_bad_bit_plan_arguments() -> None:
    with pytest.raises(ValueError, match="max_bit_gap"):
        plan_reads([_bit(0)], max_bit_gap=-1)
    with pytest.raises(ValueError, match="max_bit_count"):
        plan_reads([_bit(0)], max_bit_count=2001)
    with pytest.raises(ValueError, match="more than 3"):
        plan_reads([Tag("s", 0, TagType.STRING, length=4)], max_count=3)
