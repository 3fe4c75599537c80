"""The label-free accuracy estimate: calibrated on held-out data at build time, exact from
merged windows, with an interval, and "cannot estimate (input drift)" when the inputs
moved too far. Seeded model-kit data through the real serving path and runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.calibration import Calibration
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import MetricsWindow
from edge_agent.errors import ValidationError
from edge_agent.inference.serving import Predictor, ServingModel
from hub.accuracy import AccuracyEstimate
from hub.bundler import ReferenceData, build_bundle
from hub.drift import drift_report
from hub.modelkit import FEATURES, Drift, make_dataset

pytestmark = pytest.mark.runtime

NOW = 1_900_000_000.0


@pytest.fixture(scope="module", params=["float", "int8"])
def calibrated(request, tmp_path_factory, demo_dir: Path, signing_keys, trust_1of1):
    """(bundle, reference) of the demo model with a calibration map from held-out data."""
    with np.load(demo_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    holdout = make_dataset(4000, 1011)
    out = tmp_path_factory.mktemp("acc") / f"{request.param}.efb"
    build_bundle(
        (demo_dir / f"model-{request.param}.tflite").read_bytes(),
        name="demo",
        version=1,
        reference=ReferenceData(x, FEATURES, holdout.x, holdout.y),
        keys=signing_keys[:1],
        out=out,
    )
    bundle = verify_bundle(out, trust_1of1)
    return bundle, bundle.reference()


def serve(bundle, x: np.ndarray, devices: int = 1) -> tuple[np.ndarray, list[MetricsWindow]]:
    """Predict ``x`` on ``devices`` serving models (one slice each); outputs and windows."""
    outputs, windows = [], []
    for part in np.array_split(x.astype(np.float32), devices):
        serving = ServingModel(bundle, ModelVersion("demo", 1), clock=lambda: NOW)
        p = Predictor()
        p.active = serving
        outputs.append(p.predict(part).outputs)
        window = serving.monitor.close(NOW + 60)
        assert window is not None
        windows.append(window)
    return np.concatenate(outputs), windows


def estimate(calibrated, seed: int, **kw) -> tuple[float, AccuracyEstimate]:
    bundle, reference = calibrated
    weights = kw.pop("class_weights", None)
    live = make_dataset(4000, seed, drift=Drift(**kw) if kw else None, class_weights=weights)
    outputs, windows = serve(bundle, live.x, devices=3)
    truth = float(np.mean(np.argmax(outputs, axis=1) == live.y))
    report = drift_report(reference, windows)
    assert report.accuracy is not None
    assert report.accuracy_estimate == report.accuracy.value
    return truth, report.accuracy


@pytest.mark.parametrize(
    ("scenario", "kw"),
    [
        ("in distribution", {}),
        ("label shift", {"class_weights": (0.2, 0.3, 0.5)}),
        ("label shift", {"class_weights": (0.8, 0.15, 0.05)}),
        ("offset 0.5 sd", {"offset": 0.5}),
        ("offset 0.25 sd on three features", {"offset": 0.25, "features": FEATURES[:3]}),
    ],
)
def test_estimate_is_within_3_points_of_the_truth(calibrated, scenario, kw) -> None:
    for seed in (21, 22):
        truth, acc = estimate(calibrated, seed, **dict(kw))
        assert acc.status == "estimated", (scenario, acc.reason)
        assert acc.value is not None and acc.low is not None and acc.high is not None
        assert abs(acc.value - truth) <= 0.03, (scenario, acc.value, truth)
        assert acc.low < acc.value < acc.high and acc.high - acc.low < 0.08
        assert acc.low <= truth <= acc.high, (scenario, acc.label, truth)
        assert acc.exact_sums and acc.mean_confidence is not None


def test_the_interval_covers_the_truth_in_distribution_and_under_label_shift(calibrated) -> None:
    covered = 0
    for seed in range(30, 36):
        truth, acc = estimate(calibrated, seed, class_weights=(0.2, 0.3, 0.5) if seed % 2 else None)
        assert acc.low is not None and acc.high is not None
        covered += acc.low <= truth <= acc.high
    assert covered >= 5  # a 95 % interval: one miss in six is allowed


def test_label_shift_is_estimated_from_the_predicted_classes(calibrated) -> None:
    """The class mix the estimate re-weights its calibration with is the live one."""
    _, acc = estimate(calibrated, 40, class_weights=(0.2, 0.3, 0.5))
    assert acc.class_mix is not None
    np.testing.assert_allclose(acc.class_mix, (0.2, 0.3, 0.5), atol=0.04)


@pytest.mark.parametrize(
    ("scenario", "kw"),
    [
        ("offset 3 sd", {"offset": 3.0}),
        ("offset 1 sd", {"offset": 1.0}),  # the estimate would be ~9 points high here
        ("noise that breaks the features' correlations", {"noise": 0.25}),
        ("heavy noise", {"noise": 1.0}),
        ("heavy noise", {"noise": 2.0}),
        ("spread doubled", {"scale": 2.0}),
    ],
)
def test_far_drift_says_cannot_estimate_instead_of_a_number(calibrated, scenario, kw) -> None:
    truth, acc = estimate(calibrated, 50, **kw)
    assert acc.status == "cannot_estimate", (scenario, acc.value, truth)
    assert acc.value is None and acc.low is None and acc.high is None
    assert acc.label == "cannot estimate (input drift)"
    assert acc.reason is not None and acc.reason.startswith("cannot estimate (input drift): ")
    assert acc.mean_confidence is not None  # still shown, for comparison


def test_windows_without_confidence_sums_fall_back_to_histogram_binning(calibrated) -> None:
    """Agents from before the sums: each bin at the held-out mean confidence."""
    bundle, reference = calibrated
    live = make_dataset(4000, 60)
    outputs, windows = serve(bundle, live.x)
    truth = float(np.mean(np.argmax(outputs, axis=1) == live.y))
    old = [
        MetricsWindow.from_json({k: v for k, v in w.to_json().items() if k != "confidence_sum"})
        for w in windows
    ]
    acc = drift_report(reference, old).accuracy
    assert acc is not None and acc.status == "estimated" and not acc.exact_sums
    assert acc.value is not None and abs(acc.value - truth) <= 0.03


def test_merging_device_windows_gives_the_estimate_of_one_window(calibrated) -> None:
    bundle, reference = calibrated
    live = make_dataset(3000, 70)
    _, one = serve(bundle, live.x, devices=1)
    _, many = serve(bundle, live.x, devices=5)
    a, b = drift_report(reference, one).accuracy, drift_report(reference, many).accuracy
    assert a is not None and b is not None and a.value is not None and b.value is not None
    assert a.value == pytest.approx(b.value, abs=1e-12)
    assert (a.low, a.high) == pytest.approx((b.low, b.high), abs=1e-12)


def test_few_predictions_are_not_reported(calibrated) -> None:
    bundle, reference = calibrated
    _, windows = serve(bundle, make_dataset(50, 80).x)
    acc = drift_report(reference, windows, min_count=200).accuracy
    assert acc is not None and acc.status == "not_reported" and acc.value is None


def test_the_calibration_map_is_signed_with_the_reference_and_round_trips(calibrated) -> None:
    _, reference = calibrated
    cal = reference.calibration
    assert cal is not None and cal.n == 4000 and 0.8 < cal.holdout_accuracy < 0.95
    assert Calibration.from_json(cal.to_json()) == cal
    assert ReferenceStats.from_json(reference.to_json()) == reference


def test_a_malformed_calibration_map_is_refused_in_one_line(calibrated) -> None:
    _, reference = calibrated
    cal = reference.calibration
    assert cal is not None
    doc = cal.to_json()
    bad_counts = [[[-1] * 3] * 3, *doc["counts"][1:]]
    cases = {
        "negative counts": {**doc, "counts": bad_counts},
        "a bin missing": {**doc, "counts": doc["counts"][:-1]},
        "wrong class rows": {**doc, "class_variances": doc["class_variances"][:-1]},
        "non-square covariance": {**doc, "covariance": doc["covariance"][:-1]},
        "accuracy above 1": {**doc, "holdout_accuracy": 1.5},
        "an extra field": {**doc, "extra": 1},
    }
    for name, bad in cases.items():
        with pytest.raises(ValidationError) as info:
            Calibration.from_json(bad)
        assert "\n" not in str(info.value), name


def test_held_out_data_without_every_class_is_refused_at_build(
    demo_dir, signing_keys, tmp_path
) -> None:
    from hub.errors import BuildError

    with np.load(demo_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    h = make_dataset(500, 90)
    keep = h.y != 2
    with pytest.raises(BuildError, match="every class needs held-out samples"):
        build_bundle(
            (demo_dir / "model-float.tflite").read_bytes(),
            name="demo",
            version=1,
            reference=ReferenceData(x, FEATURES, h.x[keep], h.y[keep]),
            keys=signing_keys[:1],
            out=tmp_path / "b.efb",
        )


def test_inside_a_confidence_bin_the_estimate_follows_the_exact_confidences() -> None:
    """Bin midpoints (the old estimate) or the held-out mean of a bin would give these
    two windows one number; the windows' exact sums tell 0.905 from 0.995."""
    from edge_agent.inference.accumulator import WindowAccumulator

    rng = np.random.default_rng(100)
    m = 40_000
    top = rng.uniform(0.5, 1.0, m)
    predicted = rng.integers(0, 2, m)
    probs = np.where(predicted[:, None] == np.arange(2), top[:, None], 1.0 - top[:, None])
    truth = np.where(rng.random(m) < top, predicted, 1 - predicted)  # perfectly calibrated
    x = rng.normal(size=(m, 2))
    ref = ReferenceStats.from_data(x, probs, ["a", "b"], ["p", "q"])
    ref = ref.with_calibration(Calibration.fit(ref.confidence.edges, probs, truth, x))
    for confidence in (0.905, 0.995):
        acc = WindowAccumulator(ref, "m", 1, clock=lambda: NOW)
        live_pred = rng.integers(0, 2, 4000)
        live = np.where(live_pred[:, None] == np.arange(2), confidence, 1.0 - confidence)
        acc.record(rng.normal(size=(4000, 2)), live, 0.001)
        window = acc.close(NOW + 60)
        assert window is not None
        est = drift_report(ref, [window]).accuracy
        assert est is not None and est.status == "estimated" and est.value is not None
        assert est.value == pytest.approx(confidence, abs=0.01)
