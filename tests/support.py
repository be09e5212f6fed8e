"""Helpers shared by the test tiers: services, ports and waiting on conditions with a deadline."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_DSN = os.environ.get("TAKTLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def missing_service(what: str) -> None:
    """Skip locally, fail in CI: a test must never pass by not running there."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} not available")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@overload
async def wait_for(
    condition: Callable[[], Awaitable[T]],
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...
@overload
async def wait_for(
    condition: Callable[[], T], timeout: float = ..., interval: float = ..., what: str = ...
) -> T: ...
async def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        last = result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or condition}: last {last!r}"
            )
        await asyncio.sleep(interval)


def wait_for_sync(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Blocking variant of `wait_for`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or condition}: last {result!r}"
            )
        time.sleep(interval)


@dataclass
class Mosquitto:
    """A private mosquitto on a free loopback port, restartable on the same port (outages)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    anonymous: bool = True
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    def start(self) -> None:
        """Write the config (fixture defaults + `extra_config`) and start the broker."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous {str(self.anonymous).lower()}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\nlog_dest file {self.workdir}/mosquitto.log\n"
            f"max_queued_messages 100000\n{self.extra_config}\n"
            # as root, mosquitto drops to user "mosquitto", which cannot read the test's tmp dir
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for_sync(self._accepting, timeout=10, what=f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err}")
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False


@contextmanager
def mosquitto_broker(
    workdir: Path, extra_config: str = "", *, anonymous: bool = True
) -> Iterator[Mosquitto]:
    """Start a private mosquitto (fail in CI / skip locally when the binary is missing)."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        missing_service("mosquitto")
    broker = Mosquitto(workdir, extra_config=extra_config, anonymous=anonymous)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; yields its DSN and drops it afterwards."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the dev environment has it
        missing_service("psycopg")
        raise
    name = f"taktline_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL at {POSTGRES_ADMIN_DSN} ({exc})")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield dsn
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
