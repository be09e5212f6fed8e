"""`taktline-edge browse`: an OPC UA server's address space as an edge config the agent loads.

Every object directly below the root becomes a device (id: its browse name); the variables
below it, at any depth, become its tags (metric: the browse path below the device, joined by
``/``; type: the Sparkplug datatype of the value's variant type). Variables directly below the
root form one device named after the root. With `device` given, everything below the root is
one device (metric: the whole path) - one session for a PLC that allows only a few.
Variables whose type the agent cannot carry (strings, arrays, structures) are listed as
comments, not tags. The sparkplug, mqtt and outbox sections are placeholders to edit.

The text written is first validated with the agent's own config loader, so what `browse`
writes, `taktline-edge check` accepts and the agent runs.
"""

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from taktline_edge.config import OPCUA_DATATYPES, OpcUaConfig, parse_config
from taktline_edge.drivers.opcua import BrowsedVariable, BrowseResult, browse_variables
from taktline_edge.errors import DriverError, EdgeConfigError

EXIT_FAILED = 1
EXIT_USAGE = 2
_NOT_AN_ID = re.compile(r"[/+#\s]+")
_NAMES = {datatype: name for name, datatype in OPCUA_DATATYPES.items()}


def device_id(name: str) -> str:
    """`name` as a Sparkplug id (no '/', '+', '#' or spaces)."""
    return _NOT_AN_ID.sub("_", name.strip()) or "device"


@dataclass(frozen=True, slots=True)
class BrowseOptions:
    """What to browse and how the written config connects."""

    endpoint: str
    root: str | None = None
    username: str | None = None
    password_env: str | None = None
    """Name of the environment variable holding the password (written to the config too)."""
    device: str | None = None
    """One device with this id for everything below the root (default: one per object)."""
    timeout_s: float = 5.0

    def opcua_section(self) -> dict[str, Any]:
        """The ``opcua`` mapping of each written device."""
        section: dict[str, Any] = {"endpoint": self.endpoint}
        if self.username:
            section["username"] = self.username
        if self.password_env:
            section["password_env"] = self.password_env
        return section


def tag_map(
    result: BrowseResult, opcua: Mapping[str, Any], device: str | None = None
) -> tuple[list[dict[str, Any]], list[BrowsedVariable]]:
    """Devices (as config mappings) from `result`, and the variables left out."""
    metrics: dict[str, set[str]] = {}  # device -> its metrics so far
    tags: dict[str, list[dict[str, Any]]] = {}
    skipped: list[BrowsedVariable] = []
    for variable in result.variables:
        if variable.datatype is None or variable.datatype not in _NAMES:
            skipped.append(variable)
            continue
        if device is not None:
            owner, path = device_id(device), variable.path
        elif len(variable.path) == 1:
            owner, path = device_id(result.root_name), variable.path
        else:
            owner, path = device_id(variable.path[0]), variable.path[1:]
        taken = metrics.setdefault(owner, set())
        metric = _unique("/".join(path), taken)
        taken.add(metric)
        tags.setdefault(owner, []).append(
            {"metric": metric, "node_id": variable.node_id, "type": _NAMES[variable.datatype]}
        )
    return [
        {"id": owner, "opcua": dict(opcua), "tags": device_tags}
        for owner, device_tags in tags.items()
    ], skipped


def _unique(metric: str, taken: set[str]) -> str:
    """`metric`, or `metric_2`, `metric_3`... when two nodes share a browse path."""
    candidate, n = metric, 1
    while candidate in taken:
        n += 1
        candidate = f"{metric}_{n}"
    return candidate


def render(result: BrowseResult, options: BrowseOptions) -> str:
    """The YAML text of an edge config for `result`."""
    devices, skipped = tag_map(result, options.opcua_section(), options.device)
    config = {
        "sparkplug": {"group_id": "PLANT", "edge_node_id": "GATEWAY", "primary_host_id": "HOST"},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "client_id": "taktline-edge"},
        "outbox": {"path": "outbox.db"},
        "devices": devices,
    }
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    root = f" --root {options.root}" if options.root else ""
    lines = [
        f"# Written by `taktline-edge browse --endpoint {options.endpoint}{root}` at {stamp}.",
        "# Edit the sparkplug, mqtt and outbox sections; check with `taktline-edge check`.",
    ]
    lines += [_comment(f"not a tag ({v.variant}): {'/'.join(v.path)} {v.node_id}") for v in skipped]
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False, width=100)


