"""Fuzzed MQTT input: 10 000 seeded bad messages through the host's receive path, good data
interleaved. Nothing crashes, every bad message becomes exactly one dead letter with a reason
(nothing of it reaches the historian), and every good sample is taken in exactly once. A
smaller subset goes over the real broker into the running cloud and out through the API."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taktline_cloud.historian.dead_letters import DeadLetter
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host import HostOptions, IngestItem, NodeStatus, PrimaryHost
from taktline_cloud.host.primary import DEAD_LETTER_KEEP_BYTES
from taktline_contract.metrics import BD_SEQ, GOOD_COUNT, MACHINE_STATE, SCRAP_COUNT
from taktline_contract.sparkplug import DataType, Metric, Payload, encode_payload
from taktline_contract.sparkplug.schema import PayloadMessage
from tests.integration.test_cloud_api import _json, _machine_good, cloud_settings, running_cloud
from tests.integration.test_cloud_host import DEVICE_METRICS, EdgeNode
from tests.support import Mosquitto, wait_for

SEED = 20261124
GROUP = "PLANT-1"
NODE = "GW-1"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
BASE = f"spBv1.0/{GROUP}"
M1_DATA = f"{BASE}/DDATA/{NODE}/M1"
BAD_TYPES = ("XDATA", "ddata", "DDATA1", "NBIRTHX", "", "STATE2", "DCMDX")
SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.äö"


@dataclass(frozen=True, slots=True)
class Fuzz:
    """One bad message and what kind of bad it is."""

    kind: str
    topic: str
    raw: bytes


def _unparseable(raw: bytes) -> bool:
    """True when `raw` cannot be a Sparkplug payload whatever the birth says."""
    message = PayloadMessage()
    try:
        message.ParseFromString(raw)
    except Exception:
        return True
    return not message.HasField("timestamp")


def _data(values: dict[str, int], at: datetime) -> bytes:
    metrics = [
        Metric(None, DEVICE_METRICS[name][1], value, alias=DEVICE_METRICS[name][0])
        for name, value in values.items()
    ]
    return encode_payload(Payload.of(at, metrics))


def _wrong_type(rng: random.Random) -> bytes:
    """Wire-level type mismatches: the declared datatype and the carried value disagree."""
    message = PayloadMessage()
    message.timestamp = 1_764_000_000_000 + rng.randrange(10**6)
    metric = message.metrics.add()
    metric.alias = DEVICE_METRICS[GOOD_COUNT][0]
    choice = rng.randrange(4)
    if choice == 0:
        metric.datatype = int(DataType.UINT32)
        metric.string_value = "not a number"
    elif choice == 1:
        metric.datatype = int(DataType.STRING)
        metric.int_value = rng.randrange(2**32)
    elif choice == 2:
        metric.datatype = 400 + rng.randrange(1000)  # no such datatype
        metric.int_value = 1
    else:
        metric.datatype = int(DataType.UINT16)
        metric.int_value = 70_000 + rng.randrange(10**6)  # out of range
    return bytes(message.SerializeToString())


def fuzz_messages(rng: random.Random, count: int, huge_bytes: int) -> Iterator[Fuzz]:
    """`count` bad messages of every kind, deterministic for one seed."""
    good = _data({GOOD_COUNT: 5, SCRAP_COUNT: 1}, T0)
    for _ in range(count):
        kind = rng.choice(
            ("random", "truncated", "wrong_type", "huge", "alias", "topic", "unborn", "empty")
        )
        if kind == "random":
            raw = rng.randbytes(rng.randrange(1, 300))
            while not _unparseable(raw):
                raw = rng.randbytes(rng.randrange(1, 300))
            topic = rng.choice((M1_DATA, f"{BASE}/NDEATH/{NODE}", f"{BASE}/DBIRTH/{NODE}/M1"))
            yield Fuzz(kind, topic, raw)
        elif kind == "truncated":
            full = _data({GOOD_COUNT: rng.randrange(10**6)}, T0 + timedelta(hours=1))
            cut = rng.randrange(1, len(full))
            while not _unparseable(full[:cut]):
                cut = rng.randrange(1, len(full))
            yield Fuzz(kind, M1_DATA, full[:cut])
        elif kind == "wrong_type":
            yield Fuzz(kind, M1_DATA, _wrong_type(rng))
        elif kind == "huge":
            size = rng.randrange(huge_bytes, huge_bytes * 2)
            metrics = [Metric(None, DataType.STRING, "x" * size, alias=9_000 + rng.randrange(99))]
            yield Fuzz(kind, M1_DATA, encode_payload(Payload.of(T0, metrics)))
        elif kind == "alias":
            metrics = [
                Metric(
                    None, DataType.UINT32, rng.randrange(10**6), alias=100 + rng.randrange(10**6)
                )
            ]
            yield Fuzz(kind, M1_DATA, encode_payload(Payload.of(T0, metrics)))
        elif kind == "topic":
            junk = "".join(rng.choice(SAFE) for _ in range(rng.randrange(0, 12)))
            topic = rng.choice(
                (
                    f"{BASE}/{rng.choice(BAD_TYPES)}/{NODE}/M1",
                    f"{BASE}/DDATA",
                    f"{BASE}/DDATA/{NODE}",  # device data without a device
                    f"{BASE}/DDATA/{NODE}/M1/{junk or 'x'}",
                    f"{BASE}/{junk}",
                    f"{BASE}/NDATA//{junk}",
                )
            )
            yield Fuzz(kind, topic, good)
        elif kind == "unborn":
            node = f"GW-{rng.randrange(2, 10**6)}"
            topic = rng.choice((f"{BASE}/DDATA/{node}/M1", f"{BASE}/NDATA/{node}"))
            if rng.random() < 0.5:
                topic = f"{BASE}/DDATA/{NODE}/M{rng.randrange(4, 10**6)}"
            yield Fuzz(kind, topic, good)
        else:
            yield Fuzz(kind, M1_DATA, b"")


def _good(value: int) -> tuple[bytes, Sample]:
    at = T0 + timedelta(milliseconds=value)
    raw = _data({GOOD_COUNT: value}, at)
    return raw, Sample("M1", GOOD_COUNT, at, Decimal(value))


def _drain(queue: asyncio.Queue[IngestItem]) -> list[IngestItem]:
    items: list[IngestItem] = []
    while not queue.empty():
        item = queue.get_nowait()
        if isinstance(item, list):  # a message's samples come as one item
            items.extend(item)
        else:
            items.append(item)
    return items


async def _born_host(huge_bytes: int) -> tuple[PrimaryHost, asyncio.Queue[IngestItem]]:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    options = HostOptions("127.0.0.1", 1, "fuzz", group_id=GROUP, max_payload_bytes=huge_bytes)
    host = PrimaryHost(options, queue, clock=lambda: T0)
    birth = Payload.of(T0, [Metric(BD_SEQ, DataType.UINT64, 0)])
    assert await host.ingest(f"{BASE}/NBIRTH/{NODE}", encode_payload(birth)) is not None
    metrics = [
        Metric(name, DEVICE_METRICS[name][1], 0, alias=DEVICE_METRICS[name][0])
        for name in (GOOD_COUNT, SCRAP_COUNT, MACHINE_STATE)
    ]
    dbirth = encode_payload(Payload.of(T0, metrics))
    assert await host.ingest(f"{BASE}/DBIRTH/{NODE}/M1", dbirth) is not None
    born = _drain(queue)
    assert not [x for x in born if isinstance(x, DeadLetter)], born
    return host, queue


async def test_ten_thousand_fuzzed_messages_are_dead_lettered_and_good_data_is_exact() -> None:
    rng = random.Random(SEED)
    huge = 16_384
    host, queue = await _born_host(huge)
    kinds: dict[str, int] = {}
    expected: list[Sample] = []
    taken: list[Sample] = []
    for n, fuzz in enumerate(fuzz_messages(rng, 10_000, huge), start=1):
        kinds[fuzz.kind] = kinds.get(fuzz.kind, 0) + 1
        await host.ingest(fuzz.topic, fuzz.raw)  # must not raise, whatever the input
        items = _drain(queue)
        letters = [x for x in items if isinstance(x, DeadLetter)]
        assert len(letters) == 1, (fuzz, items)
        letter = letters[0]
        assert letter.topic == fuzz.topic
        assert letter.reason.strip(), fuzz
        if len(fuzz.raw) > huge:
            assert letter.payload == fuzz.raw[:DEAD_LETTER_KEEP_BYTES]
            assert "exceeds the limit" in letter.reason
        else:
            assert letter.payload == fuzz.raw
        # Nothing of a bad message reaches the historian or the node status.
        assert not [x for x in items if isinstance(x, Sample | NodeStatus)], (fuzz, items)
        if n % 7 == 0:
            raw, sample = _good(n)
            expected.append(sample)
            await host.ingest(M1_DATA, raw)
            good_items = _drain(queue)
            assert not [x for x in good_items if isinstance(x, DeadLetter)], good_items
            taken += [x for x in good_items if isinstance(x, Sample)]
    assert taken == expected
    assert len(expected) == 10_000 // 7
    assert set(kinds) == {
        "random",
        "truncated",
        "wrong_type",
        "huge",
        "alias",
        "topic",
        "unborn",
        "empty",
    }
    assert min(kinds.values()) > 800, kinds
    assert host.messages_rejected == 10_000
    assert host.dead_letters_queued == 10_000
    assert host.dead_letters_lost == 0
    exposed = {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(host.metrics.exposition().decode())
        if family.name == "dead_letters"
        for s in family.samples
        if s.name == "dead_letters_total"
    }
    assert sum(exposed.values()) == 10_000, exposed
    assert set(exposed) <= {"oversize", "rejected", "partial"}, exposed
    assert host.online_nodes() == {NODE: ["M1"]}


@pytest.mark.mosquitto
async def test_fuzz_over_the_broker_lands_in_the_dead_letter_api(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)
    settings = cloud_settings(tmp_path, mosquitto.port)
    fuzzed = list(fuzz_messages(rng, 300, 200_000))
    async with (
        running_cloud(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        EdgeNode(mosquitto) as edge,
    ):
        await wait_for(
            lambda: _json(http.get("/api/health"), "mqtt_connected"), what="the host online"
        )
        await edge.birth({"M1": {GOOD_COUNT: 0, SCRAP_COUNT: 0, MACHINE_STATE: 1}})
        start = datetime.now(UTC)
        last = 0
        for n, fuzz in enumerate(fuzzed, start=1):
            await edge.client.publish(fuzz.topic, fuzz.raw, qos=1, timeout=5)
            if n % 10 == 0:
                last = n
                at = start + timedelta(milliseconds=n)
                await edge.data("M1", {GOOD_COUNT: n}, at=at)
        await wait_for(
            lambda: _machine_good(http, "M1", str(last)), what="the good data", timeout=30
        )

        async def all_letters() -> list[dict[str, object]] | None:
            page = (await http.get("/api/dead-letters", params={"limit": 500})).json()
            items: list[dict[str, object]] = page["items"]
            return items if len(items) >= len(fuzzed) else None

        letters = await wait_for(all_letters, what="every fuzzed message dead-lettered", timeout=30)
        assert letters is not None
        assert len(letters) == len(fuzzed)
        assert [x["topic"] for x in letters] == [f.topic for f in fuzzed]
        assert all(str(x["reason"]).strip() for x in letters)
        health = (await http.get("/api/health")).json()
        assert health["edge_nodes"] == {NODE: ["M1"]}
