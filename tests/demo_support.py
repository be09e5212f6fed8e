"""Running the real `taktline demo` command in tests: start, read its URL, stop with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import wait_for_sync

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
DIST = REPO / "dashboards" / "dist"

READY_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 5.0
OBSERVE_S = 25.0
WORK_ORDER = "WO-1001"
SALES_ORDER = "SO-1001"

T = TypeVar("T")

_BIG_SCREEN = re.compile(r"big screen: (http://\S+?)/?\s")


@dataclass
class DemoProcess:
    """A running `taktline demo` subprocess and everything it printed so far."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    def start_reading(self) -> None:
        """Collect the output on a thread, so a full pipe never blocks the demo."""
        self._reader = threading.Thread(target=self._read, name="demo-output", daemon=True)
        self._reader.start()

    def finish_reading(self) -> None:
        """After the process exited: wait until its last line is collected."""
        if self._reader is not None:
            self._reader.join(timeout=10)

    @property
    def output(self) -> str:
        """Everything printed (stdout and stderr interleaved)."""
        with self._lock:
            return "".join(self.lines)

    def url(self) -> str | None:
        """The big screen's base URL once the demo announced it (no trailing slash)."""
        self._check_alive()
        match = _BIG_SCREEN.search(self.output)
        return match.group(1) if match else None

    def interrupt(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Ctrl-C: SIGINT, then the exit code (fail when it does not exit within `timeout`)."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail(f"the demo did not exit within {timeout}s of SIGINT:\n{self.tail()}")
        self.finish_reading()
        return code

    def tail(self, lines: int = 40) -> str:
        with self._lock:
            return "".join(self.lines[-lines:])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the demo exited with {self.process.returncode}:\n{self.tail()}")


@contextmanager
def running_demo(data_dir: Path, *extra: str) -> Iterator[tuple[DemoProcess, str]]:
    """Start `taktline demo` on free ports; yield it and its base URL once it serves."""
    command = [
        sys.executable,
        "-m",
        "taktline",
        "demo",
        "--config-dir",
        str(CONFIG),
        "--dashboard-dir",
        str(DIST),
        "--data-dir",
        str(data_dir),
        "--fresh",
        "--http-port",
        "0",
        "--mqtt-port",
        "0",
        "--ephemeral-plcs",
        *extra,
    ]
    # Unbuffered, so the log line with the URL arrives as soon as it is written.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    demo = DemoProcess(process)
    demo.start_reading()
    try:
        url = wait_until(demo.url, READY_TIMEOUT_S, "the demo's big screen URL", interval=0.05)
        yield demo, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        demo.finish_reading()


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """`wait_for_sync` for conditions that answer None until they hold; returns the value."""
    value = wait_for_sync(condition, timeout=timeout, interval=interval, what=what)
    assert value is not None
    return value
