"""The hub's use cases, written once: what the API, the rollout runner, the alerter and
the CLI call instead of each carrying its own copy.

- :class:`Deployer`: the one deploy path, registry lookup → bundle reference (with a
  signed download URL) → signed directive → published (retained) → audited.
- :class:`DriftQueries`: the one drift query, a scope (the fleet, one device, a tag
  cohort or a list of devices) → the stored windows merged → the drift report and its
  decision (:mod:`hub.drift`'s one rule).

Both take their collaborators, so a test can build them from the real parts alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Protocol

from edge_agent.contract.directive import Directive, ModelRef, Probation, SignedDirective
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import MetricsWindow
from hub.audit import AuditLog
from hub.dispatch import DirectiveSigner
from hub.drift import (
    DEFAULT_THRESHOLDS,
    DriftReport,
    DriftSummary,
    DriftThresholds,
    drift_decision,
    drift_report,
)
from hub.errors import ConflictError, NotFoundError
from hub.registry import Registry
from hub.rollups import HOUR_S, hour_of
from hub.store import Store

#: How long a directive is valid unless the caller says otherwise (a week).
DEFAULT_TTL_S = 7 * 24 * 3600


class Publisher(Protocol):
    """Where signed directives go (:class:`hub.dispatch.DirectivePublisher`)."""

    def publish(self, signed: SignedDirective, timeout: float = ...) -> None:
        """Publish retained on the device's ``desired`` topic."""


class Deployer:
    """The one deploy path. Thread-safe as far as its parts are (they all are)."""

    def __init__(
        self,
        registry: Registry,
        signer: DirectiveSigner,
        publisher: Publisher,
        bundle_url: Callable[[str], str],
        *,
        audit: AuditLog | None = None,
        store: Store | None = None,
    ) -> None:
        """Wire the parts. ``bundle_url(sha256)`` is the signed URL devices download a
        bundle from; with ``store``, :meth:`deploy` refuses revoked devices."""
        self.registry, self.signer, self.publisher = registry, signer, publisher
        self.bundle_url, self.audit, self.store = bundle_url, audit, store

    def bundle_ref(self, name: str, version: int) -> ModelRef:
        """The registered version as a directive names it (digest, size, signed URL).

        Raises:
            NotFoundError: the version is not registered.
            RegistryError: the registry failed.
        """
        found = self.registry.get(name, version)
        if found is None:
            raise NotFoundError(f"no model {name!r} v{version}")
        url = self.bundle_url(found.sha256)
        return ModelRef(found.name, found.version, found.sha256, found.size, (url,))

    def publish(
        self,
        device_id: str,
        ref: ModelRef,
        *,
        actor: str,
        mode: Literal["active", "shadow"] = "active",
        downgrade: bool = False,
        probation: Probation | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        rollout: str | None = None,
    ) -> Directive:
        """Sign a directive naming ``ref`` for ``device_id``, publish it, and audit it as
        ``directive.publish`` by ``actor`` (details: seq, model, version, mode,
        downgrade, and the rollout when there is one).

        Raises:
            ValidationError: the device or rollout id is not a safe name.
            DirectiveError: the broker did not take the directive.
        """
        signed = self.signer.make(
            device_id,
            ref,
            mode=mode,
            downgrade=downgrade,
            probation=probation,
            ttl_s=ttl_s,
            rollout=rollout,
        )
        self.publisher.publish(signed)
        d = signed.directive
        details: dict[str, Any] = {
            "seq": d.seq,
            "model": d.model.name,
            "version": d.model.version,
            "mode": d.mode,
            "downgrade": d.downgrade,
        }
        if rollout is not None:
            details["rollout"] = rollout
        if self.audit is not None:
            self.audit.append(actor, "directive.publish", device_id, details)
        return d

    def deploy(
        self,
        device_id: str,
        name: str,
        version: int,
        *,
        actor: str,
        mode: Literal["active", "shadow"] = "active",
        downgrade: bool = False,
        probation: dict[str, Any] | None = None,
        ttl_s: int = DEFAULT_TTL_S,
    ) -> Directive:
        """Deploy one registered version to one device (an operator's deploy).

        Raises:
            ConflictError: the device is revoked.
            NotFoundError: the version is not registered.
            ValidationError: ``probation`` is malformed, or the device id is not a safe name.
            DirectiveError: the broker did not take the directive.
            StoreError, RegistryError: the store or registry failed.
        """
        if self.store is not None and self.store.is_revoked(device_id):
            raise ConflictError(f"device {device_id!r} is revoked")
        ref = self.bundle_ref(name, version)
        rules = Probation.from_json(probation, "probation") if probation else None
        return self.publish(
            device_id,
            ref,
            actor=actor,
            mode=mode,
            downgrade=downgrade,
            probation=rules,
            ttl_s=ttl_s,
        )


