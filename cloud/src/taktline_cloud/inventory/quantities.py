"""Exact quantities: canonical Decimal form and human display."""

from __future__ import annotations

from decimal import Decimal


def canonical(value: Decimal) -> Decimal:
    """The same number without trailing zeros and never in exponent form (6000, 2.5)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def plain(value: Decimal) -> str:
    """The canonical number as a string: "6000", "2.5", "-3"."""
    return format(canonical(value), "f")


def display(value: Decimal) -> str:
    """The canonical number with thousands separators for sentences: "1,000", "2,100.5"."""
    return format(canonical(value), ",f")
