"""Staged rollouts: specs, stable cohorts, per-device progress, a pure state machine.

A :class:`RolloutSpec` targets a model version at the devices its :class:`Selector`
matches, in :class:`Stage` s (default 1 %, 10 %, 50 %, 100 %). Cohorts come from a
stable hash (:func:`stage_of`), so they nest and survive restarts; devices enrolled later
join by the same rule. Each stage has :class:`Gates` and a bake time.

The state machine is pure: :func:`start`, :func:`evaluate` and the operator commands
(:func:`pause`, :func:`resume`, :func:`promote`, :func:`abort`, :func:`rollback`) take a
frozen :class:`Rollout` and ``now`` and return a new one plus :class:`Action` data
(:class:`PublishDirectives`, :class:`Notify`) for the caller to carry out.

States: ``draft`` → ``running`` (stage k) → ``waiting_approval`` → ``paused`` →
``completed`` | ``aborted`` | ``rolled_back``. :class:`RolloutStore` persists rollouts
as JSON in the hub's SQLite file with an optimistic version counter.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from edge_agent.directive import Probation
from edge_agent.errors import ValidationError
from edge_agent.messages import Event, EventKind, State
from edge_agent.schema import exact_fields, list_of, positive_int, safe_name
from edge_agent.schema import field as get
from hub.drift import DriftSummary, DriftThresholds
from hub.errors import HubError

SPEC_FORMAT: Final = "edgefleet-rollout-spec/1"
ROLLOUT_FORMAT: Final = "edgefleet-rollout/1"

Mode = Literal["active", "shadow"]
Promotion = Literal["auto", "manual"]
OnFailure = Literal["pause", "rollback"]
#: What a rollout does when a drift gate still lacks evidence after its wait.
OnInsufficient = Literal["pause", "rollback", "proceed"]

#: Device id → its tags: the fleet as the rollout functions see it.
Fleet = Mapping[str, Collection[str]]


class RolloutError(HubError):
    """A rollout command is illegal in the rollout's state, or a rollout conflicts."""


class RolloutConflictError(RolloutError):
    """Another writer saved the rollout first (optimistic version mismatch)."""


class RolloutStoreError(RolloutError):
    """The rollouts table cannot be opened, read or written."""


# ---------------------------------------------------------------------------- spec