def _comment(text: str) -> str:
    """`text` as one YAML comment line (a browse name may hold a line break)."""
    return "# " + " ".join(text.splitlines())


def write(path: Path, text: str) -> None:
    """Write `text` to `path` (creating its directory; replaced whole or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


async def browse_config(options: BrowseOptions, password: str | None) -> tuple[str, int, int]:
    """Browse the server: the config text, its device count and tag count.

    Raises `DriverError` when the server cannot be browsed or offers nothing to carry.
    """
    result = await browse_variables(
        options.endpoint,
        options.root,
        timeout_s=options.timeout_s,
        username=options.username,
        password=password,
    )
    text = render(result, options)
    devices, _ = tag_map(result, options.opcua_section(), options.device)
    tags = sum(len(d["tags"]) for d in devices)
    if not tags:
        where = f"below {options.root}" if options.root else "below Objects"
        found = len(result.variables)
        raise DriverError(
            f"{options.endpoint}: no variable of a type the agent carries {where}"
            f" ({found} variable(s) found, none a number or boolean)"
        )
    try:
        parse_config(text, source="<browsed config>")
    except EdgeConfigError as exc:  # a bug here, not the user's: say what was produced
        raise DriverError(f"the browsed config does not validate:\n{exc}") from exc
    return text, len(devices), tags


def browse_command(
    options: BrowseOptions, output: Path, *, force: bool, environ: Mapping[str, str] = os.environ
) -> int:
    """`taktline-edge browse`: write the config to `output`; returns the exit code."""
    try:
        OpcUaConfig(endpoint=options.endpoint)
    except ValidationError:
        return _fail(
            EXIT_USAGE, f"--endpoint {options.endpoint!r} must look like opc.tcp://host:port"
        )
    if options.password_env and not options.username:
        return _fail(EXIT_USAGE, "--password-env needs --username")
    password = None
    if options.password_env:
        password = environ.get(options.password_env)
        if password is None:
            return _fail(EXIT_USAGE, f"--password-env {options.password_env}: it is not set")
    if options.device is not None and device_id(options.device) != options.device:
        return _fail(EXIT_USAGE, f"--device {options.device!r}: no '/', '+', '#' or spaces")
    if output.exists() and not force:
        return _fail(EXIT_FAILED, f"{output} exists; pass --force to replace it")
    try:
        text, devices, tags = asyncio.run(browse_config(options, password))
    except DriverError as exc:
        return _fail(EXIT_FAILED, str(exc))
    write(output, text)
    print(f"{output}: {devices} device(s), {tags} tag(s) from {options.endpoint}")  # noqa: T201
    return 0


def add_browse_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``browse`` subcommand to the CLI's subparsers."""
    browse = commands.add_parser(
        "browse", help="browse an OPC UA server and write an edge config for its variables"
    )
    browse.add_argument("--endpoint", required=True, help="opc.tcp://host:port[/path]")
    browse.add_argument("--root", help="node id to browse below (default: the Objects folder)")
    browse.add_argument("--username", help="user name (default: anonymous)")
    browse.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the password"
    )
    browse.add_argument(
        "--device", help="one device with this id for every variable (default: one per object)"
    )
    browse.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    browse.add_argument("--output", type=Path, required=True, help="edge config YAML to write")
    browse.add_argument("--force", action="store_true", help="replace --output if it exists")


def run_browse(args: argparse.Namespace) -> int:
    """Run the ``browse`` subcommand parsed by `add_browse_command`; returns the exit code."""
    # Errors are reported once by this command; asyncua's own warnings are noise here.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    options = BrowseOptions(
        endpoint=args.endpoint,
        root=args.root,
        username=args.username,
        password_env=args.password_env,
        device=args.device,
        timeout_s=args.timeout,
    )
    return browse_command(options, args.output, force=args.force)


def _fail(code: int, message: str) -> int:
    print(f"taktline-edge browse: {message}", file=sys.stderr)  # noqa: T201
    return code
