"""Fixed-bin histograms that add up exactly across devices and time.

Bin edges come from reference quantiles, fixed when the hub builds a bundle. For
``k + 1`` edges there are ``k + 3`` counts::

    [underflow (< e0), [e0, e1), ..., [e(k-1), ek], overflow (> ek), NaN]

The last interior bin is closed so the reference maximum is counted inside. The hub
counts the reference data with these same functions, so device and reference
histograms are directly comparable.

How the hub places the edges (:func:`reference_edges`, reference format 2; format 1
bundles used :func:`quantile_edges` and are still read and counted as they are):

- **Continuous features** get edges at the reference quantiles from ``t`` to ``1 - t``
  (``t`` = :data:`TAIL_SHARE`, at least :data:`MIN_TAIL_COUNT` values), so the
  underflow and overflow bins hold real reference mass: a live value just past the
  reference range lands in a bin the reference populates, instead of a bin PSI can
  only floor at epsilon.
- **Heavy values** (a single value holding at least half a bin's share, e.g. a sensor
  stuck at 0 30 % of the time) get a bin of their own, bounded by the midpoints to
  their neighbouring distinct values; tied quantiles never merge distinct values
  into one bin.
- **Discrete features** (at most ``n_bins + 2`` distinct values, or declared
  ``discrete`` in the input schema) get one bin per value, with edges at the
  midpoints between consecutive values: the lowest value is the underflow bin, the
  highest the overflow bin (a two-valued feature gets an empty overflow bin above
  its higher value, as two edges are the minimum).
- A constant feature gets one bin of width 1 around its value.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from edge_agent.errors import ValidationError

#: Reference share in each of the underflow and overflow bins of a continuous feature.
TAIL_SHARE: Final = 0.01
#: ... but at least this many reference values in each (small reference sets).
MIN_TAIL_COUNT: Final = 5
#: Tails never take more than this share each.
MAX_TAIL_SHARE: Final = 0.05
#: A feature declared discrete may have at most this many distinct reference values.
MAX_DISCRETE_VALUES: Final = 64


def n_counts(edges: npt.ArrayLike) -> int:
    """Number of counts for these edges (interior bins + underflow, overflow, NaN)."""
    return int(np.asarray(edges).shape[0]) + 2


def check_edges(edges: npt.ArrayLike, where: str) -> np.ndarray:
    """Return ``edges`` as float64, checked: at least two, finite, strictly increasing.

    Raises:
        ValidationError: the edges cannot define bins.
    """
    arr = np.asarray(edges, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValidationError(f"{where}: need at least two bin edges")
    if not np.all(np.isfinite(arr)) or not np.all(np.diff(arr) > 0):
        raise ValidationError(f"{where}: bin edges must be finite and strictly increasing")
    return arr


def bin_indices(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map each value to its count index (see the module doc); vectorised."""
    values = np.asarray(values, dtype=np.float64)
    k = edges.shape[0] - 1
    idx = np.searchsorted(edges, values, side="right")
    idx[values == edges[-1]] = k
    idx[np.isnan(values)] = k + 2
    return idx


