"""Ingest workers sharing one Sparkplug host id: STATE stays true to what edge nodes see.

Each worker has its own will (STATE offline with its own timestamp). An observer applies the
edge node's rule (Sparkplug 3.0: the STATE with the newest timestamp wins, older ones are
ignored; the edge's publisher.py does the same): while any worker runs it must end online, when
all are dead offline. Kills are real (SIGKILL of a worker process: no DISCONNECT, the broker
publishes the will).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiomqtt
import pytest

from taktline_cloud.historian.samples import Sample
from taktline_cloud.host import PrimaryHost
from taktline_contract.metrics import GOOD_COUNT
from taktline_contract.sparkplug import HostState, decode_state, encode_state
from tests.integration.test_cloud_host import (
    HOST_ID,
    STATE_TOPIC,
    EdgeNode,
    retained_state,
    running_host,
    taken,
)
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto


class StateObserver:
    """What an edge node believes of the host: the newest STATE wins (equal timestamps: the
    later message), older ones are ignored."""

    def __init__(self) -> None:
        self.seen: list[HostState] = []
        self.current: HostState | None = None

    def apply(self, state: HostState) -> None:
        self.seen.append(state)
        if self.current is None or state.timestamp >= self.current.timestamp:
            self.current = state

    @property
    def online(self) -> bool:
        return self.current is not None and self.current.online

    def saw(self, *, online: bool, timestamp: datetime) -> bool:
        return HostState(online, timestamp) in self.seen

    def onlines(self) -> list[datetime]:
        """Timestamps of the online STATEs seen, in order."""
        return [s.timestamp for s in self.seen if s.online]


@contextlib.asynccontextmanager
async def observing(broker: Mosquitto) -> AsyncIterator[StateObserver]:
    observer = StateObserver()
    async with aiomqtt.Client(broker.host, broker.port, timeout=5) as client:
        await client.subscribe(STATE_TOPIC, qos=1, timeout=5)

        async def watch() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                observer.apply(decode_state(message.payload))

        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(watch(), name="state-observer")
            try:
                yield observer
            finally:
                watcher.cancel()


_WORKER = """
import asyncio, sys
from taktline_cloud.host import HostOptions, PrimaryHost

async def main() -> None:
    options = HostOptions(
        "127.0.0.1", int(sys.argv[1]), client_id=sys.argv[2], host_id=sys.argv[3],
        group_id="PLANT-1", shared_group="ingest", reconnect_initial_s=0.05,
        reconnect_cap_s=0.5, timeout_s=5.0,
    )
    await PrimaryHost(options, asyncio.Queue()).run(asyncio.Event())

asyncio.run(main())
"""


class Workers:
    """Ingest worker processes of one host id, each killed with SIGKILL (no DISCONNECT)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, observer: StateObserver) -> datetime:
        """Start worker `name`; its STATE timestamp (its online, newer than any before)."""
        before = max(observer.onlines(), default=None)
        self.processes[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, str(self.broker.port), f"worker-{name}", HOST_ID
        )

        def its_online() -> datetime | None:
            fresh = [t for t in observer.onlines() if before is None or t > before]
            return fresh[0] if fresh else None

        online = await wait_for(its_online, timeout=20, what=f"worker {name} to say online")
        assert online is not None
        return online

    async def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)

    async def close(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 10)


async def _fresh_edge_sees(broker: Mosquitto, online: bool) -> bool:
    """Whether an edge node connecting now would see the host `online` (retained STATE)."""
    return (await retained_state(broker)).online is online


@pytest.mark.parametrize("first", ["older", "newer"])
async def test_killed_workers_leave_state_online_until_the_last_one_dies(
    mosquitto: Mosquitto, first: str
) -> None:
    workers = Workers(mosquitto)
    try:
        async with observing(mosquitto) as observer:
            born = {"older": await workers.start("older", observer)}
            born["newer"] = await workers.start("newer", observer)
            assert born["newer"] > born["older"]
            other = "older" if first == "newer" else "newer"

            # Killing the newer worker makes its will the newest STATE: the survivor must say
            # online with a newer timestamp still. The older one's will is stale for edges that
            # saw the newer online, but it replaces the retained message: it must be corrected.
            await workers.kill(first)
            await wait_for(
                lambda: observer.saw(online=False, timestamp=born[first]),
                what=f"the will of the {first} worker",
            )
            await wait_for(lambda: observer.online, what="STATE online again (newest wins)")
            await wait_for(lambda: _fresh_edge_sees(mosquitto, True), what="retained online")
            assert observer.current is not None
            assert observer.current.timestamp >= born[other]

            await workers.kill(other)
            await wait_for(lambda: not observer.online, what="STATE offline after both died")
            assert await _fresh_edge_sees(mosquitto, False)

            await workers.start("third", observer)
            await wait_for(lambda: observer.online, what="STATE online with a new worker")
            await wait_for(lambda: _fresh_edge_sees(mosquitto, True), what="retained online")
    finally:
        await workers.close()


