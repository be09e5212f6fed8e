"""Command line: ``taktline-edge run|check --config config/edge.yaml`` and ``taktline-edge browse``.

Exit codes: 0 stopped cleanly (SIGTERM/SIGINT) or the config is valid; 1 the agent failed (e.g.
the outbox cannot be opened, the health port is taken); 2 invalid configuration, every problem
listed as ``file:line: field: problem``. ``check`` reads the file and the environment only: it
opens no connection, binds no port and creates no outbox.
"""

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
from taktline_edge.logs import LogFormat, configure_logging
from taktline_edge.opcua_browse import add_browse_command, run_browse

log = logging.getLogger("taktline_edge")

EXIT_FAILED = 1
EXIT_INVALID_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taktline-edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="poll the devices and publish Sparkplug B until stopped")
    run.add_argument("--config", type=Path, required=True, help="edge agent YAML file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log line format (default: health.log_format of the config, else text)",
    )
    check = commands.add_parser("check", help="validate the configuration without connecting")
    check.add_argument("--config", type=Path, required=True, help="edge agent YAML file")
    add_browse_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "browse":
        return run_browse(args)
    log_format: LogFormat | None = getattr(args, "log_format", None)
    try:
        config = load_config(args.config, environ=os.environ)
    except EdgeConfigError as exc:
        return _invalid(exc, log_format)
    if args.command == "check":
        print(_summary(args.config, config))  # noqa: T201
        return 0
    configure_logging(args.log_level, log_format or config.health.log_format)
    # The driver reports a failing device once; pymodbus would log every retry with a frame dump.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_run(config))
    except Exception as exc:
        # The process boundary: one line that says why (and the traceback) instead of a crash.
        log.critical("edge agent stopped: %s", _reason(exc), exc_info=exc)
        return EXIT_FAILED
    log.info("edge agent stopped")
    return 0


def _invalid(exc: EdgeConfigError, log_format: LogFormat | None) -> int:
    """Report every configuration problem (as one JSON log record with ``--log-format json``)."""
    problems = str(exc).splitlines()
    header = f"invalid configuration ({len(problems)} problem{'s' if len(problems) > 1 else ''})"
    if log_format == "json":
        configure_logging(logging.ERROR, "json")
        log.error("%s: %s", header, "; ".join(problems), extra={"errors": problems})
    else:
        print(f"taktline-edge: {header}\n{exc}", file=sys.stderr)  # noqa: T201
    return EXIT_INVALID_CONFIG


def _summary(path: Path, config: EdgeConfig) -> str:
    """What `check` prints for a valid config: what the agent would connect to, and how."""
    tags = sum(len(d.tags) for d in config.devices)
    sp, mqtt, outbox, health = config.sparkplug, config.mqtt, config.outbox, config.health
    lines = [
        f"{path}: OK ({len(config.devices)} devices, {tags} tags)",
        f"  sparkplug  {sp.group_id}/{sp.edge_node_id}, primary host {sp.primary_host_id}",
        f"  mqtt       {mqtt.host}:{mqtt.port} as {mqtt.client_id}"
        + (f" (user {mqtt.username})" if mqtt.username else ""),
        f"  outbox     {outbox.path} (at most {_size(outbox.max_bytes)},"
        f" when full: {outbox.when_full})",
        "  health     "
        + (f"http://{health.host}:{health.port}/health" if health.port is not None else "off")
        + f", {health.log_format} logs",
    ]
    for device in config.devices:
        if device.modbus is not None:
            m = device.modbus
            where = f"modbus {m.host}:{m.port} unit {m.unit_id}, every {device.poll_interval_ms} ms"
        else:
            assert device.opcua is not None
            where = f"opcua {device.opcua.endpoint} ({device.opcua.security_mode})"
        lines.append(f"  device     {device.id}: {where}, {len(device.tags)} tags")
    return "\n".join(lines)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count} bytes"


def _reason(exc: BaseException) -> str:
    """The messages of `exc`, or of the errors inside an exception group (a TaskGroup's)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_reason(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def _run(config: EdgeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    await run_agent(config, stop)


if __name__ == "__main__":
    sys.exit(main())
