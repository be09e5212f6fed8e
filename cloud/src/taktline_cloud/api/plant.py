"""Health, machines, edge nodes and the dashboard document."""

from __future__ import annotations

from fastapi import APIRouter

from taktline_cloud.api.deps import Context, Service
from taktline_cloud.api.schemas import Health
from taktline_cloud.readmodels import Dashboard, MachineRow, NodeRow

router = APIRouter(prefix="/api")


@router.get("/health", tags=["health"])
async def health(context: Context) -> Health:
    """Liveness, and whether the Sparkplug host is connected to the broker."""
    host = context.host
    connected = host is not None and host.connected
    return Health(
        status="ok" if connected else "degraded",
        mqtt_connected=connected,
        edge_nodes=host.online_nodes() if host is not None else {},
        live_clients=context.hub.clients,
    )


@router.get("/machines", tags=["shop floor"])
async def machines(service: Service) -> list[MachineRow]:
    """Every machine with its state and latest counters."""
    return await service.read(lambda plant: plant.machines())


@router.get("/nodes", tags=["shop floor"])
async def nodes(service: Service) -> list[NodeRow]:
    """Online status of every edge node (gateway) and device (machine)."""
    return await service.read(lambda plant: plant.nodes())


@router.get("/dashboard", tags=["shop floor"])
async def dashboard(service: Service) -> Dashboard:
    """Everything the big screen shows, in one document (the websocket's snapshot)."""
    return await service.read(lambda plant: plant.dashboard())
