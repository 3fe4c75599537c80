"""Reference bins that cannot blow up: tails with reference mass, one bin per value of a
discrete feature, heavy values in their own bin; and old (format 1) references still
read and counted as before."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.calibration import Calibration
from edge_agent.contract.histogram import count, quantile_edges, reference_edges
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.contract.manifest import REFERENCE
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.reference import FeatureReference, Histogram, ReferenceStats
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator
from edge_agent.inference.serving import Predictor, ServingModel
from hub import bundler
from hub.bundler import ReferenceData, build_bundle
from hub.drift import drift_report, psi

NOW = 1_900_000_000.0


def live_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Live values counted as a device counts them (a one-feature monitor window)."""
    ref = ReferenceStats(
        n=1,
        features=(FeatureReference("a", tuple(edges), (1,) + (0,) * (len(edges) + 1), 0.0, 1.0),),
        labels=("p", "q"),
        class_counts=(1, 0),
        confidence=Histogram((0.0, 0.5, 1.0), (0, 1, 0, 0, 0)),
    )
    acc = WindowAccumulator(ref, "m", 1, clock=lambda: NOW)
    values32 = values.astype(np.float32)
    acc.record(values32.reshape(-1, 1), np.tile([0.6, 0.4], (values.size, 1)), 0.001)
    window = acc.close(NOW + 1)
    assert window is not None
    return np.asarray(window.features[0].counts)


def test_a_binary_feature_whose_share_of_ones_moves_from_30_to_90_percent_drifts() -> None:
    """Format 1 put 0 and 1 in one bin [0, 1] (tied quantiles), so this gave PSI 0."""
    rng = np.random.default_rng(1)
    ref = (rng.random(4000) < 0.3).astype(np.float64)
    live = (rng.random(2000) < 0.9).astype(np.float64)
    old = quantile_edges(ref, 10)
    assert psi(count(old, ref)[:-1], live_counts(old, live)[:-1]) == pytest.approx(0.0)
    edges = reference_edges(ref, 10)
    ref_counts = count(edges, ref)
    assert ref_counts[0] > 0 and ref_counts[1] > 0  # 0 and 1 in bins of their own
    assert psi(ref_counts[:-1], live_counts(edges, live)[:-1]) > 1.0


