"""Monitoring windows: exact counts, strict JSON, exact merges, cheap per-sample recording.

Agent-only: nothing here imports the hub (a device installs the agent alone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from functools import reduce

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.histogram import count
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import (
    LATENCY_EDGES_MS,
    MetricsWindow,
    merge_windows,
    subtract_windows,
)
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator
from tests.support.closing import close_while_running

F, C = 3, 4


def make_reference(n_features: int = F, n_classes: int = C, seed: int = 0) -> ReferenceStats:
    """Reference statistics from a small random dataset, as the hub's bundler derives them."""
    rng = np.random.default_rng(seed)
    data = rng.normal(
        loc=np.arange(n_features), scale=1.0 + np.arange(n_features), size=(500, n_features)
    )
    probs = rng.dirichlet(np.ones(n_classes), size=500)
    return ReferenceStats.from_data(
        data, probs, [f"f{j}" for j in range(n_features)], [f"c{k}" for k in range(n_classes)], 10
    )


REF = make_reference()
SCHEMA = InputSchema(tuple(FeatureSpec(f"f{j}", -1.0 + j, 1.0 + j) for j in range(F)))


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def accumulator(
    batch: int = 256, role: str = "active", version: int = 1, **kw
) -> WindowAccumulator:
    kw.setdefault("clock", FakeClock())
    return WindowAccumulator(REF, "demo", version, role, batch=batch, **kw)


def sample_data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=np.arange(F), scale=2.0, size=(n, F))
    probs = rng.dirichlet(np.ones(C), size=n)
    return x, probs


def window_of(x: np.ndarray, probs: np.ndarray, batch: int = 7, **kw) -> MetricsWindow:
    acc = accumulator(batch=batch, **kw)
    if len(x):
        acc.record(x, probs, 0.002)
    window = acc.close()
    assert window is not None
    return window


def moments_close(a, b, scale: float, n: int) -> bool:
    """Equal counts; mean and M2 equal up to rounding for values up to ``scale`` over ``n``."""
    return (
        a.count == b.count
        and math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=1e-12 * scale * (1 + n))
        and math.isclose(a.m2, b.m2, rel_tol=1e-9, abs_tol=1e-12 * (scale * (1 + n)) ** 2)
    )


def counts_of(w: MetricsWindow) -> tuple:
    return (
        w.n,
        tuple((f.counts, f.count, f.out_of_range) for f in w.features),
        w.class_counts,
        w.confidence,
        w.latency,
        w.errors,
        w.compared,
        w.agreed,
    )


# --- what a window counts ---------------------------------------------------------------


def test_window_counts_match_numpy_over_the_data():
    x, probs = sample_data(1000)
    acc = accumulator(schema=SCHEMA)
    for i in range(0, 1000, 10):  # ten predictions per invocation
        acc.record(x[i : i + 10], probs[i : i + 10], 0.0042)
    w = acc.close()
    assert w is not None and w.n == 1000
    for j, (f, edges) in enumerate(zip(w.features, REF.edges(), strict=True)):
        col = x[:, j]
        assert f.counts == tuple(count(edges, col).tolist())
        assert f.count == 1000
        assert math.isclose(f.mean, col.mean(), rel_tol=1e-12)
        assert math.isclose(f.m2, col.var() * 1000, rel_tol=1e-10)
        assert (f.min, f.max) == (col.min(), col.max())
        assert f.out_of_range == int(((col < -1.0 + j) | (col > 1.0 + j)).sum())
    assert w.class_counts == tuple(np.bincount(probs.argmax(1), minlength=C).tolist())
    assert w.confidence == tuple(count(np.asarray(REF.confidence.edges), probs.max(1)).tolist())
    # latency counts invocations, in milliseconds: 4.2 ms lies in [3.16, 5.62)
    assert sum(w.latency) == 100
    assert w.latency[LATENCY_EDGES_MS.index(3.16) + 1] == 100
    w.check_reference(REF)


