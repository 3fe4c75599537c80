"""Staged rollouts: start, list, read (with per-stage devices) and steer them."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request

from edge_agent.contract.canonical import parse_json
from hub.api.context import DeployToken, Hub, ReadToken, RolloutId
from hub.api.documents import RolloutDetail, RolloutList, RolloutOut
from hub.rollouts import RolloutSpec

router = APIRouter(tags=["rollouts"])

SPEC_BODY = (
    "The rollout spec (``hub.rollouts.RolloutSpec``): the document a rollout shows as"
    " ``spec``, every field given (``on_insufficient`` may be left out)"
)
#: How long a rollout's per-stage device counts serve every caller.
BREAKDOWN_TTL_S = 2.0


async def spec_body(request: Request) -> Any:
    """The request's JSON body, parsed strictly (the spec checks its own fields).

    Raises:
        ValidationError: not UTF-8 JSON.
    """
    return parse_json(await request.body(), "rollout")


@router.post(
    "/v1/rollouts",
    status_code=201,
    response_model=RolloutOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": SPEC_BODY,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RolloutSpecOut"}}
            },
        }
    },
)
def start_rollout(
    context: Hub,
    caller: DeployToken,  # before the body: an under-scoped token gets 403, never 422
    body: Annotated[Any, Depends(spec_body)],
) -> RolloutOut:
    """Start a staged rollout. 409: its id is in use, or its devices are already in an
    active rollout of the model; 422: a malformed spec or an unregistered version."""
    runner = context.need_runner()
    rollout = runner.create(RolloutSpec.from_json(body), actor=f"token:{caller.id}")
    return RolloutOut.model_validate(rollout.to_json())


@router.get("/v1/rollouts", response_model=RolloutList)
def list_rollouts(context: Hub, _: ReadToken, active: bool = False) -> RolloutList:
    """Rollouts, newest last, with their state, stage and last gate results."""
    stored = context.need_runner().rollouts.list(active_only=active)
    return RolloutList(rollouts=[RolloutOut.model_validate(s.rollout.to_json()) for s in stored])


@router.get(
    "/v1/rollouts/{rollout_id}", response_model=RolloutDetail, response_model_exclude_unset=True
)
def get_rollout(
    rollout_id: RolloutId, context: Hub, _: ReadToken, devices: bool = False
) -> RolloutDetail:
    """One rollout: spec, state, stage, history, touched devices, gate values; with
    ``devices=true`` also ``stage_devices``: per stage, the devices it adds by status,
    offline and never seen (counted at most every 2 s). 404: unknown."""
    runner = context.need_runner()
    r = runner.rollouts.get(rollout_id).rollout
    doc = r.to_json()
    if devices:
        # rollout id -> (when, its state and stage then, the stages' devices)
        breakdowns: dict[str, tuple[float, tuple[str, int], list[dict[str, Any]]]]
        breakdowns = context.cache.setdefault("stage_devices", {})
        now, where = time.monotonic(), (r.state.value, r.stage)
        cached = breakdowns.get(rollout_id)
        if cached is None or cached[1] != where or not 0 <= now - cached[0] < BREAKDOWN_TTL_S:
            cached = (now, where, [s.to_json() for s in runner.stage_devices(r)])
            breakdowns[rollout_id] = cached
        doc["stage_devices"] = cached[2]
    return RolloutDetail.model_validate(doc)


@router.post("/v1/rollouts/{rollout_id}/{command}", response_model=RolloutOut)
def rollout_command(
    rollout_id: RolloutId,
    command: Literal["pause", "resume", "promote", "abort", "rollback"],
    context: Hub,
    caller: DeployToken,
) -> RolloutOut:
    """Pause, resume, promote (approve), abort or roll back a rollout: 404 for an
    unknown rollout, 409 for a command its state forbids."""
    r = context.need_runner().command(rollout_id, command, actor=f"token:{caller.id}")
    return RolloutOut.model_validate(r.to_json())
