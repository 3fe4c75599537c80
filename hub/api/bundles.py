"""Signed bundles: ``POST /v1/bundles`` registers one signed elsewhere, ``GET
/v1/bundles/{sha256}`` serves one (to a read token or a device's signed URL)."""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials

from hub.api.context import DeployToken, Hub, Sha256, bearer, sign_bundle_url
from hub.api.documents import VersionOut
from hub.errors import NotFoundError

router = APIRouter(tags=["models"])


@router.post(
    "/v1/bundles",
    status_code=201,
    response_model=VersionOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A signed bundle (``.efb``), as ``edgefleet bundle build`` writes it",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_bundle(request: Request, context: Hub, caller: DeployToken) -> VersionOut:
    """Register a bundle signed elsewhere (raw ``.efb`` body); it must verify (422)."""
    registry = context.need_registry()
    declared = int(request.headers.get("content-length", "0") or 0)
    if declared > context.max_upload_bytes:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "bundle too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > context.max_upload_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "bundle too large")
    version = registry.add_bundle(bytes(body))
    context.record(
        caller, "model.upload", f"{version.name}:{version.version}", sha256=version.sha256
    )
    return VersionOut.of(version)


@router.get(
    "/v1/bundles/{sha256}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The bundle file (``Range`` and ``ETag`` supported)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
def download_bundle(
    sha256: Sha256,
    context: Hub,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
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
    path = context.need_registry().bundle_path(sha256)
    if path is None:
        raise NotFoundError("no such bundle")
    return FileResponse(
        path, media_type="application/octet-stream", headers={"ETag": f'"{sha256}"'}
    )
