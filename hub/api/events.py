"""Deployment events: ``GET /v1/events`` (pages) and ``GET /v1/events/stream`` (SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hub.api.context import Hub, ReadToken
from hub.api.documents import EventOut, EventPage

router = APIRouter(tags=["events"])


@router.get("/v1/events", response_model=EventPage)
def list_events(
    context: Hub,
    _: ReadToken,
    device: str | None = None,
    after_id: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """Deployment events, oldest first; pass the last id as ``after_id`` for the next."""
    page = context.need_store().events(device=device, after_id=after_id, limit=limit)
    return EventPage(
        events=[EventOut.of(r) for r in page],
        next=page[-1].id if len(page) == limit else None,
    )


@router.get(
    "/v1/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "``id: <id>``, ``event: deployment``, ``data: <an event, as"
            " /v1/events lists it>`` per event; ``: keep-alive`` comments when idle",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_events(
    context: Hub,
    _: ReadToken,
    device: str | None = None,
    after_id: Annotated[int, Query(ge=0, le=2**53)] = 0,
    max_events: Annotated[int | None, Query(ge=1, le=2**53)] = None,
) -> StreamingResponse:
    """Server-sent events: every new deployment event as ``data: {json}`` with its id
    (resume with ``after_id``); ``max_events`` ends the stream after that many."""
    store, stopping = context.need_store(), context.stopping

    async def generate() -> AsyncIterator[str]:
        last, sent, idle = after_id, 0, 0.0
        while (max_events is None or sent < max_events) and not stopping.is_set():
            page = await asyncio.to_thread(store.events, device, last, 100)
            for record in page:
                body = json.dumps({"id": record.id, **json.loads(record.event.to_bytes())})
                yield f"id: {record.id}\nevent: deployment\ndata: {body}\n\n"
                last, sent = record.id, sent + 1
                if max_events is not None and sent >= max_events:
                    return
            if not page:
                idle += 0.25
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.25)  # the store's index makes this poll cheap

    return StreamingResponse(
        generate(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
