"""Domain errors → HTTP: NotFound 404, Forbidden 403, Conflict 409, Invalid 422, StorageError 503.

The body is always ``{"detail": "<the domain's message>"}``, the message the domain wrote for a
person to read (it names the work order, the item, the transition).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from taktline_cloud.errors import (
    CloudError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StorageError,
)

log = logging.getLogger(__name__)

STATUS_OF: dict[type[CloudError], int] = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    Invalid: 422,
    StorageError: 503,
}


async def cloud_error(request: Request, exc: Exception) -> JSONResponse:
    """The JSON answer to a domain error raised by a route."""
    status = next(
        (code for kind, code in STATUS_OF.items() if isinstance(exc, kind)),
        500,
    )
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse({"detail": str(exc) or type(exc).__name__}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Map every `CloudError` raised by a route to its HTTP status."""
    app.add_exception_handler(CloudError, cloud_error)
