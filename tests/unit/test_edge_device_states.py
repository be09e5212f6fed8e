"""Device states of the Sparkplug edge node: when a failed device's DDEATH and DBIRTH are due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taktline_contract.sparkplug import DataType
from taktline_edge.device_states import DeviceState, DeviceStates
from taktline_edge.outbox import Sample, StoredSample

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _row(row_id: int, device: str = "M1", historical: bool = False) -> StoredSample:
    stamp = T0 + timedelta(milliseconds=row_id)
    return StoredSample(row_id, Sample(device, "Good", stamp, row_id, DataType.UINT32), historical)


def _read(states: DeviceStates, historical: bool, ids: list[int], limit: int = 10) -> None:
    number = states.reading()
    states.read(number, historical, [_row(i) for i in ids], limit)


def _born(*devices: str) -> DeviceStates:
    states = DeviceStates(devices)
    states.node_born()
    return states


def test_devices_are_unborn_until_the_node_birth() -> None:
    states = DeviceStates(["M1", "M2"])
    assert states.state("M1") == DeviceState.UNBORN
    states.availability("M2", False, T0)
    states.node_born()
    assert states.state("M1") == DeviceState.BORN
    # Down at the birth: born (the host learns its metrics), then dying at once.
    assert states.state("M2") == DeviceState.DYING
    states.node_dead()
    assert states.state("M1") == DeviceState.UNBORN


def test_a_failed_device_dies_once_both_streams_are_read_past_its_rows() -> None:
    states = _born("M1", "M2")
    states.stored("M1", [1, 2, 3])
    states.stored("M2", [4, 5])
    states.availability("M1", False, T0)
    assert states.state("M1") == DeviceState.DYING
    assert states.due_deaths() == []
    _read(states, False, [1, 2, 3], limit=3)  # a full read short of row 5
    assert states.due_deaths() == []
    _read(states, False, [4, 5], limit=3)
    assert states.due_deaths() == []  # the backlog is still to be read
    _read(states, True, [], limit=3)
    assert states.due_deaths() == [("M1", T0)]
    # Its rows were publishable until its DDEATH.
    assert states.publishable(_row(3))
    states.died("M1")
    assert states.state("M1") == DeviceState.DEAD
    assert not states.publishable(_row(6))
    assert states.publishable(_row(7, "M2"))
    assert states.due_deaths() == []


def test_a_read_started_before_the_failure_does_not_count_as_complete() -> None:
    states = _born("M1")
    states.stored("M1", [1])
    early = states.reading()
    states.availability("M1", False, T0)
    states.read(early, False, [], 10)  # complete, but it may have missed row 1
    _read(states, True, [])
    assert states.due_deaths() == []
    _read(states, False, [1])
    assert states.due_deaths() == [("M1", T0)]


def test_with_nothing_stored_the_streams_must_be_read_to_their_end() -> None:
    states = _born("M1")
    states.availability("M1", False, T0)
    _read(states, False, [7, 8], limit=2)  # rows from before a restart, more to come
    _read(states, True, [])
    assert states.due_deaths() == []
    _read(states, False, [9], limit=2)
    assert [d for d, _ in states.due_deaths()] == ["M1"]


def test_a_device_back_before_its_death_is_simply_alive() -> None:
    states = _born("M1")
    states.stored("M1", [1])
    states.availability("M1", False, T0)
    states.availability("M1", True, T0 + timedelta(seconds=1))
    _read(states, False, [1])
    _read(states, True, [])
    assert states.due_deaths() == []
    assert states.state("M1") == DeviceState.BORN
    assert states.due_births() == []


def test_a_dead_device_back_is_born_again_and_its_waiting_rows_are_historical() -> None:
    states = _born("M1", "M2")
    states.availability("M1", False, T0)
    _read(states, False, [])
    _read(states, True, [])
    states.died("M1")
    states.stored("M1", [10, 11])  # stored while dead (e.g. a late OPC UA notification)
    states.stored("M2", [12])
    assert states.due_births() == []
    states.availability("M1", True, T0 + timedelta(seconds=5))
    assert states.due_births() == ["M1"]
    states.reborn("M1")
    assert states.state("M1") == DeviceState.BORN
    assert states.due_births() == []
    assert states.publishable(_row(10))
    assert states.historical(_row(11))
    assert not states.historical(_row(12, "M2")), "other devices' rows are untouched"
    states.stored("M1", [13])
    assert not states.historical(_row(13)), "rows after the DBIRTH are live"
    assert states.historical(_row(14, historical=True))
    # A node birth marks every waiting row historical in the outbox itself: the marks go.
    states.node_born()
    assert not states.historical(_row(11))


def test_a_device_unknown_to_the_node_is_ignored() -> None:
    states = _born("M1")
    states.availability("M9", False, T0)
    assert states.publishable(_row(1, "M9"))
    assert states.due_deaths() == []
