"""The simulated machines over OPC UA: one asyncua server, a folder per machine.

Fed by the same `LineModel` as the Modbus servers (``run_plant(...).model``): this server only
reads snapshots, the Modbus side's tick steps the model. Address space (namespace
``urn:taktline:simulators``)::

    Objects/<machine id>/GoodCount (UInt32), ScrapCount (UInt32), State (UInt16),
                         CycleTimeMs (UInt32), Temperature (Double)

Node ids are strings: ``ns=<i>;s=<machine id>.<variable>``.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from taktline_simulators.machine import LineModel, MachineSnapshot

NAMESPACE: Final = "urn:taktline:simulators"
_REFRESH_S: Final = 0.05
_VARIABLES: Final = (
    ("GoodCount", ua.VariantType.UInt32),
    ("ScrapCount", ua.VariantType.UInt32),
    ("State", ua.VariantType.UInt16),
    ("CycleTimeMs", ua.VariantType.UInt32),
    ("Temperature", ua.VariantType.Double),
)


def _values(snapshot: MachineSnapshot) -> tuple[float, ...]:
    return (
        snapshot.good,
        snapshot.scrap,
        int(snapshot.state),
        snapshot.cycle_time_ms,
        snapshot.temperature_c,
    )


class _Users(UserManager):
    """Username/password check (anonymous refused when users are configured)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User)
        return None


@dataclass(frozen=True)
class OpcUaPlant:
    """A running OPC UA server of the simulated plant."""

    endpoint: str
    namespace_index: int

    def node_id(self, machine_id: str, variable: str) -> str:
        """The node id of one machine's variable."""
        return f"ns={self.namespace_index};s={machine_id}.{variable}"


@contextlib.asynccontextmanager
async def serve_opcua(
    model: LineModel,
    host: str = "127.0.0.1",
    port: int = 4840,
    users: Mapping[str, str] | None = None,
) -> AsyncIterator[OpcUaPlant]:
    """Serve `model`'s machines over OPC UA (no security) until the block exits."""
    server = Server(user_manager=_Users(users) if users else None)
    await server.init()
    endpoint = f"opc.tcp://{host}:{port}/taktline/"
    server.set_endpoint(endpoint)
    server.set_server_name("Taktline simulated plant")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    index = await server.register_namespace(NAMESPACE)
    nodes: dict[str, list[Node]] = {}
    for machine in model.machines:
        folder = await server.nodes.objects.add_folder(f"ns={index};s={machine.id}", machine.id)
        snapshot = model.snapshot(machine.id)
        nodes[machine.id] = [
            await folder.add_variable(
                f"ns={index};s={machine.id}.{name}",
                f"{index}:{name}",
                ua.Variant(value, kind),
            )
            for (name, kind), value in zip(_VARIABLES, _values(snapshot), strict=True)
        ]
    await server.start()
    try:
        async with asyncio.TaskGroup() as tasks:
            refresher = tasks.create_task(_refresh(model, nodes), name="taktline-sim opcua")
            try:
                yield OpcUaPlant(endpoint, index)
            finally:
                refresher.cancel()
    finally:
        await server.stop()


async def _refresh(model: LineModel, nodes: Mapping[str, list[Node]]) -> None:
    """Copy the model's snapshots into the address space (only values that changed)."""
    last: dict[str, tuple[float, ...]] = {}
    while True:
        for machine_id, variables in nodes.items():
            values = _values(model.snapshot(machine_id))
            before = last.get(machine_id)
            for i, ((_, kind), node) in enumerate(zip(_VARIABLES, variables, strict=True)):
                if before is None or before[i] != values[i]:
                    await node.write_value(ua.Variant(values[i], kind))
            last[machine_id] = values
        await asyncio.sleep(_REFRESH_S)
