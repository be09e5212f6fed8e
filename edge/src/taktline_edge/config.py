"""The edge agent's configuration (``config/edge.yaml``), validated at start.

`load_config` reads YAML (anchors and merge keys allowed) into frozen pydantic models. Anything
wrong - a YAML syntax error, an unknown key, a missing field, a value out of range - raises
`EdgeConfigError` whose message names the file, the line, the field path and the problem, e.g.::

    config/edge.yaml:27: devices[1].modbus.port: Input should be less than or equal to 65535

Relative paths (the outbox) are resolved against the working directory of the process.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from taktline_contract.sparkplug import DataType
from taktline_edge.errors import EdgeConfigError, TagError
from taktline_edge.outbox import DEFAULT_REPLAY_WINDOW_S
from taktline_edge.planner import MAX_BLOCK
from taktline_edge.tags import MAX_ADDRESS, Encoding, Table, Tag, TagType

_SPARKPLUG_ID = re.compile(r"[^/+#\s]+")


def _sparkplug_id(value: str) -> str:
    if not _SPARKPLUG_ID.fullmatch(value):
        raise ValueError("must be a non-empty Sparkplug id without '/', '+', '#' or spaces")
    return value


SparkplugId = Annotated[str, AfterValidator(_sparkplug_id)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkplugConfig(_Model):
    """Sparkplug identity: group = plant, edge node = this gateway."""

    group_id: SparkplugId
    edge_node_id: SparkplugId
    primary_host_id: SparkplugId


class MqttConfig(_Model):
    """Broker connection."""

    host: str = Field(min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = Field(min_length=1, max_length=256)
    keepalive_s: int = Field(default=30, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None


DEFAULT_OUTBOX_BYTES = 512 * 1024 * 1024
MAX_REPLAY_WINDOW_S = 3600.0
"""An hour: beyond it the retained rows would rival the backlog for the outbox's room."""


class OutboxConfig(_Model):
    """Durable store-and-forward outbox."""

    path: Path
    max_bytes: int = Field(default=DEFAULT_OUTBOX_BYTES, ge=64 * 1024)
    """Bound on disk (several million samples by default: days of a line's changes)."""
    when_full: Literal["refuse", "drop_oldest"] = "refuse"
    """At the bound: refuse new samples until the outbox drains, or drop the oldest ones. Either
    way the node metrics Outbox/Full and Outbox/Dropped (or Outbox/Refused) say so. Sent samples
    kept for the replay window are purged first."""
    replay_window_s: float = Field(
        default=DEFAULT_REPLAY_WINDOW_S, ge=0, le=MAX_REPLAY_WINDOW_S, allow_inf_nan=False
    )
    """Seconds acknowledged samples are kept, to be sent again (flagged historical) after a
    host STATE offline, a lost broker connection or a restart: a broker PUBACK is not end to
    end (Sparkplug hosts use clean sessions). 0 deletes them at once."""


class ModbusConfig(_Model):
    """One Modbus TCP connection (one PLC)."""

    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class TagConfig(_Model):
    """One tag: a metric read from `table` (holding registers by default) at `address`.

    `type` defaults to bool for coils and discrete inputs and is required for registers;
    `bit` goes with type bit, `length` (registers) and `encoding` with type string. A
    `writable` number may bound what a DCMD writes with `min`/`max` (engineering units).
    """

    metric: str = Field(min_length=1)
    address: int = Field(ge=0, le=MAX_ADDRESS)
    table: Table = Table.HOLDING
    type: TagType | None = None
    bit: int | None = Field(default=None, ge=0, le=15)
    length: int | None = Field(default=None, ge=1)
    encoding: Encoding = "ascii"
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: Decimal | None = None
    offset: Decimal | None = None
    deadband: Decimal = Field(default=Decimal(0), ge=0)
    writable: bool = False
    min: Decimal | None = None
    """Least value a DCMD may write (engineering units; writable numbers only)."""
    max: Decimal | None = None
    """Greatest value a DCMD may write (engineering units; writable numbers only)."""

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value == 0:
            raise ValueError("scale must not be 0")
        return value

    @model_validator(mode="after")
    def _valid_tag(self) -> "TagConfig":
        if self.type is None and not self.table.is_bits:
            raise ValueError(f"type is required for a tag in the {self.table} table")
        # One set of rules: the runtime tag's (address space, bit/length/table combinations).
        try:
            self.to_tag()
        except TagError as exc:
            raise ValueError(str(exc).removeprefix(f"{self.metric}: ")) from None
        return self

    def to_tag(self) -> Tag:
        """The runtime tag."""
        kind = self.type if self.type is not None else TagType.BOOL
        return Tag(
            metric=self.metric,
            address=self.address,
            type=kind,
            byte_order=self.byte_order,
            word_order=self.word_order,
            scale=self.scale,
            offset=self.offset,
            deadband=self.deadband,
            writable=self.writable,
            table=self.table,
            bit=self.bit,
            length=self.length,
            encoding=self.encoding,
            min=self.min,
            max=self.max,
        )


