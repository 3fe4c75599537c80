"""Fleet drift: distances on merged counts, never averaged scores (no hub I/O)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.histogram import bin_indices, count
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import LATENCY_EDGES_MS, MetricsWindow
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator
from hub.drift import (
    DriftError,
    DriftThresholds,
    compare,
    drift_report,
    hellinger,
    histogram_quantile,
    js_distance,
    mean_from_histogram,
    merge_all,
    merge_by_key,
    pool_bins,
    psi,
)

F, C = 3, 3
CONF_EDGES = np.linspace(0.0, 1.0, 11)


def make_reference(seed: int = 0, n: int = 5000) -> ReferenceStats:
    data = np.random.default_rng(seed).normal(size=(n, F))
    return ReferenceStats.from_data(
        data,
        probs_for(data),
        [f"f{j}" for j in range(F)],
        [f"c{k}" for k in range(C)],
        10,
        tuple(CONF_EDGES),
    )


def probs_for(x: np.ndarray) -> np.ndarray:
    """A fixed 'model': softmax of the first C features."""
    z = np.nan_to_num(x[:, :C], nan=0.0)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


REF = make_reference()


def device_window(
    x: np.ndarray, *, version: int = 1, role: str = "active", latencies: np.ndarray | None = None
) -> MetricsWindow:
    acc = WindowAccumulator(REF, "m", version, role, clock=lambda: 1_700_000_000.0)
    if latencies is None:
        acc.record(x, probs_for(x), 0.002)
    else:
        for row, lat in zip(x, latencies, strict=True):
            acc.record(row, probs_for(row[None, :])[0], float(lat))
    window = acc.close(1_700_000_060.0)
    assert window is not None
    return window


def direct_psi(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    p = p / p.sum()
    q = q / q.sum()
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True)))


# --- known answers ---------------------------------------------------------------


def test_psi_known_answer() -> None:
    ref, cur = np.array([10, 20, 30, 40.0]), np.array([40, 30, 20, 10.0])
    expected = 2 * (0.3 * math.log(4) + 0.1 * math.log(1.5))
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-12)
    assert psi(ref, cur) == pytest.approx(direct_psi(ref, cur), rel=1e-12)


def test_psi_finite_with_empty_bins() -> None:
    ref, cur = np.array([0, 5, 5.0]), np.array([5, 5, 0.0])
    value = psi(ref, cur)
    assert math.isfinite(value)
    assert value == pytest.approx(direct_psi(ref, cur), rel=1e-12)
    assert psi(ref, cur, eps=1e-6) > value  # smaller eps, larger penalty: still finite


def test_js_known_answers() -> None:
    assert js_distance([1, 0], [0, 1]) == 1.0  # disjoint support: the maximum, base 2
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    m = (p + q) / 2
    kl_pm = sum(a * math.log2(a / b) for a, b in zip(p, m, strict=True) if a > 0)
    kl_qm = sum(a * math.log2(a / b) for a, b in zip(q, m, strict=True) if a > 0)
    assert js_distance([5, 5], [7, 0]) == pytest.approx(math.sqrt((kl_pm + kl_qm) / 2))


def test_hellinger_known_answers() -> None:
    assert hellinger([1, 0], [0, 1]) == pytest.approx(1.0)
    assert hellinger([5, 5], [7, 0]) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))


counts_vec = st.lists(st.integers(0, 1000), min_size=2, max_size=12).filter(lambda c: sum(c) > 0)


@given(st.data())
def test_distances_bounded_symmetric_and_zero_on_identical(data: st.DataObject) -> None:
    a = data.draw(counts_vec)
    b = data.draw(
        st.lists(st.integers(0, 1000), min_size=len(a), max_size=len(a)).filter(
            lambda c: sum(c) > 0
        )
    )
    js = js_distance(a, b)
    assert 0.0 <= js <= 1.0
    assert js == pytest.approx(js_distance(b, a), abs=1e-12)
    h = hellinger(a, b)
    assert 0.0 <= h <= 1.0
    assert h == pytest.approx(hellinger(b, a), abs=1e-12)
    assert math.isfinite(psi(a, b)) and psi(a, b) >= 0.0
    scaled = [3 * c for c in a]  # same distribution, other n
    assert psi(a, scaled) == 0.0
    assert js_distance(a, scaled) == 0.0
    assert hellinger(a, scaled) == 0.0


@pytest.mark.parametrize("fn", [psi, js_distance, hellinger])
def test_bad_count_vectors_refused(fn: object) -> None:
    assert callable(fn)
    with pytest.raises(DriftError, match=r"count vectors must be 1-D of one length"):
        fn([1, 2], [1, 2, 3])
    with pytest.raises(DriftError, match="both count vectors need a positive total"):
        fn([0, 0], [1, 2])
    with pytest.raises(DriftError, match="counts cannot be negative"):
        fn([1, -1], [1, 2])


# --- merge first, then score -------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    shifts=st.lists(st.floats(-2, 2), min_size=5, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_merged_windows_score_like_pooled_counts(
    sizes: list[int], shifts: list[float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, F)) + shifts[i] for i, n in enumerate(sizes)]
    report = drift_report(REF, [device_window(x) for x in xs], min_count=1)
    pooled = np.concatenate(xs)
    for j, (fr, fd) in enumerate(zip(REF.features, report.features, strict=True)):
        cur = count(np.asarray(fr.edges), pooled[:, j])[:-1]
        ref = np.asarray(fr.counts)[:-1]
        assert fd.n == pooled.shape[0]
        assert fd.psi == psi(ref, cur)
        assert fd.js == js_distance(ref, cur)
        assert fd.hellinger == hellinger(ref, cur)
    assert report.n == pooled.shape[0]


def test_averaging_per_device_scores_is_wrong() -> None:
    """A busy healthy device and a tiny odd one: the fleet has barely drifted.

    Averaging per-device PSI weights 10 predictions like 5000 and raises a false alarm;
    scoring the merged counts gives the fleet's true (small) shift.
    """
    rng = np.random.default_rng(7)
    healthy = device_window(rng.normal(size=(5000, F)))
    odd = device_window(rng.normal(size=(10, F)) + 6.0)
    pooled = drift_report(REF, [healthy, odd], min_count=1).features[0].psi
    per_device = [drift_report(REF, [w], min_count=1).features[0].psi for w in (healthy, odd)]
    assert pooled is not None and all(s is not None for s in per_device)
    averaged = float(np.mean([s for s in per_device if s is not None]))
    assert pooled < 0.1 < averaged
    assert averaged > 10 * pooled


def test_merge_all_and_by_key() -> None:
    rng = np.random.default_rng(1)
    a1, a2 = device_window(rng.normal(size=(5, F))), device_window(rng.normal(size=(7, F)))
    b = device_window(rng.normal(size=(3, F)), version=2)
    assert merge_all([]) is None
    merged = merge_all([a1, a2])
    assert merged is not None and merged.n == 12
    groups = merge_by_key([a1, b, a2])
    assert groups[("m", 1, "active")] == merged
    assert groups[("m", 2, "active")].n == 3
    with pytest.raises(ValidationError, match=r"\('m', 2, 'active'\) cannot be combined"):
        merge_all([a1, b])


# --- the report ----------------------------------------------------------------


def test_shift_of_one_feature_is_flagged_on_that_feature_only() -> None:
    rng = np.random.default_rng(42)
    windows = []
    for _ in range(4):  # four devices
        x = rng.normal(size=(800, F))
        x[:, 1] += REF.features[1].std  # shift by one reference std
        windows.append(device_window(x))
    report = drift_report(REF, windows)
    by_name = {f.name: f for f in report.features}
    assert by_name["f1"].drifted and by_name["f1"].verdict == "major"
    assert by_name["f1"].js is not None and by_name["f1"].js >= 0.1
    for name in ("f0", "f2"):
        assert not by_name[name].drifted and by_name[name].verdict == "none"
    assert report.drifted_share == pytest.approx(1 / 3)
    assert report.dataset_drift is False
    js_report = drift_report(REF, windows, thresholds=DriftThresholds(psi=None, js=0.1))
    assert [f.drifted for f in js_report.features] == [False, True, False]
    # Significant but below an effect worth acting on: minor, not drift.
    strict = drift_report(REF, windows, thresholds=DriftThresholds(psi=5.0, js=None))
    f1 = {f.name: f for f in strict.features}["f1"]
    assert f1.verdict == "minor" and not f1.drifted and not f1.effect_reached
    assert f1.p_adjusted is not None and f1.p_adjusted <= strict.thresholds.alpha
    assert report.decision.verdict == "major"
    assert report.decision.drifted[0] == "f1" and "f0" not in report.decision.drifted


def test_verdict_carries_its_evidence() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3000, F))
    x[:, 0] += 0.5
    report = drift_report(REF, [device_window(x)])
    f0 = report.features[0]
    assert (f0.n, f0.m) == (3000, REF.n)
    groups = len(pool_bins(REF.features[0].counts[:-1], 3000, DriftThresholds().min_expected))
    assert f0.statistic is not None and f0.statistic > 0 and f0.df == groups - 1 >= 1
    assert f0.p_value is not None and f0.p_adjusted is not None and f0.threshold is not None
    assert f0.p_value <= f0.threshold and f0.p_adjusted <= f0.alpha == 0.01
    assert f0.n_needed is not None and f0.n >= f0.n_needed
    assert f0.verdict in ("drift", "major") and "chi2" in f0.reason and "Holm" in f0.reason
    doc = f0.to_json()
    for key in (
        "n",
        "m",
        "statistic",
        "df",
        "p_value",
        "p_adjusted",
        "threshold",
        "alpha",
        "n_needed",
        "psi",
        "js",
        "hellinger",
        "effect_reached",
        "verdict",
        "reason",
    ):
        assert key in doc
    assert report.to_json()["decision"]["verdict"] == report.decision.verdict


def test_below_the_evidence_needed_the_verdict_is_insufficient_never_none() -> None:
    rng = np.random.default_rng(3)
    windows = [device_window(rng.normal(size=(50, F))) for _ in range(3)]  # 150, stable
    report = drift_report(REF, windows)
    for f in (*report.features, report.prediction, report.confidence):
        assert f.verdict == "insufficient" and not f.drifted
        assert f.n_needed is not None and f.n < f.n_needed
        assert f"n {f.n} of {f.n_needed} needed" in f.reason
        assert f.psi is not None  # the effect sizes are still shown, as evidence
    assert report.drifted_share is None and report.dataset_drift is None
    assert report.decision.verdict == "insufficient"
    assert report.decision.describe().startswith("waiting for evidence: ")
    assert report.n == 150


def test_min_count_floor_keeps_even_strong_drift_untested() -> None:
    rng = np.random.default_rng(3)
    windows = [device_window(rng.normal(size=(50, F)) + 3.0) for _ in range(3)]  # 150
    floored = drift_report(REF, windows, min_count=200)
    assert all(f.statistic is None and f.verdict == "insufficient" for f in floored.features)
    assert all(f.n_needed is not None and f.n_needed >= 200 for f in floored.features)
    # Without the floor the test runs: a 3 sd shift is drift long before the evidence
    # needed to say "none".
    again = drift_report(REF, windows)
    assert all(f.verdict == "major" for f in again.features)
    assert all(f.n_needed is not None and f.n < f.n_needed for f in again.features)


def test_nan_is_data_quality_not_drift() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, F))
    clean = drift_report(REF, [device_window(x)])
    x_nan = np.concatenate([x, np.full((250, F), np.nan)])
    dirty = drift_report(REF, [device_window(x_nan)])
    assert dirty.features[0].psi == clean.features[0].psi  # NaN bin left out of scores
    assert dirty.features[0].n == 1000
    assert dirty.data_quality[0].nan_rate == pytest.approx(250 / 1250)
    assert clean.data_quality[0].nan_rate == 0.0


def test_latency_percentile_within_one_bin() -> None:
    rng = np.random.default_rng(11)
    lat_ms = rng.lognormal(mean=math.log(3.0), sigma=0.8, size=2000)
    x = rng.normal(size=(2000, F))
    report = drift_report(REF, [device_window(x, latencies=lat_ms / 1000.0)])
    assert report.latency_ms is not None
    edges = np.asarray(LATENCY_EDGES_MS)
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        est, true = report.latency_ms[label], float(np.quantile(lat_ms, q))
        i_est, i_true = bin_indices(edges, np.array([est, true]))
        assert abs(int(i_est) - int(i_true)) <= 1, (label, est, true)
    assert report.latency_ms["p50"] <= report.latency_ms["p95"] <= report.latency_ms["p99"]


def test_histogram_quantile_interpolates_inside_a_bin() -> None:
    edges = [0.0, 10.0, 20.0]
    counts = [0, 4, 4, 0, 7]  # the NaN bin (7) is ignored
    assert histogram_quantile(edges, counts, 0.25) == pytest.approx(5.0)
    assert histogram_quantile(edges, counts, 0.5) == pytest.approx(10.0)
    assert histogram_quantile(edges, counts, 0.75) == pytest.approx(15.0)
    assert histogram_quantile(edges, counts, 0.0) == pytest.approx(0.0)
    assert histogram_quantile(edges, [0, 0, 0, 3, 0], 0.5) == 20.0  # overflow: a lower bound
    assert histogram_quantile(edges, [0, 0, 0, 0, 3], 0.5) is None
    with pytest.raises(DriftError, match=r"quantile 1.5 is not in \[0, 1\]"):
        histogram_quantile(edges, counts, 1.5)


def test_without_a_calibration_map_there_is_no_accuracy_estimate_only_the_mean_confidence() -> None:
    """The mean top-1 confidence is no accuracy estimate (it ran 12.7 points high at a
    3 sd offset); without a calibration map (see tests/hub/test_accuracy.py) the report
    says so, and shows the exact mean confidence from the windows' per-bin sums."""
    edges = CONF_EDGES.tolist()
    assert mean_from_histogram(edges, [0] * 10 + [4, 0, 0]) == pytest.approx(0.95)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, F))
    report = drift_report(REF, [device_window(x)])
    true_mean = float(probs_for(x).max(axis=1).mean())
    assert report.accuracy is not None and report.accuracy.status == "no_calibration"
    assert report.accuracy_estimate is None and report.reference_accuracy_estimate is None
    assert report.accuracy.mean_confidence == pytest.approx(true_mean, rel=1e-12)
    assert report.to_json()["accuracy"]["label"] == (
        "cannot estimate (no calibration map in the bundle)"
    )
    assert report.confidence.verdict == "none" and report.prediction.verdict == "none"


