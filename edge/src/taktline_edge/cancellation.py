"""Keeping cancellation from getting lost in long-running loops (Python 3.11).

Two 3.11 behaviours make a loop that survives errors run on after its task was cancelled:
`asyncio.wait_for` (inside pymodbus and aiomqtt) can swallow a cancellation that arrives just
as the awaited result does, and a TaskGroup whose child failed raises the child's error even
when the task was cancelled meanwhile. The task still counts the request (`Task.cancelling()`),
so loops call `raise_if_cancelling` each iteration. A 3.11 TaskGroup also leaves that count
raised after a child's error (it cancels its parent and never uncancels it); `task_group`
restores it, so the count means "someone outside asked this task to stop". Whatever still slips
through is caught by `EdgeAgent.stop`, which repeats its cancel until the agent has stopped.
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def raise_if_cancelling() -> None:
    """Raise `CancelledError` when the current task was asked to cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An `asyncio.TaskGroup` that leaves the task's cancellation count as it found it."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    cancelled = False
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if task is not None and not cancelled and sys.version_info < (3, 12):
            while task.cancelling() > before:
                task.uncancel()
