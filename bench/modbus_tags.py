"""Modbus TCP at plant scale: the edge agent's tags/s against a raw pymodbus block-read loop.

Three kinds of process, so that each client's CPU and memory are its own:

* one server process: `--devices` simulated Modbus TCP devices (pymodbus servers, one port each
  on 127.0.0.1), whose 100 tags all change once a second (worst case for report by exception);
* a raw client: one `AsyncModbusTcpClient` per device in one asyncio loop, each reading the
  device's blocks on the same steady cadence; no decoding, nothing stored: the baseline;
* an agent client: the agent's own path per device, as `EdgeAgent` wires it without a broker:
  `ModbusDriver` (lock, timeouts) -> `Poller` (cadence, decoding, report by exception) -> durable
  `Outbox` append (SQLite, WAL, synchronous=FULL, in a temporary directory).

Each client runs twice against the same servers in the same run: at the target cadence
(`--interval`, 1 s) and saturated (10 ms: every device polls again as soon as its poll ends).
Tags/s are tags read and, for the agent, decoded and stored when changed. The ratio agent / raw is
printed for both; the saturated one is the throughput ratio (goal >= 0.8), the paced one shows
whether the agent keeps the cadence. Also printed: missed ticks and lateness per poll, CPU seconds
and RSS per 10 000 tags, and the server process's CPU (a saturated run is bounded by whichever
side runs out of CPU first: 2 cores here, one per side).

    uv run python bench/modbus_tags.py [--devices 200] [--seconds 20] [--saturated-seconds 10]

Stops by itself: every process has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import math
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
UNIT_ID = 1
TAGS_PER_DEVICE = 100
SATURATED_INTERVAL_S = 0.01
TIMEOUT_S = 5.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not measure (the message says why)."""


# --- the tag map: 100 tags per device, every kind the agent decodes --------------------------


def device_tags() -> list[Any]:
    """100 tags in three blocks: holding (uint16, int32, float32), input (scaled int16, bits),
    coils."""
    from taktline_edge.tags import Table, Tag, TagType

    tags: list[Tag] = []
    tags += [Tag(f"H/U16/{i}", i, TagType.UINT16) for i in range(30)]
    tags += [Tag(f"H/I32/{i}", 30 + 2 * i, TagType.INT32) for i in range(15)]
    tags += [Tag(f"H/F32/{i}", 60 + 2 * i, TagType.FLOAT32) for i in range(15)]
    tags += [
        Tag(f"I/Level/{i}", i, TagType.INT16, table=Table.INPUT, scale=Decimal("0.1"))
        for i in range(10)
    ]
    tags += [Tag(f"I/Alarm/{i}", 10, TagType.BIT, table=Table.INPUT, bit=i) for i in range(10)]
    tags += [Tag(f"C/Run/{i}", i, TagType.BOOL, table=Table.COIL) for i in range(20)]
    assert len(tags) == TAGS_PER_DEVICE
    return tags


def _words(fmt: str, value: float) -> list[int]:
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def tick_values(tick: int, device: int) -> tuple[list[int], list[int], list[bool]]:
    """Holding registers 0..89, input registers 0..10 and coils 0..19 at `tick`: every tag
    differs from the previous tick."""
    holding = [(tick + device + i) & 0xFFFF for i in range(30)]
    for i in range(15):
        holding += _words(">i", (tick * 1000 + i) * (-1 if i % 2 else 1))
    for i in range(15):
        holding += _words(">f", tick * 0.25 + i)
    inputs = [((tick + i) % 1000 - 500) & 0xFFFF for i in range(10)]
    inputs.append(0x03FF if tick % 2 else 0)
    coils = [(tick + i) % 2 == 1 for i in range(20)]
    return holding, inputs, coils


# --- the server process ----------------------------------------------------------------------


