"""Label-free accuracy estimates that know their limits (from merged windows only).

**The estimate** is CBPE's — the mean calibrated top-1 confidence — with the
calibration re-weighted for the class mix (:mod:`edge_agent.contract.calibration` has the map,
fitted on labelled held-out data when the hub built the bundle):

1. *Class mix* (black-box shift estimation): the held-out data gives
   ``P(predicted k | true y)``; the window's predicted-class counts are
   ``sum_y q_y P(k | y)``, which solves (least squares, clipped, normalised) for the
   live class shares ``q``. Each held-out prediction is then weighted by
   ``q_y / p_y`` (``p`` the held-out shares).
2. *Per confidence bin*: the weighted held-out accuracy ``a_b`` of the bin and its
   calibration error ``a_b - c_b`` (``c_b`` the held-out mean confidence there),
   shrunk toward the overall error in bins with little held-out weight.
3. *Live*: each prediction's calibrated confidence is its top-1 confidence plus its
   bin's calibration error, clipped to [0, 1]; that is linear inside a bin, so the
   window's per-bin count ``n_b`` and exact confidence sum ``S_b``
   (``confidence_sum``) give the bin's mean ``p_b`` exactly, and the estimate is
   ``sum_b n_b p_b / n``. (Windows of agents that send no sums use ``c_b`` for the
   bin's mean: plain histogram binning; ``exact_sums`` says which.)

Without the class re-weighting, CBPE runs 2-3 points off under label shift on the
demo model (calibration in a confidence bin depends on the classes in it); with it,
under a point (``benchmarks/bench_accuracy.py``).

**The interval** (95 %) adds two variances: sampling, ``sum_b n_b p_b (1 - p_b) / n**2``
(the bin mean bounds the mean of ``p (1 - p)`` from above, so it never claims too
much), and calibration, ``sum_b (n_b / n)**2 * a_b (1 - a_b) / (m_b + 1)`` with ``m_b``
the bin's effective held-out count; and a term for calibration under input drift,
``(SHIFT_SD_PER_DISTANCE * d)**2`` with ``d`` the Mahalanobis distance below (an
empirical allowance: on the demo model an offset of 0.5 sd, ``d`` = 1.8, puts the
estimate ~2 points high). It does not cover the error of the class-mix estimate.

**"cannot estimate (input drift)"**: CBPE assumes the model's calibration carries over
to the live inputs. Far from the held-out data, models grow overconfident and the
estimate runs high (NannyML says so of CBPE under concept shift), so no number is given
when the window's exact moments are far from what the class mix ``q`` predicts from
the held-out per-class moments:

- the *mean* of the inputs, as a Mahalanobis distance with the held-out within-class
  covariance (diagonal above 64 features): above :data:`MAX_MEAN_DISTANCE`; or
- the *spread*: the mean over features of live variance / predicted variance above
  :data:`MAX_VARIANCE_RATIO`, or one feature's ratio outside
  [1 / :data:`MAX_FEATURE_VARIANCE_RATIO`, :data:`MAX_FEATURE_VARIANCE_RATIO`]; or
- the *joint structure*: the window's mean typicality energy (devices sum the squared
  whitened projections of their inputs on the held-out data's weakest principal
  directions, where the features' correlations live) over what the class mix predicts,
  above :data:`MAX_TYPICALITY_RATIO`. Noise of 0.25 sd on every feature breaks the
  correlations the demo model relies on (accuracy -8 points) while moving no feature's
  mean or variance by more than sampling does; the energy grows x1.8. (Windows of
  agents without typicality skip this test.)

All are effect sizes, not significance tests: a small, significant shift (which the
drift verdicts flag) leaves calibration usable, a large one does not. Measured on the
demo model (``python -m benchmarks bench_accuracy``): within 3 points (interval
covering the truth) in distribution, under label shift and an offset of all features
by 0.5 sd; "cannot estimate" at offsets of 1 sd (one feature or all: the estimate
would be 3-9 points high), 3 sd, noise from 0.25 sd. Blind spots: an offset of 0.5 sd
on three correlated fault indicators together keeps the joint structure and looks
like more wear to the class-mix estimate (estimate ~4 points high), and noise of 0.1 sd
(~2.5 points high). Both move the inputs but not the labels: a concept shift, which
no estimate from confidences and input moments can see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from edge_agent.contract.calibration import Calibration
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import MetricsWindow

#: Mahalanobis distance of the live input mean from the class-mix prediction.
MAX_MEAN_DISTANCE: Final = 2.0
#: Live typicality energy over the class-mix prediction.
MAX_TYPICALITY_RATIO: Final = 1.4
#: Mean over features of live variance / predicted variance.
MAX_VARIANCE_RATIO: Final = 1.15
#: One feature's variance ratio may not leave [1/x, x].
MAX_FEATURE_VARIANCE_RATIO: Final = 1.5
#: Standard deviation added to the estimate per unit of the inputs' mean distance.
SHIFT_SD_PER_DISTANCE: Final = 0.0075
#: Pseudo-weight pulling a bin's calibration error toward the overall one.
SHRINK: Final = 10.0
#: Two-sided 95 % normal quantile for the interval.
Z95: Final = 1.959963984540054

Status = Literal["estimated", "cannot_estimate", "no_calibration", "not_reported", "not_applicable"]


@dataclass(frozen=True)
class AccuracyEstimate:
    """A label-free accuracy estimate, or why there is none.

    - ``status``: ``estimated`` (``value``, with ``low``/``high`` the 95 % interval);
      ``cannot_estimate`` (inputs drifted too far, see the module doc; ``reason``
      says how far); ``no_calibration`` (the bundle has no calibration map: built
      without held-out data, or before maps existed); ``not_reported`` (fewer
      predictions with an output than the report's minimum count); ``not_applicable``
      (a regression, score or multi-label model: there is no top-1 confidence).
    - ``n``: predictions with a finite top-1 confidence the estimate rests on.
    - ``mean_confidence``: their mean top-1 confidence (uncalibrated; exact when the
      windows carry confidence sums, else None): for comparison, never the estimate.
    - ``class_mix``: the estimated live class shares (None when not estimated).
    - ``holdout_accuracy``: the accuracy measured on the held-out data at build time.
    - ``exact_sums``: whether the windows carried per-bin confidence sums.
    - ``input_distance`` / ``typicality_ratio``: how far the inputs are from the
      held-out data (see the module doc; None when not computed).
    """

    status: Status
    value: float | None
    low: float | None
    high: float | None
    n: int
    reason: str | None
    mean_confidence: float | None
    class_mix: tuple[float, ...] | None
    holdout_accuracy: float | None
    exact_sums: bool
    input_distance: float | None = None
    typicality_ratio: float | None = None

    @property
    def label(self) -> str:
        """One line for people: ``0.912 (0.897-0.927)`` or ``cannot estimate (input drift)``."""
        if self.status == "estimated":
            return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"
        return {
            "cannot_estimate": "cannot estimate (input drift)",
            "no_calibration": "cannot estimate (no calibration map in the bundle)",
            "not_reported": "not reported (too few predictions)",
            "not_applicable": "not applicable (the model is not a classifier)",
        }[self.status]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "status": self.status,
            "label": self.label,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "reason": self.reason,
            "mean_confidence": self.mean_confidence,
            "class_mix": None if self.class_mix is None else list(self.class_mix),
            "holdout_accuracy": self.holdout_accuracy,
            "exact_sums": self.exact_sums,
            "input_distance": self.input_distance,
            "typicality_ratio": self.typicality_ratio,
        }


def class_mix(cal: Calibration, class_counts: tuple[int, ...]) -> np.ndarray:
    """Live class shares ``q`` from predicted-class counts (black-box shift estimation:
    least squares on ``P(predicted | true)``, clipped to >= 0 and normalised); the
    held-out shares when there are no counts or the solution is degenerate."""
    n = cal.count_array().sum(axis=0)  # [predicted, true]
    held = n.sum(axis=0)
    p: np.ndarray = held / held.sum()
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.shape != (cal.n_classes,) or counts.sum() <= 0:
        return p
    confusion = n / held  # P(predicted k | true y), columns sum to 1
    q, *_ = np.linalg.lstsq(confusion, counts / counts.sum(), rcond=None)
    q = np.clip(q, 0.0, None)
    out: np.ndarray = q / q.sum() if q.sum() > 0 else p
    return out


def input_drift_problem(
    cal: Calibration, merged: MetricsWindow, q: np.ndarray, names: tuple[str, ...]
) -> tuple[str | None, float]:
    """Why the inputs are too far from what the held-out data and the class mix ``q``
    predict for calibration to hold (one line), or None; and the Mahalanobis distance
    of the input mean from that prediction. See the module doc."""
    means = np.asarray(cal.class_means)
    variances = np.asarray(cal.class_variances)
    live = merged.features
    if len(live) != means.shape[1]:
        return "cannot estimate (input drift): the map's features do not fit the window", 0.0
    usable = np.array([f.count >= 2 for f in live])
    if not usable.any():
        return None, 0.0
    expected_mean = q @ means
    expected_var = q @ (variances + means**2) - expected_mean**2
    live_mean = np.array([f.mean for f in live])
    live_var = np.array([f.variance for f in live])
    idx = np.flatnonzero(usable)
    r = (live_mean - expected_mean)[idx]
    if cal.covariance is not None:
        cov = np.asarray(cal.covariance)[np.ix_(idx, idx)]
    else:  # many features: the within-class variances alone
        cov = np.diag((q @ variances)[idx])
    distance = math.sqrt(max(0.0, float(r @ np.linalg.pinv(cov, hermitian=True) @ r)))
    ev = expected_var[idx]
    lv = live_var[idx]
    ratio = np.where(ev > 0, lv / np.where(ev > 0, ev, 1.0), np.where(lv > 0, np.inf, 1.0))
    problems = []
    if distance > MAX_MEAN_DISTANCE:
        problems.append(
            f"input mean {distance:.2f} (Mahalanobis) from the held-out data's, "
            f"limit {MAX_MEAN_DISTANCE:g}"
        )
    mean_ratio = float(np.mean(ratio))
    if mean_ratio > MAX_VARIANCE_RATIO:
        problems.append(
            f"input variance x{mean_ratio:.2f} on average, limit x{MAX_VARIANCE_RATIO:g}"
        )
    worst = int(np.argmax(np.abs(np.log(np.clip(ratio, 1e-300, None)))))
    if not 1.0 / MAX_FEATURE_VARIANCE_RATIO <= ratio[worst] <= MAX_FEATURE_VARIANCE_RATIO:
        problems.append(
            f"{names[idx[worst]]} variance x{ratio[worst]:.2f}, "
            f"limit x{MAX_FEATURE_VARIANCE_RATIO:g}"
        )
    ratio_t = typicality_ratio(cal, merged, q)
    if ratio_t is not None and ratio_t > MAX_TYPICALITY_RATIO:
        problems.append(
            f"input typicality x{ratio_t:.2f} (the features' correlations changed), "
            f"limit x{MAX_TYPICALITY_RATIO:g}"
        )
    if not problems:
        return None, distance
    return "cannot estimate (input drift): " + "; ".join(problems), distance


def typicality_ratio(cal: Calibration, merged: MetricsWindow, q: np.ndarray) -> float | None:
    """The window's mean typicality energy over what the held-out data predicts for the
    class mix ``q``; None when the window has no typicality (older agents) or no
    finite sample."""
    if merged.typicality_n is None or not merged.typicality_n or merged.typicality_sum is None:
        return None
    expected = float(q @ np.asarray(cal.typicality.expected))
    if expected <= 0.0:
        return None
    return merged.typicality_sum / merged.typicality_n / expected


def estimate_accuracy(
    reference: ReferenceStats, merged: MetricsWindow, *, min_count: int = 1
) -> AccuracyEstimate:
    """The label-free accuracy of the predictions in ``merged`` (see the module doc).

    ``merged`` must have been counted over ``reference``'s bins (as
    :func:`hub.drift.drift_report` checks first).
    """
    counts = np.asarray(merged.confidence[:-1], dtype=np.float64)  # finite bins only
    n = int(counts.sum())
    sums = merged.confidence_sum
    mean_conf = float(np.sum(sums[:-1]) / n) if sums is not None and n else None
    cal = reference.calibration
    holdout = None if cal is None else cal.holdout_accuracy

    def without(
        status: Status, reason: str, mix: np.ndarray | None = None, distance: float | None = None
    ) -> AccuracyEstimate:
        shares = None if mix is None else tuple(float(v) for v in mix)
        ratio = None if cal is None or mix is None else typicality_ratio(cal, merged, mix)
        return AccuracyEstimate(
            status,
            None,
            None,
            None,
            n,
            reason,
            mean_conf,
            shares,
            holdout,
            sums is not None,
            distance,
            ratio,
        )

    if not reference.classification:
        return without(
            "not_applicable", f"not applicable: the model's outputs are {reference.output_kind}"
        )
    if cal is None:
        return without("no_calibration", "the bundle has no calibration map")
    if n < max(min_count, 1):
        return without("not_reported", f"{n} predictions with an output, fewer than {min_count}")
    q = class_mix(cal, merged.class_counts)
    names = tuple(f.name for f in reference.features)
    problem, distance = input_drift_problem(cal, merged, q, names)
    if problem is not None:
        return without("cannot_estimate", problem, q, distance)
    if sums is not None:
        bin_sums = np.asarray(sums[:-1], dtype=np.float64)
    else:  # no sums from these agents: each bin at the held-out mean confidence
        bin_sums = counts * np.asarray(cal.confidence)
    value, low, high = calibrated(cal, q, counts, bin_sums, distance)
    return AccuracyEstimate(
        "estimated",
        value,
        low,
        high,
        n,
        None,
        mean_conf,
        tuple(float(v) for v in q),
        holdout,
        sums is not None,
        distance,
        typicality_ratio(cal, merged, q),
    )


def calibrated(
    cal: Calibration,
    q: np.ndarray,
    counts: np.ndarray,
    bin_sums: np.ndarray,
    distance: float = 0.0,
) -> tuple[float, float, float]:
    """Estimate and 95 % interval from per-bin counts and confidence sums (finite bins:
    underflow, interior, overflow) under ``cal`` re-weighted to class mix ``q``, the
    inputs' mean ``distance`` from the held-out data's widening the interval (see the
    module doc); ``counts`` must not all be 0."""
    held = cal.count_array()  # [bins, predicted, true]
    per_class = held.sum(axis=(0, 1))
    w = q / np.where(per_class > 0, per_class / per_class.sum(), 1.0)
    weighted = held * w[None, None, :]
    right = np.einsum("bkk->b", weighted)
    total = weighted.sum(axis=(1, 2))
    squares = (held * (w**2)[None, None, :]).sum(axis=(1, 2))
    effective = np.where(squares > 0, total**2 / np.where(squares > 0, squares, 1.0), 0.0)
    conf = np.asarray(cal.confidence)
    pooled = float(right.sum() / total.sum() - np.dot(total, conf) / total.sum())
    offset = (right - total * conf + SHRINK * pooled) / (total + SHRINK)
    n = float(counts.sum())
    occupied = counts > 0
    mean_c = np.where(occupied, bin_sums / np.maximum(counts, 1.0), 0.0)
    p = np.where(occupied, np.clip(mean_c + offset, 0.0, 1.0), 0.0)
    value = float(np.dot(counts, p) / n)
    a = np.clip(conf + offset, 0.0, 1.0)
    sampling = float(np.dot(counts, p * (1.0 - p))) / (n * n)
    calibration = float(
        np.dot((counts / n) ** 2, (a * (1.0 - a) + 0.25 / (1.0 + effective)) / (effective + 1.0))
    )
    shift = (SHIFT_SD_PER_DISTANCE * distance) ** 2
    half = Z95 * math.sqrt(sampling + calibration + shift)
    return value, max(0.0, value - half), min(1.0, value + half)


def reference_estimate(reference: ReferenceStats) -> float | None:
    """The estimate on the reference's own confidence histogram and class counts (each
    bin at the held-out mean confidence); None without a calibration map."""
    cal = reference.calibration
    if cal is None:
        return None
    counts = np.asarray(reference.confidence.counts[:-1], dtype=np.float64)
    if counts.sum() <= 0:
        return None
    q = class_mix(cal, reference.class_counts)
    return calibrated(cal, q, counts, counts * np.asarray(cal.confidence))[0]
