"""`taktline demo`: the whole demo plant in one process (see README)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from taktline.demo import DemoError, DemoOptions, run_demo
from taktline_cloud.errors import CloudError
from taktline_edge.errors import EdgeError
from taktline_simulators.errors import SimulatorError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `taktline` command."""
    parser = argparse.ArgumentParser(prog="taktline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo plant with the big screen")
    demo.add_argument("--config-dir", type=Path, default=Path("config"))
    demo.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    demo.add_argument("--dashboard-dir", type=Path, default=Path("dashboards/dist"))
    demo.add_argument("--http-host", default="127.0.0.1")
    demo.add_argument("--http-port", type=int, default=8080, help="0 = any free port")
    demo.add_argument("--mqtt-port", type=int, default=1884, help="embedded broker; 0 = any")
    demo.add_argument("--ephemeral-plcs", action="store_true", help="simulated PLCs on free ports")
    demo.add_argument("--fresh", action="store_true", help="start from an empty database")
    demo.add_argument("--speed", type=int, default=None, help="machine speed, %% of nominal")
    demo.add_argument(
        "--rate-window", type=float, default=120.0, help="seconds of the measured line rate"
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    for noisy in ("amqtt", "transitions", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The edge logs a failing PLC once; pymodbus would log every retry with a frame dump.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    options = DemoOptions(
        config_dir=args.config_dir,
        data_dir=args.data_dir,
        dashboard_dir=args.dashboard_dir,
        http_host=args.http_host,
        http_port=args.http_port,
        mqtt_port=args.mqtt_port,
        modbus_ephemeral=args.ephemeral_plcs,
        fresh=args.fresh,
        rate_window_s=args.rate_window,
        speed_pct=args.speed,
    )
    failed = False
    try:
        asyncio.run(_run(options, args.duration))
    except* _EXPLAINED as group:
        failed = True
        for exc in _leaves(group):
            print(f"taktline demo: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
    return 1 if failed else 0


# Errors whose message says what is wrong (bad config, a port in use): no traceback for these.
_EXPLAINED = (DemoError, OSError, CloudError, EdgeError, SimulatorError)


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


async def _run(options: DemoOptions, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    await run_demo(options, stop)


if __name__ == "__main__":
    raise SystemExit(main())
