"""The primary host on the embedded amqtt broker (the demo's default): same code, MQTT 3.1.1."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from taktline.broker import embedded_broker
from taktline_cloud.historian.samples import Sample
from taktline_contract.metrics import GOOD_COUNT
from tests.integration.test_cloud_host import EdgeNode, retained_state, running_host, taken
from tests.support import Mosquitto, wait_for


async def test_host_ingests_and_keeps_state_on_the_embedded_broker() -> None:
    async with embedded_broker() as endpoint:
        broker = cast(Mosquitto, endpoint)  # the helpers only need .host and .port
        collected: list[Any] = []
        async with running_host(broker) as (host, queue), EdgeNode(broker) as edge:
            assert (await retained_state(broker)).online
            await edge.birth({"M1": {GOOD_COUNT: 10}})
            await edge.data("M1", {GOOD_COUNT: 11})

            def got_it() -> bool:
                collected.extend(taken(queue))
                return any(isinstance(i, Sample) and i.value == Decimal(11) for i in collected)

            await wait_for(got_it, what="the sample through amqtt")
            assert host.online_nodes() == {"GW-1": ["M1"]}
        assert not (await retained_state(broker)).online
