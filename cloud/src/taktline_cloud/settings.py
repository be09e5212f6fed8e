"""The cloud's settings: ``TAKTLINE_*`` environment variables (or an env file), read at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SPARKPLUG_FORBIDDEN = frozenset("/+#")


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
