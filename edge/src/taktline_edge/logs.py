"""The edge agent's log output: human text by default, JSON lines for the gateway's log shipper.

``health.log_format: json`` (or ``taktline-edge run --log-format json``) writes one JSON object
per line to stderr::

    {"ts": "2025-05-01T08:00:00.123+00:00", "level": "WARNING", "logger": "taktline_edge.poller",
     "message": "M1 unavailable: ...", "device": "M1"}

``ts`` is UTC (ISO 8601, milliseconds); fields passed with ``extra={...}`` (e.g. ``device``) are
top-level keys; an exception adds ``exc_type`` and ``exc`` (the traceback). A shipper (Vector,
Fluent Bit, journald's JSON parser) then needs no regular expression. Text lines carry the same
UTC timestamp, so both formats line up with the agent's Sparkplug timestamps.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]

_CORE_FIELDS = ("ts", "level", "logger", "message")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_PLAIN_RECORD = logging.LogRecord("", logging.INFO, "", 0, "", None, None)
_RECORD_ATTRIBUTES = frozenset(vars(_PLAIN_RECORD)) | {"message", "asctime", "taskName"}


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the record's extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines inside values are escaped)."""
        entry: dict[str, object] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            # The core fields win over an extra of the same name (they are what shippers index).
            if key not in _RECORD_ATTRIBUTES and key not in _CORE_FIELDS:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``2025-05-01T08:00:00.123Z WARNING taktline_edge.poller: message`` (UTC)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """The record's time in UTC, ISO 8601 with milliseconds and a Z."""
        return _utc_iso(record.created).replace("+00:00", "Z")


def configure_logging(level: str | int, fmt: LogFormat = "text") -> None:
    """Root logging to stderr in `fmt`, replacing any handlers set before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) in libraries: logged, in the same format
