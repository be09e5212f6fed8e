"""``taktline-cloud run [--config-env-file FILE]``: the cloud process (uvicorn, uvloop, httptools).

Settings come from ``TAKTLINE_*`` environment variables, or from an env file of the same names.
Exit codes: 0 stopped by a signal, 1 failed while starting or running, 2 invalid settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop
from pydantic import ValidationError

from taktline_cloud.app import run_cloud
from taktline_cloud.errors import CloudError
from taktline_cloud.settings import CloudSettings

log = logging.getLogger("taktline_cloud")

EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `taktline-cloud` command."""
    parser = argparse.ArgumentParser(
        prog="taktline-cloud", description="Taktline cloud: Sparkplug host, REST API, live feed."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the cloud until SIGINT/SIGTERM")
    run.add_argument(
        "--config-env-file",
        type=Path,
        help="file of TAKTLINE_*=value lines (environment variables override it)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config_env_file)
    except SettingsError as exc:
        print(f"taktline-cloud: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's message
        return EXIT_BAD_SETTINGS
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_run(settings))
    except CloudError as exc:
        print(f"taktline-cloud: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    return 0


class SettingsError(Exception):
    """The settings are invalid; the message lists each bad variable and why."""


def load_settings(env_file: Path | None = None) -> CloudSettings:
    """Build the settings from the environment (and `env_file`); raise `SettingsError`."""
    if env_file is not None and not env_file.is_file():
        raise SettingsError(f"settings file {env_file} does not exist")
    try:
        return CloudSettings(_env_file=env_file)
    except ValidationError as exc:
        lines = [
            f"  {_variable(error['loc'])}: {error['msg']} (got {error.get('input')!r})"
            for error in exc.errors()
        ]
        source = f" (environment and {env_file})" if env_file else " (environment)"
        raise SettingsError("invalid settings" + source + ":\n" + "\n".join(lines)) from None


def _variable(location: tuple[int | str, ...]) -> str:
    """The environment variable a validation error is about."""
    name = ".".join(str(part) for part in location).upper()
    return name if name.startswith("TAKTLINE_") else f"TAKTLINE_{name}"


async def _run(settings: CloudSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(port: int) -> None:
        log.info("Taktline cloud on http://%s:%s", settings.http_host, port)

    try:
        await run_cloud(settings, stop, on_ready=ready)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


if __name__ == "__main__":
    sys.exit(main())