@dataclass(frozen=True)
class DriftScope:
    """Whose windows a drift query merges: one model version's ``role`` windows from
    the whole fleet (nothing else set), one ``device``, the devices carrying ``tag``
    (with ``device`` too: that device if it carries the tag), or the listed
    ``devices`` (a rollout stage's cohort)."""

    model: str
    version: int
    role: str = "active"
    device: str | None = None
    tag: str | None = None
    devices: tuple[str, ...] | None = None

    def device_ids(self, store: Store) -> list[str] | None:
        """The devices whose windows count (None: every device).

        Raises:
            StoreError: SQLite failed.
        """
        if self.devices is not None:
            return list(self.devices)
        if self.tag is not None:
            return store.cohort(self.tag, self.device)
        return None if self.device is None else [self.device]


class FleetDrift:
    """The merged windows of one scope since a time, and what the one rule says of them.
    The reference statistics are read once, when first needed."""

    def __init__(
        self,
        scope: DriftScope,
        since: float | None,
        windows: Sequence[MetricsWindow],
        reference_for: Callable[[str, int], ReferenceStats],
    ) -> None:
        """Hold the query's result (see :meth:`DriftQueries.fetch`)."""
        self.scope, self.since, self.windows = scope, since, list(windows)
        self._reference_for = reference_for

    @cached_property
    def reference(self) -> ReferenceStats:
        """The version's reference statistics.

        Raises:
            RegistryError: the version or its bundle cannot be read.
        """
        return self._reference_for(self.scope.model, self.scope.version)

    def report(
        self, *, thresholds: DriftThresholds = DEFAULT_THRESHOLDS, min_count: int = 1
    ) -> DriftReport | None:
        """The drift report of the merged windows; None when there are none.

        Raises:
            DriftError: ``min_count`` < 1.
            ValidationError: the windows do not merge or do not fit the reference.
        """
        if not self.windows:
            return None
        return drift_report(
            self.reference, self.windows, min_count=min_count, thresholds=thresholds
        )

    def decision(
        self, *, thresholds: DriftThresholds = DEFAULT_THRESHOLDS, min_count: int = 1
    ) -> DriftSummary:
        """The one verdict (``insufficient`` with the evidence needed when there are no
        windows): what reports, gates and alerts decide with.

        Raises:
            DriftError: ``min_count`` < 1.
            ValidationError: the windows do not merge or do not fit the reference.
        """
        return drift_decision(
            self.reference, self.windows, thresholds=thresholds, min_count=min_count
        )

    def assess(
        self, *, thresholds: DriftThresholds = DEFAULT_THRESHOLDS, min_count: int = 1
    ) -> tuple[DriftSummary, DriftReport | None]:
        """The one verdict and the report it was read from (None without windows),
        computed once.

        Raises:
            DriftError: ``min_count`` < 1.
            ValidationError: the windows do not merge or do not fit the reference.
        """
        report = self.report(thresholds=thresholds, min_count=min_count)
        if report is not None:
            return report.decision, report
        return self.decision(thresholds=thresholds, min_count=min_count), None


class DriftQueries:
    """The one drift query over the store's windows."""

    def __init__(self, store: Store, reference_for: Callable[[str, int], ReferenceStats]) -> None:
        """Query ``store``; ``reference_for(model, version)`` gives a version's reference
        statistics (:meth:`hub.registry.Registry.reference`)."""
        self.store, self.reference_for = store, reference_for

    def fetch(
        self, scope: DriftScope, since: float | None = None, *, exact: bool = True
    ) -> FleetDrift:
        """The scope's windows ending at or after ``since`` (every window when None),
        merged per device and key. ``exact=False`` moves ``since`` back to the start of
        its hour when more than one device counts (the hourly roll-ups alone answer);
        the result's ``since`` is the one used.

        Raises:
            StoreError: SQLite failed.
        """
        devices = scope.device_ids(self.store)
        if since is not None and not exact and (devices is None or len(devices) > 1):
            since = float(hour_of(since) * HOUR_S)
        windows = self.store.merged_windows(
            scope.model, scope.version, scope.role, devices=devices, since=since
        )
        return FleetDrift(scope, since, windows, self.reference_for)
