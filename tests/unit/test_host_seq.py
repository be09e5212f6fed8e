"""Sparkplug seq tracking in the primary host's sessions: order, wrap, reordering, gaps, rebirth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.sessions import NodeStatus, Outcome, SparkplugSessions
from taktline_contract.metrics import BD_SEQ, GOOD_COUNT
from taktline_contract.sparkplug import DataType, Metric, Payload, encode_payload

T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
GROUP = "PLANT-1"
TIMEOUT_S = 2.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def topic(kind: str, device: str | None = "M1") -> str:
    tail = f"/{device}" if device else ""
    return f"spBv1.0/{GROUP}/{kind}/GW-1{tail}"


def nbirth(seq: int = 0) -> bytes:
    return encode_payload(Payload.of(T0, [Metric(BD_SEQ, DataType.UINT64, 1)], seq))


def dbirth(seq: int) -> bytes:
    return encode_payload(Payload.of(T0, [Metric(GOOD_COUNT, DataType.UINT32, 0, alias=1)], seq))


def ddata(seq: int, good: int) -> bytes:
    """DDATA by alias only, without a datatype: it needs the DBIRTH to be understood."""
    return encode_payload(Payload.of(at(good), [Metric(None, DataType.UINT32, good, alias=1)], seq))


def goods(outcome: Outcome) -> list[Decimal]:
    return [
        item.value
        for item in outcome.items
        if isinstance(item, Sample) and item.metric == GOOD_COUNT and item.value != 0
    ]


def born(*, nbirth_seq: int = 0) -> SparkplugSessions:
    """A node born with `nbirth_seq` and its device M1 born with the next seq."""
    sessions = SparkplugSessions(GROUP, reorder_timeout_s=TIMEOUT_S)
    assert sessions.handle(topic("NBIRTH", None), nbirth(nbirth_seq), at(0)).rebirth_reason is None
    device = sessions.handle(topic("DBIRTH"), dbirth((nbirth_seq + 1) % 256), at(0))
    assert device.rebirth_reason is None
    return sessions


def test_messages_in_order_are_applied_at_once() -> None:
    sessions = born()
    for seq in range(2, 6):
        outcome = sessions.handle(topic("DDATA"), ddata(seq, seq), at(1))
        assert goods(outcome) == [Decimal(seq)]
        assert outcome.rebirth_reason is None
        assert outcome.problems == []
    assert sessions.tick(at(60)) == []


def test_seq_wraps_from_255_to_0() -> None:
    sessions = born(nbirth_seq=253)  # DBIRTH 254
    for seq, good in ((255, 1), (0, 2), (1, 3)):
        outcome = sessions.handle(topic("DDATA"), ddata(seq, good), at(1))
        assert goods(outcome) == [Decimal(good)]
        assert outcome.rebirth_reason is None


def test_a_late_message_within_the_timeout_is_applied_in_order() -> None:
    sessions = born()
    early = sessions.handle(topic("DDATA"), ddata(3, 3), at(1))
    assert early.items == []  # held: 2 is missing
    assert early.rebirth_reason is None
    also_early = sessions.handle(topic("DDATA"), ddata(4, 4), at(1.5))
    assert also_early.items == []
    late = sessions.handle(topic("DDATA"), ddata(2, 2), at(2.5))
    assert goods(late) == [Decimal(2), Decimal(3), Decimal(4)]
    assert late.rebirth_reason is None
    assert sessions.tick(at(60)) == []  # nothing left held
    assert goods(sessions.handle(topic("DDATA"), ddata(5, 5), at(3))) == [Decimal(5)]


def test_a_missing_dbirth_that_arrives_late_makes_the_held_data_understood() -> None:
    sessions = SparkplugSessions(GROUP, reorder_timeout_s=TIMEOUT_S)
    sessions.handle(topic("NBIRTH", None), nbirth(), at(0))
    # DDATA 2 overtook DBIRTH 1 and may not decode as-is (no datatype without its birth).
    sessions.handle(topic("DDATA"), ddata(2, 7), at(0.5))
    outcome = sessions.handle(topic("DBIRTH"), dbirth(1), at(1))
    assert outcome.items[0] == NodeStatus("GW-1", "M1", True, at(1))
    assert goods(outcome) == [Decimal(7)]
    assert outcome.rebirth_reason is None
    assert outcome.problems == []


def test_a_gap_past_the_timeout_found_by_tick_asks_for_rebirth_and_keeps_the_data() -> None:
    sessions = born()
    assert sessions.handle(topic("DDATA"), ddata(4, 4), at(1)).items == []
    assert sessions.handle(topic("DDATA"), ddata(5, 5), at(1.5)).items == []
    assert sessions.tick(at(2.9)) == []  # still within the timeout of the first held message
    [outcome] = sessions.tick(at(3))
    assert outcome.edge_node == "GW-1"
    assert outcome.rebirth_reason == "seq gap: expected 2, got 4"
    assert goods(outcome) == [Decimal(4), Decimal(5)]
    assert sessions.tick(at(60)) == []
    # Counting continues after what was applied; the missing one, if it ever comes, is kept.
    assert goods(sessions.handle(topic("DDATA"), ddata(6, 6), at(4))) == [Decimal(6)]
    straggler = sessions.handle(topic("DDATA"), ddata(2, 2), at(5))
    assert goods(straggler) == [Decimal(2)]
    assert straggler.rebirth_reason is None


def test_a_gap_past_the_timeout_found_by_a_later_message_asks_for_rebirth() -> None:
    sessions = born()
    sessions.handle(topic("DDATA"), ddata(3, 3), at(1))
    outcome = sessions.handle(topic("DDATA"), ddata(4, 4), at(3.5))
    assert outcome.rebirth_reason == "seq gap: expected 2, got 3"
    assert goods(outcome) == [Decimal(3), Decimal(4)]


def test_a_gap_across_the_wrap_names_the_right_seqs() -> None:
    sessions = born(nbirth_seq=253)  # next expected: 255
    sessions.handle(topic("DDATA"), ddata(1, 1), at(1))
    [outcome] = sessions.tick(at(10))
    assert outcome.rebirth_reason == "seq gap: expected 255, got 1"


def test_a_new_nbirth_resets_the_count_and_applies_what_was_held_first() -> None:
    sessions = born()
    sessions.handle(topic("DDATA"), ddata(9, 9), at(1))  # held: 2..8 missing
    rebirth = sessions.handle(topic("NBIRTH", None), nbirth(0), at(1.5))
    assert rebirth.rebirth_reason is None
    # The held message belongs to the old session: it comes before the new birth's status.
    assert goods(rebirth) == [Decimal(9)]
    assert rebirth.items[-1] == NodeStatus("GW-1", None, True, at(1.5))
    assert sessions.tick(at(60)) == []
    assert sessions.handle(topic("DBIRTH"), dbirth(1), at(2)).rebirth_reason is None
    outcome = sessions.handle(topic("DDATA"), ddata(2, 2), at(2))
    assert goods(outcome) == [Decimal(2)]
    assert outcome.rebirth_reason is None


def test_ndeath_applies_what_was_held_and_stops_counting() -> None:
    sessions = born()
    sessions.handle(topic("DDATA"), ddata(5, 5), at(1))
    death = sessions.handle(
        topic("NDEATH", None),
        encode_payload(Payload.of(T0, [Metric(BD_SEQ, DataType.UINT64, 1)])),
        at(1.2),
    )
    assert goods(death) == [Decimal(5)]
    assert NodeStatus("GW-1", None, False, at(1.2)) in death.items
    assert death.rebirth_reason is None
    assert sessions.tick(at(60)) == []


def test_without_a_reorder_timeout_seq_is_not_checked() -> None:
    sessions = SparkplugSessions(GROUP)
    sessions.handle(topic("NBIRTH", None), nbirth(), at(0))
    sessions.handle(topic("DBIRTH"), dbirth(1), at(0))
    outcome = sessions.handle(topic("DDATA"), ddata(40, 4), at(1))
    assert goods(outcome) == [Decimal(4)]
    assert outcome.rebirth_reason is None
    assert sessions.tick(at(60)) == []


def test_a_replayed_message_is_applied_outside_the_sequence() -> None:
    sessions = born()
    replayed = sessions.handle(topic("DDATA"), ddata(40, 4), at(1), check_seq=False)
    assert goods(replayed) == [Decimal(4)]
    assert sessions.tick(at(60)) == []
    assert goods(sessions.handle(topic("DDATA"), ddata(2, 2), at(2))) == [Decimal(2)]