def _finite(value: float, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if (
        not math.isfinite(value)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    ):
        raise ValidationError(f"{where}: {value!r} is out of range [{lo}, {hi}]")
    return value


def _opt_float(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    if obj[key] is None:
        return None
    return get(obj, key, float, where)


@dataclass(frozen=True)
class Gates:
    """What a stage must show before it passes (None disables a limit).

    Shares are over the stage's cohort minus stale devices; ``min_count`` is the least
    number of cohort **devices** with a verdict (passed or failed) before the stage
    passes. ``max_latency_ratio`` is challenger p95 / champion p95;
    ``min_shadow_agreement`` only applies to shadow stages.

    Drift gates decide with the one rule of :mod:`hub.drift` on the cohort's merged
    windows since the stage started: ``max_psi`` / ``max_js`` are the effect worth
    acting on (a distribution fails the gate when the test rejects at the report's
    family-wise alpha *and* its PSI / JS reaches the limit). ``min_predictions`` is a
    floor on the **predictions** a drift gate needs on top of the evidence the rule
    computes; ``max_evidence_wait_s`` how long past the bake a drift gate waits for that
    evidence before the rollout's ``on_insufficient`` applies.
    """

    min_success_share: float = 0.95
    max_failure_share: float = 0.05
    max_psi: float | None = 0.25
    max_js: float | None = None
    max_latency_ratio: float | None = 1.5
    min_shadow_agreement: float | None = None
    min_count: int = 1
    min_predictions: int = 0
    max_evidence_wait_s: float = 3600.0

    def __post_init__(self) -> None:
        """Check ranges.

        Raises:
            ValidationError: a share outside [0, 1], a negative limit or count.
        """
        _finite(self.min_success_share, "gates.min_success_share", 0.0, 1.0)
        _finite(self.max_failure_share, "gates.max_failure_share", 0.0, 1.0)
        for name in ("max_psi", "max_js", "max_latency_ratio"):
            value = getattr(self, name)
            if value is not None:
                _finite(value, f"gates.{name}", 0.0)
        if self.min_shadow_agreement is not None:
            _finite(self.min_shadow_agreement, "gates.min_shadow_agreement", 0.0, 1.0)
        if self.min_count < 0:
            raise ValidationError(f"gates.min_count: must be >= 0, got {self.min_count}")
        if self.min_predictions < 0:
            raise ValidationError(
                f"gates.min_predictions: must be >= 0, got {self.min_predictions}"
            )
        _finite(self.max_evidence_wait_s, "gates.max_evidence_wait_s", 0.0)
        if self.max_js is not None and self.max_js >= 1.0:
            raise ValidationError(f"gates.max_js: {self.max_js!r} must be below 1 (JS <= 1)")
        if (self.max_psi is not None and self.max_psi <= 0) or (
            self.max_js is not None and self.max_js <= 0
        ):
            raise ValidationError("gates.max_psi/max_js: an effect limit must be positive")

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "min_success_share": self.min_success_share,
            "max_failure_share": self.max_failure_share,
            "max_psi": self.max_psi,
            "max_js": self.max_js,
            "max_latency_ratio": self.max_latency_ratio,
            "min_shadow_agreement": self.min_shadow_agreement,
            "min_count": self.min_count,
            "min_predictions": self.min_predictions,
            "max_evidence_wait_s": self.max_evidence_wait_s,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Gates:
        """Parse the JSON form strictly (``min_predictions`` and ``max_evidence_wait_s``
        may be missing: specs stored before they existed get the defaults).

        Raises:
            ValidationError: malformed or out of range.
        """
        later = frozenset({"min_predictions", "max_evidence_wait_s"})
        obj = exact_fields(value, where, set(cls().to_json()) - later, later)
        defaults = cls()
        return cls(
            min_success_share=get(obj, "min_success_share", float, where),
            max_failure_share=get(obj, "max_failure_share", float, where),
            max_psi=_opt_float(obj, "max_psi", where),
            max_js=_opt_float(obj, "max_js", where),
            max_latency_ratio=_opt_float(obj, "max_latency_ratio", where),
            min_shadow_agreement=_opt_float(obj, "min_shadow_agreement", where),
            min_count=positive_int(obj, "min_count", where, minimum=0),
            min_predictions=(
                positive_int(obj, "min_predictions", where, minimum=0)
                if "min_predictions" in obj
                else defaults.min_predictions
            ),
            max_evidence_wait_s=(
                get(obj, "max_evidence_wait_s", float, where)
                if "max_evidence_wait_s" in obj
                else defaults.max_evidence_wait_s
            ),
        )


@dataclass(frozen=True)
class Stage:
    """One stage: exactly one of ``share`` (cumulative, in (0, 1], of the selected
    devices) or ``count`` (the N selected devices with the lowest hashes)."""

    share: float | None = None
    count: int | None = None
    bake_s: float = 600.0
    gates: Gates = field(default_factory=Gates)
    mode: Mode = "active"

    def __post_init__(self) -> None:
        """Check the stage.

        Raises:
            ValidationError: both or neither of share/count, out of range, unknown mode.
        """
        if (self.share is None) == (self.count is None):
            raise ValidationError("stage: give exactly one of share or count")
        if self.share is not None and not (0.0 < self.share <= 1.0):
            raise ValidationError(f"stage.share: {self.share!r} is not in (0, 1]")
        if self.count is not None and self.count < 1:
            raise ValidationError(f"stage.count: must be >= 1, got {self.count}")
        _finite(self.bake_s, "stage.bake_s", 0.0)
        if self.mode not in ("active", "shadow"):
            raise ValidationError(f"stage.mode: {self.mode!r} is not active or shadow")

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "share": self.share,
            "count": self.count,
            "bake_s": self.bake_s,
            "gates": self.gates.to_json(),
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Stage:
        """Parse the JSON form strictly.

        Raises:
            ValidationError: malformed or out of range.
        """
        obj = exact_fields(value, where, {"share", "count", "bake_s", "gates", "mode"})
        return cls(
            share=_opt_float(obj, "share", where),
            count=None if obj["count"] is None else positive_int(obj, "count", where),
            bake_s=get(obj, "bake_s", float, where),
            gates=Gates.from_json(obj["gates"], f"{where}.gates"),
            mode=get(obj, "mode", str, where),  # type: ignore[arg-type]
        )


DEFAULT_STAGES: Final = (Stage(share=0.01), Stage(share=0.1), Stage(share=0.5), Stage(share=1.0))


@dataclass(frozen=True)
class Selector:
    """Which devices a rollout targets: those carrying every tag in ``tags`` and, when
    ``device_ids`` is not empty, listed in it. Empty selector: every device."""

    tags: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()

    def matches(self, device_id: str, tags: Collection[str]) -> bool:
        """Whether a device with these tags is selected."""
        if self.device_ids and device_id not in self.device_ids:
            return False
        return all(t in tags for t in self.tags)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"tags": list(self.tags), "device_ids": list(self.device_ids)}

    @classmethod
    def from_json(cls, value: Any, where: str) -> Selector:
        """Parse the JSON form strictly.

        Raises:
            ValidationError: malformed, or a device id is not a safe name.
        """
        obj = exact_fields(value, where, {"tags", "device_ids"})
        ids = list_of(obj, "device_ids", str, where)
        return cls(
            tags=tuple(list_of(obj, "tags", str, where)),
            device_ids=tuple(safe_name(d, f"{where}.device_ids") for d in ids),
        )


@dataclass(frozen=True)
class RolloutSpec:
    """What to roll out, to whom, in which stages, and what to do on failure."""

    id: str
    model: str
    target_version: int
    previous_version: int | None
    selector: Selector = field(default_factory=Selector)
    stages: tuple[Stage, ...] = DEFAULT_STAGES
    promotion: Promotion = "auto"
    on_failure: OnFailure = "pause"
    stale_after_s: float = 3600.0
    probation: Probation = field(default_factory=Probation)
    on_insufficient: OnInsufficient = "pause"

    def __post_init__(self) -> None:
        """Check the spec.

        Raises:
            ValidationError: unsafe names, bad versions, no stages, shares decreasing,
                unknown promotion or failure policy.
        """
        safe_name(self.id, "rollout.id")
        safe_name(self.model, "rollout.model")
        if self.target_version < 1:
            raise ValidationError(
                f"rollout.target_version: must be >= 1, got {self.target_version}"
            )
        if self.previous_version is not None and not (
            1 <= self.previous_version != self.target_version
        ):
            raise ValidationError(
                f"rollout.previous_version: {self.previous_version} must be >= 1 and differ "
                "from the target version"
            )
        if not self.stages:
            raise ValidationError("rollout.stages: need at least one stage")
        shares = [s.share for s in self.stages if s.share is not None]
        if shares != sorted(shares):
            raise ValidationError("rollout.stages: shares must not decrease")
        if self.promotion not in ("auto", "manual"):
            raise ValidationError(f"rollout.promotion: {self.promotion!r} is not auto or manual")
        if self.on_failure not in ("pause", "rollback"):
            raise ValidationError(
                f"rollout.on_failure: {self.on_failure!r} is not pause or rollback"
            )
        _finite(self.stale_after_s, "rollout.stale_after_s", 0.0)
        if self.on_insufficient not in ("pause", "rollback", "proceed"):
            raise ValidationError(
                f"rollout.on_insufficient: {self.on_insufficient!r} is not pause, rollback "
                "or proceed"
            )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "format": SPEC_FORMAT,
            "id": self.id,
            "model": self.model,
            "target_version": self.target_version,
            "previous_version": self.previous_version,
            "selector": self.selector.to_json(),
            "stages": [s.to_json() for s in self.stages],
            "promotion": self.promotion,
            "on_failure": self.on_failure,
            "stale_after_s": self.stale_after_s,
            "probation": self.probation.to_json(),
            "on_insufficient": self.on_insufficient,
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "rollout") -> RolloutSpec:
        """Parse the JSON form strictly (a missing, extra or mistyped field is refused;
        ``on_insufficient`` may be missing in specs stored before it existed).

        Raises:
            ValidationError: malformed, in one line naming the field.
        """
        keys = {
            "format", "id", "model", "target_version", "previous_version", "selector",
            "stages", "promotion", "on_failure", "stale_after_s", "probation",
        }  # fmt: skip
        obj = exact_fields(value, where, keys, frozenset({"on_insufficient"}))
        if get(obj, "format", str, where) != SPEC_FORMAT:
            raise ValidationError(f"{where}.format: expected {SPEC_FORMAT!r}")
        stages = get(obj, "stages", list, where)
        prev = obj["previous_version"]
        return cls(
            id=safe_name(obj["id"], f"{where}.id"),
            model=safe_name(obj["model"], f"{where}.model"),
            target_version=positive_int(obj, "target_version", where),
            previous_version=None if prev is None else positive_int(obj, "previous_version", where),
            selector=Selector.from_json(obj["selector"], f"{where}.selector"),
            stages=tuple(Stage.from_json(s, f"{where}.stages[{i}]") for i, s in enumerate(stages)),
            promotion=get(obj, "promotion", str, where),  # type: ignore[arg-type]
            on_failure=get(obj, "on_failure", str, where),  # type: ignore[arg-type]
            stale_after_s=get(obj, "stale_after_s", float, where),
            probation=Probation.from_json(obj["probation"], f"{where}.probation"),
            on_insufficient=get(obj, "on_insufficient", str, where)  # type: ignore[arg-type]
            if "on_insufficient" in obj
            else "pause",
        )


