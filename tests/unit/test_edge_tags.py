"""Decoding: every type and table, byte and word order, bits, strings, scale/offset, deadband."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import TagError
from taktline_edge.tags import (
    ByteOrder,
    Table,
    Tag,
    TagType,
    decode_bit,
    decode_string,
    decode_words,
    encode_string,
    encode_words,
    float32_decimal,
)

ORDERS: list[tuple[ByteOrder, ByteOrder]] = [
    ("big", "big"),
    ("big", "little"),
    ("little", "big"),
    ("little", "little"),
]


@pytest.mark.parametrize(
    ("byte_order", "word_order", "words"),
    [
        ("big", "big", [0x1234, 0x5678]),  # ABCD
        ("big", "little", [0x5678, 0x1234]),  # CDAB
        ("little", "big", [0x3412, 0x7856]),  # BADC
        ("little", "little", [0x7856, 0x3412]),  # DCBA
    ],
)
def test_uint32_in_every_byte_and_word_order(
    byte_order: ByteOrder, word_order: ByteOrder, words: list[int]
) -> None:
    assert decode_words(words, TagType.UINT32, byte_order, word_order) == 0x12345678


@pytest.mark.parametrize(
    ("kind", "words", "expected"),
    [
        (TagType.UINT16, [0xFFFF], 65535),
        (TagType.INT16, [0xFFFF], -1),
        (TagType.INT16, [0x8000], -32768),
        (TagType.UINT32, [0xFFFF, 0xFFFF], 4_294_967_295),
        (TagType.INT32, [0xFFFF, 0xFFFE], -2),
        (TagType.INT32, [0x8000, 0x0000], -(2**31)),
        (TagType.FLOAT32, [0x4278, 0x0000], 62.0),  # 0x42780000
        (TagType.FLOAT32, [0xC2F6, 0xE979], struct.unpack(">f", bytes.fromhex("c2f6e979"))[0]),
        (TagType.UINT64, [0x0001, 0x0000, 0x0000, 0x0000], 2**48),
        (TagType.INT64, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
        (TagType.FLOAT64, [0x4059, 0x0000, 0x0000, 0x0000], 100.0),  # 0x4059000000000000
    ],
)
def test_known_words_decode_to_known_values(
    kind: TagType, words: list[int], expected: float
) -> None:
    value = decode_words(words, kind)
    assert value == expected
    assert isinstance(value, float) == kind.is_float


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_float32_and_float64_in_every_order(byte_order: ByteOrder, word_order: ByteOrder) -> None:
    for kind, fmt, value in ((TagType.FLOAT32, ">f", -61.25), (TagType.FLOAT64, ">d", 1234.5678)):
        raw = struct.pack(fmt, value)
        words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
        if byte_order == "little":
            words = [int.from_bytes(w.to_bytes(2, "big"), "little") for w in words]
        if word_order == "little":
            words.reverse()
        assert decode_words(words, kind, byte_order, word_order) == value


@given(
    kind=st.sampled_from([t for t in TagType if t.is_numeric and not t.is_float]),
    orders=st.sampled_from(ORDERS),
    data=st.data(),
)
def test_integer_encode_decode_round_trip(
    kind: TagType, orders: tuple[ByteOrder, ByteOrder], data: st.DataObject
) -> None:
    bits = kind.words * 16
    signed = kind.value.startswith("int")
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    value = data.draw(st.integers(low, high))
    words = encode_words(value, kind, *orders)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_words(words, kind, *orders) == value


def test_wrong_word_count_and_out_of_range_words_are_errors() -> None:
    with pytest.raises(TagError, match="uint32 needs 2 register"):
        decode_words([1], TagType.UINT32)
    with pytest.raises(TagError, match="16-bit"):
        decode_words([70000], TagType.UINT16)
    with pytest.raises(TagError, match="does not fit"):
        encode_words(70000, TagType.UINT16)
    with pytest.raises(TagError, match="not an integer"):
        encode_words(1.5, TagType.INT16)


def test_datatypes_follow_the_type_and_scaling() -> None:
    assert Tag("a", 0, TagType.UINT32).datatype == DataType.UINT32
    assert Tag("a", 0, TagType.INT16).datatype == DataType.INT16
    assert Tag("a", 0, TagType.FLOAT32).datatype == DataType.FLOAT
    assert Tag("a", 0, TagType.FLOAT64).datatype == DataType.DOUBLE
    assert Tag("a", 0, TagType.UINT64).datatype == DataType.UINT64
    assert Tag("a", 0, TagType.INT16, scale=Decimal("0.1")).datatype == DataType.DOUBLE


def test_scale_and_offset_give_exact_decimals() -> None:
    tenths = Tag("Process/Temperature", 0, TagType.INT16, scale=Decimal("0.1"))
    assert tenths.decode([625]) == Decimal("62.5")
    assert tenths.decode([0xFFFF]) == Decimal("-0.1")
    assert tenths.decode([3]) == Decimal("0.3")  # not 0.30000000000000004
    kelvin = Tag("t", 0, TagType.UINT16, scale=Decimal("0.01"), offset=Decimal("-273.15"))
    assert kelvin.decode([29815]) == Decimal("25.00")
    offset_only = Tag("t", 0, TagType.UINT16, offset=Decimal(5))
    assert offset_only.decode([1]) == Decimal(6)
    assert isinstance(offset_only.decode([1]), Decimal)
    # A float32 is scaled from its shortest decimal reading, not its binary expansion.
    words = encode_words(62.1, TagType.FLOAT32)
    scaled = Tag("t", 0, TagType.FLOAT32, scale=Decimal(10))
    assert scaled.decode(words) == Decimal("621.0")


def test_unscaled_values_keep_their_python_type() -> None:
    assert isinstance(Tag("a", 0, TagType.UINT16).decode([7]), int)
    assert isinstance(Tag("a", 0, TagType.FLOAT32).decode([0x4278, 0]), float)


def test_encode_inverts_decode_for_scaled_writes() -> None:
    speed = Tag("Control/Speed", 100, TagType.UINT16, scale=Decimal("0.5"), writable=True)
    assert speed.encode(Decimal("40")) == [80]
    assert speed.decode(speed.encode(40)) == Decimal(40)
    with pytest.raises(TagError, match="whole number"):
        speed.encode(Decimal("40.25"))
    plain = Tag("Control/Enable", 102, TagType.UINT16)
    assert plain.encode(True) == [1]
    assert Tag("f", 0, TagType.FLOAT32).encode(62.5) == [0x427A, 0x0000]


def test_float32_decimal_is_the_shortest_round_trip() -> None:
    value = struct.unpack(">f", struct.pack(">f", 62.1))[0]
    assert value != 62.1
    assert float32_decimal(value) == Decimal("62.1")
    assert float32_decimal(0.0) == Decimal(0)


def test_deadband_reports_by_exception() -> None:
    temperature = Tag("t", 8, TagType.FLOAT32, deadband=Decimal("0.2"))
    assert temperature.changed(None, 20.0), "the first value is always reported"
    assert not temperature.changed(20.0, 20.2), "within the deadband (|d| must exceed it)"
    assert not temperature.changed(20.0, 19.85)
    assert temperature.changed(20.0, 20.25)
    assert temperature.changed(20.0, 19.7)
    counter = Tag("c", 0, TagType.UINT32)
    assert counter.changed(5, 6), "deadband 0: any change"
    assert not counter.changed(6, 6)
    scaled = Tag("s", 0, TagType.INT16, scale=Decimal("0.1"), deadband=Decimal("0.5"))
    assert not scaled.changed(Decimal("1.0"), Decimal("1.5"))
    assert scaled.changed(Decimal("1.0"), Decimal("1.6"))


def test_deadband_with_nan_and_infinity() -> None:
    tag = Tag("t", 0, TagType.FLOAT32, deadband=Decimal(1))
    assert tag.changed(1.0, math.nan)
    assert not tag.changed(math.nan, math.nan)
    assert tag.changed(math.nan, 1.0)
    assert tag.changed(1.0, math.inf)
    assert not tag.changed(math.inf, math.inf)


def test_invalid_tags_are_refused() -> None:
    with pytest.raises(TagError, match="out of range"):
        Tag("a", 65535, TagType.UINT32)
    with pytest.raises(TagError, match="deadband"):
        Tag("a", 0, TagType.UINT16, deadband=Decimal(-1))
    with pytest.raises(TagError, match="scale"):
        Tag("a", 0, TagType.UINT16, scale=Decimal(0))


# Coils, discrete inputs, bits inside registers, strings, tables.


def test_coils_and_discrete_inputs_decode_as_booleans() -> None:
    coil = Tag("Control/Run", 3, TagType.BOOL, table=Table.COIL)
    discrete = Tag("Safety/DoorClosed", 7, TagType.BOOL, table=Table.DISCRETE)
    assert coil.decode([1]) is True
    assert coil.decode([0]) is False
    assert discrete.decode([1]) is True
    assert coil.datatype == discrete.datatype == DataType.BOOLEAN
    assert (coil.words, coil.end) == (1, 4)
    with pytest.raises(TagError, match="1 bit"):
        coil.decode([1, 0])


@pytest.mark.parametrize(("bit", "expected"), [(0, True), (1, False), (2, True), (15, True)])
def test_a_bit_inside_a_register(bit: int, expected: bool) -> None:
    word = 0b1000_0000_0000_0101
    for table in (Table.HOLDING, Table.INPUT):
        tag = Tag("Status/Flag", 4, TagType.BIT, table=table, bit=bit)
        assert tag.decode([word]) is expected
        assert tag.datatype == DataType.BOOLEAN
        assert (tag.words, tag.end) == (1, 5)
    assert decode_bit(word, 15) is True
    with pytest.raises(TagError, match="16-bit"):
        decode_bit(0x10000, 0)


def test_strings_in_both_byte_orders_with_trailing_nuls_stripped() -> None:
    # "AB-7" then two NUL bytes of padding in three registers.
    big = Tag("Order/Id", 20, TagType.STRING, length=3)
    assert big.decode([0x4142, 0x2D37, 0x0000]) == "AB-7"
    assert big.datatype == DataType.STRING
    assert (big.words, big.end) == (3, 23)
    swapped = Tag("Order/Id", 20, TagType.STRING, length=3, byte_order="little")
    assert swapped.decode([0x4241, 0x372D, 0x0000]) == "AB-7"
    odd = Tag("s", 0, TagType.STRING, length=2)
    assert odd.decode([0x4142, 0x4300]) == "ABC"
    assert odd.decode([0, 0]) == ""
    assert odd.decode([0x4100, 0x4200]) == "A\x00B", "only trailing NULs are padding"


def test_utf8_and_ascii_strings() -> None:
    utf8 = Tag("Operator", 0, TagType.STRING, length=3, encoding="utf-8")
    words = encode_string("Müller"[:4], 3, "utf-8")  # "Mül" + "l": 5 bytes
    assert utf8.decode(words) == "Müll"
    ascii_tag = Tag("Operator", 0, TagType.STRING, length=3)
    with pytest.raises(TagError, match="not ascii text"):
        ascii_tag.decode(words)
    assert decode_string([0x4869], "ascii") == "Hi"
    with pytest.raises(TagError, match="more than 1 registers"):
        encode_string("abc", 1)
    with pytest.raises(TagError, match="not ascii"):
        encode_string("é", 2)


def test_string_writes_pad_with_nuls_and_round_trip() -> None:
    tag = Tag("Order/Id", 20, TagType.STRING, length=4, writable=True, word_order="little")
    words = tag.encode("WO-1")
    assert len(words) == 4
    assert tag.decode(words) == "WO-1"
    with pytest.raises(TagError, match="not text"):
        tag.encode(5)
    with pytest.raises(TagError, match="not a number"):
        Tag("n", 0, TagType.UINT16).encode("5")


def test_coil_writes_are_states_not_register_words() -> None:
    coil = Tag("Control/Run", 3, TagType.BOOL, table=Table.COIL, writable=True)
    assert coil.encode_bit(True) is True
    assert coil.encode_bit(0) is False
    assert coil.encode_bit(Decimal(1)) is True
    with pytest.raises(TagError, match="not a coil state"):
        coil.encode_bit(2)
    with pytest.raises(TagError, match="not a coil state"):
        coil.encode_bit("on")
    with pytest.raises(TagError, match="not register words"):
        coil.encode(True)
    with pytest.raises(TagError, match="not a coil"):
        Tag("n", 0, TagType.UINT16).encode_bit(True)


def test_booleans_and_strings_report_every_change() -> None:
    coil = Tag("c", 0, TagType.BOOL, table=Table.COIL)
    assert coil.changed(None, False)
    assert not coil.changed(True, True)
    assert coil.changed(True, False)
    text = Tag("s", 0, TagType.STRING, length=2)
    assert not text.changed("a", "a")
    assert text.changed("a", "b")


def test_tables_carry_their_function_codes_and_limits() -> None:
    assert [t.function_code for t in Table] == [1, 2, 4, 3]
    assert Table.COIL.max_block == Table.DISCRETE.max_block == 2000
    assert Table.HOLDING.max_block == Table.INPUT.max_block == 125
    assert Table.COIL.writable
    assert Table.HOLDING.writable
    assert not Table.DISCRETE.writable
    assert not Table.INPUT.writable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": TagType.UINT16, "table": Table.COIL}, "type is bool, not uint16"),
        ({"type": TagType.BIT, "table": Table.COIL, "bit": 1}, "type is bool, not bit"),
        ({"type": TagType.BOOL}, "use type bit"),
        ({"type": TagType.BIT}, "needs `bit`"),
        ({"type": TagType.UINT16, "bit": 3}, "`bit` applies to type bit only"),
        ({"type": TagType.BIT, "bit": 16}, "bit 16 is not within 0..15"),
        ({"type": TagType.STRING}, "needs `length`"),
        ({"type": TagType.UINT16, "length": 2}, "`length` applies to type string only"),
        ({"type": TagType.STRING, "length": 126}, "not within 1..125"),
        ({"type": TagType.STRING, "length": 2, "scale": Decimal(2)}, "scale and offset"),
        ({"type": TagType.BIT, "bit": 0, "deadband": Decimal(1)}, "deadband applies"),
        ({"type": TagType.UINT16, "table": Table.INPUT, "writable": True}, "read-only"),
        ({"type": TagType.BOOL, "table": Table.DISCRETE, "writable": True}, "read-only"),
        ({"type": TagType.BIT, "bit": 0, "writable": True}, "cannot be writable"),
    ],
)
def test_bad_combinations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TagError, match=message):
        Tag("bad", 0, **kwargs)


def test_the_end_of_the_bit_and_string_address_spaces() -> None:
    Tag("last", 65535, TagType.BOOL, table=Table.COIL)
    with pytest.raises(TagError, match="runs past register 65535"):
        Tag("s", 65534, TagType.STRING, length=3)
    with pytest.raises(TagError, match="not a number type"):
        decode_words([1], TagType.STRING)
    with pytest.raises(TagError, match="not a number type"):
        encode_words(1, TagType.BOOL)
