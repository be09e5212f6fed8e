"""OPC UA monitored items sustained at 1 s: does the agent keep up, and how late do values arrive?

Three processes, so that each side's CPU and memory are its own:

* a server with `--items` UInt32 variables (default 10 000), each written once per second with
  the write's source timestamp, in `--slices` groups spread over the second (so changes fall at
  every phase of the clients' publishing cycles, as a plant's do). Default `--server node`:
  node-opcua (bench/opcua_node_server.js), fast enough not to be the limit; `--server asyncua`
  runs an asyncua server in a Python process (it cannot write 10 000 values a second here);
* the client under test, run one after the other against the same server:
  - baseline: a bare asyncua client, the same items in subscriptions of 1 000 (publishing
    1 000 ms, sampling 500 ms, queue `--queue-size`) with a handler that only notes the arrival;
  - agent: the edge agent's `OpcUaSource` with the same parameters, storing into a real
    `Outbox` (SQLite, WAL, synchronous FULL) in a temporary directory, logging as
    ``taktline-edge run`` does (`--log-level`, default INFO).

Each client subscribes, waits `--warmup` s, counts for `--seconds` s the values whose source
timestamp falls in the window, then waits `--drain` s for late ones. Expected = values the
server wrote in the window. Latency = arrival (baseline: the handler call; agent: the sample
committed to the outbox) - source timestamp; it includes the wait for the next publish (up to
one publishing interval). Falling behind shows as fewer values than expected, a latency that
grows through the window, or samples piling up between the agent's receipt and its outbox.
Both clients count the publish responses asyncua received (one request is in flight per
session: the responses/s and items per response say whether the link or the client limits).

    uv run python bench/opcua_items.py [--items 10000] [--seconds 30] [--queue-size 2]

Stops by itself. `--profile FILE` writes a cProfile of the agent process's measuring window.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Server, ua
from asyncua.client.ua_session import UaSession
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif

from taktline_contract.sparkplug import DataType
from taktline_edge.config import OpcUaConfig, OpcUaTag
from taktline_edge.drivers.opcua import OpcUaSource
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / "tests" / "interop" / "opcua-node" / "node_modules"
NAMESPACE = "urn:taktline:bench"
PER_SUBSCRIPTION = 1000
PUBLISHING_MS = 1000
SUBSCRIBE_TIMEOUT_S = 120.0


# --- measuring helpers -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


def rss_mb() -> tuple[float, float]:
    """This process's resident set size now and at its peak, MB (Linux /proc)."""
    now = peak = math.nan
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_ids(namespace_index: int, items: int) -> list[str]:
    return [f"ns={namespace_index};i={i}" for i in range(1, items + 1)]


@dataclass
class Window:
    """Values whose source timestamp falls in [start, end), and how late each arrived."""

    start: float
    end: float
    received: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(source timestamp, latency s) of every value in the window."""
    open: bool = False

    def note(self, source: float, arrival: float) -> None:
        if self.open and self.start <= source < self.end:
            self.received += 1
            self.latencies.append((source, arrival - source))


@dataclass
class PublishCounter:
    """Publish responses asyncua received in the window (patched into `UaSession.publish`)."""

    window: Window
    responses: int = 0
    items: int = 0

    def install(self) -> None:
        original = UaSession.publish
        counter = self

        async def publish(
            session: UaSession, acks: list[ua.SubscriptionAcknowledgement]
        ) -> ua.PublishResponse:
            response = await original(session, acks)
            if counter.window.open:
                counter.responses += 1
                for data in response.Parameters.NotificationMessage.NotificationData or []:
                    if isinstance(data, ua.DataChangeNotification):
                        counter.items += len(data.MonitoredItems)
            return response

        UaSession.publish = publish  # type: ignore[method-assign]


# --- server (asyncua variant) ------------------------------------------------------------------


async def serve(port: int, items: int, slices: int) -> None:
    """Serve `items` UInt32 variables; write each once per second, stamped, forever."""
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    index = await server.register_namespace(NAMESPACE)
    folder = await server.nodes.objects.add_folder(f"ns={index};s=Bench", f"{index}:Bench")
    ids = [ua.NodeId.from_string(n) for n in node_ids(index, items)]
    for i, node_id in enumerate(ids):
        await folder.add_variable(node_id, f"{index}:V{i}", ua.Variant(0, ua.VariantType.UInt32))
    groups = [ids[k::slices] for k in range(slices)]
    async with server:
        print(json.dumps({"ready": True, "namespace_index": index}), flush=True)
        value = 0
        due = math.ceil(time.time())
        while True:
            value += 1
            for k, group in enumerate(groups):
                await asyncio.sleep(max(0.0, due + k / slices - time.time()))
                now = datetime.now(UTC)
                stamp = now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)
                started = time.perf_counter()
                variant = ua.Variant(value, ua.VariantType.UInt32)
                for node_id in group:
                    data = ua.DataValue(variant, SourceTimestamp=stamp, ServerTimestamp=stamp)
                    await server.write_attribute_value(node_id, data)
                took = time.perf_counter() - started
                when = stamp.replace(tzinfo=UTC).timestamp()
                print(json.dumps({"stamp": when, "count": len(group), "write_s": took}), flush=True)
            due += 1
            while due <= time.time():  # a round overran: skip it, never write twice a second
                due += 1


# --- clients -----------------------------------------------------------------------------------


def _timestamp(stamp: datetime | None) -> float:
    if stamp is None:
        return math.nan
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


class NoOpHandler:
    """The baseline's handler: note the arrival, nothing else."""

    def __init__(self, window: Window) -> None:
        self.window = window

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        self.window.note(_timestamp(data.monitored_item.Value.SourceTimestamp), time.time())

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """Nothing to do: the bench fails on a short count instead."""


