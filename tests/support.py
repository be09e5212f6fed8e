"""Helpers shared by the test tiers: services, ports and waiting on conditions with a deadline."""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_DSN = os.environ.get("TAKTLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def missing_service(what: str) -> None:
    """Skip locally, fail in CI: a test must never pass by not running there."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} not available")


_PORTS = random.Random()
_EPHEMERAL_PATH = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(n) for n in _EPHEMERAL_PATH.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves).

    Chosen below the kernel's ephemeral range: a test that stops a server and starts it again on
    the same port must not find the port taken meanwhile as some client's outgoing port (which
    is what a port from bind(0), inside that range, can be).
    """
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = _PORTS.randrange(20_000, min(low, 32_768))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # everything there busy: any free port
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


# --- a private PostgreSQL cluster (a database server a test may stop and start) ------------


def postgres_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are (PATH, else Debian's versioned directories)."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


ShutdownMode = Literal["smart", "fast", "immediate"]


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster of its own (initdb) on a free loopback port, trust auth.

    `stop("immediate")` is a crash as far as the data is concerned (the next start replays the
    WAL); committed transactions survive it (fsync is off, but the operating system keeps what
    the server wrote: only a power cut could lose it). Postgres refuses to run as root: as root,
    the server runs as `os_user` (its files belong to that user).
    """

    root: Path
    bindir: Path
    os_user: str | None = None
    port: int = field(default_factory=free_port)
    running: bool = False

    @property
    def dsn(self) -> str:
        """The DSN of the cluster's `postgres` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def init(self) -> None:
        """Create the cluster's files."""
        self._run(
            "initdb", "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        (self.root / "sockets").mkdir(exist_ok=True)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.root / "sockets", entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        """Start the server; return once it accepts connections."""
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.root / 'sockets'} -c fsync=off"
            " -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.root / "data"), "-l", str(self.log_path), "-w", "-t", "30",
            "-o", options, "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Stop the server (`immediate`: no checkpoint, connections cut at once)."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop and start again, on the same port."""
        self.stop(mode)
        self.start()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.os_user is not None:
            command = ["runuser", "-u", self.os_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            log = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise RuntimeError(
                f"{program} {' '.join(args[-1:])} failed ({result.returncode}):"
                f" {result.stdout}{result.stderr}\n{log}"
            )


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started private cluster, removed afterwards (fail in CI / skip locally without initdb)."""
    bindir = postgres_bindir()
    if bindir is None:
        missing_service("PostgreSQL server binaries (initdb, pg_ctl)")
        raise AssertionError("unreachable")
    os_user = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            missing_service("a 'postgres' user to run a PostgreSQL server as (root cannot)")
            raise
        os_user = entry.pw_name
    # Not under pytest's tmp_path: its directories are private to root.
    root = Path(tempfile.mkdtemp(prefix="taktline-pg-"))
    try:
        if os_user is not None:
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = PostgresCluster(root, bindir, os_user)
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running:
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- another process holding a SQLite database's write lock --------------------------------

_LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@asynccontextmanager
async def sqlite_write_lock(path: Path, timeout: float = 30.0) -> AsyncIterator[None]:
    """Another process holds `path`'s write lock (BEGIN EXCLUSIVE) while the block runs:
    every other writer waits for its busy timeout, then fails with "database is locked"."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LOCK_HOLDER, str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        line = await asyncio.wait_for(holder.stdout.readline(), timeout)
        if line.strip() != b"locked":
            raise AssertionError(f"the lock holder did not take the lock: {line!r}")
        yield
    finally:
        if holder.returncode is None:
            holder.stdin.write(b"\n")
            holder.stdin.close()
            try:
                await asyncio.wait_for(holder.wait(), 10)
            except TimeoutError:
                holder.kill()
                await holder.wait()


class Clock:
    """A settable clock for the services under test (`clock.now = …` moves it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