async def test_workers_restarting_for_the_same_offline_do_not_set_each_other_off(
    mosquitto: Mosquitto,
) -> None:
    async with (
        observing(mosquitto) as observer,
        running_host(mosquitto, "worker-a", shared_group="ingest") as (a, _),
        running_host(mosquitto, "worker-b", shared_group="ingest") as (b, _),
        EdgeNode(mosquitto) as edge,
    ):
        await wait_for(lambda: b.state_timestamp in observer.onlines(), what="b online")
        # An offline newer than both (a worker whose clock runs ahead died): both must restart.
        ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=5) as other:
            offline = encode_state(HostState(online=False, timestamp=ahead))
            await other.publish(STATE_TOPIC, offline, qos=1, retain=True)

        def restarted(host: PrimaryHost) -> bool:
            return (
                host.connected and host.state_timestamp is not None and host.state_timestamp > ahead
            )

        await wait_for(lambda: restarted(a) and restarted(b), what="both workers restarted")
        await wait_for(lambda: observer.online, what="the observer online again")
        # A barrier through the broker: a birth reaches both workers after anything the
        # restarts could have caused.
        await edge.birth({"M1": {GOOD_COUNT: 0}})
        await wait_for(
            lambda: a.online_nodes() == b.online_nodes() == {"GW-1": ["M1"]},
            what="the birth at both workers",
        )
        assert (a.state_restarts, b.state_restarts) == (1, 1)
        # Only the injected offline was ever published: a restart publishes no offline, so
        # nothing could start another round. Every online after it is newer than it.
        assert [s for s in observer.seen if not s.online] == [HostState(False, ahead)]
        injected = observer.seen.index(HostState(False, ahead))
        after = [s.timestamp for s in observer.seen[injected + 1 :]]
        assert after
        assert all(t > ahead for t in after)
        assert observer.online
        assert await _fresh_edge_sees(mosquitto, True)


async def test_ingestion_goes_on_across_a_restart_without_losing_received_data(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    # Worker a's ingest queue is tiny: while the test does not take from it, a holds back and
    # what it received waits in its client (acknowledged to the broker) when it has to restart.
    async with (
        running_host(mosquitto, "worker-a", queue_size=5, shared_group="ingest") as (a, queue_a),
        running_host(mosquitto, "worker-b", shared_group="ingest") as (b, queue_b),
        EdgeNode(mosquitto) as edge,
    ):
        assert a.state_timestamp is not None
        assert b.state_timestamp is not None
        assert b.state_timestamp - a.state_timestamp >= timedelta(milliseconds=1)
        await edge.birth({"M1": {GOOD_COUNT: 0}})
        await wait_for(
            lambda: a.online_nodes() == b.online_nodes() == {"GW-1": ["M1"]},
            what="the birth at both workers",
        )
        by_a: list[Decimal] = []
        by_b: list[Decimal] = []

        def collect() -> None:
            for queue, into in ((queue_a, by_a), (queue_b, by_b)):
                into.extend(
                    i.value
                    for i in taken(queue)
                    if isinstance(i, Sample) and isinstance(i.value, Decimal) and i.value != 0
                )

        for n in range(1, 101):
            await edge.data("M1", {GOOD_COUNT: n})
        # Newer than a's timestamp, older than b's: a must restart, b only republishes.
        declared = b.state_timestamp - timedelta(milliseconds=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=5) as other:
            offline = encode_state(HostState(online=False, timestamp=declared))
            await other.publish(STATE_TOPIC, offline, qos=1, retain=True)
        for n in range(101, 201):
            await edge.data("M1", {GOOD_COUNT: n})

        first_session = a.state_timestamp

        def a_restarted() -> bool:
            collect()
            return a.connected and a.state_timestamp != first_session

        await wait_for(a_restarted, what="worker a in a new session")
        assert a.state_timestamp is not None
        assert a.state_timestamp > b.state_timestamp
        assert (a.state_restarts, b.state_restarts) == (1, 0)
        taken_before = len(by_a)
        for n in range(201, 241):
            await edge.data("M1", {GOOD_COUNT: n})

        def all_counted() -> bool:
            collect()
            return len(by_a) + len(by_b) >= 240

        await wait_for(all_counted, what="240 samples across the two workers")
        assert sorted(by_a + by_b) == [Decimal(n) for n in range(1, 241)]  # each exactly once
        assert any(v > 200 for v in by_a[taken_before:]), "a ingests again after its restart"
        assert any(v <= 200 for v in by_a), "a took its share before the restart"
        assert (await retained_state(mosquitto)).online
    assert "did not come back in time" not in caplog.text


async def test_a_retained_offline_newer_than_our_clock_is_overtaken_at_start(
    mosquitto: Mosquitto,
) -> None:
    # Left by a worker whose clock runs ahead: an online as of our own clock would be stale.
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=5) as other:
        await other.publish(STATE_TOPIC, encode_state(HostState(False, ahead)), qos=1, retain=True)
    async with observing(mosquitto) as observer, running_host(mosquitto) as (host, _):
        await wait_for(lambda: observer.online, what="the observer to see the host online")
        assert observer.current is not None
        assert observer.current.timestamp > ahead
        assert host.state_timestamp == observer.current.timestamp
        assert host.state_restarts == 1
        assert await _fresh_edge_sees(mosquitto, True)
