"""The hub's HTTP API (FastAPI): authentication and the endpoints built so far.

Every endpoint except ``/healthz`` needs ``Authorization: Bearer efb_...``; a missing
or unknown token gets 401, a token without the endpoint's scope 403 — never data.
The OpenAPI document is at ``/openapi.json`` (and ``/docs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import pathlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    UploadFile,
    status,
)
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from edge_agent import __version__
from edge_agent.contract.canonical import parse_json
from edge_agent.contract.directive import ModelRef, Probation
from edge_agent.contract.input_schema import InputSchema
from edge_agent.errors import EdgeFleetError
from hub.api_fleet import fleet_router
from hub.api_guard import BodyGuard, install_error_handlers
from hub.api_history import history_router
from hub.audit import AuditLog
from hub.bundler import load_reference
from hub.directives import DirectivePublisher, DirectiveSigner
from hub.drift import DEFAULT_THRESHOLDS, DriftError, DriftThresholds, drift_decision, drift_report
from hub.registry import ModelVersion as RegistryVersion
from hub.registry import Registry
from hub.rollout import RolloutSpec
from hub.rollout_runner import RolloutRunner
from hub.rollups import HOUR_S, hour_of
from hub.store import DeviceRecord, Store
from hub.tokens import SCOPES, TokenError, TokenInfo, TokenStore

_bearer = HTTPBearer(auto_error=False)

# Path parameters, checked before a handler runs (a bad one is a 400, never a lookup).
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DeviceId = Annotated[str, Path(pattern=_NAME_RE, description="A device id")]
ModelName = Annotated[str, Path(pattern=_NAME_RE, description="A model name")]
RolloutId = Annotated[str, Path(pattern=_NAME_RE, description="A rollout id")]
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,64}$", description="A token id")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex digits")]
Version = Annotated[int, Path(ge=1, le=2**53, description="A model version")]


@dataclass
class HubContext:
    """What the API serves from (grows as the hub does); parts may be absent in tests."""

    tokens: TokenStore
    store: Store | None = None
    audit: AuditLog | None = None
    counters: Callable[[], dict[str, int]] | None = None
    implausible: Callable[[], dict[str, int]] | None = None  # refused messages per device
    registry: Registry | None = None
    url_secret: bytes = b""  # signs short-lived bundle download URLs for devices
    max_upload_bytes: int = 512 << 20
    signer: DirectiveSigner | None = None
    publisher: DirectivePublisher | None = None
    public_url: str = ""  # the API's URL as devices reach it (for bundle links)
    url_ttl_s: int = 7 * 24 * 3600
    runner: RolloutRunner | None = None

    def bundle_url(self, sha256: str) -> str:
        """A download URL for a bundle, signed for ``url_ttl_s`` (devices need no token)."""
        expires = int(time.time()) + self.url_ttl_s
        sig = sign_bundle_url(self.url_secret, sha256, expires)
        return f"{self.public_url}/v1/bundles/{sha256}?expires={expires}&sig={sig}"


class DeployRequest(BaseModel):
    """Body of ``POST /v1/devices/{id}/deploy``."""

    name: str
    version: int = Field(ge=1, le=2**53)
    mode: Literal["active", "shadow"] = "active"
    downgrade: bool = False
    probation: dict[str, Any] | None = None
    ttl_s: int = Field(default=7 * 24 * 3600, ge=60)


def sign_bundle_url(secret: bytes, sha256: str, expires: int) -> str:
    """The signature of a device download URL for ``sha256`` valid until ``expires``."""
    return hmac.new(secret, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{upload.filename}: too large")
    return data


def _version_json(v: RegistryVersion) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "sha256": v.sha256,
        "size": v.size,
        "created": v.created,
        "status": v.status.value,
        "quantization": v.quantization,
        "lineage": v.lineage,
        "inputs": [t.to_json() for t in v.inputs],
        "outputs": [t.to_json() for t in v.outputs],
    }


def _device_json(d: DeviceRecord) -> dict[str, Any]:
    def model(m: Any) -> dict[str, Any] | None:
        return m.to_json() if m is not None else None

    return {
        "id": d.id,
        "tags": list(d.tags),
        "enrolled_at": d.enrolled_at,
        "last_seen": d.last_seen,
        "online": d.online,
        "offline_since": d.offline_since,
        "active": model(d.active),
        "previous": model(d.previous),
        "shadow": model(d.shadow),
        "health": d.health,
        "buffer_depth": d.buffer_depth,
        "revoked_at": d.revoked_at,
    }


class TokenRequest(BaseModel):
    """Body of ``POST /v1/tokens``."""

    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1)


def require(scope: str) -> Callable[..., TokenInfo]:
    """A dependency that authenticates the caller and checks ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        app_context: Annotated[HubContext, Depends(_context)],
    ) -> TokenInfo:
        info = app_context.tokens.authenticate(credentials.credentials) if credentials else None
        if info is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing, unknown or revoked token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not info.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the {scope!r} scope")
        return info

    return dependency


