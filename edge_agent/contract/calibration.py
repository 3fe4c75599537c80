"""The calibration map a bundle ships for label-free accuracy estimates.

The hub fits it when it builds the bundle, from labelled held-out data run through the
model. Over the bins of the reference's top-1 confidence histogram it keeps:

- ``counts[b][k][y]``: held-out predictions with top-1 confidence in bin ``b``,
  predicted class ``k`` and true class ``y`` (CBPE-style histogram binning of
  correctness against confidence, split by class so the hub can re-weight it when the
  class mix changes: label shift);
- ``confidence[b]``: their mean top-1 confidence (the bin's midpoint when empty);
- ``class_means`` / ``class_variances``: per true class, each feature's mean and
  variance, and ``covariance`` (the pooled feature covariance; None above
  :data:`MAX_COVARIANCE_FEATURES` features): what the hub compares a window's exact
  moments with to decide whether the inputs are still close enough for the map to
  hold;
- ``typicality``: the held-out inputs' mean and their :data:`TYPICAL_DIRECTIONS`
  weakest principal directions, whitened (``v / sqrt(eigenvalue)``), with the mean
  energy ``sum_i (d_i . (x - mean))**2`` per true class. Devices sum that energy over
  their inputs (see :mod:`edge_agent.contract.window`): the weak directions are where the
  features' correlations live (one sensor tracking another), so added noise or a
  sensor moving alone inflates the energy long before it shows in any one feature's
  spread.

The device only parses it (it is part of the signed reference); the hub computes with
it (:mod:`hub.accuracy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from edge_agent.contract.fields import exact_fields, field, list_of
from edge_agent.contract.histogram import bin_indices, check_edges, n_counts
from edge_agent.errors import ValidationError

#: Features above this count get no covariance in the map (it grows as F**2).
MAX_COVARIANCE_FEATURES: Final = 64
#: Weakest principal directions whose energy devices sum (fewer with fewer features).
TYPICAL_DIRECTIONS: Final = 2
#: Directions with less variance than this share of the largest are left out
#: (exact linear relations: no spread to whiten by).
_MIN_EIGEN_SHARE: Final = 1e-9
_FIELDS: Final = {
    "edges", "counts", "confidence", "holdout_accuracy",
    "class_means", "class_variances", "covariance", "typicality",
}  # fmt: skip
_TYPICAL_FIELDS: Final = {"mean", "directions", "expected"}


@dataclass(frozen=True)
class Typicality:
    """Whitened weak principal directions of the held-out inputs (see the module doc):
    ``mean [F]``, ``directions [k, F]`` (k may be 0), ``expected [C]`` the mean energy
    per true class."""

    mean: tuple[float, ...]
    directions: tuple[tuple[float, ...], ...]
    expected: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "mean": list(self.mean),
            "directions": [list(d) for d in self.directions],
            "expected": list(self.expected),
        }

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, n_classes: int) -> Typicality:
        """From held-out inputs ``x [m, F]`` and their classes ``y [m]`` (every class
        present)."""
        mean = x.mean(axis=0)
        k = min(TYPICAL_DIRECTIONS, x.shape[1] - 1)
        directions = np.zeros((0, x.shape[1]))
        if k > 0 and x.shape[0] > 1:
            lam, vec = np.linalg.eigh(np.cov(x.T))
            keep = np.flatnonzero(lam > _MIN_EIGEN_SHARE * max(float(lam[-1]), 0.0))[:k]
            directions = (vec[:, keep] / np.sqrt(lam[keep])).T
        energy = ((x - mean) @ directions.T) ** 2
        per_sample = energy.sum(axis=1)
        expected = [float(per_sample[y == c].mean()) for c in range(n_classes)]
        return cls(
            tuple(float(v) for v in mean),
            tuple(tuple(float(v) for v in d) for d in directions),
            tuple(expected),
        )

    @classmethod
    def from_json(cls, value: Any, where: str, n_features: int, n_classes: int) -> Typicality:
        """Parse and check the document.

        Raises:
            ValidationError: malformed, or shapes that do not fit the features/classes.
        """
        obj = exact_fields(value, where, _TYPICAL_FIELDS)
        mean = list_of(obj, "mean", float, where)
        directions = _matrix(obj, "directions", where)
        expected = list_of(obj, "expected", float, where)
        if len(mean) != n_features or any(len(d) != n_features for d in directions):
            raise ValidationError(f"{where}: mean and directions need {n_features} values")
        if len(directions) > TYPICAL_DIRECTIONS:
            raise ValidationError(f"{where}.directions: at most {TYPICAL_DIRECTIONS}")
        if len(expected) != n_classes or not all(np.isfinite(expected + mean)):
            raise ValidationError(f"{where}: expected needs {n_classes} finite values")
        if any(e < 0 for e in expected):
            raise ValidationError(f"{where}.expected: cannot be negative")
        return cls(tuple(float(v) for v in mean), directions, tuple(float(v) for v in expected))


@dataclass(frozen=True)
class Calibration:
    """The fitted map (see the module doc); arrays as nested tuples, JSON-ready."""

    edges: tuple[float, ...]
    counts: tuple[tuple[tuple[int, ...], ...], ...]
    confidence: tuple[float, ...]
    holdout_accuracy: float
    class_means: tuple[tuple[float, ...], ...]
    class_variances: tuple[tuple[float, ...], ...]
    covariance: tuple[tuple[float, ...], ...] | None
    typicality: Typicality

    @property
    def n(self) -> int:
        """Held-out predictions the map was fitted on."""
        return int(self.count_array().sum())

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_means)

    def count_array(self) -> np.ndarray:
        """``counts`` as a float64 array ``[bins, C, C]`` (bin, predicted, true)."""
        return np.asarray(self.counts, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "edges": list(self.edges),
            "counts": [[list(row) for row in b] for b in self.counts],
            "confidence": list(self.confidence),
            "holdout_accuracy": self.holdout_accuracy,
            "class_means": [list(m) for m in self.class_means],
            "class_variances": [list(v) for v in self.class_variances],
            "covariance": None if self.covariance is None else [list(r) for r in self.covariance],
            "typicality": self.typicality.to_json(),
        }

    @classmethod
    def fit(
        cls,
        edges: Sequence[float],
        probs: np.ndarray,
        labels: np.ndarray,
        x: np.ndarray,
    ) -> Calibration:
        """Fit the map on held-out model outputs ``probs [m, C]``, true class indices
        ``labels [m]`` and the inputs ``x [m, F]`` they came from.

        Raises:
            ValidationError: bad edges, shapes that do not fit, labels outside the
                classes, a class with no held-out sample, or non-finite values.
        """
        e = check_edges(edges, "calibration.edges")
        p = np.asarray(probs, dtype=np.float64)
        y = np.asarray(labels)
        xs = np.asarray(x, dtype=np.float64)
        if p.ndim != 2 or y.shape != (p.shape[0],) or xs.ndim != 2 or xs.shape[0] != p.shape[0]:
            raise ValidationError("calibration: need outputs [m, C], labels [m] and inputs [m, F]")
        c = p.shape[1]
        if p.shape[0] == 0 or not (np.all(np.isfinite(p)) and np.all(np.isfinite(xs))):
            raise ValidationError("calibration: held-out outputs and inputs must be finite")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= c:
            raise ValidationError(f"calibration: labels must be class indices 0..{c - 1}")
        present = np.bincount(y, minlength=c)
        if np.any(present == 0):
            raise ValidationError(
                "calibration: every class needs held-out samples (missing: "
                f"{', '.join(str(i) for i in np.flatnonzero(present == 0))})"
            )
        top = p.max(axis=1)
        predicted = p.argmax(axis=1)
        b = bin_indices(e, top)
        size = n_counts(e) - 1  # no NaN bin
        counts = np.zeros((size, c, c), dtype=np.int64)
        np.add.at(counts, (b, predicted, y), 1)
        m = np.bincount(b, minlength=size)
        sums = np.bincount(b, weights=top, minlength=size)
        mids = np.concatenate([[e[0]], (e[:-1] + e[1:]) / 2.0, [e[-1]]])
        mean_c = np.where(m > 0, sums / np.maximum(m, 1), mids)
        means = np.stack([xs[y == k].mean(axis=0) for k in range(c)])
        variances = np.stack([xs[y == k].var(axis=0) for k in range(c)])
        cov = None
        if xs.shape[1] <= MAX_COVARIANCE_FEATURES and xs.shape[0] > 1:
            centred = xs - means[y]  # within-class: the class mix is modelled apart
            cov = centred.T @ centred / (xs.shape[0] - 1)
        return cls(
            edges=tuple(float(v) for v in e),
            counts=tuple(tuple(tuple(int(v) for v in row) for row in blk) for blk in counts),
            confidence=tuple(float(v) for v in mean_c),
            holdout_accuracy=float(np.mean(predicted == y)),
            class_means=tuple(tuple(float(v) for v in row) for row in means),
            class_variances=tuple(tuple(float(v) for v in row) for row in variances),
            covariance=None if cov is None else tuple(tuple(float(v) for v in r) for r in cov),
            typicality=Typicality.fit(xs, y, c),
        )

    @classmethod
    def from_json(cls, value: Any, where: str = "calibration") -> Calibration:
        """Parse and check the document.

        Raises:
            ValidationError: malformed (shapes that do not fit the edges, the classes or
                each other; negative counts or variances; non-finite numbers).
        """
        obj = exact_fields(value, where, _FIELDS)
        edges = check_edges(list_of(obj, "edges", float, where), f"{where}.edges")
        size = n_counts(edges) - 1
        means = _matrix(obj, "class_means", where)
        c = len(means)
        f = len(means[0]) if means else 0
        if c < 1 or f < 1:
            raise ValidationError(
                f"{where}.class_means: need one row per class, one value per feature"
            )
        variances = _matrix(obj, "class_variances", where)
        if (
            any(len(r) != f for r in means)
            or len(variances) != c
            or any(len(r) != f for r in variances)
        ):
            raise ValidationError(f"{where}: class means and variances must be [classes, features]")
        if any(v < 0 for r in variances for v in r):
            raise ValidationError(f"{where}.class_variances: cannot be negative")
        counts_value = field(obj, "counts", list, where)
        if len(counts_value) != size:
            raise ValidationError(f"{where}.counts: {len(edges)} edges need {size} bins")
        counts = []
        for i, blk in enumerate(counts_value):
            at = f"{where}.counts[{i}]"
            rows = blk if type(blk) is list else None
            if rows is None or len(rows) != c:
                raise ValidationError(f"{at}: expected {c} rows (one per predicted class)")
            parsed = []
            for j, row in enumerate(rows):
                values = list_of({"r": row}, "r", int, f"{at}[{j}]")
                if len(values) != c or any(v < 0 for v in values):
                    raise ValidationError(f"{at}[{j}]: expected {c} counts >= 0")
                parsed.append(tuple(values))
            counts.append(tuple(parsed))
        if sum(v for blk in counts for row in blk for v in row) < 1:
            raise ValidationError(f"{where}.counts: no held-out prediction")
        confidence = list_of(obj, "confidence", float, where)
        if len(confidence) != size or not all(np.isfinite(confidence)):
            raise ValidationError(f"{where}.confidence: expected {size} finite values")
        holdout = field(obj, "holdout_accuracy", float, where)
        if not 0.0 <= holdout <= 1.0:
            raise ValidationError(f"{where}.holdout_accuracy: must be in [0, 1]")
        cov = None
        if obj["covariance"] is not None:
            cov = _matrix(obj, "covariance", where)
            if len(cov) != f or any(len(r) != f for r in cov):
                raise ValidationError(f"{where}.covariance: must be [features, features]")
        typicality = Typicality.from_json(obj["typicality"], f"{where}.typicality", f, c)
        return cls(
            tuple(float(v) for v in edges),
            tuple(counts),
            tuple(confidence),
            holdout,
            means,
            variances,
            cov,
            typicality,
        )


def _matrix(obj: dict[str, Any], key: str, where: str) -> tuple[tuple[float, ...], ...]:
    """A list of lists of finite numbers.

    Raises:
        ValidationError: anything else.
    """
    rows = field(obj, key, list, where)
    out = []
    for i, row in enumerate(rows):
        values = list_of({"r": row}, "r", float, f"{where}.{key}[{i}]")
        if not all(np.isfinite(values)):
            raise ValidationError(f"{where}.{key}[{i}]: values must be finite")
        out.append(tuple(float(v) for v in values))
    return tuple(out)
