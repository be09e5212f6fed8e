"""The declarative tag map and the pure decoding of Modbus register words and bits into values.

A tag says where a value lives (its `table` - holding or input registers, coils or discrete
inputs - and first address), how it is laid out (type, byte order within each 16-bit word, order
of the words, the bit of a register, the length of a string) and how it is scaled. Decoding is
pure: the same words always give the same value, so it is tested without a PLC.

Coils and discrete inputs are single bits (`bool`); a register table holds numbers, a `bit` of
one register (`bool`), or a `string` of `length` registers (two bytes each, trailing NULs
stripped).

Byte and word order, for a 32-bit value whose big-endian bytes are ``A B C D``:

    byte_order  word_order  registers      common name
    big         big         [AB, CD]       ABCD (Modbus default)
    big         little      [CD, AB]       CDAB (word swap)
    little      big         [BA, DC]       BADC (byte swap)
    little      little      [DC, BA]       DCBA
"""

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Literal, TypeAlias

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import TagError

ByteOrder: TypeAlias = Literal["big", "little"]
TagValue: TypeAlias = int | float | Decimal | bool | str
"""A decoded value: int, float, bool or str as the type dictates, Decimal when scaled."""
Encoding: TypeAlias = Literal["ascii", "utf-8"]


class Table(StrEnum):
    """The four Modbus data tables; each is read with its own function code."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bits(self) -> bool:
        """True for the single-bit tables (coils, discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def function_code(self) -> int:
        """The Modbus read function code of the table."""
        return _READ_CODES[self]

    @property
    def max_block(self) -> int:
        """The most items one read may return (Modbus: 2000 bits, 125 registers)."""
        return MAX_BITS if self.is_bits else MAX_REGISTERS

    @property
    def writable(self) -> bool:
        """False for the read-only tables (discrete and input)."""
        return self in (Table.COIL, Table.HOLDING)


MAX_REGISTERS = 125
MAX_BITS = 2000
_READ_CODES = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


class TagType(StrEnum):
    """Value layouts a tag can have."""

    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"
    UINT64 = "uint64"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    """A coil or discrete input."""
    BIT = "bit"
    """One bit of a holding or input register."""
    STRING = "string"
    """`length` registers of text."""

    @property
    def words(self) -> int:
        """Registers (or bits) the value occupies; a string's length is per tag (0 here)."""
        if self in _LAYOUT:
            return _LAYOUT[self][1]
        return 0 if self == TagType.STRING else 1

    @property
    def is_float(self) -> bool:
        """True for IEEE 754 types."""
        return self in (TagType.FLOAT32, TagType.FLOAT64)

    @property
    def is_numeric(self) -> bool:
        """True for the integer and float types (which scale, offset and deadband apply to)."""
        return self in _LAYOUT

    @property
    def datatype(self) -> DataType:
        """The Sparkplug datatype of an unscaled value of this type."""
        if self in _LAYOUT:
            return _LAYOUT[self][2]
        return DataType.STRING if self == TagType.STRING else DataType.BOOLEAN


# type -> (struct format of the big-endian bytes, words, Sparkplug datatype)
_LAYOUT: dict[TagType, tuple[str, int, DataType]] = {
    TagType.UINT16: (">H", 1, DataType.UINT16),
    TagType.INT16: (">h", 1, DataType.INT16),
    TagType.UINT32: (">I", 2, DataType.UINT32),
    TagType.INT32: (">i", 2, DataType.INT32),
    TagType.FLOAT32: (">f", 2, DataType.FLOAT),
    TagType.UINT64: (">Q", 4, DataType.UINT64),
    TagType.INT64: (">q", 4, DataType.INT64),
    TagType.FLOAT64: (">d", 4, DataType.DOUBLE),
}

MAX_ADDRESS = 65535
MAX_STRING = MAX_REGISTERS
"""A string must fit one read."""


def _ordered_bytes(words: Sequence[int], byte_order: ByteOrder, word_order: ByteOrder) -> bytes:
    """The value's big-endian bytes from register words laid out as `byte_order`/`word_order`."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    return b"".join(w.to_bytes(2, byte_order) for w in ordered)


def _words_of(raw: bytes, byte_order: ByteOrder, word_order: ByteOrder) -> list[int]:
    """Inverse of `_ordered_bytes`: register words for big-endian bytes `raw`."""
    words = [int.from_bytes(raw[i : i + 2], byte_order) for i in range(0, len(raw), 2)]
    return words if word_order == "big" else list(reversed(words))


def decode_words(
    words: Sequence[int],
    kind: TagType,
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> int | float:
    """Decode register words into the raw value of `kind` (int or float); raise `TagError`."""
    if not kind.is_numeric:
        raise TagError(f"{kind} is not a number type")
    if len(words) != kind.words:
        raise TagError(f"{kind} needs {kind.words} register(s), got {len(words)}")
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise TagError(f"register value {word} is not a 16-bit word")
    fmt = _LAYOUT[kind][0]
    value: int | float = struct.unpack(fmt, _ordered_bytes(words, byte_order, word_order))[0]
    return value


def encode_words(
    value: int | float,
    kind: TagType,
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> list[int]:
    """Register words holding raw `value` as `kind`; raise `TagError` when it does not fit."""
    if not kind.is_numeric:
        raise TagError(f"{kind} is not a number type")
    fmt = _LAYOUT[kind][0]
    if not kind.is_float and isinstance(value, float | bool):
        raise TagError(f"{value!r} is not an integer for {kind}")
    try:
        raw = struct.pack(fmt, value)
    except (struct.error, OverflowError) as exc:
        raise TagError(f"{value!r} does not fit {kind}: {exc}") from exc
    return _words_of(raw, byte_order, word_order)


def decode_string(
    words: Sequence[int],
    encoding: Encoding = "ascii",
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> str:
    """Text from register words, two bytes each (`byte_order` "big": first character high).

    Trailing NULs are padding and are stripped; anything else that does not decode is an error.
    """
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise TagError(f"register value {word} is not a 16-bit word")
    raw = _ordered_bytes(words, byte_order, word_order).rstrip(b"\x00")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TagError(f"{raw!r} is not {encoding} text: {exc.reason}") from exc


def encode_string(
    text: str,
    length: int,
    encoding: Encoding = "ascii",
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> list[int]:
    """`length` register words holding `text`, NUL-padded; raise `TagError` when it does not fit."""
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise TagError(f"{text!r} is not {encoding} text: {exc.reason}") from exc
    if len(raw) > length * 2:
        raise TagError(f"{text!r} needs {len(raw)} bytes, more than {length} registers hold")
    return _words_of(raw.ljust(length * 2, b"\x00"), byte_order, word_order)


def decode_bit(word: int, bit: int) -> bool:
    """Bit `bit` (0 = least significant) of register `word`."""
    if not 0 <= word <= 0xFFFF:
        raise TagError(f"register value {word} is not a 16-bit word")
    return bool(word >> bit & 1)


def float32_decimal(value: float) -> Decimal:
    """The shortest decimal that reads back as the same float32 (62.1, not 62.099998...)."""
    if not math.isfinite(value):
        return Decimal(repr(value))
    target = struct.pack(">f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack(">f", float(text)) == target:
            return Decimal(text)
    return Decimal(repr(value))  # pragma: no cover - 9 significant digits always round-trip


@dataclass(frozen=True, slots=True)
class Tag:
    """One PLC value in the tag map: where it is, how it is laid out, how it is reported."""

    metric: str
    address: int
    type: TagType
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    scale: Decimal | None = None
    offset: Decimal | None = None
    deadband: Decimal = Decimal(0)
    writable: bool = False
    table: Table = Table.HOLDING
    bit: int | None = None
    """For `bit`: which bit of the register, 0 (least significant) to 15."""
    length: int | None = None
    """For `string`: registers of text (two bytes each)."""
    encoding: Encoding = "ascii"
    """For `string`: how its bytes are text."""
    min: Decimal | None = None
    """For a writable number: the least value a write may set (engineering units)."""
    max: Decimal | None = None
    """For a writable number: the greatest value a write may set (engineering units)."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise TagError(f"{self.metric or '(no metric)'}: {problem}")

    def _problem(self) -> str | None:
        if not self.metric:
            return "a tag needs a metric name"
        kind, table = self.type, self.table
        if table.is_bits and kind != TagType.BOOL:
            return f"a {table} is a single bit: its type is bool, not {kind}"
        if not table.is_bits and kind == TagType.BOOL:
            return f"bool is for coils and discrete inputs; use type bit for a bit of a {table}"
        if (kind == TagType.BIT) != (self.bit is not None):
            if self.bit is None:
                return "type bit needs `bit` (0..15)"
            return f"`bit` applies to type bit only, not to {kind} in a {table}"
        if self.bit is not None and not 0 <= self.bit <= 15:
            return f"bit {self.bit} is not within 0..15"
        if (kind == TagType.STRING) != (self.length is not None):
            if self.length is None:
                return "type string needs `length` (registers)"
            return f"`length` applies to type string only, not to {kind}"
        if self.length is not None and not 1 <= self.length <= MAX_STRING:
            return f"string length {self.length} is not within 1..{MAX_STRING} registers"
        if not kind.is_numeric and self.scaled:
            return f"scale and offset apply to numbers, not to {kind}"
        if not kind.is_numeric and self.deadband != 0:
            return f"deadband applies to numbers, not to {kind}"
        if self.writable and not table.writable:
            return f"a {table} is read-only on every Modbus device; it cannot be writable"
        if self.writable and kind == TagType.BIT:
            # Setting one bit means read-modify-write of a register the PLC also writes: racy.
            return "a bit inside a register cannot be writable (use a coil or the whole register)"
        if not self.address >= 0 or self.end > MAX_ADDRESS + 1:
            unit = "bit" if table.is_bits else "register"
            return f"a {kind} at {self.address} runs past {unit} {MAX_ADDRESS} (out of range)"
        if self.deadband < 0:
            return "deadband must be >= 0"
        if self.scale is not None and self.scale == 0:
            return "scale must not be 0"
        return self._range_problem()

    def _range_problem(self) -> str | None:
        if self.min is None and self.max is None:
            return None
        if not self.writable:
            return "min and max limit writes: they apply to writable tags only"
        if not self.type.is_numeric:
            return f"min and max apply to numbers, not to {self.type}"
        for name, limit in (("min", self.min), ("max", self.max)):
            if limit is not None and not limit.is_finite():
                return f"{name} must be a finite number, not {limit}"
        if self.min is not None and self.max is not None and self.min > self.max:
            return f"min {self.min} is greater than max {self.max}"
        return None

    @property
    def words(self) -> int:
        """Number of items (registers, or bits in a bit table) the tag occupies."""
        return self.length if self.length is not None else self.type.words

    @property
    def end(self) -> int:
        """One past the tag's last register (or bit)."""
        return self.address + self.words

    @property
    def scaled(self) -> bool:
        """True when scale or offset apply (the value is then an exact Decimal)."""
        return self.scale is not None or self.offset is not None

    @property
    def datatype(self) -> DataType:
        """The Sparkplug datatype the metric is published as."""
        # Sparkplug has no decimal type: scaled values travel as Double.
        return DataType.DOUBLE if self.scaled else self.type.datatype

    def decode(self, words: Sequence[int]) -> TagValue:
        """The engineering value of the tag's register words or bits (raw * scale + offset)."""
        kind = self.type
        if kind == TagType.BOOL:
            if len(words) != 1:
                raise TagError(f"{self.metric}: a bool needs 1 bit, got {len(words)}")
            return bool(words[0])
        if kind == TagType.BIT:
            if len(words) != 1:
                raise TagError(f"{self.metric}: a bit needs 1 register, got {len(words)}")
            assert self.bit is not None
            return decode_bit(words[0], self.bit)
        if kind == TagType.STRING:
            if len(words) != self.words:
                raise TagError(f"{self.metric}: string needs {self.words} registers")
            try:
                return decode_string(words, self.encoding, self.byte_order, self.word_order)
            except TagError as exc:
                raise TagError(f"{self.metric}: {exc}") from exc
        raw = decode_words(words, kind, self.byte_order, self.word_order)
        if not self.scaled:
            return raw
        return self.engineering(raw)

    def engineering(self, raw: int | float) -> Decimal:
        """Scaled tags: the exact engineering value of decoded `raw` (raw * scale + offset)."""
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise TagError(f"{self.metric}: {raw} cannot be scaled")
            exact = float32_decimal(raw) if self.type == TagType.FLOAT32 else Decimal(repr(raw))
        else:
            exact = Decimal(raw)
        scale = self.scale if self.scale is not None else Decimal(1)
        offset = self.offset if self.offset is not None else Decimal(0)
        return exact * scale + offset

    def encode(self, value: int | float | Decimal | bool | str) -> list[int]:
        """Register words that make the tag read `value` (inverse of `decode`, for writes).

        Only for holding-register tags: a coil is written with `encode_bit` (function code 5).
        """
        if self.table != Table.HOLDING or self.type == TagType.BIT:
            raise TagError(f"{self.metric}: a {self.type} in a {self.table} is not register words")
        if self.type == TagType.STRING:
            if not isinstance(value, str):
                raise TagError(f"{self.metric}: {value!r} is not text")
            assert self.length is not None
            args = (self.encoding, self.byte_order, self.word_order)
            return encode_string(value, self.length, *args)
        if isinstance(value, str):
            raise TagError(f"{self.metric}: {value!r} is not a number for {self.type}")
        if isinstance(value, bool):
            value = int(value)
        if not self.scaled:
            raw: int | float = float(value) if self.type.is_float else _integral(value, self)
            return encode_words(raw, self.type, self.byte_order, self.word_order)
        try:
            exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            scale = self.scale if self.scale is not None else Decimal(1)
            offset = self.offset if self.offset is not None else Decimal(0)
            unscaled = (exact - offset) / scale
        except InvalidOperation as exc:
            raise TagError(f"{self.metric}: {value!r} cannot be written") from exc
        raw = float(unscaled) if self.type.is_float else _integral(unscaled, self)
        return encode_words(raw, self.type, self.byte_order, self.word_order)

    def encode_bit(self, value: int | float | Decimal | bool | str) -> bool:
        """The coil state that makes this coil tag read `value` (True/False or 1/0)."""
        if self.table != Table.COIL:
            raise TagError(f"{self.metric}: a {self.table} is not a coil")
        if isinstance(value, bool):
            return value
        if not isinstance(value, str) and value in (0, 1):
            return bool(value)
        raise TagError(f"{self.metric}: {value!r} is not a coil state (true/false, 1/0)")

    def write_value(self, value: object) -> TagValue:
        """`value` (as a command carries it) checked for a write: type, then `min`/`max`.

        Raise `TagError` naming the problem: a read-only tag, a value of the wrong type (text
        for a number, a number for a coil other than 0/1, a bool for a number), a number that
        is not finite, or one outside the tag's range. Whether the raw value fits the
        register type is left to `encode`.
        """
        if not self.writable:
            raise TagError(f"{self.metric} is read-only in the tag map")
        kind = self.type
        if kind == TagType.BOOL:
            if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
                return bool(value)
            raise TagError(f"{self.metric}: {value!r} is not a coil state (true/false)")
        if kind == TagType.STRING:
            if isinstance(value, str):
                return value
            raise TagError(f"{self.metric}: {value!r} is not text")
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise TagError(f"{self.metric}: {value!r} is not a number for {kind}")
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not exact.is_finite():
            raise TagError(f"{self.metric}: {value!r} is not a finite number")
        if self.min is not None and exact < self.min:
            raise TagError(f"{self.metric}: {value!r} is below its minimum {self.min}")
        if self.max is not None and exact > self.max:
            raise TagError(f"{self.metric}: {value!r} is above its maximum {self.max}")
        return value

    def changed(self, old: TagValue | None, new: TagValue) -> bool:
        """Report by exception: True when `new` differs from `old` by more than the deadband."""
        if old is None:
            return True
        if isinstance(old, str | bool) or isinstance(new, str | bool):
            return old != new
        if _is_nan(old) or _is_nan(new):
            return not (_is_nan(old) and _is_nan(new))
        if self.deadband == 0 or not (_is_finite(old) and _is_finite(new)):
            return old != new
        return abs(_exact(new) - _exact(old)) > self.deadband


def _integral(value: int | float | Decimal, tag: Tag) -> int:
    if isinstance(value, int):
        return value
    exact = Decimal(repr(value)) if isinstance(value, float) else value
    if not exact.is_finite() or exact != exact.to_integral_value():
        raise TagError(f"{tag.metric}: {value!r} is not a whole number for {tag.type}")
    return int(exact)


def _exact(value: int | float | Decimal) -> Decimal:
    # Decimal(float) is the float's exact binary value: comparisons stay exact.
    return Decimal(value)


def _is_nan(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_nan()
    return isinstance(value, float) and math.isnan(value)


def _is_finite(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    return not isinstance(value, float) or math.isfinite(value)


def check_unique_metrics(tags: Iterable[Tag]) -> None:
    """Raise `TagError` when two tags publish the same metric name."""
    seen: set[str] = set()
    for tag in tags:
        if tag.metric in seen:
            raise TagError(f"metric {tag.metric!r} appears twice in the tag map")
        seen.add(tag.metric)


# A number's (byte order, word order) as a struct prefix over the block's words packed big-endian
# (False) or little-endian (True): for ``A B C D`` in big-endian words, "big"/"little" words read
# ``C D A B``, which packed little-endian is ``D C B A``: the value read little-endian.
_FAST_ORDER: dict[tuple[ByteOrder, ByteOrder], tuple[str, bool]] = {
    ("big", "big"): (">", False),
    ("little", "little"): ("<", False),
    ("little", "big"): (">", True),
    ("big", "little"): ("<", True),
}
_Unpack: TypeAlias = Callable[[bytes, int], tuple[int | float]]
_UNPACKERS: dict[str, _Unpack] = {}
"""Shared `Struct.unpack_from` per format: thousands of tags use a handful of layouts."""

# What one step of a block's decoding does (the first item of the step).
_NUMBER, _SCALED, _BOOL, _BIT, _TAG = range(5)
_Step: TypeAlias = tuple[int, int, bool, _Unpack]
"""(what, offset: bytes for numbers, words otherwise, little-endian words?, unpacker)."""


def _no_unpack(_buffer: bytes, _offset: int) -> tuple[int | float]:  # pragma: no cover
    raise AssertionError("bits and text are not unpacked")


class BlockDecoder:
    """Decodes every tag of one block read at once: exactly what `Tag.decode` gives each tag.

    The poll loop decodes every tag of every device on every change; slicing, joining and
    unpacking each tag on its own is most of its CPU. Here the block's words are packed once (a
    single C call that also checks each is a 16-bit word) and each number is unpacked in place by
    a shared precompiled `struct.Struct`. A reply of an unexpected length or holding a value that
    is not a 16-bit word goes tag by tag through `Tag.decode`, so values and errors are the same.
    A decoder keeps one small step per tag: a gateway holds tens of thousands.
    """

    __slots__ = ("_be", "_count", "_le", "_start", "_steps", "tags")

    def __init__(self, tags: Sequence[Tag], start: int, count: int) -> None:
        self.tags = tuple(tags)
        self._start = start
        self._count = count
        self._steps = tuple(_step(tag, tag.address - start) for tag in self.tags)
        registers = any(not tag.table.is_bits for tag in self.tags)
        self._be = struct.Struct(f">{count}H") if registers else None
        little = any(step[2] for step in self._steps)
        self._le = struct.Struct(f"<{count}H") if little else None

    def decode(self, words: Sequence[int]) -> list[TagValue]:
        """The value of each of `tags` from the block's words; raise `TagError` as they would."""
        if len(words) != self._count:
            return self._tag_by_tag(words)
        be = le = b""
        try:
            if self._be is not None:
                be = self._be.pack(*words)
            if self._le is not None:
                le = self._le.pack(*words)
        except struct.error:
            return self._tag_by_tag(words)
        out: list[TagValue] = []
        append = out.append
        for what, at, little, how in self._steps:
            if what == _NUMBER:
                append(how(le if little else be, at)[0])
            elif what == _BOOL:
                append(bool(words[at]))
            elif what == _SCALED:
                tag = self.tags[len(out)]
                append(tag.engineering(how(le if little else be, at)[0]))
            elif what == _BIT:
                bit = self.tags[len(out)].bit or 0  # a bit tag always has its bit
                append(bool(words[at] >> bit & 1))
            else:
                tag = self.tags[len(out)]
                append(tag.decode(words[at : at + tag.words]))
        return out

    def _tag_by_tag(self, words: Sequence[int]) -> list[TagValue]:
        start = self._start
        return [tag.decode(words[tag.address - start : tag.end - start]) for tag in self.tags]


def _step(tag: Tag, offset: int) -> _Step:
    """How to read `tag` at word `offset` of its block."""
    kind = tag.type
    if kind == TagType.BOOL:
        return (_BOOL, offset, False, _no_unpack)
    if kind == TagType.BIT:
        return (_BIT, offset, False, _no_unpack)
    if kind == TagType.STRING:
        return (_TAG, offset, False, _no_unpack)
    prefix, little = _FAST_ORDER[(tag.byte_order, tag.word_order)]
    fmt = prefix + _LAYOUT[kind][0][1:]
    unpack = _UNPACKERS.get(fmt)
    if unpack is None:
        unpack = _UNPACKERS[fmt] = struct.Struct(fmt).unpack_from
    return (_SCALED if tag.scaled else _NUMBER, offset * 2, little, unpack)
