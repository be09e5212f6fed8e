"""The production Mosquitto ACL (config/mosquitto/acl) on a real mosquitto: a gateway may publish
only its own node's Sparkplug topics; the cloud reads them all."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiomqtt

from tests.support import missing_service, mosquitto_broker, wait_for

REPO = Path(__file__).resolve().parents[2]
USERS = {"taktline-cloud": "cloud-secret", "GW-1": "gw1-secret", "GW-2": "gw2-secret"}


def _password_file(path: Path) -> None:
    path.touch()
    for user, password in USERS.items():
        result = subprocess.run(
            ["mosquitto_passwd", "-b", str(path), user, password],
            capture_output=True,
            check=False,
            timeout=10,
        )
        if result.returncode != 0:
            missing_service(f"mosquitto_passwd ({result.stderr.decode().strip()})")


async def test_a_gateway_cannot_publish_as_another_gateway(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    _password_file(passwd)
    acl = REPO / "config" / "mosquitto" / "acl"
    extra = f"password_file {passwd}\nacl_file {acl}\n"
    with mosquitto_broker(tmp_path / "broker", extra, anonymous=False) as broker:
        received: list[str] = []

        async def cloud() -> None:
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                username="taktline-cloud",
                password=USERS["taktline-cloud"],
            ) as client:
                await client.subscribe("spBv1.0/#", qos=1)
                ready.set()
                async for message in client.messages:
                    received.append(str(message.topic))

        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            listener = tasks.create_task(cloud(), name="cloud")
            await asyncio.wait_for(ready.wait(), 10)
            async with aiomqtt.Client(
                broker.host, broker.port, username="GW-1", password=USERS["GW-1"]
            ) as gw1:
                await gw1.publish("spBv1.0/PLANT-1/DDATA/GW-2/M9", b"forged", qos=1)
                await gw1.publish("spBv1.0/PLANT-1/NCMD/GW-2", b"forged", qos=1)
                await gw1.publish("spBv1.0/PLANT-1/DDATA/GW-1/M1", b"own", qos=1)
            await wait_for(lambda: "spBv1.0/PLANT-1/DDATA/GW-1/M1" in received, 10)
            listener.cancel()

        # Mosquitto delivers in order per publisher: the forged ones, sent first, were dropped.
        assert received == ["spBv1.0/PLANT-1/DDATA/GW-1/M1"]