OPCUA_DATATYPES: dict[str, DataType] = {
    "Boolean": DataType.BOOLEAN,
    "Int8": DataType.INT8,
    "Int16": DataType.INT16,
    "Int32": DataType.INT32,
    "Int64": DataType.INT64,
    "UInt8": DataType.UINT8,
    "UInt16": DataType.UINT16,
    "UInt32": DataType.UINT32,
    "UInt64": DataType.UINT64,
    "Float": DataType.FLOAT,
    "Double": DataType.DOUBLE,
}
"""Sparkplug datatype names an OPC UA tag may declare (numbers and booleans: what the outbox
stores exactly); `taktline-edge browse` writes them from the server's variant types."""

OpcUaDataTypeName = Literal[
    "Boolean",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Float",
    "Double",
]
_OPCUA_ENDPOINT = re.compile(r"opc\.tcp://[^/:\s]+:\d{1,5}(/\S*)?")
_OPCUA_NODE_ID = re.compile(r"(ns=\d+;|nsu=[^;]+;)?(i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=.+)")


@dataclass(frozen=True, slots=True)
class OpcUaTag:
    """One OPC UA tag at run time: a metric fed by a monitored item on `node_id`."""

    metric: str
    node_id: str
    datatype: DataType
    deadband: Decimal | None = None
    writable: bool = False
    """Whether a DCMD may write it (`OpcUaSource.write`)."""
    min: Decimal | None = None
    max: Decimal | None = None
    """Engineering range a write must stay within (inclusive; None: only the type's range)."""


class OpcUaConfig(_Model):
    """One OPC UA server connection (one machine) and its subscription parameters."""

    endpoint: str
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of an environment variable holding the password (keeps it out of the YAML)."""
    authentication: Literal["anonymous", "username", "certificate"] | None = None
    """The user identity: none, `username` + password, or an X.509 certificate. Default:
    username when `username` is set, else anonymous."""
    user_certificate: Path | None = None
    user_private_key: Path | None = None
    """With authentication certificate: the user's certificate (DER or PEM) and its key (PEM).
    Default: the agent's own application certificate and key from `certificate_dir`."""
    certificate_dir: Path | None = None
    """Where the agent keeps its application certificate and key (created on first start)."""
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    max_items_per_subscription: int = Field(default=1000, ge=1, le=100_000)
    publishing_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    sampling_interval_ms: int = Field(default=500, ge=0, le=3_600_000)
    """0 asks the server for its fastest rate."""
    queue_size: int = Field(default=2, ge=1, le=10_000)
    """Values the server keeps per item between publishes (oldest discarded). 2, not 1: at
    10 000 items a late publish otherwise loses a value that changed twice (bench/RESULTS.md)."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not _OPCUA_ENDPOINT.fullmatch(value):
            raise ValueError("must look like opc.tcp://host:port/path")
        port = int(value.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError("port must be within 1..65535")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "OpcUaConfig":
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode must both be None or both be set"
                f" (got {self.security_policy}/{self.security_mode})"
            )
        if self.security_policy != "None" and self.certificate_dir is None:
            raise ValueError("certificate_dir is required with a security policy")
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and not self.username:
            raise ValueError("a password needs a username")
        method = self.user_identity
        if method == "username" and not self.username:
            raise ValueError("authentication username needs a username")
        if method != "username" and self.username:
            raise ValueError(f"username is for authentication username, not {method}")
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("user_certificate and user_private_key go together")
        if method != "certificate" and self.user_certificate is not None:
            raise ValueError("user_certificate is for authentication certificate")
        if method == "certificate":
            if self.security_policy == "None":
                # The user token is signed under the channel's policy: None would send it bare.
                raise ValueError("authentication certificate needs security_policy Basic256Sha256")
            if self.user_certificate is None and self.certificate_dir is None:
                raise ValueError(
                    "authentication certificate needs user_certificate and user_private_key,"
                    " or certificate_dir (the agent's own certificate is then the identity)"
                )
        return self

    @property
    def user_identity(self) -> Literal["anonymous", "username", "certificate"]:
        """The authentication in effect (the default resolved)."""
        if self.authentication is not None:
            return self.authentication
        return "username" if self.username else "anonymous"

    def resolved_password(self, environ: Mapping[str, str]) -> str | None:
        """The password, from the config or the environment variable it names."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is None:
            return None
        try:
            return environ[self.password_env]
        except KeyError:
            raise EdgeConfigError(
                f"opcua.password_env names {self.password_env}, which is not set"
            ) from None


