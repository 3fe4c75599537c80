"""Liveness and the Prometheus counters: ``GET /healthz``, ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from edge_agent import __version__
from hub.api.context import Hub, ReadToken
from hub.api.documents import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """Liveness: no authentication, no data."""
    return HealthOut(status="ok", version=__version__)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(context: Hub, _: ReadToken) -> str:
    """Prometheus text format: ingest counters."""
    counts = context.counters() if context.counters else {}
    lines = []
    for name, value in sorted(counts.items()):
        metric = f"edgefleet_ingest_{name}_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    per_device = context.implausible() if context.implausible else {}
    if per_device:
        metric = "edgefleet_ingest_implausible_by_device_total"
        lines.append(f"# TYPE {metric} counter")
        lines += [f'{metric}{{device="{d}"}} {n}' for d, n in sorted(per_device.items())]
    return "\n".join(lines) + "\n"