def test_single_samples_and_batches_give_the_same_window():
    x, probs = sample_data(600)
    one_by_one = accumulator(batch=64)
    for row, p in zip(x, probs, strict=True):
        one_by_one.record(row, p, 0.001)
    batched = accumulator(batch=64)
    for lo, hi in [(0, 5), (5, 300), (300, 301), (301, 600)]:  # bigger and smaller than batch
        batched.record(x[lo:hi], probs[lo:hi], 0.001)
    a, b = one_by_one.close(), batched.close()
    assert a is not None and b is not None
    assert a.features[0].counts == b.features[0].counts
    assert counts_of(a)[:4] == counts_of(b)[:4]
    assert sum(a.latency) == 600 and sum(b.latency) == 4
    for fa, fb in zip(a.features, b.features, strict=True):
        assert moments_close(fa, fb, scale=10.0, n=600)


def test_record_only_buffers_until_a_batch_is_full():
    acc = accumulator(batch=4)
    x, probs = sample_data(5)
    for i in range(3):
        acc.record(x[i], probs[i], 0.001)
    assert (acc.n_pending, acc.n) == (3, 3)
    acc.record(x[3], probs[3], 0.001)
    assert (acc.n_pending, acc.n) == (0, 4)  # folded in one vectorised pass
    acc.record(x[4], probs[4], 0.001)
    w = acc.close()
    assert w is not None and w.n == 5 and acc.n == 0


def test_nan_and_infinite_inputs_are_binned_but_not_averaged():
    x = np.array([[np.nan, 0.5, 1.0], [np.inf, -np.inf, 2.0], [1e300, 0.5, 3.0], [0.1, 0.5, 4.0]])
    w = window_of(x, np.full((4, C), 1.0 / C), schema=SCHEMA)
    f0 = w.features[0]
    assert f0.nan == 1 and f0.counts[-2] == 2  # +inf and 1e300 overflow
    assert f0.count == 1 and f0.mean == 0.1 and f0.m2 == 0.0 and f0.min == f0.max == 0.1
    assert f0.out_of_range == 2  # inf and 1e300 are above the range; NaN is not "out of range"
    assert w.features[1].counts[0] == 1  # -inf underflows
    assert w.features[1].count == 3
    json.loads(canonical_bytes(w.to_json()))  # still strict JSON


def test_output_row_holding_nan_has_no_predicted_class():
    probs = np.array([[0.1, 0.7, 0.1, 0.1], [np.nan, 0.5, 0.25, 0.25]])
    w = window_of(np.zeros((2, F)), probs)
    assert w.class_counts == (0, 1, 0, 0)
    assert w.confidence[-1] == 1 and sum(w.confidence) == 2


def test_errors_and_shadow_agreement_are_counted():
    acc = accumulator(role="shadow")
    acc.record_error("invoke_error", 3)
    acc.record_error("nan_output")
    champion = np.array([[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0, 0, 1, 0], [np.nan, 0.5, 0, 0]])
    challenger = np.array([[0.8, 0.2, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0.6, 0.4], [0.9, 0.1, 0, 0]])
    acc.record_shadow(champion, challenger)
    acc.record_shadow(champion[0], challenger[0])
    w = acc.close()
    assert w is not None and w.n == 0
    assert w.errors == {"invoke_error": 3, "nan_output": 1}
    assert (w.compared, w.agreed) == (5, 3)


def test_close_returns_none_when_idle_and_starts_the_next_window():
    clock = FakeClock(100.0)
    acc = accumulator(clock=clock)
    clock.now = 160.0
    assert acc.close() is None
    assert acc.start == 160.0
    acc.record(np.zeros(F), np.full(C, 0.25), 0.001)
    w = acc.close(now=220.0)
    assert w is not None and (w.start, w.end) == (160.0, 220.0)
    assert acc.close(now=280.0) is None


def test_clock_going_backwards_gives_an_empty_interval_not_an_invalid_window():
    acc = accumulator(clock=FakeClock(500.0))
    acc.record_error("invalid_input")
    w = acc.close(now=400.0)
    assert w is not None and w.start == w.end == 500.0
    MetricsWindow.from_json(w.to_json())


def test_clock_jump_forward_then_back_next_windows_follow_the_clock_again():
    # a wall clock two days ahead, then corrected (found by the soak's clock_jump_agent
    # with --clock-jump 72: every later window stayed stamped at the jumped time, two days
    # in the future, and the hub refused them all as implausible)
    acc = accumulator(clock=FakeClock(100.0))
    ahead = 100.0 + 2 * 86400
    acc.record_error("invalid_input")
    assert acc.close(now=ahead) is not None  # closed while the clock was ahead
    acc.record_error("invalid_input")
    w = acc.close(now=160.0)  # the clock is right again
    assert w is not None and w.start == w.end == ahead
    acc.record_error("invalid_input")
    w = acc.close(now=220.0)
    assert w is not None and (w.start, w.end) == (160.0, 220.0)


