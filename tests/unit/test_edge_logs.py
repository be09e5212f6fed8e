"""Log lines: one JSON object per record (for a shipper), or UTC text; same fields either way."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from taktline_edge import logs
from taktline_edge.logs import JsonFormatter, TextFormatter, configure_logging


def _record(msg: str = "M1 unavailable: %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "taktline_edge.poller", logging.WARNING, __file__, 1, msg, args or ("refused",), None
    )
    record.created = datetime(2025, 5, 1, 8, 0, 0, 123_000, tzinfo=UTC).timestamp()
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_is_one_json_object_with_utc_time_and_its_extras() -> None:
    line = JsonFormatter().format(_record(device="M1", polls=3))
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2025-05-01T08:00:00.123+00:00",
        "level": "WARNING",
        "logger": "taktline_edge.poller",
        "message": "M1 unavailable: refused",
        "device": "M1",
        "polls": 3,
    }
    assert datetime.fromisoformat(json.loads(line)["ts"]).utcoffset() is not None


def test_an_exception_and_odd_values_stay_one_line() -> None:
    try:
        raise ConnectionRefusedError("no PLC\nat 10.0.0.7")
    except ConnectionRefusedError:
        exc_info = sys.exc_info()
    record = _record("first line\nsecond line", device=object(), level="shadowed")
    record.args = ()
    record.exc_info = exc_info
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "first line\nsecond line"
    assert entry["level"] == "WARNING", "an extra cannot replace a core field"
    assert entry["exc_type"] == "ConnectionRefusedError"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ConnectionRefusedError: no PLC\nat 10.0.0.7")
    assert entry["device"].startswith("<object object at")


def test_text_lines_carry_the_utc_time() -> None:
    assert TextFormatter().format(_record()) == (
        "2025-05-01T08:00:00.123Z WARNING taktline_edge.poller: M1 unavailable: refused"
    )


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_root_logging")
def test_configure_logging_replaces_the_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    logging.getLogger().addHandler(logging.StreamHandler(io.StringIO()))
    configure_logging("INFO", "json")
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("taktline_edge.test").info("hello %s", "there", extra={"device": "M2"})
    logging.getLogger("taktline_edge.test").debug("not at INFO")
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["message"], entry["device"], entry["level"]) == ("hello there", "M2", "INFO")
