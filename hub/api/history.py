"""History for the console's plots: ``GET /v1/devices/{id}/history``,
``GET /v1/models/{name}/versions/{v}/drift/bins`` and
``GET /v1/models/{name}/versions/{v}/drift/history``.

A separate router (included by :func:`hub.api.create_app`), read-only, computed from
what the store already keeps: a device's stored metric windows (each with its start,
end, predictions, latency histogram and error counts), the merged windows of a version
(hourly roll-ups for whole hours) and the bundle's reference statistics. Drift verdicts
come from :mod:`hub.drift`'s one rule, never from a second one. Responses are pydantic
models, so ``/openapi.json`` documents them; a bad parameter is a one-line 400, an
unknown device or version a 404.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel

from edge_agent.contract.window import ERRORS_IN_N, LATENCY_EDGES_MS, MetricsWindow
from edge_agent.errors import EdgeFleetError
from hub.api.context import Hub, HubContext, require
from hub.drift import DEFAULT_THRESHOLDS, decide_counts, histogram_quantile, summarize
from hub.registry import Registry
from hub.rollups import HOUR_S, hour_of
from hub.store import Store

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DeviceId = Annotated[str, Path(pattern=_NAME_RE, description="A device id")]
ModelName = Annotated[str, Path(pattern=_NAME_RE, description="A model name")]
Version = Annotated[int, Path(ge=1, le=2**53, description="A model version")]
Role = Literal["active", "shadow"]
#: The longest history one request may ask for (30 days).
MAX_HOURS = 720.0
Hours = Annotated[
    float,
    Query(gt=0.0, le=MAX_HOURS, allow_inf_nan=False, description="How far back, in hours"),
]
Until = Annotated[
    float | None,
    Query(ge=0.0, le=2**40, allow_inf_nan=False, description="End (Unix s; default: now)"),
]


class HistoryPoint(BaseModel):
    """A device's windows that start in ``[start, end)``, merged: predictions ``n``,
    ``windows`` counted, the p95 latency (ms, None when nothing was timed, from the
    merged latency histogram) and the error rate (errors / attempts, None when there
    were no attempts)."""

    start: float
    end: float
    windows: int
    n: int
    errors: int
    p95_ms: float | None
    error_rate: float | None


class DeviceHistory(BaseModel):
    """``GET /v1/devices/{id}/history``: points oldest first (buckets without a window
    are left out)."""

    device_id: str
    role: Role
    since: float
    until: float
    bucket_s: float
    points: list[HistoryPoint]


class DriftBins(BaseModel):
    """One feature's reference and live distributions over the bundle's bins, in the
    layout ``[underflow (< e0), [e0, e1), ..., [e(k-1), ek], overflow (> ek)]`` (NaN
    left out and counted in ``live_nan``): ``reference`` as proportions, ``live`` as
    counts of the merged windows of the scope (fleet, ``device`` or ``tag``)."""

    model: str
    version: int
    feature: str
    features: list[str]
    edges: list[float]
    reference: list[float]
    reference_counts: list[int]
    live: list[int]
    live_nan: int
    n: int
    since: float | None


class FeaturePsi(BaseModel):
    """One feature in one hour: its PSI (None when the hour has no finite value) and
    the one rule's verdict on that hour's counts."""

    name: str
    psi: float | None
    verdict: str


class DriftHour(BaseModel):
    """The windows of one hour (by the hour they end in), decided on their own."""

    start: float
    n: int
    features: list[FeaturePsi]
    verdict: str


class DriftHistory(BaseModel):
    """``GET /v1/models/{name}/versions/{v}/drift/history``: hours oldest first (hours
    without predictions are left out); ``psi_threshold`` is the PSI worth acting on and
    ``psi_major`` where ``major`` starts (the rule's defaults)."""

    model: str
    version: int
    role: Role
    since: float
    until: float
    psi_threshold: float | None
    psi_major: float
    hours: list[DriftHour]


def _attempts_and_errors(w: MetricsWindow) -> tuple[int, int]:
    errors = sum(w.errors.values())
    return w.n + sum(v for k, v in w.errors.items() if k not in ERRORS_IN_N), errors


def device_history(
    windows: Sequence[MetricsWindow], since: float, until: float, points: int
) -> tuple[float, list[HistoryPoint]]:
    """Merge ``windows`` (of one device) into at most ``points`` equal buckets of
    ``[since, until)`` by their start; returns the bucket width and the buckets that
    hold a window. Pure: the latency histograms and counts add exactly.

    Raises:
        DriftError: a window's latency histogram has the wrong length.
    """
    width = max((until - since) / points, 1.0)
    buckets: dict[int, list[MetricsWindow]] = {}
    for w in windows:
        if since <= w.start < until:
            buckets.setdefault(int((w.start - since) // width), []).append(w)
    out = []
    for i in sorted(buckets):
        group = buckets[i]
        latency = [sum(c) for c in zip(*(w.latency for w in group), strict=True)]
        attempts = errors = 0
        for w in group:
            a, e = _attempts_and_errors(w)
            attempts, errors = attempts + a, errors + e
        out.append(
            HistoryPoint(
                start=since + i * width,
                end=min(until, since + (i + 1) * width),
                windows=len(group),
                n=sum(w.n for w in group),
                errors=errors,
                p95_ms=histogram_quantile(LATENCY_EDGES_MS, latency, 0.95),
                error_rate=errors / attempts if attempts else None,
            )
        )
    return width, out


def _counts(w: MetricsWindow | None, like: MetricsWindow) -> list[list[int]]:
    """Every count vector of ``w`` (zeros shaped like ``like`` when None)."""
    src = like if w is None else w
    vectors = [list(f.counts) for f in src.features]
    vectors += [list(src.class_counts), list(src.confidence)]
    if w is None:
        return [[0] * len(v) for v in vectors]
    return vectors


router = APIRouter(tags=["history"])
read = [Depends(require("read"))]


def need_store(context: HubContext) -> Store:
    """The store, or 503."""
    if context.store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store is not running")
    return context.store


def need_registry(context: HubContext) -> Registry:
    """The registry, or 503."""
    if context.registry is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model registry")
    return context.registry


def span(hours: float, until: float | None) -> tuple[float, float]:
    end = time.time() if until is None else until
    return end - hours * HOUR_S, end


@router.get("/v1/devices/{device_id}/history", response_model=DeviceHistory, dependencies=read)
def history(
    ctx: Hub,
    device_id: DeviceId,
    hours: Hours = 6.0,
    until: Until = None,
    points: Annotated[int, Query(ge=1, le=2000)] = 240,
    role: Role = "active",
) -> DeviceHistory:
    """A device's health over time from its stored metric windows: per bucket
    (at most ``points`` equal buckets of the ``hours`` before ``until``; windows by
    their start) the predictions, the p95 latency and the error rate. 404 for an
    unknown device."""
    store = need_store(ctx)
    if store.device(device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    since, end = span(hours, until)
    windows = store.windows_for(device=device_id, since=since, role=role)
    try:
        width, found = device_history(windows, since, end, points)
    except EdgeFleetError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return DeviceHistory(
        device_id=device_id, role=role, since=since, until=end, bucket_s=width, points=found
    )


@router.get(
    "/v1/models/{name}/versions/{version}/drift/bins",
    response_model=DriftBins,
    dependencies=read,
)
def drift_bins(
    ctx: Hub,
    name: ModelName,
    version: Version,
    feature: Annotated[str | None, Query(max_length=200)] = None,
    device: Annotated[str | None, Query(pattern=_NAME_RE)] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    since: Annotated[float | None, Query(ge=0, le=2**40, allow_inf_nan=False)] = None,
    role: Role = "active",
) -> DriftBins:
    """The reference vs live histogram of one feature (default: the first) of a
    version, over the fleet, one ``device`` or a ``tag`` cohort, windows ending at
    or after ``since``. 404 for an unknown version, 400 for an unknown feature."""
    registry, store = need_registry(ctx), need_store(ctx)
    if registry.get(name, version) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model {name!r} v{version}")
    reference = registry.reference(name, version)
    names = [f.name for f in reference.features]
    if not names:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{name} v{version} has no features")
    chosen = names[0] if feature is None else feature
    if chosen not in names:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"feature: {name} v{version} has no feature {chosen[:60]!r} "
            f"(it has {', '.join(names[:20])})",
        )
    index = names.index(chosen)
    devices: list[str] | None = None if device is None else [device]
    if tag is not None:
        devices = store.cohort(tag, device)
    merged = store.merged_windows(name, version, role, devices=devices, since=since)
    fr = reference.features[index]
    ref_counts = list(fr.counts[:-1])
    total = sum(ref_counts)
    live, nan, n = [0] * len(ref_counts), 0, 0
    if merged:
        try:
            merged[0].check_reference(reference)
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        counts = merged[0].features[index].counts
        live, nan, n = list(counts[:-1]), counts[-1], merged[0].n
    return DriftBins(
        model=name,
        version=version,
        feature=chosen,
        features=names,
        edges=list(fr.edges),
        reference=[c / total if total else 0.0 for c in ref_counts],
        reference_counts=ref_counts,
        live=live,
        live_nan=nan,
        n=n,
        since=since,
    )


@router.get(
    "/v1/models/{name}/versions/{version}/drift/history",
    response_model=DriftHistory,
    dependencies=read,
)
def drift_history(
    ctx: Hub,
    name: ModelName,
    version: Version,
    hours: Hours = 24.0,
    until: Until = None,
    device: Annotated[str | None, Query(pattern=_NAME_RE)] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    role: Role = "active",
) -> DriftHistory:
    """PSI and the one rule's verdict per feature for each hour of the ``hours``
    before ``until`` (whole hours; each hour holds the windows that end in it), over
    the fleet, one ``device`` or a ``tag`` cohort. Each hour is the difference of
    two exact merges from the hourly roll-ups (everything since the hour, minus
    everything since the next), so a long history stays cheap on a large fleet.
    404 for an unknown version."""
    registry, store = need_registry(ctx), need_store(ctx)
    if registry.get(name, version) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model {name!r} v{version}")
    reference = registry.reference(name, version)
    since, end = span(hours, until)
    first, last = hour_of(since), hour_of(end - 1e-6) if end > since else hour_of(since)
    devices: list[str] | None = None if device is None else [device]
    if tag is not None:
        devices = store.cohort(tag, device)

    def since_hour(h: int) -> MetricsWindow | None:
        found = store.merged_windows(name, version, role, devices=devices, since=float(h * HOUR_S))
        return found[0] if found else None

    out: list[DriftHour] = []
    later = since_hour(last + 1)
    for h in range(last, first - 1, -1):
        total = since_hour(h)
        if total is None:
            later = None
            continue
        try:
            total.check_reference(reference)
            vectors = [
                [a - b for a, b in zip(t, p, strict=True)]
                for t, p in zip(_counts(total, total), _counts(later, total), strict=True)
            ]
        except (EdgeFleetError, ValueError) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        later_n = None if later is None else later.n
        later = total
        if any(c < 0 for v in vectors for c in v):
            # Not contained: windows were stored between the two reads; skip the hour.
            continue
        features, classes, confidence = vectors[:-2], vectors[-2], vectors[-1]
        n = total.n - (0 if later_n is None else later_n)
        if n <= 0:
            continue
        decided = decide_counts(
            reference,
            [f[:-1] for f in features],
            classes,
            confidence[:-1],
            thresholds=DEFAULT_THRESHOLDS,
        )
        per_feature = [
            FeaturePsi(
                name=d.name,
                psi=None if d.psi is None or not math.isfinite(d.psi) else d.psi,
                verdict=d.verdict,
            )
            for d in decided[: len(reference.features)]
        ]
        verdict = summarize(decided).verdict
        out.append(DriftHour(start=float(h * HOUR_S), n=n, features=per_feature, verdict=verdict))
    out.reverse()
    return DriftHistory(
        model=name,
        version=version,
        role=role,
        since=since,
        until=end,
        psi_threshold=DEFAULT_THRESHOLDS.psi,
        psi_major=DEFAULT_THRESHOLDS.psi_major,
        hours=out,
    )