class OpcUaTagConfig(_Model):
    """One OPC UA tag: a metric fed by the node `node_id` (datatype as browse wrote it)."""

    metric: str = Field(min_length=1)
    node_id: str
    type: OpcUaDataTypeName
    deadband: Decimal | None = Field(default=None, ge=0)
    """Absolute deadband, applied by the server (a DataChangeFilter)."""
    writable: bool = False
    """Whether a DCMD may write this tag (written with the tag's type)."""
    min: Decimal | None = None
    max: Decimal | None = None
    """Engineering range a write must stay within (inclusive); writable numeric tags only."""

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not _OPCUA_NODE_ID.fullmatch(value):
            raise ValueError("must be an OPC UA node id such as ns=2;s=Line1.Press.Good or i=2258")
        return value

    @model_validator(mode="after")
    def _numeric_deadband(self) -> "OpcUaTagConfig":
        if self.deadband is not None and self.type == "Boolean":
            raise ValueError("a Boolean tag cannot have a deadband")
        if self.min is not None or self.max is not None:
            if not self.writable:
                raise ValueError("min and max limit writes: the tag must be writable")
            if self.type == "Boolean":
                raise ValueError("a Boolean tag cannot have min or max")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def to_tag(self) -> OpcUaTag:
        """The runtime tag."""
        return OpcUaTag(
            self.metric,
            self.node_id,
            OPCUA_DATATYPES[self.type],
            self.deadband,
            writable=self.writable,
            min=self.min,
            max=self.max,
        )


_MODBUS_TAGS: TypeAdapter[list[TagConfig]] = TypeAdapter(list[TagConfig])
_OPCUA_TAGS: TypeAdapter[list[OpcUaTagConfig]] = TypeAdapter(list[OpcUaTagConfig])


