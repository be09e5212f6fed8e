"""Live fan-out: snapshot first, events in order, coalescing overflow; the single service thread."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import pytest

from taktline_cloud.events import Event
from taktline_cloud.live import SNAPSHOT, LiveHub, LiveSubscription, ServiceGateway, ServiceWorker
from tests.support import wait_for

AT = datetime(2026, 11, 24, 19, 40, tzinfo=UTC)


def event(n: int) -> Event:
    return Event("machine.updated", {"code": "M1", "good_count": str(n)}, AT)


def drain(subscription: LiveSubscription) -> list[object]:
    items: list[object] = []
    while subscription.pending():
        items.append(subscription._queue.get_nowait())
    return items


async def test_a_client_starts_with_a_snapshot_then_gets_events_in_order() -> None:
    hub = LiveHub(max_queue=8)
    with hub.subscribe() as client:
        hub.publish([event(1), event(2)])
        assert await client.next() is SNAPSHOT
        first = json.loads(str(await client.next()))
        assert first == {"type": "machine.updated", "at": "2026-11-24T19:40:00.000Z",
                         "data": {"code": "M1", "good_count": "1"}}
        assert json.loads(str(await client.next()))["data"]["good_count"] == "2"


async def test_overflow_drops_the_backlog_for_one_fresh_snapshot() -> None:
    hub = LiveHub(max_queue=4)
    with hub.subscribe() as slow:
        hub.publish([event(n) for n in range(1, 11)])  # never blocks, whatever the client
        assert slow.pending() <= hub.max_queue
        items = drain(slow)
        assert SNAPSHOT in items
        after = items[items.index(SNAPSHOT) + 1 :]
        # What follows the snapshot request is the newest events, in order.
        goods = [json.loads(str(text))["data"]["good_count"] for text in after]
        assert goods == sorted(goods, key=int)
        assert goods[-1] == "10"
        assert slow.overflows >= 1


async def test_a_client_that_left_gets_nothing_and_is_not_counted() -> None:
    hub = LiveHub(max_queue=4)
    with hub.subscribe() as client:
        assert hub.clients == 1
    hub.publish([event(1)])
    assert hub.clients == 0
    assert drain(client) == [SNAPSHOT]


def test_a_queue_must_hold_a_snapshot_and_an_event() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        LiveHub(max_queue=1)


class ThreadRecordingPlant:
    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.gate = threading.Event()

    def refresh(self) -> list[Event]:
        self.threads.add(threading.current_thread().name)
        return [event(len(self.threads))]

    def slow_command(self) -> tuple[str, list[Event]]:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(5)
        return "done", [event(99)]


async def test_every_service_call_runs_on_one_thread() -> None:
    plant, hub, worker = ThreadRecordingPlant(), LiveHub(), ServiceWorker()
    gateway = ServiceGateway(plant, worker, hub)  # type: ignore[arg-type]
    await asyncio.gather(*(gateway.apply(lambda p: p.refresh()) for _ in range(20)))
    plant.gate.set()
    await gateway.command(lambda p: p.slow_command())
    await worker.close()
    assert len(plant.threads) == 1
    assert threading.current_thread().name not in plant.threads


async def test_events_of_a_command_go_live_even_if_its_request_was_cancelled() -> None:
    plant, hub, worker = ThreadRecordingPlant(), LiveHub(), ServiceWorker()
    gateway = ServiceGateway(plant, worker, hub)  # type: ignore[arg-type]
    with hub.subscribe() as client:
        drain(client)
        request = asyncio.ensure_future(gateway.command(lambda p: p.slow_command()))
        await wait_for(lambda: plant.threads, what="the command to start")
        request.cancel()
        plant.gate.set()
        await wait_for(client.pending, what="the command's event")
        assert json.loads(str(await client.next()))["data"]["good_count"] == "99"
    await worker.close()