# ---------------------------------------------------------------------------- cohorts


def stage_of(device_id: str, rollout_id: str) -> float:
    """The device's stable position in [0, 1) for this rollout (SHA-256 based)."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def selected(spec: RolloutSpec, devices: Fleet) -> list[str]:
    """The devices ``spec``'s selector matches, sorted by id."""
    return sorted(d for d, tags in devices.items() if spec.selector.matches(d, tags))


def cohort(spec: RolloutSpec, stage_index: int, devices: Fleet) -> list[str]:
    """Devices in stage ``stage_index``'s cohort, sorted by id; cohorts nest.

    A share stage holds the selected devices whose :func:`stage_of` is below its share;
    a count stage the N selected devices with the lowest hashes; each stage also holds
    the cohorts before it. A share stage always holds the lowest-hash selected device,
    so a canary is never empty (the nesting is kept: that device is in every cohort).

    Raises:
        IndexError: no such stage.
    """
    stage = spec.stages[stage_index]
    pool = selected(spec, devices)
    members: set[str] = set(cohort(spec, stage_index - 1, devices)) if stage_index > 0 else set()
    ranked = sorted(pool, key=lambda d: (stage_of(d, spec.id), d))
    if stage.share is not None:
        members.update(d for d in pool if stage_of(d, spec.id) < stage.share)
        members.update(ranked[:1])  # a small fleet's canary is never empty
    else:
        members.update(ranked[: stage.count])
    return sorted(members)


def conflicts(
    new_spec: RolloutSpec, active_rollouts: Iterable[Rollout], devices: Fleet
) -> list[str]:
    """Devices that ``new_spec`` and an active rollout of the same model both select.

    Two active rollouts may not target the same device for the same model; the caller
    refuses a new rollout when this is not empty (see :func:`ensure_no_conflicts`).
    """
    mine = set(selected(new_spec, devices))
    clash: set[str] = set()
    for r in active_rollouts:
        if r.spec.id == new_spec.id or r.spec.model != new_spec.model or not r.active:
            continue
        clash.update(mine.intersection(selected(r.spec, devices)), mine.intersection(r.touched))
    return sorted(clash)


def ensure_no_conflicts(
    new_spec: RolloutSpec, active_rollouts: Iterable[Rollout], devices: Fleet
) -> None:
    """Refuse ``new_spec`` when it overlaps an active rollout of the same model.

    Raises:
        RolloutError: naming the first conflicting devices.
    """
    clash = conflicts(new_spec, active_rollouts, devices)
    if clash:
        shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
        raise RolloutError(
            f"rollout {new_spec.id}: {len(clash)} device(s) already in an active rollout of "
            f"{new_spec.model} ({shown}); finish or abort that rollout first"
        )


# ---------------------------------------------------------------------------- progress


class DeviceStatus(StrEnum):
    """Where one device is in a rollout."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    ACTIVATED = "activated"
    PASSED = "passed"
    FAILED = "failed"
    STALE = "stale"
    ROLLED_BACK = "rolled_back"


_FINAL: Final = frozenset({DeviceStatus.PASSED, DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK})


@dataclass(frozen=True)
class DeviceProgress:
    """One device's status in a rollout, with the reason of a failure or rollback."""

    status: DeviceStatus
    reason: str = ""

    @property
    def decided(self) -> bool:
        """Passed, failed or rolled back: the device will not move on its own."""
        return self.status in _FINAL


