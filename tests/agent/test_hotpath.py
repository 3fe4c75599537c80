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
from hub.bundler import ReferenceData, build_bundle, load_reference
from tests.support.closing import close_while_running

pytestmark = pytest.mark.runtime

NOW = 1_900_000_000.0
TF = Path(__file__).resolve().parent.parent / "fixtures" / "tf"


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
    assert a.channel_values == b.channel_values  # a tensor's values at every position
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


# -- tensor samples (rank >= 2): per-channel summaries, value histograms, ranges ------


def tensor_schema(name: str, policy: str, kind: str | None = None) -> InputSchema:
    """A schema for a TF fixture with finite ranges that about one reference sample in
    five leaves (a channel's lowest value under the 10th percentile of those, or its
    highest above the 90th), both policies ``policy``."""
    with np.load(TF / f"{name}.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
        channels = [str(c) for c in data["channel_names"]]
        labels = tuple(str(label) for label in data["labels"])
    values = x.reshape(x.shape[0], -1, x.shape[-1])
    lo = np.round(np.quantile(values.min(axis=1), 0.1, axis=0), 2)
    hi = np.round(np.quantile(values.max(axis=1), 0.9, axis=0), 2)
    return InputSchema(
        tuple(FeatureSpec(c, float(a), float(b)) for c, a, b in zip(channels, lo, hi, strict=True)),
        labels=labels,
        out_of_range=policy,  # type: ignore[arg-type]
        nan=policy,  # type: ignore[arg-type]
        shape=x.shape[1:],
        channel_axis=x.ndim - 2,
        output_kind=kind,  # type: ignore[arg-type]
    )


def tensor_bundle(
    tmp_path: Path, name: str, variant: str, keys, schema: InputSchema | None, jitter: float = 0.0
) -> Path:
    """A bundle of a TF fixture; with ``jitter``, its reference values get that much
    noise, so its bin edges (midpoints of float32 values) fall between float32 values."""
    out = tmp_path / f"{name}-{variant}.efb"
    reference = load_reference(TF / f"{name}.npz")
    if jitter:
        noise = np.random.default_rng(8).normal(0.0, jitter, reference.x.shape)
        reference = ReferenceData(reference.x.astype(np.float64) + noise, reference.names)
    build_bundle(
        (TF / f"{name}_{variant}.tflite").read_bytes(),
        name="m",
        version=1,
        reference=reference,
        keys=keys,
        out=out,
        schema=schema,
    )
    return out


def tensor_samples(name: str, serving: ServingModel, count: int) -> list[np.ndarray]:
    """Reference samples as callers send them (float32, float64, [1, *shape], strided),
    values on the channel bins' edges (the last one too) and a hair either side, and
    NaN, infinities, float64 values beyond float32 and values out of range."""
    x = load_reference(TF / f"{name}.npz").x.astype(np.float32)
    rng = np.random.default_rng(3)
    samples = []
    for i in range(count):
        s = x[i % x.shape[0]].copy()
        kind = i % 5
        if kind == 1:
            samples.append(s.astype(np.float64))
        elif kind == 2:
            samples.append(s[None])  # [1, *shape]
        elif kind == 3:
            samples.append(np.asfortranarray(s))  # not C-contiguous: strides differ
        elif kind == 4:
            wide = np.zeros((*s.shape, 2), dtype=np.float32)
            wide[..., 0] = s
            samples.append(wide[..., 0])  # a strided view
        else:
            samples.append(s)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    for c, bins in enumerate(serving.reference.channels):
        edges = np.asarray(bins.edges, dtype=np.float32)
        for shift in (-1, 0, 1):
            s = flat[c].copy()
            at = np.nextafter(edges, np.float32(np.inf * shift)) if shift else edges
            s[: edges.size, c] = at  # every edge of channel c, the last one included
            samples.append(s.reshape(x.shape[1:]))
    odd = [x[j].copy() for j in range(8)]
    odd[0].reshape(-1)[5] = np.nan
    odd[1].reshape(-1)[7] = np.inf
    odd[2].reshape(-1)[-1] = -np.inf
    odd[3].reshape(-1)[:] = np.finfo(np.float32).max  # squares overflow float32, not float64
    odd[4].reshape(-1, x.shape[-1])[:, 1] = 1e6  # one channel far out of range
    odd[5].reshape(-1, x.shape[-1])[3, 0] = -1e6
    samples += odd
    big = x[6].astype(np.float64)
    big.reshape(-1)[0] = 1e300  # +inf once rounded to float32
    samples.append(big)
    rng.shuffle(samples)  # type: ignore[arg-type]
    return samples


@pytest.mark.parametrize("policy", ["accept", "refuse"])
@pytest.mark.parametrize(
    ("name", "variant", "jitter"),
    [("cnn1d", "int8f", 0.0), ("cnn1d", "dynamic", 1e-3), ("cnn2d", "float16", 0.0)],
)
def test_tensor_samples_get_the_same_outputs_errors_and_windows_as_the_python_path(
    tmp_path, signing_keys, trust_1of1, monkeypatch, name, variant, jitter, policy
) -> None:
    schema = tensor_schema(name, policy)
    bundle = tensor_bundle(tmp_path, name, variant, signing_keys[:1], schema, jitter)
    native = predictor(bundle, trust_1of1, monkeypatch, native=True)
    python = predictor(bundle, trust_1of1, monkeypatch, native=False)
    assert native.active is not None and native.active.native is not None
    samples = tensor_samples(name, native.active, 150 if name == "cnn1d" else 60)
    served = 0
    for i, x in enumerate(samples):
        got, want = outcome(native, x), outcome(python, x)
        assert got[0] == want[0], (i, got, want)
        if got[0] == "ok":
            served += 1
            np.testing.assert_array_equal(got[1], want[1])
        else:
            assert got[1] == want[1]
        if i == 40:  # a batch in between: the interpreter is resized and back
            batch = load_reference(TF / f"{name}.npz").x[:3].astype(np.float32)
            assert (outcome(native, batch)[0], outcome(python, batch)[0]) == ("ok", "ok")
    window, _ = assert_same_closed(native, python)
    assert served > len(samples) // 2
    assert window.channel_values is not None
    assert (window.errors.get("invalid_input", 0) > 0) == (policy == "refuse")
    out_of_range = sum(f.out_of_range for f in window.features)
    assert (out_of_range > 0) == (policy == "accept")  # refused ones never reach the window
    if policy == "accept":
        # the NaN sample, accepted: in its channel's summaries' NaN bins and value NaN bin
        assert (window.features[6].nan, window.features[8].nan) == (1, 1)  # az mean, energy
        assert window.channel_values is not None and window.channel_values.counts[2][-1] == 1


@pytest.mark.parametrize("native", [True, False])
def test_accepted_tensor_values_out_of_range_are_counted_per_channel(
    tmp_path, signing_keys, trust_1of1, monkeypatch, native
) -> None:
    """Each channel's summaries count the samples holding a value of that channel
    outside its range (as a tabular feature counts its values), on both paths."""
    schema = InputSchema(
        (FeatureSpec("ax", -0.5, 0.5), FeatureSpec("ay"), FeatureSpec("az", 0.8, None)),
        labels=("normal", "imbalance", "bearing"),
        out_of_range="accept",
        shape=(64, 3),
        channel_axis=1,
    )
    bundle = tensor_bundle(tmp_path, "cnn1d", "int8f", signing_keys[:1], schema)
    p = predictor(bundle, trust_1of1, monkeypatch, native=native)
    x = load_reference(TF / "cnn1d.npz").x[:100].astype(np.float32)
    x[7, 10, 1] = 1e9  # ay is unbounded: never out of range
    x[8, 0, 0] = np.inf
    for row in x:
        p.predict(row)
    assert p.active is not None
    window = p.active.monitor.close(NOW + 60)
    assert window is not None and window.n == 100
    expected = [
        int(np.count_nonzero(((x[..., 0] < -0.5) | (x[..., 0] > 0.5)).any(axis=1))),
        0,
        int(np.count_nonzero((x[..., 2] < 0.8).any(axis=1))),
    ]
    assert expected[0] > 0 and expected[2] > 0 and expected[0] != expected[2]
    assert [f.out_of_range for f in window.features] == [n for n in expected for _ in range(3)]
    check_window(window)


def test_a_tensor_sample_takes_the_native_path_only_in_its_own_shape_and_dtype(
    tmp_path, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = tensor_bundle(tmp_path, "cnn1d", "int8f", signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    assert p.active is not None and p.active.native is not None
    run = p.active.native
    x = load_reference(TF / "cnn1d.npz").x[0].astype(np.float32)
    assert run(x, None) is not None and run(x[None], None) is not None
    assert run(x.astype(np.float64)[None], None) is not None
    assert run(x.reshape(-1), None) is None  # flattened: the general path says why
    assert run(x.T, None) is None  # [3, 64]
    assert run(np.stack([x, x]), None) is None  # a batch
    assert run(x[None, None], None) is None
    assert run(x.astype(np.float16), None) is None
    assert run(x.tolist(), None) is None
    with pytest.raises(PredictionError, match="expected"):
        p.predict(x.reshape(-1))
    window = p.active.monitor.close(NOW + 60)
    assert window is not None and window.n == 3 and window.errors == {"invalid_input": 1}


def test_a_tensor_with_channels_first_is_served_by_the_python_path(
    tmp_path, signing_keys, trust_1of1, monkeypatch
) -> None:
    """NumPy sums such a tensor's channels pairwise, in an order the native sums do not
    follow: it is served, and counted, by the Python path."""
    names = tuple(FeatureSpec(f"t{i}") for i in range(64))
    schema = InputSchema(names, labels=("a", "b", "c"), shape=(64, 3), channel_axis=0)
    out = tmp_path / "first.efb"
    ref = load_reference(TF / "cnn1d.npz")
    build_bundle(
        (TF / "cnn1d_int8f.tflite").read_bytes(),
        name="m",
        version=1,
        reference=ReferenceData(ref.x, tuple(n.name for n in names)),
        keys=signing_keys[:1],
        out=out,
        schema=schema,
    )
    with monkeypatch.context():
        serving = ServingModel(verify_bundle(out, trust_1of1), ModelVersion("m", 1), clock=Clock())
    assert native_status() == "native" and serving.native is None
    p = Predictor()
    p.active = serving
    assert p.predict(ref.x[0].astype(np.float32)).outputs.shape == (1, 3)


def test_a_shadow_model_sees_the_tensor_sample_served_natively(
    tmp_path, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = tensor_bundle(tmp_path, "cnn1d", "int8f", signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    p.shadow = ServingModel(
        verify_bundle(bundle, trust_1of1), ModelVersion("m", 1), role="shadow", clock=Clock()
    )
    x = load_reference(TF / "cnn1d.npz").x[:20]
    for row in x:
        p.predict(row.astype(np.float64))
    assert p.active is not None
    active, shadow = p.active.monitor.close(NOW + 60), p.shadow.monitor.close(NOW + 60)
    assert active is not None and shadow is not None
    assert shadow.errors == {} and shadow.n == 20
    assert shadow.compared == 20 and shadow.agreed == 20  # the same model, the same inputs
    assert [f.counts for f in shadow.features] == [f.counts for f in active.features]


def test_threads_predicting_tensors_while_windows_close_lose_no_count(
    tmp_path, signing_keys, trust_1of1, monkeypatch
) -> None:
    bundle = tensor_bundle(tmp_path, "cnn1d", "int8f", signing_keys[:1], None)
    p = predictor(bundle, trust_1of1, monkeypatch, native=True)
    serving = p.active
    assert serving is not None
    rows = load_reference(TF / "cnn1d.npz").x[:50].astype(np.float32)

    def caller() -> None:
        for i in range(400):
            p.predict(rows[i % 50])

    windows, during = close_while_running(lambda: serving.monitor.close(NOW + 60), [caller] * 3)
    assert during >= 1, "no window closed while the threads predicted"
    assert sum(w.n for w in windows) == 1200
    for w in windows:
        check_window(w)  # every histogram sums to n, every channel's to n x positions


def test_a_tensor_model_whose_outputs_are_monitored_counts_them_as_the_python_path(
    tmp_path, signing_keys, trust_1of1, monkeypatch
) -> None:
    """A tensor model whose outputs are not classes (here declared ``regression``)
    counts its outputs after the channels' summaries, natively too."""
    schema = tensor_schema("cnn1d", "accept", "regression")
    bundle = tensor_bundle(tmp_path, "cnn1d", "int8f", signing_keys[:1], schema)
    native = predictor(bundle, trust_1of1, monkeypatch, native=True)
    python = predictor(bundle, trust_1of1, monkeypatch, native=False)
    for x in tensor_samples("cnn1d", native.active, 120):  # type: ignore[arg-type]
        got, want = outcome(native, x), outcome(python, x)
        assert got[0] == want[0] and (got[0] == "error" or np.array_equal(got[1], want[1]))
    window, _ = assert_same_closed(native, python)
    assert len(window.features) == 3 * 3 + 3  # summaries, then out.<label>
    assert all(f.count > 100 for f in window.features[9:])
