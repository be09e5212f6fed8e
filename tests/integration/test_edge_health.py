"""The health endpoint in-process, over real sockets: failures of its own stay contained."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping

import pytest

from taktline_edge import health
from taktline_edge.config import HealthConfig
from taktline_edge.health import MAX_CONNECTIONS, HealthServer
from tests.support import wait_for


@contextlib.asynccontextmanager
async def _serving(server: HealthServer) -> AsyncIterator[int]:
    await server.start()
    task = asyncio.create_task(server.serve(), name="health-under-test")
    try:
        assert server.port is not None
        yield server.port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\n\r\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_loopback_by_default_and_a_failing_document_is_a_500() -> None:
    calls = 0

    async def source() -> Mapping[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("outbox gone")
        return {"ok": True}

    config = HealthConfig(port=0)
    server = HealthServer(config.host, 0, source)
    async with _serving(server) as port:
        assert config.host == "127.0.0.1"
        first = await _get(port)
        assert first.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert json.loads(first.partition(b"\r\n\r\n")[2]) == {
            "ok": False,
            "error": "RuntimeError: outbox gone",
        }
        assert (await _get(port)).startswith(b"HTTP/1.1 200 OK\r\n")


async def test_connections_at_once_are_capped() -> None:
    async def source() -> Mapping[str, object]:
        return {"ok": True}

    server = HealthServer("127.0.0.1", 0, source)
    async with _serving(server) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        await wait_for(lambda: server.open_connections == MAX_CONNECTIONS, what="all idle")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b"", "one too many: closed at once"
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        await wait_for(lambda: server.open_connections == 0, what="idle ones released")
        assert (await _get(port)).startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_silent_client_is_dropped_after_the_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "REQUEST_TIMEOUT_S", 0.2)

    async def source() -> Mapping[str, object]:
        return {"ok": True}

    server = HealthServer("127.0.0.1", 0, source)
    async with _serving(server) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\n")  # and never the blank line
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert server.open_connections == 0
