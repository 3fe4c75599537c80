"""Label-free accuracy estimate error per scenario (demo model, float and int8).

The demo model is trained and bundled with labelled held-out data (the calibration
map); each scenario's live data goes through the real serving path (ServingModel,
monitoring window), and the hub's drift report estimates the accuracy from the
window alone. Printed per scenario: true accuracy, the estimate with its 95 %
interval or "cannot estimate (input drift)", and the error in points.

:func:`accuracy_errors` returns the rows, for other benchmarks (e.g. a fidelity
bench) to import.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: (name, make_dataset keyword arguments). Drift is in reference sd (hub.modelkit.Drift).
SCENARIOS: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    ("in distribution", {}),
    ("label shift 20/30/50", {"class_weights": (0.2, 0.3, 0.5)}),
    ("label shift 80/15/5", {"class_weights": (0.8, 0.15, 0.05)}),
    ("offset 0.5 sd", {"offset": 0.5}),
    ("offset 1 sd", {"offset": 1.0}),
    ("offset 1 sd, one feature", {"offset": 1.0, "features": ("current_a",)}),
    ("offset 3 sd", {"offset": 3.0}),
    (
        "offset 0.5 sd, three features",
        {"offset": 0.5, "features": ("vibration_rms_g", "vibration_peak_g", "bearing_temp_c")},
    ),
    ("noise 0.1 sd", {"noise": 0.1}),
    ("noise 0.25 sd", {"noise": 0.25}),
    ("noise 1 sd", {"noise": 1.0}),
    ("noise 2 sd", {"noise": 2.0}),
)


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario on one model: the truth and what the hub estimated."""

    model: str
    scenario: str
    n: int
    truth: float
    status: str
    estimate: float | None
    low: float | None
    high: float | None
    input_distance: float | None
    typicality_ratio: float | None

    @property
    def error_points(self) -> float | None:
        """Estimate minus truth, in percentage points (None without an estimate)."""
        return None if self.estimate is None else 100.0 * (self.estimate - self.truth)

    @property
    def covered(self) -> bool | None:
        """Whether the interval holds the truth (None without an estimate)."""
        if self.low is None or self.high is None:
            return None
        return self.low <= self.truth <= self.high


def accuracy_errors(
    out_dir: Path | None = None, *, n_live: int = 4000, seed: int = 11
) -> list[ScenarioResult]:
    """Train and bundle the demo model (float and int8) in ``out_dir`` (a temporary
    directory when None), run every scenario of :data:`SCENARIOS` through it, and
    return one row per model and scenario."""
    if out_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return accuracy_errors(Path(tmp), n_live=n_live, seed=seed)
    from edge_agent.contract.bundle import verify_bundle
    from edge_agent.contract.messages import ModelVersion
    from edge_agent.contract.trust import TrustRoot
    from edge_agent.inference.serving import Predictor, ServingModel
    from hub.bundler import ReferenceData, build_bundle
    from hub.drift import drift_report
    from hub.modelkit import FEATURES, Drift, build_demo, make_dataset

    build_demo(out_dir, hidden=(16,), seed=3)
    with np.load(out_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    holdout = make_dataset(4000, seed + 1000)
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot.from_keys([key.public_key()], threshold=1)
    rows = []
    for model in ("float", "int8"):
        path = out_dir / f"{model}.efb"
        build_bundle(
            (out_dir / f"model-{model}.tflite").read_bytes(),
            name="demo",
            version=1,
            reference=ReferenceData(x, FEATURES, holdout.x.astype(np.float64), holdout.y),
            keys=[key],
            out=path,
        )
        bundle = verify_bundle(path, trust)
        reference = bundle.reference()
        for i, (name, spec) in enumerate(SCENARIOS):
            weights = spec.get("class_weights")
            drift_args = {k: v for k, v in spec.items() if k != "class_weights"}
            live = make_dataset(
                n_live,
                seed + i,
                drift=Drift(**drift_args) if drift_args else None,
                class_weights=weights,
            )
            serving = ServingModel(bundle, ModelVersion("demo", 1), clock=lambda: 0.0)
            predictor = Predictor()
            predictor.active = serving
            outputs = predictor.predict(live.x.astype(np.float32)).outputs
            truth = float(np.mean(np.argmax(outputs, axis=1) == live.y))
            window = serving.monitor.close(60.0)
            assert window is not None
            acc = drift_report(reference, [window]).accuracy
            assert acc is not None
            rows.append(
                ScenarioResult(
                    model,
                    name,
                    n_live,
                    truth,
                    acc.status,
                    acc.value,
                    acc.low,
                    acc.high,
                    acc.input_distance,
                    acc.typicality_ratio,
                )
            )
    return rows


def run() -> None:
    """Print :func:`accuracy_errors`."""
    for r in accuracy_errors():
        if r.estimate is None:
            shown = f"{r.status.replace('_', ' '):32s}"
            error = ""
        else:
            shown = f"{r.estimate:.3f} ({r.low:.3f}-{r.high:.3f}){'':12s}"
            error = f"error {r.error_points:+5.1f} pt{'' if r.covered else '  (truth outside)'}"
        d = "-" if r.input_distance is None else f"{r.input_distance:.2f}"
        t = "-" if r.typicality_ratio is None else f"{r.typicality_ratio:.2f}"
        print(
            f"   {r.model:5s} {r.scenario:30s} truth {r.truth:.3f}  estimate {shown} "
            f"[distance {d}, typicality x{t}] {error}"
        )
