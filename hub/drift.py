"""Fleet-wide drift and health from merged monitoring windows (pure functions, NumPy).

The hub never averages scores across devices or windows: it merges the windows'
counts first (:func:`merge_all`, exact) and computes everything once, on the merged
counts against the bundle's reference counts (see ``drift.md``). Averaging per-device
scores weights a device with 10 predictions like one with 10 000, and a distance of
an average is not the average of distances.

Every distribution a report looks at (each feature's finite bins, the predicted
classes, the top-1 confidences) gets a verdict from **one rule** (``docs/drift.md``
derives it; gates and alerts use the same code):

- **Effect sizes** (what users know, on the raw bins): PSI (natural log, empty bins
  at ``eps``), Jensen-Shannon distance (base 2, in [0, 1]) and Hellinger distance.
- **Test**: Pearson's chi-square test of homogeneity on the 2 x K table of reference
  counts (``m``) against live counts (``n``), after pooling adjacent bins until every
  pooled bin expects ``min_expected`` (8) counts in the smaller sample (the pooling is
  fixed by the reference and ``n``, not by the live counts). Its null distribution is
  chi-square with ``K - 1`` degrees of freedom at every ``n`` and ``m``.
- **Correction**: Holm's step-down over the distributions of one report, so a report
  on stable data flags anything with probability at most ``alpha`` (default 0.01).
- **Verdict**: ``drift`` when the test rejects *and* an effect size reaches the
  "worth acting on" threshold (default PSI >= 0.1 or JS >= 0.1; ``major`` when PSI >=
  0.25 too); ``minor`` when it rejects below that threshold; ``none`` when it does not
  reject and ``n`` reached the evidence needed (the ``n`` at which an effect of the
  threshold's size is found with probability ``power``, 0.8); ``insufficient`` (with
  "n of N needed") otherwise. ``insufficient`` is never a guess and never silent.
- **NaN** values are left out of the feature's distribution and reported separately as
  a data-quality rate (``nan_rate``), so a burst of missing values shows up as a data
  problem, not as a shift of the distribution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from edge_agent.contract.histogram import share_at_or_above
from edge_agent.contract.input_schema import OUTPUT_PREFIX
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import ERRORS_IN_N, LATENCY_EDGES_MS, MetricsWindow, merge_windows
from hub.accuracy import AccuracyEstimate, estimate_accuracy, reference_estimate
from hub.errors import HubError
from hub.stats import chi2_isf, chi2_sf, holm, ncx2_sf

#: ``insufficient``: not enough evidence either way (the report says how much is needed);
#: ``none``: no drift found with enough evidence; ``minor``: significant but below the
#: effect worth acting on; ``drift`` / ``major``: significant and worth acting on.
DriftVerdict = Literal["insufficient", "none", "minor", "drift", "major"]
VERDICTS: Final[tuple[str, ...]] = ("insufficient", "none", "minor", "drift", "major")
WindowKey = tuple[str, int, str]

#: Default smoothing for empty bins in PSI.
PSI_EPS: Final = 1e-4
_LATENCY_EDGES: Final = np.asarray(LATENCY_EDGES_MS, dtype=np.float64)
_PERCENTILES: Final = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
#: Distributions a report tests besides the features (prediction and confidence).
EXTRA_DISTRIBUTIONS: Final = 2


class DriftError(HubError):
    """Drift cannot be computed from these inputs (empty or mismatched count vectors)."""


@dataclass(frozen=True)
class DriftThresholds:
    """The decision rule's settings (``docs/drift.md`` justifies the defaults).

    - ``alpha``: family-wise false-alarm rate of one report (Holm over its distributions).
    - ``psi`` / ``js`` / ``hellinger``: the effect worth acting on; a significant
      distribution is ``drift`` when *any* set one is reached (None: not used; at
      least one must be set). ``psi_major``: ``major`` from this PSI on.
    - ``power``: the probability of finding an effect of the threshold's size that
      defines the evidence needed before ``none`` can be said.
    - ``min_expected``: expected count every pooled bin needs in the smaller sample.
    - ``dataset_share``: ``dataset_drift`` when this share of decided features drifted.
    """

    alpha: float = 0.01
    psi: float | None = 0.1
    js: float | None = 0.1
    hellinger: float | None = None
    psi_major: float = 0.25
    power: float = 0.8
    min_expected: float = 8.0
    dataset_share: float = 0.5

    def __post_init__(self) -> None:
        """Check ranges.

        Raises:
            DriftError: ``alpha`` or ``power`` not in (0, 1), no effect threshold set, a
                threshold not positive, ``min_expected`` below 1.
        """
        if not 0.0 < self.alpha < 1.0:
            raise DriftError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 < self.power < 1.0:
            raise DriftError(f"power must be in (0, 1), got {self.power}")
        effects = (self.psi, self.js, self.hellinger)
        if all(t is None for t in effects):
            raise DriftError("set at least one effect threshold (psi, js or hellinger)")
        for t in (*effects, self.psi_major):
            if t is not None and not (math.isfinite(t) and t > 0):
                raise DriftError(f"effect thresholds must be positive, got {t}")
        if self.hellinger is not None and self.hellinger >= 1.0:
            raise DriftError(f"hellinger threshold must be below 1, got {self.hellinger}")
        if self.js is not None and self.js >= 1.0:
            raise DriftError(f"js threshold must be below 1, got {self.js}")
        if not (math.isfinite(self.min_expected) and self.min_expected >= 1.0):
            raise DriftError(f"min_expected must be >= 1, got {self.min_expected}")
        if not 0.0 < self.dataset_share <= 1.0:
            raise DriftError(f"dataset_share must be in (0, 1], got {self.dataset_share}")

    def effect_reached(self, psi_value: float, js_value: float, hellinger_value: float) -> bool:
        """Whether any set effect threshold is reached."""
        return (
            (self.psi is not None and psi_value >= self.psi)
            or (self.js is not None and js_value >= self.js)
            or (self.hellinger is not None and hellinger_value >= self.hellinger)
        )

    @property
    def divergence(self) -> float:
        """The smallest chi-square divergence ``D = sum((q - p)^2 / p)`` of a shift that
        reaches a set threshold, to second order: PSI ~ D, JS^2 ~ D / (8 ln 2) (base 2),
        Hellinger^2 ~ D / 8. Sizes the evidence needed."""
        candidates = []
        if self.psi is not None:
            candidates.append(self.psi)
        if self.js is not None:
            candidates.append(8.0 * math.log(2.0) * self.js**2)
        if self.hellinger is not None:
            candidates.append(8.0 * self.hellinger**2)
        return min(candidates)

    def describe(self) -> str:
        """The effect rule in words, e.g. ``PSI >= 0.1 or JS >= 0.1``."""
        parts = [
            f"{label} >= {t:g}"
            for label, t in (("PSI", self.psi), ("JS", self.js), ("Hellinger", self.hellinger))
            if t is not None
        ]
        return " or ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (what a report says it was decided with)."""
        return {
            "alpha": self.alpha,
            "psi": self.psi,
            "js": self.js,
            "hellinger": self.hellinger,
            "psi_major": self.psi_major,
            "power": self.power,
            "min_expected": self.min_expected,
            "dataset_share": self.dataset_share,
        }


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
    return _effects(p.tolist(), q.tolist(), eps)[0]


