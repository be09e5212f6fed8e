"""The gateway's own monitoring: a local JSON health endpoint and structured (JSON lines) logs.

``GET /health`` on the configured loopback port answers the agent's status as JSON: 200 when
everything is fine (live on MQTT, outbox not full, every device answering), 503 otherwise, with
the same document, so a plain ``curl -f`` or a systemd/monit check can alarm on it. Standard
library only (asyncio streams): the edge stays free of web frameworks. One request per
connection, every read bounded in size and time.

`configure_logging(level, "json")` makes every log line one JSON object (ts, level, logger,
message, exc), for a log shipper; ``"text"`` keeps the classic human format.
"""

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

log = logging.getLogger(__name__)

HealthSource = Callable[[], Awaitable[Mapping[str, object]]]
"""Returns the status document; its "ok" key decides 200 or 503."""

REQUEST_TIMEOUT_S = 5.0
"""A client that does not send its request (line and headers) within this is dropped."""
_MAX_HEADER_LINES = 100
_LINE_LIMIT = 8192
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """A tiny HTTP/1.1 server answering ``GET /health`` from `source`."""

    def __init__(self, host: str, port: int, source: HealthSource) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        """The bound port (after `start`; differs from the requested one when that is 0)."""
        self._source = source
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind the listening socket (errors here are start-up errors)."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.requested_port, limit=_LINE_LIMIT
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("health endpoint on http://%s:%d/health", self.host, self.port)

    async def serve(self) -> None:
        """Serve until cancelled, then close the socket."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                method, path = await _read_request(reader)
                status, body = await self._respond(method, path)
                writer.write(_response(status, body))
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            log.debug("health request dropped: %s", exc)
        except asyncio.LimitOverrunError as exc:
            log.debug("health request too large: %s", exc)
        finally:
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError):
                pass

    async def _respond(self, method: str, path: str) -> tuple[int, Mapping[str, object]]:
        if path.split("?", 1)[0] != "/health":
            return 404, {"error": f"no such path {path}; try /health"}
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method} not allowed; use GET"}
        document = await self._source()
        return (200 if document.get("ok") else 503), document


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    line = (await reader.readline()).decode("latin-1").strip()
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {line[:80]!r}")
    for _ in range(_MAX_HEADER_LINES):
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            return parts[0], parts[1]
    raise ValueError("too many header lines")


def _response(status: int, body: Mapping[str, object]) -> bytes:
    data = json.dumps(body, default=str, sort_keys=True).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, message, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int, fmt: Literal["text", "json"] = "text") -> None:
    """Root logging to stderr in `fmt` (replacing any handlers set before)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
