"""The declarative tag map and the pure decoding of Modbus register words into values.

A tag says where a value lives (first holding register), how it is laid out (type, byte order
within each 16-bit word, order of the words) and how it is scaled. Decoding is pure: the same
words always give the same value, so it is tested without a PLC.

Byte and word order, for a 32-bit value whose big-endian bytes are ``A B C D``:

    byte_order  word_order  registers      common name
    big         big         [AB, CD]       ABCD (Modbus default)
    big         little      [CD, AB]       CDAB (word swap)
    little      big         [BA, DC]       BADC (byte swap)
    little      little      [DC, BA]       DCBA
"""

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Literal, TypeAlias

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import TagError

ByteOrder: TypeAlias = Literal["big", "little"]
TagValue: TypeAlias = int | float | Decimal
"""A decoded value: int or float as the type dictates, Decimal when scale/offset apply."""


class TagType(StrEnum):
    """Register layouts a tag can have."""

    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"
    UINT64 = "uint64"
    INT64 = "int64"
    FLOAT64 = "float64"

    @property
    def words(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return _LAYOUT[self][1]

    @property
    def is_float(self) -> bool:
        """True for IEEE 754 types."""
        return self in (TagType.FLOAT32, TagType.FLOAT64)

    @property
    def datatype(self) -> DataType:
        """The Sparkplug datatype of an unscaled value of this type."""
        return _LAYOUT[self][2]


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
    fmt = _LAYOUT[kind][0]
    if not kind.is_float and isinstance(value, float | bool):
        raise TagError(f"{value!r} is not an integer for {kind}")
    try:
        raw = struct.pack(fmt, value)
    except (struct.error, OverflowError) as exc:
        raise TagError(f"{value!r} does not fit {kind}: {exc}") from exc
    return _words_of(raw, byte_order, word_order)


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

    def __post_init__(self) -> None:
        if not self.metric:
            raise TagError("a tag needs a metric name")
        if not self.address >= 0 or self.end > MAX_ADDRESS + 1:
            raise TagError(f"{self.metric}: registers {self.address}..{self.end - 1} out of range")
        if self.deadband < 0:
            raise TagError(f"{self.metric}: deadband must be >= 0")
        if self.scale is not None and self.scale == 0:
            raise TagError(f"{self.metric}: scale must not be 0")

    @property
    def words(self) -> int:
        """Number of registers the tag occupies."""
        return self.type.words

    @property
    def end(self) -> int:
        """One past the tag's last register."""
        return self.address + self.type.words

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
        """The engineering value of the tag's register words (raw * scale + offset)."""
        raw = decode_words(words, self.type, self.byte_order, self.word_order)
        if not self.scaled:
            return raw
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise TagError(f"{self.metric}: {raw} cannot be scaled")
            exact = float32_decimal(raw) if self.type == TagType.FLOAT32 else Decimal(repr(raw))
        else:
            exact = Decimal(raw)
        scale = self.scale if self.scale is not None else Decimal(1)
        offset = self.offset if self.offset is not None else Decimal(0)
        return exact * scale + offset

    def encode(self, value: int | float | Decimal | bool) -> list[int]:
        """Register words that make the tag read `value` (inverse of `decode`, for writes)."""
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

    def changed(self, old: TagValue | None, new: TagValue) -> bool:
        """Report by exception: True when `new` differs from `old` by more than the deadband."""
        if old is None:
            return True
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


def _exact(value: TagValue) -> Decimal:
    # Decimal(float) is the float's exact binary value: comparisons stay exact.
    return Decimal(value)


def _is_nan(value: TagValue) -> bool:
    if isinstance(value, Decimal):
        return value.is_nan()
    return isinstance(value, float) and math.isnan(value)


def _is_finite(value: TagValue) -> bool:
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
