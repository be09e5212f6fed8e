"""Sparkplug seq gaps through the real primary host and mosquitto: reordering, then a rebirth."""

from __future__ import annotations

from decimal import Decimal

import pytest

from taktline_cloud.historian.samples import Sample
from taktline_cloud.host import IngestItem
from taktline_contract.metrics import GOOD_COUNT, NODE_REBIRTH
from tests.integration.test_cloud_host import EdgeNode, running_host, taken
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto


def goods(items: list[IngestItem]) -> list[Decimal]:
    return [i.value for i in items if isinstance(i, Sample) and i.value not in (None, 1)]


async def test_a_message_that_overtook_another_is_applied_in_seq_order(
    mosquitto: Mosquitto,
) -> None:
    collected: list[IngestItem] = []
    async with (
        running_host(mosquitto, reorder_timeout_s=30.0) as (host, queue),
        EdgeNode(mosquitto) as edge,
    ):
        await edge.birth({"M1": {GOOD_COUNT: 1}})  # seq 0 and 1
        edge.seq = 3
        await edge.data("M1", {GOOD_COUNT: 3})
        edge.seq = 2
        await edge.data("M1", {GOOD_COUNT: 2})

        def both() -> bool:
            collected.extend(taken(queue))
            return len(goods(collected)) == 2

        await wait_for(both, what="the two DDATA")
        assert goods(collected) == [Decimal(2), Decimal(3)]
        assert host.rebirths_requested == 0


async def test_a_gap_past_the_reorder_timeout_asks_for_a_rebirth_and_keeps_the_data(
    mosquitto: Mosquitto,
) -> None:
    async with (
        running_host(mosquitto, reorder_timeout_s=0.3) as (host, queue),
        EdgeNode(mosquitto) as edge,
    ):
        await edge.birth({"M1": {GOOD_COUNT: 1}})  # seq 0 and 1
        edge.seq = 5  # 2..4 never come
        await edge.data("M1", {GOOD_COUNT: 7})
        command = await edge.next_command()
        assert [(m.name, m.value) for m in command.metrics] == [(NODE_REBIRTH, True)]
        assert host.rebirths_requested == 1
        assert goods(taken(queue)) == [Decimal(7)]


async def test_shared_subscription_workers_do_not_check_seq(mosquitto: Mosquitto) -> None:
    async with (
        running_host(mosquitto, shared_group="ingest", reorder_timeout_s=30.0) as (host, queue),
        EdgeNode(mosquitto) as edge,
    ):
        await edge.birth({"M1": {GOOD_COUNT: 1}})
        edge.seq = 9
        await edge.data("M1", {GOOD_COUNT: 9})
        collected: list[IngestItem] = []

        def arrived() -> bool:
            collected.extend(taken(queue))
            return goods(collected) == [Decimal(9)]

        await wait_for(arrived, what="the DDATA")
        assert host.sessions.tick(host.now()) == []
        assert host.rebirths_requested == 0