def js_distance(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): in [0, 1], symmetric.

    Raises:
        DriftError: mismatched, negative or all-zero counts.
    """
    p, q = _proportions(ref, cur, "js_distance")
    return _effects(p.tolist(), q.tolist(), PSI_EPS)[1]


def hellinger(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """Hellinger distance ``sqrt(1 - sum(sqrt(p q)))``: in [0, 1], symmetric.

    Raises:
        DriftError: mismatched, negative or all-zero counts.
    """
    p, q = _proportions(ref, cur, "hellinger")
    return _effects(p.tolist(), q.tolist(), PSI_EPS)[2]


def _effects(p: list[float], q: list[float], eps: float) -> tuple[float, float, float]:
    """PSI, JS distance and Hellinger distance of proportions ``q`` against ``p``, in one
    pass (plain floats: a report's vectors have a dozen bins, where NumPy's per-call
    overhead is most of the cost). Hellinger is computed as ``||sqrt p - sqrt q|| /
    sqrt 2``: the same value as ``sqrt(1 - sum(sqrt(p q)))``, but exactly 0 for
    identical inputs."""
    log, log2, sqrt = math.log, math.log2, math.sqrt
    psi_sum = js_sum = h_sum = 0.0
    for a, b in zip(p, q, strict=True):
        ae = a if a > 0.0 else eps
        be = b if b > 0.0 else eps
        psi_sum += (be - ae) * log(be / ae)
        m = (a + b) / 2.0
        if a > 0.0:
            js_sum += a * log2(a / m)  # where a > 0, m >= a / 2 > 0
        if b > 0.0:
            js_sum += b * log2(b / m)
        h_sum += (sqrt(a) - sqrt(b)) ** 2
    return (
        max(0.0, psi_sum),
        min(1.0, sqrt(max(0.0, js_sum / 2.0))),
        min(1.0, sqrt(h_sum / 2.0)),
    )


# ---------------------------------------------------------------------------
# The test: pooled bins, chi-square of homogeneity, evidence needed


def pool_bins(ref: Sequence[int], n: int, min_expected: float = 8.0) -> list[list[int]]:
    """Groups of adjacent bins (indices into ``ref``) such that every group expects at
    least ``min_expected`` counts in the smaller of the two samples (``n`` live values
    against ``m = sum(ref)`` reference values) under the reference proportions.

    Walks the bins in order, closing a group once its reference share times
    ``min(n, m)`` reaches ``min_expected``; a short tail joins the last group. Bins with
    no reference mass join their neighbours. The grouping depends only on the reference
    and ``n``, never on the live counts, so the test's null distribution stays
    chi-square. Fewer than two groups: nothing to test. Never raises.
    """
    m = sum(ref)
    scale = min(n, m)
    if scale <= 0:
        return []
    groups: list[list[int]] = []
    current: list[int] = []
    mass = 0
    for b, r in enumerate(ref):
        current.append(b)
        mass += r
        if mass * scale >= min_expected * m:
            groups.append(current)
            current, mass = [], 0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


@dataclass(frozen=True)
class Homogeneity:
    """Pearson's chi-square test of homogeneity of two count vectors over pooled bins."""

    statistic: float
    df: int
    p_value: float
    groups: int


