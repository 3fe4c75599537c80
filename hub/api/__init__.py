"""The hub's HTTP API: one module per resource, built into an app by :mod:`hub.api.app`.

- ``app.py``: :func:`create_app`; ``server.py``: :class:`ApiServer` (uvicorn on a thread)
- ``context.py``: what routes serve from (:class:`HubContext`), authentication, path types
- ``documents.py``: every request and answer body as a pydantic model
- ``errors.py``: the one error shape and the status of each hub error type
- ``guard.py``: authentication and the size limit before a body is read
- routes: ``health``, ``tokens``, ``devices``, ``events``, ``rollouts``, ``models``
  (registry and drift), ``bundles``, ``audit``, ``fleet``, ``alerts``
"""

from __future__ import annotations

from hub.api.app import create_app
from hub.api.context import HubContext, sign_bundle_url
from hub.api.server import ApiServer

__all__ = ["ApiServer", "HubContext", "create_app", "sign_bundle_url"]
