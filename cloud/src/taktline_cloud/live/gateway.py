"""The one way into `PlantService`: every call on a single worker thread, its events to the hub.

SQLite connections and the service are not thread-safe, so the whole process shares one
single-thread executor. Events are handed to the hub from the worker thread itself (via
`call_soon_threadsafe`), so they are published in the order the calls ran even when the
awaiting request was cancelled half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from taktline_cloud.events import Event
from taktline_cloud.live.hub import LiveHub

if TYPE_CHECKING:
    from taktline_cloud.service import PlantService

T = TypeVar("T")


class ServiceWorker:
    """A single worker thread that runs blocking calls one at a time, in submission order."""

    def __init__(self, name: str = "taktline-service") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, call: Callable[[], T]) -> T:
        """Run `call` on the worker thread and wait for its result."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Finish queued calls and stop the thread (without blocking the event loop)."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)


class ServiceGateway:
    """Runs reads, commands and ingestion against the service and fans their events out live."""

    def __init__(self, service: PlantService, worker: ServiceWorker, hub: LiveHub) -> None:
        self.service = service
        self.worker = worker
        self.hub = hub

    async def read(self, query: Callable[[PlantService], T]) -> T:
        """Run a read-only query (a read model) on the worker thread."""
        service = self.service
        return await self.worker.run(lambda: query(service))

    async def apply(self, change: Callable[[PlantService], list[Event]]) -> list[Event]:
        """Run a change that returns events; publish them live; return them."""
        loop, service, hub = asyncio.get_running_loop(), self.service, self.hub

        def call() -> list[Event]:
            events = change(service)
            loop.call_soon_threadsafe(hub.publish, events)
            return events

        return await self.worker.run(call)

    async def command(self, command: Callable[[PlantService], tuple[T, list[Event]]]) -> T:
        """Run a command that returns (result, events); publish the events; return the result."""
        loop, service, hub = asyncio.get_running_loop(), self.service, self.hub

        def call() -> T:
            result, events = command(service)
            loop.call_soon_threadsafe(hub.publish, events)
            return result

        return await self.worker.run(call)
