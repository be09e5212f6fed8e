"""Online/offline history of edge nodes (gateways) and their devices (machines).

    GET /api/nodes/GW-1/history?device=M1&since=…&until=…&limit=…

The current status of every node and device is GET /api/nodes (plant.py). A history answer
lists the changes newest first, each with the time of the next change of the same node or
device and the period's length; the period still open runs to the answer's `as_of`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from taktline_cloud.api.deps import Service
from taktline_cloud.readmodels import MAX_NODE_CHANGES, NodeHistory

router = APIRouter(prefix="/api/nodes", tags=["shop floor"])

_ID_MAX = 256
"""Longer than any Sparkplug edge node or device id a broker would carry in a topic level."""


@router.get(
    "/{edge_node}/history",
    responses={
        404: {"description": "No such edge node, or no such device on it"},
        422: {"description": "A bad parameter (the detail says which and why)"},
    },
)
async def node_history(
    edge_node: Annotated[str, Path(min_length=1, max_length=_ID_MAX)],
    service: Service,
    *,
    device: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=_ID_MAX,
            description="Only this device's changes (default: the node's and all its devices')",
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        Query(description="Changes at or after this time (ISO-8601 with Z or an offset)"),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description="Changes before this time (ISO-8601 with Z or an offset)"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_NODE_CHANGES, description="At most this many, the newest")
    ] = 1000,
) -> NodeHistory:
    """Online/offline changes of an edge node and its devices, newest first, each with how
    long it lasted (the current one: up to now)."""
    return await service.read(
        lambda plant: plant.node_history(
            edge_node, device=device, since=since, until=until, limit=limit
        )
    )
