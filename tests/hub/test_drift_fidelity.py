"""Drift verdicts an operator can trust: false-alarm rate at every n, detection power,
and rollout gates on healthy and drifting canaries, on the real demo model's windows.

Windows are simulated by drawing rows of a large binned sample (tests/support/fidelity.py);
``test_simulated_windows_are_what_the_real_serving_path_counts`` shows the counts equal
those of the same rows fed one at a time through the real ``ServingModel``.

Tolerance: a rule with a false-alarm rate of at most 1 % flags a Binomial(1000, 0.01)
number of 1,000 stable windows; the tests allow up to ``binomial_upper(1000, 0.01)`` (20:
exceeded with probability <= 0.1 % at exactly 1 %). Every test is seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import TrustRoot
from edge_agent.inference.serving import Predictor
from hub.drift import DriftThresholds, pool_bins
from hub.modelkit.dataset import Drift
from hub.rollouts import RolloutState
from tests.support.fidelity import (
    Counts,
    DemoBundle,
    Population,
    add,
    binomial_upper,
    build_demo_bundle,
    decide,
    population,
    run_canary,
)

STABLE_TOLERANCE = binomial_upper(1000, 0.01)  # 20 of 1,000
DRIFTED_FEATURE = "bearing_temp_c"


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
    demo_dir: Path,
    signing_keys: list[Ed25519PrivateKey],
    trust_1of1: TrustRoot,
) -> DemoBundle:
    out = tmp_path_factory.mktemp("fidelity") / "pump-1.efb"
    return build_demo_bundle(demo_dir, out, signing_keys[:1], trust_1of1)


@pytest.fixture(scope="module")
def clean(demo: DemoBundle) -> Population:
    return population(demo, seed=101)


@pytest.fixture(scope="module")
def offset_1sd(demo: DemoBundle) -> Population:
    return population(demo, Drift(offset=1.0, features=(DRIFTED_FEATURE,)), seed=202)


def fleet_window(
    clean: Population, drifted: Population | None, devices: int, bad: int, n: int, rng
) -> Counts:
    """One window of a fleet: ``bad`` devices from ``drifted``, the rest from ``clean``."""
    total = clean.window((devices - bad) * n, rng)
    if bad and drifted is not None:
        total = add(total, drifted.window(bad * n, rng))
    return total


def test_simulated_windows_are_what_the_real_serving_path_counts(
    demo: DemoBundle, clean: Population
) -> None:
    """The same rows, fed one sample at a time through the real ServingModel (native hot
    path), close into a window with exactly the counts the simulation computes."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, clean.x.shape[0], size=300)
    predictor = Predictor()
    predictor.active = demo.serving()
    for i in rows:
        predictor.predict(clean.x[i])
    (window,) = predictor.close_windows(now=60.0)
    features, classes, confidence = clean.counts_of(rows)
    assert window.n == 300
    for got, want in zip(window.features, features, strict=True):
        assert list(got.counts[:-1]) == want.tolist() and got.counts[-1] == 0
    assert list(window.class_counts) == classes.tolist()
    assert list(window.confidence[:-1]) == confidence.tolist()


@pytest.mark.parametrize("n", [30, 60, 200, 1000, 10_000])
@pytest.mark.parametrize(("level", "devices"), [("device", 1), ("cohort", 10), ("fleet", 40)])
def test_stable_data_is_flagged_in_at_most_one_percent_of_windows_at_every_n(
    demo: DemoBundle, clean: Population, n: int, level: str, devices: int
) -> None:
    """1,000 stable windows of n predictions per device, decided at device level (one
    device), for a 10-device cohort and a 40-device fleet (their merged counts)."""
    rng = np.random.default_rng(n * 100 + devices)
    windows = 1000 if n * devices <= 40_000 else 300  # the largest: 300 windows of 400,000
    flagged = 0
    for _ in range(windows):
        _, summary = decide(demo, clean.window(n * devices, rng))
        flagged += summary.drifted_any
    limit = STABLE_TOLERANCE if windows == 1000 else binomial_upper(windows, 0.01)
    assert flagged <= limit, f"{level} n={n}: {flagged} of {windows} stable windows flagged"


@pytest.mark.parametrize("n", [30, 60, 200])
def test_the_test_itself_holds_its_false_alarm_rate_below_the_evidence_needed(
    demo: DemoBundle, clean: Population, n: int
) -> None:
    """Below the evidence needed the verdict is insufficient whatever the test says; the
    test's Holm-corrected rejections alone stay within the 1 % family-wise rate too."""
    rng = np.random.default_rng(7 + n)
    rejected = 0
    for _ in range(1000):
        items, _ = decide(demo, clean.window(n, rng))
        rejected += any(f.p_adjusted is not None and f.p_adjusted <= f.alpha for f in items)
    assert rejected <= STABLE_TOLERANCE, f"n={n}: {rejected} of 1,000 rejected"


