"""Fan-out of live events to websocket clients, one bounded queue per client.

Overflow policy: coalesce. A client that falls `max_queue` events behind loses its queue and is
sent a fresh snapshot instead: dashboard fan-out may drop, production data never is (it is in
the database, and the snapshot is read from there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Final, TypeAlias

import orjson

from taktline_cloud.events import Event

log = logging.getLogger(__name__)


class Resync(Enum):
    """Marker in a client's queue: send a fresh snapshot (on connect and after an overflow)."""

    SNAPSHOT = "snapshot"


SNAPSHOT: Final = Resync.SNAPSHOT
LiveItem: TypeAlias = str | Resync
"""A serialised event (JSON text), or the request to send a snapshot."""


class LiveSubscription:
    """One client's view of the hub: its pending items, in order."""

    def __init__(self, max_queue: int) -> None:
        self._queue: asyncio.Queue[LiveItem] = asyncio.Queue(maxsize=max_queue)
        self._queue.put_nowait(SNAPSHOT)  # a client first gets the whole picture
        self.overflows = 0

    async def next(self) -> LiveItem:
        """The next item to send (waits for one)."""
        return await self._queue.get()

    def pending(self) -> int:
        """How many items wait to be sent."""
        return self._queue.qsize()

    def offer(self, text: str) -> None:
        """Queue one event; on overflow replace everything queued by one snapshot request."""
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflows += 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(SNAPSHOT)


class LiveHub:
    """Publishes events to every subscribed client without ever waiting on a slow one."""

    def __init__(self, max_queue: int = 512) -> None:
        if max_queue < 2:
            raise ValueError("a client queue must hold at least 2 items")
        self.max_queue = max_queue
        self._clients: set[LiveSubscription] = set()

    @property
    def clients(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    @contextmanager
    def subscribe(self) -> Iterator[LiveSubscription]:
        """A new client's subscription for the duration of the block (starts with a snapshot)."""
        subscription = LiveSubscription(self.max_queue)
        self._clients.add(subscription)
        try:
            yield subscription
        finally:
            self._clients.discard(subscription)

    def publish(self, events: Sequence[Event]) -> None:
        """Send `events` to every client (serialised once); called on the event loop's thread."""
        if not events or not self._clients:
            return
        texts = [orjson.dumps(event.to_json()).decode() for event in events]
        for client in tuple(self._clients):
            for text in texts:
                client.offer(text)
