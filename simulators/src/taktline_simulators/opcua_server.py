"""The simulated machines over OPC UA: one asyncua server, a folder per machine.

Fed by the same `LineModel` as the Modbus servers (``run_plant(...).model``): this server only
reads snapshots, the Modbus side's tick steps the model. Address space (namespace
``urn:taktline:simulators``)::

    Objects/<machine id>/GoodCount (UInt32), ScrapCount (UInt32), State (UInt16),
                         CycleTimeMs (UInt32), Temperature (Double)
                        [SpeedPct (UInt16, writable), RunEnabled (Boolean, writable)]

The two controls (``controls=True``) are writable by clients and act on the model as the Modbus
control block does; a speed outside 0..MAX_SPEED_PCT is refused with BadOutOfRange. Node ids are
strings: ``ns=<i>;s=<machine id>.<variable>``.

Security, as a plant's server is configured: `security` lists the endpoints offered (None, and
Basic256Sha256 Sign / SignAndEncrypt; the server's certificate is generated when none is given),
`users` the username/password pairs and `user_certificates` the X.509 user certificates accepted;
anonymous users are accepted only when neither is given. `OpcUaPlant.set_bad` turns a variable's
status Bad (a failed sensor) until `clear_bad`.
"""

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen, uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import NodeData
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from taktline_simulators.errors import IllegalValueError
from taktline_simulators.machine import LineModel, Machine, MachineSnapshot

NAMESPACE: Final = "urn:taktline:simulators"
APPLICATION_URI: Final = "urn:taktline:simulators:opcua"
_REFRESH_S: Final = 0.05
_VARIABLES: Final = (
    ("GoodCount", ua.VariantType.UInt32),
    ("ScrapCount", ua.VariantType.UInt32),
    ("State", ua.VariantType.UInt16),
    ("CycleTimeMs", ua.VariantType.UInt32),
    ("Temperature", ua.VariantType.Double),
)
_CONTROLS: Final = (
    ("SpeedPct", ua.VariantType.UInt16),
    ("RunEnabled", ua.VariantType.Boolean),
)
Security = Literal["None", "Sign", "SignAndEncrypt"]
_POLICIES: Final[Mapping[Security, ua.SecurityPolicyType]] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


def _values(snapshot: MachineSnapshot, controls: bool) -> tuple[float, ...]:
    values: tuple[float, ...] = (
        snapshot.good,
        snapshot.scrap,
        int(snapshot.state),
        snapshot.cycle_time_ms,
        snapshot.temperature_c,
    )
    if controls:
        values += (snapshot.speed_pct, snapshot.run_enabled)
    return values


class _Users(UserManager):
    """Username/password and X.509 user certificates (anonymous refused by the token types)."""

    def __init__(self, users: Mapping[str, str], certificates: Sequence[bytes]) -> None:
        self._users = dict(users)
        self._certificates = frozenset(certificates)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None:
            if self._users.get(username) == password:
                return User(role=UserRole.User, name=username)
            return None
        # Without a username this is an X.509 user token's certificate, already verified.
        if isinstance(certificate, x509.Certificate):
            certificate = certificate.public_bytes(Encoding.DER)
        if certificate in self._certificates:
            return User(role=UserRole.User, name="certificate")
        return None


@dataclass(frozen=True)
class OpcUaPlant:
    """A running OPC UA server of the simulated plant."""

    endpoint: str
    namespace_index: int
    server: Server = field(repr=False, compare=False)
    """The asyncua server (for tests that look at its sessions and subscriptions)."""
    certificate: bytes | None = field(default=None, repr=False, compare=False)
    """The server's application certificate (DER), None without security."""
    _nodes: Mapping[str, Mapping[str, Node]] = field(default_factory=dict, repr=False)
    _faults: set[tuple[str, str]] = field(default_factory=set, repr=False, compare=False)

    def node_id(self, machine_id: str, variable: str) -> str:
        """The node id of one machine's variable."""
        return f"ns={self.namespace_index};s={machine_id}.{variable}"

    async def set_bad(
        self,
        machine_id: str,
        variable: str,
        status: int = StatusCodes.BadSensorFailure,
    ) -> None:
        """Give the variable a Bad `status` (and no value) until `clear_bad`."""
        if not ua.StatusCode(ua.UInt32(status)).is_bad():
            raise ValueError(f"0x{status:08X} is not a Bad status code")
        node = self._nodes[machine_id][variable]
        self._faults.add((machine_id, variable))
        now = datetime.now(UTC)
        await node.write_value(
            ua.DataValue(
                StatusCode=ua.StatusCode(ua.UInt32(status)), SourceTimestamp=cast(ua.DateTime, now)
            )
        )

    async def clear_bad(self, machine_id: str, variable: str) -> None:
        """Let the model's value through again (written at the next refresh)."""
        self._faults.discard((machine_id, variable))