def test_one_sd_offset_in_a_quarter_of_the_fleet_is_flagged_within_three_windows(
    demo: DemoBundle, clean: Population, offset_1sd: Population
) -> None:
    """40 devices, 10 with a 1 sd offset on one feature, 60 predictions per device per
    window: the fleet report over the windows so far flags that feature by the third."""
    rng = np.random.default_rng(3)
    late = []
    for trial in range(100):
        total: Counts | None = None
        for _ in range(3):
            w = fleet_window(clean, offset_1sd, devices=40, bad=10, n=60, rng=rng)
            total = w if total is None else add(total, w)
            _, summary = decide(demo, total)
            if DRIFTED_FEATURE in summary.drifted:
                break
        else:
            late.append(trial)
    assert not late, f"{len(late)} of 100 fleets not flagged within 3 windows"


def test_per_device_report_flags_the_drifted_devices_and_at_most_one_percent_of_clean(
    demo: DemoBundle, clean: Population, offset_1sd: Population
) -> None:
    """Each device's report over 30 windows of 60 predictions (1,800): in 34 fleets of 40
    devices (10 drifting), every drifting device is flagged and <= 1 % of the 1,020
    clean device reports are."""
    rng = np.random.default_rng(4)
    missed = clean_flagged = clean_total = 0
    for _ in range(34):
        for device in range(40):
            drifting = device < 10
            counts = (offset_1sd if drifting else clean).window(1800, rng)
            _, summary = decide(demo, counts)
            if drifting:
                missed += DRIFTED_FEATURE not in summary.drifted
            else:
                clean_total += 1
                clean_flagged += summary.drifted_any
    assert missed == 0
    assert clean_flagged <= binomial_upper(clean_total, 0.01), (clean_flagged, clean_total)


def test_healthy_canaries_rarely_fail_the_drift_gate_and_a_drifting_one_is_caught(
    demo: DemoBundle, clean: Population, offset_1sd: Population
) -> None:
    rng = np.random.default_rng(5)
    outcomes = [run_canary(demo, clean, rng) for _ in range(1000)]
    failed = sum(s == RolloutState.PAUSED for s in outcomes)
    assert failed <= STABLE_TOLERANCE, f"{failed} of 1,000 healthy canaries failed"
    assert all(s in (RolloutState.RUNNING, RolloutState.PAUSED) for s in outcomes)
    caught = [run_canary(demo, offset_1sd, rng) for _ in range(100)]
    assert all(s == RolloutState.PAUSED for s in caught), caught.count(RolloutState.RUNNING)


def test_evidence_needed_is_what_the_power_promises(demo: DemoBundle, clean: Population) -> None:
    """At the evidence needed for a feature, a shift of exactly the threshold's size (as
    chi-square divergence; spread over the test's pooled bins, as the sizing assumes)
    is found at least ~80 % of the time."""
    rule = DriftThresholds()
    rng = np.random.default_rng(6)
    items, _ = decide(demo, clean.window(2000, rng))
    f = items[0]
    assert f.n_needed is not None
    counts = demo.reference.features[0].counts[:-1]
    p = np.asarray(counts, dtype=np.float64) / sum(counts)
    groups = pool_bins(counts, f.n_needed, rule.min_expected)
    mass = np.asarray([p[g].sum() for g in groups])
    z = np.linspace(-1.0, 1.0, len(groups))
    z -= np.dot(mass, z) / mass.sum()  # no net change of mass
    s = np.sqrt(rule.divergence / np.dot(mass, z**2))  # sum((q - p)^2 / p) = divergence
    q = p.copy()
    for g, zg in zip(groups, z, strict=True):
        q[g] *= 1.0 + s * zg  # the same relative change for every bin of a group
    assert np.all(q >= 0) and abs(q.sum() - 1.0) < 1e-9
    found = 0
    for _ in range(300):
        shifted = rng.multinomial(f.n_needed, q)
        rest = clean.window(f.n_needed, rng)
        items, _ = decide(demo, ([shifted, *rest[0][1:]], rest[1], rest[2]))
        found += items[0].p_adjusted is not None and items[0].p_adjusted <= rule.alpha
    assert found >= 0.7 * 300, found
