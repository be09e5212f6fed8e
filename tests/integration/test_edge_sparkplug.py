"""The edge agent against a real Mosquitto and real Modbus TCP servers, seen by a primary host."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taktline_contract.sparkplug import DataType, MessageType, Metric
from taktline_edge.agent import EdgeAgent
from tests.edge_process import GOOD, Arrival, decode
from tests.edge_support import (
    MACHINE_TAGS,
    Plc,
    SparkplugHost,
    edge_config,
    edge_yaml,
    plc,
    series,
    wait_polled,
)
from tests.support import Mosquitto, missing_service, wait_for

pytestmark = pytest.mark.mosquitto


@pytest.fixture
async def plcs() -> AsyncIterator[dict[str, Plc]]:
    async with plc() as m1, plc() as m2:
        yield {"M1": m1, "M2": m2}


def _ports(plcs: dict[str, Plc]) -> dict[str, int]:
    return {device: server.port for device, server in plcs.items()}


async def test_births_wait_for_host_then_carry_every_metric(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    await plcs["M1"].set_u32(0, 41)
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db")
    host = SparkplugHost(mosquitto.port, online_on_connect=False)
    async with host, EdgeAgent(config) as agent:
        await wait_for(lambda: agent.link.connected, what="edge connected")
        await wait_for(lambda: agent.status().samples_stored >= 12, what="first polls stored")
        assert host.of(MessageType.NBIRTH) == [], "no birth before the host is online"
        assert agent.status().outbox_depth >= 12, "samples buffer while the host is away"

        await host.publish_state(True)
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "two DBIRTHs")
        (nbirth,) = host.of(MessageType.NBIRTH)
        assert nbirth.payload.seq == 0
        assert nbirth.metric("bdSeq").value == agent.link.bd_seq
        assert nbirth.metric("Node Control/Rebirth").value is False
        births = {m.device: m for m in host.of(MessageType.DBIRTH)}
        assert [births["M1"].payload.seq, births["M2"].payload.seq] == [1, 2]
        for birth in births.values():
            names = {m.name for m in birth.payload.metrics}
            assert names == {t["metric"] for t in MACHINE_TAGS}
            assert all(m.alias is not None for m in birth.payload.metrics)
        aliases = [m.alias for b in births.values() for m in b.payload.metrics]
        assert len(set(aliases)) == len(aliases), "aliases are unique across the node"
        good = births["M1"].metric("Production/GoodCount")
        assert (good.value, good.datatype) == (41, DataType.UINT32)

        # A register change reaches the host as DDATA by alias, after the births' seq.
        await plcs["M1"].set_u32(0, 42)
        good_alias = good.alias

        def changed() -> bool:
            return any(
                m.alias == good_alias and m.value == 42 and not m.is_historical
                for d in host.of(MessageType.DDATA, "M1")
                for m in d.payload.metrics
            )

        await host.wait(changed, "DDATA GoodCount=42")
        seqs = [m.payload.seq for m in host.messages if m.kind != MessageType.NCMD]
        assert seqs == [i % 256 for i in range(len(seqs))], "seq counts up from NBIRTH's 0"
        # The samples buffered before the birth came as historical data, oldest first.
        data = series(host.messages)["M1"]
        historical = [s for s in data.samples if s[3]]
        assert historical, "buffered samples are replayed as historical"
        assert [s[1] for s in historical] == sorted(s[1] for s in historical)
        await wait_for(lambda: agent.status().outbox_depth == 0, what="outbox drained")


async def test_seq_wraps_after_255(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db", poll_ms=10)
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
        await host.wait(lambda: host.of(MessageType.DBIRTH), "births")
        counter = 0
        while len(host.of(MessageType.DDATA)) < 300:
            counter += 1
            await plcs["M1"].set_u32(0, counter)
            await plcs["M2"].set_u32(0, counter)
            await wait_polled(agent, "M1", counter)
        seqs = [m.payload.seq for m in host.messages if m.kind != MessageType.NCMD]
        assert seqs[:258] == [*range(256), 0, 1]
        assert seqs == [i % 256 for i in range(len(seqs))]


async def test_host_offline_then_back_replays_history_in_order(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db", poll_ms=20)
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "births")
        first_bd_seq = host.of(MessageType.NBIRTH)[0].metric("bdSeq").value
        assert isinstance(first_bd_seq, int)
        for value in range(1, 6):
            await plcs["M1"].set_u32(0, value)
            await wait_polled(agent, "M1", value)

        await host.publish_state(False)
        await host.wait(lambda: host.of(MessageType.NDEATH), "NDEATH after host offline")
        assert host.of(MessageType.NDEATH)[0].metric("bdSeq").value == first_bd_seq
        await wait_for(lambda: agent.link.connected and not agent.link.live, what="reconnected")
        published_before = len(host.of(MessageType.DDATA))
        for value in range(6, 16):
            await plcs["M1"].set_u32(0, value)
            await wait_polled(agent, "M1", value)
        assert len(host.of(MessageType.DDATA)) == published_before, "nothing published offline"
        assert agent.outbox_depth() >= 10

        await host.publish_state(True)
        await host.wait(lambda: len(host.of(MessageType.NBIRTH)) == 2, "rebirth after host online")
        second_bd_seq = host.of(MessageType.NBIRTH)[1].metric("bdSeq").value
        assert second_bd_seq == (first_bd_seq + 1) % 256
        await wait_for(lambda: agent.outbox_depth() == 0, what="outbox drained")

        def goods() -> list[Arrival]:
            return [
                a for a in decode(host.messages).arrivals if a.metric == GOOD and a.device == "M1"
            ]

        await host.wait(lambda: goods() and goods()[-1].value == 15, "replay reached the host")
        goods_seen = goods()
        first: dict[int, Arrival] = {}
        for a in goods_seen:
            first.setdefault(a.ts_ms, a)
        values = [a.value for a in first.values()]
        assert values == list(range(values[0], 16)), "every count at least once, in order"
        replayed = [a for a in first.values() if a.value in range(6, 16)]
        assert all(a.historical for a in replayed), (
            "samples buffered while the host was away are historical"
        )
        # The host going offline may have lost what it had just been sent (the replay window,
        # 60 s by default): that is sent again after the new birth, historical, and only that.
        repeats = [a for a in goods_seen if first[a.ts_ms] is not a]
        assert {1, 2, 3, 4, 5} <= {a.value for a in repeats}
        assert all(a.historical and a.session == 2 and a.value <= 5 for a in repeats)
        assert len({a.ts_ms for a in repeats}) == len(repeats), "re-sent once"
        assert all(first[a.ts_ms].value == a.value for a in repeats)
        for historical in (True, False):
            stream = [a.ts_ms for a in goods_seen if a.session == 2 and a.historical == historical]
            assert stream == sorted(stream), f"historical={historical}: in order"


async def test_rebirth_on_ncmd(mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path) -> None:
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db")
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "births")
        await plcs["M2"].set_u32(2, 7)
        await wait_for(lambda: agent.current("M2")["Production/ScrapCount"].value == 7)
        await host.command_rebirth()
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 4, "births again")
        nbirths = host.of(MessageType.NBIRTH)
        assert [n.payload.seq for n in nbirths] == [0, 0]
        assert nbirths[0].metric("bdSeq").value == nbirths[1].metric("bdSeq").value
        rebirth = host.of(MessageType.DBIRTH, "M2")[-1]
        assert rebirth.metric("Production/ScrapCount").value == 7
        first = {m.name: m.alias for m in host.of(MessageType.DBIRTH, "M2")[0].payload.metrics}
        assert first == {m.name: m.alias for m in rebirth.payload.metrics}, "aliases are stable"


async def test_dcmd_writes_only_writable_tags(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db")
    raw = config.model_dump()
    raw["devices"][0]["tags"].append(
        {"metric": "Control/Speed", "address": 100, "type": "uint16", "writable": True}
    )
    config = type(config).model_validate(raw)
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config) as agent:
        await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "births")
        await host.command("M1", [Metric("Production/GoodCount", DataType.UINT32, 999)])
        await host.command("M1", [Metric("Control/Speed", DataType.UINT16, 80)])
        await wait_for(lambda: agent.current("M1")["Control/Speed"].value == 80, what="write")
        assert await plcs["M1"].get(100) == [80]
        assert await plcs["M1"].get(0, 2) == [0, 0], "read-only tag was not written"


async def test_ndeath_will_when_the_agent_is_killed(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db", keepalive_s=30)
    path = tmp_path / "edge.yaml"
    path.write_text(edge_yaml(config))
    log = tmp_path / "edge.log"
    async with SparkplugHost(mosquitto.port) as host:
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "taktline_edge",
                "run",
                "--config",
                str(path),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            await host.wait(
                lambda: len(host.of(MessageType.DBIRTH)) == 2,
                f"births from the subprocess (log: {log})",
            )
            bd_seq = host.of(MessageType.NBIRTH)[0].metric("bdSeq").value
            process.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
            await host.wait(lambda: host.of(MessageType.NDEATH), "NDEATH will")
        finally:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 10)
        (death,) = host.of(MessageType.NDEATH)
        assert death.metric("bdSeq").value == bd_seq
        assert death.payload.seq is None
        assert not death.retained


async def test_protoc_decodes_a_published_birth(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    protoc = shutil.which("protoc")
    if protoc is None:
        missing_service("protoc (Debian package protobuf-compiler)")
    assert protoc is not None
    await plcs["M1"].set_u32(0, 123456)
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db")
    async with SparkplugHost(mosquitto.port) as host, EdgeAgent(config):
        await host.wait(lambda: host.of(MessageType.DBIRTH, "M1"), "DBIRTH")
    raw = host.of(MessageType.DBIRTH, "M1")[0].raw
    result = await asyncio.to_thread(
        subprocess.run,
        [protoc, "--decode_raw"],
        input=raw,
        capture_output=True,
        check=True,
        timeout=30,
    )
    text = result.stdout.decode()
    # Payload.metrics is field 2; Metric.name 1, alias 2, timestamp 3, datatype 4, int_value 10.
    assert '1: "Production/GoodCount"' in text
    assert "10: 123456" in text
    assert "4: 7" in text  # datatype UInt32
    assert "3: 1" in text  # Payload.seq of the first DBIRTH
    assert text.count("2 {") == len(MACHINE_TAGS)


async def test_a_clean_stop_publishes_ndeath(
    mosquitto: Mosquitto, plcs: dict[str, Plc], tmp_path: Path
) -> None:
    config = edge_config(mosquitto.port, _ports(plcs), tmp_path / "outbox.db")
    async with SparkplugHost(mosquitto.port) as host:
        async with EdgeAgent(config) as agent:
            await host.wait(lambda: len(host.of(MessageType.DBIRTH)) == 2, "births")
            bd_seq = agent.link.bd_seq
        # A clean MQTT disconnect does not fire the will: the agent says goodbye itself.
        await host.wait(lambda: host.of(MessageType.NDEATH), "NDEATH on shutdown")
        assert host.of(MessageType.NDEATH)[0].metric("bdSeq").value == bd_seq
        assert not agent.link.connected
        assert isinstance(agent.outbox_depth(), int), "still answers after stop"