def count(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Count ``values`` into the bins of ``edges``; returns int64 of ``len(edges) + 2``."""
    return np.bincount(bin_indices(edges, values), minlength=edges.shape[0] + 2).astype(np.int64)


def with_cut(edges: np.ndarray, cut: float) -> np.ndarray:
    """``edges`` with ``cut`` as an edge, so that the values at or above it are exactly
    the counts of the bins from that edge up (see :func:`share_at_or_above`): inserted
    inside the range, or prepended below it. A cut at or above the last edge cannot be
    one (the last interior bin is closed): ``edges`` come back unchanged."""
    e = np.asarray(edges, dtype=np.float64)
    if not np.isfinite(cut) or cut >= e[-1] or cut in e:
        return e
    return np.sort(np.append(e, cut))


def share_at_or_above(edges: npt.ArrayLike, counts: npt.ArrayLike, cut: float) -> float | None:
    """The share of the finite values counted at or above ``cut`` (NaN bin excluded),
    exact when ``cut`` is an edge other than the last; None otherwise or when there is
    no finite value."""
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)[:-1]
    hits = np.flatnonzero(e[:-1] == cut)
    total = int(c.sum())
    if hits.size == 0 or total == 0:
        return None
    return float(c[int(hits[0]) + 1 :].sum()) / total


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges at the reference quantiles: ``n_bins`` bins of about equal mass.

    Repeated quantiles (discrete or constant features) are merged, so a feature may
    get fewer bins; a constant feature gets one bin of width 1 around its value.

    Raises:
        ValidationError: ``n_bins`` < 1 or no finite values.
    """
    if n_bins < 1:
        raise ValidationError("n_bins must be at least 1")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValidationError("no finite reference values to derive bin edges from")
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.shape[0] < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def reference_edges(values: np.ndarray, n_bins: int, discrete: bool = False) -> np.ndarray:
    """Edges for one feature's reference values (see the module doc for the rules).

    ``discrete`` forces one bin per distinct value (at most
    :data:`MAX_DISCRETE_VALUES`); a feature with at most ``n_bins + 2`` distinct values
    is treated as discrete anyway.

    Raises:
        ValidationError: ``n_bins`` < 1, no finite values, or a declared discrete feature
            with more than :data:`MAX_DISCRETE_VALUES` distinct values.
    """
    if n_bins < 1:
        raise ValidationError("n_bins must be at least 1")
    finite = np.asarray(values, dtype=np.float64)
    finite = np.sort(finite[np.isfinite(finite)])
    if finite.size == 0:
        raise ValidationError("no finite reference values to derive bin edges from")
    distinct, counts = np.unique(finite, return_counts=True)
    if distinct.size == 1:
        return np.array([distinct[0] - 0.5, distinct[0] + 0.5])
    if discrete and distinct.size > MAX_DISCRETE_VALUES:
        raise ValidationError(
            f"a discrete feature may have at most {MAX_DISCRETE_VALUES} distinct values, "
            f"the reference has {distinct.size}"
        )
    mids = distinct[:-1] + (distinct[1:] - distinct[:-1]) / 2.0
    if discrete or distinct.size <= n_bins + 2:
        if mids.size == 1:  # two values: the higher one's bin is closed, an empty one above
            step = distinct[1] - distinct[0]
            return np.array([mids[0], distinct[1] + step / 2.0])
        return _strictly_increasing(mids)
    # Heavy values: each gets the bin between the midpoints to its neighbours; the
    # other values share the remaining bins by their quantiles.
    threshold = max(2.0, 0.5 * finite.size / n_bins)
    heavy = np.flatnonzero(counts >= threshold)
    bounds = [
        b
        for i in heavy
        for b in (mids[i - 1] if i > 0 else None, mids[i] if i < mids.size else None)
        if b is not None
    ]
    rest = finite[~np.isin(finite, distinct[heavy])] if heavy.size else finite
    edges = np.asarray(bounds, dtype=np.float64)
    if np.unique(rest).size >= 2:
        tail = min(MAX_TAIL_SHARE, max(TAIL_SHARE, MIN_TAIL_COUNT / rest.size))
        nb = max(1, min(n_bins - heavy.size, rest.size // MIN_TAIL_COUNT))
        q = np.quantile(rest, np.linspace(tail, 1.0 - tail, nb + 1))
        # Snapped to the nearest midpoint between distinct values: no edge sits on a
        # reference value, where float32 rounding on a device could move it across.
        at = np.clip(np.searchsorted(mids, q), 1, mids.size - 1) if mids.size > 1 else None
        if at is not None:
            below, above = mids[at - 1], mids[at]
            q = np.where(np.abs(q - below) <= np.abs(above - q), below, above)
        else:
            q = mids
        edges = np.concatenate([edges, q])
    edges = np.unique(edges)
    if edges.size < 2:  # e.g. one value with nearly all the mass: close at the maximum
        top = distinct[-1]
        edges = np.unique(np.concatenate([edges, [top if top > edges[-1] else top + 0.5]]))
    return _strictly_increasing(edges)


def _strictly_increasing(edges: np.ndarray) -> np.ndarray:
    """Drop edges that rounding made equal to their predecessor."""
    out = np.asarray(edges, dtype=np.float64)
    keep = np.concatenate([[True], np.diff(out) > 0])
    result: np.ndarray = out[keep]
    return result