def homogeneity_test(
    ref: Sequence[int], cur: Sequence[int], min_expected: float = 8.0
) -> Homogeneity | None:
    """Test whether ``cur`` and ``ref`` come from one distribution over their bins.

    ``X^2 = sum_k (m c_k - n r_k)^2 / (n m (c_k + r_k))`` over the groups of
    :func:`pool_bins` (``n = sum(cur)``, ``m = sum(ref)``); under the null it is
    chi-square with ``groups - 1`` degrees of freedom. None when there is nothing to
    test (an empty sample, or fewer than two groups).

    Raises:
        DriftError: the vectors differ in length or hold negative or non-finite counts.
    """
    ref_t, cur_l, n, m = _counts("homogeneity_test", ref, cur)
    return _homogeneity(ref_t, cur_l, n, m, min_expected)


def _counts(
    name: str, ref: Sequence[int], cur: Sequence[int] | Sequence[float]
) -> tuple[tuple[int, ...], list[float], int, int]:
    """Checked plain-number copies of two count vectors and their totals.

    Raises:
        DriftError: different lengths, no bins, negative or non-finite counts.
    """
    if len(ref) != len(cur) or len(ref) == 0:
        raise DriftError(f"{name}: reference has {len(ref)} bins, current {len(cur)}")
    ref_t = ref if type(ref) is tuple else tuple(int(v) for v in ref)
    cur_l = [float(v) for v in cur]
    total = math.fsum(cur_l)
    if not math.isfinite(total):
        raise DriftError(f"{name}: counts must be finite")
    if min(cur_l) < 0 or min(ref_t) < 0:
        raise DriftError(f"{name}: counts cannot be negative")
    return ref_t, cur_l, int(total), sum(ref_t)


def _homogeneity(
    ref: tuple[int, ...], cur: list[float], n: int, m: int, min_expected: float
) -> Homogeneity | None:
    if n <= 0 or m <= 0:
        return None
    bounds = _group_bounds(ref, n, min_expected)
    if len(bounds) < 3:
        return None
    stat = 0.0
    for lo, hi in itertools.pairwise(bounds):
        r = float(sum(ref[lo:hi]))
        c = math.fsum(cur[lo:hi])
        stat += (m * c - n * r) ** 2 / (c + r)
    stat /= float(n) * float(m)
    groups = len(bounds) - 1
    return Homogeneity(stat, groups - 1, chi2_sf(stat, groups - 1), groups)


@lru_cache(maxsize=8192)
def _group_bounds(ref: tuple[int, ...], n: int, min_expected: float) -> tuple[int, ...]:
    """First bin of each :func:`pool_bins` group, then the number of bins (groups are
    runs of adjacent bins)."""
    return (*(g[0] for g in pool_bins(ref, n, min_expected)), len(ref))


