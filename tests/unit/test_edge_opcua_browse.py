"""`taktline-edge browse`'s mapping of browsed variables to devices and tags (pure logic)."""

from __future__ import annotations

from taktline_contract.sparkplug import DataType
from taktline_edge.config import parse_config
from taktline_edge.drivers.opcua import BrowsedVariable, BrowseResult
from taktline_edge.opcua_browse import BrowseOptions, device_id, render, tag_map

ENDPOINT = "opc.tcp://plc:4840"


def var(path: str, node_id: str, datatype: DataType | None, variant: str = "x") -> BrowsedVariable:
    return BrowsedVariable(tuple(path.split("/")), node_id, datatype, variant)


RESULT = BrowseResult(
    "Line 1",
    (
        var("Press 1/Good", "ns=2;i=1", DataType.UINT32),
        var("Press 1/Drive/Speed", "ns=2;i=2", DataType.FLOAT),
        var("Press 1/Good", "ns=3;i=1", DataType.UINT32),  # same browse path, other namespace
        var("Press 1/Name", "ns=2;i=3", None, "String"),
        var("Running", "ns=2;i=4", DataType.BOOLEAN),
    ),
)


def test_one_device_per_object_and_one_for_variables_directly_below_the_root() -> None:
    devices, skipped = tag_map(RESULT, {"endpoint": ENDPOINT})
    assert [(d["id"], [t["metric"] for t in d["tags"]]) for d in devices] == [
        ("Press_1", ["Good", "Drive/Speed", "Good_2"]),
        ("Line_1", ["Running"]),
    ]
    assert devices[0]["tags"][2] == {"metric": "Good_2", "node_id": "ns=3;i=1", "type": "UInt32"}
    assert devices[0]["opcua"] == {"endpoint": ENDPOINT}
    assert [v.node_id for v in skipped] == ["ns=2;i=3"]


def test_one_named_device_takes_every_variable_with_its_whole_path() -> None:
    devices, _ = tag_map(RESULT, {"endpoint": ENDPOINT}, device="L1")
    assert [d["id"] for d in devices] == ["L1"]
    assert [t["metric"] for t in devices[0]["tags"]] == [
        "Press 1/Good",
        "Press 1/Drive/Speed",
        "Press 1/Good_2",
        "Running",
    ]


def test_rendered_config_validates_and_lists_what_it_left_out() -> None:
    options = BrowseOptions(ENDPOINT, username="op", password_env="PLC_PASSWORD")
    text = render(RESULT, options)
    assert "# not a tag (String): Press 1/Name ns=2;i=3" in text
    config = parse_config(text)
    assert [d.id for d in config.devices] == ["Press_1", "Line_1"]
    opcua = config.devices[0].opcua
    assert opcua is not None
    assert (opcua.username, opcua.password_env) == ("op", "PLC_PASSWORD")


def test_device_ids_are_sparkplug_ids() -> None:
    assert device_id(" Press #1/A+B ") == "Press_1_A_B"
    assert device_id("   ") == "device"
