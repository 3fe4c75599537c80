"""The hash-chained audit log: ``GET /v1/audit`` (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hub.api.context import AdminToken, Hub
from hub.api.documents import AuditEntryOut, AuditPage

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=AuditPage)
def list_audit(
    context: Hub,
    _: AdminToken,
    after_id: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """The hash-chained audit log, oldest first, and whether the chain verifies."""
    audit = context.need_audit()
    result = audit.verify()
    return AuditPage(
        entries=[AuditEntryOut.model_validate(e.to_json()) for e in audit.entries(after_id, limit)],
        verified=result.ok,
        problem=None if result.ok else str(result),
    )