async def serve(devices: int, lifetime_s: float) -> None:
    """Serve `devices` simulated devices; print their ports; change every value each second."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    servers = []
    ports = []
    for _ in range(devices):
        coils = [SimData(0, count=100, values=False, datatype=SimType.BITS)]
        discrete = [SimData(0, count=100, values=False, datatype=SimType.BITS)]
        holding = [SimData(0, count=200, values=0, datatype=SimType.REGISTERS)]
        inputs = [SimData(0, count=200, values=0, datatype=SimType.REGISTERS)]
        device = SimDevice(id=0, simdata=(coils, discrete, holding, inputs))
        server = ModbusTcpServer(device, address=(HOST, 0))
        await server.serve_forever(background=True)
        transport: Any = server.transport
        ports.append(int(transport.sockets[0].getsockname()[1]))
        servers.append(server)
    print(json.dumps({"ports": ports}), flush=True)
    started = time.monotonic()
    tick = 0
    while time.monotonic() - started < lifetime_s:
        tick += 1
        for index, server in enumerate(servers):
            holding_words, input_words, coil_bits = tick_values(tick, index)
            await server.async_setValues(UNIT_ID, 3, 0, holding_words)
            await server.async_setValues(UNIT_ID, 4, 0, input_words)
            await server.async_setValues(UNIT_ID, 1, 0, coil_bits)
        await asyncio.sleep(max(0.0, started + tick - time.monotonic()))


# --- the clients -----------------------------------------------------------------------------


@dataclass
class Polls:
    """When each poll of one device started and ended (monotonic), and failures."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    failures: int = 0


@dataclass
class Recorder:
    """Wraps a reader (the agent's `ModbusDriver`) to time each poll's reads."""

    inner: Any
    polls: Polls

    async def read_blocks(self, blocks: Sequence[Any]) -> Sequence[Sequence[int]]:
        started = time.monotonic()
        try:
            replies = await self.inner.read_blocks(blocks)
        except Exception:
            self.polls.failures += 1
            raise
        self.polls.starts.append(started)
        self.polls.ends.append(time.monotonic())
        return replies  # type: ignore[no-any-return]


async def raw_loop(port: int, blocks: Sequence[Any], interval: float, polls: Polls) -> None:
    """The baseline: the same blocks on the same cadence with bare pymodbus calls."""
    from pymodbus.client import AsyncModbusTcpClient

    from taktline_edge.cancellation import raise_if_cancelling
    from taktline_edge.tags import Table

    client = AsyncModbusTcpClient(HOST, port=port, timeout=TIMEOUT_S, retries=0, reconnect_delay=0)
    calls = {
        Table.COIL: client.read_coils,
        Table.DISCRETE: client.read_discrete_inputs,
        Table.INPUT: client.read_input_registers,
        Table.HOLDING: client.read_holding_registers,
    }
    try:
        deadline = time.monotonic()
        while True:
            # Python 3.11: pymodbus's wait_for can swallow a cancel (the poller guards the same).
            raise_if_cancelling()
            started = time.monotonic()
            try:
                if not client.connected and not await client.connect():
                    raise BenchError(f"cannot connect to {port}")
                for block in blocks:
                    reply = await calls[block.table](block.start, count=block.count, device_id=1)
                    if reply.isError():
                        raise BenchError(f"{port}: {reply}")
            except Exception:
                polls.failures += 1
                await asyncio.sleep(interval)
                deadline = time.monotonic()
                continue
            polls.starts.append(started)
            polls.ends.append(time.monotonic())
            # The poller's cadence: deadlines start + k * interval, missed ticks skipped.
            deadline += interval
            now = time.monotonic()
            if deadline < now:
                deadline += math.ceil((now - deadline) / interval) * interval
            await asyncio.sleep(deadline - now)
    finally:
        client.close()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Window:
    started: float = 0.0
    ended: float = 0.0
    stored: int = 0
    """Samples the agent stored within the window."""
    cpu: float = 0.0
    server_cpu: float = 0.0


