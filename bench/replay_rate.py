"""Replay rate of the edge agent after a simulated 1-hour outage, with live data still flowing.

The plant (stated, configurable): 100 Modbus devices x 20 tags that change every second, polled
every second = 2 000 live samples/s. An hour of outage is then 7.2 million samples waiting in the
outbox; the goal (issue 3) is a replay at >= 10x the live rate while live data keeps flowing,
interleaved, with the replayed data flagged ``is_historical``.

What runs (all on loopback, all real):

* a private Mosquitto on a free port;
* one pymodbus TCP server (any unit id) whose tag registers all step by one every second; the
  agent's 100 devices each poll it over their own connection;
* the outbox file, pre-filled with the outage: every device's tags once a second over the last
  `--minutes` minutes, stored as an agent that could not publish stores them (historical);
* the edge agent as its own process (``python -m taktline_edge run``), started on that file;
* a Sparkplug primary host (STATE online) that counts every DDATA metric by its is_historical
  flag and notes when each arrived.

Measured: the replay rate (historical samples delivered / time from the NBIRTH to the last one),
the live rate over the same window (live samples delivered / the same time) and how late live
samples were (sample timestamp -> arrival at the host) while the backlog drained.

Baseline, same run, same broker and host: a bare aiomqtt client publishing DDATA payloads of the
same size (250 metrics, as the agent packs them) at QoS 1 with the agent's window of publishes in
flight, each awaiting its PUBACK: the most the agent's MQTT client could deliver with no outbox.

    uv run python bench/replay_rate.py [--minutes 60] [--devices 100] [--tags 20]

Stops by itself: at most `--deadline` seconds (default 900) whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from taktline_contract.sparkplug import (
    DataType,
    HostState,
    Metric,
    Payload,
    encode_payload,
    encode_state,
    state_topic,
)
from taktline_contract.sparkplug.schema import PayloadMessage
from taktline_edge.outbox import Outbox, Sample

GROUP, NODE, HOST = "BENCH", "GW-REPLAY", "bench-host"
METRICS_PER_MESSAGE = 250
"""The agent's `PublisherSettings.max_metrics` (DDATA size)."""
WINDOW = 100
"""The agent's `PublisherSettings.window` (QoS 1 publishes in flight)."""
NETWORK_TIMEOUT_S = 10.0


class BenchError(Exception):
    """The benchmark could not measure (the message says what went wrong)."""


