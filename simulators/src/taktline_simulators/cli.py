"""Command line: ``taktline-sim --config config/simulators.yaml [--port-offset N] [--seed S]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from taktline_simulators.config import PlantSimConfig, load_config
from taktline_simulators.errors import SimulatorConfigError, SimulatorError
from taktline_simulators.modbus_server import run_plant

EXIT_FAILED = 1
EXIT_INVALID_CONFIG = 2

log = logging.getLogger("taktline_simulators")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taktline-sim",
        description="Run the simulated plant: one Modbus TCP server per machine, until stopped.",
    )
    parser.add_argument("--config", type=Path, required=True, help="simulators YAML file")
    parser.add_argument(
        "--port-offset", type=int, default=0, help="add N to every configured port (0 stays 0)"
    )
    parser.add_argument("--seed", type=int, help="random seed instead of the config's")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config).with_port_offset(args.port_offset)
    except SimulatorConfigError as exc:
        print(f"taktline-sim: invalid configuration\n{exc}", file=sys.stderr)  # noqa: T201
        return EXIT_INVALID_CONFIG
    if args.seed is not None:
        config = config.with_seed(args.seed)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # pymodbus logs every listen and connection at INFO; the simulator logs its own endpoints.
    logging.getLogger("pymodbus").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        asyncio.run(_serve(config))
    except SimulatorError as exc:
        print(f"taktline-sim: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    return 0


async def _serve(config: PlantSimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    async with run_plant(config) as plant:
        for machine in config.machines:
            host, port = plant.endpoints[machine.id]
            log.info(
                "%s/%s %s (%s): Modbus TCP on %s:%d",
                config.plant, config.line, machine.id, machine.name, host, port,
            )  # fmt: skip
        log.info("seed %d, tick %d ms; stop with Ctrl-C or SIGTERM", config.seed, config.tick_ms)
        await stop.wait()
    log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
