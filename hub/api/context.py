"""What every route serves from, and the dependencies routes declare: the hub's parts
(:class:`HubContext`), the caller's token with a scope (:func:`require`), and the
checked path parameters.

Every endpoint except ``/healthz`` needs ``Authorization: Bearer efb_...``; a missing
or unknown token gets 401, a token without the endpoint's scope 403 — never data.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_agent.contract.reference import ReferenceStats
from hub.audit import AuditLog
from hub.device_drift import DeviceVerdicts
from hub.dispatch import DirectivePublisher, DirectiveSigner
from hub.errors import UnavailableError
from hub.operations import Deployer, DriftQueries
from hub.registry import Registry
from hub.rollouts.runner import RolloutRunner
from hub.store import Store
from hub.tokens import SCOPES, TokenInfo, TokenStore

bearer = HTTPBearer(auto_error=False)

# Path parameters, checked before a handler runs (a bad one is a 400, never a lookup).
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DeviceId = Annotated[str, Path(pattern=_NAME_RE, description="A device id")]
ModelName = Annotated[str, Path(pattern=_NAME_RE, description="A model name")]
RolloutId = Annotated[str, Path(pattern=_NAME_RE, description="A rollout id")]
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,64}$", description="A token id")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex digits")]
Version = Annotated[int, Path(ge=1, le=2**53, description="A model version")]


def sign_bundle_url(secret: bytes, sha256: str, expires: int) -> str:
    """The signature of a device download URL for ``sha256`` valid until ``expires``."""
    return hmac.new(secret, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()


@dataclass
class HubContext:
    """What the API serves from (grows as the hub does); parts may be absent in tests,
    and a route that needs an absent part answers 503."""

    tokens: TokenStore
    store: Store | None = None
    audit: AuditLog | None = None
    counters: Callable[[], dict[str, int]] | None = None
    implausible: Callable[[], dict[str, int]] | None = None  # refused messages per device
    clock_skewed: Callable[[], dict[str, int]] | None = None  # restamped messages per device
    registry: Registry | None = None
    url_secret: bytes = b""  # signs short-lived bundle download URLs for devices
    max_upload_bytes: int = 512 << 20
    signer: DirectiveSigner | None = None
    publisher: DirectivePublisher | None = None
    public_url: str = ""  # the API's URL as devices reach it (for bundle links)
    url_ttl_s: int = 7 * 24 * 3600
    runner: RolloutRunner | None = None
    #: Set when the API stops: open event streams end.
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Answers kept briefly per app (the fleet summary, rollout stage breakdowns).
    cache: dict[str, Any] = field(default_factory=dict)
    #: Each device's drift verdict and faults (made on first use when None).
    verdicts: DeviceVerdicts | None = None

    def bundle_url(self, sha256: str) -> str:
        """A download URL for a bundle, signed for ``url_ttl_s`` (devices need no token)."""
        expires = int(time.time()) + self.url_ttl_s
        sig = sign_bundle_url(self.url_secret, sha256, expires)
        return f"{self.public_url}/v1/bundles/{sha256}?expires={expires}&sig={sig}"

    def need_store(self) -> Store:
        """The store. Raises: UnavailableError: it is not running."""
        if self.store is None:
            raise UnavailableError("the store is not running")
        return self.store

    def need_registry(self) -> Registry:
        """The model registry. Raises: UnavailableError: there is none."""
        if self.registry is None:
            raise UnavailableError("no model registry")
        return self.registry

    def need_runner(self) -> RolloutRunner:
        """The rollout runner. Raises: UnavailableError: there is none."""
        if self.runner is None:
            raise UnavailableError("rollouts unavailable")
        return self.runner

    def need_audit(self) -> AuditLog:
        """The audit log. Raises: UnavailableError: there is none."""
        if self.audit is None:
            raise UnavailableError("no audit log")
        return self.audit

    def deployer(self) -> Deployer:
        """The one deploy path over this context's parts.

        Raises:
            UnavailableError: the registry, signer or publisher is absent.
        """
        registry = self.need_registry()
        if self.signer is None or self.publisher is None:
            raise UnavailableError("directives unavailable")
        return Deployer(
            registry,
            self.signer,
            self.publisher,
            self.bundle_url,
            audit=self.audit,
            store=self.store,
        )

    def drift(self) -> DriftQueries:
        """The one drift query over the store and the registry's references.

        Raises:
            UnavailableError: the registry or the store is absent.
        """
        registry = self.need_registry()
        return DriftQueries(self.need_store(), registry.reference)

    def device_verdicts(self) -> DeviceVerdicts:
        """Every device's drift verdict and faults, kept briefly (``hub.device_drift``).

        Raises:
            UnavailableError: the store is absent (without a registry every verdict is
                null: nothing to compare with).
        """
        if self.verdicts is None:
            self.verdicts = DeviceVerdicts(self.need_store(), self._reference)
        return self.verdicts

    def _reference(self, name: str, version: int) -> ReferenceStats:
        return self.need_registry().reference(name, version)

    def record(self, token: TokenInfo, action: str, target: str, **details: Any) -> None:
        """Append what ``token`` did to the audit log (when there is one)."""
        if self.audit is not None:
            self.audit.append(f"token:{token.id}:{token.name}", action, target, details)


def hub(request: Request) -> HubContext:
    """The context of the app serving ``request``."""
    context: HubContext = request.app.state.hub
    return context


Hub = Annotated[HubContext, Depends(hub)]


def require(scope: str) -> Callable[..., TokenInfo]:
    """A dependency that authenticates the caller and checks ``scope``.

    Raises:
        ValueError: ``scope`` is not a scope (at import, not per request).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        context: Hub,
    ) -> TokenInfo:
        info = context.tokens.authenticate(credentials.credentials) if credentials else None
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


#: The caller, holding the ``read``, ``deploy`` or ``admin`` scope.
ReadToken = Annotated[TokenInfo, Depends(require("read"))]
DeployToken = Annotated[TokenInfo, Depends(require("deploy"))]
AdminToken = Annotated[TokenInfo, Depends(require("admin"))]
