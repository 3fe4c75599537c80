"""Reference statistics a bundle ships for drift: fixed bins and their reference counts.

Per numeric feature: bin edges from reference quantiles and the reference counts in
them (see :mod:`edge_agent.contract.histogram` for the layout); the reference class
distribution; and the top-1 confidence histogram. Devices count live data into the
same bins, so the hub can compare merged counts with these exactly.

Format versions (the document's ``format`` field; absent means 1):

- **1**: edges at plain reference quantiles (:func:`~edge_agent.contract.histogram.quantile_edges`:
  underflow/overflow always empty in the reference, tied quantiles merged).
- **2**: edges by :func:`~edge_agent.contract.histogram.reference_edges` (tails with reference
  mass, one bin per value of discrete features, heavy values in their own bin), and
  optionally a ``calibration`` map (:mod:`edge_agent.contract.calibration`) for label-free
  accuracy estimates. The layout of the counts is the same, so devices count both
  formats with the same code. Optionally ``output_kind`` (format 2, written only when
  not ``classification``): the model's outputs are then among the features
  (``out.<label>``, see :mod:`edge_agent.contract.input_schema`), and the hub tests
  neither the predicted classes nor the confidences and estimates no accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from edge_agent.contract.calibration import Calibration
from edge_agent.contract.fields import exact_fields, field, list_of, positive_int, safe_name
from edge_agent.contract.histogram import check_edges, count, n_counts, reference_edges
from edge_agent.contract.input_schema import OUTPUT_KINDS, OutputKind
from edge_agent.errors import ValidationError

#: Top-1 confidence bins: ten of width 0.1.
DEFAULT_CONFIDENCE_EDGES: Final = tuple(float(e) for e in np.linspace(0.0, 1.0, 11))
#: The format :meth:`ReferenceStats.from_data` writes; :data:`FORMATS` are read.
FORMAT: Final = 2
FORMATS: Final = (1, 2)


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
    format: int = 1
    calibration: Calibration | None = None
    output_kind: OutputKind = "classification"
    #: A tensor input's per-channel bins for every value at every position, with the
    #: reference's counts (format 2; empty for tabular inputs and older bundles).
    channels: tuple[Histogram, ...] = ()
    #: The channels' names, in the order of :attr:`channels`.
    channel_names: tuple[str, ...] = ()
    #: The output value whose exceedance the hub reports (0.5 for multi-label, a score's
    #: threshold); an edge of every ``out.*`` feature (format 2; None: no rate).
    output_cut: float | None = None

    @property
    def classification(self) -> bool:
        """Whether the outputs are class probabilities (predicted classes, confidences
        and the accuracy estimate apply)."""
        return self.output_kind == "classification"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document (a format-1 document has no ``format`` field, so an
        old bundle's reference serialises to the bytes it was read from)."""
        doc: dict[str, Any] = {
            "n": self.n,
            "features": [f.to_json() for f in self.features],
            "classes": {"labels": list(self.labels), "counts": list(self.class_counts)},
            "confidence": self.confidence.to_json(),
        }
        if self.format != 1:
            doc["format"] = self.format
        if self.calibration is not None:
            doc["calibration"] = self.calibration.to_json()
        if self.output_kind != "classification":
            doc["output_kind"] = self.output_kind
        if self.output_cut is not None:
            doc["output_cut"] = self.output_cut
        if self.channels:
            doc["channels"] = [
                {"name": name, **h.to_json()}
                for name, h in zip(self.channel_names, self.channels, strict=True)
            ]
        return doc

    def with_channels(
        self, names: Sequence[str], values: np.ndarray, n_bins: int
    ) -> ReferenceStats:
        """This reference with per-channel value bins (format 2) from ``values``
        ``[values, channels]``: every value at every position of the reference samples.

        Raises:
            ValidationError: a channel has no finite value, or ``n_bins`` < 1.
        """
        hists = []
        for j, name in enumerate(names):
            try:
                edges = reference_edges(values[:, j], n_bins, False)
            except ValidationError as exc:
                raise ValidationError(f"reference channel {name}: {exc}") from exc
            hists.append(
                Histogram(
                    tuple(float(e) for e in edges),
                    tuple(int(c) for c in count(edges, values[:, j])),
                )
            )
        return replace(
            self, format=max(self.format, 2), channels=tuple(hists), channel_names=tuple(names)
        )

    def with_calibration(self, calibration: Calibration) -> ReferenceStats:
        """This reference with ``calibration`` attached (format 2).

        Raises:
            ValidationError: the map's bins are not this reference's confidence bins.
        """
        if calibration.edges != self.confidence.edges:
            raise ValidationError("calibration: its bins are not the confidence histogram's")
        return replace(self, format=max(self.format, 2), calibration=calibration)

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
        discrete: Sequence[bool] | None = None,
        output_kind: OutputKind = "classification",
    ) -> ReferenceStats:
        """Statistics of reference inputs ``x [n, F]`` and the model's outputs ``probs [n, C]``:
        bins per feature (:func:`~edge_agent.contract.histogram.reference_edges`; ``discrete``
        flags features declared discrete), predicted-class counts and a top-1
        confidence histogram. Writes format :data:`FORMAT`.

        Raises:
            ValidationError: a feature has no finite value, ``n_bins`` < 1, or a declared
                discrete feature has too many distinct values.
        """
        flags = [False] * len(names) if discrete is None else list(discrete)
        if len(flags) != len(names):
            raise ValidationError("reference: one discrete flag per feature is needed")
        features = []
        for j, name in enumerate(names):
            column = x[:, j]
            try:
                edges = reference_edges(column, n_bins, flags[j])
            except ValidationError as exc:
                raise ValidationError(f"reference feature {name}: {exc}") from exc
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
            format=FORMAT,
            output_kind=output_kind,
        )

    @classmethod
    def from_json(cls, value: Any, where: str = "reference") -> ReferenceStats:
        """Parse and check the document (edges increasing, count vectors the right length).

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(
            value,
            where,
            {"n", "features", "classes", "confidence"},
            frozenset({"format", "calibration", "output_kind", "channels", "output_cut"}),
        )
        version = field(obj, "format", int, where) if "format" in obj else 1
        if version not in FORMATS:
            raise ValidationError(f"{where}.format: {version} is not one of {FORMATS}")
        for key in ("calibration", "output_kind", "channels", "output_cut"):
            if version == 1 and key in obj:
                raise ValidationError(f"{where}.{key}: needs format 2")
        kind = field(obj, "output_kind", str, where) if "output_kind" in obj else "classification"
        if kind not in OUTPUT_KINDS:
            raise ValidationError(f"{where}.output_kind: {kind!r} is not one of {OUTPUT_KINDS}")
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
        calibration = None
        if "calibration" in obj:
            calibration = Calibration.from_json(obj["calibration"], f"{where}.calibration")
            if calibration.edges != confidence.edges:
                raise ValidationError(
                    f"{where}.calibration.edges: not the confidence histogram's edges"
                )
            if len(calibration.class_means) != len(labels) or len(
                calibration.class_means[0]
            ) != len(features):
                raise ValidationError(
                    f"{where}.calibration: its classes and features do not fit the reference"
                )
        names: list[str] = []
        channels = []
        for i, item in enumerate(
            list_of(obj, "channels", dict, where) if "channels" in obj else []
        ):
            at = f"{where}.channels[{i}]"
            c = exact_fields(item, at, {"name", "edges", "counts"})
            names.append(safe_name(c["name"], f"{at}.name"))
            channels.append(Histogram(*_histogram(c, at)))
        return cls(
            n,
            tuple(features),
            labels,
            class_counts,
            confidence,
            version,
            calibration,
            kind,  # type: ignore[arg-type]
            tuple(channels),
            tuple(names),
            field(obj, "output_cut", float, where) if "output_cut" in obj else None,
        )


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