@lru_cache(maxsize=1024)
def evidence_needed(
    ref: tuple[int, ...],
    divergence: float,
    level: float,
    power: float = 0.8,
    min_expected: float = 8.0,
) -> int | None:
    """The least live count ``n`` at which the test (at ``level``) finds a shift of
    chi-square divergence ``divergence`` from ``ref`` with probability ``power``.

    The test's noncentrality for such a shift is ``divergence * n m / (n + m)``
    (:func:`hub.stats.ncx2_sf` gives the power). None when even unlimited live data
    cannot reach ``power``: the reference itself (``m``) is too small.

    Raises:
        DriftError: ``divergence`` not positive, or ``level``/``power`` not in (0, 1).
    """
    if not divergence > 0 or not 0.0 < level < 1.0 or not 0.0 < power < 1.0:
        raise DriftError(f"evidence_needed: divergence {divergence}, level {level}, power {power}")
    m = sum(ref)
    if m <= 0:
        return None

    def power_at(n: int) -> float:
        groups = len(pool_bins(ref, n, min_expected))
        if groups < 2:
            return 0.0
        df = groups - 1
        return ncx2_sf(chi2_isf(level, df), df, divergence * n * m / (n + m))

    hi = 1
    while power_at(hi) < power:
        if hi > 1000 * m:
            return None
        hi *= 2
    lo = hi // 2  # power_at(lo) < power (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_at(mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def reference_needed(divergence: float, level: float, power: float, df: int) -> int:
    """The least reference count ``m`` for which unlimited live data reaches ``power``
    (noncentrality tends to ``divergence * m``): what to rebuild a bundle with when
    :func:`evidence_needed` is None. Never raises for valid arguments."""
    crit = chi2_isf(level, max(1, df))
    m = 1
    while ncx2_sf(crit, max(1, df), divergence * m) < power:
        m *= 2
    lo = m // 2
    while m - lo > 1:
        mid = (lo + m) // 2
        if ncx2_sf(crit, max(1, df), divergence * mid) >= power:
            m = mid
        else:
            lo = mid
    return m


