"""The Sparkplug primary host against a real mosquitto: STATE, births, data, rebirth, bad input.

The host's output is its ingest queue (what the batcher stores); the full path into the
database is covered by test_cloud_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiomqtt
import pytest

from taktline_cloud.historian.samples import Sample
from taktline_cloud.host import HostOptions, IngestItem, NodeStatus, PrimaryHost
from taktline_contract.metrics import BD_SEQ, GOOD_COUNT, MACHINE_STATE, NODE_REBIRTH, SCRAP_COUNT
from taktline_contract.sparkplug import (
    DataType,
    HostState,
    Metric,
    Payload,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
)
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

GROUP = "PLANT-1"
HOST_ID = "taktline-cloud"
STATE_TOPIC = f"spBv1.0/STATE/{HOST_ID}"
DEVICE_METRICS: dict[str, tuple[int, DataType]] = {
    GOOD_COUNT: (1, DataType.UINT32),
    SCRAP_COUNT: (2, DataType.UINT32),
    MACHINE_STATE: (3, DataType.UINT16),
}


class EdgeNode:
    """A minimal Sparkplug edge node made with aiomqtt + taktline_contract (for tests)."""

    def __init__(self, broker: Mosquitto, node: str = "GW-1", bd_seq: int = 0) -> None:
        self.node = node
        self.bd_seq = bd_seq
        self.seq = 0
        will = encode_payload(Payload.of(_now(), [Metric(BD_SEQ, DataType.UINT64, bd_seq)]))
        self.client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=f"test-edge-{node}",
            will=aiomqtt.Will(self.topic("NDEATH"), will, qos=1),
            timeout=5,
        )

    def topic(self, kind: str, device: str | None = None) -> str:
        tail = f"/{device}" if device else ""
        return f"spBv1.0/{GROUP}/{kind}/{self.node}{tail}"

    async def __aenter__(self) -> EdgeNode:
        await self.client.__aenter__()
        await self.client.subscribe(f"spBv1.0/{GROUP}/NCMD/{self.node}", qos=1, timeout=5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(None, None, None)

    async def send(self, kind: str, device: str | None, metrics: list[Metric], **kw: Any) -> bytes:
        raw = encode_payload(Payload.of(kw.get("at") or _now(), metrics, self._next_seq()))
        await self.client.publish(self.topic(kind, device), raw, qos=1, timeout=5)
        return raw

    def _next_seq(self) -> int:
        seq, self.seq = self.seq, (self.seq + 1) % 256
        return seq

    async def birth(self, devices: Mapping[str, Mapping[str, int]]) -> None:
        self.seq = 0
        await self.send(
            "NBIRTH",
            None,
            [
                Metric(BD_SEQ, DataType.UINT64, self.bd_seq),
                Metric(NODE_REBIRTH, DataType.BOOLEAN, False, alias=0),
            ],
        )
        for device, values in devices.items():
            await self.send("DBIRTH", device, [
                Metric(name, DEVICE_METRICS[name][1], value, alias=DEVICE_METRICS[name][0])
                for name, value in values.items()
            ])

    async def data(
        self, device: str, values: Mapping[str, int], at: datetime | None = None
    ) -> bytes:
        """DDATA by alias, as an edge sends after birth."""
        metrics = [
            Metric(None, DEVICE_METRICS[name][1], value, alias=DEVICE_METRICS[name][0])
            for name, value in values.items()
        ]
        return await self.send("DDATA", device, metrics, at=at)

    async def next_command(self) -> Payload:
        async with asyncio.timeout(10):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                return decode_payload(message.payload)
        raise AssertionError("no command")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=datetime.now(UTC).microsecond // 1000 * 1000)


async def retained_state(broker: Mosquitto, within: float = 5) -> HostState:
    """The STATE a newly connecting edge node would see (retained, or the next one published)."""
    async with aiomqtt.Client(broker.host, broker.port, timeout=5) as observer:
        await observer.subscribe(STATE_TOPIC, qos=1, timeout=5)
        async with asyncio.timeout(within):
            async for message in observer.messages:
                assert isinstance(message.payload, bytes)
                return decode_state(message.payload)
    raise AssertionError("no STATE")


@contextlib.asynccontextmanager
async def running_host(
    broker: Mosquitto, client_id: str = "test-host", queue_size: int = 10_000, **options: Any
) -> AsyncIterator[tuple[PrimaryHost, asyncio.Queue[IngestItem]]]:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue(maxsize=queue_size)
    settings: dict[str, Any] = {"rebirth_interval_s": 60.0, "reconnect_initial_s": 0.05,
                                "reconnect_cap_s": 0.5, "timeout_s": 5.0} | options
    host = PrimaryHost(
        HostOptions(broker.host, broker.port, client_id=client_id, host_id=HOST_ID,
                    group_id=GROUP, **settings),
        queue,
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(host.run(stop), name="host")
        await wait_for(lambda: host.connected, what="the host to connect")
        try:
            yield host, queue
        finally:
            stop.set()


def taken(queue: asyncio.Queue[IngestItem]) -> list[IngestItem]:
    items = []
    while not queue.empty():
        item = queue.get_nowait()
        if isinstance(item, list):  # a message's samples come as one item
            items.extend(item)
        else:
            items.append(item)
    return items


async def test_state_is_online_while_running_and_offline_after_a_graceful_stop(
    mosquitto: Mosquitto,
) -> None:
    async with running_host(mosquitto):
        state = await retained_state(mosquitto)
        assert state.online
    state = await retained_state(mosquitto)
    assert not state.online


async def test_births_and_data_become_samples_and_statuses(mosquitto: Mosquitto) -> None:
    collected: list[IngestItem] = []
    async with running_host(mosquitto) as (host, queue), EdgeNode(mosquitto) as edge:
        await edge.birth({"M1": {GOOD_COUNT: 100, SCRAP_COUNT: 2, MACHINE_STATE: 1}})
        at = _now()
        await edge.data("M1", {GOOD_COUNT: 101}, at=at)

        def got_the_data() -> bool:
            collected.extend(taken(queue))
            return any(isinstance(i, Sample) and i.value == Decimal(101) for i in collected)

        await wait_for(got_the_data, what="the DDATA sample")
        assert host.online_nodes() == {"GW-1": ["M1"]}
    statuses = [item for item in collected if isinstance(item, NodeStatus)]
    assert [(s.edge_node, s.device, s.online) for s in statuses] == [
        ("GW-1", None, True),
        ("GW-1", "M1", True),
    ]
    samples = [item for item in collected if isinstance(item, Sample)]
    assert Sample("M1", GOOD_COUNT, at, Decimal(101)) in samples
    assert {s.metric for s in samples} == {GOOD_COUNT, SCRAP_COUNT, MACHINE_STATE}


async def test_unknown_alias_asks_the_edge_node_for_a_rebirth(mosquitto: Mosquitto) -> None:
    async with running_host(mosquitto) as (host, _), EdgeNode(mosquitto) as edge:
        await edge.birth({"M1": {GOOD_COUNT: 1}})
        await edge.send("DDATA", "M1", [Metric(None, DataType.UINT32, 5, alias=77)])
        command = await edge.next_command()
        assert [(m.name, m.value) for m in command.metrics] == [(NODE_REBIRTH, True)]
        # A second unknown alias within the rate limit sends no second command.
        await edge.send("DDATA", "M1", [Metric(None, DataType.UINT32, 6, alias=78)])
        await wait_for(lambda: host.messages_received >= 4, what="the second DDATA")
        assert host.rebirths_requested == 1


async def test_data_without_birth_asks_for_a_rebirth(mosquitto: Mosquitto) -> None:
    async with running_host(mosquitto), EdgeNode(mosquitto, node="GW-2") as edge:
        await edge.data("M9", {GOOD_COUNT: 5})
        command = await edge.next_command()
        assert command.metrics[0].name == NODE_REBIRTH


async def test_a_malformed_message_is_logged_and_ingestion_goes_on(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_host(mosquitto) as (host, queue), EdgeNode(mosquitto) as edge:
        await edge.birth({"M1": {GOOD_COUNT: 1}})
        await edge.client.publish(edge.topic("DDATA", "M1"), b"\x08\xff garbage", qos=1)
        await edge.client.publish(f"spBv1.0/{GROUP}/DDATA/GW-1", b"", qos=1)  # no device
        await edge.data("M1", {GOOD_COUNT: 2})
        await wait_for(
            lambda: any(isinstance(i, Sample) and i.value == Decimal(2) for i in taken(queue)),
            what="the good message after the bad ones",
        )
        assert host.messages_rejected == 2
    assert "on spBv1.0/PLANT-1/DDATA/GW-1/M1: not a Sparkplug B payload" in caplog.text
    assert "must name a device" in caplog.text


async def test_a_stale_offline_state_is_corrected_by_the_live_host(mosquitto: Mosquitto) -> None:
    async with running_host(mosquitto):
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=5) as other:
            stale = encode_state(HostState(online=False, timestamp=_now() - timedelta(hours=1)))
            await other.publish(STATE_TOPIC, stale, qos=1, retain=True)

        async def online_again() -> bool:
            return (await retained_state(mosquitto)).online

        await wait_for(online_again, what="the host to republish STATE online")


async def test_the_host_reconnects_after_a_broker_restart(mosquitto: Mosquitto) -> None:
    async with running_host(mosquitto) as (host, _), EdgeNode(mosquitto) as edge:
        await edge.birth({"M1": {GOOD_COUNT: 1}})
        mosquitto.stop()
        await wait_for(lambda: not host.connected, what="the host to notice the outage")
        mosquitto.start()
        await wait_for(lambda: host.connected, timeout=15, what="the host to reconnect")
        assert (await retained_state(mosquitto)).online
    assert (await retained_state(mosquitto)).online is False


async def test_shared_ingest_workers_split_data_and_all_see_births(mosquitto: Mosquitto) -> None:
    async with (
        running_host(mosquitto, "worker-a", shared_group="ingest") as (a, queue_a),
        running_host(mosquitto, "worker-b", shared_group="ingest") as (b, queue_b),
        EdgeNode(mosquitto) as edge,
    ):
        await edge.birth({"M1": {GOOD_COUNT: 0}})
        for n in range(1, 41):
            await edge.data("M1", {GOOD_COUNT: n})
        by_a: list[Decimal] = []
        by_b: list[Decimal] = []

        def data(queue: asyncio.Queue[IngestItem]) -> list[Decimal]:
            return [
                i.value for i in taken(queue)
                if isinstance(i, Sample) and isinstance(i.value, Decimal) and i.value != 0
            ]

        def all_counted() -> bool:
            by_a.extend(data(queue_a))
            by_b.extend(data(queue_b))
            return len(by_a) + len(by_b) >= 40

        await wait_for(all_counted, what="40 DDATA samples across the two workers")
        assert a.online_nodes() == b.online_nodes() == {"GW-1": ["M1"]}
        assert a.rebirths_requested == b.rebirths_requested == 0
    assert sorted(by_a + by_b) == [Decimal(n) for n in range(1, 41)]  # each exactly once
    assert by_a
    assert by_b  # both took a share


_HOST_PROCESS = """
import asyncio, sys
from taktline_cloud.host import HostOptions, PrimaryHost

async def main() -> None:
    host = PrimaryHost(HostOptions("127.0.0.1", int(sys.argv[1]), client_id="killed-host"),
                       asyncio.Queue())
    await host.run(asyncio.Event())

asyncio.run(main())
"""


async def test_killed_host_leaves_its_will_state_offline(mosquitto: Mosquitto) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOST_PROCESS, str(mosquitto.port)
    )
    try:

        async def online() -> bool:
            with contextlib.suppress(TimeoutError):
                return (await retained_state(mosquitto, within=0.5)).online
            return False

        await wait_for(online, timeout=20, what="the host process to publish STATE online")
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)

        async def offline() -> bool:
            return not (await retained_state(mosquitto)).online

        await wait_for(offline, what="the broker to publish the host's will")
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
