"""`taktline-cloud run`: invalid settings exit 2 with a clear message and no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taktline_cloud.cli import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TAKTLINE_"):
            monkeypatch.delenv(name)


def test_invalid_environment_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAKTLINE_MQTT_PORT", "99999")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err
    assert "TAKTLINE_MQTT_PORT" in err
    assert "99999" in err
    assert "Traceback" not in err


def test_env_file_with_an_unknown_setting_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / "cloud.env"
    env.write_text("TAKTLINE_MQTT_PROT=1884\n")
    assert main(["run", "--config-env-file", str(env)]) == 2
    err = capsys.readouterr().err
    assert "TAKTLINE_MQTT_PROT" in err
    assert "Extra inputs are not permitted" in err


def test_missing_env_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config-env-file", str(tmp_path / "nope.env")]) == 2
    assert "does not exist" in capsys.readouterr().err