# ---------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one distribution (a feature, the predicted classes or the
    confidences) with its evidence.

    ``n`` live and ``m`` reference counts (finite values for a feature); effect sizes
    (None only when a sample is empty); the test (``statistic`` with ``df`` degrees of
    freedom, ``p_value``, Holm-adjusted ``p_adjusted`` and the ``threshold`` the raw
    p-value met or missed at its rank; None when untested); ``n_needed`` (None when the
    reference is too small for any ``n``; then ``m_needed`` says what would do);
    ``effect_reached``; the ``verdict`` and ``reason``, one line.
    """

    name: str
    n: int
    psi: float | None
    js: float | None
    hellinger: float | None
    drifted: bool
    verdict: DriftVerdict
    m: int = 0
    statistic: float | None = None
    df: int | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    threshold: float | None = None
    alpha: float = DEFAULT_THRESHOLDS.alpha
    n_needed: int | None = None
    m_needed: int | None = None
    effect_reached: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "n": self.n,
            "m": self.m,
            "psi": self.psi,
            "js": self.js,
            "hellinger": self.hellinger,
            "statistic": self.statistic,
            "df": self.df,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "n_needed": self.n_needed,
            "m_needed": self.m_needed,
            "effect_reached": self.effect_reached,
            "drifted": self.drifted,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DriftSummary:
    """One verdict for a set of distributions (a report, a gate, an alert).

    ``drift``/``major`` when one drifted (``major`` when one is major); otherwise
    ``insufficient`` when one lacks evidence; otherwise ``minor`` when one is
    significant but small; otherwise ``none``. ``n`` is the smallest count among the
    distributions, ``n_needed`` the largest evidence any of them needs (None: the
    reference is too small for one of them), ``drifted`` the drifted names, ``worst``
    the deciding one.
    """

    verdict: DriftVerdict
    n: int
    n_needed: int | None
    drifted: tuple[str, ...]
    worst: FeatureDrift | None

    @property
    def decided(self) -> bool:
        """Whether the verdict is more than ``insufficient``."""
        return self.verdict != "insufficient"

    @property
    def enough(self) -> bool:
        """Whether every distribution reached the evidence needed to be decided."""
        return self.n_needed is not None and self.n >= self.n_needed

    @property
    def drifted_any(self) -> bool:
        """Whether the verdict is ``drift`` or ``major``."""
        return self.verdict in ("drift", "major")

    def describe(self) -> str:
        """One line for a status: the verdict and its evidence."""
        w = self.worst
        if self.verdict == "insufficient":
            if w is not None and w.n_needed is None:
                return f"insufficient: {w.reason}"
            return f"waiting for evidence: {self.n} of {self.n_needed} predictions"
        if w is None:
            return self.verdict
        return f"{self.verdict}: {w.name} {w.reason}"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "verdict": self.verdict,
            "n": self.n,
            "n_needed": self.n_needed,
            "drifted": list(self.drifted),
            "worst": None if self.worst is None else self.worst.name,
            "detail": self.describe(),
        }


def summarize(items: Sequence[FeatureDrift]) -> DriftSummary:
    """The one verdict of ``items`` (see :class:`DriftSummary`). Never raises."""
    if not items:
        return DriftSummary("insufficient", 0, None, (), None)
    drifted = tuple(f.name for f in items if f.drifted)
    n = min(f.n for f in items)
    needed = [f.n_needed for f in items]
    n_needed = None if None in needed else max(x for x in needed if x is not None)
    lacking = [f for f in items if f.verdict == "insufficient"]
    if drifted:
        hits = [f for f in items if f.drifted]
        worst = min(hits, key=lambda f: (f.p_adjusted or 0.0, -(f.psi or 0.0)))
        major = any(f.verdict == "major" for f in hits)
        return DriftSummary("major" if major else "drift", n, n_needed, drifted, worst)
    if lacking:
        worst = max(lacking, key=lambda f: (f.n_needed is None, (f.n_needed or 0) - f.n))
        return DriftSummary("insufficient", n, n_needed, (), worst)
    minor = [f for f in items if f.verdict == "minor"]
    if minor:
        worst = min(minor, key=lambda f: f.p_adjusted or 0.0)
        return DriftSummary("minor", n, n_needed, (), worst)
    worst = max(items, key=lambda f: f.psi or 0.0)
    return DriftSummary("none", n, n_needed, (), worst)


@dataclass(frozen=True)
class _Examined:
    name: str
    n: int
    m: int
    effects: tuple[float, float, float] | None
    test: Homogeneity | None
    n_needed: int | None
    m_needed: int | None


def _examine(
    name: str,
    ref: Sequence[int],
    cur: Sequence[int],
    *,
    thresholds: DriftThresholds,
    family: int,
    min_count: int,
    eps: float,
) -> _Examined:
    ref_t, cur_l, n, m = _counts(name, ref, cur)
    effects = None
    if n > 0 and m > 0:
        effects = _effects([v / m for v in ref_t], [v / n for v in cur_l], eps)
    test = None
    if n >= min_count:
        test = _homogeneity(ref_t, cur_l, n, m, thresholds.min_expected)
    level = thresholds.alpha / max(1, family)
    d = thresholds.divergence
    needed = evidence_needed(ref_t, d, level, thresholds.power, thresholds.min_expected)
    m_needed = None
    if needed is None:
        df = max(1, len(pool_bins(ref_t, m, thresholds.min_expected)) - 1)
        m_needed = reference_needed(d, level, thresholds.power, df)
    else:
        needed = max(needed, min_count)
    return _Examined(name, n, m, effects, test, needed, m_needed)


def _decide(items: Sequence[_Examined], thresholds: DriftThresholds) -> tuple[FeatureDrift, ...]:
    tested = [i for i, e in enumerate(items) if e.test is not None]
    adjusted, steps = holm([items[i].test.p_value for i in tested], thresholds.alpha)  # type: ignore[union-attr]
    adj = dict(zip(tested, adjusted, strict=True))
    step = dict(zip(tested, steps, strict=True))
    out = []
    for i, e in enumerate(items):
        ps, js, hl = e.effects if e.effects is not None else (None, None, None)
        reached = e.effects is not None and thresholds.effect_reached(*e.effects)
        t = e.test
        verdict: DriftVerdict
        if t is None:
            verdict = "insufficient"
        else:
            rejected = adj[i] <= thresholds.alpha
            if rejected and reached:
                major = ps is not None and ps >= thresholds.psi_major
                verdict = "major" if major else "drift"
            elif e.n_needed is None or e.n < e.n_needed:
                verdict = "insufficient"
            else:
                verdict = "minor" if rejected else "none"
        reason = _reason(e, verdict, adj.get(i), step.get(i), thresholds)
        out.append(
            FeatureDrift(
                name=e.name,
                n=e.n,
                psi=ps,
                js=js,
                hellinger=hl,
                drifted=verdict in ("drift", "major"),
                verdict=verdict,
                m=e.m,
                statistic=None if t is None else t.statistic,
                df=None if t is None else t.df,
                p_value=None if t is None else t.p_value,
                p_adjusted=adj.get(i),
                threshold=step.get(i),
                alpha=thresholds.alpha,
                n_needed=e.n_needed,
                m_needed=e.m_needed,
                effect_reached=reached,
                reason=reason,
            )
        )
    return tuple(out)


def _reason(
    e: _Examined,
    verdict: DriftVerdict,
    p_adj: float | None,
    step: float | None,
    thresholds: DriftThresholds,
) -> str:
    if verdict == "insufficient":
        if e.n_needed is None:
            return (
                f"reference of {e.m} values too small to find {thresholds.describe()} "
                f"with power {thresholds.power:g} at any n; rebuild with >= {e.m_needed}"
            )
        head = f"n {e.n} of {e.n_needed} needed"
        if e.test is not None:
            head += f" (chi2 {e.test.statistic:.1f}, df {e.test.df}, p {e.test.p_value:.2g})"
        return head
    t = e.test
    if t is None or e.effects is None or p_adj is None or step is None:
        return verdict  # not reached: a decided verdict always has a test and effects
    ps, js, _ = e.effects
    test = f"chi2 {t.statistic:.1f}, df {t.df}, p {t.p_value:.2g} vs {step:.2g} (Holm)"
    effect = f"PSI {ps:.3f}, JS {js:.3f}"
    if verdict in ("drift", "major"):
        return f"{test}; {effect} reaches {thresholds.describe()}"
    if verdict == "minor":
        return f"{test}; {effect} below {thresholds.describe()}"
    return f"{test}: no drift at n {e.n} (>= {e.n_needed} needed)"


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
class ChannelValuesDrift:
    """Effect sizes of one channel's values at every position (a tensor input's
    per-channel value histogram) against the reference's: shown, never tested — the
    values of one sample are not independent, so a test on them would count one sample
    as many (the per-sample summaries are what the rule tests; see docs/drift.md).
    ``values`` finite live values; ``nan_rate`` the share of NaN values."""

    name: str
    values: int
    psi: float | None
    js: float | None
    hellinger: float | None
    nan_rate: float

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "values": self.values,
            "psi": self.psi,
            "js": self.js,
            "hellinger": self.hellinger,
            "nan_rate": self.nan_rate,
        }


def _channel_drift(
    reference: ReferenceStats, merged: MetricsWindow, eps: float
) -> tuple[ChannelValuesDrift, ...]:
    """Per-channel value effect sizes, when the windows and the reference have them."""
    cv = merged.channel_values
    if cv is None or not reference.channels:
        return ()
    out = []
    for name, ref, live in zip(reference.channel_names, reference.channels, cv.counts, strict=True):
        r, c = ref.counts[:-1], live[:-1]  # NaN is a data-quality rate, not drift
        m, n = sum(r), sum(c)
        effects = _effects([v / m for v in r], [v / n for v in c], eps) if m and n else None
        total = sum(live)
        out.append(
            ChannelValuesDrift(
                name,
                n,
                None if effects is None else effects[0],
                None if effects is None else effects[1],
                None if effects is None else effects[2],
                live[-1] / total if total else 0.0,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class OutputShift:
    """One monitored output of a model that is not a classifier (regression, score,
    multilabel): its live ``mean``/``std`` over ``n`` finite values, the reference's,
    the mean's shift in reference standard deviations and the ratio of the standard
    deviations (None when there is no live value or the reference is constant)."""

    name: str
    n: int
    mean: float | None
    std: float | None
    reference_mean: float
    reference_std: float
    mean_shift_sd: float | None
    std_ratio: float | None
    #: The share of values at or above ``cut`` (multi-label: the positive rate at 0.5;
    #: a score: the exceedance rate over its threshold), live and in the reference;
    #: None without a cut.
    cut: float | None = None
    rate: float | None = None
    reference_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "reference_mean": self.reference_mean,
            "reference_std": self.reference_std,
            "mean_shift_sd": self.mean_shift_sd,
            "std_ratio": self.std_ratio,
            "cut": self.cut,
            "rate": self.rate,
            "reference_rate": self.reference_rate,
        }


@dataclass(frozen=True)
class DriftReport:
    """Fleet-wide drift and health of one model version, from merged windows.

    - ``features``, ``prediction`` (predicted classes), ``confidence`` (top-1
      confidence histogram): one :class:`FeatureDrift` each, decided together (Holm
      over all of them at ``thresholds.alpha``); ``decision`` their one verdict. For a
      model whose ``output_kind`` is not ``classification``, ``prediction`` and
      ``confidence`` are None (left out of the JSON): its outputs are features
      (``out.<label>``), and ``output_shift`` gives each one's mean and variance shift.
    - ``channel_values``: for a tensor input, each channel's value histogram over all
      positions against the reference's, as effect sizes only (never tested).
    - ``drifted_share``: drifted / decided features (None when none is decided);
      ``dataset_drift``: ``drifted_share >= thresholds.dataset_share`` (None likewise).
    - ``error_rates``: per error kind, errors / attempts, attempts being predictions
      plus the errors that are not predictions (a failed invocation or a refused row;
      a NaN output is in ``n`` already, see ``ERRORS_IN_N``).
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
    prediction: FeatureDrift | None
    confidence: FeatureDrift | None
    data_quality: tuple[DataQuality, ...]
    error_rates: dict[str, float]
    latency_ms: dict[str, float] | None
    accuracy_estimate: float | None
    reference_accuracy_estimate: float | None
    agreement: float | None
    compared: int
    accuracy: AccuracyEstimate | None = None
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS
    output_kind: str = "classification"
    output_shift: tuple[OutputShift, ...] = ()
    channel_values: tuple[ChannelValuesDrift, ...] = ()

    @property
    def distributions(self) -> tuple[FeatureDrift, ...]:
        """Every tested distribution: the features, then prediction and confidence
        (a classifier's only)."""
        extra = tuple(d for d in (self.prediction, self.confidence) if d is not None)
        return (*self.features, *extra)

    @property
    def decision(self) -> DriftSummary:
        """The report's one verdict over all its distributions."""
        return summarize(self.distributions)

    def _outputs_json(self) -> dict[str, Any]:
        """A classifier's ``prediction`` and ``confidence`` (the keys a report had
        before output kinds existed), or another kind's ``output_kind`` and
        ``output_shift``."""
        if self.prediction is not None and self.confidence is not None:
            return {
                "prediction": self.prediction.to_json(),
                "confidence": self.confidence.to_json(),
            }
        return {
            "output_kind": self.output_kind,
            "output_shift": [o.to_json() for o in self.output_shift],
        }

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document (None for what was not measured). A classifier's
        has the keys it had before output kinds existed; another kind's has
        ``output_kind`` and ``output_shift`` instead of ``prediction`` and
        ``confidence``."""
        return {
            "model": self.model,
            "version": self.version,
            "role": self.role,
            "start": self.start,
            "end": self.end,
            "n": self.n,
            "min_count": self.min_count,
            "rule": self.thresholds.to_json(),
            "decision": self.decision.to_json(),
            "features": [f.to_json() for f in self.features],
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            **self._outputs_json(),
            **(
                {"channel_values": [c.to_json() for c in self.channel_values]}
                if self.channel_values
                else {}
            ),
            "data_quality": [d.to_json() for d in self.data_quality],
            "error_rates": dict(sorted(self.error_rates.items())),
            "latency_ms": self.latency_ms,
            "accuracy_estimate": self.accuracy_estimate,
            "reference_accuracy_estimate": self.reference_accuracy_estimate,
            "agreement": self.agreement,
            "compared": self.compared,
            "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
        }


def compare(
    name: str,
    ref: Sequence[int],
    cur: Sequence[int],
    *,
    min_count: int = 1,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    eps: float = PSI_EPS,
) -> FeatureDrift:
    """The verdict on one distribution ``cur`` against ``ref`` (same layout, NaN bins
    already removed), as a family of one (no correction). ``min_count`` is a floor on
    ``n`` below which nothing is tested.

    Raises:
        DriftError: the vectors differ in length or hold negative counts.
    """
    item = _examine(
        name, ref, cur, thresholds=thresholds, family=1, min_count=max(1, min_count), eps=eps
    )
    return _decide([item], thresholds)[0]


def histogram_quantile(edges: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """Estimate the ``q`` quantile from counts in the :mod:`edge_agent.contract.histogram` layout.

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


