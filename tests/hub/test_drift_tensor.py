"""Drift on a tensor input, the 1-D CNN TensorFlow's converter made (tests/fixtures/tf,
``cnn1d_int8f``: 64 x 3 accelerometer windows): per-channel summaries of every sample
(mean, std, energy, see ``edge_agent.contract.input_schema``) are what the window
counts and the hub tests, one count per sample, so the chi-square rule's samples are
independent as it assumes. Simulated as tests/hub/test_drift_fidelity.py does (rows of a
large binned population; shown equal to the real serving path's counts); seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.histogram import bin_indices
from edge_agent.contract.manifest import MODEL
from edge_agent.contract.window import (
    MetricsWindow,
    merge_documents,
    merge_windows,
    subtract_windows,
)
from edge_agent.errors import ValidationError
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.serving import Predictor
from hub.bundler import build_bundle, load_reference
from hub.drift import drift_report
from tests.support.accel import accel_windows
from tests.support.fidelity import DemoBundle, Population, binomial_upper, decide

TF = Path(__file__).parent.parent / "fixtures" / "tf"
STABLE_TOLERANCE = binomial_upper(1000, 0.01)  # 20 of 1,000


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, signing_keys, trust_1of1) -> DemoBundle:
    out = tmp_path_factory.mktemp("tensor-drift") / "cnn1d-1.efb"
    build_bundle(
        (TF / "cnn1d_int8f.tflite").read_bytes(),
        name="pump",
        version=1,
        reference=load_reference(TF / "cnn1d.npz"),
        keys=signing_keys[:1],
        out=out,
    )
    bundle = verify_bundle(out, trust_1of1)
    return DemoBundle(out, bundle, bundle.reference(), LoadedModel(bundle.read(MODEL)))


def tensor_population(
    cnn: DemoBundle, seed: int, gain: dict[str, float] | None = None, n: int = 20_000
) -> Population:
    """``n`` fresh windows, run through the model in one batch, their per-channel
    summaries binned over the bundle's reference bins as a device bins them."""
    x, _ = accel_windows(n, np.random.default_rng(seed), gain)
    schema = cnn.bundle.input_schema()
    seen = schema.summarize(x)
    ref = cnn.reference
    probs = cnn.model.predict(x)
    features = [
        bin_indices(np.asarray(fr.edges, dtype=np.float64), seen[:, j])
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


@pytest.fixture(scope="module")
def clean(cnn: DemoBundle) -> Population:
    return tensor_population(cnn, seed=11)


def test_simulated_tensor_windows_are_what_the_real_serving_path_counts(cnn, clean):
    rows = np.random.default_rng(0).integers(0, clean.x.shape[0], size=200)
    predictor = Predictor()
    predictor.active = cnn.serving()
    for i in rows:
        predictor.predict(clean.x[i])
    (window,) = predictor.close_windows(now=60.0)
    features, classes, confidence = clean.counts_of(rows)
    assert window.n == 200
    for got, want in zip(window.features, features, strict=True):
        assert list(got.counts[:-1]) == want.tolist() and got.counts[-1] == 0
    assert list(window.class_counts) == classes.tolist()
    assert list(window.confidence[:-1]) == confidence.tolist()


@pytest.mark.parametrize("n", [30, 60, 200, 1000, 5000])
def test_stable_tensor_data_is_flagged_in_at_most_one_percent_of_windows(cnn, clean, n):
    rng = np.random.default_rng(n)
    flagged = 0
    for _ in range(1000):
        _, summary = decide(cnn, clean.window(n, rng))
        flagged += summary.drifted_any
    assert flagged <= STABLE_TOLERANCE, f"n={n}: {flagged} of 1,000 stable windows flagged"


@pytest.mark.parametrize("axis", ["ax", "ay", "az"])
def test_a_gain_change_on_one_axis_is_flagged_on_that_channel_only(cnn, axis):
    """A sensor reading 30 % high on one axis: within one window of 200 predictions,
    that axis's summaries drift and no other axis's do, in 100 of 100 trials."""
    drifted = tensor_population(cnn, seed=21 + len(axis), gain={axis: 1.3})
    rng = np.random.default_rng(5)
    for trial in range(100):
        _, summary = decide(cnn, drifted.window(200, rng))
        channels = {name.split(".")[0] for name in summary.drifted if "." in name}
        assert channels == {axis}, f"trial {trial}: drifted {sorted(summary.drifted)}"


# --- per-channel values over all positions (shown, not tested) -------------------------


def served_window(cnn: DemoBundle, x: np.ndarray, now: float = 60.0):
    predictor = Predictor()
    predictor.active = cnn.serving()
    for i in range(0, x.shape[0], 100):
        predictor.predict(x[i : i + 100])
    (window,) = predictor.close_windows(now=now)
    return window


def test_channel_values_count_every_position_and_merge_exactly(cnn):
    x, _ = accel_windows(600, np.random.default_rng(41))
    whole = served_window(cnn, x)
    a, b = served_window(cnn, x[:250]), served_window(cnn, x[250:])
    cv = whole.channel_values
    assert cv is not None and cv.positions == 64 and len(cv.counts) == 3
    assert all(sum(c) == 600 * 64 for c in cv.counts)  # n x positions, not n
    assert all(sum(f.counts) == 600 for f in whole.features)  # summaries: one per sample
    merged = merge_windows(a, b)
    assert merged.channel_values == cv
    assert subtract_windows(merged, b).channel_values == a.channel_values
    docs = merge_documents([a.to_json(), b.to_json()])
    assert MetricsWindow.from_json(docs).channel_values == cv
    assert MetricsWindow.from_json(whole.to_json()) == whole
    merged.check_reference(cnn.reference)


def test_windows_without_channel_values_still_merge_and_the_merge_drops_them(cnn):
    x, _ = accel_windows(100, np.random.default_rng(42))
    new = served_window(cnn, x)
    old_doc = new.to_json()
    del old_doc["channel_values"]  # as an agent before the field sent it
    old = MetricsWindow.from_json(old_doc)
    assert old.channel_values is None
    assert merge_windows(old, new).channel_values is None
    assert "channel_values" not in merge_documents([old_doc, new.to_json()])


def test_channel_values_that_do_not_sum_to_n_times_positions_are_refused(cnn):
    x, _ = accel_windows(50, np.random.default_rng(43))
    doc = served_window(cnn, x).to_json()
    doc["channel_values"]["counts"][1][3] += 1
    with pytest.raises(ValidationError, match=r"channel_values.counts\[1\]: sum 3201 is not n x"):
        MetricsWindow.from_json(doc)
    doc["channel_values"]["counts"][1][3] -= 1
    doc["channel_values"]["counts"][2].append(0)  # one bin more than the reference has
    window = MetricsWindow.from_json(doc)
    with pytest.raises(ValidationError, match=r"channel value counts .* do not fit"):
        window.check_reference(cnn.reference)


def test_a_gain_change_moves_that_channels_values_only(cnn):
    x, _ = accel_windows(1000, np.random.default_rng(44), gain={"ay": 1.3})
    report = drift_report(cnn.reference, [served_window(cnn, x)])
    by_name = {c.name: c for c in report.channel_values}
    assert set(by_name) == {"ax", "ay", "az"}
    assert by_name["ay"].psi is not None and by_name["ay"].psi > 0.1
    assert by_name["ax"].psi < 0.05 and by_name["az"].psi < 0.05
    assert report.to_json()["channel_values"][1]["name"] == "ay"
    assert {d.split(".")[0] for d in report.decision.drifted if "." in d} == {"ay"}
