"""The API's one error shape, ``{"error": "<one line>"}``, and its status, chosen by what
failed:

- bad path, query or header parameters 400, a bad body 422 (FastAPI's validation);
- HTTP errors as raised (authentication 401/403, uploads over the limit 413);
- the hub's own errors by type (:data:`STATUS_BY_TYPE`, first match): not found 404,
  a conflict with the hub's state 409, a part that is not running (the store's or the
  audit log's database failing included) 503, anything else the hub refused 422;
- anything unexpected 500, its traceback in the hub's log only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_agent.errors import EdgeFleetError
from hub.alerts import AlertError
from hub.audit import AuditError
from hub.errors import ConflictError, NotFoundError, UnavailableError
from hub.store import StoreError

log = logging.getLogger(__name__)

#: The status of a hub error, by the first class it is an instance of.
STATUS_BY_TYPE: Final[tuple[tuple[type[EdgeFleetError], int], ...]] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (UnavailableError, 503),
    (StoreError, 503),
    (AuditError, 503),
    (AlertError, 503),
    (EdgeFleetError, 422),
)


def status_of(exc: EdgeFleetError) -> int:
    """The HTTP status answering ``exc`` (see :data:`STATUS_BY_TYPE`)."""
    return next(code for kind, code in STATUS_BY_TYPE if isinstance(exc, kind))


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(text.split())


def error_body(message: str) -> bytes:
    """The API's error document: ``{"error": "<one line>"}``."""
    return orjson.dumps({"error": one_line(message)})


def _location(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """The status and one-line message for a request that failed validation: 400 when
    a path, query or header parameter is wrong, 422 when the body is."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = _location(first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    status = 422 if first.get("loc", ("",))[0] == "body" else 400
    return status, f"{where}: {first.get('msg', 'invalid')}{more}"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` as ``{"error": "<one line>"}``."""

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101  (registered for it)
        return JSONResponse(
            {"error": one_line(str(exc.detail))}, exc.status_code, headers=exc.headers
        )

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101  (registered for it)
        status, message = validation_message(exc)
        return JSONResponse({"error": message}, status)

    async def hub_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EdgeFleetError)  # noqa: S101  (registered for it)
        return JSONResponse({"error": one_line(str(exc)) or type(exc).__name__}, status_of(exc))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("API %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the hub's log has the details"},
            500,
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(EdgeFleetError, hub_error)
    app.add_exception_handler(Exception, unexpected)