async def baseline_client(
    args: argparse.Namespace, ids: list[str], window: Window
) -> dict[str, Any]:
    handler = NoOpHandler(window)
    async with Client(args.endpoint, timeout=10) as client:
        for i in range(0, len(ids), PER_SUBSCRIPTION):
            subscription = await client.create_subscription(PUBLISHING_MS, handler)
            nodes = [client.get_node(n) for n in ids[i : i + PER_SUBSCRIPTION]]
            await subscription.subscribe_data_change(
                nodes, queuesize=args.queue_size, sampling_interval=args.sampling_ms
            )
        return await _measure(window, args)


async def agent_client(
    args: argparse.Namespace, ids: list[str], window: Window, outbox_dir: Path
) -> dict[str, Any]:
    config = OpcUaConfig(
        endpoint=args.endpoint,
        publishing_interval_ms=PUBLISHING_MS,
        sampling_interval_ms=args.sampling_ms,
        max_items_per_subscription=PER_SUBSCRIPTION,
        queue_size=args.queue_size,
        timeout_s=10,
    )
    tags = [OpcUaTag(f"V{i}", node_id, DataType.UINT32) for i, node_id in enumerate(ids)]
    outbox = Outbox(outbox_dir / "outbox.db")
    store = AsyncOutbox(outbox)

    async def sink(device: str, samples: Sequence[Sample]) -> None:
        await store.append(samples)
        now = time.time()
        for sample in samples:
            window.note(sample.timestamp.timestamp(), now)

    source = OpcUaSource("BENCH", config, tags, sink)
    backlog: list[int] = []
    try:
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(source.run(), name="opcua-source")
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
            while source.status.monitored_items < len(ids) or not source.status.available:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the agent did not subscribe: {source.status}")
                await asyncio.sleep(0.1)

            async def watch_backlog() -> None:
                while True:  # received from the server but not yet committed to the outbox
                    if window.open:
                        backlog.append(source.status.notifications - source.status.samples)
                    await asyncio.sleep(0.5)

            watcher = tasks.create_task(watch_backlog(), name="backlog")
            result = await _measure(window, args)
            watcher.cancel()
            running.cancel()
    finally:
        outbox.close()
    return result | {
        "backlog_max": max(backlog, default=0),
        "backlog_last": backlog[-1] if backlog else 0,
        "dropped": source.status.dropped,
        "sessions": source.status.sessions,
    }


async def _measure(window: Window, args: argparse.Namespace) -> dict[str, Any]:
    """Open the window at its start, close it at its end plus the drain; report."""
    counter = PublishCounter(window)
    counter.install()
    await asyncio.sleep(max(0.0, window.start - time.time()))
    profile = cProfile.Profile() if args.profile and args.role == "agent" else None
    window.open = True
    if profile is not None:
        profile.enable()
    cpu0, wall0 = cpu_s(), time.monotonic()
    await asyncio.sleep(max(0.0, window.end - time.time()))
    cpu1, wall1 = cpu_s(), time.monotonic()
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    await asyncio.sleep(args.drain)
    window.open = False
    now, peak = rss_mb()
    return {
        "received": window.received,
        "latencies": window.latencies,
        "cpu_percent": (cpu1 - cpu0) / (wall1 - wall0) * 100,
        "rss_mb": now,
        "rss_peak_mb": peak,
        "responses": counter.responses,
        "response_items": counter.items,
    }


