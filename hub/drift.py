"""Fleet-wide drift and health from merged monitoring windows (pure functions, NumPy).

The hub never averages scores across devices or windows: it merges the windows'
counts first (:func:`merge_all`, exact) and computes every score once, on the merged
counts against the bundle's reference counts (see ``drift.md``). Averaging per-device
scores weights a device with 10 predictions like one with 10 000, and a distance of
an average is not the average of distances.

Choices (all binned definitions, so they are exact on merged counts):

- **Bins compared.** Feature drift is computed over the finite bins: underflow,
  interior bins and overflow. The NaN bin is left out of the distances and reported
  separately as a data-quality rate (``nan_rate``), so a burst of missing values
  shows up as a data problem, not as a shift of the distribution. The confidence
  histogram drops its NaN bin likewise.
- **Proportions.** ``p = counts / sum(counts)``. PSI replaces every empty bin's
  proportion by ``eps`` (default ``1e-4``, as Evidently) so it stays finite; JS and
  Hellinger need no smoothing (``0 * log 0 = 0``) and use the raw proportions.
- **PSI** ``= sum((q - p) * ln(q / p))`` (natural log, ``p`` reference, ``q`` current);
  drift at >= 0.1, major at >= 0.25.
- **Jensen-Shannon distance** ``= sqrt(JSD)`` with ``JSD = (KL(p||m) + KL(q||m)) / 2``,
  ``m = (p + q) / 2``, logs base 2, so it lies in [0, 1]; drift at >= 0.1.
- **Hellinger** ``= sqrt(1 - sum(sqrt(p * q)))`` in [0, 1]; possible drift at >= 0.15,
  drift at >= 0.4 (whylogs' bands).
- **Minimum count.** A score is reported (not None) only when the counts it is
  computed from (finite values of the feature, predicted classes, confidences) reach
  ``min_count``; below it, small-sample noise would raise false alarms.
- **Which score decides.** ``DriftThresholds.method`` (default ``"psi"``) picks the
  score whose bands give each feature's verdict; all three are reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from edge_agent.monitor import LATENCY_EDGES_MS, MetricsWindow, merge_windows
from edge_agent.reference import ReferenceStats
from hub.accuracy import AccuracyEstimate, estimate_accuracy, reference_estimate
from hub.errors import HubError

Method = Literal["psi", "js", "hellinger"]
#: ``not_reported`` below the minimum count; otherwise the band the deciding score is in.
Verdict = Literal["not_reported", "none", "possible", "drift", "major"]
WindowKey = tuple[str, int, str]

#: Default smoothing for empty bins in PSI.
PSI_EPS: Final = 1e-4
_LATENCY_EDGES: Final = np.asarray(LATENCY_EDGES_MS, dtype=np.float64)
_PERCENTILES: Final = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


class DriftError(HubError):
    """Drift cannot be computed from these inputs (empty or mismatched count vectors)."""


@dataclass(frozen=True)
class DriftThresholds:
    """Bands for the verdicts and the dataset-level rule (defaults from ``drift.md``)."""

    method: Method = "psi"
    psi: float = 0.1
    psi_major: float = 0.25
    js: float = 0.1
    hellinger_possible: float = 0.15
    hellinger: float = 0.4
    dataset_share: float = 0.5


DEFAULT_THRESHOLDS: Final = DriftThresholds()


# ---------------------------------------------------------------------------
# Merging


def merge_all(windows: Iterable[MetricsWindow]) -> MetricsWindow | None:
    """Merge windows of one (model, version, role) exactly; None when there are none.

    Raises:
        ValidationError: the windows differ in model, version, role or count lengths.
    """
    items = list(windows)
    if not items:
        return None
    return reduce(merge_windows, items)


def merge_by_key(windows: Iterable[MetricsWindow]) -> dict[WindowKey, MetricsWindow]:
    """Group windows by (model, version, role) and merge each group exactly.

    Raises:
        ValidationError: two windows of one key differ in count lengths.
    """
    merged: dict[WindowKey, MetricsWindow] = {}
    for w in windows:
        prev = merged.get(w.key)
        merged[w.key] = w if prev is None else merge_windows(prev, w)
    return merged


# ---------------------------------------------------------------------------
# Distances between two count vectors of one layout


def _proportions(
    ref: npt.ArrayLike, cur: npt.ArrayLike, what: str
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(ref, dtype=np.float64)
    q = np.asarray(cur, dtype=np.float64)
    if p.ndim != 1 or p.shape != q.shape or p.size == 0:
        raise DriftError(f"{what}: count vectors must be 1-D of one length ({p.shape}, {q.shape})")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise DriftError(f"{what}: counts must be finite")
    if np.any(p < 0) or np.any(q < 0):
        raise DriftError(f"{what}: counts cannot be negative")
    sp, sq = float(p.sum()), float(q.sum())
    if sp <= 0 or sq <= 0:
        raise DriftError(f"{what}: both count vectors need a positive total")
    return p / sp, q / sq


def psi(ref: npt.ArrayLike, cur: npt.ArrayLike, eps: float = PSI_EPS) -> float:
    """Population stability index of ``cur`` against ``ref`` (natural log, >= 0).

    Empty bins get proportion ``eps`` (not renormalised), so the result is finite.

    Raises:
        DriftError: mismatched, negative or all-zero counts, or ``eps`` not in (0, 1).
    """
    if not 0.0 < eps < 1.0:
        raise DriftError(f"psi: eps must be in (0, 1), got {eps}")
    p, q = _proportions(ref, cur, "psi")
    p = np.where(p > 0, p, eps)
    q = np.where(q > 0, q, eps)
    return max(0.0, float(np.sum((q - p) * np.log(q / p))))


def _kl2(a: np.ndarray, m: np.ndarray) -> float:
    mask = a > 0  # where a > 0, m >= a / 2 > 0
    return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))


def js_distance(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): in [0, 1], symmetric.

    Raises:
        DriftError: mismatched, negative or all-zero counts.
    """
    p, q = _proportions(ref, cur, "js_distance")
    m = (p + q) / 2.0
    jsd = (_kl2(p, m) + _kl2(q, m)) / 2.0
    return min(1.0, math.sqrt(max(0.0, jsd)))


