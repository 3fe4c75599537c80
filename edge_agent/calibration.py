"""The confidence calibration map a bundle ships for label-free accuracy estimates.

The hub fits it when it builds the bundle, on labelled held-out data (CBPE-style
histogram binning): over the bins of the reference's top-1 confidence histogram it
records, per bin, how many held-out predictions fell in it, their mean top-1
confidence and their accuracy. The calibrated confidence of a prediction with top-1
confidence ``c`` in bin ``b`` is ``c + accuracy[b] - confidence[b]``, clipped to
[0, 1]: the model's own confidence, moved by the bin's measured calibration error. It
is linear inside each bin, so the sum of calibrated confidences over a bin follows
exactly from the bin's count and its sum of top-1 confidences (which a monitoring
window carries: ``confidence_sum``), and windows still merge by adding.

Bins with few held-out predictions are shrunk toward the overall calibration error
(:data:`SHRINK`), and each bin carries the variance of its calibration error
(``variance``), which the hub's estimate turns into part of its interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from edge_agent.errors import ValidationError
from edge_agent.histogram import bin_indices, check_edges, n_counts
from edge_agent.schema import exact_fields, field, list_of

#: Pseudo-count pulling a bin's calibration error toward the overall one.
SHRINK: Final = 10.0
#: Prior variance of ``correct - confidence`` for bins with few held-out predictions.
PRIOR_VARIANCE: Final = 0.25
_FIELDS: Final = {"edges", "count", "confidence", "accuracy", "variance", "holdout_accuracy"}


@dataclass(frozen=True)
class Calibration:
    """Per confidence bin (underflow, interior bins, overflow; no NaN bin): held-out
    count, mean top-1 confidence, accuracy (shrunk), and the variance of the bin's
    calibration error ``accuracy - confidence``."""

    edges: tuple[float, ...]
    count: tuple[int, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    variance: tuple[float, ...]
    #: The plain accuracy on the held-out data (for comparison with live estimates).
    holdout_accuracy: float

    @property
    def n(self) -> int:
        """Held-out predictions the map was fitted on."""
        return sum(self.count)

    def offsets(self) -> np.ndarray:
        """``accuracy - confidence`` per bin (float64)."""
        out: np.ndarray = np.asarray(self.accuracy) - np.asarray(self.confidence)
        return out

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "edges": list(self.edges),
            "count": list(self.count),
            "confidence": list(self.confidence),
            "accuracy": list(self.accuracy),
            "variance": list(self.variance),
            "holdout_accuracy": self.holdout_accuracy,
        }

    @classmethod
    def fit(cls, edges: Sequence[float], top1: np.ndarray, correct: np.ndarray) -> Calibration:
        """Fit the map on held-out top-1 confidences and whether each prediction was right.

        Raises:
            ValidationError: bad edges, lengths that differ, no finite confidence, or
                confidences that are not all finite.
        """
        e = check_edges(edges, "calibration.edges")
        c = np.asarray(top1, dtype=np.float64)
        ok = np.asarray(correct, dtype=np.float64)
        if c.ndim != 1 or c.shape != ok.shape or c.size == 0:
            raise ValidationError("calibration: need one correctness flag per confidence")
        if not np.all(np.isfinite(c)):
            raise ValidationError("calibration: held-out confidences must be finite")
        idx = bin_indices(e, c)
        size = n_counts(e) - 1  # no NaN bin
        m = np.bincount(idx, minlength=size).astype(np.float64)
        sum_c = np.bincount(idx, weights=c, minlength=size)
        diff = ok - c
        sum_d = np.bincount(idx, weights=diff, minlength=size)
        pooled = float(diff.mean())
        occupied = m > 0
        mean_c = np.where(occupied, sum_c / np.maximum(m, 1.0), 0.0)
        offset = (sum_d + SHRINK * pooled) / (m + SHRINK)
        mean_d = sum_d / np.maximum(m, 1.0)
        ss = np.bincount(idx, weights=(diff - mean_d[idx]) ** 2, minlength=size)
        s2 = (ss + SHRINK * PRIOR_VARIANCE) / (np.maximum(m - 1.0, 0.0) + SHRINK)
        variance = s2 / (m + SHRINK)
        accuracy = np.where(occupied, mean_c + offset, 0.0)
        return cls(
            edges=tuple(float(v) for v in e),
            count=tuple(int(v) for v in m),
            confidence=tuple(float(v) for v in mean_c),
            accuracy=tuple(float(v) for v in accuracy),
            variance=tuple(float(v) for v in variance),
            holdout_accuracy=float(ok.mean()),
        )

    @classmethod
    def from_json(cls, value: Any, where: str = "calibration") -> Calibration:
        """Parse and check the document.

        Raises:
            ValidationError: malformed (lengths, negative counts or variances,
                confidences or accuracies outside the finite range).
        """
        obj = exact_fields(value, where, _FIELDS)
        edges = check_edges(list_of(obj, "edges", float, where), f"{where}.edges")
        size = n_counts(edges) - 1
        count = list_of(obj, "count", int, where)
        columns = {k: list_of(obj, k, float, where) for k in ("confidence", "accuracy", "variance")}
        lengths = {"count": len(count), **{k: len(v) for k, v in columns.items()}}
        for key, length in lengths.items():
            if length != size:
                raise ValidationError(
                    f"{where}.{key}: {len(edges)} edges need {size} values, got {length}"
                )
        if any(c < 0 for c in count) or sum(count) < 1:
            raise ValidationError(f"{where}.count: counts must be >= 0 and not all 0")
        for key, values in columns.items():
            if not all(np.isfinite(values)):
                raise ValidationError(f"{where}.{key}: values must be finite")
        if any(v < 0 for v in columns["variance"]):
            raise ValidationError(f"{where}.variance: cannot be negative")
        holdout = field(obj, "holdout_accuracy", float, where)
        if not 0.0 <= holdout <= 1.0:
            raise ValidationError(f"{where}.holdout_accuracy: must be in [0, 1]")
        return cls(
            tuple(float(v) for v in edges),
            tuple(count),
            tuple(columns["confidence"]),
            tuple(columns["accuracy"]),
            tuple(columns["variance"]),
            holdout,
        )
