"""Fleet-wide views for the console: ``GET /v1/fleet/summary`` and
``GET /v1/fleet/events/latest``."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query

from hub.api.context import Hub, ReadToken
from hub.api.documents import EventOut, FleetSummary, LatestEvents, VersionCount
from hub.store import EventRecord, Store

router = APIRouter(tags=["fleet"])

#: How long one summary serves every caller (each console's Pulse asks every few
#: seconds, and a summary reads every device).
SUMMARY_TTL_S = 2.0


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


@router.get("/v1/fleet/summary", response_model=FleetSummary)
def fleet_summary(context: Hub, _: ReadToken) -> FleetSummary:
    """Devices online, offline and never seen, and how many run each model version
    (revoked devices are not counted); at most ``SUMMARY_TTL_S`` old
    (``generated_at`` says when it was counted)."""
    store = context.need_store()
    now = time.time()
    cached: FleetSummary | None = context.cache.get("fleet_summary")
    if cached is None or not 0 <= now - cached.generated_at < SUMMARY_TTL_S:
        cached = context.cache["fleet_summary"] = summarise(store, now)
    return cached


@router.get("/v1/fleet/events/latest", response_model=LatestEvents)
def newest_events(
    context: Hub,
    _: ReadToken,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    device: str | None = None,
) -> LatestEvents:
    """The newest events (of one device, with ``device``), oldest first: where a
    live tail starts before it follows ``/v1/events/stream`` from the last id."""
    records = latest_events(context.need_store(), limit, device)
    return LatestEvents(events=[EventOut.of(r) for r in records])