def test_concurrent_record_and_close_lose_no_prediction():
    acc = accumulator(batch=16)
    x, probs = sample_data(1)

    def recorder() -> None:
        for _ in range(2000):
            acc.record(x[0], probs[0], 0.001)

    windows, during = close_while_running(acc.close, [recorder] * 4)
    assert during >= 1, "no window closed while the threads recorded"
    assert sum(w.n for w in windows) == 8000
    assert sum(sum(w.latency) for w in windows) == 8000


# --- refusing what does not fit ----------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "probs"),
    [
        (np.zeros(F + 1), np.zeros(C)),
        (np.zeros(F), np.zeros(C + 1)),
        (np.zeros((2, F)), np.zeros((3, C))),
        (np.zeros((2, F)), np.zeros(C)),
        (np.zeros((2, 2, F)), np.zeros((2, C))),
        (np.array(["a"] * F), np.zeros(C)),
    ],
)
def test_record_rejects_inputs_that_do_not_fit_the_model(x, probs):
    acc = accumulator()
    with pytest.raises(ValidationError):
        acc.record(x, probs, 0.001)
    assert acc.n == 0


def test_accumulator_rejects_a_model_that_does_not_fit_the_reference():
    with pytest.raises(ValidationError, match="classes"):
        WindowAccumulator(REF, "demo", 1, n_classes=C + 1)
    with pytest.raises(ValidationError, match="schema"):
        WindowAccumulator(REF, "demo", 1, schema=InputSchema((FeatureSpec("a"),)))
    with pytest.raises(ValidationError, match="role"):
        WindowAccumulator(REF, "demo", 1, "canary")
    with pytest.raises(ValidationError):
        WindowAccumulator(REF, "../demo", 1)
    with pytest.raises(ValidationError):
        accumulator().record_error("bad kind")


def test_window_checked_against_another_reference_is_refused():
    w = window_of(*sample_data(10))
    w.check_reference(REF)
    with pytest.raises(ValidationError, match="do not fit the reference"):
        w.check_reference(make_reference(F + 1))


# --- wire form ---------------------------------------------------------------------------


def test_json_round_trip_is_exact_and_compact():
    x, probs = sample_data(300)
    acc = accumulator(schema=SCHEMA)
    acc.record(x, probs, 0.003)
    acc.record_error("invalid_input", 2)
    w = acc.close()
    assert w is not None
    data = canonical_bytes(w.to_json())
    assert MetricsWindow.from_json(parse_json(data, "window")) == w
    assert b" " not in data and b"\n" not in data
    # 3 features x 13 bins, 4 classes, 13 confidence and 27 latency bins: well under 1 KB
    assert len(data) < 1024


def _valid_json() -> dict:
    x, probs = sample_data(20)
    acc = accumulator(role="shadow")
    acc.record(x, probs, 0.003)
    acc.record_shadow(probs, probs)
    w = acc.close()
    assert w is not None
    return json.loads(canonical_bytes(w.to_json()))


def _set(path: str, value):
    def mutate(doc: dict) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    "mutate",
    [
        _set("n", _DELETE),
        _set("extra", 1),
        _set("n", -1),
        _set("n", True),
        _set("n", 21),  # histograms no longer sum to n
        _set("role", "canary"),
        _set("model", "../etc"),
        _set("version", 0),
        _set("start", 2e9),  # after end
        _set("end", float("nan")),
        _set("features.counts.0.0", -1),
        _set("features.counts.0.0", 1.5),
        _set("features.counts.1", [20]),  # too short for any edges
        _set("features.mean", [0.0]),  # columns of different lengths
        _set("features.m2.0", -1.0),
        _set("features.min.0", None),  # values counted, so min cannot be null
        _set("features.count.0", 21),
        _set("features.out_of_range.0", 21),
        _set("features.extra", []),
        _set("classes", [0, 0, 0, 0]),
        _set("confidence", [0] * 13),
        _set("latency", [1]),
        _set("errors", {"bad kind": 1}),
        _set("errors", {"invoke_error": -1}),
        _set("errors", []),
        _set("agreed", 21),  # more than compared
    ],
)
def test_malformed_window_rejected(mutate):
    doc = _valid_json()
    MetricsWindow.from_json(doc)
    mutate(doc)
    with pytest.raises(ValidationError) as info:
        MetricsWindow.from_json(doc)
    assert "\n" not in str(info.value)


