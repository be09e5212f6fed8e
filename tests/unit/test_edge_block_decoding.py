"""The poll loop's fast path: a whole block decoded at once, and blocks read unchanged skipped.

Both are optimisations only: `BlockDecoder` must give exactly what `Tag.decode` gives each tag
(values and errors), and skipping a block whose words did not change must report exactly what
decoding it again would (deadband, a refused store, text tags).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import OutboxFullError, TagError
from taktline_edge.outbox import Sample
from taktline_edge.planner import Block, plan_reads
from taktline_edge.poller import Poller, reportable
from taktline_edge.tags import BlockDecoder, ByteOrder, Table, Tag, TagType, TagValue

NUMBERS = [
    TagType.UINT16,
    TagType.INT16,
    TagType.UINT32,
    TagType.INT32,
    TagType.FLOAT32,
    TagType.UINT64,
    TagType.INT64,
    TagType.FLOAT64,
]
ORDERS: list[ByteOrder] = ["big", "little"]


@st.composite
def register_tags(draw: st.DrawFn) -> list[Tag]:
    """Up to 12 tags of one register table, any layout, overlapping or not."""
    table = draw(st.sampled_from([Table.HOLDING, Table.INPUT]))
    tags = []
    for i in range(draw(st.integers(1, 12))):
        address = draw(st.integers(0, 40))
        kind = draw(st.sampled_from([*NUMBERS, TagType.BIT, TagType.STRING]))
        metric = f"t{i}"
        if kind == TagType.BIT:
            tags.append(Tag(metric, address, kind, table=table, bit=draw(st.integers(0, 15))))
            continue
        orders = {"byte_order": draw(st.sampled_from(ORDERS))}
        orders["word_order"] = draw(st.sampled_from(ORDERS))
        if kind == TagType.STRING:
            tags.append(Tag(metric, address, kind, table=table, length=draw(st.integers(1, 4))))
            continue
        scaled = draw(st.booleans())
        scale = Decimal(draw(st.sampled_from(["0.1", "-2", "0.001"]))) if scaled else None
        offset = Decimal(draw(st.sampled_from(["0", "-40", "1.5"]))) if scaled else None
        tags.append(Tag(metric, address, kind, table=table, scale=scale, offset=offset, **orders))
    return tags


def _one_by_one(block: Block, words: Sequence[int]) -> list[TagValue | str]:
    """What decoding each tag on its own gives (an error as its message)."""
    out: list[TagValue | str] = []
    for tag in block.tags:
        try:
            out.append(tag.decode(block.words(words, tag)))
        except TagError as exc:
            return [*out, f"TagError: {exc}"]
    return out


def _at_once(block: Block, words: Sequence[int]) -> list[TagValue | str]:
    try:
        return list(BlockDecoder(block.tags, block.start, block.count).decode(words))
    except TagError as exc:
        return [f"TagError: {exc}"]


def _same(left: list[TagValue | str], right: list[TagValue | str]) -> bool:
    if [type(v) for v in left] != [type(v) for v in right]:
        return False
    return all(
        (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or a == b  # type: ignore[arg-type]
        for a, b in zip(left, right, strict=True)
    )


@given(register_tags(), st.data())
def test_a_block_decodes_exactly_as_its_tags_one_by_one(
    tags: list[Tag], data: st.DataObject
) -> None:
    for block in plan_reads(tags, max_gap=3):
        words = data.draw(
            st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count)
        )
        expected = _one_by_one(block, words)
        if any(isinstance(v, str) and v.startswith("TagError") for v in expected):
            # A failed tag stops the one-by-one walk; the block raises the same first error.
            assert _at_once(block, words) == [expected[-1]]
        else:
            assert _same(_at_once(block, words), expected)


def test_every_byte_and_word_order_of_every_width() -> None:
    value = 0x0123456789ABCDEF
    raw = value.to_bytes(8, "big")
    for byte_order in ORDERS:
        for word_order in ORDERS:
            words = [int.from_bytes(raw[i : i + 2], byte_order) for i in range(0, 8, 2)]
            if word_order == "little":
                words.reverse()
            tags = [Tag("u64", 1, TagType.UINT64, byte_order=byte_order, word_order=word_order)]
            decoder = BlockDecoder(tags, 0, 5)
            assert decoder.decode([0xFFFF, *words]) == [value], (byte_order, word_order)


@pytest.mark.parametrize(
    ("words", "error"),
    [
        ([1, 70_000, 3], "register value 70000 is not a 16-bit word"),
        ([1, 2], "needs 2 register(s), got 1"),
    ],
)
def test_bad_replies_fail_as_the_tag_would(words: list[int], error: str) -> None:
    tags = [Tag("a", 0, TagType.UINT16), Tag("b", 1, TagType.UINT32)]
    decoder = BlockDecoder(tags, 0, 3)
    with pytest.raises(TagError, match=error.replace("(", r"\(").replace(")", r"\)")):
        decoder.decode(words)


def test_coils_and_a_longer_reply() -> None:
    tags = [
        Tag("a", 2, TagType.BOOL, table=Table.COIL),
        Tag("b", 4, TagType.BOOL, table=Table.COIL),
    ]
    decoder = BlockDecoder(tags, 2, 3)
    assert decoder.decode([1, 0, 0]) == [True, False]
    assert decoder.decode([0, 1, 1, 1]) == [False, True], "extra bits are ignored, as by slicing"


def test_a_non_finite_scaled_float_is_refused() -> None:
    tag = Tag("f", 0, TagType.FLOAT32, scale=Decimal(2))
    with pytest.raises(TagError, match="cannot be scaled"):
        BlockDecoder([tag], 0, 2).decode([0x7FC0, 0])


# --- the poller skips blocks read unchanged ----------------------------------------------------


@dataclass
class Registers:
    """A fake PLC: holding registers 0..9 and coils 0..3; counts decodes by reads made."""

    holding: list[int] = field(default_factory=lambda: [0] * 10)
    coils: list[int] = field(default_factory=lambda: [0] * 4)
    reads: int = 0

    async def read_blocks(self, blocks: Sequence[Block]) -> list[list[int]]:
        self.reads += 1
        source = {Table.HOLDING: self.holding, Table.COIL: self.coils}
        return [list(source[b.table][b.start : b.end]) for b in blocks]


@dataclass
class Sink:
    stored: list[Sample] = field(default_factory=list)
    full: bool = False

    async def __call__(self, device: str, samples: Sequence[Sample]) -> None:
        if self.full:
            raise OutboxFullError("outbox reached 65536 bytes")
        self.stored.extend(samples)


TAGS = (
    Tag("Count", 0, TagType.UINT32),
    Tag("Level", 2, TagType.UINT16, deadband=Decimal(5)),
    Tag("Run", 1, TagType.BOOL, table=Table.COIL),
)


def _stored(sink: Sink) -> list[tuple[str, object]]:
    return [(s.metric, s.value) for s in sink.stored]


async def test_an_unchanged_block_reports_nothing_and_current_keeps_fresh_stamps() -> None:
    plc, sink = Registers(), Sink()
    poller = Poller("M1", TAGS, 1.0, plc, sink)
    assert poller.current == {}
    assert await poller.poll_once()
    assert _stored(sink) == [("Run", False), ("Count", 0), ("Level", 0)]
    first = poller.current["Count"].timestamp
    assert await poller.poll_once()
    assert len(sink.stored) == 3
    current = poller.current
    assert {m: s.value for m, s in current.items()} == {"Count": 0, "Level": 0, "Run": False}
    assert current["Count"].timestamp > first, "every poll restamps the current values"
    assert {s.timestamp for s in current.values()} == {current["Run"].timestamp}


async def test_within_the_deadband_stays_unreported_when_read_again() -> None:
    plc, sink = Registers(), Sink()
    poller = Poller("M1", TAGS, 1.0, plc, sink)
    await poller.poll_once()
    plc.holding[2] = 3  # within the deadband of 5 from the reported 0
    for _ in range(3):
        await poller.poll_once()
    assert poller.current["Level"].value == 3
    plc.holding[2] = 6
    await poller.poll_once()
    plc.holding[1] = 1  # Count changes; Level (same block) is re-decoded but still within band
    await poller.poll_once()
    assert _stored(sink)[3:] == [("Level", 6), ("Count", 1)]


async def test_a_refused_store_is_retried_even_though_the_words_did_not_change() -> None:
    plc, sink = Registers(), Sink()
    poller = Poller("M1", TAGS, 1.0, plc, sink)
    await poller.poll_once()
    sink.full = True
    plc.holding[1] = 7
    plc.coils[1] = 1
    await poller.poll_once()
    await poller.poll_once()  # same words, still refused
    sink.full = False
    await poller.poll_once()  # same words again: stored now
    await poller.poll_once()  # and only once
    assert _stored(sink)[3:] == [("Run", True), ("Count", 7)]


async def test_a_text_tag_is_stored_as_a_string_when_its_text_changes() -> None:
    tags = (Tag("Order", 0, TagType.STRING, length=2), Tag("Count", 4, TagType.UINT16))
    plc, sink = Registers(), Sink()
    plc.holding[0:2] = [0x574F, 0x2D31]  # "WO-1"
    poller = Poller("M1", tags, 1.0, plc, sink)
    assert await poller.poll_once()
    assert await poller.poll_once()  # same text: nothing to report
    plc.holding[0:2] = [0x574F, 0x3200]  # "WO2", NUL-padded
    assert await poller.poll_once()
    assert _stored(sink) == [("Order", "WO-1"), ("Count", 0), ("Order", "WO2")]
    assert [s.datatype for s in sink.stored if s.metric == "Order"] == [DataType.STRING] * 2


VALUES = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.decimals(min_value=-3, max_value=3, places=1),
)


@given(VALUES, VALUES.filter(lambda v: v is not None), st.sampled_from(["0", "0.5"]))
def test_reportable_agrees_with_tag_changed(old: object, new: object, deadband: str) -> None:
    tag = Tag("v", 0, TagType.FLOAT32, deadband=Decimal(deadband))
    assert reportable(tag, tag.deadband == 0, old, new) == tag.changed(old, new)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new"),
    [(True, False), (False, False), ("a", "b"), ("a", "a"), (math.nan, math.nan), (1, math.nan)],
)
def test_reportable_agrees_for_bits_text_and_nan(old: TagValue, new: TagValue) -> None:
    tag = Tag("v", 0, TagType.BOOL, table=Table.COIL)
    assert reportable(tag, True, old, new) == tag.changed(old, new)