def _context() -> HubContext:  # replaced per app through dependency_overrides
    raise RuntimeError("the API was created without a hub context")


def create_app(context: HubContext) -> FastAPI:
    """Build the FastAPI application serving ``context``."""
    app = FastAPI(title="EdgeFleet hub", version=__version__)
    stopping = threading.Event()  # set by ApiServer.stop: open event streams end
    app.state.stopping = stopping
    app.dependency_overrides[_context] = lambda: context
    install_error_handlers(app)
    app.include_router(fleet_router(context, require))
    app.include_router(history_router(context, require))
    # Two files (model and reference) at their limit, plus the form's own bytes.
    app.add_middleware(
        BodyGuard, tokens=context.tokens, max_body_bytes=2 * context.max_upload_bytes + (1 << 20)
    )

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: no authentication, no data."""
        return {"status": "ok", "version": __version__}

    def need_store() -> Store:
        if context.store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store is not running")
        return context.store

    def audit(token: TokenInfo, action: str, target: str, **details: Any) -> None:
        if context.audit is not None:
            context.audit.append(f"token:{token.id}:{token.name}", action, target, details)

    @app.get("/v1/devices", tags=["devices"])
    def list_devices(
        _: Annotated[TokenInfo, Depends(require("read"))],
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        online: bool | None = None,
        tag: str | None = None,
        revoked: bool | None = False,
        include_revoked: bool = False,
    ) -> dict[str, Any]:
        """A page of devices in id order; pass the last id as ``after`` for the next.
        Revoked devices are listed only with ``revoked=true`` (just them) or
        ``include_revoked=true`` (everyone)."""
        page = need_store().list_devices(
            after=after,
            limit=limit,
            online=online,
            tag=tag,
            revoked=None if include_revoked else revoked,
        )
        return {
            "devices": [_device_json(d) for d in page],
            "next": page[-1].id if len(page) == limit else None,
        }

    @app.get("/v1/devices/{device_id}", tags=["devices"])
    def get_device(
        device_id: DeviceId, _: Annotated[TokenInfo, Depends(require("read"))]
    ) -> dict[str, Any]:
        """One device's state, models, health and metric sequence."""
        store = need_store()
        device = store.device(device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        return {**_device_json(device), "metrics_seq": store.contiguous(device_id)}

    @app.get("/v1/events", tags=["events"])
    def list_events(
        _: Annotated[TokenInfo, Depends(require("read"))],
        device: str | None = None,
        after_id: Annotated[int, Query(ge=0, le=2**53)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Deployment events, oldest first; pass the last id as ``after_id`` for the next."""
        page = need_store().events(device=device, after_id=after_id, limit=limit)
        return {
            "events": [{"id": r.id, **json.loads(r.event.to_bytes())} for r in page],
            "next": page[-1].id if len(page) == limit else None,
        }

    @app.post("/v1/devices/{device_id}/deploy", status_code=201, tags=["devices"])
    def deploy(
        device_id: DeviceId,
        body: DeployRequest,
        caller: Annotated[TokenInfo, Depends(require("deploy"))],
    ) -> dict[str, Any]:
        """Sign and publish a device's desired state: a registered model version, active
        or in shadow; a version below the installed one needs ``downgrade``."""
        registry = need_registry()
        if context.signer is None or context.publisher is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "directives unavailable")
        if context.store is not None and context.store.is_revoked(device_id):
            raise HTTPException(status.HTTP_409_CONFLICT, f"device {device_id!r} is revoked")
        found = registry.get(body.name, body.version)
        if found is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no model {body.name!r} v{body.version}"
            )
        try:
            probation = Probation.from_json(body.probation, "probation") if body.probation else None
            url = context.bundle_url(found.sha256)
            ref = ModelRef(found.name, found.version, found.sha256, found.size, (url,))
            signed = context.signer.make(
                device_id,
                ref,
                mode=body.mode,
                downgrade=body.downgrade,
                probation=probation,
                ttl_s=body.ttl_s,
            )
            context.publisher.publish(signed)
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        d = signed.directive
        audit(
            caller,
            "directive.publish",
            device_id,
            seq=d.seq,
            model=d.model.name,
            version=d.model.version,
            mode=d.mode,
            downgrade=d.downgrade,
        )
        return {
            "device_id": device_id,
            "seq": d.seq,
            "model": d.model.name,
            "version": d.model.version,
            "mode": d.mode,
            "expires_at": d.expires_at,
        }

    def need_runner() -> RolloutRunner:
        if context.runner is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "rollouts unavailable")
        return context.runner

    @app.post("/v1/rollouts", status_code=201, tags=["rollouts"])
    def start_rollout(
        body: dict[str, Any], caller: Annotated[TokenInfo, Depends(require("deploy"))]
    ) -> dict[str, Any]:
        """Start a staged rollout (the spec's JSON, see ``hub.rollout.RolloutSpec``)."""
        runner = need_runner()
        try:
            rollout = runner.create(RolloutSpec.from_json(body), actor=f"token:{caller.id}")
        except EdgeFleetError as exc:
            code = status.HTTP_409_CONFLICT if "already" in str(exc) else 422
            raise HTTPException(code, str(exc)) from exc
        return rollout.to_json()

    @app.get("/v1/rollouts", tags=["rollouts"])
    def list_rollouts(
        _: Annotated[TokenInfo, Depends(require("read"))], active: bool = False
    ) -> dict[str, Any]:
        """Rollouts, newest last, with their state, stage and last gate results."""
        return {
            "rollouts": [
                s.rollout.to_json() for s in need_runner().rollouts.list(active_only=active)
            ]
        }

    # rollout id -> (when, its state and stage then, the stages' devices)
    breakdowns: dict[str, tuple[float, tuple[str, int], list[dict[str, Any]]]] = {}

    @app.get("/v1/rollouts/{rollout_id}", tags=["rollouts"])
    def get_rollout(
        rollout_id: RolloutId,
        _: Annotated[TokenInfo, Depends(require("read"))],
        devices: bool = False,
    ) -> dict[str, Any]:
        """One rollout: spec, state, stage, history, touched devices, gate values; with
        ``devices=true`` also ``stage_devices``: per stage, the devices it adds by status,
        offline and never seen (counted at most every 2 s)."""
        runner = need_runner()
        try:
            r = runner.rollouts.get(rollout_id).rollout
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        doc = r.to_json()
        if devices:
            now, where = time.monotonic(), (r.state.value, r.stage)
            cached = breakdowns.get(rollout_id)
            if cached is None or cached[1] != where or not 0 <= now - cached[0] < 2.0:
                cached = (now, where, [s.to_json() for s in runner.stage_devices(r)])
                breakdowns[rollout_id] = cached
            doc["stage_devices"] = cached[2]
        return doc

    @app.post("/v1/rollouts/{rollout_id}/{command}", tags=["rollouts"])
    def rollout_command(
        rollout_id: RolloutId,
        command: Literal["pause", "resume", "promote", "abort", "rollback"],
        caller: Annotated[TokenInfo, Depends(require("deploy"))],
    ) -> dict[str, Any]:
        """Pause, resume, promote (approve), abort or roll back a rollout: 404 for an
        unknown rollout, 409 for a command its state forbids."""
        runner = need_runner()
        try:
            runner.rollouts.get(rollout_id)
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        try:
            r = runner.command(rollout_id, command, actor=f"token:{caller.id}")
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        return r.to_json()

    @app.get("/v1/events/stream", tags=["events"])
    async def stream_events(
        _: Annotated[TokenInfo, Depends(require("read"))],
        device: str | None = None,
        after_id: Annotated[int, Query(ge=0, le=2**53)] = 0,
        max_events: Annotated[int | None, Query(ge=1, le=2**53)] = None,
    ) -> StreamingResponse:
        """Server-sent events: every new deployment event as ``data: {json}`` with its id
        (resume with ``after_id``); ``max_events`` ends the stream after that many."""
        store = need_store()

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

    @app.get("/v1/audit", tags=["audit"])
    def list_audit(
        _: Annotated[TokenInfo, Depends(require("admin"))],
        after_id: Annotated[int, Query(ge=0, le=2**53)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The hash-chained audit log, oldest first, and whether the chain verifies."""
        if context.audit is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no audit log")
        result = context.audit.verify()
        return {
            "entries": [e.to_json() for e in context.audit.entries(after_id, limit)],
            "verified": result.ok,
            "problem": None if result.ok else str(result),
        }

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(_: Annotated[TokenInfo, Depends(require("read"))]) -> str:
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

    def need_registry() -> Registry:
        if context.registry is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model registry")
        return context.registry

    @app.post("/v1/bundles", status_code=201, tags=["models"])
    async def upload_bundle(
        request: Request, caller: Annotated[TokenInfo, Depends(require("deploy"))]
    ) -> dict[str, Any]:
        """Register a bundle signed elsewhere (raw ``.efb`` body); it must verify."""
        registry = need_registry()
        declared = int(request.headers.get("content-length", "0") or 0)
        if declared > context.max_upload_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "bundle too large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > context.max_upload_bytes:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "bundle too large")
        try:
            version = registry.add_bundle(bytes(body))
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        audit(caller, "model.upload", f"{version.name}:{version.version}", sha256=version.sha256)
        return _version_json(version)

    @app.post("/v1/models/{name}/push", status_code=201, tags=["models"])
    async def push_model(
        name: ModelName,
        caller: Annotated[TokenInfo, Depends(require("deploy"))],
        model: Annotated[UploadFile, File(description="The .tflite model")],
        reference: Annotated[UploadFile, File(description="Reference data: .npz or .csv")],
        schema_file: Annotated[
            UploadFile | None, File(alias="schema", description="Input schema JSON")
        ] = None,
        lineage: Annotated[str, Form()] = "{}",
        version: Annotated[int | None, Form(ge=1, le=2**53)] = None,
    ) -> dict[str, Any]:
        """Build a bundle from a model and reference data, sign it with the hub's keys,
        and register it (the next version unless one is given)."""
        registry = need_registry()
        try:
            model_bytes = await _read_limited(model, context.max_upload_bytes)
            suffix = ".csv" if (reference.filename or "").endswith(".csv") else ".npz"
            with tempfile.TemporaryDirectory() as tmp:
                ref_path = pathlib.Path(tmp) / f"reference{suffix}"
                ref_path.write_bytes(await _read_limited(reference, context.max_upload_bytes))
                ref = load_reference(ref_path)
            input_schema = None
            if schema_file is not None:
                raw = await _read_limited(schema_file, 1 << 20)
                input_schema = InputSchema.from_json(parse_json(raw, "schema"))
            lineage_doc = parse_json(lineage.encode(), "lineage")
            if not isinstance(lineage_doc, dict):
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "lineage: a JSON object")
            pushed = registry.push_model(
                model_bytes,
                name=name,
                version=version,
                reference=ref,
                schema=input_schema,
                lineage=lineage_doc,
            )
        except EdgeFleetError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        audit(caller, "model.push", f"{pushed.name}:{pushed.version}", sha256=pushed.sha256)
        return _version_json(pushed)

    @app.get("/v1/models", tags=["models"])
    def list_models(_: Annotated[TokenInfo, Depends(require("read"))]) -> dict[str, Any]:
        """Every model name with its latest version."""
        return {
            "models": [
                {"name": m.name, "latest_version": m.latest_version, "created": m.created}
                for m in need_registry().list_models()
            ]
        }

    @app.get("/v1/models/{name}/versions", tags=["models"])
    def list_versions(
        name: ModelName, _: Annotated[TokenInfo, Depends(require("read"))]
    ) -> dict[str, Any]:
        """Every registered version of a model."""
        return {"versions": [_version_json(v) for v in need_registry().list_versions(name)]}

    @app.get("/v1/models/{name}/versions/{version}", tags=["models"])
    def get_version(
        name: ModelName, version: Version, _: Annotated[TokenInfo, Depends(require("read"))]
    ) -> dict[str, Any]:
        """One version: digest, size, status, tensors, quantization, lineage."""
        found = need_registry().get(name, version)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model {name!r} v{version}")
        return _version_json(found)

    @app.get("/v1/models/{name}/versions/{version}/drift", tags=["drift"])
    def model_drift(
        name: ModelName,
        version: Version,
        _: Annotated[TokenInfo, Depends(require("read"))],
        device: str | None = None,
        tag: str | None = None,
        since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        exact: bool = True,
        role: str = "active",
        min_count: Annotated[int, Query(ge=1, le=2**53)] = 1,
        alpha: Annotated[float, Query(gt=0.0, lt=1.0)] = DEFAULT_THRESHOLDS.alpha,
        psi: Annotated[float, Query(ge=0.0)] = DEFAULT_THRESHOLDS.psi or 0.0,
        js: Annotated[float, Query(ge=0.0, lt=1.0)] = DEFAULT_THRESHOLDS.js or 0.0,
    ) -> dict[str, Any]:
        """Drift of a version over the fleet, one device, or a tag cohort: the devices'
        counts are merged first, then decided with the one rule (``docs/drift.md``):
        every feature, the predictions and the confidences get a verdict
        (``insufficient`` / ``none`` / ``minor`` / ``drift`` / ``major``) with its
        evidence (n, m, chi-square statistic and df, p-value, Holm threshold, effect
        sizes, evidence needed); ``decision`` is the report's one verdict.

        Windows ending at or after ``since`` count, exactly: whole hours come from the
        hourly roll-ups, the partial hour from the stored windows. ``exact=false`` moves
        ``since`` back to the start of its hour (roll-ups only). ``alpha`` is the
        family-wise false-alarm rate of the report; ``psi`` / ``js`` the effect worth
        acting on (0 turns one off); ``min_count`` an extra floor on predictions."""
        registry, store = need_registry(), need_store()
        if registry.get(name, version) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model {name!r} v{version}")
        try:
            rule = DriftThresholds(alpha=alpha, psi=psi or None, js=js or None)
        except DriftError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        devices: list[str] | None = None if device is None else [device]
        if tag is not None:
            devices = store.cohort(tag, device)
        if since is not None and not exact and (devices is None or len(devices) > 1):
            since = float(hour_of(since) * HOUR_S)
        windows = store.merged_windows(name, version, role, devices=devices, since=since)
        head = {"model": name, "version": version, "since": since}
        reference = registry.reference(name, version)
        if not windows:
            decision = drift_decision(reference, [], thresholds=rule, min_count=min_count)
            return {**head, "n": 0, "decision": decision.to_json(), "report": None}
        report = drift_report(reference, windows, min_count=min_count, thresholds=rule)
        return {
            **head,
            "n": report.n,
            "decision": report.decision.to_json(),
            "report": report.to_json(),
        }

    @app.get("/v1/bundles/{sha256}", tags=["models"])
    def download_bundle(
        sha256: Sha256,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        expires: int | None = None,
        sig: str | None = None,
    ) -> FileResponse:
        """A bundle file (``Range`` and ``ETag`` supported), for a read token or a signed URL."""
        token = context.tokens.authenticate(credentials.credentials) if credentials else None
        signed = (
            expires is not None
            and sig is not None
            and bool(context.url_secret)
            and expires >= time.time()
            and hmac.compare_digest(sig, sign_bundle_url(context.url_secret, sha256, expires))
        )
        if not signed and (token is None or not token.allows("read")):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a read token or a signed URL",
                headers={"WWW-Authenticate": "Bearer"},
            )
        path = need_registry().bundle_path(sha256)
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such bundle")
        return FileResponse(
            path, media_type="application/octet-stream", headers={"ETag": f'"{sha256}"'}
        )

    @app.get("/v1/whoami", tags=["tokens"])
    def whoami(token: Annotated[TokenInfo, Depends(require("read"))]) -> dict[str, Any]:
        """The calling token's id, name and scopes."""
        return {"id": token.id, "name": token.name, "scopes": sorted(token.scopes)}

    @app.get("/v1/tokens", tags=["tokens"])
    def list_tokens(
        _: Annotated[TokenInfo, Depends(require("admin"))],
    ) -> list[dict[str, Any]]:
        """Every token's id, name, scopes and state (never a secret)."""
        return [
            {"id": t.id, "name": t.name, "scopes": sorted(t.scopes), "revoked": t.revoked}
            for t in context.tokens.list()
        ]

    @app.post("/v1/tokens", status_code=201, tags=["tokens"])
    def create_token(
        body: TokenRequest, caller: Annotated[TokenInfo, Depends(require("admin"))]
    ) -> dict[str, Any]:
        """Create a token; its secret is in this response only."""
        try:
            text, info = context.tokens.create(body.name, body.scopes)
        except TokenError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        audit(caller, "token.create", info.id, name=info.name, scopes=sorted(info.scopes))
        return {"id": info.id, "token": text, "scopes": sorted(info.scopes)}

    @app.delete("/v1/tokens/{token_id}", status_code=204, tags=["tokens"])
    def revoke_token(
        token_id: TokenId, caller: Annotated[TokenInfo, Depends(require("admin"))]
    ) -> None:
        """Revoke a token."""
        try:
            context.tokens.revoke(token_id)
        except TokenError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        audit(caller, "token.revoke", token_id)

    return app


class ApiServer:
    """uvicorn serving an app on ``host:port`` in a background thread (``port=0``: any)."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_cert: pathlib.Path | None = None,
        tls_key: pathlib.Path | None = None,
    ) -> None:
        """Configure; :meth:`start` binds and serves (HTTPS with ``tls_cert``/``tls_key``).

        Raises:
            ValueError: only one of ``tls_cert`` and ``tls_key`` is given.
        """
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("hub API: TLS needs both a certificate and its key")
        self.tls = tls_cert is not None
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            # An open event stream never ends by itself: at shutdown, connections get
            # 2 s to finish, then their tasks are cancelled (stop() used to hang 10 s).
            timeout_graceful_shutdown=2,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, once started."""
        sockets = self.server.servers[0].sockets if self.server.servers else []
        host, port = sockets[0].getsockname()[:2] if sockets else (self.config.host, 0)
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def start(self, timeout: float = 10.0) -> ApiServer:
        """Serve in a background thread; returns once the socket listens.

        Raises:
            RuntimeError: the server did not start in time.
        """
        self._thread = threading.Thread(target=self.server.run, name="hub-api", daemon=True)
        self._thread.start()
        started = threading.Event()

        def wait() -> None:
            while not self.server.started and self._thread and self._thread.is_alive():
                self._thread.join(0.01)
            started.set()

        threading.Thread(target=wait, daemon=True).start()
        if not started.wait(timeout) or not self.server.started:
            raise RuntimeError("the hub API did not start")
        return self

    def stop(self) -> None:
        """Stop serving (open event streams end first) and wait for the thread."""
        stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
        if isinstance(stopping, threading.Event):
            stopping.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