def test_merge_refuses_windows_of_another_model_version_role_or_shape():
    x, probs = sample_data(10)
    base = window_of(x, probs)
    for other in (
        dataclasses.replace(base, model_name="other"),
        window_of(x, probs, version=2),
        window_of(x, probs, role="shadow"),
        dataclasses.replace(base, class_counts=(*base.class_counts, 0)),
    ):
        with pytest.raises(ValidationError):
            merge_windows(base, other)
        with pytest.raises(ValidationError):
            subtract_windows(base, other)


def test_subtracting_a_window_not_contained_is_refused():
    a = window_of(*sample_data(10, seed=1))
    b = window_of(*sample_data(30, seed=2))
    with pytest.raises(ValidationError, match="not contained"):
        subtract_windows(a, b)


# --- exact merging, property-based --------------------------------------------------------

_values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0]),
)
_data = st.integers(0, 40).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, F), elements=_values),
        arrays(np.float64, (n, C), elements=st.floats(0.0, 1.0)),
    )
)
_PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _window(data: tuple[np.ndarray, np.ndarray], start: float) -> MetricsWindow:
    x, probs = data
    acc = accumulator(batch=5, clock=FakeClock(start), schema=SCHEMA)
    if len(x):
        acc.record(x, probs, 0.001 * (1 + len(x)))
    acc.record_error("invoke_error")
    acc.record_shadow(probs, probs[::-1])
    w = acc.close(now=start + 60.0)
    assert w is not None
    return w


def _finite_column(xs: list[np.ndarray], j: int) -> np.ndarray:
    col = np.concatenate([x[:, j] for x in xs])
    return col[np.abs(col) <= 1e100]


@_PROPERTY
@given(_data, _data, _data)
def test_merge_is_commutative_and_associative_on_counts(d1, d2, d3):
    a, b, c = _window(d1, 0.0), _window(d2, 60.0), _window(d3, 120.0)
    assert counts_of(merge_windows(a, b)) == counts_of(merge_windows(b, a))
    left = merge_windows(merge_windows(a, b), c)
    right = merge_windows(a, merge_windows(b, c))
    assert counts_of(left) == counts_of(right)
    assert (left.start, left.end) == (0.0, 180.0)
    for fl, fr in zip(left.features, right.features, strict=True):
        assert moments_close(fl, fr, scale=1e3, n=left.n)
        assert (fl.min, fl.max) == (fr.min, fr.max)


