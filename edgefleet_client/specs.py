"""What the client sends: a rollout draft, written as the hub's rollout spec.

The hub takes a rollout spec only whole (every field present, strictly typed);
:class:`RolloutDraft` holds what an operator chooses and fills the rest with the
defaults ``edgefleet hub rollout start`` uses, so a rollout started from the console
or a script behaves like one started from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

SPEC_FORMAT: Final = "edgefleet-rollout-spec/1"


@dataclass(frozen=True)
class RolloutDraft:
    """A staged rollout of ``model`` v``version`` to the devices carrying every tag in
    ``tags`` (none: every device), in cumulative ``stages`` (shares in (0, 1]), each
    baking ``bake_s`` seconds and gated on success and failure shares, on drift
    (``max_psi``; None: no drift gate) and, with a ``previous`` version, on latency
    (p95 at most 1.5 times the previous version's). The hub checks every value and
    answers 422 with one line naming the first bad one."""

    id: str
    model: str
    version: int
    previous: int | None = None
    tags: tuple[str, ...] = ()
    stages: tuple[float, ...] = (0.1, 0.5, 1.0)
    bake_s: float = 300.0
    min_success_share: float = 0.95
    max_failure_share: float = 0.05
    max_psi: float | None = 0.25
    on_failure: Literal["pause", "rollback"] = "pause"
    manual: bool = False
    evidence_wait_s: float = 300.0
    on_insufficient: Literal["pause", "rollback", "proceed"] = "proceed"
    probation_s: float = 120.0
    device_ids: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The spec document ``POST /v1/rollouts`` takes."""
        gates = {
            "min_success_share": self.min_success_share,
            "max_failure_share": self.max_failure_share,
            "max_psi": self.max_psi,
            "max_js": None,
            "max_latency_ratio": None if self.previous is None else 1.5,
            "min_shadow_agreement": None,
            "min_count": 1,
            "min_predictions": 0,
            "max_evidence_wait_s": self.evidence_wait_s,
        }
        return {
            "format": SPEC_FORMAT,
            "id": self.id,
            "model": self.model,
            "target_version": self.version,
            "previous_version": self.previous,
            "selector": {"tags": list(self.tags), "device_ids": list(self.device_ids)},
            "stages": [
                {"share": s, "count": None, "bake_s": self.bake_s, "gates": gates, "mode": "active"}
                for s in self.stages
            ],
            "promotion": "manual" if self.manual else "auto",
            "on_failure": self.on_failure,
            "stale_after_s": 3600.0,
            "probation": {
                "window_s": self.probation_s,
                "min_predictions": 20,
                "max_error_rate": 0.05,
                "max_latency_p95_ms": None,
                "max_crashes": 2,
            },
            "on_insufficient": self.on_insufficient,
        }
