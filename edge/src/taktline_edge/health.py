"""The gateway's own monitoring: a local JSON health endpoint (``health.port``).

``GET /health`` answers the agent's status as JSON: 200 when everything is fine (live on MQTT,
outbox not full, every device answering), 503 otherwise, with the same document, so a plain
``curl -f`` or a systemd/monit/Zabbix check can alarm on it. Other paths get 404, other methods
405, a malformed request is dropped. It listens on loopback unless told otherwise: it is for the
gateway's own monitor, and it has no authentication.

Standard library only (asyncio streams): the edge stays free of web frameworks. One request per
connection, every read bounded in size and time, a bounded number of connections at once.
Structured logs are in `taktline_edge.logs`.
"""

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping

from taktline_edge.errors import EdgeError

log = logging.getLogger(__name__)

HealthSource = Callable[[], Awaitable[Mapping[str, object]]]
"""Returns the status document; its "ok" key decides 200 or 503."""

REQUEST_TIMEOUT_S = 5.0
"""A client that does not send its request (line and headers) within this is dropped."""
MAX_CONNECTIONS = 16
"""Connections served at once; more are closed at once (a stuck monitor cannot pile them up)."""
_MAX_HEADER_LINES = 100
_LINE_LIMIT = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _BadRequestError(Exception):
    """The bytes received are not an HTTP/1.x request this server can read."""


class HealthServer:
    """A tiny HTTP/1.1 server answering ``GET /health`` from `source`."""

    def __init__(self, host: str, port: int, source: HealthSource) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        """The bound port (after `start`; differs from the requested one when that is 0)."""
        self._source = source
        self._server: asyncio.Server | None = None
        self._connections = 0

    @property
    def open_connections(self) -> int:
        """Connections being served now (at most `MAX_CONNECTIONS`)."""
        return self._connections

    async def start(self) -> None:
        """Bind the listening socket; `EdgeError` when it cannot (a start-up error)."""
        try:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.requested_port, limit=_LINE_LIMIT
            )
        except OSError as exc:
            raise EdgeError(
                f"health endpoint cannot listen on {self.host}:{self.requested_port}:"
                f" {os.strerror(exc.errno) if exc.errno else exc}"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info(
            "health endpoint on http://%s:%d/health",
            self.host,
            self.port,
            extra={"health_port": self.port},
        )

    async def serve(self) -> None:
        """Serve until cancelled, then close the socket."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                body: Mapping[str, object]
                try:
                    method, path = await _read_request(reader)
                except _BadRequestError as exc:
                    method, status, body = "GET", 400, {"error": str(exc)}
                else:
                    status, body = await self._respond(method, path)
                writer.write(_response(status, body, with_body=method != "HEAD"))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("health request dropped: %r", exc)
        finally:
            self._connections -= 1
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError):
                pass

    async def _respond(self, method: str, path: str) -> tuple[int, Mapping[str, object]]:
        if path.split("?", 1)[0] != "/health":
            return 404, {"error": f"no such path {path[:200]}; try /health"}
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method[:20]} not allowed; use GET"}
        try:
            document = await self._source()
        except Exception as exc:
            # Request boundary: a bug in the status document must not take the endpoint down;
            # the monitor sees a 500 (an alarm) and the log has the traceback.
            log.exception("health document failed")
            return 500, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return (200 if document.get("ok") else 503), document


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    try:
        line = (await reader.readline()).decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequestError(f"bad request line {line[:80]!r}")
        for _ in range(_MAX_HEADER_LINES):
            header = await reader.readline()
            if header in (b"\r\n", b"\n"):
                return parts[0], parts[1]
            if not header:
                raise asyncio.IncompleteReadError(header, None)
    except ValueError as exc:  # StreamReader.readline: a line over the limit
        raise _BadRequestError(f"request line or header too long: {exc}") from None
    raise _BadRequestError("too many header lines")


def _response(status: int, body: Mapping[str, object], *, with_body: bool = True) -> bytes:
    data = json.dumps(body, default=str, sort_keys=True).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + (data if with_body else b"")