def test_errors_agreement_and_json() -> None:
    rng = np.random.default_rng(4)
    acc = WindowAccumulator(REF, "m", 1, "shadow", clock=lambda: 0.0)
    x = rng.normal(size=(300, F))
    p = probs_for(x)
    acc.record(x, p, 0.001)
    acc.record_error("invoke_error", 100)
    acc.record_shadow(p[:10], p[:10])
    acc.record_shadow(p[:10], p[:10][:, ::-1])
    window = acc.close(60.0)
    assert window is not None
    report = drift_report(REF, [window])
    assert report.error_rates == {"invoke_error": pytest.approx(100 / 400)}
    assert report.compared == 20
    assert report.agreement is not None and 0.5 <= report.agreement < 1.0
    doc = report.to_json()
    assert canonical_bytes(doc)  # finite, JSON-ready
    assert doc["role"] == "shadow" and doc["features"][0]["name"] == "f0"


def test_no_windows_or_mismatched_reference_refused() -> None:
    with pytest.raises(DriftError, match="no windows to report on"):
        drift_report(REF, [])
    with pytest.raises(DriftError, match="min_count must be >= 1, got 0"):
        drift_report(REF, [device_window(np.zeros((3, F)))], min_count=0)
    other = make_reference(seed=1)
    short = ReferenceStats(
        other.n, other.features[:2], other.labels, other.class_counts, other.confidence
    )
    with pytest.raises(ValidationError, match="do not fit the reference"):
        drift_report(short, [device_window(np.zeros((3, F)))])


