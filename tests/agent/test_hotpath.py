"""The native one-sample path (edge_agent/inference/_hotpath.c) serves and counts as the
Python path.

Each test drives two Predictors over the same real bundle and runtime: one with the
native runner, one built with ``EDGEFLEET_NATIVE=0`` (the pure-Python path), and
compares what callers get and what the closed windows hold.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.directive import Probation
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.window import MetricsWindow, check_window
from edge_agent.daemon.probation import ProbationMonitor
from edge_agent.errors import PredictionError
from edge_agent.inference.hotpath import native_status
from edge_agent.inference.serving import Predictor, ServingModel
from hub.bundler import ReferenceData, build_bundle
from tests.support.closing import close_while_running

pytestmark = pytest.mark.runtime

NOW = 1_900_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def integer_reference(reference_x: np.ndarray) -> np.ndarray:
    """Reference data of small integers: one bin per value, every bin edge a midpoint
    k + 0.5, exactly representable in float32, so samples can hit edges."""
    rng = np.random.default_rng(11)
    return rng.integers(0, 10, size=(400, reference_x.shape[1])).astype(np.float64)


def make_bundle(
    tmp_path: Path, demo_dir: Path, reference: np.ndarray, keys, schema: InputSchema | None
) -> Path:
    out = tmp_path / "m.efb"
    names = tuple(f"f{i}" for i in range(reference.shape[1]))
    build_bundle(
        (demo_dir / "model-float.tflite").read_bytes(),
        name="m",
        version=1,
        reference=ReferenceData(reference, names),
        keys=keys,
        out=out,
        schema=schema,
    )
    return out


def predictor(bundle: Path, trust, monkeypatch, native: bool) -> Predictor:
    with monkeypatch.context() as m:
        if not native:
            m.setenv("EDGEFLEET_NATIVE", "0")
        serving = ServingModel(verify_bundle(bundle, trust), ModelVersion("m", 1), clock=Clock())
    assert (serving.native is not None) == native
    p = Predictor()
    p.active = serving
    return p


def outcome(p: Predictor, x) -> tuple[str, object]:
    try:
        return "ok", p.predict(x).outputs
    except PredictionError as exc:
        return "error", str(exc)


def assert_same_windows(a: MetricsWindow | None, b: MetricsWindow | None) -> None:
    assert a is not None and b is not None
    check_window(a)
    check_window(b)
    assert (a.n, a.class_counts, a.confidence, a.errors) == (
        b.n,
        b.class_counts,
        b.confidence,
        b.errors,
    )
    assert sum(a.latency) == sum(b.latency)  # timings differ; the invocations do not
    assert a.confidence_sum is not None and b.confidence_sum is not None
    # the same confidences, summed in another order
    np.testing.assert_allclose(a.confidence_sum, b.confidence_sum, rtol=1e-12, atol=0.0)
    for fa, fb in zip(a.features, b.features, strict=True):
        assert (fa.counts, fa.count, fa.min, fa.max, fa.out_of_range) == (
            fb.counts,
            fb.count,
            fb.min,
            fb.max,
            fb.out_of_range,
        )
        assert fa.mean == pytest.approx(fb.mean, rel=1e-9, abs=1e-9)
        assert fa.m2 == pytest.approx(fb.m2, rel=1e-9, abs=1e-9)


def assert_same_closed(native: Predictor, python: Predictor) -> list[MetricsWindow]:
    """Close both active models' windows at the same time, compare them, return them."""
    assert native.active is not None and python.active is not None
    windows = [native.active.monitor.close(NOW + 60), python.active.monitor.close(NOW + 60)]
    assert_same_windows(*windows)
    return [w for w in windows if w is not None]


def test_the_native_path_is_built_here() -> None:
    """The install step builds the extension; without it the targets in bench_predict
    are out of reach (the agent still serves, through the Python path)."""
    assert native_status() == "native", "edge_agent.inference._hotpath was not built (C compiler?)"


