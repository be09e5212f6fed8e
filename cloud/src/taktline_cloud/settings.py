"""The cloud's settings: ``TAKTLINE_*`` environment variables (or an env file), read at start."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_SPARKPLUG_FORBIDDEN = frozenset("/+#")

RETENTION_DEFAULTS: Final[Mapping[str, Mapping[str, int | None]]] = {
    # Process values (temperatures, pressures, cycle times) are the bulk of the data and are
    # looked at raw for recent troubleshooting; their rollups answer the older questions.
    "raw": {"process": 90, "counter": 730, "state": 730},
    # A year and a month: this month compared with the same month last year. Counters and
    # states are small (reported on change) and keep their minutes as long as their raw
    # samples, which hourly rollups are recomputed from when a late sample arrives.
    "rollup_1m": {"process": 400, "counter": 730, "state": 730},
    "rollup_1h": {"process": None, "counter": None, "state": None},
}
"""Days kept per table and metric class (None: forever); see `RetentionSettings`."""


class ClassRetention(BaseModel):
    """Days to keep one table's rows of each metric class; None keeps them forever."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    process: StrictInt | None = Field(description="every metric that is not a counter or a state")
    counter: StrictInt | None = Field(description="good and scrap counters")
    state: StrictInt | None = Field(description="machine state and fault code")

    @field_validator("process", "counter", "state")
    @classmethod
    def _at_least_a_day(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be a whole number of days >= 1, or null to keep forever")
        return value


def _retention_default(table: str) -> ClassRetention:
    return ClassRetention.model_validate(RETENTION_DEFAULTS[table])


class RetentionSettings(BaseModel):
    """How long raw samples and rollups are kept, per metric class (`RETENTION_DEFAULTS`).

    Given as JSON, e.g. TAKTLINE_RETENTION='{"raw": {"process": 30}}': what is left out keeps
    its default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: ClassRetention = Field(
        default_factory=lambda: _retention_default("raw"), description="raw samples"
    )
    rollup_1m: ClassRetention = Field(
        default_factory=lambda: _retention_default("rollup_1m"), description="1-minute rollups"
    )
    rollup_1h: ClassRetention = Field(
        default_factory=lambda: _retention_default("rollup_1h"), description="hourly rollups"
    )

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        """Fill in defaults per table and class, and name an unknown table or class."""
        if not isinstance(value, Mapping):
            return value  # an instance, or something pydantic refuses with its own message
        tables = ", ".join(RETENTION_DEFAULTS)
        merged: dict[str, Any] = {}
        for table in value:
            if table not in RETENTION_DEFAULTS:
                raise ValueError(f"unknown retention table {table!r}: use {tables}")
        for table, defaults in RETENTION_DEFAULTS.items():
            given = value.get(table, {})
            if isinstance(given, Mapping):
                unknown = [name for name in given if name not in defaults]
                if unknown:
                    raise ValueError(
                        f"unknown metric class {unknown[0]!r} in retention.{table}:"
                        f" use {', '.join(defaults)}"
                    )
                given = {**defaults, **given}
            merged[table] = given
        return merged


class CloudSettings(BaseSettings):
    """Everything the cloud process needs to start; built in `main()` / tests, never at import."""

    model_config = SettingsConfigDict(
        env_prefix="TAKTLINE_", extra="forbid", frozen=True, env_file_encoding="utf-8"
    )

    database_url: str = Field(
        "sqlite:///var/taktline.db",
        description="sqlite:///path/to/file.db, sqlite:///:memory: or postgresql://…",
    )
    plant_file: Path = Field(Path("config/plant.yaml"), description="master data (plant.yaml)")

    mqtt_host: str = Field("127.0.0.1", min_length=1)
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_client_id: str | None = Field(
        None, description="MQTT client id; defaults to '{host_id}-ingest'"
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_keepalive_s: int = Field(15, ge=5, le=3600)
    mqtt_timeout_s: float = Field(10.0, gt=0, description="timeout of every MQTT network await")
    mqtt_shared_group: str | None = Field(
        None,
        description="subscribe as $share/{group}/… so several ingest workers split the load "
        "(Mosquitto, EMQX; not the embedded amqtt broker)",
    )
    host_id: str = Field("taktline-cloud", description="Sparkplug primary host id (STATE topic)")
    group_id: str = Field("PLANT-1", description="Sparkplug group id this host ingests")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535, description="0 = any free port")
    dashboard_dir: Path = Field(
        Path("dashboards/dist"), description="built dashboards, served at / when present"
    )

    rate_window_s: float = Field(300.0, gt=0, description="window of the measured line rate")
    refresh_interval_s: float = Field(2.0, gt=0, description="time-driven recompute period")

    sample_queue_size: int = Field(
        20_000, ge=1, description="samples between MQTT and the database (back-pressure when full)"
    )
    batch_size: int = Field(
        5000,
        ge=1,
        description="samples per database transaction, at most (a busy queue fills it; an idle"
        " one is written at once, so size costs no latency)",
    )
    batch_max_age_s: float = Field(0.1, gt=0, description="oldest sample waits at most this long")
    live_client_queue: int = Field(
        512, ge=1, description="events buffered per websocket client before it is resynced"
    )
    log_level: str = "INFO"

    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="days to keep raw samples and rollups per metric class, as JSON",
    )
    retention_interval_s: float = Field(
        3600.0, gt=0, description="how often the retention job deletes what has expired"
    )

    @field_validator("host_id", "group_id", "mqtt_shared_group")
    @classmethod
    def _sparkplug_id(cls, value: str | None) -> str | None:
        if value is not None and (not value or _SPARKPLUG_FORBIDDEN & set(value)):
            raise ValueError("must be non-empty and contain no '/', '+' or '#'")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def client_id(self) -> str:
        """The MQTT client id this process connects with."""
        return self.mqtt_client_id or f"{self.host_id}-ingest"