def decide_counts(
    reference: ReferenceStats,
    features: Sequence[Sequence[int]],
    classes: Sequence[int],
    confidence: Sequence[int],
    *,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    min_count: int = 1,
    eps: float = PSI_EPS,
) -> tuple[FeatureDrift, ...]:
    """The one rule on live counts (NaN bins removed) against ``reference``: one
    :class:`FeatureDrift` per feature, then the predicted classes and the confidences,
    decided together (Holm across all of them). What :func:`drift_report` uses. For a
    model that is not a classifier (``reference.output_kind``) only the features are
    decided (its outputs are among them), and ``classes``/``confidence`` are ignored.

    Raises:
        DriftError: a count vector does not fit the reference, or holds negative counts.
    """
    if len(features) != len(reference.features):
        raise DriftError(
            f"{len(features)} feature count vectors for {len(reference.features)} features"
        )
    extra = EXTRA_DISTRIBUTIONS if reference.classification else 0
    opts: dict[str, Any] = {
        "thresholds": thresholds,
        "family": len(reference.features) + extra,
        "min_count": max(1, min_count),
        "eps": eps,
    }
    examined = [
        _examine(fr.name, fr.counts[:-1], cur, **opts)
        for fr, cur in zip(reference.features, features, strict=True)
    ]
    if reference.classification:
        examined.append(_examine("prediction", reference.class_counts, classes, **opts))
        examined.append(
            _examine("confidence", reference.confidence.counts[:-1], confidence, **opts)
        )
    return _decide(examined, thresholds)


