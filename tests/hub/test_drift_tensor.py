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
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.serving import Predictor
from hub.bundler import build_bundle, load_reference
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
