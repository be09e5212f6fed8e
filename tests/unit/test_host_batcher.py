"""Batcher flush rules: by size, by age, in order with status changes, never dropping on outage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taktline_cloud.errors import Invalid, StorageError
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.batcher import Batcher, IngestItem, IngestQueue
from taktline_cloud.host.sessions import NodeStatus
from taktline_contract.backoff import Backoff
from tests.support import wait_for

T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


def sample(i: int) -> Sample:
    return Sample("M1", "Production/GoodCount", T0 + timedelta(milliseconds=i), Decimal(i))


class RecordingSink:
    """Records what the batcher writes; can fail or block on demand."""

    def __init__(self) -> None:
        self.calls: list[list[Sample] | NodeStatus] = []
        self.times: list[float] = []
        self.fail_with: list[Exception] = []
        self.gate: asyncio.Event | None = None

    async def record_samples(self, samples: Sequence[Sample]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.calls.append(list(samples))
        self.times.append(asyncio.get_running_loop().time())

    async def record_node_status(self, status: NodeStatus) -> None:
        self.calls.append(status)

    def samples(self) -> list[Sample]:
        return [s for call in self.calls if isinstance(call, list) for s in call]


def batcher(queue: asyncio.Queue[IngestItem], sink: RecordingSink, **kwargs: float) -> Batcher:
    return Batcher(queue, sink, backoff=Backoff(initial=0.001, maximum=0.002), **kwargs)  # type: ignore[arg-type]


async def test_writes_at_once_when_the_queue_runs_empty() -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = RecordingSink()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(batcher(queue, sink, max_size=500, max_age_s=60).run())
        queue.put_nowait(sample(0))
        queue.put_nowait(sample(1))
        # no 60 s linger: what was queued is written as soon as the queue is empty
        await wait_for(lambda: sink.calls, timeout=5, what="the idle flush")
        assert sink.calls == [[sample(0), sample(1)]]
        await queue.put(sample(2))
        await wait_for(lambda: len(sink.calls) == 2, timeout=5, what="the next idle flush")
        assert sink.calls[1] == [sample(2)]
        await queue.put(None)
    assert task.done()


async def test_flushes_by_size_and_everything_at_end_of_stream() -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = RecordingSink()
    for i in range(1200):
        queue.put_nowait(sample(i))
    queue.put_nowait(None)
    await asyncio.wait_for(batcher(queue, sink, max_size=500, max_age_s=60).run(), 5)
    assert [len(call) for call in sink.calls if isinstance(call, list)] == [500, 500, 200]
    assert sink.samples() == [sample(i) for i in range(1200)]


async def test_message_runs_are_split_at_the_batch_size_in_order() -> None:
    queue = IngestQueue()
    sink = RecordingSink()
    for start in range(0, 1200, 100):  # twelve messages of 100 samples
        queue.put_nowait([sample(i) for i in range(start, start + 100)])
    queue.put_nowait(None)
    await asyncio.wait_for(batcher(queue, sink, max_size=250, max_age_s=60).run(), 5)
    assert [len(call) for call in sink.calls if isinstance(call, list)] == [250] * 4 + [200]
    assert sink.samples() == [sample(i) for i in range(1200)]


async def test_the_ingest_queue_is_bounded_in_samples_not_messages() -> None:
    queue = IngestQueue(maxsize=250)
    queue.put_nowait([sample(i) for i in range(200)])
    assert queue.qsize() == 200
    assert not queue.full()
    queue.put_nowait([sample(i) for i in range(200, 300)])  # room was left: it goes in
    assert queue.full()
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(sample(300))
    waiting = asyncio.create_task(queue.put(sample(300)))
    await asyncio.sleep(0)
    assert not waiting.done()  # back-pressure: the host waits for the batcher
    first = queue.get_nowait()
    assert isinstance(first, list)
    assert len(first) == 200
    await asyncio.wait_for(waiting, 1)
    assert queue.qsize() == 101
    empty = IngestQueue(maxsize=10)
    empty.put_nowait([sample(i) for i in range(50)])  # an empty queue takes any message
    assert empty.qsize() == 50


async def test_flushes_a_small_batch_once_it_is_max_age_old() -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = RecordingSink()
    async with asyncio.TaskGroup() as tg:
        linger = Batcher(
            queue, sink, max_size=500, max_age_s=0.05, flush_when_idle=False
        )
        task = tg.create_task(linger.run())
        started = asyncio.get_running_loop().time()
        for i in range(3):
            await queue.put(sample(i))
        await wait_for(lambda: sink.calls, timeout=5, what="the age flush")
        assert sink.calls == [[sample(0), sample(1), sample(2)]]
        assert sink.times[0] - started >= 0.05
        await queue.put(None)
    assert task.done()


async def test_status_changes_keep_their_place_between_samples() -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = RecordingSink()
    offline = NodeStatus("GW-1", "M1", False, T0)
    for item in (sample(1), sample(2), offline, sample(3), None):
        queue.put_nowait(item)
    await asyncio.wait_for(batcher(queue, sink, max_size=500, max_age_s=60).run(), 5)
    assert sink.calls == [[sample(1), sample(2)], offline, [sample(3)]]


async def test_database_outage_is_retried_never_dropped() -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = RecordingSink()
    sink.fail_with = [StorageError("database is locked"), StorageError("database is locked")]
    for i in range(10):
        queue.put_nowait(sample(i))
    queue.put_nowait(None)
    await asyncio.wait_for(batcher(queue, sink, max_size=4, max_age_s=60).run(), 5)
    assert sink.samples() == [sample(i) for i in range(10)]


class RefusingSink(RecordingSink):
    """Refuses any batch holding a sample whose value is 13 (as the service raises Invalid)."""

    async def record_samples(self, samples: Sequence[Sample]) -> None:
        if any(s.value == Decimal(13) for s in samples):
            raise Invalid("sample M1/Production/GoodCount: refused")
        await super().record_samples(samples)


async def test_a_refused_sample_is_logged_and_the_rest_of_its_batch_is_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue()
    sink = RefusingSink()
    for i in range(10, 20):
        queue.put_nowait(sample(i))
    queue.put_nowait(None)
    await asyncio.wait_for(batcher(queue, sink, max_size=500, max_age_s=60).run(), 5)
    assert sink.samples() == [sample(i) for i in range(10, 20) if i != 13]
    assert "could not store" in caplog.text
    assert "refused" in caplog.text


async def test_full_queue_applies_back_pressure_to_the_producer() -> None:
    queue: asyncio.Queue[IngestItem] = asyncio.Queue(maxsize=3)
    sink = RecordingSink()
    sink.gate = asyncio.Event()  # the database is slow
    async with asyncio.TaskGroup() as tg:
        tg.create_task(batcher(queue, sink, max_size=2, max_age_s=60).run())
        producer = tg.create_task(_produce(queue, 20))
        await wait_for(queue.full, timeout=5, what="the queue to fill")
        assert not producer.done()  # waiting, not dropping
        sink.gate.set()
    assert sink.samples() == [sample(i) for i in range(20)]


async def _produce(queue: asyncio.Queue[IngestItem], count: int) -> None:
    for i in range(count):
        await queue.put(sample(i))
    await queue.put(None)


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Batcher(asyncio.Queue(), RecordingSink(), max_size=0)