@dataclass(frozen=True, slots=True)
class Plant:
    """The simulated plant: `devices` x `tags` changing every `interval_s`."""

    devices: int
    tags: int
    interval_s: float = 1.0

    @property
    def live_rate(self) -> float:
        """Samples per second the plant produces (every tag changes every interval)."""
        return self.devices * self.tags / self.interval_s

    def device(self, index: int) -> str:
        return f"M{index:03d}"

    def metric(self, index: int) -> str:
        return f"Tag/T{index:02d}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    """A private Mosquitto on a free port; yields the port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise BenchError("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {workdir}/mosquitto.log\n"
        # A slow subscriber must not make the broker drop QoS 1 messages: the host counts them.
        "max_queued_messages 0\nmax_inflight_messages 100\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("mosquitto did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.asynccontextmanager
async def plc(plant: Plant) -> AsyncIterator[int]:
    """A Modbus TCP server whose `plant.tags` registers all step every interval; yields its port."""
    device = SimDevice(
        id=0, simdata=[SimData(0, count=max(plant.tags, 1), values=0, datatype=SimType.REGISTERS)]
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    transport: Any = server.transport
    port = int(transport.sockets[0].getsockname()[1])

    async def tick() -> None:
        step = 0
        next_at = time.monotonic()
        while True:
            step += 1
            words = [(step + i) & 0xFFFF for i in range(plant.tags)]
            await server.async_setValues(1, 16, 0, words)
            next_at += plant.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    ticker = asyncio.create_task(tick(), name="plc-tick")
    try:
        yield port
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await server.shutdown()  # type: ignore[no-untyped-call]


def prefill(path: Path, plant: Plant, minutes: float) -> tuple[int, float]:
    """Store `minutes` of the plant's samples as an outage leaves them; (rows, seconds taken)."""
    seconds = round(minutes * 60 / plant.interval_s)
    start = datetime.now(UTC) - timedelta(seconds=seconds * plant.interval_s)
    started = time.perf_counter()
    with Outbox(path) as outbox:
        for tick in range(seconds):
            stamp = start + timedelta(seconds=tick * plant.interval_s)
            outbox.append(
                [
                    Sample(
                        plant.device(d),
                        plant.metric(t),
                        stamp,
                        (tick + t) & 0xFFFF,
                        DataType.UINT16,
                    )
                    for d in range(plant.devices)
                    for t in range(plant.tags)
                ],
                historical=True,
            )
        rows = outbox.depth()
    return rows, time.perf_counter() - started


def agent_config(plant: Plant, broker_port: int, plc_port: int, outbox: Path) -> dict[str, Any]:
    return {
        "sparkplug": {"group_id": GROUP, "edge_node_id": NODE, "primary_host_id": HOST},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "bench-edge"},
        "outbox": {"path": str(outbox)},
        "devices": [
            {
                "id": plant.device(d),
                "modbus": {"host": "127.0.0.1", "port": plc_port, "unit_id": 1},
                "poll_interval_ms": round(plant.interval_s * 1000),
                "tags": [
                    {"metric": plant.metric(t), "address": t, "type": "uint16"}
                    for t in range(plant.tags)
                ],
            }
            for d in range(plant.devices)
        ],
    }


@dataclass
class Arrivals:
    """What the host received: DDATA metric counts by kind, with arrival times."""

    historical: int = 0
    live: int = 0
    baseline: int = 0
    births: int = 0
    birth_at: float | None = None
    last_historical_at: float | None = None
    live_lateness_s: list[float] = field(default_factory=list)
    live_times: list[tuple[float, int]] = field(default_factory=list)
    mixed: int = 0
    """DDATA that mixed historical and live metrics (the publisher never should)."""


class Host:
    """A Sparkplug primary host that counts what it receives (no per-sample objects: cheap)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals = Arrivals()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        stamp = datetime.now(UTC)
        will = aiomqtt.Will(
            state_topic(HOST), encode_state(HostState(False, stamp)), qos=1, retain=True
        )
        async with aiomqtt.Client(
            "127.0.0.1", self.port, identifier="bench-host", will=will, timeout=NETWORK_TIMEOUT_S
        ) as client:
            await client.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
            await client.publish(
                state_topic(HOST), encode_state(HostState(True, stamp)), qos=1, retain=True
            )
            self.ready.set()
            async for message in client.messages:
                self._on(str(message.topic), message.payload)

    def _on(self, topic: str, raw: Any) -> None:
        now = time.monotonic()
        kind = topic.split("/")[2]
        a = self.arrivals
        if kind == "NBIRTH":
            a.births += 1
            if a.birth_at is None:
                a.birth_at = now
            return
        if kind != "DDATA" or not isinstance(raw, bytes):
            return
        message = PayloadMessage.FromString(raw)
        metrics = message.metrics
        if topic.split("/")[3] == "baseline":
            a.baseline += len(metrics)
            return
        historical = sum(1 for m in metrics if m.is_historical)
        if historical and historical != len(metrics):
            a.mixed += 1
        a.historical += historical
        live = len(metrics) - historical
        if historical:
            a.last_historical_at = now
        if live:
            a.live += live
            a.live_times.append((now, live))
            wall_ms = time.time() * 1000
            a.live_lateness_s.append((wall_ms - metrics[0].timestamp) / 1000)


async def wait_until(condition: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


def baseline_payloads(count: int) -> list[bytes]:
    """DDATA-sized payloads: `METRICS_PER_MESSAGE` historical uint16 metrics by alias."""
    now = datetime.now(UTC)
    payloads = []
    for n in range(count):
        metrics = [
            Metric(
                None,
                DataType.UINT16,
                (n + i) & 0xFFFF,
                timestamp=now,
                alias=i + 1,
                is_historical=True,
            )
            for i in range(METRICS_PER_MESSAGE)
        ]
        payloads.append(encode_payload(Payload.of(now, metrics, seq=n % 256)))
    return payloads


async def measure_baseline(port: int, host: Host, messages: int) -> float:
    """Samples/s of a bare aiomqtt QoS 1 publisher, `WINDOW` in flight, received by the host."""
    payloads = baseline_payloads(messages)
    topic = f"spBv1.0/{GROUP}/DDATA/baseline/dev"
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-baseline",
        max_inflight_messages=WINDOW,
        timeout=NETWORK_TIMEOUT_S,
    ) as client:
        client.pending_calls_threshold = WINDOW + 10
        window = asyncio.Semaphore(WINDOW)
        expected = host.arrivals.baseline + messages * METRICS_PER_MESSAGE

        async def publish(payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1, timeout=NETWORK_TIMEOUT_S)
            finally:
                window.release()

        started = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for payload in payloads:
                await window.acquire()
                tasks.create_task(publish(payload))
        await wait_until(lambda: host.arrivals.baseline >= expected, 60, "baseline arrivals")
        elapsed = time.monotonic() - started
    return messages * METRICS_PER_MESSAGE / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def agent_process(config_path: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "taktline_edge", "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


@dataclass
class Result:
    plant: Plant
    minutes: float
    rows: int
    prefill_s: float
    replay_s: float
    replayed: int
    replay_rate: float
    live: int
    live_rate: float
    lateness: list[float]
    baseline_rate: float
    mixed: int
    db_bytes: int
    agent_cpu_s: float
    """CPU time the agent process used from its NBIRTH until the backlog was drained."""
    steady_s: float
    steady_rate: float
    """Live samples/s delivered after the replay (no backlog): the live rate of the ratio."""


async def run(args: argparse.Namespace, workdir: Path) -> Result:
    plant = Plant(args.devices, args.tags)
    outbox_path = workdir / "outbox.db"
    rows, prefill_s = await asyncio.to_thread(prefill, outbox_path, plant, args.minutes)
    db_bytes = await asyncio.to_thread(
        lambda: sum(p.stat().st_size for p in workdir.glob("outbox.db*"))
    )
    print(f"prefilled {rows} samples ({db_bytes / 2**20:.0f} MiB) in {prefill_s:.1f} s", flush=True)
    with mosquitto(workdir) as broker_port:
        host = Host(broker_port)
        async with asyncio.TaskGroup() as tasks, plc(plant) as plc_port:
            host_task = tasks.create_task(host.run(), name="host")
            await asyncio.wait_for(host.ready.wait(), NETWORK_TIMEOUT_S)
            baseline_rate = await measure_baseline(broker_port, host, args.baseline_messages)
            print(f"baseline {baseline_rate:,.0f} samples/s", flush=True)

            config_path = workdir / "edge.yaml"
            config = agent_config(plant, broker_port, plc_port, outbox_path)
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            a = host.arrivals
            with agent_process(config_path, workdir / "agent.log") as agent:
                await wait_until(lambda: a.birth_at is not None, 60, "the agent's NBIRTH")
                cpu_at_birth = cpu_seconds(agent.pid)
                # Everything historical is the pre-filled outage plus what was polled before
                # the birth; done once the historical flow stops after passing the pre-fill.
                await wait_until(lambda: a.historical >= rows, args.deadline, "the replay")
                await wait_until(
                    lambda: (
                        a.last_historical_at is not None
                        and time.monotonic() - a.last_historical_at > 2 * plant.interval_s
                    ),
                    60,
                    "the end of the historical flow",
                )
                agent_cpu = cpu_seconds(agent.pid) - cpu_at_birth
                # The plant's live rate as the agent delivers it with no backlog, same run.
                steady_from = time.monotonic()
                steady_until = steady_from + args.steady_s
                await wait_until(
                    lambda: time.monotonic() >= steady_until, args.steady_s + 5, "steady state"
                )
            host_task.cancel()
    assert a.birth_at is not None
    assert a.last_historical_at is not None
    replay_s = a.last_historical_at - a.birth_at
    live = sum(n for t, n in a.live_times if a.birth_at <= t <= a.last_historical_at)
    steady = sum(n for t, n in a.live_times if steady_from <= t <= steady_until)
    return Result(
        plant=plant,
        minutes=args.minutes,
        rows=rows,
        prefill_s=prefill_s,
        replay_s=replay_s,
        replayed=a.historical,
        replay_rate=a.historical / replay_s,
        live=live,
        live_rate=live / replay_s,
        lateness=[
            lateness
            for (t, _), lateness in zip(a.live_times, a.live_lateness_s, strict=True)
            if t <= a.last_historical_at
        ],
        baseline_rate=baseline_rate,
        mixed=a.mixed,
        db_bytes=db_bytes,
        agent_cpu_s=agent_cpu,
        steady_s=args.steady_s,
        steady_rate=steady / args.steady_s,
    )


def report(r: Result) -> str:
    late = sorted(r.lateness) or [0.0]
    p = plant = r.plant
    lines = [
        f"replay after a {r.minutes:g}-minute outage: {plant.devices} devices x {plant.tags} tags"
        f" changing every {plant.interval_s:g} s (live {plant.live_rate:,.0f} samples/s)",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.machine()}, {datetime.now(UTC):%Y-%m-%d}",
        f"outbox pre-filled: {r.rows:,} samples, {r.db_bytes / 2**20:,.0f} MiB"
        f" in {r.prefill_s:.1f} s",
        f"replay: {r.replayed:,} historical samples in {r.replay_s:.1f} s"
        f" = {r.replay_rate:,.0f} samples/s",
        f"live rate (no backlog, {r.steady_s:g} s after the replay): {r.steady_rate:,.0f} samples/s"
        f" (the plant produces {p.live_rate:,.0f}/s)",
        f"live during the replay: {r.live:,} samples = {r.live_rate:,.0f} samples/s;"
        f" lateness (sample time -> host) p50 {statistics.median(late):.2f} s,"
        f" max {late[-1]:.2f} s",
        f"baseline (bare aiomqtt QoS 1 of pre-encoded {METRICS_PER_MESSAGE}-metric DDATA,"
        f" {WINDOW} in flight): {r.baseline_rate:,.0f} samples/s",
        f"ratio replay / live rate: {r.replay_rate / max(r.steady_rate, 1e-9):.1f}x (goal >= 10x)",
        f"ratio replay / baseline: {r.replay_rate / r.baseline_rate:.3f}",
        f"agent CPU while replaying: {r.agent_cpu_s:.1f} s = {r.agent_cpu_s / r.replay_s:.0%} of"
        f" a core, {r.agent_cpu_s / r.replayed * 1e6:.1f} us per replayed sample",
        f"messages mixing historical and live metrics: {r.mixed}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="outage length")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--tags", type=int, default=20, help="changing tags per device")
    parser.add_argument("--baseline-messages", type=int, default=4000)
    parser.add_argument("--steady-s", type=float, default=10.0, help="live rate measured after")
    parser.add_argument("--deadline", type=float, default=900.0, help="stop after this many s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taktline-replay-") as tmp:
        try:
            result = asyncio.run(asyncio.wait_for(run(args, Path(tmp)), args.deadline))
        except (BenchError, TimeoutError) as exc:
            print(f"replay_rate: {exc!r}")
            return 1
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
