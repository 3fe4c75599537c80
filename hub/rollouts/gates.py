"""Per-device progress through a stage, the stage's metrics, and its gates' verdicts
(:func:`check_gates`; drift gates use the one decision rule of :mod:`hub.drift` and wait
for evidence)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from edge_agent.contract.fields import exact_fields
from edge_agent.contract.fields import field as get
from edge_agent.contract.messages import Event, EventKind, State
from edge_agent.errors import ValidationError
from hub.drift import DriftSummary, DriftThresholds
from hub.rollouts.spec import Gates, OnInsufficient, RolloutSpec, Stage, opt_float

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
    count too, unless they name a directive older than one the target's events named: a
    replayed old directive refused by the agent); the latest wins. A device without a
    final verdict whose retained state shows the target active with no probation
    running has passed (its
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
    seen_seq = -1  # the highest directive seq of the target's events so far
    for e in sorted(relevant, key=lambda e: e.ts):
        k = e.kind
        if e.model is not None and e.directive_seq is not None:
            seen_seq = max(seen_seq, e.directive_seq)
        elif e.directive_seq is not None and e.directive_seq < seen_seq:
            continue  # a refusal of an older directive (a replay): not about this rollout
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


class GateVerdict(StrEnum):
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
    verdict: GateVerdict
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
            verdict = GateVerdict(get(obj, "verdict", str, where))
        except ValueError as exc:
            raise ValidationError(f"{where}.verdict: {obj['verdict']!r}") from exc
        return cls(
            get(obj, "name", str, where),
            opt_float(obj, "value", where),
            opt_float(obj, "limit", where),
            verdict,
            get(obj, "detail", str, where) if "detail" in obj else "",
        )


_DETAIL: Final = frozenset({"detail"})
#: A drift gate fails during the bake only on evidence this many times stronger than
#: the report's alpha (Haybittle-Peto-style early stopping; see docs/drift.md).
EARLY_ALPHA_FACTOR: Final = 1e-3


def _upper(name: str, value: float | None, limit: float) -> GateResult:
    if value is None:
        return GateResult(name, None, limit, GateVerdict.WAITING)
    return GateResult(name, value, limit, GateVerdict.FAIL if value > limit else GateVerdict.PASS)


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
    if previous is not None and previous.verdict == GateVerdict.PASS:
        return previous
    if summary is None:
        return GateResult(name, None, limit, GateVerdict.WAITING, "not measured yet")
    worst = summary.worst
    value = None
    if worst is not None:
        value = worst.psi if name == "psi" else worst.js
    detail = summary.describe()
    p_adj = None if worst is None else worst.p_adjusted
    early_level = DriftThresholds().alpha if worst is None else worst.alpha
    if summary.drifted_any and p_adj is not None and p_adj <= early_level * EARLY_ALPHA_FACTOR:
        return GateResult(name, value, limit, GateVerdict.FAIL, f"early: {detail}")
    if baked_s < bake_s:
        return GateResult(name, value, limit, GateVerdict.WAITING, f"baking; {detail}")
    if summary.enough:
        verdict = GateVerdict.FAIL if summary.drifted_any else GateVerdict.PASS
        return GateResult(name, value, limit, verdict, detail)
    needed = "reference too small" if summary.n_needed is None else f"{summary.n_needed}"
    waiting = f"waiting for evidence: {summary.n} of {needed} predictions"
    if summary.n_needed is not None and baked_s - bake_s < max_wait_s:
        return GateResult(name, value, limit, GateVerdict.WAITING, waiting)
    if on_insufficient == "proceed":
        return GateResult(
            name, value, limit, GateVerdict.PASS, f"proceeded without evidence: {detail}"
        )
    return GateResult(name, value, limit, GateVerdict.INSUFFICIENT, f"no evidence: {detail}")


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
        out.append(GateResult("failure_share", fs, g.max_failure_share, GateVerdict.FAIL))
    else:
        ok = fs is not None and m.in_flight == 0
        out.append(
            GateResult(
                "failure_share",
                fs,
                g.max_failure_share,
                GateVerdict.PASS if ok else GateVerdict.WAITING,
            )
        )
    ss = m.success_share
    if ss is not None and ss >= g.min_success_share:
        verdict = GateVerdict.PASS
    elif ss is not None and m.in_flight == 0:
        verdict = GateVerdict.FAIL
    else:
        verdict = GateVerdict.WAITING
    out.append(GateResult("success_share", ss, g.min_success_share, verdict))
    decided = m.passed + m.failed
    out.append(
        GateResult(
            "min_count",
            float(decided),
            float(g.min_count),
            GateVerdict.PASS if decided >= g.min_count else GateVerdict.WAITING,
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
                GateVerdict.WAITING
                if a is None
                else GateVerdict.FAIL
                if a < limit
                else GateVerdict.PASS,
            )
        )
    out.append(
        GateResult(
            "bake_s",
            baked_s,
            stage.bake_s,
            GateVerdict.PASS if baked_s >= stage.bake_s else GateVerdict.WAITING,
        )
    )
    return out
