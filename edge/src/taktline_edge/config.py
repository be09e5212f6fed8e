"""The edge agent's configuration (``config/edge.yaml``), validated at start.

`load_config` reads YAML (anchors and merge keys allowed) into frozen pydantic models. Anything
wrong - a YAML syntax error, an unknown key, a missing field, a value out of range - raises
`EdgeConfigError` whose message names the file, the line, the field path and the problem, e.g.::

    config/edge.yaml:27: devices[1].modbus.port: Input should be less than or equal to 65535

Relative paths (the outbox) are resolved against the working directory of the process.
"""

import re
from collections.abc import Mapping, Sequence
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
    ValidationError,
    field_validator,
    model_validator,
)

from taktline_edge.errors import EdgeConfigError, TagError
from taktline_edge.planner import MAX_BLOCK
from taktline_edge.tags import MAX_ADDRESS, Tag, TagType

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


class OutboxConfig(_Model):
    """Durable store-and-forward outbox."""

    path: Path
    max_bytes: int = Field(default=DEFAULT_OUTBOX_BYTES, ge=64 * 1024)
    """Bound on disk; when reached, new samples are refused until the outbox drains (several
    million samples by default: days of a line's changes)."""


class ModbusConfig(_Model):
    """One Modbus TCP connection (one PLC)."""

    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class TagConfig(_Model):
    """One tag: a metric read from holding registers starting at `address`."""

    metric: str = Field(min_length=1)
    address: int = Field(ge=0, le=MAX_ADDRESS)
    type: TagType
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: Decimal | None = None
    offset: Decimal | None = None
    deadband: Decimal = Field(default=Decimal(0), ge=0)
    writable: bool = False

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value == 0:
            raise ValueError("scale must not be 0")
        return value

    @model_validator(mode="after")
    def _fits_address_space(self) -> "TagConfig":
        if self.address + self.type.words > MAX_ADDRESS + 1:
            raise ValueError(f"a {self.type} at {self.address} runs past register {MAX_ADDRESS}")
        return self

    def to_tag(self) -> Tag:
        """The runtime tag."""
        try:
            return Tag(
                metric=self.metric,
                address=self.address,
                type=self.type,
                byte_order=self.byte_order,
                word_order=self.word_order,
                scale=self.scale,
                offset=self.offset,
                deadband=self.deadband,
                writable=self.writable,
            )
        except TagError as exc:  # pragma: no cover - the validators above check the same
            raise ValueError(str(exc)) from exc


class DeviceConfig(_Model):
    """One machine: its PLC connection, poll cadence and tag map."""

    id: SparkplugId
    modbus: ModbusConfig
    poll_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    max_gap: int = Field(default=0, ge=0, le=MAX_BLOCK - 1)
    """Unused registers a block read may span to join two tags (0: contiguous only)."""
    tags: list[TagConfig] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _unique_metrics(cls, tags: list[TagConfig]) -> list[TagConfig]:
        first: dict[str, int] = {}
        for index, tag in enumerate(tags):
            if tag.metric in first:
                raise ValueError(
                    f"metric {tag.metric!r} is in tags[{first[tag.metric]}] and [{index}]"
                )
            first[tag.metric] = index
        return tags

    def to_tags(self) -> tuple[Tag, ...]:
        """The device's runtime tag map."""
        return tuple(t.to_tag() for t in self.tags)


class EdgeConfig(_Model):
    """The whole edge agent configuration."""

    sparkplug: SparkplugConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    devices: list[DeviceConfig] = Field(min_length=1)

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


def load_config(path: str | Path) -> EdgeConfig:
    """Read and validate the YAML file at `path`; raise `EdgeConfigError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeConfigError(f"{path}: cannot read edge config: {exc}") from exc
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> EdgeConfig:
    """Validate YAML `text`; `source` names it in error messages."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise EdgeConfigError(f"{source}: the edge config is empty")
        duplicate = _first_duplicate_key(root)
        if duplicate is not None:
            line, path = duplicate
            raise EdgeConfigError(f"{source}:{line}: {path}: key appears twice")
        # Construction flattens merge keys into the node tree, which `_line_of` then walks.
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise EdgeConfigError(f"{where}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise EdgeConfigError(f"{source}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise EdgeConfigError(f"{source}:1: the edge config must be a mapping of sections")
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise EdgeConfigError(_describe(exc, root, source)) from None


def _describe(exc: ValidationError, root: yaml.Node, source: str) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        line = _line_of(root, loc, key=error["type"] == "extra_forbidden")
        where = f"{source}:{line}" if line is not None else source
        lines.append(f"{where}: {_path(loc) or '(top level)'}: {_message(error)}")
    return "\n".join(lines)


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


def _line_of(node: yaml.Node, loc: Sequence[int | str], key: bool = False) -> int | None:
    """1-based line of the node at `loc` (or its nearest existing ancestor)."""
    line = node.start_mark.line + 1
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


def _first_duplicate_key(
    node: yaml.Node, path: str = "", visited: set[int] | None = None
) -> tuple[int, str] | None:
    """Line and path of the first key written twice in one mapping (PyYAML keeps the last)."""
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias: its anchor was checked already
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                name = key_node.value
                child_path = f"{path}.{name}" if path else name
                if name in seen:
                    return key_node.start_mark.line + 1, child_path
                seen.add(name)
                found = _first_duplicate_key(value_node, child_path, visited)
            else:
                found = _first_duplicate_key(value_node, path, visited)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _first_duplicate_key(item, f"{path}[{index}]", visited)
            if found is not None:
                return found
    return None
