"""The OPC UA driver's pure parts: write checks, timestamps, quality, the config's rules.

The network side (subscriptions, reconnects, security, writes on a server) is in
tests/integration/test_edge_opcua.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from pydantic import ValidationError

from taktline_contract.sparkplug import DataType
from taktline_edge.config import OpcUaConfig, OpcUaTag, OpcUaTagConfig
from taktline_edge.drivers import opcua
from taktline_edge.drivers.opcua import OpcUaSource, sample_time, split_items, write_variant
from taktline_edge.errors import CommandError
from taktline_edge.outbox import Sample

ENDPOINT = "opc.tcp://127.0.0.1:4840/"
T0 = datetime(2026, 3, 1, 8, 0, 0, 123_456, tzinfo=UTC)


def _tag(datatype: DataType, **fields: Any) -> OpcUaTag:
    return OpcUaTag("Speed", "ns=2;s=Speed", datatype, writable=True, **fields)


# --- writes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value", "expected", "variant"),
    [
        (DataType.BOOLEAN, True, True, ua.VariantType.Boolean),
        (DataType.UINT16, 150, 150, ua.VariantType.UInt16),
        (DataType.UINT16, 150.0, 150, ua.VariantType.UInt16),
        (DataType.INT8, Decimal("-128"), -128, ua.VariantType.SByte),
        (DataType.UINT64, 2**64 - 1, 2**64 - 1, ua.VariantType.UInt64),
        (DataType.DOUBLE, 12, 12.0, ua.VariantType.Double),
        (DataType.FLOAT, Decimal("0.5"), 0.5, ua.VariantType.Float),
    ],
)
def test_a_value_is_written_as_the_tags_variant_type(
    datatype: DataType, value: object, expected: object, variant: ua.VariantType
) -> None:
    written = write_variant(_tag(datatype), value)
    assert (written.Value, type(written.Value), written.VariantType) == (
        expected,
        type(expected),
        variant,
    )


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        (DataType.BOOLEAN, 1, "1 is not a Boolean"),
        (DataType.BOOLEAN, "true", "'true' cannot be written to a BOOLEAN tag"),
        (DataType.UINT16, None, "None cannot be written"),
        (DataType.UINT16, b"\x01", "cannot be written"),
        (DataType.UINT16, False, "False is not a number"),
        (DataType.UINT16, 2.5, "2.5 is not a whole number"),
        (DataType.UINT16, 65536, "outside the UINT16 range 0..65535"),
        (DataType.INT16, -32769, "outside the INT16 range -32768..32767"),
        (DataType.UINT32, -1, "outside the UINT32 range"),
        (DataType.UINT64, 10**400, "outside the UINT64 range"),
        (DataType.DOUBLE, float("nan"), "not a finite number"),
        (DataType.DOUBLE, Decimal("Infinity"), "not a finite number"),
        (DataType.FLOAT, 1e39, "outside the Float range"),
        (DataType.DOUBLE, [1.0], "is not a number"),
    ],
)
def test_a_value_that_does_not_fit_the_type_is_refused(
    datatype: DataType, value: object, message: str
) -> None:
    with pytest.raises(CommandError, match=r"^Speed: ") as refused:
        write_variant(_tag(datatype), value)
    assert message in str(refused.value)


def test_the_engineering_range_is_inclusive_and_exact() -> None:
    tag = _tag(DataType.DOUBLE, min=Decimal("-0.5"), max=Decimal("0.1"))
    assert write_variant(tag, 0.1).Value == 0.1  # 0.1 as written, not its binary expansion
    assert write_variant(tag, Decimal("-0.5")).Value == -0.5
    with pytest.raises(CommandError, match=r"0\.10001 is above the tag's maximum 0\.1$"):
        write_variant(tag, 0.10001)
    with pytest.raises(CommandError, match=r"-1 is below the tag's minimum -0\.5$"):
        write_variant(tag, -1)


# --- timestamps and quality ------------------------------------------------------------------


def test_the_source_timestamp_wins_then_the_servers_then_arrival() -> None:
    now = T0 + timedelta(seconds=5)
    server = T0 + timedelta(seconds=1)
    both = ua.DataValue(SourceTimestamp=T0, ServerTimestamp=server)  # type: ignore[arg-type]
    assert sample_time(both, now) == T0.replace(microsecond=123_000)
    assert sample_time(ua.DataValue(ServerTimestamp=server), now) == server.replace(  # type: ignore[arg-type]
        microsecond=123_000
    )
    assert sample_time(ua.DataValue(), now) == now.replace(microsecond=123_000)
    # OPC UA's "no time" (1601-01-01) is not a time.
    never = datetime(1601, 1, 1, tzinfo=UTC)
    assert sample_time(ua.DataValue(SourceTimestamp=never), now) == now.replace(  # type: ignore[arg-type]
        microsecond=123_000
    )
    naive = ua.DataValue(SourceTimestamp=T0.replace(tzinfo=None))  # type: ignore[arg-type]
    assert sample_time(naive, now).tzinfo is UTC


class Stored:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    async def __call__(self, device: str, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)


def _source(*tags: OpcUaTag) -> OpcUaSource:
    return OpcUaSource("D1", OpcUaConfig(endpoint=ENDPOINT), tags, Stored())


def _item(handle: int, value: Any, kind: ua.VariantType, stamp: datetime, status: int = 0) -> Any:
    data_value = ua.DataValue(
        ua.Variant(value, kind),
        ua.StatusCode(status),  # type: ignore[arg-type]
        SourceTimestamp=stamp,  # type: ignore[arg-type]
    )
    return ua.MonitoredItemNotification(ClientHandle=handle, Value=data_value)


def _queued(source: OpcUaSource) -> list[tuple[str, datetime, object]]:
    return [(s.metric, s.timestamp, s.value) for s in source._pending]


def test_bad_is_null_uncertain_keeps_its_value_and_a_wrong_type_is_null() -> None:
    count = OpcUaTag("Count", "ns=2;s=Count", DataType.UINT32)
    temp = OpcUaTag("Temp", "ns=2;s=Temp", DataType.DOUBLE)
    source = _source(count, temp)
    t1 = T0.replace(microsecond=0)
    source._data_changes(
        [
            _item(0, 7, ua.VariantType.UInt32, t1, ua.StatusCodes.BadSensorFailure),
            _item(1, 61.5, ua.VariantType.Double, t1, ua.StatusCodes.UncertainLastUsableValue),
            _item(0, "seven", ua.VariantType.String, t1 + timedelta(seconds=1)),
            _item(99, 1, ua.VariantType.UInt32, t1),  # not ours: ignored
        ]
    )
    assert _queued(source) == [
        ("Count", t1, None),
        ("Temp", t1, 61.5),
        ("Count", t1 + timedelta(seconds=1), None),
    ]
    assert (source.status.bad, source.status.uncertain, source.status.notifications) == (1, 1, 4)
    assert source.current["Temp"].value == 61.5


def test_a_repeated_sample_is_skipped_and_a_same_millisecond_change_moves_on() -> None:
    count = OpcUaTag("Count", "ns=2;s=Count", DataType.UINT32)
    source = _source(count)
    t1 = T0.replace(microsecond=5_000)
    source._data_changes([_item(0, 7, ua.VariantType.UInt32, t1)])
    # After a reconnect the server sends the current value again, with its old timestamp.
    source._data_changes([_item(0, 7, ua.VariantType.UInt32, t1 + timedelta(microseconds=400))])
    # Two values within one millisecond: the second moves 1 ms on (one sample per key).
    source._data_changes([_item(0, 8, ua.VariantType.UInt32, t1 + timedelta(microseconds=600))])
    # An older source timestamp (a backfill) is kept as it is.
    source._data_changes([_item(0, 6, ua.VariantType.UInt32, t1 - timedelta(seconds=10))])
    assert _queued(source) == [
        ("Count", t1, 7),
        ("Count", t1 + timedelta(milliseconds=1), 8),
        ("Count", t1 - timedelta(seconds=10), 6),
    ]


def test_a_full_queue_drops_new_samples_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opcua, "QUEUE_LIMIT", 2)
    count = OpcUaTag("Count", "ns=2;s=Count", DataType.UINT32)
    source = _source(count)
    source._data_changes(
        [_item(0, v, ua.VariantType.UInt32, T0 + timedelta(seconds=v)) for v in range(5)]
    )
    assert [value for _, _, value in _queued(source)] == [0, 1]
    assert source.status.dropped == 3
    assert source.current["Count"].value == 4, "current still follows the server"


def test_split_items_caps_each_subscription() -> None:
    assert [list(g) for g in split_items(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="at least one item"):
        split_items([1], 0)


# --- config ----------------------------------------------------------------------------------


def _config(**fields: Any) -> OpcUaConfig:
    return OpcUaConfig(endpoint=ENDPOINT, **fields)


def test_authentication_defaults_to_username_when_one_is_given() -> None:
    assert _config().user_identity == "anonymous"
    assert _config(username="edge").user_identity == "username"
    secure = {"security_policy": "Basic256Sha256", "security_mode": "Sign"}
    certificate = _config(**secure, certificate_dir=Path("pki"), authentication="certificate")
    assert certificate.user_identity == "certificate"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"authentication": "username"}, "authentication username needs a username"),
        (
            {"authentication": "anonymous", "username": "edge"},
            "username is for authentication username, not anonymous",
        ),
        (
            {"authentication": "certificate"},
            "authentication certificate needs security_policy Basic256Sha256",
        ),
        (
            {
                "authentication": "certificate",
                "security_policy": "Basic256Sha256",
                "security_mode": "Sign",
                "user_certificate": Path("u.der"),
                "certificate_dir": Path("pki"),
            },
            "user_certificate and user_private_key go together",
        ),
        (
            {"user_certificate": Path("u.der"), "user_private_key": Path("u.pem")},
            "user_certificate is for authentication certificate",
        ),
        ({"security_policy": "Basic256Sha256", "security_mode": "None"}, "must both be None"),
        (
            {"security_policy": "Basic256Sha256", "security_mode": "Sign"},
            "certificate_dir is required with a security policy",
        ),
    ],
)
def test_an_inconsistent_security_setting_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(**fields)


def test_write_limits_belong_to_writable_numeric_tags() -> None:
    tag = OpcUaTagConfig(
        metric="Speed", node_id="ns=2;s=Speed", type="UInt16", writable=True, min=0, max=200
    ).to_tag()
    assert (tag.writable, tag.min, tag.max) == (True, Decimal(0), Decimal(200))
    assert (
        OpcUaTagConfig(metric="Count", node_id="i=2258", type="UInt32").to_tag().writable is False
    )
    for fields, message in [
        ({"type": "UInt16", "max": 5}, "the tag must be writable"),
        ({"type": "Boolean", "writable": True, "min": 0}, "a Boolean tag cannot have min or max"),
        ({"type": "Double", "writable": True, "min": 5, "max": 1}, "min 5 is above max 1"),
    ]:
        with pytest.raises(ValidationError, match=message):
            OpcUaTagConfig(metric="Speed", node_id="ns=2;s=Speed", **fields)
