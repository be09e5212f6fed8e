"""The edge agent as a real process for fault tests: start, kill -9, restart; its outbox on disk.

No tests here: the fault tests of the edge's store-and-forward import these.

* `AgentProcess` runs ``python -m taktline_edge run`` (text logs on stderr, collected line by
  line; the health endpoint on a free port, read from each run's log).
* `outbox_rows` reads an outbox file the way the next agent will find it, without touching it
  (it copies the database and its WAL); `OutboxWatcher` reads it read-only while an agent runs.
* A line of counters: `counter_config` (a good count and `COUNTERS` more counters per PLC),
  `run_line` (every counter steps every `TICK_S`), `decode` (what a host received, per sample,
  with the edge session that sent it and byte-identical redeliveries set apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taktline_contract.sparkplug import MessageType, to_millis
from taktline_edge.config import EdgeConfig
from tests.edge_support import GROUP, HOST_ID, NODE, Plc, Received
from tests.support import wait_for

EDGE = [sys.executable, "-m", "taktline_edge", "run"]
_HEALTH_LINE = re.compile(r"health endpoint on http://[^:]+:(\d+)/health")


def write_config(config: EdgeConfig, path: Path) -> Path:
    """Write `config` as YAML for the agent process, with a health endpoint on a free port."""
    raw = config.model_dump(mode="json", exclude_none=True)
    # Port 0: the agent binds a free one and logs it (no race with other processes for a port).
    raw["health"] = {**raw.get("health", {}), "port": 0, "metrics_interval_s": 0.2}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class AgentProcess:
    """``taktline-edge run`` in a subprocess, restartable; every run's log lines are kept."""

    config: Path
    preexec: Callable[[], None] | None = None
    """Runs in the child before exec (e.g. resource limits)."""
    lines: list[str] = field(default_factory=list)
    starts: int = 0
    _process: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        assert not self.running, "already running"
        self.starts += 1
        self.lines.append(f"--- start {self.starts}")
        process = await asyncio.create_subprocess_exec(
            *EDGE,
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=self.preexec,
        )
        self._process = process

        async def collect() -> None:
            assert process.stderr is not None
            async for line in process.stderr:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))

        self._reader = asyncio.create_task(collect(), name=f"agent-log-{self.starts}")

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind (the WAL stays, no NDEATH but the broker's will)."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> int:
        """SIGTERM: a clean shutdown; returns the exit code."""
        return await self._end(signal.SIGTERM)

    async def _end(self, sig: signal.Signals) -> int:
        process, reader = self._process, self._reader
        assert process is not None
        assert reader is not None
        if process.returncode is None:
            process.send_signal(sig)
        code = await asyncio.wait_for(process.wait(), 30)
        await asyncio.wait_for(reader, 10)
        self._process = None
        return code

    async def close(self) -> None:
        if self.running:
            await self.kill()

    @property
    def health_port(self) -> int | None:
        """The health endpoint's port in this run (from its log line), None before it is up."""
        for line in reversed(self.lines):
            if line.startswith("--- start"):
                return None
            found = _HEALTH_LINE.search(line)
            if found:
                return int(found.group(1))
        return None

    async def health(self) -> dict[str, Any] | None:
        """The health document, or None while the endpoint does not answer."""
        port = self.health_port
        if port is None:
            return None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        except (OSError, TimeoutError):
            return None
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), 5)
        except (OSError, TimeoutError):
            return None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        _, _, body = response.partition(b"\r\n\r\n")
        return json.loads(body) if body else None

    async def wait_health(
        self, condition: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20
    ) -> dict[str, Any]:
        """Wait until the health document satisfies `condition`; return it."""
        assert self.running, "the agent is not running"

        async def check() -> dict[str, Any] | None:
            if not self.running:
                raise AssertionError(f"the agent exited while waiting for {what}:\n{self.log()}")
            health = await self.health()
            return health if health is not None and condition(health) else None

        result: dict[str, Any] = await wait_for(check, timeout=timeout, what=what)
        return result

    def log(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One row of an outbox file as stored."""

    id: int
    device: str
    metric: str
    ts_ms: int
    value: str | None
    historical: bool


def outbox_rows(path: Path) -> list[OutboxRow]:
    """Every sample row of the outbox at `path` (and its WAL), without touching the file."""
    if not path.exists():
        return []
    with tempfile.TemporaryDirectory(prefix="outbox-copy-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        db = sqlite3.connect(copy)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples'").fetchone() is None:
                return []  # killed before the agent created its schema
            rows = db.execute(
                "SELECT id, device, metric, ts_ms, value, historical FROM samples ORDER BY id"
            ).fetchall()
        finally:
            db.close()
    return [OutboxRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]


def live_outbox_rows(path: Path) -> list[OutboxRow]:
    """The outbox's rows read while an agent may be writing it (a WAL reader, read-only)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1)
    try:
        rows = db.execute(
            "SELECT id, device, metric, ts_ms, value, historical FROM samples ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return [OutboxRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]


@dataclass
class OutboxWatcher:
    """Reads the outbox every `every_s` while the agent runs: every row it ever saw."""

    path: Path
    every_s: float = 0.1
    seen: dict[tuple[str, str, int], str | None] = field(default_factory=dict)
    reads: int = 0

    async def run(self) -> None:
        while True:
            try:
                rows = await asyncio.to_thread(live_outbox_rows, self.path)
            except sqlite3.Error:
                rows = []  # the file is being created, recovered or swapped: next time
            else:
                self.reads += 1
            for row in rows:
                self.seen[(row.device, row.metric, row.ts_ms)] = row.value
            await asyncio.sleep(self.every_s)


COUNTERS = 10
"""uint16 counters per PLC besides the uint32 good count (more samples: a real backlog)."""
GOOD = "Production/GoodCount"
TICK_S = 0.01
POLL_MS = 20


def counter_config(
    broker_port: int, plc_ports: dict[str, int], outbox: Path, **outbox_options: Any
) -> EdgeConfig:
    """Devices `plc_ports` (id -> Modbus port) with the good count and the counters, polled fast."""
    tags: list[dict[str, Any]] = [{"metric": GOOD, "address": 0, "type": "uint32"}]
    tags += [
        {"metric": f"Counter/C{i:02d}", "address": 10 + i, "type": "uint16"}
        for i in range(COUNTERS)
    ]
    return EdgeConfig.model_validate(
        {
            "sparkplug": {"group_id": GROUP, "edge_node_id": NODE, "primary_host_id": HOST_ID},
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker_port,
                "client_id": "edge-fault-process",
                "keepalive_s": 5,
            },
            "outbox": {"path": str(outbox), **outbox_options},
            "devices": [
                {
                    "id": device,
                    "modbus": {"host": "127.0.0.1", "port": port, "timeout_s": 1.0},
                    "poll_interval_ms": POLL_MS,
                    "tags": tags,
                }
                for device, port in plc_ports.items()
            ],
        }
    )


async def run_line(plcs: dict[str, Plc], count: list[int]) -> None:
    """Every PLC's counters step together every TICK_S; `count[0]` is the current good count."""
    while True:
        count[0] += 1
        n = count[0]
        for server in plcs.values():
            await server.set(0, [n >> 16, n & 0xFFFF])
            await server.set(10, [(n + i) & 0xFFFF for i in range(COUNTERS)])
        await asyncio.sleep(TICK_S)


async def plc_count(server: Plc) -> int:
    """The good count in `server`'s registers."""
    high, low = await server.get(0, 2)
    return high << 16 | low


@dataclass
class Arrival:
    """One DDATA metric as the host got it."""

    device: str
    metric: str
    ts_ms: int
    value: Any
    historical: bool
    session: int
    """NBIRTHs the host had seen before it: the edge session that sent it."""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.device, self.metric, self.ts_ms)


