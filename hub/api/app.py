"""The hub's HTTP API (FastAPI), built from one router per resource.

Every endpoint except ``/healthz`` needs ``Authorization: Bearer efb_...``; a missing
or unknown token gets 401, a token without the endpoint's scope 403 — never data
(:mod:`hub.api.context`). Requests with a body are authenticated and size-limited
before the body is read (:mod:`hub.api.guard`). Every failure is ``{"error": "<one
line>"}`` with its status chosen by type (:mod:`hub.api.errors`); every answer body is
a documented model (:mod:`hub.api.documents`). The OpenAPI document is at
``/openapi.json`` (and ``/docs``).
"""

from __future__ import annotations

from fastapi import FastAPI

from edge_agent import __version__
from hub.api import (
    alerts,
    audit,
    bundles,
    devices,
    events,
    fleet,
    health,
    history,
    models,
    rollouts,
    tokens,
)
from hub.api.context import HubContext
from hub.api.errors import install_error_handlers
from hub.api.guard import BodyGuard

#: Every route module, in the order ``/openapi.json`` lists them.
ROUTERS = (
    health,
    tokens,
    devices,
    events,
    rollouts,
    models,
    bundles,
    audit,
    fleet,
    alerts,
    history,
)


def create_app(context: HubContext) -> FastAPI:
    """Build the FastAPI application serving ``context``."""
    app = FastAPI(title="EdgeFleet hub", version=__version__)
    app.state.hub = context
    install_error_handlers(app)
    for module in ROUTERS:
        # The routes themselves, not include_router: FastAPI keeps an included router
        # as one opaque route, and app.routes must list every endpoint (the hostile
        # walk in the tests reads it). The routes hold no per-app state.
        app.router.routes.extend(module.router.routes)
    # Two files (model and reference) at their limit, plus the form's own bytes.
    app.add_middleware(
        BodyGuard, tokens=context.tokens, max_body_bytes=2 * context.max_upload_bytes + (1 << 20)
    )
    return app
