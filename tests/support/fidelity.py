"""Simulating monitoring windows of the real demo model, fast, for drift-fidelity checks.

The real path is: model kit demo model -> signed bundle -> verified ``Bundle`` ->
``ServingModel`` fed one sample at a time -> closed windows -> ``hub.drift``. Feeding
hundreds of thousands of samples that way per test is too slow, so:

- :func:`build_demo_bundle` builds and verifies the real bundle and its ``ServingModel``;
- :func:`population` draws a large sample of sensor readings (optionally drifted with the
  model kit's :class:`~hub.modelkit.dataset.Drift`), runs the bundle's model on it once
  in a batch, and bins every row exactly as a device does (feature bins of the bundle's
  reference, predicted class, top-1 confidence bin);
- :meth:`Population.window` draws a window of ``n`` predictions as ``n`` rows sampled
  from the population (with replacement), keeping the joint dependence of the features,
  the class and the confidence, and returns its counts. A fleet window is the sum of its
  devices' draws, as the hub's merge adds counts.

``tests/hub/test_drift_fidelity.py`` shows once that the counts of rows fed through the
real ``ServingModel`` one at a time equal the counts this simulation gives for the same
rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.bundle import Bundle, verify_bundle
from edge_agent.contract.histogram import bin_indices
from edge_agent.contract.manifest import MODEL
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.trust import TrustRoot
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.serving import ServingModel
from hub.bundler import ReferenceData, build_bundle
from hub.drift import (
    DEFAULT_THRESHOLDS,
    DriftSummary,
    DriftThresholds,
    FeatureDrift,
    decide_counts,
    summarize,
)
from hub.modelkit.dataset import FEATURES, Drift, make_dataset
from hub.rollouts import (
    DeviceProgress,
    DeviceStatus,
    Gates,
    RolloutSpec,
    RolloutState,
    Stage,
    StageMetrics,
    drift_gate_thresholds,
    evaluate_rollout,
    new_rollout,
    start,
)

#: Counts of one window: per feature (NaN bin removed), classes, confidence (NaN removed).
Counts = tuple[list[np.ndarray], np.ndarray, np.ndarray]


@dataclass(frozen=True)
class DemoBundle:
    """The real signed demo bundle, verified, with its reference and serving model."""

    path: Path
    bundle: Bundle
    reference: ReferenceStats
    model: LoadedModel

    def serving(self) -> ServingModel:
        """A fresh ``ServingModel`` of the bundle (its own window monitor)."""
        return ServingModel(self.bundle, ModelVersion("pump", 1), clock=lambda: 0.0)


def build_demo_bundle(
    demo_dir: Path, out: Path, keys: Sequence[Ed25519PrivateKey], trust: TrustRoot
) -> DemoBundle:
    """Bundle the model kit's int8 demo model with its reference data, sign, verify."""
    data = np.load(demo_dir / "reference.npz")
    names = tuple(str(f) for f in data["features"])
    build_bundle(
        (demo_dir / "model-int8.tflite").read_bytes(),
        name="pump",
        version=1,
        reference=ReferenceData(np.asarray(data["x"], dtype=np.float64), names),
        keys=list(keys),
        out=out,
    )
    bundle = verify_bundle(out, trust)
    return DemoBundle(out, bundle, bundle.reference(), LoadedModel(bundle.read(MODEL)))


@dataclass(frozen=True)
class Population:
    """Rows of a large sample, binned as a device bins them: ``features[j][i]`` is row
    ``i``'s bin in feature ``j`` (NaN bin excluded: the demo data has none), ``classes``
    its predicted class, ``confidence`` its top-1 confidence bin; ``x`` the inputs."""

    x: np.ndarray
    features: list[np.ndarray]
    classes: np.ndarray
    confidence: np.ndarray
    sizes: tuple[list[int], int, int]

    def counts_of(self, rows: np.ndarray) -> Counts:
        """The window counts of these rows."""
        feature_sizes, n_classes, n_conf = self.sizes
        return (
            [
                np.bincount(f[rows], minlength=size)
                for f, size in zip(self.features, feature_sizes, strict=True)
            ],
            np.bincount(self.classes[rows], minlength=n_classes),
            np.bincount(self.confidence[rows], minlength=n_conf),
        )

    def window(self, n: int, rng: np.random.Generator) -> Counts:
        """The counts of a window of ``n`` predictions drawn from this population (for
        large ``n``, how often each row is drawn comes from one multinomial: the same
        distribution, at a cost independent of ``n``)."""
        size = self.x.shape[0]
        if n <= size // 2:
            return self.counts_of(rng.integers(0, size, size=n))
        times = rng.multinomial(n, np.full(size, 1.0 / size)).astype(np.float64)
        feature_sizes, n_classes, n_conf = self.sizes

        def weighted(bins: np.ndarray, length: int) -> np.ndarray:
            return np.rint(np.bincount(bins, weights=times, minlength=length)).astype(np.int64)

        return (
            [weighted(f, k) for f, k in zip(self.features, feature_sizes, strict=True)],
            weighted(self.classes, n_classes),
            weighted(self.confidence, n_conf),
        )


