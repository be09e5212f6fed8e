"""The OPC UA source against the simulated plant's asyncua server, over real sockets.

Samples go into a real outbox (SQLite). Covered: subscriptions split by
max_items_per_subscription with the requested parameters, source timestamps, a Bad status as a
null sample, reconnect and re-subscribe after the server restarts on the same port, security
None / Sign / SignAndEncrypt with Basic256Sha256, username and X.509 user authentication, the
agent's own application certificate, and writes with every way they can be refused.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from taktline_contract.backoff import Backoff
from taktline_edge.cancellation import task_group
from taktline_edge.config import OpcUaConfig, OpcUaTagConfig
from taktline_edge.drivers.opcua import (
    CERTIFICATE_FILE,
    KEY_FILE,
    OpcUaSource,
    application_uri,
    ensure_certificate,
)
from taktline_edge.errors import CommandError, DriverError
from taktline_edge.outbox import AsyncOutbox, Outbox, Sample
from taktline_simulators.config import load_config as load_sim_config
from taktline_simulators.machine import LineModel
from taktline_simulators.opcua_server import OpcUaPlant, Security, serve_opcua
from tests.conftest import CONFIG
from tests.support import free_port, wait_for

VARIABLES = {
    "GoodCount": "UInt32",
    "ScrapCount": "UInt32",
    "State": "UInt16",
    "CycleTimeMs": "UInt32",
    "Temperature": "Double",
}
DEVICE = "Line1"


def _model() -> LineModel:
    return LineModel(load_sim_config(CONFIG / "simulators.yaml"))


class OutboxSink:
    """The agent's durable sink: a real SQLite outbox."""

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path)
        self._async = AsyncOutbox(self.outbox)

    async def __call__(self, device: str, samples: Sequence[Sample]) -> None:
        await self._async.append(samples)

    def samples(self, metric: str | None = None) -> list[Sample]:
        rows = self.outbox.oldest(1_000_000)
        return [r.sample for r in rows if metric is None or r.sample.metric == metric]


@pytest.fixture
def sink(tmp_path: Path) -> OutboxSink:
    return OutboxSink(tmp_path / "outbox.db")


def _tags(plant: OpcUaPlant, model: LineModel, **extra: dict[str, Any]) -> list[Any]:
    """Every machine's five variables (metric ``<machine>/<variable>``), plus `extra` tags."""
    tags = [
        OpcUaTagConfig(
            metric=f"{m.id}/{name}",
            node_id=plant.node_id(m.id, name),
            type=kind,  # type: ignore[arg-type]
            deadband=Decimal("0.5") if name == "Temperature" else None,
        ).to_tag()
        for m in model.machines
        for name, kind in VARIABLES.items()
    ]
    for metric, fields in extra.items():
        tags.append(OpcUaTagConfig(metric=metric, **fields).to_tag())
    return tags


def _source(
    endpoint: str,
    tags: Sequence[Any],
    sink: OutboxSink,
    password: str | None = None,
    **config: Any,
) -> OpcUaSource:
    settings: dict[str, Any] = {
        "publishing_interval_ms": 100,
        "sampling_interval_ms": 50,
        "timeout_s": 2.0,
        **config,
    }
    return OpcUaSource(
        DEVICE,
        OpcUaConfig(endpoint=endpoint, **settings),
        tags,
        sink,
        password=password,
        backoff=Backoff(initial=0.1, maximum=0.5),
    )


@contextlib.asynccontextmanager
async def running(source: OpcUaSource) -> AsyncIterator[OpcUaSource]:
    """Run `source` for the block's duration, in a task group (errors surface here)."""
    async with task_group() as tasks:
        task = tasks.create_task(source.run(), name="source under test")
        try:
            yield source
        finally:
            task.cancel()


def _server_subscriptions(plant: OpcUaPlant) -> list[Any]:
    return list(plant.server.iserver.subscription_service.subscriptions.values())


