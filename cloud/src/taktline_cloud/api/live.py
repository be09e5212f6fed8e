"""The live websocket: a snapshot first, then events as they happen (resynced after overflow)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from taktline_cloud.api.deps import Context
from taktline_cloud.errors import CloudError
from taktline_cloud.events import SNAPSHOT, Event
from taktline_cloud.live.gateway import ServiceGateway
from taktline_cloud.live.hub import LiveSubscription, Resync

log = logging.getLogger(__name__)

router = APIRouter()

_TRY_AGAIN_LATER = 1013  # websocket close code: the client cannot keep up


@router.websocket("/ws/live")
async def live(websocket: WebSocket, context: Context) -> None:
    """Send `{"type": "snapshot", ...}`, then every event as `{"type", "at", "data"}`."""
    await websocket.accept()
    with context.hub.subscribe() as subscription:
        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(
                _send(websocket, subscription, context.gateway, context.ws_send_timeout_s),
                name="ws-live-send",
            )
            receiver = tasks.create_task(_until_closed(websocket), name="ws-live-receive")
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sender, receiver):
                task.cancel()
    if sender.done() and not sender.cancelled():
        await _close_after(websocket, sender.result())


async def _send(
    websocket: WebSocket, subscription: LiveSubscription, gateway: ServiceGateway, limit_s: float
) -> Exception:
    """Send until something stops it; return what did (the client left, was too slow, …)."""
    try:
        while True:
            item = await subscription.next()
            text = await snapshot_text(gateway) if isinstance(item, Resync) else item
            async with asyncio.timeout(limit_s):
                await websocket.send_text(text)
    except (WebSocketDisconnect, OSError, RuntimeError, TimeoutError, CloudError) as exc:
        # RuntimeError: starlette's "send after close"; CloudError: the snapshot read failed.
        return exc


async def snapshot_text(gateway: ServiceGateway) -> str:
    """The snapshot message: the whole dashboard, read now."""
    dashboard = await gateway.read(lambda plant: plant.dashboard())
    event = Event(SNAPSHOT, dashboard.to_json(), datetime.now(UTC))
    return orjson.dumps(event.to_json()).decode()


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _close_after(websocket: WebSocket, error: Exception) -> None:
    if isinstance(error, WebSocketDisconnect | OSError | RuntimeError):
        return
    if isinstance(error, TimeoutError):
        log.info("live client too slow to receive: closing it")
        code, reason = _TRY_AGAIN_LATER, "too slow"
    else:
        log.error("live feed failed", exc_info=error)
        code, reason = 1011, "internal error"
    # The connection may already be half gone; closing is best effort.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await websocket.close(code, reason)