@dataclass
class Record:
    """The host's record, decoded: arrivals, and how many DDATA were byte-identical repeats."""

    arrivals: list[Arrival] = field(default_factory=list)
    redelivered: int = 0


def decode(messages: list[Received]) -> Record:
    """Every DDATA sample the host received, in arrival order (QoS 1 redeliveries set apart)."""
    record = Record()
    names: dict[str, dict[int, str]] = {}
    seen: set[bytes] = set()
    session = 0
    for message in messages:
        if message.kind == MessageType.NBIRTH:
            session += 1
        elif message.kind == MessageType.DBIRTH:
            assert message.device is not None
            names.setdefault(message.device, {}).update(
                (m.alias, m.name) for m in message.payload.metrics if m.alias is not None
            )
        elif message.kind == MessageType.DDATA:
            if message.raw in seen:
                record.redelivered += 1  # QoS 1 redelivery by the broker: the same message
                continue
            seen.add(message.raw)
            assert message.device is not None
            for metric in message.payload.metrics:
                assert metric.alias is not None
                assert metric.timestamp is not None
                record.arrivals.append(
                    Arrival(
                        message.device,
                        names[message.device][metric.alias],
                        to_millis(metric.timestamp),
                        metric.value,
                        metric.is_historical,
                        session,
                    )
                )
    return record
