"""Our Sparkplug B bytes, decoded by an independent tool: Debian's protoc with the spec's schema."""

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taktline_contract.sparkplug import DataType, Metric, Payload, decode_payload, encode_payload
from tests.support import missing_service

HERE = Path(__file__).parent
NOW = datetime(2026, 11, 24, 8, 0, 0, 250000, tzinfo=UTC)


def _protoc() -> str:
    path = shutil.which("protoc")
    if path is None:
        missing_service("protoc (Debian package protobuf-compiler)")
    assert path is not None
    return path


def _run_protoc(*args: str, data: bytes) -> str:
    result = subprocess.run(
        [_protoc(), f"--proto_path={HERE}", *args],
        input=data,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_protoc_decodes_our_payload_with_the_specification_schema() -> None:
    payload = Payload.of(
        NOW,
        [
            Metric("Production/GoodCount", DataType.UINT32, 4_000_000_000, timestamp=NOW, alias=1),
            Metric("Production/State", DataType.INT16, -3, alias=2, is_historical=True),
            Metric("Process/Temperature", DataType.FLOAT, 61.5, alias=3),
            Metric("bdSeq", DataType.UINT64, 7),
            Metric("Node Control/Rebirth", DataType.BOOLEAN, False),
        ],
        seq=17,
    )
    text = _run_protoc(
        "--decode=org.eclipse.tahu.protobuf.Payload",
        "sparkplug_b.proto",
        data=encode_payload(payload),
    )
    assert f"timestamp: {int(NOW.timestamp() * 1000)}" in text
    assert "seq: 17" in text
    assert 'name: "Production/GoodCount"' in text
    assert "int_value: 4000000000" in text
    assert "datatype: 7" in text
    assert "int_value: 4294967293" in text  # INT16 -3, two's complement in the uint32 field
    assert "is_historical: true" in text
    assert "float_value: 61.5" in text
    assert "long_value: 7" in text
    assert "boolean_value: false" in text


def test_we_decode_what_protoc_encodes_from_text() -> None:
    text = (
        "timestamp: 1764000000000 seq: 3 "
        'metrics { name: "Production/ScrapCount" alias: 9 datatype: 7 int_value: 12 } '
        "metrics { alias: 4 datatype: 9 float_value: 20.25 is_historical: true }"
    )
    result = subprocess.run(
        [
            _protoc(),
            f"--proto_path={HERE}",
            "--encode=org.eclipse.tahu.protobuf.Payload",
            "sparkplug_b.proto",
        ],
        input=text.encode(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    payload = decode_payload(result.stdout)
    assert payload.seq == 3
    assert payload.metrics[0] == Metric("Production/ScrapCount", DataType.UINT32, 12, alias=9)
    assert payload.metrics[1] == Metric(None, DataType.FLOAT, 20.25, alias=4, is_historical=True)


@pytest.mark.parametrize("kind", [DataType.UINT32, DataType.INT32])
def test_protoc_raw_decode_shows_field_numbers_of_the_specification(kind: DataType) -> None:
    raw = _run_protoc(
        "--decode_raw", data=encode_payload(Payload.of(NOW, [Metric("x", kind, 5)], seq=1))
    )
    # Payload.metrics = 2, Metric.name = 1, .datatype = 4, .int_value = 10; Payload.seq = 3
    assert f'2 {{\n  1: "x"\n  4: {int(kind)}\n  10: 5\n}}' in raw
    assert "3: 1" in raw
