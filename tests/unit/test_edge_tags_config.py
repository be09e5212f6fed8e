"""Tag map entries in the edge config: tables, bits, strings, and every bad combination refused."""

from __future__ import annotations

import pytest

from taktline_edge.config import parse_config
from taktline_edge.errors import EdgeConfigError
from taktline_edge.tags import Table, TagType

HEAD = """\
sparkplug: {group_id: P, edge_node_id: G, primary_host_id: H}
mqtt: {host: 127.0.0.1, client_id: edge}
outbox: {path: outbox.db}
devices:
  - id: M1
    modbus: {host: 127.0.0.1, port: 5020, unit_id: 7}
    tags:
"""


def _config(*tags: str) -> str:
    return HEAD + "".join(f"      - {tag}\n" for tag in tags)


def test_every_table_and_type_loads_into_runtime_tags() -> None:
    config = parse_config(
        _config(
            "{metric: Run, address: 0, table: coil, writable: true}",
            "{metric: Door, address: 3, table: discrete, type: bool}",
            "{metric: Alarm, address: 10, table: input, type: bit, bit: 15}",
            "{metric: Ready, address: 11, type: bit, bit: 0}",
            "{metric: Order, address: 20, type: string, length: 8, encoding: utf-8,"
            " byte_order: little}",
            "{metric: Speed, address: 30, table: input, type: float64, word_order: little}",
        )
    )
    device = config.devices[0]
    assert device.modbus.unit_id == 7
    run, door, alarm, ready, order, speed = device.to_tags()
    assert (run.table, run.type, run.writable) == (Table.COIL, TagType.BOOL, True)
    assert (door.table, door.type) == (Table.DISCRETE, TagType.BOOL)
    assert (alarm.table, alarm.type, alarm.bit) == (Table.INPUT, TagType.BIT, 15)
    assert (ready.table, ready.bit) == (Table.HOLDING, 0)
    assert (order.length, order.encoding, order.byte_order, order.end) == (8, "utf-8", "little", 28)
    assert (speed.table, speed.type, speed.word_order) == (Table.INPUT, TagType.FLOAT64, "little")


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("{metric: X, address: 0, table: coil, type: bit, bit: 1}", "its type is bool, not bit"),
        ("{metric: X, address: 0, table: coil, bit: 1}", "`bit` applies to type bit only"),
        ("{metric: X, address: 0, table: discrete, type: uint16}", "type is bool, not uint16"),
        ("{metric: X, address: 0, type: bool}", "use type bit for a bit of a holding"),
        ("{metric: X, address: 0}", "type is required for a tag in the holding table"),
        ("{metric: X, address: 0, type: bit}", "type bit needs `bit`"),
        ("{metric: X, address: 0, type: bit, bit: 16}", "less than or equal to 15"),
        ("{metric: X, address: 0, type: string}", "type string needs `length`"),
        ("{metric: X, address: 0, type: uint32, length: 2}", "`length` applies to type string"),
        ("{metric: X, address: 0, type: string, length: 200}", "not within 1..125"),
        ("{metric: X, address: 0, type: string, length: 2, encoding: latin-1}", "'ascii'"),
        ("{metric: X, address: 0, table: input, type: uint16, writable: true}", "read-only"),
        ("{metric: X, address: 0, type: bit, bit: 2, writable: true}", "cannot be writable"),
        ("{metric: X, address: 0, table: coil, scale: 2}", "scale and offset apply to numbers"),
        ("{metric: X, address: 0, table: register, type: uint16}", "'holding'"),
        ("{metric: X, address: 65535, table: coil, type: bool, colour: red}", "unknown key"),
    ],
)
def test_bad_tags_name_the_line_and_field(tag: str, message: str) -> None:
    text = _config("{metric: OK, address: 100, type: uint16}", tag)
    with pytest.raises(EdgeConfigError) as caught:
        parse_config(text, source="edge.yaml")
    error = str(caught.value)
    assert error.startswith("edge.yaml:9: devices[0].tags[1]"), error
    assert message in error
