"""Reference statistics a bundle ships for drift: fixed bins and their reference counts.

Per numeric feature: bin edges from reference quantiles and the reference counts in
them (see :mod:`edge_agent.histogram` for the layout); the reference class
distribution; and the top-1 confidence histogram. Devices count live data into the
same bins, so the hub can compare merged counts with these exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from edge_agent.errors import ValidationError
from edge_agent.histogram import check_edges, count, n_counts, quantile_edges
from edge_agent.schema import exact_fields, field, list_of, positive_int, safe_name

#: Top-1 confidence bins: ten of width 0.1.
DEFAULT_CONFIDENCE_EDGES: Final = tuple(float(e) for e in np.linspace(0.0, 1.0, 11))


@dataclass(frozen=True)
class FeatureReference:
    """One feature's bins and reference counts, with its reference mean and std."""

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    mean: float
    std: float

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "mean": self.mean,
            "std": self.std,
        }


@dataclass(frozen=True)
class Histogram:
    """Counts over fixed edges (same layout as feature bins)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"edges": list(self.edges), "counts": list(self.counts)}


@dataclass(frozen=True)
class ReferenceStats:
    """Everything drift needs from the reference data, and nothing per-sample."""

    n: int
    features: tuple[FeatureReference, ...]
    labels: tuple[str, ...]
    class_counts: tuple[int, ...]
    confidence: Histogram

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document."""
        return {
            "n": self.n,
            "features": [f.to_json() for f in self.features],
            "classes": {"labels": list(self.labels), "counts": list(self.class_counts)},
            "confidence": self.confidence.to_json(),
        }

    def edges(self) -> list[np.ndarray]:
        """Bin edges of every feature, in input order, as float64 arrays."""
        return [np.asarray(f.edges, dtype=np.float64) for f in self.features]

    @classmethod
    def from_data(
        cls,
        x: np.ndarray,
        probs: np.ndarray,
        names: Sequence[str],
        labels: Sequence[str],
        n_bins: int = 10,
        confidence_edges: Sequence[float] = DEFAULT_CONFIDENCE_EDGES,
    ) -> ReferenceStats:
        """Statistics of reference inputs ``x [n, F]`` and the model's outputs ``probs [n, C]``:
        quantile bins per feature, predicted-class counts and a top-1 confidence histogram.

        Raises:
            ValidationError: a feature has no finite value, or ``n_bins`` < 1.
        """
        features = []
        for j, name in enumerate(names):
            column = x[:, j]
            edges = quantile_edges(column, n_bins)
            finite = column[np.isfinite(column)]
            features.append(
                FeatureReference(
                    name=name,
                    edges=tuple(float(e) for e in edges),
                    counts=tuple(int(c) for c in count(edges, column)),
                    mean=float(finite.mean()),
                    std=float(finite.std()),
                )
            )
        class_counts = np.bincount(np.argmax(probs, axis=1), minlength=len(labels))
        conf_edges = np.asarray(confidence_edges, dtype=np.float64)
        confidence = count(conf_edges, probs.max(axis=1))
        return cls(
            n=int(x.shape[0]),
            features=tuple(features),
            labels=tuple(labels),
            class_counts=tuple(int(c) for c in class_counts),
            confidence=Histogram(
                tuple(float(e) for e in conf_edges), tuple(int(c) for c in confidence)
            ),
        )

    @classmethod
    def from_json(cls, value: Any, where: str = "reference") -> ReferenceStats:
        """Parse and check the document (edges increasing, count vectors the right length).

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(value, where, {"n", "features", "classes", "confidence"})
        n = positive_int(obj, "n", where)
        features = []
        for i, item in enumerate(list_of(obj, "features", dict, where)):
            at = f"{where}.features[{i}]"
            f = exact_fields(item, at, {"name", "edges", "counts", "mean", "std"})
            edges, counts = _histogram(f, at)
            features.append(
                FeatureReference(
                    safe_name(f["name"], f"{at}.name"),
                    edges,
                    counts,
                    field(f, "mean", float, at),
                    field(f, "std", float, at),
                )
            )
        classes = exact_fields(obj["classes"], f"{where}.classes", {"labels", "counts"})
        labels = tuple(list_of(classes, "labels", str, f"{where}.classes"))
        class_counts = tuple(list_of(classes, "counts", int, f"{where}.classes"))
        if len(labels) != len(class_counts):
            raise ValidationError(f"{where}.classes: labels and counts differ in length")
        conf = exact_fields(obj["confidence"], f"{where}.confidence", {"edges", "counts"})
        confidence = Histogram(*_histogram(conf, f"{where}.confidence"))
        return cls(n, tuple(features), labels, class_counts, confidence)


def _histogram(obj: dict[str, Any], where: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    edges = check_edges(list_of(obj, "edges", float, where), f"{where}.edges")
    counts = list_of(obj, "counts", int, where)
    if len(counts) != n_counts(edges):
        raise ValidationError(
            f"{where}.counts: {len(edges)} edges need {n_counts(edges)} counts, got {len(counts)}"
        )
    if any(c < 0 for c in counts):
        raise ValidationError(f"{where}.counts: counts cannot be negative")
    return tuple(float(e) for e in edges), tuple(counts)
