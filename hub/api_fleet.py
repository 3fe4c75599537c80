"""Fleet-wide views for the console: ``GET /v1/fleet/summary``,
``GET /v1/fleet/events/latest`` and ``GET /v1/alerts``.

A separate router (included by :func:`hub.api.create_app`) so the fleet overview can
grow without touching the other routes. Responses are pydantic models, so
``/openapi.json`` documents them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel

from hub.alerts import AlertError, read_alerts
from hub.store import EventRecord, Store

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


class EventModel(BaseModel):
    """A model name and version as events carry them."""

    name: str
    version: int
    sha256: str | None = None


class EventOut(BaseModel):
    """A stored deployment event, with its id (the shape ``/v1/events`` lists)."""

    id: int
    format: str
    device_id: str
    ts: float
    kind: str
    detail: str
    model: EventModel | None
    directive_seq: int | None
    progress: float | None


class LatestEvents(BaseModel):
    """The newest events, oldest first; ``next`` is always null (resume with
    ``/v1/events?after_id=`` or the stream from the last id)."""

    events: list[EventOut]
    next: None = None


class AlertOut(BaseModel):
    """One recorded alert transition; ``open``: a firing that is still in force (the
    latest transition of its rule)."""

    id: int
    rule: str
    state: Literal["firing", "resolved"]
    value: float | None
    ts: float
    delivery: str
    open: bool


class AlertPage(BaseModel):
    """Alert transitions, newest first; ``firing`` counts the rules firing now (on this
    page or not); ``next`` is the ``before_id`` of the next page (null: the last)."""

    alerts: list[AlertOut]
    firing: int
    next: int | None


def latest_events(store: Store, limit: int, device: str | None = None) -> list[EventRecord]:
    """The newest ``limit`` events (of ``device``, if given), oldest first, found by a
    binary search over ids with the store's indexed paging (about 2 log2(n) small
    reads) instead of reading every event.

    Raises:
        StoreError: SQLite failed.
    """
    first = store.events(device, 0, limit)
    if len(first) < limit:
        return first
    lo, step = 0, 1024  # invariant: `limit` events above lo
    while len(store.events(device, lo + step, limit)) == limit:
        lo, step = lo + step, step * 2
    hi = lo + step  # fewer than `limit` events above hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(store.events(device, mid, limit)) == limit:
            lo = mid
        else:
            hi = mid
    return store.events(device, lo, limit)


#: How long one summary serves every caller (each console's Pulse asks every few
#: seconds, and a summary reads every device).
SUMMARY_TTL_S = 2.0


def summarise(store: Store, now: float) -> FleetSummary:
    """Count the store's non-revoked devices by connection state and model version.

    Raises:
        StoreError: SQLite failed.
    """
    devices = store.all_devices()
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
        generated_at=now,
    )


def fleet_router(context: HubContext, require: Callable[[str], Callable[..., Any]]) -> APIRouter:
    """The fleet routes, served from ``context`` and guarded by ``require(scope)``."""
    router = APIRouter(tags=["fleet"])
    cache: list[FleetSummary] = []  # the last summary, served for SUMMARY_TTL_S

    @router.get(
        "/v1/fleet/summary", response_model=FleetSummary, dependencies=[Depends(require("read"))]
    )
    def fleet_summary() -> FleetSummary:
        """Devices online, offline and never seen, and how many run each model version
        (revoked devices are not counted); at most ``SUMMARY_TTL_S`` old
        (``generated_at`` says when it was counted)."""
        if context.store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store is not running")
        now = time.time()
        if not cache or not 0 <= now - cache[0].generated_at < SUMMARY_TTL_S:
            cache[:] = [summarise(context.store, now)]
        return cache[0]

    @router.get(
        "/v1/fleet/events/latest",
        response_model=LatestEvents,
        dependencies=[Depends(require("read"))],
    )
    def newest_events(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100, device: str | None = None
    ) -> LatestEvents:
        """The newest events (of one device, with ``device``), oldest first: where a
        live tail starts before it follows ``/v1/events/stream`` from the last id."""
        if context.store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store is not running")
        records = latest_events(context.store, limit, device)
        return LatestEvents(
            events=[
                EventOut.model_validate({"id": r.id, **json.loads(r.event.to_bytes())})
                for r in records
            ]
        )

    @router.get("/v1/alerts", response_model=AlertPage, dependencies=[Depends(require("read"))])
    def list_alerts(
        state: Literal["firing", "resolved"] | None = None,
        open_only: Annotated[bool, Query(alias="open")] = False,
        before_id: Annotated[int | None, Query(ge=1, le=2**53)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AlertPage:
        """The alerter's recorded transitions (``hub serve --alerts``), newest first:
        ``state`` keeps the firing or resolved ones, ``open=true`` only the firings
        still in force; pass the last id as ``before_id`` for the next page. A hub
        without alert rules has none."""
        if context.store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store is not running")
        try:
            log = read_alerts(
                context.store.path,
                state=state,
                open_only=open_only,
                before_id=before_id,
                limit=limit,
            )
        except AlertError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return AlertPage(
            alerts=[
                AlertOut(
                    id=a.id or 0,
                    rule=a.rule,
                    state=a.state,
                    value=a.value,
                    ts=a.ts,
                    delivery=a.delivery,
                    open=a.id in log.open_ids,
                )
                for a in log.alerts
            ],
            firing=log.firing,
            next=log.next,
        )

    return router
