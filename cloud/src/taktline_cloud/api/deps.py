"""What routes depend on, as `Annotated` types: a route's signature says what it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends
from starlette.requests import HTTPConnection

from taktline_cloud.historian.dead_letters import DeadLetterStore
from taktline_cloud.live.gateway import ServiceGateway
from taktline_cloud.live.hub import LiveHub
from taktline_cloud.purchasing_service import PurchasingService


class HostProbe(Protocol):
    """What the API may ask the MQTT host (health)."""

    @property
    def connected(self) -> bool:
        """True while connected to the broker with STATE online."""

    def online_nodes(self) -> dict[str, list[str]]:
        """Online edge nodes with their online devices."""


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The running cloud as the API sees it (the composition root sets `app.state.taktline`)."""

    gateway: ServiceGateway
    hub: LiveHub
    host: HostProbe | None = None
    ws_send_timeout_s: float = 10.0
    dead_letters: DeadLetterStore | None = None
    """Rejected MQTT messages (use through `gateway.worker`, like the service)."""
    purchasing: PurchasingService | None = None
    """Purchasing (use through `gateway.worker`: one thread uses the database connection)."""


def api_context(connection: HTTPConnection) -> ApiContext:
    """The `ApiContext` of the running app (HTTP requests and websockets alike)."""
    context = getattr(connection.app.state, "taktline", None)
    if not isinstance(context, ApiContext):
        raise RuntimeError("the cloud is not started: app.state.taktline is not set")
    return context


def _service(context: Annotated[ApiContext, Depends(api_context)]) -> ServiceGateway:
    return context.gateway


def _hub(context: Annotated[ApiContext, Depends(api_context)]) -> LiveHub:
    return context.hub


Context = Annotated[ApiContext, Depends(api_context)]
Service = Annotated[ServiceGateway, Depends(_service)]
"""The plant service, reached through its single worker thread (events go live)."""
Hub = Annotated[LiveHub, Depends(_hub)]