@contextlib.asynccontextmanager
async def serve_opcua(
    model: LineModel,
    host: str = "127.0.0.1",
    port: int = 4840,
    users: Mapping[str, str] | None = None,
    *,
    security: Sequence[Security] = ("None",),
    certificate: Path | None = None,
    private_key: Path | None = None,
    user_certificates: Sequence[Path] = (),
    controls: bool = False,
) -> AsyncIterator[OpcUaPlant]:
    """Serve `model`'s machines over OPC UA until the block exits (see the module docstring).

    `certificate` (DER or PEM) and `private_key` (PEM) are the server's own; with security and
    neither given, a self-signed pair is generated for this run.
    """
    if not security:
        raise ValueError("security: offer at least one endpoint")
    unknown = sorted(set(security) - set(_POLICIES))
    if unknown:
        raise ValueError(f"security: unknown mode(s) {', '.join(unknown)}")
    if (certificate is None) != (private_key is None):
        raise ValueError("certificate and private_key go together")
    trusted = [
        (await uacrypto.load_certificate(path)).public_bytes(Encoding.DER)
        for path in user_certificates
    ]
    server = Server(user_manager=_Users(users or {}, trusted) if users or trusted else None)
    await server.init()
    endpoint = f"opc.tcp://{host}:{port}/taktline/"
    server.set_endpoint(endpoint)
    server.set_server_name("Taktline simulated plant")
    await server.set_application_uri(APPLICATION_URI)
    own_certificate: bytes | None = None
    if any(mode != "None" for mode in security):
        own_certificate = await _load_identity(server, host, certificate, private_key)
    server.set_security_policy([_POLICIES[mode] for mode in security])
    tokens: list[type] = []
    if users:
        tokens.append(ua.UserNameIdentityToken)
    if trusted:
        tokens.append(ua.X509IdentityToken)
    server.set_identity_tokens(tokens or [ua.AnonymousIdentityToken])
    index = await server.register_namespace(NAMESPACE)
    kinds = _VARIABLES + (_CONTROLS if controls else ())
    nodes: dict[str, dict[str, Node]] = {}
    for machine in model.machines:
        folder = await server.nodes.objects.add_folder(f"ns={index};s={machine.id}", machine.id)
        values = _values(model.snapshot(machine.id), controls)
        nodes[machine.id] = {
            name: await folder.add_variable(
                f"ns={index};s={machine.id}.{name}", f"{index}:{name}", ua.Variant(value, kind)
            )
            for (name, kind), value in zip(kinds, values, strict=True)
        }
        if controls:
            for name, _ in _CONTROLS:
                node = nodes[machine.id][name]
                await node.set_writable()
                server.set_attribute_value_setter(node.nodeid, _control_setter(machine, name))
    plant = OpcUaPlant(endpoint, index, server, own_certificate, nodes)
    await server.start()
    try:
        async with asyncio.TaskGroup() as tasks:
            refresher = tasks.create_task(
                _refresh(model, plant, kinds, controls), name="taktline-sim opcua"
            )
            try:
                yield plant
            finally:
                refresher.cancel()
    finally:
        await server.stop()


async def _load_identity(
    server: Server, host: str, certificate: Path | None, private_key: Path | None
) -> bytes:
    """Load (or generate) the server's application certificate; its DER bytes."""
    if certificate is not None and private_key is not None:
        await server.load_certificate(certificate)
        await server.load_private_key(private_key)
    else:
        key = cert_gen.generate_private_key()
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(APPLICATION_URI),
            x509.DNSName(socket.gethostname()),
            x509.DNSName(host),
        ]
        cert = cert_gen.generate_self_signed_app_certificate(
            key, "Taktline simulated plant", {}, names, [ExtendedKeyUsageOID.SERVER_AUTH]
        )
        await server.load_certificate(cert.public_bytes(Encoding.DER), format="der")
        await server.load_private_key(cert_gen.dump_private_key_as_pem(key), format="pem")
    loaded: x509.Certificate | None = server.iserver.certificate
    assert loaded is not None
    return loaded.public_bytes(Encoding.DER)


def _control_setter(machine: Machine, name: str) -> Any:
    """A value setter that applies a client's write of a control to the machine."""

    def setter(node: NodeData, attr: AttributeIds, value: ua.DataValue) -> None:
        if value.StatusCode is not None and value.StatusCode.is_bad():  # `set_bad`
            node.attributes[attr].value = value
            return
        written = value.Value.Value if value.Value is not None else None
        try:
            if name == "SpeedPct":
                machine.set_speed(int(written))  # type: ignore[arg-type]
            else:
                machine.set_run_enabled(bool(written))
        except IllegalValueError:
            # Raised out of the Write service: the client gets a fault with this status.
            raise ServiceError(StatusCodes.BadOutOfRange) from None
        if value.SourceTimestamp is None:  # a PLC stamps what it takes
            value = dataclasses.replace(value, SourceTimestamp=cast(ua.DateTime, datetime.now(UTC)))
        node.attributes[attr].value = value

    return setter


async def _refresh(
    model: LineModel,
    plant: OpcUaPlant,
    kinds: Sequence[tuple[str, ua.VariantType]],
    controls: bool,
) -> None:
    """Copy the model's snapshots into the address space (only values that differ from it).

    Compared with what the address space holds, so a value a client just wrote (a control,
    with its own timestamp) is not written again, and a variable cleared of its Bad status
    gets the model's value back.
    """
    while True:
        for machine_id, variables in plant._nodes.items():
            values = _values(model.snapshot(machine_id), controls)
            for (name, kind), value in zip(kinds, values, strict=True):
                if (machine_id, name) in plant._faults:
                    continue
                node = variables[name]
                held = plant.server.read_attribute_value(node.nodeid).Value
                if held is None or held.Value != value:
                    await node.write_value(ua.Variant(value, kind))
        await asyncio.sleep(_REFRESH_S)
