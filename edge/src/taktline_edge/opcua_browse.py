"""`taktline-edge browse`: an OPC UA server's address space as an edge config the agent loads.

Every object directly below the root becomes a device (id: its browse name); the variables
below it, at any depth, become its tags (metric: the browse path below the device, joined by
``/``; type: the Sparkplug datatype of the value's variant type). Variables directly below the
root form one device named after the root. Variables whose type the agent cannot carry
(strings, arrays, structures) are listed as comments, not tags. The sparkplug, mqtt and outbox
sections are placeholders to edit; `taktline-edge check` validates the result.
"""

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from taktline_edge.config import OPCUA_DATATYPES
from taktline_edge.drivers.opcua import BrowsedVariable

_NOT_AN_ID = re.compile(r"[/+#\s]+")
_NAMES = {datatype: name for name, datatype in OPCUA_DATATYPES.items()}


def device_id(name: str) -> str:
    """`name` as a Sparkplug id (no '/', '+', '#' or spaces)."""
    return _NOT_AN_ID.sub("_", name.strip()) or "device"


def tag_map(
    variables: Sequence[BrowsedVariable], endpoint: str, root_name: str = "Objects"
) -> tuple[list[dict[str, Any]], list[BrowsedVariable]]:
    """Devices (as config mappings) from `variables`, and the variables left out."""
    devices: dict[str, list[dict[str, Any]]] = {}
    skipped: list[BrowsedVariable] = []
    for variable in variables:
        if variable.datatype is None or variable.datatype not in _NAMES:
            skipped.append(variable)
            continue
        if len(variable.path) == 1:
            device, metric = device_id(root_name), variable.path[0]
        else:
            device, metric = device_id(variable.path[0]), "/".join(variable.path[1:])
        devices.setdefault(device, []).append(
            {"metric": metric, "node_id": variable.node_id, "type": _NAMES[variable.datatype]}
        )
    return [
        {"id": device, "opcua": {"endpoint": endpoint}, "tags": tags}
        for device, tags in devices.items()
    ], skipped


def render(variables: Sequence[BrowsedVariable], endpoint: str, root_name: str = "Objects") -> str:
    """The YAML text of an edge config for `variables`."""
    devices, skipped = tag_map(variables, endpoint, root_name)
    config = {
        "sparkplug": {"group_id": "PLANT", "edge_node_id": "GATEWAY", "primary_host_id": "HOST"},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "client_id": "taktline-edge"},
        "outbox": {"path": "outbox.db"},
        "devices": devices,
    }
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [
        f"# Written by `taktline-edge browse --endpoint {endpoint}` at {stamp}.",
        "# Edit the sparkplug, mqtt and outbox sections; check with `taktline-edge check`.",
    ]
    lines += [f"# not a tag ({v.variant}): {'/'.join(v.path)} {v.node_id}" for v in skipped]
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False, width=100)


def write(path: Path, text: str) -> None:
    """Write `text` to `path` (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