def run_client(args: argparse.Namespace) -> None:
    # The agent logs as `taktline-edge run --log-level ...` does; a bare client configures none.
    level = args.log_level if args.role == "agent" else "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ids = node_ids(args.namespace_index, args.items)
    window = Window(args.window_start, args.window_start + args.seconds)
    if args.role == "baseline":
        result = asyncio.run(baseline_client(args, ids, window))
    else:
        with tempfile.TemporaryDirectory(prefix="taktline-bench-opcua-") as outbox_dir:
            result = asyncio.run(agent_client(args, ids, window, Path(outbox_dir)))
    print("RESULT " + json.dumps(result), flush=True)


# --- orchestration -----------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """The server process and the writes it reported."""

    process: subprocess.Popen[str]
    namespace_index: int
    writes: list[dict[str, float]] = field(default_factory=list)

    def follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.writes.append(json.loads(line))


def start_server(args: argparse.Namespace, port: int, pki: Path) -> ServerProcess:
    """Start the server process; return once it listens."""
    env = dict(os.environ)
    if args.server == "node":
        node = shutil.which("node")
        if node is None or not (NODE_MODULES / "node-opcua").is_dir():
            raise SystemExit(
                f"--server node needs node and node-opcua: npm ci in {NODE_MODULES.parent}"
            )
        env["NODE_PATH"] = str(NODE_MODULES)
        script = Path(__file__).with_name("opcua_node_server.js")
        command = [node, str(script), str(port), str(args.items), str(args.slices), str(pki)]
    else:
        command = [sys.executable, __file__, "--role", "server", "--port", str(port)]
        command += ["--items", str(args.items), "--slices", str(args.slices)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"the server did not start (exit {process.wait()})")
    server = ServerProcess(process, int(json.loads(line)["namespace_index"]))
    threading.Thread(target=server.follow, daemon=True).start()
    return server


def run_role(
    role: str, endpoint: str, server: ServerProcess, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one client process; its result plus the expected count and the server's CPU."""
    # The window opens between two of the server's writes, after time to subscribe and warm up.
    start = math.floor(time.time() + args.setup + args.warmup) + 0.5 / args.slices
    command = [sys.executable, __file__, "--role", role, "--endpoint", endpoint]
    command += ["--items", str(args.items), "--namespace-index", str(server.namespace_index)]
    command += ["--window-start", str(start), "--seconds", str(args.seconds)]
    command += ["--drain", str(args.drain), "--queue-size", str(args.queue_size)]
    command += ["--log-level", args.log_level, "--sampling-ms", str(args.sampling_ms)]
    if args.profile:
        command += ["--profile", args.profile]
    server_cpu0, wall0 = process_cpu_s(server.process.pid), time.monotonic()
    limit = args.setup + args.warmup + args.seconds + args.drain + SUBSCRIBE_TIMEOUT_S
    # The log goes to a file: at INFO asyncua can log whole publish responses (megabytes).
    with tempfile.TemporaryFile("w+") as log:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=log, text=True, timeout=limit, check=False
        )
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - 3000))
        log_tail = log.read()
    server_cpu = (process_cpu_s(server.process.pid) - server_cpu0) / (time.monotonic() - wall0)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{role} failed (exit {done.returncode}):\n{log_tail}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    writes = [w for w in server.writes if start <= w["stamp"] < start + args.seconds]
    result["expected"] = sum(int(w["count"]) for w in writes)
    result["server_write_s_max"] = max((w["write_s"] for w in writes), default=math.nan)
    result["server_cpu_percent"] = server_cpu * 100
    result["log_mb"] = size / 1e6
    result["log_tail"] = log_tail
    return result


def summarise(result: dict[str, Any], seconds: float) -> dict[str, float]:
    """The figures of one client's run."""
    latencies = result["latencies"]
    ms = [lat * 1000 for _, lat in latencies]
    begin = min((src for src, _ in latencies), default=0.0)
    end = max((src for src, _ in latencies), default=0.0)
    first = [lat * 1000 for src, lat in latencies if src < begin + 5]
    last = [lat * 1000 for src, lat in latencies if src >= end - 5]
    responses = result["responses"]
    return {
        "rate": result["received"] / seconds,
        "expected_rate": result["expected"] / seconds,
        "delivered": result["received"] / result["expected"] if result["expected"] else math.nan,
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms, default=math.nan),
        "p50_first5": percentile(first, 50),
        "p50_last5": percentile(last, 50),
        "responses": responses / seconds,
        "response_items": result["response_items"] / responses if responses else math.nan,
        "cpu": result["cpu_percent"],
        "rss": result["rss_mb"],
        "rss_peak": result["rss_peak_mb"],
        "log_mb": result["log_mb"],
        "server_cpu": result["server_cpu_percent"],
    }