def progress(
    device_events: Iterable[Event], device_state: State | None, now: float, spec: RolloutSpec
) -> DeviceProgress:
    """Derive a device's progress in ``spec`` from its events and retained state.

    Only events about the target version count (``failed``/``refused`` without a model
    count too); the latest wins. A device without a final verdict whose retained state
    shows the target active with no probation running has passed (its
    ``probation_passed`` event was lost); with probation running it is activated.
    ``shadow_started`` means passed (a shadow directive has no probation). A device
    without a verdict that is offline and unseen for ``stale_after_s`` is stale
    (not failed); before that it keeps its status (pending at first). Pure.
    """
    status = DeviceStatus.PENDING
    reason = ""
    relevant = [
        e
        for e in device_events
        if (e.model is not None and e.model.name == spec.model
            and e.model.version == spec.target_version)
        or (e.model is None and e.kind in (EventKind.FAILED, EventKind.REFUSED))
    ]  # fmt: skip
    for e in sorted(relevant, key=lambda e: e.ts):
        k = e.kind
        if k in (EventKind.RECEIVED, EventKind.DOWNLOADING, EventKind.VERIFIED):
            status, reason = DeviceStatus.DOWNLOADING, ""
        elif k == EventKind.ACTIVATED:
            status, reason = DeviceStatus.ACTIVATED, ""
        elif k in (EventKind.SHADOW_STARTED, EventKind.PROBATION_PASSED):
            status, reason = DeviceStatus.PASSED, ""
        elif k in (EventKind.FAILED, EventKind.REFUSED):
            status, reason = DeviceStatus.FAILED, f"{k.value}: {e.detail}".rstrip(": ")
        elif k == EventKind.ROLLED_BACK:
            status, reason = DeviceStatus.ROLLED_BACK, e.detail
    if status not in _FINAL and device_state is not None:
        a = device_state.active
        if a is not None and a.name == spec.model and a.version == spec.target_version:
            # The retained state tells the truth when events were lost (fire-and-forget:
            # one published into a hub or broker killed -9, or by an agent killed -9
            # right after its probation ended): on the target with no probation running
            # means its probation passed.
            passed = device_state.probation == "none"
            status = DeviceStatus.PASSED if passed else DeviceStatus.ACTIVATED
    if (
        status not in _FINAL
        and device_state is not None
        and not device_state.online
        and now - device_state.ts >= spec.stale_after_s
    ):
        return DeviceProgress(DeviceStatus.STALE, "offline")
    return DeviceProgress(status, reason)


@dataclass(frozen=True)
class StageMetrics:
    """Current values for a stage's gates: device counts and fleet measurements.

    ``drift`` holds, per drift gate (``"psi"``, ``"js"``), the one verdict of
    :mod:`hub.drift` on the cohort's windows since the stage started, decided with that
    gate's limit as the effect worth acting on (absent: not measured yet);
    ``latency_ratio`` is challenger p95 / champion p95, ``shadow_agreement`` the shadow
    agreement rate; None when not measured yet.
    """

    cohort: int = 0
    passed: int = 0
    failed: int = 0
    stale: int = 0
    drift: Mapping[str, DriftSummary] = field(default_factory=dict)
    latency_ratio: float | None = None
    shadow_agreement: float | None = None

    @property
    def counted(self) -> int:
        """Cohort devices that are not stale."""
        return self.cohort - self.stale

    @property
    def in_flight(self) -> int:
        """Non-stale devices without a verdict yet."""
        return self.counted - self.passed - self.failed

    @property
    def success_share(self) -> float | None:
        """Passed / non-stale cohort (None when empty)."""
        return self.passed / self.counted if self.counted > 0 else None

    @property
    def failure_share(self) -> float | None:
        """Failed (or rolled back) / non-stale cohort (None when empty)."""
        return self.failed / self.counted if self.counted > 0 else None

    @classmethod
    def from_progress(
        cls,
        cohort_progress: Mapping[str, DeviceProgress],
        *,
        drift: Mapping[str, DriftSummary] | None = None,
        latency_ratio: float | None = None,
        shadow_agreement: float | None = None,
    ) -> StageMetrics:
        """Count the cohort's progress and attach the measurements."""
        statuses = [p.status for p in cohort_progress.values()]
        return cls(
            cohort=len(statuses),
            passed=statuses.count(DeviceStatus.PASSED),
            failed=statuses.count(DeviceStatus.FAILED) + statuses.count(DeviceStatus.ROLLED_BACK),
            stale=statuses.count(DeviceStatus.STALE),
            drift=dict(drift or {}),
            latency_ratio=latency_ratio,
            shadow_agreement=shadow_agreement,
        )


def drift_gate_thresholds(gates: Gates) -> dict[str, DriftThresholds]:
    """The decision rule's settings of each enabled drift gate: the report's alpha and
    power, with the gate's limit as the only effect worth acting on."""
    out = {}
    if gates.max_psi is not None:
        out["psi"] = DriftThresholds(psi=gates.max_psi, js=None)
    if gates.max_js is not None:
        out["js"] = DriftThresholds(psi=None, js=gates.max_js)
    return out


# ---------------------------------------------------------------------------- gates


