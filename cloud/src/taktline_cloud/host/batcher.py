"""Batches ingested samples into database transactions: flush by size or by age, never drop.

The queue between the MQTT host and the batcher is bounded: when the database falls behind,
`put` waits (back-pressure on the host) instead of dropping production data. Status changes
travel in the same queue so they are applied in the order they were received.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeAlias

from taktline_cloud.errors import StorageError
from taktline_cloud.historian.dead_letters import DeadLetter
from taktline_cloud.historian.samples import Sample
from taktline_cloud.host.sessions import NodeStatus
from taktline_cloud.observability import IngestMetrics
from taktline_contract.backoff import Backoff

log = logging.getLogger(__name__)

IngestItem: TypeAlias = Sample | list[Sample] | NodeStatus | DeadLetter | None
"""What flows from the host to the batcher: one message's samples as a list (or a single
sample), status changes and dead letters in order with them; None marks the end of the stream
(shutdown)."""


def _weight(item: IngestItem) -> int:
    return len(item) if isinstance(item, list) else 1


class IngestQueue(asyncio.Queue[IngestItem]):
    """The bounded queue between host and batcher, bounded in *samples*.

    A message's samples travel as one item - one put and one get per message instead of per
    sample, a measurable share of the event loop's time under load - but weigh what they hold,
    so `maxsize` still bounds memory in samples. An empty queue takes any message, however big.
    """

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._weight = 0

    def _put(self, item: IngestItem) -> None:
        super()._put(item)
        self._weight += _weight(item)

    def _get(self) -> IngestItem:
        item = super()._get()
        self._weight -= _weight(item)
        return item

    def qsize(self) -> int:
        """Samples (and other items) queued."""
        return self._weight


class IngestSink(Protocol):
    """Where batches go (the service, through its worker thread)."""

    async def record_samples(self, samples: Sequence[Sample]) -> None:
        """Store one batch of samples in one transaction."""

    async def record_node_status(self, status: NodeStatus) -> None:
        """Store an edge node's or device's online/offline change."""

    async def record_dead_letter(self, letter: DeadLetter) -> None:
        """Store a message the host rejected (raw bytes, topic, reason)."""


class Batcher:
    """Writes the ingest queue in batches of at most `max_size`, none older than `max_age_s`.

    With `flush_when_idle` (the default) a batch is written as soon as the queue is empty: under
    light load every sample is stored at once, and under heavy load the samples that arrive
    while one batch is being written form the next (group commit), so batching costs no latency.
    Without it a batch lingers up to `max_age_s` for more samples.
    """

    def __init__(
        self,
        queue: asyncio.Queue[IngestItem],
        sink: IngestSink,
        *,
        max_size: int = 500,
        max_age_s: float = 0.1,
        backoff: Backoff | None = None,
        flush_when_idle: bool = True,
        metrics: IngestMetrics | None = None,
    ) -> None:
        if max_size < 1 or max_age_s <= 0:
            raise ValueError("need max_size >= 1 and max_age_s > 0")
        self._queue = queue
        self._sink = sink
        self.max_size = max_size
        self.max_age_s = max_age_s
        self.flush_when_idle = flush_when_idle
        self._backoff = backoff or Backoff(initial=0.2, maximum=10.0)
        self._failing = False
        self.samples_written = 0
        self.batches_written = 0
        self.dead_letters_written = 0
        self.metrics = metrics or IngestMetrics()
        self.metrics.watch_queue(queue.qsize)

    async def run(self) -> None:
        """Write until the end-of-stream marker (None) arrives and all before it is stored."""
        loop = asyncio.get_running_loop()
        batch: list[Sample] = []
        deadline = 0.0
        while True:
            if batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    batch = await self._flush(batch)
                    continue
                try:
                    async with asyncio.timeout(remaining):
                        item = await self._queue.get()
                except TimeoutError:
                    batch = await self._flush(batch)
                    continue
            else:
                item = await self._queue.get()
            while True:
                if item is None:
                    await self._flush(batch)
                    return
                if isinstance(item, NodeStatus):
                    batch = await self._flush(batch)
                    write = functools.partial(self._sink.record_node_status, item)
                    refused = await self._write(write)
                    if refused is not None:
                        log.error("could not store %s: dropped", item, exc_info=refused)
                elif isinstance(item, DeadLetter):
                    # In order with the samples around it, like a status change.
                    batch = await self._flush(batch)
                    refused = await self._write(
                        functools.partial(self._sink.record_dead_letter, item)
                    )
                    if refused is not None:
                        log.error(
                            "could not store the dead letter of %s", item.topic, exc_info=refused
                        )
                    else:
                        self.dead_letters_written += 1
                else:
                    if not batch:
                        deadline = loop.time() + self.max_age_s
                    if isinstance(item, list):
                        batch.extend(item)
                    else:
                        batch.append(item)
                    while len(batch) >= self.max_size:
                        head, batch = batch[: self.max_size], batch[self.max_size :]
                        await self._flush(head)
                        if batch:
                            deadline = loop.time() + self.max_age_s
                # Take what is already queued without a timer per item.
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    if self.flush_when_idle:
                        batch = await self._flush(batch)
                    break

    async def _flush(self, batch: list[Sample]) -> list[Sample]:
        if batch:
            await self._store(batch)
            self.batches_written += 1
        return []

    async def _store(self, batch: list[Sample]) -> None:
        started = time.perf_counter()
        refused = await self._write(functools.partial(self._sink.record_samples, batch))
        if refused is None:
            self.samples_written += len(batch)
            self.metrics.batch_committed(len(batch), time.perf_counter() - started)
        elif len(batch) > 1:
            # Find the sample the service refuses instead of losing the whole batch with it.
            middle = len(batch) // 2
            await self._store(batch[:middle])
            await self._store(batch[middle:])
        else:
            log.error("could not store %s: dropped", batch[0], exc_info=refused)
            self.metrics.samples_dropped(1)

    async def _write(self, call: Callable[[], Awaitable[None]]) -> Exception | None:
        """Run `call`, retrying while the database is away; the error if the data is refused."""
        while True:
            try:
                await call()
            except StorageError as exc:
                # The database is away (locked, restarting): keep the data and retry.
                if not self._failing:
                    log.warning("database write failed (%s); retrying with backoff", exc)
                    self._failing = True
                await asyncio.sleep(self._backoff.next_delay())
                continue
            except Exception as exc:
                # Not transient: retrying would stall ingestion forever. A dead-letter table is
                # the later home of such data; until then the log names it.
                return exc
            if self._failing:
                log.info("database writes recovered")
                self._failing = False
                self._backoff.reset()
            return None
