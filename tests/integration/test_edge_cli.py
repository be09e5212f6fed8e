"""`taktline-edge check` and `run` as an operator runs them: real subprocesses, sockets, broker.

check: validates without connecting (a listener the config points at is never dialled, no outbox
is created). run: JSON log lines on stderr, the health endpoint follows a real Modbus PLC going
away, SIGTERM stops the agent cleanly (exit 0, NDEATH).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from taktline_contract.sparkplug import MessageType
from tests.edge_support import SparkplugHost, edge_config, plc
from tests.support import Mosquitto, free_port, wait_for

EDGE = [sys.executable, "-m", "taktline_edge"]


@contextlib.contextmanager
def _listener() -> Iterator[socket.socket]:
    """A real TCP listener that nobody should dial (accept() tells if somebody did)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def _config(port: int, outbox: Path, health: dict[str, object] | None = None) -> dict[str, Any]:
    return {
        "sparkplug": {"group_id": "PLANT-CLI", "edge_node_id": "GW-CLI", "primary_host_id": "H"},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "edge-cli-test"},
        "outbox": {"path": str(outbox)},
        "health": health or {},
        "devices": [
            {
                "id": "M1",
                "modbus": {"host": "127.0.0.1", "port": port, "timeout_s": 0.5},
                "poll_interval_ms": 100,
                "tags": [
                    {"metric": "Good", "address": 0, "type": "uint32"},
                    {"metric": "Running", "table": "coil", "address": 0},
                ],
            },
            {
                "id": "OVEN",
                "opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}/"},
                "tags": [{"metric": "Temp", "node_id": "ns=2;s=Oven.Temp", "type": "Double"}],
            },
        ],
    }


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGE, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_validates_a_good_file_without_connecting_or_creating_anything(
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "var" / "outbox.db"
    with _listener() as listener:
        port = listener.getsockname()[1]
        # MQTT, the Modbus PLC, the OPC UA server and the health endpoint all on that port.
        path = tmp_path / "edge.yaml"
        path.write_text(yaml.safe_dump(_config(port, outbox, {"port": port})))
        result = _check(path)
        assert result.returncode == 0, result.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: OK (2 devices, 3 tags)"
    assert f"  mqtt       127.0.0.1:{port} as edge-cli-test" in lines
    assert f"  health     http://127.0.0.1:{port}/health, text logs" in lines
    assert f"  device     M1: modbus 127.0.0.1:{port} unit 1, every 100 ms, 2 tags" in lines
    assert f"  device     OVEN: opcua opc.tcp://127.0.0.1:{port}/ (None), 1 tags" in lines
    assert result.stderr == ""
    assert not outbox.parent.exists(), "check created the outbox (or its folder)"


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.db"
    raw = _config(free_port(), outbox)
    raw["mqtt"]["keep_alive"] = 30
    raw["health"] = {"log_format": "xml"}
    raw["devices"][0]["tags"][0]["type"] = "uint17"
    raw["devices"][1]["opcua"]["security_mode"] = "Sign"
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    text = path.read_text().splitlines()

    def line(fragment: str) -> int:
        return next(n for n, t in enumerate(text, 1) if fragment in t)

    result = _check(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "taktline-edge: invalid configuration (4 problems)",
        f"{path}:{line('keep_alive')}: mqtt.keep_alive: unknown key",
        f"{path}:{line('xml')}: health.log_format: Input should be 'text' or 'json' (got 'xml')",
        f"{path}:{line('uint17')}: devices[0].tags[0].type: Input should be 'uint16', 'int16',"
        " 'uint32', 'int32', 'float32', 'uint64', 'int64', 'float64', 'bool', 'bit' or 'string'"
        " (got 'uint17')",
        f"{path}:{line('endpoint')}: devices[1].opcua: security_policy and security_mode must"
        " both be None or both be set (got None/Sign)",
    ]
    assert not outbox.exists()


def test_check_names_environment_problems(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(_config(free_port(), tmp_path / "o.db")))
    result = subprocess.run(
        [*EDGE, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TAKTLINE_EDGE_MQTT_PASSWORD": "s3cret"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "environment: TAKTLINE_EDGE_MQTT_PASSWORD is set but no MQTT username is"
        " (set TAKTLINE_EDGE_MQTT_USERNAME or mqtt.username)"
    ]
    assert "s3cret" not in result.stderr


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every stderr line as the JSON object it must be (the whole output on failure)."""
    try:
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        output = "\n".join(lines)
        raise AssertionError(f"a log line is not JSON ({exc}):\n{output}") from None


@dataclass
class _Agent:
    """`taktline-edge run` as a subprocess, its stderr collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return _json_lines(self.lines)

    def health_port(self) -> int | None:
        ports = [r["health_port"] for r in self.records() if "health_port" in r]
        return ports[0] if ports else None

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)


@contextlib.asynccontextmanager
async def _run_agent(config: Path, *options: str) -> AsyncIterator[_Agent]:
    process = await asyncio.create_subprocess_exec(
        *EDGE,
        "run",
        "--config",
        str(config),
        *options,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    agent = _Agent(process)

    async def collect() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            agent.lines.append(line.decode().rstrip("\n"))

    reader = asyncio.create_task(collect(), name="agent-stderr")
    try:
        yield agent
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
        await asyncio.wait_for(reader, 10)


async def _http(port: int, request: bytes) -> tuple[int, dict[str, Any] | None, bytes]:
    """Send raw `request` bytes; the status, the JSON body (None if empty) and the head."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, (json.loads(body) if body else None), head


async def _get(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    status, body, _ = await _http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert body is not None
    return status, body


async def test_json_logs_and_health_with_an_unreachable_plc(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = edge_config(mosquitto.port, {"M1": free_port()}, tmp_path / "outbox.db")
    raw = config.model_dump(mode="json", exclude_none=True)
    raw["mqtt"]["client_id"] = "edge-cli-json-logs"
    raw["health"] = {"port": 0, "log_format": "json"}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(raw))
    async with _run_agent(path) as agent:
        await wait_for(
            lambda: any("M1 unavailable" in line for line in agent.lines),
            timeout=30,
            what=f"the unavailable PLC logged: {agent.lines}",
        )
        port = await wait_for(agent.health_port, what="the health endpoint's port in the log")

        async def connected() -> tuple[int, dict[str, Any]] | None:
            status, health = await _get(port)
            return (status, health) if health["mqtt"]["connected"] else None

        # The broker is up, the PLC is not: still not ok.
        status, health = await wait_for(connected, what="connected to the broker")
        assert status == 503
        assert health["ok"] is False
        device = health["devices"]["M1"]
        assert device["available"] is False
        assert "cannot connect" in device["last_error"]
        assert health["outbox"]["full"] is False

        assert (await _get(port, "/metrics"))[0] == 404
        assert (await _http(port, b"POST /health HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await _http(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n"))[0] == 400
        # Over the line limit: a 400, or a reset when the rest of it was still unread.
        with contextlib.suppress(ConnectionResetError):
            assert (await _http(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"))[0] == 400
        status, body, head = await _http(port, b"HEAD /health HTTP/1.1\r\n\r\n")
        assert (status, body) == (503, None)
        assert b"Content-Length: " in head
        # A client that connects and goes away without a request.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        assert (await _get(port))[0] == 503, "the endpoint still answers"

        assert await agent.stop() == 0
    records = agent.records()  # every line is one JSON object
    assert records[-1]["message"] == "edge agent stopped"
    for record in records:
        assert {"ts", "level", "logger", "message"} <= record.keys(), record
        assert datetime.fromisoformat(record["ts"]).utcoffset() == UTC.utcoffset(None)
    (down,) = [r for r in records if r["message"].startswith("M1 unavailable")]
    assert down["level"] == "WARNING"
    assert down["logger"] == "taktline_edge.poller"


async def test_health_follows_a_real_plc_and_sigterm_stops_cleanly(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with plc() as server, SparkplugHost(mosquitto.port) as host:
        await server.set_u32(0, 41)
        config = edge_config(mosquitto.port, {"M1": server.port}, tmp_path / "outbox.db")
        raw = config.model_dump(mode="json", exclude_none=True)
        raw["mqtt"]["client_id"] = "edge-cli-health"
        raw["health"] = {"port": 0}  # text logs in the file; the command line asks for JSON
        path = tmp_path / "edge.yaml"
        path.write_text(yaml.safe_dump(raw))
        async with _run_agent(path, "--log-format", "json") as agent:
            port = await wait_for(agent.health_port, timeout=30, what="health port in the log")

            async def health(ok: bool) -> dict[str, Any] | None:
                status, body = await _get(port)
                return body if body["ok"] is ok and status == (200 if ok else 503) else None

            up = await wait_for(lambda: health(True), timeout=30, what="ok: true")
            assert up["devices"]["M1"]["available"] is True
            assert up["devices"]["M1"]["last_error"] is None
            assert up["mqtt"]["live"] is True
            await host.wait(lambda: host.of(MessageType.DBIRTH, "M1"), "DBIRTH")

            await server.stop()
            down = await wait_for(lambda: health(False), timeout=30, what="ok: false")
            assert down["devices"]["M1"]["available"] is False
            assert down["devices"]["M1"]["last_error"]
            assert down["mqtt"]["live"] is True, "only the device is down"

            assert await agent.stop() == 0
        assert _json_lines(agent.lines)[-1]["message"] == "edge agent stopped"
        # A clean stop says goodbye itself: an NDEATH with the session's bdSeq.
        await host.wait(lambda: host.of(MessageType.NDEATH), "NDEATH after SIGTERM")
        (birth,) = host.of(MessageType.NBIRTH)
        (death,) = host.of(MessageType.NDEATH)
        assert death.metric("bdSeq").value == birth.metric("bdSeq").value


def test_run_reports_an_invalid_config_and_a_failed_start_as_json_lines(tmp_path: Path) -> None:
    def run(config: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        path = tmp_path / "edge.yaml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [*EDGE, "run", "--config", str(path), "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.returncode, _json_lines(result.stderr.splitlines())

    bad = _config(free_port(), tmp_path / "outbox.db", {"log_format": "xml"})
    code, (record,) = run(bad)
    assert code == 2
    assert record["level"] == "ERROR"
    assert record["message"].startswith("invalid configuration (1 problem): ")
    (error,) = record["errors"]
    assert error.endswith(": health.log_format: Input should be 'text' or 'json' (got 'xml')")

    with _listener() as taken:
        del bad["devices"][1]  # no OPC UA server to wait for
        bad["health"] = {"port": taken.getsockname()[1]}
        code, records = run(bad)
    assert code == 1
    failure = records[-1]
    assert failure["level"] == "CRITICAL"
    port = bad["health"]["port"]
    assert failure["message"] == (
        f"edge agent stopped: EdgeError: health endpoint cannot listen on 127.0.0.1:{port}:"
        " Address already in use"
    )
    assert "Traceback" in failure["exc"]