class Verdict(StrEnum):
    """A gate's verdict."""

    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    FAIL = "fail"
    WAITING = "waiting"
    #: A drift gate still lacked evidence when its wait ran out: the rollout's
    #: ``on_insufficient`` applies (never a failure for lack of evidence).
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class GateResult:
    """One gate's current value, its limit, its verdict and, in one line, why
    (``detail``: for a drift gate the evidence, e.g. ``waiting for evidence: 120 of
    340 predictions``)."""

    name: str
    value: float | None
    limit: float | None
    verdict: Verdict
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "verdict": self.verdict.value,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> GateResult:
        """Parse the JSON form (``detail`` may be missing in rollouts stored before it).

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(value, where, {"name", "value", "limit", "verdict"}, _DETAIL)
        try:
            verdict = Verdict(get(obj, "verdict", str, where))
        except ValueError as exc:
            raise ValidationError(f"{where}.verdict: {obj['verdict']!r}") from exc
        return cls(
            get(obj, "name", str, where),
            _opt_float(obj, "value", where),
            _opt_float(obj, "limit", where),
            verdict,
            get(obj, "detail", str, where) if "detail" in obj else "",
        )


_DETAIL: Final = frozenset({"detail"})
#: A drift gate fails during the bake only on evidence this many times stronger than
#: the report's alpha (Haybittle-Peto-style early stopping; see docs/drift.md).
EARLY_ALPHA_FACTOR: Final = 1e-3


def _upper(name: str, value: float | None, limit: float) -> GateResult:
    if value is None:
        return GateResult(name, None, limit, Verdict.WAITING)
    return GateResult(name, value, limit, Verdict.FAIL if value > limit else Verdict.PASS)


def drift_gate(
    name: str,
    limit: float,
    summary: DriftSummary | None,
    *,
    baked_s: float,
    bake_s: float,
    max_wait_s: float,
    on_insufficient: OnInsufficient = "pause",
    previous: GateResult | None = None,
) -> GateResult:
    """A drift gate's verdict from the one rule's ``summary`` (decided with ``limit``).

    - A pass is kept for the rest of the stage (``previous``): the gate looks once.
    - During the bake it waits, unless the drift is significant at
      ``alpha * EARLY_ALPHA_FACTOR`` (fails at once).
    - After the bake, at the first look with the evidence needed it fails on drift and
      passes otherwise; without that evidence it waits (``waiting for evidence: n of
      N``) up to ``max_wait_s`` past the bake, then gives ``insufficient`` (or passes,
      noting it, when ``on_insufficient`` is ``proceed``). It never fails for lack of
      evidence.
    """
    if previous is not None and previous.verdict == Verdict.PASS:
        return previous
    if summary is None:
        return GateResult(name, None, limit, Verdict.WAITING, "not measured yet")
    worst = summary.worst
    value = None
    if worst is not None:
        value = worst.psi if name == "psi" else worst.js
    detail = summary.describe()
    p_adj = None if worst is None else worst.p_adjusted
    early_level = DriftThresholds().alpha if worst is None else worst.alpha
    if summary.drifted_any and p_adj is not None and p_adj <= early_level * EARLY_ALPHA_FACTOR:
        return GateResult(name, value, limit, Verdict.FAIL, f"early: {detail}")
    if baked_s < bake_s:
        return GateResult(name, value, limit, Verdict.WAITING, f"baking; {detail}")
    if summary.enough:
        verdict = Verdict.FAIL if summary.drifted_any else Verdict.PASS
        return GateResult(name, value, limit, verdict, detail)
    needed = "reference too small" if summary.n_needed is None else f"{summary.n_needed}"
    waiting = f"waiting for evidence: {summary.n} of {needed} predictions"
    if summary.n_needed is not None and baked_s - bake_s < max_wait_s:
        return GateResult(name, value, limit, Verdict.WAITING, waiting)
    if on_insufficient == "proceed":
        return GateResult(name, value, limit, Verdict.PASS, f"proceeded without evidence: {detail}")
    return GateResult(name, value, limit, Verdict.INSUFFICIENT, f"no evidence: {detail}")


def check_gates(
    stage: Stage,
    metrics: StageMetrics,
    baked_s: float,
    *,
    on_insufficient: OnInsufficient = "pause",
    previous: Sequence[GateResult] = (),
) -> list[GateResult]:
    """Evaluate a stage's gates (and its bake time) against ``metrics``.

    The failure share fails as soon as it is over its limit; the success share passes
    once reached and fails only when every device has a verdict and it is short; drift
    gates follow :func:`drift_gate` (``previous``: this stage's last results).
    """
    g = stage.gates
    m = metrics
    out: list[GateResult] = []
    fs = m.failure_share
    if fs is not None and fs > g.max_failure_share:
        out.append(GateResult("failure_share", fs, g.max_failure_share, Verdict.FAIL))
    else:
        ok = fs is not None and m.in_flight == 0
        out.append(
            GateResult(
                "failure_share", fs, g.max_failure_share, Verdict.PASS if ok else Verdict.WAITING
            )
        )
    ss = m.success_share
    if ss is not None and ss >= g.min_success_share:
        verdict = Verdict.PASS
    elif ss is not None and m.in_flight == 0:
        verdict = Verdict.FAIL
    else:
        verdict = Verdict.WAITING
    out.append(GateResult("success_share", ss, g.min_success_share, verdict))
    decided = m.passed + m.failed
    out.append(
        GateResult(
            "min_count",
            float(decided),
            float(g.min_count),
            Verdict.PASS if decided >= g.min_count else Verdict.WAITING,
        )
    )
    before = {r.name: r for r in previous}
    for name, limit in (("psi", g.max_psi), ("js", g.max_js)):
        if limit is not None:
            out.append(
                drift_gate(
                    name,
                    limit,
                    m.drift.get(name),
                    baked_s=baked_s,
                    bake_s=stage.bake_s,
                    max_wait_s=g.max_evidence_wait_s,
                    on_insufficient=on_insufficient,
                    previous=before.get(name),
                )
            )
    if g.max_latency_ratio is not None:
        out.append(_upper("latency_ratio", m.latency_ratio, g.max_latency_ratio))
    if g.min_shadow_agreement is not None and stage.mode == "shadow":
        a = m.shadow_agreement
        limit = g.min_shadow_agreement
        out.append(
            GateResult(
                "shadow_agreement",
                a,
                limit,
                Verdict.WAITING if a is None else Verdict.FAIL if a < limit else Verdict.PASS,
            )
        )
    out.append(
        GateResult(
            "bake_s",
            baked_s,
            stage.bake_s,
            Verdict.PASS if baked_s >= stage.bake_s else Verdict.WAITING,
        )
    )
    return out


# ---------------------------------------------------------------------------- state machine


class RolloutState(StrEnum):
    """Where a rollout is."""

    DRAFT = "draft"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


ACTIVE_STATES: Final = frozenset(
    {RolloutState.RUNNING, RolloutState.WAITING_APPROVAL, RolloutState.PAUSED}
)


@dataclass(frozen=True)
class Transition:
    """One recorded state change."""

    at: float
    from_state: RolloutState
    to_state: RolloutState
    stage: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "at": self.at,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "stage": self.stage,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Transition:
        """Parse the JSON form.

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(value, where, {"at", "from", "to", "stage", "reason"})
        return cls(
            get(obj, "at", float, where),
            _state(obj, "from", where),
            _state(obj, "to", where),
            positive_int(obj, "stage", where, minimum=0),
            get(obj, "reason", str, where),
        )


def _state(obj: Mapping[str, Any], key: str, where: str) -> RolloutState:
    try:
        return RolloutState(get(obj, key, str, where))
    except ValueError as exc:
        raise ValidationError(f"{where}.{key}: unknown state {obj[key]!r}") from exc


@dataclass(frozen=True)
class PublishDirectives:
    """Publish directives for ``version`` of the rollout's model to these devices."""

    device_ids: tuple[str, ...]
    version: int
    mode: Mode
    downgrade: bool


@dataclass(frozen=True)
class Notify:
    """Tell operators something (audit log, alert, console)."""

    message: str


Action = PublishDirectives | Notify


@dataclass(frozen=True)
class Rollout:
    """A rollout's state: its spec, where it is, how it got there, whom it touched.

    ``touched`` holds every device directives were published to (rollback targets);
    ``gates`` the last gate results of :func:`evaluate`.
    """

    spec: RolloutSpec
    state: RolloutState = RolloutState.DRAFT
    stage: int = 0
    stage_started_at: float | None = None
    history: tuple[Transition, ...] = ()
    touched: tuple[str, ...] = ()
    gates: tuple[GateResult, ...] = ()

    @property
    def active(self) -> bool:
        """Running, waiting for approval or paused."""
        return self.state in ACTIVE_STATES

    @property
    def current_stage(self) -> Stage:
        """The stage the rollout is at."""
        return self.spec.stages[self.stage]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (what :class:`RolloutStore` keeps)."""
        return {
            "format": ROLLOUT_FORMAT,
            "spec": self.spec.to_json(),
            "state": self.state.value,
            "stage": self.stage,
            "stage_started_at": self.stage_started_at,
            "history": [t.to_json() for t in self.history],
            "touched": list(self.touched),
            "gates": [g.to_json() for g in self.gates],
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "rollout") -> Rollout:
        """Parse the JSON form strictly.

        Raises:
            ValidationError: malformed, or the stage index is out of range.
        """
        keys = {
            "format", "spec", "state", "stage", "stage_started_at", "history", "touched", "gates",
        }  # fmt: skip
        obj = exact_fields(value, where, keys)
        if get(obj, "format", str, where) != ROLLOUT_FORMAT:
            raise ValidationError(f"{where}.format: expected {ROLLOUT_FORMAT!r}")
        spec = RolloutSpec.from_json(obj["spec"], f"{where}.spec")
        stage = positive_int(obj, "stage", where, minimum=0)
        if stage >= len(spec.stages):
            raise ValidationError(f"{where}.stage: {stage} is past the last stage")
        history = get(obj, "history", list, where)
        gates = get(obj, "gates", list, where)
        return cls(
            spec=spec,
            state=_state(obj, "state", where),
            stage=stage,
            stage_started_at=_opt_float(obj, "stage_started_at", where),
            history=tuple(
                Transition.from_json(t, f"{where}.history[{i}]") for i, t in enumerate(history)
            ),
            touched=tuple(
                safe_name(d, f"{where}.touched") for d in list_of(obj, "touched", str, where)
            ),
            gates=tuple(
                GateResult.from_json(g, f"{where}.gates[{i}]") for i, g in enumerate(gates)
            ),
        )


def new_rollout(spec: RolloutSpec) -> Rollout:
    """A draft rollout for ``spec``."""
    return Rollout(spec=spec)


def _move(r: Rollout, now: float, to: RolloutState, reason: str, **changes: Any) -> Rollout:
    stage = changes.get("stage", r.stage)
    t = Transition(now, r.state, to, stage, reason)
    return replace(r, state=to, history=(*r.history, t), **changes)


def _require(r: Rollout, command: str, allowed: Collection[RolloutState]) -> None:
    if r.state not in allowed:
        raise RolloutError(
            f"rollout {r.spec.id}: cannot {command} while {r.state.value} "
            f"(allowed when {' or '.join(sorted(s.value for s in allowed))})"
        )


def _publish_stage(
    r: Rollout, stage_index: int, devices: Fleet
) -> tuple[tuple[str, ...], list[Action]]:
    """Devices of the stage's cohort not yet touched: the new ``touched`` and the action."""
    done = set(r.touched)
    new = [d for d in cohort(r.spec, stage_index, devices) if d not in done]
    if not new:
        return r.touched, []
    action = PublishDirectives(
        tuple(new), r.spec.target_version, r.spec.stages[stage_index].mode, downgrade=False
    )
    return tuple(sorted({*r.touched, *new})), [action]


def _enter_stage(
    r: Rollout, now: float, index: int, devices: Fleet, reason: str
) -> tuple[Rollout, list[Action]]:
    touched, actions = _publish_stage(r, index, devices)
    stages = r.spec.stages
    if index > 0 and stages[index].mode == "active" and stages[index - 1].mode == "shadow":
        # The challenger ran in shadow on the earlier cohort: switch those devices too.
        earlier = tuple(d for d in cohort(r.spec, index - 1, devices) if d in set(r.touched))
        if earlier:
            actions = [
                PublishDirectives(earlier, r.spec.target_version, "active", downgrade=False),
                *actions,
            ]
    moved = _move(
        r, now, RolloutState.RUNNING, reason, stage=index, stage_started_at=now, touched=touched
    )
    note = Notify(f"rollout {r.spec.id}: stage {index + 1}/{len(r.spec.stages)} started ({reason})")
    return replace(moved, gates=()), [*actions, note]


def _rollback(r: Rollout, now: float, reason: str) -> tuple[Rollout, list[Action]]:
    prev = r.spec.previous_version
    if prev is None:
        raise RolloutError(
            f"rollout {r.spec.id}: a first install has no previous version to roll back to; "
            "abort it instead"
        )
    moved = _move(r, now, RolloutState.ROLLED_BACK, reason)
    actions: list[Action] = []
    if r.touched:
        actions.append(PublishDirectives(r.touched, prev, "active", downgrade=True))
    actions.append(
        Notify(
            f"rollout {r.spec.id}: rolled back to v{prev} on {len(r.touched)} device(s): {reason}"
        )
    )
    return moved, actions


def start(r: Rollout, now: float, *, devices: Fleet) -> tuple[Rollout, list[Action]]:
    """Start a draft rollout: stage 1's cohort gets directives.

    Raises:
        RolloutError: the rollout is not a draft.
    """
    _require(r, "start", {RolloutState.DRAFT})
    return _enter_stage(r, now, 0, devices, "started")


def _advance(r: Rollout, now: float, devices: Fleet, reason: str) -> tuple[Rollout, list[Action]]:
    if r.stage + 1 >= len(r.spec.stages):
        done = _move(r, now, RolloutState.COMPLETED, reason)
        return done, [Notify(f"rollout {r.spec.id}: completed ({reason})")]
    return _enter_stage(r, now, r.stage + 1, devices, reason)


def evaluate(
    r: Rollout,
    now: float,
    cohort_progress: Mapping[str, DeviceProgress],
    metrics: StageMetrics,
    *,
    devices: Fleet,
) -> tuple[Rollout, list[Action]]:
    """One step of a running rollout; a no-op (no actions) in any other state.

    Devices that newly fall in the current cohort (enrolled later) get directives unless
    a gate fails. A failing gate pauses or rolls back per ``on_failure`` (pauses when
    there is no previous version). When every gate passes after ``bake_s``: the last
    stage completes, otherwise the next stage starts (``auto``) or the rollout waits for
    approval (``manual``). ``cohort_progress`` is informational (failure reasons in notices).
    """
    if r.state != RolloutState.RUNNING:
        return r, []
    started = r.stage_started_at if r.stage_started_at is not None else now
    results = check_gates(
        r.current_stage,
        metrics,
        max(0.0, now - started),
        on_insufficient=r.spec.on_insufficient,
        previous=r.gates,
    )
    r = replace(r, gates=tuple(results))
    failing = [g for g in results if g.verdict == Verdict.FAIL]
    lacking = [g for g in results if g.verdict == Verdict.INSUFFICIENT]
    if lacking and not failing:
        reason = "not enough evidence: " + "; ".join(f"{g.name} {g.detail}" for g in lacking)
        if r.spec.on_insufficient == "rollback" and r.spec.previous_version is not None:
            return _rollback(r, now, reason)
        moved = _move(r, now, RolloutState.PAUSED, reason)
        return moved, [Notify(f"rollout {r.spec.id}: paused, {reason}")]
    if failing:
        reasons = [p.reason for p in cohort_progress.values() if p.reason][:3]
        reason = "gate failed: " + ", ".join(
            f"{g.name}={g.value} (limit {g.limit})" + (f" [{g.detail}]" if g.detail else "")
            for g in failing
        )
        if reasons:
            reason += "; e.g. " + "; ".join(reasons)
        if r.spec.on_failure == "rollback" and r.spec.previous_version is not None:
            return _rollback(r, now, reason)
        moved = _move(r, now, RolloutState.PAUSED, reason)
        return moved, [Notify(f"rollout {r.spec.id}: paused, {reason}")]
    # late joiners of the current cohort (none while a gate fails)
    touched, actions = _publish_stage(r, r.stage, devices)
    r = replace(r, touched=touched)
    if all(g.verdict == Verdict.PASS for g in results):
        label = f"stage {r.stage + 1} gates passed"
        if r.spec.promotion == "manual" and r.stage + 1 < len(r.spec.stages):
            moved = _move(r, now, RolloutState.WAITING_APPROVAL, label)
            return moved, [*actions, Notify(f"rollout {r.spec.id}: {label}, awaiting approval")]
        moved, more = _advance(r, now, devices, label)
        return moved, [*actions, *more]
    return r, actions


def pause(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Pause a running (or approval-waiting) rollout.

    Raises:
        RolloutError: the rollout is not running or waiting for approval.
    """
    _require(r, "pause", {RolloutState.RUNNING, RolloutState.WAITING_APPROVAL})
    return _move(r, now, RolloutState.PAUSED, reason), [
        Notify(f"rollout {r.spec.id}: paused ({reason})")
    ]


def resume(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Resume a paused rollout at its stage; the bake time starts again.

    Raises:
        RolloutError: the rollout is not paused.
    """
    _require(r, "resume", {RolloutState.PAUSED})
    moved = _move(r, now, RolloutState.RUNNING, reason, stage_started_at=now, gates=())
    return moved, [Notify(f"rollout {r.spec.id}: resumed at stage {r.stage + 1} ({reason})")]


def promote(
    r: Rollout, now: float, *, devices: Fleet, reason: str = "operator"
) -> tuple[Rollout, list[Action]]:
    """Move to the next stage now (approves a waiting rollout; skips bake when running).

    Raises:
        RolloutError: the rollout is not running or waiting for approval.
    """
    _require(r, "promote", {RolloutState.RUNNING, RolloutState.WAITING_APPROVAL})
    return _advance(r, now, devices, f"promoted by {reason}")


def abort(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Stop the rollout for good; devices keep what they run.

    Raises:
        RolloutError: the rollout already ended.
    """
    _require(r, "abort", {RolloutState.DRAFT, *ACTIVE_STATES})
    return _move(r, now, RolloutState.ABORTED, reason), [
        Notify(f"rollout {r.spec.id}: aborted ({reason})")
    ]


def rollback(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Roll every touched device back to the previous version (signed downgrade).

    Raises:
        RolloutError: the rollout is a draft or already aborted/rolled back, or it is a
            first install (no previous version).
    """
    _require(r, "roll back", {*ACTIVE_STATES, RolloutState.COMPLETED})
    return _rollback(r, now, reason)


# ---------------------------------------------------------------------------- store


@dataclass(frozen=True)
class StoredRollout:
    """A rollout as stored, with its optimistic version counter."""

    rollout: Rollout
    version: int


_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS rollouts ("
    " id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,"
    " active INTEGER NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL)"
)


class RolloutStore:
    """Rollouts in their own table of the hub's SQLite file, as JSON documents.

    Every :meth:`save` names the version it read; a mismatch means another writer won
    and raises :class:`RolloutConflictError`. Thread-safe (one lock). Does I/O.
    """

    def __init__(self, db_path: Path) -> None:
        """Open (or create) the table in the SQLite file at ``db_path``.

        Raises:
            RolloutStoreError: the file cannot be opened or the table created.
        """
        self.path = db_path
        self._lock = threading.Lock()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                db_path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RolloutStoreError(f"rollout store {db_path}: cannot open ({exc})") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def save(self, rollout: Rollout, expected_version: int = 0) -> int:
        """Store ``rollout``; ``expected_version`` 0 creates it. Returns the new version.

        Raises:
            RolloutConflictError: it exists (when creating) or was saved by someone else
                since ``expected_version`` was read.
            RolloutStoreError: the database failed.
        """
        doc = json.dumps(rollout.to_json(), separators=(",", ":"), sort_keys=True)
        rid = rollout.spec.id
        row = (rollout.spec.model, rollout.state.value, int(rollout.active), doc)
        try:
            with self._lock:
                if expected_version == 0:
                    try:
                        self._conn.execute(
                            "INSERT INTO rollouts (model, state, active, doc, id, version)"
                            " VALUES (?, ?, ?, ?, ?, 1)",
                            (*row, rid),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise RolloutConflictError(f"rollout {rid}: already exists") from exc
                    return 1
                cur = self._conn.execute(
                    "UPDATE rollouts SET model = ?, state = ?, active = ?, doc = ?,"
                    " version = version + 1 WHERE id = ? AND version = ?",
                    (*row, rid, expected_version),
                )
        except sqlite3.Error as exc:
            raise RolloutStoreError(f"rollout {rid}: cannot save ({exc})") from exc
        if cur.rowcount != 1:
            raise RolloutConflictError(
                f"rollout {rid}: changed since version {expected_version} was read; reload it"
            )
        return expected_version + 1

    def get(self, rollout_id: str) -> StoredRollout:
        """Load one rollout.

        Raises:
            RolloutError: no such rollout.
            RolloutStoreError: the database failed or the stored document is malformed.
        """
        rows = self._query("SELECT doc, version FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            raise RolloutError(f"rollout {rollout_id!r}: not found")
        return self._load(rows[0])

    def list(self, active_only: bool = False) -> builtins.list[StoredRollout]:
        """All rollouts (or only running, waiting and paused ones), by id.

        Raises:
            RolloutStoreError: the database failed or a stored document is malformed.
        """
        where = " WHERE active = 1" if active_only else ""
        rows = self._query(f"SELECT doc, version FROM rollouts{where} ORDER BY id", ())  # noqa: S608
        return [self._load(r) for r in rows]

    def _query(self, sql: str, args: Sequence[Any]) -> builtins.list[tuple[str, int]]:
        try:
            with self._lock:
                return list(self._conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise RolloutStoreError(f"rollout store {self.path}: cannot read ({exc})") from exc

    @staticmethod
    def _load(row: tuple[str, int]) -> StoredRollout:
        try:
            return StoredRollout(Rollout.from_json(json.loads(row[0])), int(row[1]))
        except (ValueError, ValidationError) as exc:
            raise RolloutStoreError(f"stored rollout is malformed: {exc}") from exc