def report(
    args: argparse.Namespace,
    base: dict[str, float],
    agent: dict[str, float],
    raw: dict[str, Any],
    load: tuple[float, float],
) -> str:
    def row(label: str, key: str, fmt: str = "{:10.1f}", ratio: bool = True) -> str:
        b, a = base[key], agent[key]
        r = f"{a / b:8.2f}" if ratio and b and not math.isnan(b) else "       -"
        return f"  {label:<50} {fmt.format(b)} {fmt.format(a)} {r}"

    lines = [
        f"OPC UA monitored items at 1 s: {args.items} items, {args.seconds:.0f} s window;"
        f" publishing {PUBLISHING_MS} ms, sampling {args.sampling_ms} ms, queue {args.queue_size},"
        f" {PER_SUBSCRIPTION} items per subscription; {args.server} server",
        f"  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}; "
        f"agent log level {args.log_level}; load average {load[0]:.1f} at start,"
        f" {load[1]:.1f} at end",
        "",
        f"  {'':<50} {'baseline':>10} {'agent':>10} {'ratio':>8}",
        row("values/s received", "rate"),
        row("values/s written by the server in the window", "expected_rate", ratio=False),
        row("received / written", "delivered", "{:10.3f}"),
        row("latency p50 (ms, arrival - source timestamp)", "p50"),
        row("latency p99 (ms)", "p99"),
        row("latency max (ms)", "max"),
        row("latency p50, first 5 s of the window (ms)", "p50_first5"),
        row("latency p50, last 5 s of the window (ms)", "p50_last5"),
        row("publish responses/s (10 subscriptions: 10 due)", "responses"),
        row("data changes per publish response", "response_items"),
        row("client CPU (% of one core)", "cpu"),
        row("client RSS at the end (MB)", "rss"),
        row("client RSS peak (MB)", "rss_peak"),
        row("client log written (MB)", "log_mb", "{:10.2f}", ratio=False),
        row("server CPU meanwhile (% of one core)", "server_cpu", ratio=False),
        "",
        f"  agent: received-not-yet-stored max {raw['backlog_max']}, at the end"
        f" {raw['backlog_last']}; dropped {raw['dropped']}; sessions {raw['sessions']}",
        f"  server: slowest group of writes {raw['server_write_s_max'] * 1000:.0f} ms",
        "  agent latency: source timestamp -> committed to the outbox; baseline: -> handler.",
    ]
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    pki = Path(tempfile.mkdtemp(prefix="taktline-bench-pki-"))
    server = start_server(args, port, pki)
    took = time.monotonic() - started
    print(f"{args.server} server with {args.items} items ready in {took:.1f} s", file=sys.stderr)
    endpoint = f"opc.tcp://127.0.0.1:{port}/bench"
    results: dict[str, dict[str, Any]] = {}
    try:
        for role in ("baseline", "agent"):
            results[role] = run_role(role, endpoint, server, args)
            print(f"{role} done", file=sys.stderr)
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
        shutil.rmtree(pki, ignore_errors=True)
    base = summarise(results["baseline"], args.seconds)
    agent = summarise(results["agent"], args.seconds)
    print(report(args, base, agent, results["agent"], (load_start, os.getloadavg()[0])))
    if args.verbose:
        for role, result in results.items():
            print(f"--- {role} log tail ---\n{result['log_tail']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="monitored items")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after subscribing")
    parser.add_argument("--setup", type=float, default=15.0, help="seconds allowed to subscribe")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to wait for late values")
    parser.add_argument(
        "--queue-size", type=int, default=2, help="monitored item queue size (the agent default)"
    )
    parser.add_argument(
        "--sampling-ms", type=int, default=0, help="sampling interval (0: on every change)"
    )
    parser.add_argument("--server", choices=["node", "asyncua"], default="node")
    parser.add_argument("--slices", type=int, default=10, help="server write groups per second")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--profile", help="write a cProfile of the agent's window to this file")
    parser.add_argument("--verbose", action="store_true", help="print the clients' log tails")
    # internal: the child processes' roles
    parser.add_argument("--role", choices=["server", "baseline", "agent"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--namespace-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--window-start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(serve(args.port, args.items, args.slices))
        return 0
    if args.role in ("baseline", "agent"):
        run_client(args)
        return 0
    if args.items < 1 or args.seconds < 10 or args.slices < 1 or args.queue_size < 1:
        parser.error("--items, --slices, --queue-size must be >= 1 and --seconds >= 10")
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