async def run_client(
    role: str,
    ports: Sequence[int],
    *,
    interval: float,
    warmup_s: float,
    seconds: float,
    server_pid: int,
    profile: str | None,
) -> dict[str, Any]:
    """Poll every device for `warmup_s + seconds`; measure over the last `seconds`."""
    from taktline_edge.drivers.modbus import ModbusDriver
    from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
    from taktline_edge.planner import plan_reads
    from taktline_edge.poller import Poller

    rss_before = _rss()
    tags = device_tags()
    blocks = plan_reads(tags)
    polls = {f"D{i:03}": Polls() for i in range(len(ports))}
    window = Window()
    pollers: list[Poller] = []
    drivers: list[ModbusDriver] = []
    outbox: Outbox | None = None
    with contextlib.ExitStack() as stack:
        if role == "agent":
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="taktline-bench-"))
            outbox = stack.enter_context(Outbox(Path(directory) / "outbox.db"))
            durable = AsyncOutbox(outbox)

            async def store(device: str, samples: Sequence[Sample]) -> None:
                # EdgeAgent._store with no broker: the node is not live, samples are historical.
                await durable.append(samples, True)

            for (device, record), port in zip(polls.items(), ports, strict=True):
                driver = ModbusDriver(device, HOST, port, UNIT_ID, TIMEOUT_S)
                drivers.append(driver)
                poller = Poller(device, tags, interval, Recorder(driver, record), store)
                pollers.append(poller)
        profiler = cProfile.Profile() if profile else None
        try:
            async with asyncio.TaskGroup() as group:
                if role == "agent":
                    tasks = [group.create_task(p.run(), name=p.device) for p in pollers]
                else:
                    tasks = [
                        group.create_task(raw_loop(port, blocks, interval, record), name=device)
                        for (device, record), port in zip(polls.items(), ports, strict=True)
                    ]
                await asyncio.sleep(warmup_s)
                if profiler is not None:
                    profiler.enable()
                window.started, window.cpu = time.monotonic(), _cpu_self()
                window.server_cpu = _cpu_of(server_pid)
                window.stored = sum(p.status.samples for p in pollers)
                await asyncio.sleep(seconds)
                window.ended = time.monotonic()
                window.stored = sum(p.status.samples for p in pollers) - window.stored
                window.cpu = _cpu_self() - window.cpu
                window.server_cpu = _cpu_of(server_pid) - window.server_cpu
                if profiler is not None:
                    profiler.disable()
                rss_after = _rss()
                for task in tasks:
                    task.cancel()
        finally:
            for driver in drivers:
                await driver.close()
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        stored = sum(p.status.samples for p in pollers)
        depth = outbox.depth() if outbox is not None else 0
    return _figures(
        role,
        interval,
        polls=polls,
        window=window,
        rss_before=rss_before,
        rss_after=rss_after,
        stored=stored,
        depth=depth,
        blocks=len(blocks),
    )


def _figures(
    role: str,
    interval: float,
    *,
    polls: dict[str, Polls],
    window: Window,
    rss_before: int,
    rss_after: int,
    stored: int,
    depth: int,
    blocks: int,
) -> dict[str, Any]:
    span = window.ended - window.started
    done = 0
    missed = 0
    start_late: list[float] = []
    end_late: list[float] = []
    durations: list[float] = []
    failures = 0
    for record in polls.values():
        failures += record.failures
        # Throughput: polls that ended inside the window.
        done += sum(1 for e in record.ends if window.started <= e < window.ended)
        # Cadence: the ticks of the window that had a full interval to be served before it
        # ended (a poll still in flight at the end is not a miss), each served or not.
        if not record.starts:
            missed += math.floor(span / interval)
            continue
        origin = record.starts[0]  # the poller's first deadline: start + k * interval after it
        first_tick = math.ceil((window.started - origin) / interval - 1e-9)
        last_tick = math.floor((window.ended - interval - origin) / interval + 1e-9) + 1
        covered = set()
        for s, e in zip(record.starts, record.ends, strict=True):
            tick = math.floor((s - origin) / interval + 1e-6)
            if first_tick <= tick < last_tick:
                covered.add(tick)
                start_late.append(s - (origin + tick * interval))
                end_late.append(e - (origin + tick * interval))
                durations.append(e - s)
        missed += max(0, last_tick - first_tick) - len(covered)
    tags = done * TAGS_PER_DEVICE
    devices = len(polls)
    return {
        "role": role,
        "interval_s": interval,
        "devices": devices,
        "blocks_per_poll": blocks,
        "window_s": span,
        "polls": done,
        "failures": failures,
        "tags_per_s": tags / span,
        "requests_per_s": done * blocks / span,
        "missed_ticks": missed,
        "start_late_max_ms": max(start_late, default=0.0) * 1000,
        "end_late_p50_ms": _percentile(end_late, 50) * 1000,
        "end_late_p99_ms": _percentile(end_late, 99) * 1000,
        "end_late_max_ms": max(end_late, default=0.0) * 1000,
        "poll_p50_ms": _percentile(durations, 50) * 1000,
        "cpu_s": window.cpu,
        "cpu_s_per_10k_tags": window.cpu / (tags / 10_000) if tags else math.inf,
        "server_cpu_pct": window.server_cpu / span * 100,
        "rss_mb": rss_after / 2**20,
        "rss_mb_per_10k_tags": (rss_after - rss_before)
        / 2**20
        / (devices * TAGS_PER_DEVICE)
        * 10_000,
        "samples_stored_per_s": window.stored / span,
        "outbox_depth": depth,
        "samples_stored": stored,
    }


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