def population(
    demo: DemoBundle, drift: Drift | None = None, n: int = 100_000, seed: int = 101
) -> Population:
    """``n`` readings from the model kit's generator (``drift`` applied), run through the
    bundle's model in one batch and binned over the bundle's reference bins."""
    x = make_dataset(n, seed, drift=drift).x.astype(np.float32)
    ref = demo.reference
    probs = demo.model.predict(x)
    features = [
        bin_indices(np.asarray(fr.edges, dtype=np.float64), x[:, j].astype(np.float64))
        for j, fr in enumerate(ref.features)
    ]
    conf_edges = np.asarray(ref.confidence.edges, dtype=np.float64)
    confidence = bin_indices(conf_edges, probs.max(axis=1).astype(np.float64))
    sizes = (
        [len(fr.counts) - 1 for fr in ref.features],
        len(ref.class_counts),
        len(ref.confidence.counts) - 1,
    )
    return Population(x, features, np.argmax(probs, axis=1), confidence, sizes)


def add(a: Counts, b: Counts) -> Counts:
    """Merged counts (what the hub's merge of two windows holds)."""
    return ([x + y for x, y in zip(a[0], b[0], strict=True)], a[1] + b[1], a[2] + b[2])


def decide(
    demo: DemoBundle, counts: Counts, thresholds: DriftThresholds = DEFAULT_THRESHOLDS
) -> tuple[tuple[FeatureDrift, ...], DriftSummary]:
    """The one rule (``hub.drift.decide_counts``) on window counts, and its summary."""
    items = decide_counts(
        demo.reference,
        [c.tolist() for c in counts[0]],
        counts[1].tolist(),
        counts[2].tolist(),
        thresholds=thresholds,
    )
    return items, summarize(items)


def feature_index(name: str) -> int:
    """Column of a model kit feature."""
    return FEATURES.index(name)


def binomial_upper(n: int, p: float, tail: float = 1e-3) -> int:
    """The least ``k`` with ``P(Binomial(n, p) > k) <= tail``: how many of ``n`` trials
    may come out positive at rate ``p`` before sampling noise stops explaining it."""
    term = (1.0 - p) ** n  # P(X = 0)
    cdf = term
    k = 0
    while 1.0 - cdf > tail:
        term *= (n - k) / (k + 1) * p / (1.0 - p)
        k += 1
        cdf += term
    return k


CANARY_SPEC = RolloutSpec(
    id="canary",
    model="pump",
    target_version=2,
    previous_version=1,
    stages=(
        Stage(count=1, bake_s=600.0, gates=Gates(max_latency_ratio=None, min_count=1)),
        Stage(share=1.0),
    ),
)


def run_canary(
    demo: DemoBundle, pop: Population, rng: np.random.Generator, window_s: float = 60.0
) -> RolloutState:
    """One canary device, 60 predictions per window, through its stage: the pure state
    machine looks after each window (as the runner's ticks see new data) until the stage
    is decided. Returns the state it ends in (RUNNING means it moved on to stage 2)."""
    fleet = {"dev-0": ("site",)}
    r, _ = start(new_rollout(CANARY_SPEC), 0.0, devices=fleet)
    gates = CANARY_SPEC.stages[0].gates
    rules = drift_gate_thresholds(gates)
    progress = {"dev-0": DeviceProgress(DeviceStatus.PASSED)}
    total: Counts | None = None
    now = 0.0
    while r.state == RolloutState.RUNNING and r.stage == 0:
        now += window_s
        w = pop.window(60, rng)
        total = w if total is None else add(total, w)
        drift = {name: decide(demo, total, rule)[1] for name, rule in rules.items()}
        metrics = StageMetrics.from_progress(progress, drift=drift)
        r, _ = evaluate_rollout(r, now, progress, metrics, devices=fleet)
        if now > 600.0 + gates.max_evidence_wait_s + window_s:
            raise AssertionError("the canary's stage never ended")
    return r.state
