"""Devices: ``GET /v1/devices``, ``GET /v1/devices/{id}``, ``POST /v1/devices/{id}/deploy``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hub.api.context import DeployToken, DeviceId, Hub, ReadToken
from hub.api.documents import (
    DeployOut,
    DeployRequest,
    DeviceDetail,
    DeviceOut,
    DevicePage,
)
from hub.drift import DriftVerdict
from hub.errors import NotFoundError

router = APIRouter(tags=["devices"])


@router.get("/v1/devices", response_model=DevicePage)
def list_devices(
    context: Hub,
    _: ReadToken,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    online: bool | None = None,
    tag: str | None = None,
    revoked: bool | None = False,
    include_revoked: bool = False,
    drift: Annotated[
        list[DriftVerdict] | None,
        Query(description="Keep devices whose drift verdict is one of these (repeatable)"),
    ] = None,
    faulty: Annotated[
        bool | None,
        Query(
            description="true: only devices not connected, whose last deployment failed, "
            "was refused or rolled back, or whose verdict is drift or major; false: the others"
        ),
    ] = None,
) -> DevicePage:
    """A page of devices in id order; pass the last id as ``after`` for the next.
    Revoked devices are listed only with ``revoked=true`` (just them) or
    ``include_revoked=true`` (everyone). Each device's ``drift`` is the one rule's
    verdict on its active version's windows of the previous and the current clock
    hour (``docs/drift.md``; kept up to ``DEFAULT_TTL_S`` seconds), null without a
    model or a registered version; ``drift`` and ``faulty`` filter by it."""
    store = context.need_store()
    verdicts = context.device_verdicts().current()
    ids = None if drift is None else verdicts.with_verdict(drift)
    page = store.list_devices(
        after=after,
        limit=limit,
        online=online,
        tag=tag,
        revoked=None if include_revoked else revoked,
        ids=ids,
        faulty=None if faulty is None else (faulty, verdicts.marked_faulty),
    )
    return DevicePage(
        devices=[DeviceOut(**DeviceOut.fields_of(d), drift=verdicts.verdict(d.id)) for d in page],
        next=page[-1].id if len(page) == limit else None,
    )


@router.get("/v1/devices/{device_id}", response_model=DeviceDetail)
def get_device(device_id: DeviceId, context: Hub, _: ReadToken) -> DeviceDetail:
    """One device's state, models, health and metric sequence (404: unknown)."""
    store = context.need_store()
    device = store.device(device_id)
    if device is None:
        raise NotFoundError(f"no device {device_id!r}")
    fields = DeviceOut.fields_of(device)
    verdict = context.device_verdicts().current().verdict(device_id)
    return DeviceDetail(**fields, drift=verdict, metrics_seq=store.contiguous(device_id))


@router.post("/v1/devices/{device_id}/deploy", status_code=201, response_model=DeployOut)
def deploy(
    device_id: DeviceId, body: DeployRequest, context: Hub, caller: DeployToken
) -> DeployOut:
    """Sign and publish a device's desired state: a registered model version, active
    or in shadow; a version below the installed one needs ``downgrade``. 404: no such
    version; 409: the device is revoked; 422: the directive was refused."""
    d = context.deployer().deploy(
        device_id,
        body.name,
        body.version,
        actor=f"token:{caller.id}:{caller.name}",
        mode=body.mode,
        downgrade=body.downgrade,
        probation=body.probation,
        ttl_s=body.ttl_s,
    )
    return DeployOut(
        device_id=device_id,
        seq=d.seq,
        model=d.model.name,
        version=d.model.version,
        mode=d.mode,
        expires_at=d.expires_at,
    )
