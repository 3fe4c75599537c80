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
    """Prometheus text format: ingest counters (implausible and clock-skewed messages also
    per device)."""
    counts = context.counters() if context.counters else {}
    lines = []
    for name, value in sorted(counts.items()):
        metric = f"edgefleet_ingest_{name}_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    for name, source in (
        ("implausible", context.implausible),
        ("clock_skewed", context.clock_skewed),
    ):
        per_device = source() if source else {}
        if per_device:
            metric = f"edgefleet_ingest_{name}_by_device_total"
            lines.append(f"# TYPE {metric} counter")
            lines += [f'{metric}{{device="{d}"}} {n}' for d, n in sorted(per_device.items())]
    return "\n".join(lines) + "\n"
