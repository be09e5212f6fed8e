"""The REST API (FastAPI routers, OpenAPI at /openapi.json) and the live websocket.

`install_api(app)` adds every route and the domain error mapping; the composition root puts an
`ApiContext` in `app.state.taktline` before serving.
"""

from fastapi import FastAPI

from taktline_cloud.api import (
    dead_letters,
    forecast,
    live,
    mrp,
    nodes,
    plant,
    purchasing,
    sales,
    stock,
    trends,
    work_orders,
)
from taktline_cloud.api.deps import ApiContext, Context, HostProbe, Hub, Service
from taktline_cloud.api.errors import install_error_handlers

__all__ = ["ApiContext", "Context", "HostProbe", "Hub", "Service", "install_api"]


def install_api(app: FastAPI) -> None:
    """Add the REST routes, the websocket and the error mapping to `app`."""
    for module in (plant, nodes, work_orders, stock, sales, live, dead_letters, trends, purchasing):
        app.include_router(module.router)
    app.include_router(mrp.router)
    app.include_router(forecast.router)
    install_error_handlers(app)
