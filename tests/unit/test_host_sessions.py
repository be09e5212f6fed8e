"""The primary host's session logic: births, aliases, deaths, rebirth decisions, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.sessions import (
    NodeStatus,
    RebirthLimiter,
    RejectedMessageError,
    SparkplugSessions,
)
from taktline_contract.metrics import BD_SEQ, GOOD_COUNT, MACHINE_STATE, NODE_REBIRTH, TEMPERATURE
from taktline_contract.sparkplug import DataType, Metric, Payload, encode_payload

T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=5)
GROUP = "PLANT-1"


def raw(*metrics: Metric, at: datetime = T0, seq: int | None = 0) -> bytes:
    return encode_payload(Payload.of(at, metrics, seq))


def nbirth(bd_seq: int = 3) -> bytes:
    return raw(
        Metric(BD_SEQ, DataType.UINT64, bd_seq),
        Metric(NODE_REBIRTH, DataType.BOOLEAN, False, alias=0),
    )


def dbirth(good: int = 100) -> bytes:
    return raw(
        Metric(GOOD_COUNT, DataType.UINT32, good, alias=1),
        Metric(MACHINE_STATE, DataType.UINT16, 1, alias=2),
        Metric(TEMPERATURE, DataType.FLOAT, 62.099998474121094, alias=3),
    )


def topic(kind: str, device: str | None = "M1", node: str = "GW-1") -> str:
    tail = f"/{device}" if device else ""
    return f"spBv1.0/{GROUP}/{kind}/{node}{tail}"


def born() -> SparkplugSessions:
    sessions = SparkplugSessions(GROUP)
    sessions.handle(topic("NBIRTH", None), nbirth(), NOW)
    sessions.handle(topic("DBIRTH"), dbirth(), NOW)
    return sessions


def samples(items: list[Sample | NodeStatus]) -> list[Sample]:
    return [item for item in items if isinstance(item, Sample)]


def test_births_mark_node_and_device_online_and_dbirth_values_are_samples() -> None:
    sessions = SparkplugSessions(GROUP)
    node = sessions.handle(topic("NBIRTH", None), nbirth(), NOW)
    assert node.items == [NodeStatus("GW-1", None, True, NOW)]
    assert node.rebirth_reason is None
    device = sessions.handle(topic("DBIRTH"), dbirth(), NOW)
    assert device.items[0] == NodeStatus("GW-1", "M1", True, NOW)
    assert [(s.machine, s.metric, s.value, s.timestamp) for s in samples(device.items)] == [
        ("M1", GOOD_COUNT, Decimal(100), T0),
        ("M1", MACHINE_STATE, Decimal(1), T0),
        ("M1", TEMPERATURE, Decimal("62.1"), T0),
    ]
    assert device.rebirth_reason is None
    assert sessions.online() == {"GW-1": ["M1"]}


def test_ddata_by_alias_uses_the_dbirth_names() -> None:
    sessions = born()
    at = T0 + timedelta(seconds=1)
    own = T0 + timedelta(milliseconds=500)
    outcome = sessions.handle(
        topic("DDATA"),
        raw(
            Metric(None, DataType.UINT32, 101, alias=1),
            Metric(None, DataType.UINT16, 2, alias=2, timestamp=own, is_historical=True),
            at=at,
        ),
        NOW,
    )
    assert outcome.rebirth_reason is None
    assert outcome.items == [
        Sample("M1", GOOD_COUNT, at, Decimal(101)),
        Sample("M1", MACHINE_STATE, own, Decimal(2), is_historical=True),
    ]


def test_ddata_by_name_needs_no_alias() -> None:
    outcome = born().handle(topic("DDATA"), raw(Metric(GOOD_COUNT, DataType.UINT32, 5)), NOW)
    assert samples(outcome.items)[0].metric == GOOD_COUNT
    assert outcome.rebirth_reason is None


def test_unknown_alias_is_dropped_and_asks_for_rebirth_other_metrics_kept() -> None:
    outcome = born().handle(
        topic("DDATA"),
        raw(Metric(None, DataType.UINT32, 9, alias=42), Metric(None, DataType.UINT32, 7, alias=1)),
        NOW,
    )
    assert outcome.edge_node == "GW-1"
    assert outcome.rebirth_reason is not None
    assert "alias 42" in outcome.rebirth_reason
    assert [s.value for s in samples(outcome.items)] == [Decimal(7)]
    assert any("42" in problem for problem in outcome.problems)


def test_a_datatype_other_than_the_births_is_dropped_and_asks_for_rebirth() -> None:
    # GOOD_COUNT was born UINT32; an INT64 by its alias is valid Sparkplug but not that metric.
    outcome = born().handle(
        topic("DDATA"),
        raw(Metric(None, DataType.INT64, -5, alias=1), Metric(None, DataType.UINT16, 2, alias=2)),
        NOW,
    )
    assert outcome.rebirth_reason is not None
    assert "INT64" in outcome.rebirth_reason
    assert "UINT32" in outcome.rebirth_reason
    assert [(s.metric, s.value) for s in samples(outcome.items)] == [(MACHINE_STATE, Decimal(2))]
    assert outcome.problems == [
        f"M1/{GOOD_COUNT}: datatype INT64, but its DBIRTH says UINT32: dropped"
    ]


def test_ddata_without_any_birth_asks_for_rebirth() -> None:
    sessions = SparkplugSessions(GROUP)
    outcome = sessions.handle(topic("DDATA"), raw(Metric(None, DataType.UINT32, 1, alias=1)), NOW)
    assert outcome.items == []
    assert outcome.rebirth_reason is not None
    assert outcome.edge_node == "GW-1"


def test_ddata_from_a_device_without_dbirth_asks_for_rebirth() -> None:
    outcome = born().handle(
        topic("DDATA", "M2"), raw(Metric(None, DataType.UINT32, 1, alias=1)), NOW
    )
    assert outcome.rebirth_reason is not None
    assert "M2" in outcome.rebirth_reason


def test_dbirth_before_nbirth_is_stored_and_asks_for_rebirth() -> None:
    sessions = SparkplugSessions(GROUP)
    outcome = sessions.handle(topic("DBIRTH"), dbirth(), NOW)
    assert len(samples(outcome.items)) == 3
    assert outcome.rebirth_reason is not None


def test_ndata_with_unknown_alias_asks_for_rebirth() -> None:
    sessions = born()
    known = raw(Metric(None, DataType.BOOLEAN, True, alias=0))
    fine = sessions.handle(topic("NDATA", None), known, NOW)
    assert fine.rebirth_reason is None
    assert fine.items == []
    unknown = raw(Metric(None, DataType.BOOLEAN, True, alias=9))
    bad = sessions.handle(topic("NDATA", None), unknown, NOW)
    assert bad.rebirth_reason is not None


def test_nbirth_starts_a_new_session_devices_need_dbirth_again() -> None:
    sessions = born()
    sessions.handle(topic("NBIRTH", None), nbirth(bd_seq=4), NOW)
    outcome = sessions.handle(topic("DDATA"), raw(Metric(None, DataType.UINT32, 1, alias=1)), NOW)
    assert outcome.rebirth_reason is not None


def test_ddeath_marks_the_device_offline_and_forgets_its_aliases() -> None:
    sessions = born()
    failed_at = NOW - timedelta(seconds=3)
    death = sessions.handle(topic("DDEATH"), raw(at=failed_at), NOW)
    # As of the payload's time (when the edge saw the device fail), not when it reached us.
    assert death.items == [NodeStatus("GW-1", "M1", False, failed_at)]
    assert sessions.online() == {"GW-1": []}
    after = sessions.handle(topic("DDATA"), raw(Metric(None, DataType.UINT32, 1, alias=1)), NOW)
    assert after.rebirth_reason is not None


def test_ndeath_with_matching_bdseq_takes_node_and_devices_offline() -> None:
    sessions = born()
    will = raw(Metric(BD_SEQ, DataType.UINT64, 3), seq=None)
    death = sessions.handle(topic("NDEATH", None), will, NOW)
    assert death.items == [
        NodeStatus("GW-1", None, False, NOW),
        NodeStatus("GW-1", "M1", False, NOW),
    ]
    assert sessions.online() == {}


def test_ndeath_of_an_earlier_session_is_ignored() -> None:
    sessions = born()  # bdSeq 3
    will = raw(Metric(BD_SEQ, DataType.UINT64, 2), seq=None)
    stale = sessions.handle(topic("NDEATH", None), will, NOW)
    assert stale.items == []
    assert any("stale" in problem for problem in stale.problems)
    assert sessions.online() == {"GW-1": ["M1"]}


def test_transient_metrics_are_not_historised() -> None:
    outcome = born().handle(
        topic("DDATA"), raw(Metric(None, DataType.UINT32, 1, alias=1, is_transient=True)), NOW
    )
    assert outcome.items == []
    assert outcome.rebirth_reason is None


def test_bytes_metric_is_dropped_with_a_reason() -> None:
    outcome = born().handle(topic("DDATA"), raw(Metric("Blob", DataType.BYTES, b"\x01")), NOW)
    assert outcome.items == []
    assert any("Blob" in problem for problem in outcome.problems)


@pytest.mark.parametrize(
    ("bad_topic", "payload", "reason"),
    [
        ("spBv1.0/PLANT-1/DDATA/GW-1/M1", b"\xff\xff not protobuf", "Sparkplug"),
        ("spBv1.0/PLANT-1/DDATA/GW-1/M1", b"", "timestamp"),
        ("spBv1.0/PLANT-1/BOGUS/GW-1", b"", "unknown Sparkplug message type"),
        ("spBv1.0/PLANT-1/DDATA/GW-1", b"", "must name a device"),
        ("something/else", b"", "not a Sparkplug B topic"),
        ("spBv1.0/OTHER/DDATA/GW-1/M1", b"", "not this host's"),
    ],
)
def test_bad_messages_are_rejected_with_the_reason(
    bad_topic: str, payload: bytes, reason: str
) -> None:
    sessions = born()
    with pytest.raises(RejectedMessageError, match=reason):
        sessions.handle(bad_topic, payload, NOW)
    # ... and the sessions carry on as before.
    assert sessions.online() == {"GW-1": ["M1"]}


def test_commands_and_state_messages_yield_nothing() -> None:
    sessions = born()
    assert sessions.handle(topic("NCMD", None), raw(), NOW).items == []
    assert sessions.handle("spBv1.0/STATE/other-host", b'{"online": true}', NOW).items == []


def test_rebirth_requests_are_rate_limited_per_node() -> None:
    limiter = RebirthLimiter(interval_s=5.0)
    assert limiter.allow("GW-1", 100.0)
    assert not limiter.allow("GW-1", 104.9)
    assert limiter.allow("GW-2", 104.9)
    assert limiter.allow("GW-1", 105.0)


def test_ddata_without_datatypes_is_decoded_with_the_births_datatypes() -> None:
    from taktline_contract.sparkplug.schema import PayloadMessage

    # Sparkplug: only births must carry datatypes; a third-party node may omit them in DDATA.
    message = PayloadMessage(timestamp=int(T0.timestamp() * 1000) + 1000, seq=2)
    by_alias = message.metrics.add(alias=1)
    by_alias.int_value = 107
    by_name = message.metrics.add(name=TEMPERATURE)
    by_name.float_value = 63.5
    sessions = born()
    outcome = sessions.handle(topic("DDATA"), bytes(message.SerializeToString()), NOW)
    assert [(s.metric, s.value) for s in samples(outcome.items)] == [
        (GOOD_COUNT, Decimal(107)),
        (TEMPERATURE, Decimal("63.5")),
    ]
    # without a birth there is nothing to take the datatype from: the message is refused
    with pytest.raises(RejectedMessageError, match="no datatype"):
        SparkplugSessions(GROUP).handle(topic("DDATA"), bytes(message.SerializeToString()), NOW)
