"""What an operator or a pipeline asks for: a :class:`RolloutSpec` targets a model
version at the devices its :class:`Selector` matches, in :class:`Stage` s (default 1 %,
10 %, 50 %, 100 %), each with :class:`Gates` and a bake time; parsed from and written to
JSON (``edgefleet-rollout-spec/1``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from edge_agent.contract.directive import Probation
from edge_agent.contract.fields import exact_fields, list_of, positive_int, safe_name
from edge_agent.contract.fields import field as get
from edge_agent.errors import ValidationError

SPEC_FORMAT: Final = "edgefleet-rollout-spec/1"
ROLLOUT_FORMAT: Final = "edgefleet-rollout/1"

Mode = Literal["active", "shadow"]
Promotion = Literal["auto", "manual"]
OnFailure = Literal["pause", "rollback"]
#: What a rollout does when a drift gate still lacks evidence after its wait.
OnInsufficient = Literal["pause", "rollback", "proceed"]

#: Device id → its tags: the fleet as the rollout functions see it.
Fleet = Mapping[str, Collection[str]]


# ---------------------------------------------------------------------------- spec


def _finite(value: float, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if (
        not math.isfinite(value)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    ):
        raise ValidationError(f"{where}: {value!r} is out of range [{lo}, {hi}]")
    return value


def opt_float(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    """``obj[key]`` as a float, or None when it is null (the rollout documents' optional
    numbers).

    Raises:
        KeyError: ``key`` is missing.
        ValidationError: it is neither null nor a number.
    """
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
            max_psi=opt_float(obj, "max_psi", where),
            max_js=opt_float(obj, "max_js", where),
            max_latency_ratio=opt_float(obj, "max_latency_ratio", where),
            min_shadow_agreement=opt_float(obj, "min_shadow_agreement", where),
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
            share=opt_float(obj, "share", where),
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