@_PROPERTY
@given(st.lists(_data, min_size=1, max_size=4))
def test_merged_moments_equal_numpy_over_the_concatenated_data(parts):
    merged = reduce(merge_windows, [_window(d, 60.0 * i) for i, d in enumerate(parts)])
    xs = [d[0] for d in parts]
    assert merged.n == sum(len(x) for x in xs)
    for j, f in enumerate(merged.features):
        col = _finite_column(xs, j)
        assert f.count == col.size
        assert f.counts == tuple(
            count(REF.edges()[j], np.concatenate([x[:, j] for x in xs])).tolist()
        )
        if col.size:
            assert math.isclose(f.mean, col.mean(), rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(f.m2, col.var() * col.size, rel_tol=1e-9, abs_tol=1e-6)
            assert (f.min, f.max) == (col.min(), col.max())
        else:
            assert (f.mean, f.m2, f.min, f.max) == (0.0, 0.0, None, None)


@_PROPERTY
@given(_data, _data)
def test_merging_then_subtracting_gives_back_the_original(d1, d2):
    a, b = _window(d1, 0.0), _window(d2, 60.0)
    rest = subtract_windows(merge_windows(a, b), b)
    assert counts_of(rest) == counts_of(a)
    for fr, fa in zip(rest.features, a.features, strict=True):
        assert moments_close(fr, fa, scale=1e3, n=a.n + b.n)
    # the result is itself a valid window, on the wire too
    assert MetricsWindow.from_json(json.loads(canonical_bytes(rest.to_json()))) == rest


_CORRUPTIONS = [None, -1, True, 1.5, 0, 7, "x", 10**400, float("nan"), float("inf"), [], [1, 2]]


@pytest.mark.parametrize("column", ["counts", "count", "mean", "m2", "min", "max", "out_of_range"])
@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("value", _CORRUPTIONS, ids=repr)
def test_whole_column_checks_agree_with_item_by_item_checks(column, index, value):
    """The hub's fast path (whole-column checks) accepts exactly what the item-by-item
    checks accept, and builds the same window."""
    import edge_agent.contract.window as monitor

    x = np.random.default_rng(index).normal(size=(40, 3))
    ref = ReferenceStats.from_data(x, np.full((40, 2), 0.5), ["a", "b", "c"], ("p", "q"))
    acc = WindowAccumulator(ref, "m", 1, clock=lambda: 0.0)
    acc.record(x, np.tile([0.7, 0.3], (40, 1)), 0.001)
    doc = acc.close(now=60.0).to_json()
    doc["features"][column][index] = value

    def parse(fast: bool, features_only: bool = False):
        saved = monitor._features_fast
        if not fast:
            monitor._features_fast = lambda cols: None
        try:
            if features_only:
                return monitor._features_from_json(doc["features"], "features")
            return MetricsWindow.from_json(doc)
        except ValidationError as exc:
            return str(exc)
        finally:
            monitor._features_fast = saved

    assert parse(fast=True) == parse(fast=False)
    # Features the item-by-item checks accept must take the fast path (not merely agree
    # because it declines everything), and give the same features.
    checked = parse(fast=False, features_only=True)
    if not isinstance(checked, str):
        assert monitor._features_fast(doc["features"]) == checked, (column, index, value)


def test_whole_column_checks_take_a_sound_window():
    import edge_agent.contract.window as monitor

    doc = _valid_json()
    fast = monitor._features_fast(doc["features"])
    assert fast is not None and fast == MetricsWindow.from_json(doc).features


_WINDOW_PATHS = [
    "model", "version", "role", "start", "end", "n", "compared", "agreed", "errors",
    "classes", "classes.0", "confidence", "confidence.0", "confidence.12", "latency",
    "latency.0", "features", "features.counts", "features.counts.0", "features.counts.1.0",
    "features.counts.2.12", "features.count", "features.count.0", "features.mean.1",
    "features.m2.2", "features.min.0", "features.max.1", "features.out_of_range.0",
    "features.min", "extra", "features.extra",
]  # fmt: skip
_WINDOW_VALUES = [
    *_CORRUPTIONS, False, 2**64, 0.0, 20, 20.0, -0.0, -1.0, 1e300, "active", "shadow", {},
    {"a": 1}, {"invoke_error": 0}, {"invoke_error": 3}, {"bad kind": 1}, {"x": True},
    [0] * 13, [0.0] * 3, [None] * 3, 21, [20], [20, 0, 0], _DELETE,
]  # fmt: skip


def _fast_and_checked(mutations, with_orjson: bool, strict: bool = False):
    """The fast path's and the field-by-field checks' window (None: declined or refused)
    after ``mutations``, and the document. ``strict``: every mutation must apply (else an
    earlier change may have removed its path, and it is skipped)."""
    import edge_agent.contract.window as monitor

    doc = _valid_json()
    doc["errors"] = {"invoke_error": 1}
    for path, value in mutations:
        if strict:
            _set(path, value)(doc)
            continue
        with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
            _set(path, value)(doc)
    saved = monitor.orjson
    if not with_orjson:
        monitor.orjson = None
    try:
        fast = monitor._window_fast(doc)
    finally:
        monitor.orjson = saved
    try:
        checked: MetricsWindow | None = monitor._window_checked(doc, "window")
    except ValidationError:
        checked = None
    return fast, checked, doc


def _as_agents_write_it(doc, checked: MetricsWindow | None) -> bool:
    """Whether ``doc`` is a valid window exactly as to_json() writes it (floats where
    floats go, no zero error counts), with a finite value in every feature: what the fast
    path exists for, so it must take it."""
    return (
        checked is not None
        and canonical_bytes(doc) == canonical_bytes(checked.to_json())
        and all(f.count > 0 for f in checked.features)
    )


def _refused_whatever_the_path(path: str, value) -> bool:
    """Changes no window may carry: an unknown field, a missing one, and values no field
    takes (null, a boolean, NaN, infinity, an integer beyond 64 bits)."""
    return (
        path in ("extra", "features.extra")
        or value is _DELETE
        or value is None
        or type(value) is bool
        or (type(value) is float and not math.isfinite(value))
        or (type(value) is int and value > 2**64)
    )


def _check_fast_path(fast, checked, doc, where) -> None:
    assert fast is None or fast == checked, where  # never accepts what refuses, same window
    if _as_agents_write_it(doc, checked):
        assert fast is not None, ("the fast path declined a window as agents write it", where)


@pytest.mark.parametrize("with_orjson", [True, False])
def test_window_fast_path_accepts_only_what_the_checked_path_accepts(with_orjson):
    """MetricsWindow.from_json's fast path (whole-window checks, for the hub's ingest)
    builds exactly the window the field-by-field checks build, or declines; it takes every
    valid window written as agents write it, and refuses what no window may carry; for
    every single change of a field, with and without orjson (a device may lack it)."""
    fast, checked, doc = _fast_and_checked([], with_orjson)
    assert fast is not None and fast == checked, "a window as agents write it is fast"
    taken = refused = 0
    for path in _WINDOW_PATHS:
        for value in _WINDOW_VALUES:
            if value is _DELETE and path in ("extra", "features.extra"):
                continue  # nothing to delete
            fast, checked, doc = _fast_and_checked([(path, value)], with_orjson, strict=True)
            _check_fast_path(fast, checked, doc, (path, value))
            if _refused_whatever_the_path(path, value):
                assert checked is None and fast is None, ("accepted", path, value)
            taken += fast is not None
            refused += checked is None
    # (the sweep holds valid changes the fast path must take, e.g. n-preserving ones)
    assert taken > 0 and refused > 0, (taken, refused)


@settings(max_examples=300, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(_WINDOW_PATHS), st.sampled_from(_WINDOW_VALUES)),
        min_size=2,
        max_size=3,
    ),
    with_orjson=st.booleans(),
)
def test_window_fast_path_agrees_under_several_changes(mutations, with_orjson):
    """As above, for a few changes at once."""
    fast, checked, doc = _fast_and_checked(mutations, with_orjson)
    _check_fast_path(fast, checked, doc, mutations)


