"""Time-driven recompute: rates decay when a line stops even though no sample arrives."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from taktline_cloud.live.gateway import ServiceGateway

log = logging.getLogger(__name__)


async def refresh_periodically(
    gateway: ServiceGateway, interval_s: float, stop: asyncio.Event
) -> None:
    """Call `service.refresh()` every `interval_s` until `stop`; its events go live."""
    failing = False
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
        if stop.is_set():
            return
        try:
            await gateway.apply(lambda plant: plant.refresh())
        except Exception:
            # A failed refresh is retried at the next tick; say so once, not every tick.
            if not failing:
                log.exception("periodic refresh failed; retrying every %ss", interval_s)
                failing = True
            continue
        if failing:
            log.info("periodic refresh works again")
            failing = False
