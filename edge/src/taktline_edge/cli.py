"""Command line: ``taktline-edge run --config config/edge.yaml`` and ``taktline-edge check ...``."""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from taktline_edge.agent import run_agent
from taktline_edge.config import EdgeConfig, load_config
from taktline_edge.errors import EdgeConfigError

EXIT_INVALID_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taktline-edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="poll the devices and publish Sparkplug B until stopped")
    run.add_argument("--config", type=Path, required=True, help="edge agent YAML file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    check = commands.add_parser("check", help="validate the configuration without connecting")
    check.add_argument("--config", type=Path, required=True, help="edge agent YAML file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config).with_environment(os.environ)
    except EdgeConfigError as exc:
        print(f"taktline-edge: invalid configuration\n{exc}", file=sys.stderr)  # noqa: T201
        return EXIT_INVALID_CONFIG
    if args.command == "check":
        tags = sum(len(d.tags) for d in config.devices)
        print(f"{args.config}: OK ({len(config.devices)} devices, {tags} tags)")  # noqa: T201
        return 0
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The driver reports a failing device once; pymodbus would log every retry with a frame dump.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(_run(config))
    return 0


async def _run(config: EdgeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    await run_agent(config, stop)


if __name__ == "__main__":
    sys.exit(main())
