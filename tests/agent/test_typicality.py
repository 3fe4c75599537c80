"""Typicality energy in monitoring windows (bundles with a calibration map): counted the
same by the native and the Python path, exact merges, optional on the wire."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.window import (
    MetricsWindow,
    _window_checked,
    _window_fast,
    check_window,
    merge_windows,
    subtract_windows,
)
from edge_agent.errors import PredictionError, ValidationError
from edge_agent.inference.serving import Predictor, ServingModel
from hub.bundler import ReferenceData, build_bundle
from hub.modelkit import FEATURES, make_dataset

pytestmark = pytest.mark.runtime

NOW = 1_900_000_000.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, demo_dir: Path, signing_keys, trust_1of1):
    with np.load(demo_dir / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    h = make_dataset(2000, 1013)
    out = tmp_path_factory.mktemp("typ") / "b.efb"
    build_bundle(
        (demo_dir / "model-float.tflite").read_bytes(),
        name="m",
        version=1,
        reference=ReferenceData(x, FEATURES, h.x, h.y),
        keys=signing_keys[:1],
        out=out,
    )
    return verify_bundle(out, trust_1of1)


def predictor(bundle, monkeypatch, native: bool) -> Predictor:
    with monkeypatch.context() as m:
        if not native:
            m.setenv("EDGEFLEET_NATIVE", "0")
        serving = ServingModel(bundle, ModelVersion("m", 1), clock=lambda: NOW)
    assert (serving.native is not None) == native
    p = Predictor()
    p.active = serving
    return p


def close(p: Predictor) -> MetricsWindow:
    assert p.active is not None
    w = p.active.monitor.close(NOW + 60)
    assert w is not None
    check_window(w)
    return w


def samples() -> list[np.ndarray]:
    rows = list(make_dataset(300, 1014).x)
    odd = make_dataset(6, 1015).x.copy()
    odd[0, 0], odd[1, 3], odd[2, 5] = np.nan, np.inf, -np.inf  # no energy: not counted
    return rows + list(odd)


def test_native_and_python_paths_count_the_same_typicality(bundle, monkeypatch) -> None:
    native, python = predictor(bundle, monkeypatch, True), predictor(bundle, monkeypatch, False)
    for row in samples():
        for p in (native, python):
            with contextlib.suppress(PredictionError):  # refused alike, counted alike
                p.predict(row)
    a, b = close(native), close(python)
    assert a.errors == b.errors == {"invalid_input": 1, "nan_output": 2}  # NaN refused
    assert a.n == b.n == 305
    assert a.typicality_n == b.typicality_n == 305 - 2  # the infinite rows have no energy
    assert a.typicality_sum is not None and b.typicality_sum is not None
    assert a.typicality_sum == pytest.approx(b.typicality_sum, rel=1e-9)
    cal = bundle.reference().calibration
    assert a.typicality_sum / a.typicality_n < 3 * max(cal.typicality.expected)  # typical
    for p in (native, python):  # finite inputs far out: a huge energy, counted
        with contextlib.suppress(PredictionError):
            p.predict(np.full(len(FEATURES), np.finfo(np.float32).max, dtype=np.float32))
    far = close(native)
    assert far.typicality_n == 1 and far.typicality_sum is not None
    assert far.typicality_sum > 1e60 and close(python).typicality_n == 1


def test_typicality_merges_subtracts_and_round_trips(bundle, monkeypatch) -> None:
    p = predictor(bundle, monkeypatch, True)
    p.predict(make_dataset(200, 1016).x.astype(np.float32))
    a = close(p)
    p.predict(make_dataset(100, 1017).x.astype(np.float32))
    b = close(p)
    merged = merge_windows(a, b)
    assert merged.typicality_n == 300
    assert a.typicality_sum is not None and b.typicality_sum is not None
    assert merged.typicality_sum == pytest.approx(a.typicality_sum + b.typicality_sum)
    rest = subtract_windows(merged, b)
    assert rest.typicality_n == 200
    assert rest.typicality_sum == pytest.approx(a.typicality_sum)
    doc = json.loads(canonical_bytes(merged.to_json()))
    assert MetricsWindow.from_json(doc) == merged
    assert MetricsWindow.from_wire(doc).wire_json() is doc  # the fast path took it
    old = MetricsWindow.from_json({k: v for k, v in doc.items() if not k.startswith("typ")})
    assert merge_windows(old, merged).typicality_n is None


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("count above n", {"typicality_n": 10**6}),
        ("negative count", {"typicality_n": -1}),
        ("negative sum", {"typicality_sum": -1.0}),
        ("count without sum", {"typicality_sum": None}),
        ("a string", {"typicality_n": "3"}),
        ("a boolean", {"typicality_n": True}),
    ],
)
def test_forged_typicality_is_refused_by_both_paths(bundle, monkeypatch, name, change) -> None:
    p = predictor(bundle, monkeypatch, True)
    p.predict(make_dataset(50, 1018).x.astype(np.float32))
    doc = json.loads(canonical_bytes(close(p).to_json()))
    doc.update(change)
    if change.get("typicality_sum", 0) is None:
        del doc["typicality_sum"]
    assert _window_fast(doc) is None, name
    with pytest.raises(ValidationError) as info:
        _window_checked(doc, "window")
    assert "typicality" in str(info.value) and "\n" not in str(info.value)