class DeviceConfig(_Model):
    """One machine: its PLC connection (`modbus` or `opcua`), poll cadence and tag map."""

    id: SparkplugId
    modbus: ModbusConfig | None = None
    opcua: OpcUaConfig | None = None
    poll_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    max_gap: int = Field(default=0, ge=0, le=MAX_BLOCK - 1)
    """Unused registers a block read may span to join two tags (0: contiguous only)."""
    tags: list[TagConfig] | list[OpcUaTagConfig] = Field(min_length=1)
    """Modbus tags (`address`, `type`, ...) or, on an `opcua` device, OPC UA tags (`node_id`)."""

    @field_validator("tags", mode="wrap")
    @classmethod
    def _tags_of_the_protocol(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> list[TagConfig] | list[OpcUaTagConfig]:
        # Validate against the device's protocol only, so errors name that schema's fields.
        opcua = info.data.get("opcua") is not None
        if not opcua and info.data.get("modbus") is None and isinstance(value, list):
            opcua = any(isinstance(t, dict) and "node_id" in t for t in value)
        tags: list[TagConfig] | list[OpcUaTagConfig]
        tags = _OPCUA_TAGS.validate_python(value) if opcua else _MODBUS_TAGS.validate_python(value)
        if not tags:
            raise PydanticCustomError("too_short", "List should have at least 1 item")
        first: dict[str, int] = {}
        metrics: list[str] = [t.metric for t in tags]
        for index, metric in enumerate(metrics):
            if metric in first:
                raise ValueError(f"metric {metric!r} is in tags[{first[metric]}] and [{index}]")
            first[metric] = index
        return tags

    @model_validator(mode="after")
    def _one_protocol(self) -> "DeviceConfig":
        if (self.modbus is None) == (self.opcua is None):
            raise ValueError("a device needs exactly one of modbus or opcua")
        return self

    def to_tags(self) -> tuple[Tag, ...]:
        """The device's runtime Modbus tag map (empty for an OPC UA device)."""
        return tuple(t.to_tag() for t in self.tags if isinstance(t, TagConfig))

    def opcua_tags(self) -> tuple[OpcUaTag, ...]:
        """The device's runtime OPC UA tag map (empty for a Modbus device)."""
        return tuple(t.to_tag() for t in self.tags if isinstance(t, OpcUaTagConfig))


class HealthConfig(_Model):
    """The gateway's own monitoring: local health endpoint, node metrics, log format."""

    host: str = Field(default="127.0.0.1", min_length=1)
    """Listen address of the health endpoint (loopback: it is for the gateway's own monitor)."""
    port: int | None = Field(default=None, ge=0, le=65535)
    """HTTP port of ``GET /health`` (JSON); None disables the endpoint, 0 picks a free port."""
    metrics_interval_s: float = Field(default=5.0, ge=0.1, le=3600)
    """Least time between two NDATA with changed node metrics (rate limit)."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line, for the gateway's log shipper."""


class EdgeConfig(_Model):
    """The whole edge agent configuration."""

    sparkplug: SparkplugConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    devices: list[DeviceConfig] = Field(min_length=1)
    health: HealthConfig = HealthConfig()

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        first: dict[str, int] = {}
        for index, device in enumerate(devices):
            if device.id in first:
                raise ValueError(
                    f"device id {device.id!r} is in devices[{first[device.id]}] and [{index}]"
                )
            first[device.id] = index
        return devices

    def with_endpoints(
        self,
        *,
        broker: tuple[str, int] | None = None,
        devices: Mapping[str, tuple[str, int]] | None = None,
        outbox_path: Path | None = None,
    ) -> "EdgeConfig":
        """This config with other endpoints (e.g. ephemeral ports bound by the demo or tests)."""
        raw = self.model_dump()
        if broker is not None:
            raw["mqtt"]["host"], raw["mqtt"]["port"] = broker
        unknown = set(devices or {}) - {d.id for d in self.devices}
        if unknown:
            raise EdgeConfigError(f"no device {sorted(unknown)} in the edge config")
        for device in raw["devices"]:
            if devices is not None and device["id"] in devices:
                device["modbus"]["host"], device["modbus"]["port"] = devices[device["id"]]
        if outbox_path is not None:
            raw["outbox"]["path"] = outbox_path
        try:
            return EdgeConfig.model_validate(raw)
        except ValidationError as exc:
            raise EdgeConfigError(str(exc)) from None

    def with_environment(self, environ: Mapping[str, str]) -> "EdgeConfig":
        """This config with MQTT credentials from ``TAKTLINE_EDGE_MQTT_USERNAME``/``_PASSWORD``.

        Secrets belong in the gateway's environment (or a secret store), not in a YAML file
        that is copied between gateways and into version control.
        """
        mqtt = self.mqtt
        username = environ.get("TAKTLINE_EDGE_MQTT_USERNAME")
        password = environ.get("TAKTLINE_EDGE_MQTT_PASSWORD")
        if username is None and password is None:
            return self
        if username is not None:
            mqtt = mqtt.model_copy(update={"username": username})
        if password is not None:
            mqtt = mqtt.model_copy(update={"password": SecretStr(password)})
        if mqtt.password is not None and mqtt.username is None:
            raise EdgeConfigError("TAKTLINE_EDGE_MQTT_PASSWORD is set but no MQTT username is")
        return self.model_copy(update={"mqtt": mqtt})

    def device(self, device_id: str) -> DeviceConfig:
        """The device with id `device_id`; KeyError when there is none."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> EdgeConfig:
    """Read and validate the YAML file at `path`; raise `EdgeConfigError` listing every problem.

    With `environ` (``taktline-edge run`` and ``check`` pass ``os.environ``) the settings taken
    from the environment are applied and checked too: MQTT credentials and OPC UA `password_env`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EdgeConfigError(f"{path}: cannot read edge config: no such file") from None
    except OSError as exc:
        raise EdgeConfigError(f"{path}: cannot read edge config: {exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise EdgeConfigError(
            f"{path}:{line}: cannot read edge config: not UTF-8 text (byte 0x{data[exc.start]:02x})"
        ) from None
    return parse_config(text, source=str(path), environ=environ)


def parse_config(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> EdgeConfig:
    """Validate YAML `text` (and `environ`, see `load_config`); `source` names it in errors."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise EdgeConfigError(f"{source}: the edge config is empty")
        problems = [
            _Problem(line, f"{path}: key appears twice (YAML would keep only the last)")
            for line, path in _duplicate_keys(root)
        ]
        # Construction flattens merge keys into the node tree, which `_line_of` then walks.
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise EdgeConfigError(f"{source}: invalid YAML: {problem}") from exc
        raise EdgeConfigError(
            f"{source}:{mark.line + 1}: invalid YAML: {problem} (column {mark.column + 1})"
        ) from exc
    except yaml.YAMLError as exc:
        raise EdgeConfigError(f"{source}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise EdgeConfigError(f"{source}:1: the edge config must be a mapping of sections")
    config: EdgeConfig | None = None
    try:
        config = EdgeConfig.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(exc, root)
    if config is not None and environ is not None:
        problems += _environment_problems(config, environ, root)
    if problems:
        raise EdgeConfigError(_report(problems, source))
    assert config is not None
    return config if environ is None else config.with_environment(environ)


class _Loader(yaml.SafeLoader):
    """A SafeLoader that keeps every mapping key as its source text.

    YAML 1.1 reads ``yes:``, ``on:`` or ``1:`` as a boolean or number; as text they reach the
    models as the (unknown) keys they look like, and the error names them as written.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a plain name, not a list or mapping",
                    key_node.start_mark,
                )
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping


@dataclass(frozen=True, slots=True)
class _Problem:
    """One error: the 1-based line it is on (None: not in the file) and what is wrong."""

    line: int | None
    text: str


def _report(problems: Sequence[_Problem], source: str) -> str:
    """One line per problem, in file order; those from the environment last."""
    ordered = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
    return "\n".join(
        f"{source}:{p.line}: {p.text}" if p.line is not None else p.text for p in ordered
    )


def _validation_problems(exc: ValidationError, root: yaml.Node) -> list[_Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        line = _line_of(root, loc, key=error["type"] == "extra_forbidden")
        problems.append(_Problem(line, f"{_path(loc) or '(top level)'}: {_message(error)}"))
    return problems


MQTT_USERNAME_ENV = "TAKTLINE_EDGE_MQTT_USERNAME"
MQTT_PASSWORD_ENV = "TAKTLINE_EDGE_MQTT_PASSWORD"  # noqa: S105 - a variable's name, not a secret


def _environment_problems(
    config: EdgeConfig, environ: Mapping[str, str], root: yaml.Node
) -> list[_Problem]:
    """What is wrong with the settings the environment supplies (checked at start, not later)."""
    problems = []
    for name in (MQTT_USERNAME_ENV, MQTT_PASSWORD_ENV):
        if environ.get(name) == "":
            problems.append(_Problem(None, f"environment: {name} is set but empty"))
    username = environ.get(MQTT_USERNAME_ENV) or config.mqtt.username
    if environ.get(MQTT_PASSWORD_ENV) and not username:
        problems.append(
            _Problem(
                None,
                f"environment: {MQTT_PASSWORD_ENV} is set but no MQTT username is"
                f" (set {MQTT_USERNAME_ENV} or mqtt.username)",
            )
        )
    for index, device in enumerate(config.devices):
        if device.opcua is None or device.opcua.password_env is None:
            continue
        name = device.opcua.password_env
        if not environ.get(name):
            loc = ("devices", index, "opcua", "password_env")
            state = "is empty" if name in environ else "is not set"
            problems.append(
                _Problem(
                    _line_of(root, loc),
                    f"{_path(loc)}: names the environment variable {name}, which {state}",
                )
            )
    return problems


def _message(error: Any) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    value = error.get("input")
    if (
        kind != "model_type"
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
    ):
        return f"{msg} (got {value!r})"
    return msg


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node, loc: Sequence[int | str], key: bool = False) -> int:
    """1-based line of the node at `loc` (or its nearest existing ancestor)."""
    line: int = node.start_mark.line + 1
    for index, part in enumerate(loc):
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            # After merge-key flattening, later entries override earlier (merged) ones.
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    last = index == len(loc) - 1
                    child = key_node if key and last else value_node
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            return line
        node = child
        line = node.start_mark.line + 1
    return line


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(
    node: yaml.Node, path: str = "", visited: set[int] | None = None
) -> list[tuple[int, str]]:
    """Line and path of every key written twice in one mapping (PyYAML would keep the last)."""
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias: its anchor was checked already
        return []
    visited.add(id(node))
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            child_path = path
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                name = key_node.value
                child_path = f"{path}.{name}" if path else name
                if name in seen:
                    found.append((key_node.start_mark.line + 1, child_path))
                seen.add(name)
            found += _duplicate_keys(value_node, child_path, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{index}]", visited)
    return found
