"""The alerter's recorded transitions: ``GET /v1/alerts``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from hub.alerts import read_alerts
from hub.api.context import Hub, ReadToken
from hub.api.documents import AlertOut, AlertPage

router = APIRouter(tags=["fleet"])


@router.get("/v1/alerts", response_model=AlertPage)
def list_alerts(
    context: Hub,
    _: ReadToken,
    state: Literal["firing", "resolved"] | None = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    before_id: Annotated[int | None, Query(ge=1, le=2**53)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertPage:
    """The alerter's recorded transitions (``hub serve --alerts``), newest first:
    ``state`` keeps the firing or resolved ones, ``open=true`` only the firings
    still in force; pass the last id as ``before_id`` for the next page. A hub
    without alert rules has none. 503: the alerts table cannot be read."""
    log = read_alerts(
        context.need_store().path,
        state=state,
        open_only=open_only,
        before_id=before_id,
        limit=limit,
    )
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