def drift_report(
    reference: ReferenceStats,
    windows: Iterable[MetricsWindow],
    *,
    min_count: int = 1,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    eps: float = PSI_EPS,
) -> DriftReport:
    """Merge ``windows`` (one model, version and role) and decide on them against
    ``reference`` with the one rule (see the module doc). ``min_count`` is an extra
    floor on the predictions a distribution needs before it is tested at all (the
    evidence needed is computed; the floor only ever raises it).

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
    decided = decide_counts(
        reference,
        [fw.counts[:-1] for fw in merged.features],
        merged.class_counts,
        merged.confidence[:-1],
        thresholds=thresholds,
        min_count=min_count,
        eps=eps,
    )
    prediction: FeatureDrift | None = None
    confidence: FeatureDrift | None = None
    if reference.classification:
        features, prediction, confidence = decided[:-2], decided[-2], decided[-1]
    else:
        features = decided
    known = [f for f in features if f.verdict != "insufficient"]
    share = sum(f.drifted for f in known) / len(known) if known else None
    n = merged.n
    quality = tuple(
        DataQuality(
            fr.name,
            fw.nan / n if n else 0.0,
            fw.out_of_range / n if n else 0.0,
        )
        for fr, fw in zip(reference.features, merged.features, strict=True)
    )
    # A NaN output is a prediction too (in n): only the other errors add attempts.
    attempts = n + sum(v for k, v in merged.errors.items() if k not in ERRORS_IN_N)
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
        prediction=prediction,
        confidence=confidence,
        data_quality=quality,
        error_rates=errors,
        latency_ms=latency or None,
        accuracy_estimate=accuracy.value,
        reference_accuracy_estimate=reference_estimate(reference),
        agreement=merged.agreed / merged.compared if merged.compared else None,
        compared=merged.compared,
        accuracy=accuracy,
        thresholds=thresholds,
        output_kind=reference.output_kind,
        output_shift=_output_shift(reference, merged),
        channel_values=_channel_drift(reference, merged, eps),
    )


def _output_shift(reference: ReferenceStats, merged: MetricsWindow) -> tuple[OutputShift, ...]:
    """The mean and variance of each monitored output (``out.*`` features) against the
    reference's, from the merged moments (exact); empty for a classifier."""
    if reference.classification:
        return ()
    shifts = []
    for fr, fw in zip(reference.features, merged.features, strict=True):
        if not fr.name.startswith(OUTPUT_PREFIX):
            continue
        std = float(np.sqrt(fw.variance)) if fw.count else None
        mean = fw.mean if fw.count else None
        shift = None if mean is None or fr.std <= 0 else (mean - fr.mean) / fr.std
        ratio = None if std is None or fr.std <= 0 else std / fr.std
        cut = reference.output_cut
        rate = ref_rate = None
        if cut is not None:
            rate = share_at_or_above(fr.edges, fw.counts, cut)
            ref_rate = share_at_or_above(fr.edges, fr.counts, cut)
        shifts.append(
            OutputShift(
                fr.name, fw.count, mean, std, fr.mean, fr.std, shift, ratio, cut, rate, ref_rate
            )
        )
    return tuple(shifts)


def drift_decision(
    reference: ReferenceStats,
    windows: Sequence[MetricsWindow],
    *,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    min_count: int = 1,
) -> DriftSummary:
    """The one verdict of a scope's windows, ``insufficient`` (with the evidence
    needed) when there are none: what gates and alerts decide with.

    Raises:
        DriftError: ``min_count`` < 1.
        ValidationError: the windows do not merge, or do not fit the reference's bins.
    """
    if windows:
        return drift_report(reference, windows, min_count=min_count, thresholds=thresholds).decision
    empty = decide_counts(
        reference,
        [[0] * (len(fr.counts) - 1) for fr in reference.features],
        [0] * len(reference.class_counts),
        [0] * (len(reference.confidence.counts) - 1),
        thresholds=thresholds,
        min_count=min_count,
    )
    return summarize(empty)
