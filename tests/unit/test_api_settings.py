"""Cloud settings: defaults, TAKTLINE_ environment, refusal of bad values; the CLI's exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from taktline_cloud.host import HostOptions
from taktline_cloud.settings import CloudSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TAKTLINE_"):
            monkeypatch.delenv(name)


def test_defaults_run_the_demo_plant_on_sqlite() -> None:
    settings = CloudSettings()
    assert settings.database_url == "sqlite:///var/taktline.db"
    assert settings.plant_file == Path("config/plant.yaml")
    assert settings.dashboard_dir == Path("dashboards/dist")
    assert (settings.rate_window_s, settings.refresh_interval_s) == (300, 2)
    assert (settings.mqtt_port, settings.mqtt_shared_group) == (1883, None)
    assert (settings.host_id, settings.group_id) == ("taktline-cloud", "PLANT-1")
    assert settings.client_id == "taktline-cloud-ingest"


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAKTLINE_MQTT_PORT", "1884")
    monkeypatch.setenv("TAKTLINE_DATABASE_URL", "postgresql://postgres@127.0.0.1/taktline")
    monkeypatch.setenv("TAKTLINE_MQTT_SHARED_GROUP", "ingest")
    settings = CloudSettings()
    assert settings.mqtt_port == 1884
    assert settings.database_url.startswith("postgresql://")
    options = HostOptions.from_settings(settings)
    # Data is shared between ingest workers; births and deaths reach every worker (aliases).
    assert options.subscriptions == (
        "$share/ingest/spBv1.0/PLANT-1/NDATA/#",
        "$share/ingest/spBv1.0/PLANT-1/DDATA/#",
        "spBv1.0/PLANT-1/NBIRTH/#",
        "spBv1.0/PLANT-1/NDEATH/#",
        "spBv1.0/PLANT-1/DBIRTH/#",
        "spBv1.0/PLANT-1/DDEATH/#",
    )
    assert options.group_filter == "spBv1.0/PLANT-1/#"


def test_plain_subscription_without_a_shared_group() -> None:
    assert HostOptions.from_settings(CloudSettings()).subscriptions == ("spBv1.0/PLANT-1/#",)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mqtt_port", 70000, "less than or equal to 65535"),
        ("host_id", "cloud/1", "no '/', '+' or '#'"),
        ("group_id", "", "non-empty"),
        ("database_url", "mysql://x", "sqlite:/// or postgresql://"),
        ("refresh_interval_s", 0, "greater than 0"),
        ("log_level", "LOUD", "one of DEBUG"),
    ],
)
def test_bad_values_are_refused_with_a_reason(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        CloudSettings(**{field: value})


def test_retention_defaults_per_table_and_metric_class() -> None:
    settings = CloudSettings()
    retention = settings.retention
    assert (retention.raw.process, retention.raw.counter, retention.raw.state) == (90, 730, 730)
    assert (retention.rollup_1m.process, retention.rollup_1m.counter) == (400, 730)
    assert retention.rollup_1m.state == 730
    assert retention.rollup_1h.model_dump() == {"process": None, "counter": None, "state": None}
    assert settings.retention_interval_s == 3600


def test_retention_from_json_in_the_environment_keeps_what_it_leaves_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "TAKTLINE_RETENTION",
        '{"raw": {"process": 30, "state": null}, "rollup_1h": {"process": 3650}}',
    )
    monkeypatch.setenv("TAKTLINE_RETENTION_INTERVAL_S", "600")
    settings = CloudSettings()
    assert settings.retention.raw.model_dump() == {"process": 30, "counter": 730, "state": None}
    assert settings.retention.rollup_1m.process == 400
    assert settings.retention.rollup_1h.model_dump() == {
        "process": 3650,
        "counter": None,
        "state": None,
    }
    assert settings.retention_interval_s == 600


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"raw": {"proces": 30}}', "unknown metric class 'proces' in retention.raw: use process"),
        ('{"rollup_5m": {"process": 30}}', "unknown retention table 'rollup_5m': use raw"),
        ('{"raw": {"process": 0}}', "whole number of days >= 1, or null to keep forever"),
        ('{"rollup_1m": {"counter": -7}}', "whole number of days >= 1, or null to keep forever"),
        ('{"raw": {"process": 1.5}}', "valid integer"),
        ('{"raw": {"process": true}}', "valid integer"),
        ('{"raw": 30}', "valid dictionary"),
    ],
)
def test_bad_retention_is_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("TAKTLINE_RETENTION", value)
    with pytest.raises(ValidationError, match=re.escape(message)) as refused:
        CloudSettings()
    assert "retention" in str(refused.value)