def hellinger(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """Hellinger distance ``sqrt(1 - sum(sqrt(p q)))``: in [0, 1], symmetric.

    Raises:
        DriftError: mismatched, negative or all-zero counts.
    """
    p, q = _proportions(ref, cur, "hellinger")
    # Same value as sqrt(1 - sum(sqrt(p q))), but exactly 0 for identical inputs.
    h = float(np.linalg.norm(np.sqrt(p) - np.sqrt(q))) / math.sqrt(2.0)
    return min(1.0, h)


# ---------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class FeatureDrift:
    """Scores of one distribution (a feature, the predicted classes or the confidences).

    ``n`` is the count the scores rest on (finite values for a feature). The scores are
    None and ``verdict`` is ``not_reported`` when ``n`` is below the minimum count.
    """

    name: str
    n: int
    psi: float | None
    js: float | None
    hellinger: float | None
    drifted: bool
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "n": self.n,
            "psi": self.psi,
            "js": self.js,
            "hellinger": self.hellinger,
            "drifted": self.drifted,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class DataQuality:
    """One feature's data-quality rates over all ``n`` predictions of the merged window."""

    name: str
    nan_rate: float
    out_of_range_rate: float

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "nan_rate": self.nan_rate,
            "out_of_range_rate": self.out_of_range_rate,
        }


