"""Models in the registry: push (build and sign on the hub), list, read, and drift of a
version: ``/v1/models/...``."""

from __future__ import annotations

import pathlib
import tempfile
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status

from edge_agent.contract.canonical import parse_json
from edge_agent.contract.input_schema import InputSchema
from edge_agent.errors import ValidationError
from hub.api.context import DeployToken, Hub, ModelName, ReadToken, Version
from hub.api.documents import (
    DriftDecisionOut,
    DriftOut,
    DriftReportOut,
    ModelList,
    ModelOut,
    VersionList,
    VersionOut,
)
from hub.bundler import load_reference
from hub.drift import DEFAULT_THRESHOLDS, DriftThresholds
from hub.errors import NotFoundError
from hub.operations import DriftScope

router = APIRouter(tags=["models"])


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes. Raises: HTTPException: 413 past ``limit``."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{upload.filename}: too large")
    return data


@router.post("/v1/models/{name}/push", status_code=201, response_model=VersionOut)
async def push_model(
    name: ModelName,
    context: Hub,
    caller: DeployToken,
    model: Annotated[UploadFile, File(description="The .tflite model")],
    reference: Annotated[UploadFile, File(description="Reference data: .npz or .csv")],
    schema_file: Annotated[
        UploadFile | None, File(alias="schema", description="Input schema JSON")
    ] = None,
    lineage: Annotated[str, Form()] = "{}",
    version: Annotated[int | None, Form(ge=1, le=2**53)] = None,
) -> VersionOut:
    """Build a bundle from a model and reference data, sign it with the hub's keys,
    and register it (the next version unless one is given). 422: the model, data,
    schema or lineage is refused."""
    registry = context.need_registry()
    limit = context.max_upload_bytes
    model_bytes = await read_limited(model, limit)
    suffix = ".csv" if (reference.filename or "").endswith(".csv") else ".npz"
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = pathlib.Path(tmp) / f"reference{suffix}"
        ref_path.write_bytes(await read_limited(reference, limit))
        ref = load_reference(ref_path)
    input_schema = None
    if schema_file is not None:
        raw = await read_limited(schema_file, 1 << 20)
        input_schema = InputSchema.from_json(parse_json(raw, "schema"))
    lineage_doc = parse_json(lineage.encode(), "lineage")
    if not isinstance(lineage_doc, dict):
        raise ValidationError("lineage: a JSON object")
    pushed = registry.push_model(
        model_bytes,
        name=name,
        version=version,
        reference=ref,
        schema=input_schema,
        lineage=lineage_doc,
    )
    context.record(caller, "model.push", f"{pushed.name}:{pushed.version}", sha256=pushed.sha256)
    return VersionOut.of(pushed)


@router.get("/v1/models", response_model=ModelList)
def list_models(context: Hub, _: ReadToken) -> ModelList:
    """Every model name with its latest version."""
    return ModelList(
        models=[
            ModelOut(name=m.name, latest_version=m.latest_version, created=m.created)
            for m in context.need_registry().list_models()
        ]
    )


@router.get("/v1/models/{name}/versions", response_model=VersionList)
def list_versions(name: ModelName, context: Hub, _: ReadToken) -> VersionList:
    """Every registered version of a model."""
    return VersionList(
        versions=[VersionOut.of(v) for v in context.need_registry().list_versions(name)]
    )


@router.get("/v1/models/{name}/versions/{version}", response_model=VersionOut)
def get_version(name: ModelName, version: Version, context: Hub, _: ReadToken) -> VersionOut:
    """One version: digest, size, status, tensors, quantization, lineage (404: unknown)."""
    found = context.need_registry().get(name, version)
    if found is None:
        raise NotFoundError(f"no model {name!r} v{version}")
    return VersionOut.of(found)


@router.get(
    "/v1/models/{name}/versions/{version}/drift",
    response_model=DriftOut,
    response_model_exclude_unset=True,
    tags=["drift"],
)
def model_drift(
    name: ModelName,
    version: Version,
    context: Hub,
    _: ReadToken,
    device: str | None = None,
    tag: str | None = None,
    since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    exact: bool = True,
    role: str = "active",
    min_count: Annotated[int, Query(ge=1, le=2**53)] = 1,
    alpha: Annotated[float, Query(gt=0.0, lt=1.0)] = DEFAULT_THRESHOLDS.alpha,
    psi: Annotated[float, Query(ge=0.0)] = DEFAULT_THRESHOLDS.psi or 0.0,
    js: Annotated[float, Query(ge=0.0, lt=1.0)] = DEFAULT_THRESHOLDS.js or 0.0,
) -> DriftOut:
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
    acting on (0 turns one off); ``min_count`` an extra floor on predictions. 404: an
    unknown version; 422: a rule that cannot be used."""
    queries = context.drift()
    if context.need_registry().get(name, version) is None:
        raise NotFoundError(f"no model {name!r} v{version}")
    rule = DriftThresholds(alpha=alpha, psi=psi or None, js=js or None)
    scope = DriftScope(name, version, role, device=device, tag=tag)
    measured = queries.fetch(scope, since, exact=exact)
    decision, report = measured.assess(thresholds=rule, min_count=min_count)
    return DriftOut(
        model=name,
        version=version,
        since=measured.since,
        n=0 if report is None else report.n,
        decision=DriftDecisionOut.model_validate(decision.to_json()),
        report=None if report is None else DriftReportOut.model_validate(report.to_json()),
    )
