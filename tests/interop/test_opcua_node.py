"""The agent's OPC UA side against another vendor's server: node-opcua (Node.js).

The server (tests/interop/opcua-node/server.js, locked by its package-lock.json; install with
`npm ci` in that folder) listens on a free loopback port with a UInt32 counter it increments
every 100 ms (source timestamp set), a Double, a Boolean, an Int16, a Float in a nested object,
and a String and a Double array the agent does not carry. `taktline-edge browse` writes a config
from it that the agent's loader accepts; an `OpcUaSource` storing into a real outbox receives the
counter with the server's source timestamps; after the server is killed and started again on the
same port, values flow again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import statistics
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taktline_contract.backoff import Backoff
from taktline_edge.cli import main
from taktline_edge.config import OpcUaConfig, OpcUaTagConfig, load_config
from taktline_edge.drivers.opcua import OpcUaSource
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
from tests.support import free_port, missing_service, wait_for

NODE_DIR = Path(__file__).parent / "opcua-node"
_START_TIMEOUT_S = 30.0
COUNTER = "GoodCount"
EXPECTED_TAGS = {
    "GoodCount": ("ns=1;s=Press1.GoodCount", "UInt32"),
    "Temperature": ("ns=1;s=Press1.Temperature", "Double"),
    "Running": ("ns=1;s=Press1.Running", "Boolean"),
    "Level": ("ns=1;s=Press1.Level", "Int16"),
    "Drive/Speed": ("ns=1;s=Press1.Drive.Speed", "Float"),
}
STATIC_VALUES = {"Temperature": 61.5, "Running": True, "Level": -125, "Drive/Speed": 12.5}


class NodeOpcUaServer:
    """node-opcua's server.js as a subprocess, restartable on the same port."""

    def __init__(self, node: str, pki: Path, log: Path) -> None:
        self.node = node
        self.pki = pki
        self.log = log
        self.port = free_port()
        self.endpoint = ""
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        # stderr (node-opcua's log) to a file: an undrained pipe would block the server.
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                self.node,
                str(NODE_DIR / "server.js"),
                str(self.port),
                str(self.pki),
                cwd=NODE_DIR,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                line = await self.process.stdout.readline()
            ready = json.loads(line)
        except (TimeoutError, json.JSONDecodeError) as exc:
            await self.kill()
            error = self.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"node-opcua server did not start: {exc!r}\n{error}") from exc
        self.endpoint = str(ready["endpoint"])

    async def kill(self) -> None:
        """SIGKILL: the server vanishes without closing its sessions (a power cut)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(5):
                await self.process.wait()
        except TimeoutError:
            await self.kill()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One server certificate for the module's servers (creating it costs a second or two)."""
    return tmp_path_factory.mktemp("opcua-node-pki")


@pytest.fixture
async def server(pki: Path, tmp_path: Path) -> AsyncIterator[NodeOpcUaServer]:
    node = shutil.which("node")
    if node is None:
        missing_service("node (Debian package nodejs)")
    if not (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        missing_service(f"node-opcua (run `npm ci` in {NODE_DIR})")
    assert node is not None
    process = NodeOpcUaServer(node, pki, tmp_path / "node-opcua.log")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def test_browse_writes_a_config_the_agent_loads(
    server: NodeOpcUaServer, tmp_path: Path
) -> None:
    output = tmp_path / "edge.yaml"
    code = await asyncio.to_thread(
        main, ["browse", "--endpoint", server.endpoint, "--output", str(output)]
    )
    assert code == 0
    (device,) = load_config(output).devices
    assert device.id == "Press1"
    assert device.opcua is not None
    assert device.opcua.endpoint == server.endpoint
    tags = {t.metric: (t.node_id, t.type) for t in device.tags}  # type: ignore[union-attr]
    assert tags == EXPECTED_TAGS
    text = output.read_text()
    assert "# not a tag (String): Press1/Operator ns=1;s=Press1.Operator" in text
    assert "# not a tag (Double[]): Press1/Profile ns=1;s=Press1.Profile" in text


def _source(endpoint: str, sink: OutboxSink) -> OpcUaSource:
    # Publishing slower than the counter changes, with a queue: each notification carries
    # several counter values, so their distinct timestamps can only be the server's.
    config = OpcUaConfig(
        endpoint=endpoint,
        publishing_interval_ms=500,
        sampling_interval_ms=0,
        queue_size=20,
        timeout_s=2.0,
    )
    tags = [
        OpcUaTagConfig(metric=metric, node_id=node_id, type=kind).to_tag()  # type: ignore[arg-type]
        for metric, (node_id, kind) in EXPECTED_TAGS.items()
    ]
    return OpcUaSource("Press1", config, tags, sink, backoff=Backoff(initial=0.2, maximum=1.0))


class OutboxSink:
    """The agent's durable sink: samples are appended to a real outbox (SQLite)."""

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path)
        self.async_outbox = AsyncOutbox(self.outbox)

    async def __call__(self, device: str, samples: Sequence[Sample]) -> None:
        await self.async_outbox.append(samples)

    def counter(self, since: datetime | None = None) -> list[tuple[datetime, int]]:
        """The stored counter samples (time, value), oldest first."""
        rows = self.outbox.oldest(1_000_000)
        return [
            (row.sample.timestamp, int(row.sample.value))  # type: ignore[arg-type]
            for row in rows
            if row.sample.metric == COUNTER
            and row.sample.value is not None
            and (since is None or row.sample.timestamp > since)
        ]


async def test_the_source_receives_the_counter_with_source_timestamps_across_a_restart(
    server: NodeOpcUaServer, tmp_path: Path
) -> None:
    sink = OutboxSink(tmp_path / "outbox.db")
    source = _source(server.endpoint, sink)
    try:
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(source.run(), name="source under test")
            await wait_for(lambda: len(sink.counter()) >= 15, 20, what="15 counter samples")
            for metric, value in STATIC_VALUES.items():
                assert source.current[metric].value == value, metric

            counter = sink.counter()
            values = [v for _, v in counter]
            stamps = [t for t, _ in counter]
            assert values == sorted(set(values)), "increasing, no sample twice"
            assert stamps == sorted(set(stamps))
            assert all(t.utcoffset() == timedelta(0) for t in stamps)
            # Source timestamps: ~100 ms apart (the server's timer) although notifications
            # arrive every 500 ms; arrival stamps would bunch within a millisecond or two.
            gap = statistics.median((b - a).total_seconds() for a, b in itertools.pairwise(stamps))
            assert 0.07 < gap < 0.2, gap
            assert values[-1] - values[0] == len(values) - 1, "every change, none skipped"

            # The server dies and comes back on the same port (its counter starts again).
            await server.kill()
            killed = datetime.now(UTC)
            await wait_for(lambda: source.status.available is False, 15, what="loss noticed")
            await server.start()
            await wait_for(
                lambda: len(sink.counter(since=killed)) >= 5, 30, what="values after restart"
            )
            assert source.status.available
            assert source.status.sessions == 2
            after = [v for _, v in sink.counter(since=killed)]
            assert after == sorted(set(after))
            assert after[0] < values[-1], "the restarted server's own counter"
            task.cancel()
    finally:
        sink.outbox.close()