def test_compare_refuses_mismatched_layouts() -> None:
    with pytest.raises(DriftError, match="x: reference has 2 bins, current 3"):
        compare("x", [1, 2], [1, 2, 3])


@pytest.mark.parametrize("bad", [[1, 2, -1], [1.0, float("nan"), 2.0], [1.0, float("inf"), 2.0]])
def test_compare_refuses_negative_or_non_finite_counts(bad: list[float]) -> None:
    with pytest.raises(DriftError, match="counts"):
        compare("x", [5, 5, 5], bad)  # type: ignore[arg-type]


def test_homogeneity_statistic_is_pearsons_on_the_pooled_table() -> None:
    from hub.drift import homogeneity_test, pool_bins

    ref, cur = [50, 30, 20], [10, 20, 30]
    t = homogeneity_test(ref, cur, min_expected=1.0)
    assert t is not None and t.df == 2
    table = np.array([ref, cur], dtype=float)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    assert t.statistic == pytest.approx(float(((table - expected) ** 2 / expected).sum()))
    # pooling: groups close once min(n, m) * share >= min_expected; zero-mass bins join
    assert pool_bins([0, 10, 10, 0, 10, 10, 0], 40, 15.0) == [[0, 1, 2], [3, 4, 5, 6]]
    assert pool_bins([0, 10, 10, 0, 10, 10, 0], 40, 8.0) == [[0, 1], [2], [3, 4], [5, 6]]
    assert pool_bins([10, 10], 5, 8.0) == [[0, 1]]  # nothing to test: one group
    assert homogeneity_test([10, 10], [2, 3], 8.0) is None


def test_nan_outputs_are_not_counted_twice_in_error_rates():
    """A NaN output is a prediction (in n) and an error: the rate's denominator is the
    predictions plus only the errors that are not predictions."""
    x = np.random.default_rng(4).normal(size=(100, 3))
    w = device_window(x)
    w = dataclasses.replace(w, errors={"nan_output": 10, "invoke_error": 5})
    report = drift_report(REF, [w])
    assert report.error_rates["nan_output"] == pytest.approx(10 / 105)
    assert report.error_rates["invoke_error"] == pytest.approx(5 / 105)
