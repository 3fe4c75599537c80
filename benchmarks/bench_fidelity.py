"""Drift fidelity: false alarms per n, windows to detection, gate false failures.

The real demo model (model kit, int8) in a signed bundle; windows are rows of a large
sample binned as the bundle's ServingModel bins them (tests/support/fidelity.py, checked
against the real serving path by tests/hub/test_drift_fidelity.py), decided with the
one rule of hub/drift.py (alpha 0.01 family-wise, effect PSI >= 0.1 or JS >= 0.1).

- False-alarm rate: 1,000 stable windows of n predictions per device, at device (1),
  cohort (10) and fleet (40 devices) level; target <= 1 % (binomial bound 20/1,000).
- Windows to detection: a 0.5 / 1 / 1.5 sd offset on one feature (bearing_temp_c) on
  one device (its own report), and on 25 % of a 40-device fleet (the fleet report), 60
  predictions per device per window, reports over the windows so far; median and 90th
  percentile of 100 trials (">30": not within 30 windows).
- Gate: 1,000 healthy one-device canaries (60 predictions a window, 600 s bake, the
  default PSI 0.25 drift gate) through the rollout state machine; target <= 1 % fail;
  and the share of 100 drifting canaries (each offset) caught.
- Accuracy-estimate error per scenario: a hook (:func:`accuracy`) that prints the
  label-free accuracy estimate's error from ``bench_accuracy.accuracy_errors`` when that
  benchmark is there ("n/a" otherwise).

EDGEFLEET_BENCH_FIDELITY_WINDOWS=N runs N stable windows per cell (default 1,000).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import TrustRoot
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

WINDOWS = int(os.environ.get("EDGEFLEET_BENCH_FIDELITY_WINDOWS", "1000"))
NS = (30, 60, 200, 1000, 10_000)
LEVELS = (("device", 1), ("cohort", 10), ("fleet", 40))
OFFSETS = (0.5, 1.0, 1.5)
FEATURE = "bearing_temp_c"
MAX_WINDOWS = 30


def false_alarms(demo: DemoBundle, clean: Population) -> None:
    print(f"   false-alarm rate, {WINDOWS:,} stable windows per cell (target <= 1 %):")
    print(f"   {'n per device':>14} " + " ".join(f"{lvl:>12}" for lvl, _ in LEVELS))
    for n in NS:
        cells = []
        for _, devices in LEVELS:
            rng = np.random.default_rng(n * 100 + devices)
            flagged = insufficient = 0
            for _ in range(WINDOWS):
                _, s = decide(demo, clean.window(n * devices, rng))
                flagged += s.drifted_any
                insufficient += s.verdict == "insufficient"
            ok = "" if flagged <= binomial_upper(WINDOWS, 0.01) else " !"
            cells.append(
                f"{100 * flagged / WINDOWS:5.1f}%{ok} ({100 * insufficient // WINDOWS:2d}i)"
            )
        print(f"   {n:>14,} " + " ".join(f"{c:>12}" for c in cells))
    print("   (Ni: N % of the windows' verdicts were insufficient; ! over the binomial bound)")


def to_detection(demo: DemoBundle, clean: Population, drifted: Population, fleet: bool) -> str:
    rng = np.random.default_rng(11 if fleet else 12)
    found = []
    for _ in range(100):
        total: Counts | None = None
        k = MAX_WINDOWS + 1
        for i in range(1, MAX_WINDOWS + 1):
            if fleet:
                w = add(clean.window(30 * 60, rng), drifted.window(10 * 60, rng))
            else:
                w = drifted.window(60, rng)
            total = w if total is None else add(total, w)
            if FEATURE in decide(demo, total)[1].drifted:
                k = i
                break
        found.append(k)
    med, p90 = np.percentile(found, [50, 90])

    def shown(v: float) -> str:
        return f">{MAX_WINDOWS}" if v > MAX_WINDOWS else f"{v:.0f}"

    return f"{shown(med)} / {shown(p90)}"


def detection(demo: DemoBundle, clean: Population, drifted: dict[float, Population]) -> None:
    print("   windows to detection (60 predictions/device/window; median / p90 of 100):")
    print(f"   {'offset':>8} {'one device':>12} {'25% of 40':>12}")
    for off, pop in drifted.items():
        one = to_detection(demo, clean, pop, fleet=False)
        many = to_detection(demo, clean, pop, fleet=True)
        print(f"   {off:>6} sd {one:>12} {many:>12}")


def gates(demo: DemoBundle, clean: Population, drifted: dict[float, Population]) -> None:
    rng = np.random.default_rng(5)
    t = time.perf_counter()
    outcomes = [run_canary(demo, clean, rng) for _ in range(1000)]
    failed = sum(s == RolloutState.PAUSED for s in outcomes)
    print(
        f"   gate: {failed} of 1,000 healthy canaries failed the drift gate "
        f"({failed / 10:.1f} %, target <= 1 %; {time.perf_counter() - t:.1f} s)"
    )
    for off, pop in drifted.items():
        caught = sum(run_canary(demo, pop, rng) == RolloutState.PAUSED for _ in range(100))
        print(f"   gate: {caught} of 100 canaries drifting {off} sd caught")


def accuracy() -> None:
    """HOOK (issue 10, label-free accuracy estimate): the estimate's error per scenario,
    from ``benchmarks.bench_accuracy.accuracy_errors`` (the calibration work) when it
    is there; ``n/a`` otherwise."""
    try:
        from benchmarks.bench_accuracy import accuracy_errors  # type: ignore[import-not-found]
    except ImportError:
        print("   accuracy-estimate error per scenario: n/a (hook: bench_accuracy.accuracy_errors)")
        return
    for row in accuracy_errors():
        if row.model != "int8":
            continue
        err = row.error_points
        shown = f"n/a ({row.status})" if err is None else f"{err:+.1f} points"
        print(f"   accuracy-estimate error, {row.scenario:<30} {shown}")


def run() -> None:
    from hub.modelkit.pump import build_demo

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        build_demo(work, hidden=(16,), seed=3)
        key = Ed25519PrivateKey.generate()
        trust = TrustRoot.from_keys([key.public_key()], threshold=1)
        demo = build_demo_bundle(work, work / "pump-1.efb", [key], trust)
        clean = population(demo, seed=101)
        drifted = {
            off: population(demo, Drift(offset=off, features=(FEATURE,)), seed=200 + i)
            for i, off in enumerate(OFFSETS)
        }
        print(f"   reference m = {demo.reference.n}, {len(demo.reference.features)} features")
        false_alarms(demo, clean)
        detection(demo, clean, drifted)
        gates(demo, clean, drifted)
    accuracy()