@pytest.mark.parametrize("where", ["min", "max"])
def test_feature_without_finite_values_is_accepted_through_the_checked_path(where):
    """A feature whose values were all NaN (count 0, min/max null) is valid, though the
    fast path leaves it to the field-by-field checks."""
    import edge_agent.contract.window as monitor

    doc = _valid_json()
    n = doc["n"]
    f = doc["features"]
    f["counts"][0] = [0] * (len(f["counts"][0]) - 1) + [n]  # all NaN
    f["count"][0], f["mean"][0], f["m2"][0], f["min"][0], f["max"][0] = 0, 0.0, 0.0, None, None
    assert monitor._window_fast(doc) is None
    w = MetricsWindow.from_json(doc)
    assert w.features[0].nan == n and w.features[0].min is None
    assert MetricsWindow.from_json(w.to_json()) == w


def test_from_wire_keeps_the_document_only_when_it_is_exactly_the_json_form():
    """The hub stores the document it received when it is what to_json() would build."""
    doc = _valid_json()
    doc["errors"] = {"invoke_error": 1}
    w = MetricsWindow.from_wire(doc)
    assert w.wire_json() is doc and doc == w.to_json()
    assert MetricsWindow.from_json(doc).wire_json() is not doc  # from_json keeps nothing
    assert dataclasses.replace(w, n=w.n).wire_json() is not doc  # nor does a copy
    for change in ({"start": int(doc["start"])}, {"errors": {"invoke_error": 1, "x": 0}}):
        other = {**doc, **change}  # valid, but not as to_json() writes it
        w2 = MetricsWindow.from_wire(other)
        assert w2.wire_json() is not other and w2.wire_json() == w2.to_json()


def test_fast_path_windows_are_the_dataclass_built_normally():
    """The fast path sets the instance dict in one go: it holds every field, as the
    dataclass's __init__ would set them."""
    import edge_agent.contract.window as monitor

    w = monitor._window_fast(_valid_json())
    assert w is not None
    assert list(vars(w)) == [f.name for f in dataclasses.fields(MetricsWindow)]
    assert dataclasses.replace(w) == w and repr(dataclasses.replace(w)) == repr(w)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.n = 1  # type: ignore[misc]
