"""Retention policy: metric classes, cutoffs by whole minutes and hours, settings to policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taktline_cloud.historian.retention import RetentionPolicy, metric_class
from taktline_cloud.settings import RetentionSettings
from taktline_contract.metrics import (
    CYCLE_TIME_MS,
    FAULT_CODE,
    GOOD_COUNT,
    MACHINE_STATE,
    SCRAP_COUNT,
    TEMPERATURE,
)

NOW = datetime(2026, 11, 24, 8, 17, 42, 123_456, tzinfo=UTC)


def test_metric_classes() -> None:
    assert {metric_class(m) for m in (GOOD_COUNT, SCRAP_COUNT)} == {"counter"}
    assert {metric_class(m) for m in (MACHINE_STATE, FAULT_CODE)} == {"state"}
    assert {metric_class(m) for m in (TEMPERATURE, CYCLE_TIME_MS, "Anything/Else")} == {"process"}


def test_cutoffs_are_whole_minutes_for_raw_samples_and_whole_hours_for_rollups() -> None:
    policy = RetentionPolicy.from_settings(
        RetentionSettings.model_validate({"raw": {"counter": 2}, "rollup_1h": {"state": 10}})
    )
    assert policy.cutoff("samples", "counter", NOW) == datetime(2026, 11, 22, 8, 17, tzinfo=UTC)
    assert policy.cutoff("samples", "process", NOW) == datetime(2026, 8, 26, 8, 17, tzinfo=UTC)
    assert policy.cutoff("rollup_1m", "process", NOW) == (NOW - timedelta(days=400)).replace(
        minute=0, second=0, microsecond=0
    )
    assert policy.cutoff("rollup_1h", "state", NOW) == datetime(2026, 11, 14, 8, tzinfo=UTC)
    assert policy.cutoff("rollup_1h", "process", NOW) is None  # kept forever
    assert RetentionPolicy().cutoff("samples", "process", NOW) is None


def test_a_table_kept_forever_is_not_visited() -> None:
    defaults = RetentionPolicy.from_settings(RetentionSettings())
    assert (defaults.expires("samples"), defaults.expires("rollup_1m")) == (True, True)
    assert not defaults.expires("rollup_1h")
    assert not RetentionPolicy().expires("samples")
