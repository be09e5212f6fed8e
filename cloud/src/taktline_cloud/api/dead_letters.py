"""Dead letters: list the MQTT messages the host rejected, and replay one once its cause is fixed.

Replay feeds the stored raw bytes through the host's own decode path (the same alias tables a
live message meets), so a message dead-lettered because its birth was missing is taken in once
the edge node has been born again. It succeeds only when the whole message is usable; usable
parts of a partly bad message are ingested either way (a sample's key makes that a no-op when
they were already stored).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from taktline_cloud.api.deps import Context
from taktline_cloud.errors import Conflict, Invalid, StorageError
from taktline_cloud.historian.dead_letters import MAX_PAGE, DeadLetterStore, StoredDeadLetter
from taktline_cloud.host.primary import PrimaryHost

router = APIRouter(prefix="/api/dead-letters", tags=["dead letters"])


class DeadLetterOut(BaseModel):
    """One rejected message; the payload is base64 (it is raw, often not text)."""

    id: int
    topic: str
    reason: str
    received_at: datetime
    replayed_at: datetime | None
    payload_size: int
    payload_base64: str

    @classmethod
    def of(cls, letter: StoredDeadLetter) -> DeadLetterOut:
        """The API form of a stored dead letter."""
        return cls(
            id=letter.id,
            topic=letter.topic,
            reason=letter.reason,
            received_at=letter.received_at,
            replayed_at=letter.replayed_at,
            payload_size=len(letter.payload),
            payload_base64=base64.b64encode(letter.payload).decode("ascii"),
        )


class DeadLetterPage(BaseModel):
    """A page of dead letters, oldest first; pass `next_after` as `after` for the next page."""

    items: list[DeadLetterOut]
    next_after: int | None


def _store(context: Context) -> DeadLetterStore:
    if context.dead_letters is None:
        raise StorageError("dead letters are not available in this process")
    return context.dead_letters


@router.get("")
async def list_dead_letters(
    context: Context,
    *,
    topic_prefix: Annotated[str | None, Query(max_length=512)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> DeadLetterPage:
    """Dead letters received in [since, until) whose topic starts with `topic_prefix`."""
    store = _store(context)
    letters = await context.gateway.worker.run(
        lambda: store.list(
            topic_prefix=topic_prefix, since=since, until=until, after_id=after, limit=limit
        )
    )
    next_after = letters[-1].id if len(letters) == limit else None
    return DeadLetterPage(items=[DeadLetterOut.of(x) for x in letters], next_after=next_after)


@router.get("/{letter_id}")
async def get_dead_letter(context: Context, letter_id: int) -> DeadLetterOut:
    """One dead letter (404 when there is none)."""
    store = _store(context)
    return DeadLetterOut.of(await context.gateway.worker.run(lambda: store.get(letter_id)))


@router.post("/{letter_id}/replay")
async def replay_dead_letter(context: Context, letter_id: int) -> DeadLetterOut:
    """Re-feed the raw bytes through the host: 200 and marked replayed when fully usable;
    422 when still rejected whole, 409 when still partly unusable or already replayed."""
    store = _store(context)
    host = context.host
    if not isinstance(host, PrimaryHost):
        raise StorageError("no Sparkplug host runs in this process to replay through")
    letter = await context.gateway.worker.run(lambda: store.get(letter_id))
    if letter.replayed_at is not None:
        raise Conflict(f"dead letter {letter_id} was replayed at {letter.replayed_at.isoformat()}")
    outcome, reason = host.replay(letter.topic, letter.payload)
    if outcome is None:
        raise Invalid(f"dead letter {letter_id} is still rejected: {reason}")
    await host.requeue(outcome)
    if reason is not None:
        raise Conflict(f"dead letter {letter_id} is still not fully usable: {reason}")
    now = host.now()
    marked = await context.gateway.worker.run(lambda: store.mark_replayed(letter_id, now))
    return DeadLetterOut.of(marked)
