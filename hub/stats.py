"""Small statistics the drift decision needs, without SciPy (pure functions, stdlib only).

- :func:`chi2_sf`: the chi-square survival function ``P(X >= x)``, from the regularized
  upper incomplete gamma function ``Q(df / 2, x / 2)`` (series for ``x < a + 1``,
  Lentz's continued fraction otherwise; the standard formulas of Numerical Recipes
  §6.2, relative accuracy ~1e-14).
- :func:`chi2_isf`: its inverse, by bisection (critical values).
- :func:`ncx2_sf`: the noncentral chi-square survival function by Patnaik's two-moment
  approximation ``c * chi2(nu)`` (enough for choosing a sample size; not for p-values).
- :func:`holm`: Holm's step-down adjusted p-values and per-rank thresholds.

SciPy would add ~100 MB to the hub for four functions; these are tested against closed
forms (``df = 1`` and ``2``) and table values in ``tests/hub/test_stats.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

_EPS: Final = 1e-15
_TINY: Final = 1e-300
_MAX_ITER: Final = 100_000


class StatsError(ValueError):
    """An argument is outside a function's domain (negative df, probability not in (0, 1))."""


def gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, x) = Gamma(a, x) / Gamma(a)`` in [0, 1].

    Raises:
        StatsError: ``a <= 0`` or ``x`` is NaN.
    """
    if not a > 0 or math.isnan(x):
        raise StatsError(f"gamma_q needs a > 0 and a number x, got a={a}, x={x}")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        # P(a, x) by its series; Q = 1 - P.
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_front)))
    # Q(a, x) by its continued fraction (modified Lentz).
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            break
    return min(1.0, max(0.0, math.exp(log_front) * h))


def chi2_sf(x: float, df: float) -> float:
    """``P(X >= x)`` for ``X ~ chi2(df)``: the p-value of a chi-square statistic.

    Raises:
        StatsError: ``df <= 0`` or ``x`` is NaN.
    """
    if not df > 0:
        raise StatsError(f"chi2_sf needs df > 0, got {df}")
    return gamma_q(df / 2.0, x / 2.0)


@lru_cache(maxsize=4096)
def chi2_isf(p: float, df: float) -> float:
    """The ``x`` with ``chi2_sf(x, df) = p`` (the critical value at level ``p``).

    Raises:
        StatsError: ``p`` not in (0, 1) or ``df <= 0``.
    """
    if not 0.0 < p < 1.0 or not df > 0:
        raise StatsError(f"chi2_isf needs p in (0, 1) and df > 0, got p={p}, df={df}")
    lo, hi = 0.0, max(1.0, df)
    while chi2_sf(hi, df) > p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if chi2_sf(mid, df) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def ncx2_sf(x: float, df: float, nc: float) -> float:
    """``P(X >= x)`` for a noncentral chi-square (``df``, noncentrality ``nc``), by
    Patnaik's approximation ``X ~ c * chi2(nu)`` with ``c = (df + 2 nc) / (df + nc)``
    and ``nu = (df + nc)^2 / (df + 2 nc)`` (matches the first two moments).

    Raises:
        StatsError: ``df <= 0`` or ``nc < 0``.
    """
    if not df > 0 or nc < 0:
        raise StatsError(f"ncx2_sf needs df > 0 and nc >= 0, got df={df}, nc={nc}")
    c = (df + 2.0 * nc) / (df + nc)
    nu = (df + nc) ** 2 / (df + 2.0 * nc)
    return chi2_sf(x / c, nu)


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[float]]:
    """Holm's step-down correction of ``p_values`` at family-wise level ``alpha``.

    Returns ``(adjusted, thresholds)``, in input order: the adjusted p-value of each
    (``max`` over the ranks up to its own of ``min(1, (k - rank) * p)``; a hypothesis is
    rejected exactly when its adjusted p-value is ``<= alpha``) and the threshold its
    raw p-value is compared with at its rank (``alpha / (k - rank)``, rank from 0).
    Valid under any dependence between the tests.

    Raises:
        StatsError: ``alpha`` not in (0, 1) or a p-value not in [0, 1].
    """
    if not 0.0 < alpha < 1.0:
        raise StatsError(f"alpha must be in (0, 1), got {alpha}")
    if any(not 0.0 <= p <= 1.0 for p in p_values):
        raise StatsError("p-values must be in [0, 1]")
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [1.0] * k
    thresholds = [alpha] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
        thresholds[i] = alpha / (k - rank)
    return adjusted, thresholds
