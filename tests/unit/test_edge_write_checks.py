"""What a DCMD may write: writable tags only, values of the tag's type within its `min`/`max`."""

from __future__ import annotations

from decimal import Decimal

import pytest

from taktline_edge.config import parse_config
from taktline_edge.errors import EdgeConfigError, TagError
from taktline_edge.tags import Table, Tag, TagType

HEAD = """\
sparkplug: {group_id: P, edge_node_id: G, primary_host_id: H}
mqtt: {host: 127.0.0.1, client_id: edge}
outbox: {path: outbox.db}
devices:
  - id: M1
    modbus: {host: 127.0.0.1, port: 5020}
    tags:
"""

SPEED = Tag(
    "Control/Speed",
    100,
    TagType.UINT16,
    scale=Decimal("0.1"),
    writable=True,
    min=Decimal(0),
    max=Decimal(150),
)
RUN = Tag("Control/Run", 3, TagType.BOOL, table=Table.COIL, writable=True)


def test_min_and_max_load_from_the_config_as_exact_decimals() -> None:
    config = parse_config(
        HEAD + "      - {metric: Speed, address: 0, type: int16, scale: 0.1, writable: true,"
        " min: -12.5, max: 80.1}\n"
    )
    (tag,) = config.devices[0].to_tags()
    assert (tag.min, tag.max) == (Decimal("-12.5"), Decimal("80.1"))


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("{metric: X, address: 0, type: uint16, min: 0}", "writable tags only"),
        ("{metric: X, address: 0, type: uint16, writable: true, min: 5, max: 1}", "greater than"),
        ("{metric: X, address: 0, table: coil, writable: true, max: 1}", "apply to numbers"),
        ("{metric: X, address: 0, type: uint16, writable: true, max: .nan}", "finite"),
        ("{metric: X, address: 0, type: uint16, writable: true, min: low}", "decimal"),
    ],
)
def test_bad_ranges_name_the_line_and_field(tag: str, message: str) -> None:
    with pytest.raises(EdgeConfigError) as caught:
        parse_config(HEAD + f"      - {tag}\n", source="edge.yaml")
    error = str(caught.value)
    assert error.startswith("edge.yaml:8: devices[0].tags[0]"), error
    assert message in error


def test_a_value_within_range_is_accepted_as_sent() -> None:
    assert SPEED.write_value(12.5) == 12.5
    assert SPEED.write_value(0) == 0
    assert SPEED.write_value(150.0) == 150.0
    assert SPEED.encode(SPEED.write_value(12.5)) == [125]
    assert RUN.write_value(True) is True
    assert RUN.write_value(0) is False


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        (SPEED, 150.05, "above its maximum 150"),
        (SPEED, -0.1, "below its minimum 0"),
        (SPEED, "fast", "not a number"),
        (SPEED, True, "not a number"),
        (SPEED, None, "not a number"),
        (SPEED, float("nan"), "not a finite number"),
        (SPEED, float("inf"), "not a finite number"),
        (RUN, 7, "not a coil state"),
        (RUN, "on", "not a coil state"),
        (RUN, 1.0, "not a coil state"),
        (Tag("Order", 20, TagType.STRING, length=2, writable=True), 5, "not text"),
        (Tag("Count", 0, TagType.UINT32), 1, "read-only"),
    ],
)
def test_a_bad_value_is_refused_with_the_reason(tag: Tag, value: object, message: str) -> None:
    with pytest.raises(TagError, match=message):
        tag.write_value(value)


def test_range_is_checked_exactly_in_engineering_units() -> None:
    tight = Tag("Temp", 0, TagType.FLOAT32, writable=True, min=Decimal("0.1"), max=Decimal("0.3"))
    # 0.1 + 0.2 is 0.30000000000000004 as a float: above a max of 0.3, exactly.
    with pytest.raises(TagError, match="above"):
        tight.write_value(0.1 + 0.2)
    assert tight.write_value(0.3) == 0.3
    assert tight.write_value(0.1) == 0.1


def test_a_tag_without_range_takes_what_its_type_holds() -> None:
    tag = Tag("Setpoint", 0, TagType.INT16, writable=True)
    assert tag.write_value(-32768) == -32768
    with pytest.raises(TagError, match="does not fit"):
        tag.encode(tag.write_value(40000))
