"""The `taktline-cloud run` process: a clear failure on bad master data, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cloud_host import retained_state
from tests.support import Mosquitto, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


def cloud_env(tmp_path: Path, mqtt_port: int, http_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAKTLINE_")}
    return env | {
        "TAKTLINE_DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.db'}",
        "TAKTLINE_PLANT_FILE": str(REPO / "config" / "plant.yaml"),
        "TAKTLINE_MQTT_PORT": str(mqtt_port),
        "TAKTLINE_HTTP_PORT": str(http_port),
        "TAKTLINE_DASHBOARD_DIR": str(tmp_path / "none"),
    } | extra


async def run_cli(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taktline_cloud.cli", "run",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def test_bad_master_data_exits_1_with_the_reason_and_no_traceback(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text("items: [{sku: FG-100}]\n")
    process = await run_cli(
        cloud_env(tmp_path, free_port(), 0, TAKTLINE_PLANT_FILE=str(plant))
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    text = err.decode()
    assert f"taktline-cloud: the cloud could not start: {plant}" in text
    assert "Traceback" not in text


@pytest.mark.mosquitto
async def test_sigterm_stops_the_cloud_cleanly_with_state_offline(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()
    process = await run_cli(cloud_env(tmp_path, mosquitto.port, port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:

            async def connected() -> bool:
                try:
                    return bool((await http.get("/api/health")).json()["mqtt_connected"])
                except httpx.TransportError:
                    return False

            await wait_for(connected, timeout=30, what="the cloud process to come up")
        assert (await retained_state(mosquitto)).online
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert not (await retained_state(mosquitto)).online
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
