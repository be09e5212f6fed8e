"""Primary host STATE messages (Sparkplug 3.0): retained JSON ``{"online", "timestamp"}``."""

import json
from dataclasses import dataclass
from datetime import datetime

from taktline_contract.errors import PayloadError
from taktline_contract.sparkplug.codec import from_millis, to_millis


@dataclass(frozen=True, slots=True)
class HostState:
    """Whether a primary host application is online, as of `timestamp`."""

    online: bool
    timestamp: datetime


def encode_state(state: HostState) -> bytes:
    """The STATE payload for `state`."""
    return json.dumps({"online": state.online, "timestamp": to_millis(state.timestamp)}).encode()


def decode_state(raw: bytes) -> HostState:
    """Decode a STATE payload; raise `PayloadError` when it is not one."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"STATE payload is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise PayloadError("STATE payload must be a JSON object")
    online, timestamp = body.get("online"), body.get("timestamp")
    if (
        not isinstance(online, bool)
        or not isinstance(timestamp, int)
        or isinstance(timestamp, bool)
    ):
        raise PayloadError("STATE payload needs a boolean 'online' and an integer 'timestamp'")
    return HostState(online, from_millis(timestamp))