async def test_changes_arrive_on_split_subscriptions_with_source_timestamps(
    sink: OutboxSink,
) -> None:
    model = _model()
    async with serve_opcua(model, port=free_port(), controls=True) as plant:
        m1 = model.machines[0].id
        speed = {"node_id": plant.node_id(m1, "SpeedPct"), "type": "UInt16", "writable": True}
        tags = _tags(plant, model, **{f"{m1}/SpeedPct": speed})
        source = _source(plant.endpoint, tags, sink, max_items_per_subscription=4, queue_size=3)
        async with running(source):
            await wait_for(lambda: source.status.available, 10, what="available")
            expected = -(-len(tags) // 4)
            assert (source.status.subscriptions, source.status.monitored_items) == (
                expected,
                len(tags),
            )
            # The server's view: that many subscriptions, none over the cap, our parameters.
            subscriptions = _server_subscriptions(plant)
            assert len(subscriptions) == expected
            items = [
                item
                for s in subscriptions
                for item in s.monitored_item_srv._monitored_items.values()
            ]
            assert all(len(s.monitored_item_srv._monitored_items) <= 4 for s in subscriptions)
            assert len(items) == len(tags)
            assert {s.data.RevisedPublishingInterval for s in subscriptions} == {100.0}
            assert {i.queue_size for i in items} == {3}
            deadbands = [getattr(i.filter, "DeadbandValue", None) for i in items]
            assert sorted(d for d in deadbands if d is not None) == [0.5] * len(model.machines)

            # Every tag's initial value is stored, then changes as the line produces.
            await wait_for(
                lambda: {s.metric for s in sink.samples()} == {t.metric for t in tags},
                10,
                what="every tag's initial value",
            )
            model.step(60.0)
            good = model.snapshot(m1).good
            assert good > 0
            await wait_for(
                lambda: [s.value for s in sink.samples(f"{m1}/GoodCount")][-1] == good,
                10,
                what=f"GoodCount {good}",
            )
            sample = sink.samples(f"{m1}/GoodCount")[-1]
            async with Client(plant.endpoint) as reader:
                served = await reader.get_node(plant.node_id(m1, "GoodCount")).read_data_value()
                # A source timestamp chosen by a client (an hour ago) comes through as is.
                stamp = datetime.now(UTC).replace(microsecond=123_000) - timedelta(hours=1)
                variant = ua.Variant(150, ua.VariantType.UInt16)
                await reader.get_node(plant.node_id(m1, "SpeedPct")).write_value(
                    ua.DataValue(variant, SourceTimestamp=stamp)  # type: ignore[arg-type]
                )
            assert served.SourceTimestamp is not None
            assert sample.timestamp == served.SourceTimestamp.replace(
                microsecond=served.SourceTimestamp.microsecond // 1000 * 1000
            )
            await wait_for(
                lambda: [s.value for s in sink.samples(f"{m1}/SpeedPct")][-1] == 150,
                10,
                what="SpeedPct 150",
            )
            assert sink.samples(f"{m1}/SpeedPct")[-1].timestamp == stamp
            assert sample.timestamp.tzinfo is UTC


async def test_a_bad_status_is_a_null_sample_until_the_value_is_good_again(
    sink: OutboxSink,
) -> None:
    model = _model()
    async with serve_opcua(model, port=free_port()) as plant:
        m1 = model.machines[0].id
        source = _source(plant.endpoint, _tags(plant, model), sink)
        # (CycleTimeMs: asyncua's server fails on a Bad value of an item with a deadband)
        metric = f"{m1}/CycleTimeMs"
        async with running(source):
            await wait_for(lambda: sink.samples(metric), 10, what="the first cycle time")
            await plant.set_bad(m1, "CycleTimeMs")
            await wait_for(
                lambda: sink.samples(metric)[-1].value is None, 10, what="a null cycle time"
            )
            assert source.status.bad >= 1
            assert source.current[metric].value is None
            assert source.status.available, "a bad value is the tag's problem, not the device's"
            await plant.clear_bad(m1, "CycleTimeMs")
            await wait_for(
                lambda: sink.samples(metric)[-1].value == model.snapshot(m1).cycle_time_ms,
                10,
                what="a cycle time again",
            )


async def test_reconnects_and_subscribes_again_after_the_server_restarts(
    sink: OutboxSink,
) -> None:
    model = _model()
    port = free_port()
    m1 = model.machines[0].id
    metric = f"{m1}/GoodCount"
    changes: list[tuple[str, bool, str | None]] = []
    first_server = contextlib.AsyncExitStack()
    plant = await first_server.enter_async_context(serve_opcua(model, port=port))
    source = _source(plant.endpoint, _tags(plant, model), sink)
    source.on_availability = lambda *change: changes.append(change)
    async with first_server, running(source):
        await wait_for(lambda: source.status.available, 10, what="available")
        first_since = source.status.since
        assert changes == [(DEVICE, True, None)]
        await wait_for(lambda: sink.samples(metric), 10, what="a first GoodCount")
        stored = len(sink.samples())

        await first_server.aclose()  # the server stops; the source runs on
        await wait_for(lambda: source.status.available is False, 10, what="unavailable")
        assert changes[-1][:2] == (DEVICE, False)
        assert changes[-1][2], "a reason"
        assert source.status.since is not None
        assert first_since is not None
        assert source.status.since > first_since

        model.step(60.0)  # production went on while the server was down
        good = model.snapshot(m1).good
        async with serve_opcua(model, port=port) as again:
            await wait_for(lambda: source.status.available, 15, what="available again")
            assert [c[1] for c in changes] == [True, False, True]
            assert source.status.sessions == 2
            assert len(_server_subscriptions(again)) == source.status.subscriptions == 1
            await wait_for(
                lambda: sink.samples(metric)[-1].value == good, 10, what=f"GoodCount {good}"
            )
            # Every (metric, timestamp) is still one sample (the cloud's key).
            keys = [(s.metric, s.timestamp) for s in sink.samples()]
            assert len(keys) == len(set(keys))
            assert len(keys) > stored


# --- security -------------------------------------------------------------------------------


def _certificate_pair(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed certificate (DER) and key (PEM) made with asyncua's helpers."""
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName(socket.gethostname()),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, names, [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


def _one_tag(plant: OpcUaPlant, model: LineModel) -> list[Any]:
    m1 = model.machines[0].id
    return [
        OpcUaTagConfig(
            metric="GoodCount", node_id=plant.node_id(m1, "GoodCount"), type="UInt32"
        ).to_tag()
    ]


async def _available(source: OpcUaSource) -> None:
    async with running(source):
        await wait_for(lambda: source.status.available is not None, 10, what="a verdict")
        assert source.status.available, source.status.last_error
        await wait_for(lambda: "GoodCount" in source.current, 5, what="a value")


async def _refused(source: OpcUaSource) -> str:
    async with running(source):
        await wait_for(lambda: source.status.available is False, 10, what="unavailable")
        assert source.status.last_error is not None
        return source.status.last_error


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_the_agents_own_certificate(
    mode: Security, sink: OutboxSink, tmp_path: Path
) -> None:
    model = _model()
    server_cert, server_key = _certificate_pair(tmp_path / "server", "server", "urn:test:server")
    certificates = tmp_path / "edge-pki"  # does not exist yet: the agent creates it
    async with serve_opcua(
        model,
        port=free_port(),
        security=(mode,),
        certificate=server_cert,
        private_key=server_key,
    ) as plant:
        secure = {
            "security_policy": "Basic256Sha256",
            "security_mode": mode,
            "certificate_dir": certificates,
        }
        source = _source(plant.endpoint, _one_tag(plant, model), sink, **secure)
        await _available(source)
        cert, key = certificates / CERTIFICATE_FILE, certificates / KEY_FILE
        assert cert.is_file()
        assert key.is_file()
        assert key.stat().st_mode & 0o077 == 0, "the key is private"
        created = cert.read_bytes(), key.read_bytes()

        # A second start reuses the certificate (a server trusts one certificate, not each run).
        await _available(_source(plant.endpoint, _one_tag(plant, model), sink, **secure))
        assert (cert.read_bytes(), key.read_bytes()) == created

        # No security, or the other mode: refused before any session, saying what is offered.
        reason = await _refused(_source(plant.endpoint, _one_tag(plant, model), sink))
        assert f"offers no endpoint with security None/None; it offers Basic256Sha256/{mode}" in (
            reason
        )
        other = "SignAndEncrypt" if mode == "Sign" else "Sign"
        reason = await _refused(
            _source(
                plant.endpoint,
                _one_tag(plant, model),
                sink,
                **(secure | {"security_mode": other}),
            )
        )
        assert f"no endpoint with security Basic256Sha256/{other}" in reason


async def test_username_and_password(sink: OutboxSink, tmp_path: Path) -> None:
    model = _model()
    async with serve_opcua(
        model, port=free_port(), users={"operator": "s3cret"}, security=("SignAndEncrypt",)
    ) as plant:
        secure = {
            "security_policy": "Basic256Sha256",
            "security_mode": "SignAndEncrypt",
            "certificate_dir": tmp_path / "pki",
        }
        tags = _one_tag(plant, model)
        await _available(
            _source(plant.endpoint, tags, sink, "s3cret", username="operator", **secure)
        )
        reason = await _refused(
            _source(plant.endpoint, tags, sink, "guess", username="operator", **secure)
        )
        assert "BadUserAccessDenied" in reason
        reason = await _refused(_source(plant.endpoint, tags, sink, **secure))
        assert "does not accept anonymous users; it accepts username" in reason


async def test_x509_user_certificate(sink: OutboxSink, tmp_path: Path) -> None:
    model = _model()
    user_cert, user_key = _certificate_pair(tmp_path / "users", "operator", "urn:test:operator")
    stranger_cert, stranger_key = _certificate_pair(tmp_path / "users", "stranger", "urn:test:x")
    # The agent's own application certificate as its user identity, trusted by the server.
    own = tmp_path / "edge-pki"
    client = Client("opc.tcp://127.0.0.1:4840")
    client.application_uri = application_uri()
    own_cert, _ = await ensure_certificate(client, own)
    async with serve_opcua(
        model,
        port=free_port(),
        security=("Sign",),
        user_certificates=[user_cert, own_cert],
    ) as plant:
        secure = {
            "security_policy": "Basic256Sha256",
            "security_mode": "Sign",
            "certificate_dir": own,
            "authentication": "certificate",
        }
        tags = _one_tag(plant, model)
        await _available(
            _source(
                plant.endpoint,
                tags,
                sink,
                **secure,
                user_certificate=user_cert,
                user_private_key=user_key,
            )
        )
        await _available(_source(plant.endpoint, tags, sink, **secure))
        reason = await _refused(
            _source(
                plant.endpoint,
                tags,
                sink,
                **secure,
                user_certificate=stranger_cert,
                user_private_key=stranger_key,
            )
        )
        assert "BadUserAccessDenied" in reason
        anonymous = secure | {"authentication": "anonymous"}
        reason = await _refused(_source(plant.endpoint, tags, sink, **anonymous))
        assert "does not accept anonymous users; it accepts certificate" in reason


# --- writes ---------------------------------------------------------------------------------


async def test_writes_reach_the_plc_and_refusals_say_why(sink: OutboxSink) -> None:
    model = _model()
    async with serve_opcua(model, port=free_port(), controls=True) as plant:
        m1 = model.machines[0].id
        speed = plant.node_id(m1, "SpeedPct")
        tags = [
            OpcUaTagConfig(
                metric="SpeedPct", node_id=speed, type="UInt16", writable=True, max=Decimal(200)
            ).to_tag(),
            OpcUaTagConfig(
                metric="RunEnabled",
                node_id=plant.node_id(m1, "RunEnabled"),
                type="Boolean",
                writable=True,
            ).to_tag(),
            OpcUaTagConfig(
                metric="GoodCount", node_id=plant.node_id(m1, "GoodCount"), type="UInt32"
            ).to_tag(),
            # The same variable without our range check: the PLC's own check answers.
            OpcUaTagConfig(metric="SpeedRaw", node_id=speed, type="UInt16", writable=True).to_tag(),
            # A tag map that has the type wrong: the server refuses the variant.
            OpcUaTagConfig(
                metric="SpeedWide", node_id=speed, type="UInt32", writable=True
            ).to_tag(),
        ]
        source = _source(plant.endpoint, tags, sink)
        with pytest.raises(DriverError, match="not written, the server is away"):
            await source.write("SpeedPct", 50)
        async with running(source):
            await wait_for(lambda: source.status.available, 10, what="available")
            await source.write("SpeedPct", 150)
            assert model.snapshot(m1).speed_pct == 150
            await wait_for(
                lambda: source.current["SpeedPct"].value == 150, 10, what="150 read back"
            )
            await source.write("SpeedPct", Decimal("120"))
            assert model.snapshot(m1).speed_pct == 120
            await source.write("RunEnabled", False)
            assert model.snapshot(m1).run_enabled is False
            assert source.status.writes == 3

            refusals: list[tuple[str, object, str]] = [
                ("Nope", 1, "Line1 has no metric 'Nope'"),
                ("GoodCount", 5, "Line1/GoodCount is read-only in the tag map"),
                ("SpeedPct", "fast", "'fast' cannot be written to a UINT16 tag"),
                ("SpeedPct", None, "None cannot be written"),
                ("SpeedPct", True, "True is not a number"),
                ("SpeedPct", 1.5, "1.5 is not a whole number"),
                ("SpeedPct", 201, "201 is above the tag's maximum 200"),
                ("SpeedPct", -1, "-1 is outside the UINT16 range 0..65535"),
                ("RunEnabled", 1, "1 is not a Boolean"),
            ]
            for metric, value, message in refusals:
                with pytest.raises(CommandError) as refused:
                    await source.write(metric, value)
                assert message in str(refused.value), (metric, value)
            with pytest.raises(
                DriverError, match=r"refused the write: BadTypeMismatch \(0x80740000\)"
            ):
                await source.write("SpeedWide", 100)
            with pytest.raises(DriverError, match="BadOutOfRange"):
                await source.write("SpeedRaw", 5000)
            assert model.snapshot(m1).speed_pct == 120, "no refused write got through"
            assert source.status.writes == 3
