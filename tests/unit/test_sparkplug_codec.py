"""Sparkplug B codec and topic namespace."""

from datetime import UTC, datetime

import pytest

from taktline_contract import PayloadError, TopicError
from taktline_contract.sparkplug import (
    DataType,
    HostState,
    MessageType,
    Metric,
    Payload,
    StateTopic,
    Topic,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    parse_topic,
)

NOW = datetime(2026, 11, 24, 8, 30, 15, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.INT8, -128),
        (DataType.INT16, -2),
        (DataType.INT32, -(2**31)),
        (DataType.INT64, -(2**63)),
        (DataType.UINT16, 65535),
        (DataType.UINT32, 2**32 - 1),
        (DataType.UINT64, 2**64 - 1),
        (DataType.FLOAT, 21.5),
        (DataType.DOUBLE, 1e300),
        (DataType.BOOLEAN, True),
        (DataType.STRING, "达成率 98%"),
        (DataType.BYTES, b"\x00\xff"),
        (DataType.UINT32, None),
    ],
)
def test_metric_values_round_trip(datatype: DataType, value: object) -> None:
    metric = Metric("m", datatype, value, timestamp=NOW, alias=7, is_historical=True)  # type: ignore[arg-type]
    decoded = decode_payload(encode_payload(Payload.of(NOW, [metric], seq=255)))
    assert decoded == Payload(NOW, (metric,), 255)


def test_signed_integers_use_twos_complement_on_the_wire() -> None:
    raw = encode_payload(Payload.of(NOW, [Metric("t", DataType.INT16, -1)]))
    # int_value (field 10, varint) carries 0xFFFFFFFF: five 7-bit groups
    assert bytes([0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) in raw


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.UINT16, 65536),
        (DataType.INT8, 200),
        (DataType.UINT32, -1),
        (DataType.BOOLEAN, 1),
        (DataType.UINT32, True),
        (DataType.STRING, 3),
    ],
)
def test_value_outside_its_datatype_is_refused(datatype: DataType, value: object) -> None:
    with pytest.raises(PayloadError, match="is not a"):
        encode_payload(Payload.of(NOW, [Metric("bad", datatype, value)]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xff\xff", "not a Sparkplug B payload"),
        (b"", "no timestamp"),
        (encode_payload(Payload.of(NOW, [])) + b"\x18\x80\x02", "outside 0..255"),
    ],
)
def test_undecodable_payloads_raise_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_payload(raw)


def test_topics_parse_and_format() -> None:
    topic = parse_topic("spBv1.0/PLANT-1/DDATA/GW-1/M1")
    assert topic == Topic("PLANT-1", MessageType.DDATA, "GW-1", "M1")
    assert str(topic) == "spBv1.0/PLANT-1/DDATA/GW-1/M1"
    assert parse_topic("spBv1.0/STATE/taktline-cloud") == StateTopic("taktline-cloud")
    assert str(Topic("P", MessageType.NBIRTH, "GW")) == "spBv1.0/P/NBIRTH/GW"


@pytest.mark.parametrize(
    "topic",
    [
        "spBv1.0/P/DDATA/GW",
        "spBv1.0/P/NDATA/GW/M1",
        "spAv1.0/P/NDATA/GW",
        "spBv1.0/P/XDATA/GW",
        "spBv1.0/P/DDATA/GW/M1/x",
        "spBv1.0/STATE",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


def test_host_state_round_trips_and_rejects_junk() -> None:
    assert decode_state(encode_state(HostState(True, NOW))) == HostState(True, NOW)
    with pytest.raises(PayloadError):
        decode_state(b"ONLINE")
    with pytest.raises(PayloadError):
        decode_state(b'{"online": "yes", "timestamp": 1}')


def _without_datatype(name: str | None, alias: int | None, int_value: int) -> bytes:
    from taktline_contract.sparkplug.schema import PayloadMessage

    message = PayloadMessage(timestamp=1_764_000_000_000, seq=1)
    metric = message.metrics.add()
    if name is not None:
        metric.name = name
    if alias is not None:
        metric.alias = alias
    metric.int_value = int_value
    return bytes(message.SerializeToString())


def test_a_data_metric_without_datatype_takes_it_from_its_birth() -> None:
    raw = _without_datatype(None, 3, 2**32 - 2)
    births = {3: DataType.INT16}
    payload = decode_payload(raw, lambda name, alias: births.get(alias) if alias else None)
    assert payload.metrics[0].datatype == DataType.INT16
    assert payload.metrics[0].value == -2  # two's complement per the birth's INT16


def test_a_metric_without_datatype_and_no_birth_is_refused_by_name() -> None:
    with pytest.raises(PayloadError, match="alias 9: no datatype"):
        decode_payload(_without_datatype(None, 9, 1))
    with pytest.raises(PayloadError, match="M1/Count: no datatype"):
        decode_payload(_without_datatype("M1/Count", None, 1), lambda name, alias: None)


@pytest.mark.parametrize(
    ("name", "alias", "label"), [("Recipe", None, "Recipe"), (None, 4, "alias 4")]
)
def test_a_datatype_the_codec_does_not_carry_is_a_clear_payload_error(
    name: str | None, alias: int | None, label: str
) -> None:
    from taktline_contract.sparkplug.schema import PayloadMessage

    message = PayloadMessage(timestamp=1_764_000_000_000, seq=1)
    metric = message.metrics.add()
    if name is not None:
        metric.name = name
    if alias is not None:
        metric.alias = alias
    metric.datatype = 16  # DataSet: no Taktline device sends one
    metric.string_value = "x"
    with pytest.raises(PayloadError, match=f"metric {label}: unsupported datatype 16"):
        decode_payload(bytes(message.SerializeToString()))