# --- orchestration ---------------------------------------------------------------------------


def _self(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _client(
    role: str,
    ports_file: Path,
    *,
    interval: float,
    warmup: float,
    seconds: float,
    server_pid: int,
    profile: str | None,
) -> dict[str, Any]:
    args = [
        "--role", role, "--ports-file", str(ports_file), "--interval", str(interval),
        "--warmup", str(warmup), "--seconds", str(seconds), "--server-pid", str(server_pid),
    ]  # fmt: skip
    if profile:
        args += ["--profile", profile]
    done = subprocess.run(
        _self(*args), capture_output=True, text=True, timeout=warmup + seconds + 120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"{role} client failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def orchestrate(args: argparse.Namespace) -> str:
    """Start the servers, run each client paced and saturated, return the report."""
    warmup = args.warmup
    per_round = 2 * (warmup + args.seconds) + 2 * (warmup + args.saturated_seconds)
    lifetime = args.rounds * per_round + (warmup + args.seconds) + 300
    server = subprocess.Popen(
        _self("--role", "server", "--devices", str(args.devices), "--lifetime", str(lifetime)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise BenchError("the server process exited before listing its ports")
        ports = json.loads(line)["ports"]
        with tempfile.TemporaryDirectory(prefix="taktline-bench-ports-") as directory:
            ports_file = Path(directory) / "ports.json"
            ports_file.write_text(json.dumps(ports))
            runs = []
            for round_ in range(1, args.rounds + 1):
                for interval, seconds in (
                    (args.interval, args.seconds),
                    (SATURATED_INTERVAL_S, args.saturated_seconds),
                ):
                    for role in ("raw", "agent"):
                        figures = _client(
                            role,
                            ports_file,
                            interval=interval,
                            warmup=warmup,
                            seconds=seconds,
                            server_pid=server.pid,
                            profile=None,
                        )
                        figures["round"] = round_
                        runs.append(figures)
                        print(json.dumps(figures), file=sys.stderr)
            if args.profile:
                # Its own run: cProfile slows the agent down, so it is not in the figures.
                _client(
                    "agent",
                    ports_file,
                    interval=args.interval,
                    warmup=warmup,
                    seconds=args.seconds,
                    server_pid=server.pid,
                    profile=args.profile,
                )
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return report(args, runs)


def _row(label: str, r: dict[str, Any], paced: bool) -> str:
    cadence = (
        f"{r['missed_ticks']:>7}{r['start_late_max_ms']:>9.1f}{r['end_late_p99_ms']:>8.0f}"
        f"{r['end_late_max_ms']:>8.0f}"
        if paced
        else f"{'-':>7}{'-':>9}{'-':>8}{'-':>8}"
    )
    return (
        f"  {label:<24}{r['tags_per_s']:>9.0f}{r['polls']:>8}{r['failures']:>5}{cadence}"
        f"{r['cpu_s']:>7.2f}{r['cpu_s_per_10k_tags']:>10.4f}{r['rss_mb']:>7.0f}"
        f"{r['rss_mb_per_10k_tags']:>7.1f}{r['server_cpu_pct']:>7.0f}%"
    )


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    """The figures of every run and, per round, the ratios agent / raw."""
    paced, saturated = args.interval, SATURATED_INTERVAL_S
    lines = [
        f"Modbus tags/s: {args.devices} devices x {TAGS_PER_DEVICE} tags"
        f" ({runs[0]['blocks_per_poll']} block reads per poll), servers in their own process",
        f"  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {platform.system()} {platform.machine()},"
        f" load average {os.getloadavg()[0]:.1f}",
        "",
        f"  {'run':<24}{'tags/s':>9}{'polls':>8}{'fail':>5}{'missed':>7}"
        f"{'late max':>9}{'end p99':>8}{'end max':>8}"
        f"{'CPU s':>7}{'CPU s/10k':>10}{'RSS MB':>7}{'MB/10k':>7}{'srv CPU':>8}",
    ]
    summary = []
    for round_ in range(1, args.rounds + 1):
        by = {(r["role"], r["interval_s"]): r for r in runs if r["round"] == round_}
        for interval in (paced, saturated):
            name = f"{paced:g} s" if interval == paced else "saturated"
            for role in ("raw", "agent"):
                label = f"{round_}: {name} {role}"
                lines.append(_row(label, by[(role, interval)], interval == paced))
        agent, raw = by[("agent", paced)], by[("raw", paced)]
        kept = agent["missed_ticks"] == 0 and agent["failures"] == 0
        summary += [
            f"  round {round_}: agent / raw tags/s at {paced:g} s"
            f" {agent['tags_per_s'] / raw['tags_per_s']:.2f}, saturated"
            f" {by[('agent', saturated)]['tags_per_s'] / by[('raw', saturated)]['tags_per_s']:.2f}"
            f" (goal >= 0.8); CPU per tag agent / raw at {paced:g} s"
            f" {agent['cpu_s_per_10k_tags'] / raw['cpu_s_per_10k_tags']:.1f}",
            f"    agent kept the {paced:g} s cadence on every device: {'yes' if kept else 'NO'}"
            f" ({agent['missed_ticks']} missed ticks, {agent['failures']} failed polls; a poll"
            f" started at most {agent['start_late_max_ms']:.1f} ms and ended at most"
            f" {agent['end_late_max_ms']:.0f} ms after its tick)",
            f"    agent stored {agent['samples_stored_per_s']:.0f} changed samples/s durably"
            f" (outbox depth {agent['outbox_depth']}, stored {agent['samples_stored']}:"
            f" {'none lost' if agent['outbox_depth'] == agent['samples_stored'] else 'MISMATCH'})",
        ]
    lines += [
        "",
        *summary,
        "  columns: missed = ticks without a poll; late max = poll start after its tick;"
        " end = poll end after its tick (ms);",
        "  MB/10k = RSS growth over the client's start, per 10 000 configured tags;"
        " srv CPU = the server process (100% = one core).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="target poll interval (s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced measuring window")
    parser.add_argument("--saturated-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="before each window (s)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all four runs")
    parser.add_argument("--profile", help="also profile a paced agent run into this file")
    parser.add_argument("--role", choices=("main", "server", "raw", "agent"), default="main")
    parser.add_argument("--ports-file", type=Path)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.role == "server":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.devices, args.lifetime))
        return 0
    if args.role in ("raw", "agent"):
        ports = json.loads(args.ports_file.read_text())
        figures = asyncio.run(
            run_client(
                args.role,
                ports,
                interval=args.interval,
                warmup_s=args.warmup,
                seconds=args.seconds,
                server_pid=args.server_pid,
                profile=args.profile,
            )
        )
        print(json.dumps(figures))
        return 0
    if min(args.devices, args.seconds, args.saturated_seconds, args.rounds) < 1:
        parser.error("--devices, --seconds, --saturated-seconds and --rounds must be >= 1")
    try:
        print(orchestrate(args))
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"modbus_tags: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