@dataclass(frozen=True)
class DriftReport:
    """Fleet-wide drift and health of one model version, from merged windows.

    - ``drifted_share``: drifted / reported features (None when none is reported);
      ``dataset_drift``: ``drifted_share >= thresholds.dataset_share`` (None likewise).
    - ``prediction``: the predicted-class distribution against the reference's;
      ``confidence``: the top-1 confidence histogram against the reference's.
    - ``error_rates``: per error kind, errors / attempts, attempts being predictions
      plus errors (a failed invocation is not counted as a prediction).
    - ``latency_ms``: p50/p95/p99 estimated from the latency histogram (see
      :func:`histogram_quantile`); None when no invocation was timed.
    - ``accuracy``: the label-free accuracy estimate with its interval, or why there is
      none (see :mod:`hub.accuracy`: calibrated on held-out data at build time, "cannot
      estimate (input drift)" when the inputs moved too far); ``accuracy_estimate`` is
      its value (None when there is none) and ``reference_accuracy_estimate`` the same
      estimate on the reference's confidences, for comparison.
    - ``agreement``: shadow agreement rate, None unless ``compared > 0``.
    """

    model: str
    version: int
    role: str
    start: float
    end: float
    n: int
    min_count: int
    features: tuple[FeatureDrift, ...]
    drifted_share: float | None
    dataset_drift: bool | None
    prediction: FeatureDrift
    confidence: FeatureDrift
    data_quality: tuple[DataQuality, ...]
    error_rates: dict[str, float]
    latency_ms: dict[str, float] | None
    accuracy_estimate: float | None
    reference_accuracy_estimate: float | None
    agreement: float | None
    compared: int
    accuracy: AccuracyEstimate | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document (None for what was not reported)."""
        return {
            "model": self.model,
            "version": self.version,
            "role": self.role,
            "start": self.start,
            "end": self.end,
            "n": self.n,
            "min_count": self.min_count,
            "features": [f.to_json() for f in self.features],
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "prediction": self.prediction.to_json(),
            "confidence": self.confidence.to_json(),
            "data_quality": [d.to_json() for d in self.data_quality],
            "error_rates": dict(sorted(self.error_rates.items())),
            "latency_ms": self.latency_ms,
            "accuracy_estimate": self.accuracy_estimate,
            "reference_accuracy_estimate": self.reference_accuracy_estimate,
            "agreement": self.agreement,
            "compared": self.compared,
            "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
        }


def verdict_for(score: float, thresholds: DriftThresholds = DEFAULT_THRESHOLDS) -> Verdict:
    """The band ``score`` (of ``thresholds.method``) falls in."""
    t = thresholds
    if t.method == "psi":
        if score >= t.psi_major:
            return "major"
        return "drift" if score >= t.psi else "none"
    if t.method == "js":
        return "drift" if score >= t.js else "none"
    if score >= t.hellinger:
        return "drift"
    return "possible" if score >= t.hellinger_possible else "none"


def compare(
    name: str,
    ref: Sequence[int],
    cur: Sequence[int],
    *,
    min_count: int = 200,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    eps: float = PSI_EPS,
) -> FeatureDrift:
    """Score ``cur`` against ``ref`` (same layout, NaN bins already removed).

    Not reported when ``sum(cur) < min_count`` or the reference is empty.

    Raises:
        DriftError: the vectors differ in length or hold negative counts.
    """
    if len(ref) != len(cur):
        raise DriftError(f"{name}: reference has {len(ref)} bins, current {len(cur)}")
    n = int(sum(cur))
    if n < max(min_count, 1) or sum(ref) <= 0:
        return FeatureDrift(name, n, None, None, None, False, "not_reported")
    scores = {
        "psi": psi(ref, cur, eps),
        "js": js_distance(ref, cur),
        "hellinger": hellinger(ref, cur),
    }
    verdict = verdict_for(scores[thresholds.method], thresholds)
    drifted = verdict in ("drift", "major")
    return FeatureDrift(name, n, scores["psi"], scores["js"], scores["hellinger"], drifted, verdict)


def histogram_quantile(edges: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """Estimate the ``q`` quantile from counts in the :mod:`edge_agent.histogram` layout.

    The NaN bin is ignored. The rank ``q * total`` is located in the cumulative counts
    and interpolated linearly inside its bin; the underflow bin is taken as
    ``[min(0, e0), e0]`` (latencies are >= 0) and the overflow bin returns the last edge
    (a lower bound). Error bound: the true quantile of the counted values lies in the
    same bin, so the estimate is off by at most that bin's width (for
    :data:`LATENCY_EDGES_MS`, a factor of ~1.78 between a bin's edges). None when no
    finite value was counted.

    Raises:
        DriftError: ``q`` not in [0, 1] or counts that do not fit the edges.
    """
    if not 0.0 <= q <= 1.0:
        raise DriftError(f"quantile {q} is not in [0, 1]")
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)[:-1]  # drop NaN
    if c.shape[0] != e.shape[0] + 1:
        raise DriftError(f"{len(counts)} counts do not fit {len(edges)} edges")
    total = float(c.sum())
    if total <= 0:
        return None
    lows = np.concatenate([[min(0.0, float(e[0]))], e])
    highs = np.concatenate([e, [e[-1]]])
    rank = q * total
    cum = np.cumsum(c)
    if rank <= 0.0:
        i = int(np.flatnonzero(c)[0])  # the minimum: the first filled bin's low edge
    else:
        # First bin whose cumulative count reaches the rank; it is never empty.
        i = min(int(np.searchsorted(cum, rank, side="left")), c.shape[0] - 1)
    before = float(cum[i] - c[i])
    frac = min(1.0, max(0.0, (rank - before) / float(c[i])))
    return float(lows[i] + frac * (highs[i] - lows[i]))


def mean_from_histogram(edges: Sequence[float], counts: Sequence[int]) -> float | None:
    """Mean estimated from bin midpoints (NaN bin ignored; under/overflow at their edge).

    Off by at most half the widest occupied bin. None when no finite value was counted.

    Raises:
        DriftError: counts that do not fit the edges.
    """
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)[:-1]
    if c.shape[0] != e.shape[0] + 1:
        raise DriftError(f"{len(counts)} counts do not fit {len(edges)} edges")
    total = float(c.sum())
    if total <= 0:
        return None
    mids = np.concatenate([[e[0]], (e[:-1] + e[1:]) / 2.0, [e[-1]]])
    return float(np.dot(c, mids) / total)


def drift_report(
    reference: ReferenceStats,
    windows: Iterable[MetricsWindow],
    *,
    min_count: int = 200,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    eps: float = PSI_EPS,
) -> DriftReport:
    """Merge ``windows`` (one model, version and role) and score them against ``reference``.

    Raises:
        DriftError: no windows, or ``min_count`` < 1.
        ValidationError: the windows do not merge, or do not fit the reference's bins.
    """
    if min_count < 1:
        raise DriftError(f"min_count must be >= 1, got {min_count}")
    merged = merge_all(windows)
    if merged is None:
        raise DriftError("no windows to report on")
    merged.check_reference(reference)
    opts: dict[str, Any] = {"min_count": min_count, "thresholds": thresholds, "eps": eps}
    features = tuple(
        compare(fr.name, fr.counts[:-1], fw.counts[:-1], **opts)
        for fr, fw in zip(reference.features, merged.features, strict=True)
    )
    reported = [f for f in features if f.verdict != "not_reported"]
    share = sum(f.drifted for f in reported) / len(reported) if reported else None
    n = merged.n
    quality = tuple(
        DataQuality(
            fr.name,
            fw.nan / n if n else 0.0,
            fw.out_of_range / n if n else 0.0,
        )
        for fr, fw in zip(reference.features, merged.features, strict=True)
    )
    attempts = n + sum(merged.errors.values())
    errors = {k: v / attempts for k, v in merged.errors.items()} if attempts else {}
    estimates = {
        label: histogram_quantile(LATENCY_EDGES_MS, merged.latency, q) for label, q in _PERCENTILES
    }
    latency = {k: v for k, v in estimates.items() if v is not None}
    accuracy = estimate_accuracy(reference, merged, min_count=min_count)
    return DriftReport(
        model=merged.model_name,
        version=merged.model_version,
        role=merged.role,
        start=merged.start,
        end=merged.end,
        n=n,
        min_count=min_count,
        features=features,
        drifted_share=share,
        dataset_drift=None if share is None else share >= thresholds.dataset_share,
        prediction=compare("prediction", reference.class_counts, merged.class_counts, **opts),
        confidence=compare(
            "confidence", reference.confidence.counts[:-1], merged.confidence[:-1], **opts
        ),
        data_quality=quality,
        error_rates=errors,
        latency_ms=latency or None,
        accuracy_estimate=accuracy.value,
        reference_accuracy_estimate=reference_estimate(reference),
        agreement=merged.agreed / merged.compared if merged.compared else None,
        compared=merged.compared,
        accuracy=accuracy,
    )
