"""Fixed-bin histograms that add up exactly across devices and time.

Bin edges come from reference quantiles, fixed when the hub builds a bundle. For
``k + 1`` edges there are ``k + 3`` counts::

    [underflow (< e0), [e0, e1), ..., [e(k-1), ek], overflow (> ek), NaN]

The last interior bin is closed so the reference maximum is counted inside. The hub
counts the reference data with these same functions, so device and reference
histograms are directly comparable.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_agent.errors import ValidationError


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
