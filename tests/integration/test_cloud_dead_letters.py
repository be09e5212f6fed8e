"""Dead letters end to end (real broker, SQLite and PostgreSQL): garbage, a truncated protobuf
and a bad topic are listed through the API with their reasons while good data keeps flowing;
data sent before its birth is replayed once the device is born."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from taktline_cloud.errors import Invalid, NotFound
from taktline_cloud.historian.dead_letters import DeadLetter, DeadLetterStore
from taktline_cloud.storage import Database
from taktline_contract.metrics import GOOD_COUNT, MACHINE_STATE, SCRAP_COUNT
from taktline_contract.sparkplug import Metric, Payload, encode_payload
from tests.integration.test_cloud_api import (
    _json,
    _machine_good,
    cloud_settings,
    running_cloud,
)
from tests.integration.test_cloud_host import DEVICE_METRICS, GROUP, EdgeNode
from tests.support import Mosquitto, wait_for

GARBAGE = b"\xff\x00not a protobuf\x9c"


async def _letters(http: httpx.AsyncClient, **params: str) -> list[dict[str, object]]:
    response = await http.get("/api/dead-letters", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


@pytest.mark.mosquitto
async def test_bad_messages_are_dead_lettered_listed_and_replayed(
    mosquitto: Mosquitto, tmp_path: Path, database_url: str
) -> None:
    settings = cloud_settings(tmp_path, mosquitto.port, database_url=database_url)
    async with (
        running_cloud(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        EdgeNode(mosquitto) as edge,
    ):
        await wait_for(
            lambda: _json(http.get("/api/health"), "mqtt_connected"), what="the host online"
        )
        counters = {GOOD_COUNT: 1000, SCRAP_COUNT: 0, MACHINE_STATE: 1}
        await edge.birth({"M1": counters})
        # M2 sends data before its DBIRTH: kept as a dead letter (and a rebirth is asked for).
        early = datetime.now(UTC) + timedelta(seconds=60)
        await edge.data("M2", {GOOD_COUNT: 1050}, at=early)
        await edge.client.publish(edge.topic("DDATA", "M1"), GARBAGE, qos=1)
        # Distinct times: a sample's key is (machine, metric, time).
        truncated = await edge.data("M1", {GOOD_COUNT: 1001}, at=early - timedelta(seconds=50))
        # That good one counts; its truncated copy must not.
        await edge.client.publish(edge.topic("DDATA", "M1"), truncated[:-3], qos=1)
        bad_topic = f"spBv1.0/{GROUP}/BOGUS/GW-1"
        await edge.client.publish(bad_topic, encode_payload_ok(), qos=1)
        await edge.data("M1", {GOOD_COUNT: 1002}, at=early - timedelta(seconds=40))

        await wait_for(lambda: _machine_good(http, "M1", "1002"), what="good data still counted")
        letters = await wait_for(
            lambda: _at_least(http, 4), what="four dead letters listed through the API"
        )
        assert letters is not None
        by_topic = {(str(x["topic"]), str(x["reason"])) for x in letters}
        assert len(letters) == 4, by_topic
        m2 = [x for x in letters if str(x["topic"]).endswith("/M2")]
        assert len(m2) == 1
        assert "without DBIRTH" in str(m2[0]["reason"])
        m1 = [x for x in letters if str(x["topic"]) == edge.topic("DDATA", "M1")]
        assert sorted(base64.b64decode(str(x["payload_base64"])) for x in m1) == sorted(
            [GARBAGE, truncated[:-3]]
        )
        assert all(x["reason"] for x in letters)
        assert all(x["replayed_at"] is None for x in letters)
        bogus = await _letters(http, topic_prefix=bad_topic)
        assert [x["topic"] for x in bogus] == [bad_topic]
        assert "BOGUS" in str(bogus[0]["reason"])

        # Paging: one at a time, oldest first, in the order received.
        first = (await http.get("/api/dead-letters", params={"limit": 1})).json()
        assert first["items"][0]["id"] == letters[0]["id"]
        rest = await _letters(http, after=str(first["next_after"]))
        assert [x["id"] for x in rest] == [x["id"] for x in letters[1:]]
        assert (
            await _letters(http, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
        )

        # Garbage is still garbage: 422 with the reason, not marked.
        garbage_id = next(
            x["id"] for x in m1 if base64.b64decode(str(x["payload_base64"])) == GARBAGE
        )
        refused = await http.post(f"/api/dead-letters/{garbage_id}/replay")
        assert refused.status_code == 422, refused.text
        assert "still rejected" in refused.json()["detail"]
        assert (await http.get(f"/api/dead-letters/{garbage_id}")).json()["replayed_at"] is None
        assert (await http.post("/api/dead-letters/999999/replay")).status_code == 404

        # M2 before its birth: refused while M2 is unborn, taken in once it is.
        m2_id = m2[0]["id"]
        still = await http.post(f"/api/dead-letters/{m2_id}/replay")
        assert still.status_code == 409, still.text
        await edge.send("DBIRTH", "M2", edge_birth_metrics(counters))
        await wait_for(lambda: _machine_good(http, "M2", "1000"), what="M2 born")
        replayed = await http.post(f"/api/dead-letters/{m2_id}/replay")
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["replayed_at"] is not None
        await wait_for(lambda: _machine_good(http, "M2", "1050"), what="the replayed sample")
        again = await http.post(f"/api/dead-letters/{m2_id}/replay")
        assert again.status_code == 409
        assert "replayed at" in again.json()["detail"]
        # Good data was counted once: M1 is where its last good message left it.
        assert await _machine_good(http, "M1", "1002")


async def _at_least(http: httpx.AsyncClient, n: int) -> list[dict[str, object]] | None:
    letters = await _letters(http)
    return letters if len(letters) >= n else None


def encode_payload_ok() -> bytes:
    """A well-formed payload (the topic is what is wrong)."""
    return encode_payload(Payload.of(datetime.now(UTC), []))


def edge_birth_metrics(values: dict[str, int]) -> list[Metric]:
    return [
        Metric(name, DEVICE_METRICS[name][1], value, alias=DEVICE_METRICS[name][0])
        for name, value in values.items()
    ]


def test_store_keeps_raw_bytes_and_filters(database_url: str) -> None:
    raw = bytes(range(256)) * 3  # every byte value, NULs included
    t0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    with Database(database_url) as db:
        store = DeadLetterStore(db)
        assert store.add([]) == 0
        letters = [
            DeadLetter("spBv1.0/P/DDATA/G%_/M1", raw, "undecodable", t0),
            DeadLetter("spBv1.0/P/DDATA/GX1/M1", b"", "empty", t0 + timedelta(minutes=1)),
            DeadLetter("other", b"\x00", "bad topic", t0 + timedelta(minutes=2)),
        ]
        assert store.add(letters) == 3
        everything = store.list()
        assert [(x.topic, x.payload, x.reason, x.received_at) for x in everything] == [
            (x.topic, x.payload, x.reason, x.received_at) for x in letters
        ]
        # A prefix is literal: % and _ are not wildcards.
        assert [x.reason for x in store.list(topic_prefix="spBv1.0/P/DDATA/G%_")] == ["undecodable"]
        assert [x.reason for x in store.list(topic_prefix="spBv1.0/")] == ["undecodable", "empty"]
        window = store.list(since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=2))
        assert [x.reason for x in window] == ["empty"]
        assert [x.reason for x in store.list(after_id=everything[0].id, limit=1)] == ["empty"]
        with pytest.raises(Invalid):
            store.list(since=datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose
        with pytest.raises(Invalid):
            store.list(limit=0)
        marked = store.mark_replayed(everything[1].id, t0 + timedelta(hours=1))
        assert marked.replayed_at == t0 + timedelta(hours=1)
        assert store.get(everything[0].id).replayed_at is None
        with pytest.raises(NotFound):
            store.mark_replayed(10**9, t0)
        with pytest.raises(NotFound):
            store.get(10**9)
        assert store.count() == 3
