"""NaN and out-of-range inputs are visible per feature, counted before the model runs;
a bad row of a batch is refused alone.

Real bundles, the real TFLite runtime, the native and the pure-Python serving paths
(compared), and the real loopback HTTP API.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.window import MetricsWindow, check_window
from edge_agent.daemon.local_api import LocalApi
from edge_agent.errors import PredictionError
from edge_agent.inference.serving import Predictor, ServingModel
from hub.bundler import ReferenceData, build_bundle
from hub.drift import drift_report

pytestmark = pytest.mark.runtime

NOW = 1_900_000_000.0


def make_bundle(
    tmp_path: Path,
    demo_dir: Path,
    reference_x: np.ndarray,
    keys,
    model: str,
    nan: str,
    out_of_range: str = "accept",
) -> Path:
    out = tmp_path / f"{model}-{nan}-{out_of_range}.efb"
    names = tuple(f"f{i}" for i in range(reference_x.shape[1]))
    lo, hi = reference_x.min(axis=0), reference_x.max(axis=0)
    schema = InputSchema(
        tuple(FeatureSpec(n, float(a), float(b)) for n, a, b in zip(names, lo, hi, strict=True)),
        out_of_range=out_of_range,
        nan=nan,
    )  # type: ignore[arg-type]
    build_bundle(
        (demo_dir / f"model-{model}.tflite").read_bytes(),
        name="m",
        version=1,
        reference=ReferenceData(reference_x, names),
        keys=keys,
        out=out,
        schema=schema,
    )
    return out


def predictor(bundle: Path, trust, monkeypatch, native: bool) -> Predictor:
    with monkeypatch.context() as m:
        if not native:
            m.setenv("EDGEFLEET_NATIVE", "0")
        serving = ServingModel(
            verify_bundle(bundle, trust), ModelVersion("m", 1), clock=lambda: NOW
        )
    assert (serving.native is not None) == native or serving.model.is_quantized()
    p = Predictor()
    p.active = serving
    return p


def close(p: Predictor) -> MetricsWindow:
    assert p.active is not None
    window = p.active.monitor.close(NOW + 60)
    assert window is not None
    check_window(window)
    return window


def with_nans(reference_x: np.ndarray, share: float, feature: int, seed: int) -> np.ndarray:
    x = reference_x[:500].astype(np.float32).copy()
    rows = np.random.default_rng(seed).choice(x.shape[0], int(share * x.shape[0]), replace=False)
    x[rows, feature] = np.nan
    return x


@pytest.mark.parametrize("model", ["float", "int8"])
def test_accepted_nans_show_in_the_features_nan_rate_one_sample_at_a_time(
    tmp_path, demo_dir, reference_x, signing_keys, trust_1of1, monkeypatch, model
) -> None:
    """20 % NaN in feature 2 with nan="accept": the hub's nan_rate for f2 is 0.2 (it was
    0.0: a NaN input made a NaN output, and the sample was never counted)."""
    bundle = make_bundle(tmp_path, demo_dir, reference_x, signing_keys[:1], model, "accept")
    ref = verify_bundle(bundle, trust_1of1).reference()
    x = with_nans(reference_x, 0.2, 2, seed=1)
    windows = []
    for native in (True, False):
        p = predictor(bundle, trust_1of1, monkeypatch, native)
        failed = 0
        for row in x:
            try:
                p.predict(row)
            except PredictionError as exc:
                assert "NaN or infinity" in str(exc)
                failed += 1
        window = close(p)
        assert window.n == 500  # every accepted sample counted, served or not
        assert window.features[2].nan == 100
        assert window.errors.get("nan_output", 0) == failed == window.confidence[-1]
        report = drift_report(ref, [window], min_count=100)
        rates = {q.name: q.nan_rate for q in report.data_quality}
        assert rates["f2"] == pytest.approx(0.2)
        assert all(rates[f"f{j}"] == 0.0 for j in range(x.shape[1]) if j != 2)
        windows.append(window)
    native_w, python_w = windows
    assert (native_w.n, native_w.class_counts, native_w.confidence, native_w.errors) == (
        python_w.n,
        python_w.class_counts,
        python_w.confidence,
        python_w.errors,
    )
    assert [f.counts for f in native_w.features] == [f.counts for f in python_w.features]


def test_one_nan_row_no_longer_fails_its_whole_batch(
    tmp_path, demo_dir, reference_x, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = make_bundle(tmp_path, demo_dir, reference_x, signing_keys[:1], "float", "accept")
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    x = reference_x[:10].astype(np.float32).copy()
    x[3, 0] = np.nan
    result = p.predict(x)
    assert [(e.row, e.kind) for e in result.errors] == [(3, "nan_output")]
    assert np.isnan(result.outputs[3]).all()
    ok = np.delete(np.arange(10), 3)
    expected = p.predict(reference_x[:10].astype(np.float32)).outputs
    np.testing.assert_allclose(result.outputs[ok], expected[ok], rtol=1e-6, atol=1e-7)
    doc = result.to_json()
    assert doc["outputs"][3] is None and doc["classes"][3] is None
    assert doc["errors"] == [
        {"row": 3, "kind": "nan_output", "error": "the model returned NaN or infinity"}
    ]
    window = close(p)
    assert window.n == 20 and window.features[0].nan == 1
    assert window.errors == {"nan_output": 1}


@pytest.mark.parametrize("native", [True, False])
def test_refused_nan_names_the_feature_and_a_bad_row_is_refused_alone(
    tmp_path, demo_dir, reference_x, signing_keys, trust_1of1, monkeypatch, native
) -> None:
    bundle = make_bundle(
        tmp_path, demo_dir, reference_x, signing_keys[:1], "float", "refuse", "refuse"
    )
    p = predictor(bundle, trust_1of1, monkeypatch, native)
    row = reference_x[0].astype(np.float32).copy()
    row[4] = np.nan
    with pytest.raises(PredictionError, match=r"schema refuses: f4$"):
        p.predict(row)
    x = reference_x[:6].astype(np.float32).copy()
    x[1, 7] = np.nan
    x[4, 2] = reference_x[:, 2].max() + 100.0  # out of the schema's range
    result = p.predict(x)
    assert [(e.row, e.kind) for e in result.errors] == [(1, "invalid_input"), (4, "invalid_input")]
    assert result.errors[0].message.endswith("schema refuses: f7")
    assert result.errors[1].message.endswith("valid range: f2")
    assert np.isfinite(result.outputs[[0, 2, 3, 5]]).all()
    assert np.isnan(result.outputs[[1, 4]]).all()
    everything_bad = x[[1, 4]]
    with pytest.raises(PredictionError, match=r"no row could be served; row 0: .*f7 \(1 more\)"):
        p.predict(everything_bad)
    window = close(p)
    assert window.n == 4  # only the served rows; refused ones are errors, one per row
    assert window.errors == {"invalid_input": 1 + 2 + 2}
    assert window.features[7].nan == 0


def test_the_local_api_answers_a_batch_with_per_row_errors(
    tmp_path, demo_dir, reference_x, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = make_bundle(tmp_path, demo_dir, reference_x, signing_keys[:1], "float", "refuse")
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    api = LocalApi(p.predict, lambda: {}, lambda: None, port=0)
    api.start()
    try:
        rows = reference_x[:3].tolist()
        rows[1][5] = float("nan")
        body = json.dumps({"inputs": rows})  # Python's json writes NaN, and reads it back
        answer = httpx.post(f"http://127.0.0.1:{api.port}/v1/predict", content=body)
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["outputs"][1] is None and doc["classes"][1] is None
        assert doc["outputs"][0] is not None and doc["outputs"][2] is not None
        assert doc["errors"] == [
            {
                "row": 1,
                "kind": "invalid_input",
                "error": "inputs contain NaN, which this model's schema refuses: f5",
            }
        ]
        single = httpx.post(
            f"http://127.0.0.1:{api.port}/v1/predict", content=json.dumps({"inputs": rows[1]})
        )
        assert single.status_code == 400
        assert single.json() == {
            "error": "inputs contain NaN, which this model's schema refuses: f5"
        }
    finally:
        api.stop()
