"""The replay window: what the host may have lost is sent again, flagged historical.

A broker's PUBACK is not end to end (a Sparkplug host connects with a clean session), so the
edge keeps acknowledged samples for `replay_window_s` and re-sends the ones of the last window
when its primary host's STATE goes offline, a stale offline included (a host worker died while a
newer online holds), when its broker connection was lost, and when the agent starts again. The
cloud keys samples by (machine, metric, timestamp), so a re-sent sample is a no-op there.

Real parts: the edge agent, a pymodbus PLC whose counter steps every 20 ms, Mosquitto, a
Sparkplug host. The window is 2 s; each test runs the line for longer than a window, marks on
the host's record what arrived more than a window before the event ("old") and what arrived in
it ("recent"), then causes the event. The host must get:

* every recent sample again, once, flagged ``is_historical``, with its value; no old one;
* live data unflagged (samples polled while the node is live are never historical);
* each stream (live / historical) in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from taktline_contract.sparkplug import HostState, MessageType, encode_state, state_topic
from taktline_edge.agent import EdgeAgent
from taktline_edge.config import EdgeConfig
from tests.edge_process import Arrival, decode
from tests.edge_support import HOST_ID, Plc, SparkplugHost, edge_config, plc
from tests.support import Mosquitto, wait_for

pytestmark = pytest.mark.mosquitto

WINDOW_S = 2.0
MARGIN_S = 1.0
"""Between the old mark and the event: more than a window by this much (the purge's period)."""


def _config(broker_port: int, server: Plc, outbox: Path) -> EdgeConfig:
    config = edge_config(broker_port, {"M1": server.port}, outbox, poll_ms=50)
    window = config.outbox.model_copy(update={"replay_window_s": WINDOW_S})
    return config.model_copy(update={"outbox": window})


async def _count_up(server: Plc) -> None:
    """The line runs: the good counter goes up by one every 20 ms."""
    count = 0
    while True:
        count += 1
        await server.set_u32(0, count)
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _line(server: Plc) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        counting = tasks.create_task(_count_up(server), name="line")
        yield
        counting.cancel()


@dataclass
class Marks:
    """Indexes into the host's record: before `old` arrived more than a window before the
    event; from `recent` to `event` within the window before it."""

    old: int
    recent: int
    event: int


async def _mark_a_window(host: SparkplugHost, agent: EdgeAgent) -> Marks:
    """Let live data flow for more than a window; mark the host's record (see `Marks`)."""
    await wait_for(lambda: agent.link.samples_published > 10, what="live data flows")
    old = len(host.messages)
    await asyncio.sleep(WINDOW_S + MARGIN_S)  # the window passes (scenario time, not a sync)
    since = len(host.messages)

    def data() -> list[int]:
        return [i for i, m in enumerate(host.messages) if m.kind == MessageType.DDATA]

    await host.wait(lambda: len([i for i in data() if i >= since]) >= 3, "live data")
    # The last three DDATA: they arrived just now, well within the window before the event.
    return Marks(old, data()[-3], len(host.messages))


@dataclass
class Replay:
    """The host's record (every DDATA sample, in arrival order) split at the marks."""

    arrivals: list[Arrival]
    old: int
    recent: int
    event: int

    @property
    def old_keys(self) -> set[tuple[str, str, int]]:
        return {a.key for a in self.arrivals[: self.old]}

    @property
    def in_window(self) -> list[Arrival]:
        """What arrived in the window before the event."""
        return self.arrivals[self.recent : self.event]

    @property
    def after(self) -> list[Arrival]:
        return self.arrivals[self.event :]

    @property
    def repeats(self) -> list[Arrival]:
        """Arrivals of a sample that had arrived before."""
        seen: set[tuple[str, str, int]] = set()
        out = []
        for a in self.arrivals:
            if a.key in seen:
                out.append(a)
            seen.add(a.key)
        return out

    def window_resent(self) -> bool:
        return {a.key for a in self.in_window} <= {a.key for a in self.repeats}


def _split(host: SparkplugHost, marks: Marks) -> Replay:
    # Byte-identical QoS 1 redeliveries are set apart by `decode`; a prefix of the record
    # decodes to a prefix of the arrivals.
    old, recent, event = (
        len(decode(host.messages[:index]).arrivals)
        for index in (marks.old, marks.recent, marks.event)
    )
    return Replay(decode(host.messages).arrivals, old, recent, event)


def _check(replay: Replay) -> None:
    """The window came again, historical, once, with its values; nothing older; order kept."""
    assert len(replay.in_window) >= 3
    assert not any(a.historical for a in replay.in_window), "live data is not historical"
    first: dict[tuple[str, str, int], Arrival] = {}
    for a in replay.arrivals:
        first.setdefault(a.key, a)
    repeats = replay.repeats
    for a in repeats:
        assert a.historical, f"{a.key}: a re-sent sample must be flagged historical"
        assert a.value == first[a.key].value, f"{a.key}: re-sent with another value"
    keys = [a.key for a in repeats]
    assert len(keys) == len(set(keys)), "a sample was re-sent twice"
    missing = [a.key for a in replay.in_window if a.key not in set(keys)]
    assert not missing, f"{len(missing)} samples of the last window not re-sent: {missing[:5]}"
    again = set(keys) & replay.old_keys
    assert not again, f"{len(again)} samples older than the window were re-sent: {sorted(again)}"
    for historical in (True, False):
        stamps = [a.ts_ms for a in replay.after if a.historical == historical]
        assert stamps == sorted(stamps), f"historical={historical}: out of order"


async def test_host_offline_re_sends_the_last_window(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with (
        plc() as server,
        SparkplugHost(mosquitto.port) as host,
        EdgeAgent(_config(mosquitto.port, server, tmp_path / "outbox.db")) as agent,
        _line(server),
    ):
        await host.wait(lambda: host.of(MessageType.DBIRTH), "births")
        marks = await _mark_a_window(host, agent)
        await host.publish_state(False)  # with the online's timestamp: offline for the node
        await host.wait(lambda: host.of(MessageType.NDEATH), "NDEATH after host offline")
        await host.publish_state(True)
        await host.wait(lambda: len(host.of(MessageType.NBIRTH)) == 2, "born again")
        await host.wait(lambda: _split(host, marks).window_resent(), "the window sent again")
        await wait_for(lambda: agent.outbox_depth() == 0, what="the replay drained")
        replay = _split(host, marks)
    _check(replay)
    assert all(a.session == 2 for a in replay.repeats), "re-sent after the new birth"


async def test_a_stale_offline_re_sends_the_window_while_staying_live(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with (
        plc() as server,
        SparkplugHost(mosquitto.port) as host,
        EdgeAgent(_config(mosquitto.port, server, tmp_path / "outbox.db")) as agent,
        _line(server),
    ):
        await host.wait(lambda: host.of(MessageType.DBIRTH), "births")
        marks = await _mark_a_window(host, agent)
        # A worker of the host that connected before the current online died: its will, a
        # STATE offline older than the online that holds.
        stale = HostState(False, datetime.now(UTC) - timedelta(hours=1))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="dead-worker") as worker:
            await worker.publish(state_topic(HOST_ID), encode_state(stale), qos=1, retain=True)
        await host.wait(lambda: _split(host, marks).window_resent(), "the window sent again")
        await wait_for(lambda: agent.outbox_depth() == 0, what="the replay drained")
        # Live data goes on: the node never left.
        published = agent.link.samples_published
        await wait_for(lambda: agent.link.samples_published > published + 3, what="live data")
        assert agent.link.live
        assert len(host.of(MessageType.NBIRTH)) == 1, "a stale offline does not end the session"
        assert not host.of(MessageType.NDEATH)
        replay = _split(host, marks)
    _check(replay)
    assert all(a.session == 1 for a in replay.after)
    repeats = {id(a) for a in replay.repeats}
    new = [a for a in replay.after if id(a) not in repeats]
    assert new, "live samples after the stale offline"
    assert not any(a.historical for a in new), "samples polled while live are not historical"


async def test_a_lost_broker_connection_re_sends_the_last_window(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with plc() as server, SparkplugHost(mosquitto.port) as host, _line(server):
        config = _config(mosquitto.port, server, tmp_path / "outbox.db")
        async with EdgeAgent(config) as agent:
            await host.wait(lambda: host.of(MessageType.DBIRTH), "births")
            marks = await _mark_a_window(host, agent)
            # The broker drops the edge's connection (here: another client takes its client id
            # over) while the host stays online: no STATE says anything, yet the broker may have
            # lost what it held (a restart) and the edge cannot know.
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto.port, identifier=config.mqtt.client_id
            ):
                pass
            await host.wait(lambda: len(host.of(MessageType.NBIRTH)) == 2, "born again")
            await host.wait(lambda: _split(host, marks).window_resent(), "the window sent again")
            await wait_for(lambda: agent.outbox_depth() == 0, what="the replay drained")
            replay = _split(host, marks)
    _check(replay)
    assert all(a.session == 2 for a in replay.repeats)


async def test_a_restart_re_sends_what_the_last_run_sent_in_its_window(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with plc() as server, SparkplugHost(mosquitto.port) as host, _line(server):
        config = _config(mosquitto.port, server, tmp_path / "outbox.db")
        async with EdgeAgent(config) as agent:
            await host.wait(lambda: host.of(MessageType.DBIRTH), "births")
            marks = await _mark_a_window(host, agent)
        # Stopped (or killed, or the power went): whether the host ingested the last window
        # is unknown. The next run sends it again.
        async with EdgeAgent(config) as agent:
            await host.wait(lambda: len(host.of(MessageType.NBIRTH)) == 2, "born again")
            await host.wait(lambda: _split(host, marks).window_resent(), "the window sent again")
            await wait_for(lambda: agent.outbox_depth() == 0, what="the replay drained")
            replay = _split(host, marks)
    _check(replay)
    assert all(a.session == 2 for a in replay.repeats)