@pytest.mark.parametrize("policy", ["accept", "refuse"])
def test_same_outputs_errors_and_windows_as_the_python_path(
    tmp_path, demo_dir, integer_reference, signing_keys, trust_1of1, monkeypatch, policy
) -> None:
    f = integer_reference.shape[1]
    schema = InputSchema(
        tuple(FeatureSpec(f"f{j}", 1.0, 8.0) for j in range(f)), out_of_range=policy, nan=policy
    )
    bundle = make_bundle(tmp_path, demo_dir, integer_reference, signing_keys[:1], schema)
    native = predictor(bundle, trust_1of1, monkeypatch, native=True)
    python = predictor(bundle, trust_1of1, monkeypatch, native=False)
    rng = np.random.default_rng(5)
    rows = [integer_reference[i] for i in range(150)]  # in the bins
    rows += [integer_reference[i] + 0.5 for i in range(40)]  # on the edges, the last one too
    rows += list(rng.normal(4.5, 4.0, size=(150, f)))  # in, under and over the range
    odd = rng.normal(4.5, 1.0, size=(6, f))
    odd[0, 0], odd[1, 1], odd[2, 2] = np.nan, np.inf, -np.inf
    odd[3, :] = np.finfo(np.float32).max
    odd[4, 0] = 1e300  # float64 beyond float32: +inf once cast
    rows += list(odd)
    strided = np.zeros((f, 2), dtype=np.float32)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            x = row.astype(np.float32)
        elif i % 3 == 1:
            x = row  # float64
        else:
            strided[:, 0] = row
            x = strided[:, 0]  # a float32 view with a stride of 8 bytes
        got, want = outcome(native, x), outcome(python, x)
        assert got[0] == want[0], (i, got, want)
        if got[0] == "ok":
            np.testing.assert_array_equal(got[1], want[1])
        else:
            assert got[1] == want[1]
        if i == 100:  # a batch in between: the interpreter is resized and back
            batch = np.stack([r for r in rows[:40] if np.all((r >= 1) & (r <= 8))][:3])
            np.testing.assert_array_equal(
                native.predict(batch).outputs, python.predict(batch).outputs
            )
    assert native.active is not None and python.active is not None
    window, _ = assert_same_closed(native, python)
    assert (window.errors.get("invalid_input", 0) > 0) == (policy == "refuse")