def test_live_values_just_past_the_reference_range_fall_in_tails_with_reference_mass() -> None:
    """Format 1's tails were empty in the reference: every live value past its min/max
    landed in a bin PSI can only floor at eps (here PSI 0.19 with no drift at all)."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=200)
    live = rng.normal(size=20_000)  # the same distribution: its extremes pass the reference's
    old = quantile_edges(ref, 10)
    old_ref, old_live = count(old, ref), live_counts(old, live)
    assert old_ref[0] == old_ref[-2] == 0 and old_live[0] > 0 and old_live[-2] > 0
    edges = reference_edges(ref, 10)
    ref_counts, counts = count(edges, ref), live_counts(edges, live)
    assert ref_counts[0] >= 5 and ref_counts[-2] >= 5  # underflow and overflow hold mass
    for tail in (0, -2):  # and the live share there is about the reference's
        assert abs(counts[tail] / live.size - ref_counts[tail] / ref.size) < 0.02
    assert psi(ref_counts[:-1], counts[:-1]) < 0.05 < 0.15 < psi(old_ref[:-1], old_live[:-1])


def test_a_heavy_value_gets_a_bin_of_its_own_and_ties_never_merge_values() -> None:
    rng = np.random.default_rng(3)
    stuck = np.zeros(300)
    middle = np.full(200, 5.0)
    ref = np.concatenate([stuck, rng.normal(5, 1, 700), middle])
    edges = reference_edges(ref, 10)
    counts = count(edges, ref)
    for value, n in ((0.0, 300), (5.0, np.count_nonzero(ref == 5.0))):
        b = int(np.searchsorted(edges, value, side="right"))
        assert counts[b] == n, (value, edges)
        members = ref[np.searchsorted(edges, ref, side="right") == b]
        assert np.all(members == value)  # nothing else shares the heavy value's bin
    assert np.all(counts[:-1] > 0)  # every finite bin has reference mass


def test_discrete_feature_gets_one_bin_per_value_with_edges_between_values() -> None:
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 8, size=1000).astype(np.float64)
    edges = reference_edges(ref, 5)  # 8 values > n_bins + 2: declared discrete
    assert np.unique(count(edges, ref)[:-1]).size > 1
    edges = reference_edges(ref, 5, discrete=True)
    np.testing.assert_array_equal(edges, np.arange(7) + 0.5)
    counts = count(edges, ref)
    np.testing.assert_array_equal(counts[:-1], np.bincount(ref.astype(int), minlength=8))
    with pytest.raises(ValidationError, match="at most 64 distinct"):
        reference_edges(np.arange(100.0), 10, discrete=True)


def test_edges_never_sit_on_a_reference_value() -> None:
    """A value on an edge counts on one side in float64 at the hub and maybe the other
    once a device rounds it to float32: edges are midpoints between distinct values."""
    rng = np.random.default_rng(5)
    ref = np.round(rng.normal(size=3000), 1)  # ties on a 0.1 grid, not float32-exact
    edges = reference_edges(ref, 10)
    assert not np.isin(edges, ref).any()
    np.testing.assert_array_equal(count(edges, ref), live_counts(edges, ref))


@pytest.mark.runtime
def test_schema_can_declare_a_feature_discrete_and_old_schemas_parse(
    tmp_path: Path, demo_dir: Path, signing_keys, trust_1of1
) -> None:
    with np.load(demo_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    x[:, 0] = np.random.default_rng(6).integers(0, 30, size=x.shape[0])
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    schema = InputSchema(tuple(FeatureSpec(n, discrete=(i == 0)) for i, n in enumerate(names)))
    assert InputSchema.from_json(schema.to_json()) == schema
    assert "discrete" not in schema.to_json()["features"][1]  # old bytes unchanged
    out = tmp_path / "d.efb"
    build_bundle(
        (demo_dir / "model-float.tflite").read_bytes(),
        name="d",
        version=1,
        reference=ReferenceData(x, names),
        keys=signing_keys[:1],
        out=out,
        schema=schema,
    )
    ref = verify_bundle(out, trust_1of1).reference()
    assert ref.format == 2
    assert len(ref.features[0].edges) == 29  # 30 values: 29 midpoints
    with pytest.raises(ValidationError, match="discrete"):
        InputSchema.from_json(
            {
                **schema.to_json(),
                "features": [{"name": "a", "min": None, "max": None, "discrete": 1}],
            }
        )


def format1(stats: ReferenceStats, x: np.ndarray) -> ReferenceStats:
    """``stats`` as the bundler wrote it before format 2: plain quantile edges."""
    features = []
    for j, f in enumerate(stats.features):
        edges = quantile_edges(x[:, j], 10)
        features.append(
            FeatureReference(
                f.name,
                tuple(float(e) for e in edges),
                tuple(int(c) for c in count(edges, x[:, j])),
                f.mean,
                f.std,
            )
        )
    return ReferenceStats(
        stats.n, tuple(features), stats.labels, stats.class_counts, stats.confidence
    )


@pytest.mark.runtime
def test_a_bundle_built_before_format_2_still_verifies_and_is_scored(
    tmp_path: Path, demo_dir: Path, signing_keys, trust_1of1, monkeypatch
) -> None:
    with np.load(demo_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    new = bundler.compute_reference
    monkeypatch.setattr(
        bundler, "compute_reference", lambda model, x, *a: format1(new(model, x, *a), x)
    )
    out = tmp_path / "old.efb"
    build_bundle(
        (demo_dir / "model-float.tflite").read_bytes(),
        name="old",
        version=1,
        reference=ReferenceData(x, names),
        keys=signing_keys[:1],
        out=out,
    )
    with zipfile.ZipFile(out) as zf:
        doc = json.loads(zf.read(REFERENCE))
    assert "format" not in doc and "calibration" not in doc  # exactly the old document
    bundle = verify_bundle(out, trust_1of1)
    ref = bundle.reference()
    assert ref.format == 1 and ref.calibration is None
    assert ref.to_json() == doc
    serving = ServingModel(bundle, ModelVersion("old", 1), clock=lambda: NOW)
    p = Predictor()
    p.active = serving
    p.predict(x[:300].astype(np.float32))
    window = serving.monitor.close(NOW + 60)
    assert window is not None and window.n == 300
    report = drift_report(ref, [window], min_count=100)
    assert all(f.verdict != "not_reported" for f in report.features)
    assert report.accuracy is not None and report.accuracy.status == "no_calibration"
    assert report.accuracy_estimate is None and report.reference_accuracy_estimate is None


def test_reference_documents_of_unknown_format_or_misplaced_calibration_are_refused() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 2))
    probs = np.tile([0.7, 0.3], (200, 1))
    doc = ReferenceStats.from_data(x, probs, ["a", "b"], ["p", "q"]).to_json()
    assert doc["format"] == 2
    assert ReferenceStats.from_json(doc).to_json() == doc
    with pytest.raises(ValidationError, match="format: 3"):
        ReferenceStats.from_json({**doc, "format": 3})
    fitted = Calibration.fit(doc["confidence"]["edges"], probs, np.arange(200) % 2, x)
    calibration = fitted.to_json()
    assert ReferenceStats.from_json({**doc, "calibration": calibration}).calibration == fitted
    old = {k: v for k, v in doc.items() if k != "format"}
    with pytest.raises(ValidationError, match="needs format 2"):
        ReferenceStats.from_json({**old, "calibration": calibration})
    other = Calibration.fit([0.0, 0.5, 1.0], probs, np.arange(200) % 2, x).to_json()
    with pytest.raises(ValidationError, match="not the confidence histogram"):
        ReferenceStats.from_json({**doc, "calibration": other})
