"""Fleet-wide views for the console: ``GET /v1/fleet/summary``.

A separate router (included by :func:`hub.api.create_app`) so the fleet overview can
grow without touching the other routes. Responses are pydantic models, so
``/openapi.json`` documents them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel

if TYPE_CHECKING:
    from hub.api import HubContext


class VersionCount(BaseModel):
    """How many (non-revoked) devices run a model version, active or in shadow."""

    model: str
    version: int
    active: int
    shadow: int


class FleetSummary(BaseModel):
    """Device counts by connection state and by model version."""

    total: int
    online: int
    offline: int
    never_seen: int
    without_model: int
    buffered_windows: int
    versions: list[VersionCount]
    generated_at: float


def fleet_router(context: HubContext, require: Callable[[str], Callable[..., Any]]) -> APIRouter:
    """The fleet routes, served from ``context`` and guarded by ``require(scope)``."""
    router = APIRouter(tags=["fleet"])

    @router.get(
        "/v1/fleet/summary", response_model=FleetSummary, dependencies=[Depends(require("read"))]
    )
    def fleet_summary() -> FleetSummary:
        """Devices online, offline and never seen, and how many run each model version
        (revoked devices are not counted)."""
        if context.store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store is not running")
        devices = context.store.all_devices()
        active: Counter[tuple[str, int]] = Counter()
        shadow: Counter[tuple[str, int]] = Counter()
        for d in devices:
            if d.active is not None:
                active[(d.active.name, d.active.version)] += 1
            if d.shadow is not None:
                shadow[(d.shadow.name, d.shadow.version)] += 1
        online = sum(1 for d in devices if d.online)
        never = sum(1 for d in devices if d.last_seen is None and not d.online)
        return FleetSummary(
            total=len(devices),
            online=online,
            offline=len(devices) - online - never,
            never_seen=never,
            without_model=sum(1 for d in devices if d.active is None),
            buffered_windows=sum(d.buffer_depth for d in devices),
            versions=[
                VersionCount(model=m, version=v, active=active[(m, v)], shadow=shadow[(m, v)])
                for m, v in sorted(set(active) | set(shadow))
            ],
            generated_at=time.time(),
        )

    return router