def test_lists_and_other_shapes_take_the_general_path(
    tmp_path, demo_dir, integer_reference, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = make_bundle(tmp_path, demo_dir, integer_reference, signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    assert p.active is not None and p.active.native is not None
    row = integer_reference[0]
    assert p.active.native(row.tolist(), None) is None  # not a buffer
    assert p.active.native(row.astype(np.int32), None) is None  # not floats
    assert p.active.native(row[:-1].astype(np.float32), None) is None  # wrong length
    expected = p.predict(row.astype(np.float32)).outputs
    np.testing.assert_array_equal(p.predict(row.tolist()).outputs, expected)
    with pytest.raises(PredictionError, match="expected"):
        p.predict(row[:-1].astype(np.float32))
    window = p.active.monitor.close(NOW + 60)
    assert window is not None and window.n == 2
    assert window.errors == {"invalid_input": 1}


def test_a_model_returning_nan_is_refused_and_counted(
    bundles, trust_2of3, monkeypatch, reference_x
) -> None:
    """The v3 fixture model returns NaN when feature 0 is huge."""
    native = predictor(bundles["v3-nan"], trust_2of3, monkeypatch, native=True)
    python = predictor(bundles["v3-nan"], trust_2of3, monkeypatch, native=False)
    probation = ProbationMonitor(Probation(), started=NOW)
    native.probation = probation
    row = reference_x[0].astype(np.float32)
    row[0] = 1e20
    for p in (native, python):
        with pytest.raises(PredictionError, match="NaN or infinity"):
            p.predict(row)
        assert p.predict(reference_x[0].astype(np.float32)).outputs.shape == (1, 3)
    assert (probation.ok, probation.errors) == (1, 1)
    assert_same_closed(native, python)


def test_threads_predicting_while_windows_close_lose_no_count(
    tmp_path, demo_dir, integer_reference, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = make_bundle(tmp_path, demo_dir, integer_reference, signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    serving = p.active
    assert serving is not None
    rows = integer_reference[:50].astype(np.float32)

    def caller() -> None:
        for i in range(1000):
            p.predict(rows[i % 50])

    windows, during = close_while_running(lambda: serving.monitor.close(NOW + 60), [caller] * 3)
    assert during >= 1, "no window closed while the threads predicted"
    assert sum(w.n for w in windows) == 3000
    for w in windows:
        check_window(w)  # every histogram sums to its window's n
    total_class = sum(sum(w.class_counts) for w in windows)
    assert total_class == 3000


def test_single_and_batch_predictions_from_two_threads_raise_no_spurious_error(
    tmp_path, demo_dir, integer_reference, signing_keys, trust_1of1, monkeypatch
) -> None:
    """A batch resizes the interpreter under the serving lock; the native path must
    read the batch size under that same lock, or it feeds one row to an 8-row input."""
    bundle = make_bundle(tmp_path, demo_dir, integer_reference, signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    rows = integer_reference[:8].astype(np.float32)
    failures: list[str] = []

    def singles() -> None:
        for i in range(1500):
            try:
                p.predict(rows[i % 8])
            except PredictionError as exc:
                failures.append(str(exc))

    def batches() -> None:
        for _ in range(300):
            p.predict(rows)

    threads = [threading.Thread(target=singles), threading.Thread(target=batches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert p.active is not None
    window = p.active.monitor.close(NOW + 60)
    assert window is not None and window.errors == {}
    assert window.n == 1500 + 300 * 8


def test_a_shadow_model_sees_float64_inputs_rounded_as_served(
    tmp_path, demo_dir, integer_reference, signing_keys, trust_1of1, monkeypatch
) -> None:
    """Values just below a bin edge in float64 round onto it in float32: the champion
    and the challenger must bin the same (rounded) values."""
    bundle = make_bundle(tmp_path, demo_dir, integer_reference, signing_keys[:1], None)
    shadows = []
    for native in (True, False):
        p = predictor(bundle, trust_1of1, monkeypatch, native=native)
        with monkeypatch.context() as m:
            if not native:
                m.setenv("EDGEFLEET_NATIVE", "0")
            p.shadow = ServingModel(
                verify_bundle(bundle, trust_1of1),
                ModelVersion("m", 1),
                role="shadow",
                clock=Clock(),
            )
        x = integer_reference[0].copy()
        x[:] = np.nextafter(np.round(x), -np.inf)  # a hair below an integer (an edge)
        for _ in range(5):
            p.predict(x)
        assert p.active is not None
        active = p.active.monitor.close(NOW + 60)
        shadow = p.shadow.monitor.close(NOW + 60)
        assert active is not None and shadow is not None
        assert [f.counts for f in shadow.features] == [f.counts for f in active.features]
        shadows.append(shadow)
    assert_same_windows(*shadows)


def test_a_runner_that_failed_to_initialise_refuses_calls() -> None:
    from edge_agent.inference._hotpath import Runner

    bare = Runner.__new__(Runner)
    with pytest.raises(RuntimeError, match="not initialised"):
        bare(np.zeros(3, np.float32))
    with pytest.raises(TypeError):
        bare.__init__(model=object())  # type: ignore[misc]  # most arguments missing
    with pytest.raises(RuntimeError, match="not initialised"):
        bare(np.zeros(3, np.float32))
    bare.drain()  # nothing buffered, nothing to do


def test_a_retired_model_is_freed_without_the_cycle_collector(
    tmp_path, demo_dir, integer_reference, signing_keys, trust_1of1, monkeypatch
) -> None:
    """The runner, the serving model and its monitor form no reference cycle, so a
    replaced model's interpreter is freed at once (the agent may run with gc frozen)."""
    import gc
    import weakref

    bundle = make_bundle(tmp_path, demo_dir, integer_reference, signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    p.predict(integer_reference[0])
    assert p.active is not None
    gone = weakref.ref(p.active)
    runner = weakref.ref(p.active.native)  # type: ignore[arg-type]
    gc.disable()
    try:
        p.active = None
        assert gone() is None and runner() is None
    finally:
        gc.enable()
