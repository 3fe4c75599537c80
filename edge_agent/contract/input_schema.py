"""The input schema a bundle ships: the input tensor, its channels' names and valid
ranges, and the NaN policy.

The agent validates every prediction request against it (issue: inference): wrong
shapes are refused, out-of-range values and NaNs are accepted or refused per the
policy and counted either way.

A tabular model takes ``[n]`` features per sample: ``features`` names them (the
document has no ``tensor`` field, as before it existed). Any other input (``[T, C]``
time series, ``[H, W, C]`` images, ``[frames, mel]`` spectrograms) is described by
``tensor``: ``{"shape": [...], "channel_axis": k}`` (the sample's shape without the
batch dimension, and which of its axes holds the channels); ``features`` then names the
channels along that axis and gives each its valid range, which applies to every value
of that channel. Such inputs are monitored through per-sample summaries of each channel
(:data:`SUMMARIES`: mean, standard deviation and energy over the other axes, see
:meth:`InputSchema.summarize`), one value per sample like a tabular feature, so the
window's histograms and the drift test count independent samples.

``output_kind`` (optional; absent means ``classification``, as before it existed) says
what the outputs are: ``classification`` (class probabilities: predicted classes and
top-1 confidences are monitored, and the label-free accuracy estimate applies),
``regression`` (one or more real values), ``score`` (an anomaly score) or
``multilabel`` (independent per-label probabilities). For the last three, each output
``labels[i]`` is monitored as one more value per sample, ``out.<label>``
(:attr:`InputSchema.monitored_names`), binned over its reference values like an input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from edge_agent.contract.fields import exact_fields, field, list_of, safe_name
from edge_agent.errors import ValidationError

Policy = Literal["accept", "refuse"]
_POLICIES: Final = ("accept", "refuse")
#: Per-sample summaries of each channel of a tensor input, in monitoring order:
#: mean, standard deviation (population) and energy (mean square) over the channel's
#: positions in one sample.
SUMMARIES: Final = ("mean", "std", "energy")
OutputKind = Literal["classification", "regression", "score", "multilabel"]
#: What a model's outputs are (see :attr:`InputSchema.output_kind`).
OUTPUT_KINDS: Final = ("classification", "regression", "score", "multilabel")
#: Prefix of the monitored names of a non-classification model's outputs.
OUTPUT_PREFIX: Final = "out."
#: Largest rank of a sample EdgeFleet serves (the batch dimension not counted).
MAX_RANK: Final = 6


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature: its name, its valid range (``None`` = unbounded) and whether
    it is discrete (a code or a count: the hub then bins it one bin per value)."""

    name: str
    min: float | None = None
    max: float | None = None
    discrete: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (``discrete`` only when set, so schemas written before
        the field existed keep their bytes)."""
        doc: dict[str, Any] = {"name": self.name, "min": self.min, "max": self.max}
        if self.discrete:
            doc["discrete"] = True
        return doc


@dataclass(frozen=True)
class InputSchema:
    """Names and ranges of the model's input features, and output labels."""

    features: tuple[FeatureSpec, ...]
    labels: tuple[str, ...] = ()
    out_of_range: Policy = "accept"
    nan: Policy = "refuse"
    #: The sample's shape for a tensor input; ``()`` for tabular ``[len(features)]``.
    shape: tuple[int, ...] = ()
    #: The axis of :attr:`shape` holding the channels (0 for tabular).
    channel_axis: int = 0
    #: What the outputs are; None (undeclared) serves as ``classification``.
    output_kind: OutputKind | None = None
    #: For a ``score`` model, the score at or above which a sample is an anomaly: the
    #: hub reports the exceedance rate (None: no rate).
    score_threshold: float | None = None

    def __post_init__(self) -> None:
        """Normalise a rank-1 tensor to tabular and check the tensor description.

        Raises:
            ValidationError: see :func:`check_tensor`.
        """
        if self.shape:
            axis = check_tensor(self.shape, self.channel_axis, len(self.features), "schema")
            if len(self.shape) == 1:
                object.__setattr__(self, "shape", ())
                axis = 0
            object.__setattr__(self, "channel_axis", axis)
        elif self.channel_axis not in (0, -1):
            raise ValidationError("schema: a tabular input has only channel axis 0")
        else:
            object.__setattr__(self, "channel_axis", 0)
        if self.output_kind is not None and self.output_kind not in OUTPUT_KINDS:
            raise ValidationError(
                f"schema.output_kind: {self.output_kind!r} is not one of {OUTPUT_KINDS}"
            )
        if self.score_threshold is not None and (
            self.output_kind != "score" or not np.isfinite(self.score_threshold)
        ):
            raise ValidationError(
                "schema.score_threshold: a finite number, for output_kind score only"
            )

    @property
    def output_cut(self) -> float | None:
        """The output value the hub reports the share at or above: 0.5 for multi-label
        (the positive rate), the score threshold for a score, else None."""
        if self.kind == "multilabel":
            return 0.5
        return self.score_threshold if self.kind == "score" else None

    @property
    def kind(self) -> OutputKind:
        """The output kind, ``classification`` when undeclared."""
        return self.output_kind or "classification"

    @property
    def outputs_monitored(self) -> bool:
        """Whether output values are monitored per sample (every kind but classification)."""
        return self.kind != "classification"

    @property
    def names(self) -> tuple[str, ...]:
        """Feature (channel) names in input order."""
        return tuple(f.name for f in self.features)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, without the batch dimension."""
        return self.shape or (len(self.features),)

    @property
    def is_tabular(self) -> bool:
        """Whether samples are flat ``[n]`` feature vectors."""
        return not self.shape

    @property
    def monitored_names(self) -> tuple[str, ...]:
        """Names of the values monitored per sample: the features of a tabular input,
        ``<channel>.<summary>`` for each channel and :data:`SUMMARIES` otherwise."""
        names = (
            self.names
            if self.is_tabular
            else tuple(f"{c}.{s}" for c in self.names for s in SUMMARIES)
        )
        if self.outputs_monitored:
            names += tuple(f"{OUTPUT_PREFIX}{label}" for label in self.labels)
        return names

    def monitor(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """The values a window counts for a batch ``x [B, *sample_shape]`` with outputs
        ``p [B, C]``: :meth:`summarize` of ``x``, then ``p`` when outputs are monitored
        (``[B, len(monitored_names)]``, float64)."""
        seen = self.summarize(x).astype(np.float64, copy=False)
        if not self.outputs_monitored:
            return seen
        return np.concatenate([seen, np.asarray(p, dtype=np.float64)], axis=1)

    def channels_last(self, x: np.ndarray) -> np.ndarray:
        """A batch ``[B, *sample_shape]`` as rows of channel values ``[B * positions, C]``
        (a view when the channel axis is already last)."""
        if self.is_tabular:
            return x.reshape(-1, len(self.features))
        return np.moveaxis(x, 1 + self.channel_axis, -1).reshape(-1, len(self.features))

    def summarize(self, x: np.ndarray) -> np.ndarray:
        """The monitored values of a batch ``[B, *sample_shape]``: itself, flattened, for a
        tabular input; else ``[B, C * 3]`` float64, each channel's mean, standard
        deviation and energy over its positions in the sample (NaN where the channel
        holds a NaN)."""
        if self.is_tabular:
            return x.reshape(x.shape[0], -1)
        b, c = x.shape[0], len(self.features)
        v = self.channels_last(x.astype(np.float64, copy=False)).reshape(b, -1, c)
        mean = v.mean(axis=1)
        energy = np.einsum("bpc,bpc->bc", v, v) / v.shape[1]
        std = np.sqrt(np.maximum(energy - mean * mean, 0.0))
        return np.stack([mean, std, energy], axis=2).reshape(b, c * len(SUMMARIES))

    def channel_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each value's valid range as float32 arrays of :attr:`sample_shape` (the
        channel's range at every position; -inf/inf where unbounded)."""
        lo = np.array([-np.inf if f.min is None else f.min for f in self.features], np.float32)
        hi = np.array([np.inf if f.max is None else f.max for f in self.features], np.float32)
        if self.is_tabular:
            return lo, hi
        shape = [1] * len(self.shape)
        shape[self.channel_axis] = len(self.features)
        return (
            np.ascontiguousarray(np.broadcast_to(lo.reshape(shape), self.shape)),
            np.ascontiguousarray(np.broadcast_to(hi.reshape(shape), self.shape)),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document (``tensor`` only for a tensor input, so a tabular
        schema keeps the bytes it had before the field existed)."""
        doc: dict[str, Any] = {
            "features": [f.to_json() for f in self.features],
            "labels": list(self.labels),
            "out_of_range": self.out_of_range,
            "nan": self.nan,
        }
        if self.shape:
            doc["tensor"] = {"shape": list(self.shape), "channel_axis": self.channel_axis}
        if self.output_kind is not None:
            doc["output_kind"] = self.output_kind
        if self.score_threshold is not None:
            doc["score_threshold"] = self.score_threshold
        return doc

    @classmethod
    def from_json(cls, value: Any, where: str = "schema") -> InputSchema:
        """Parse and check the document.

        Raises:
            ValidationError: malformed, duplicate names, min > max, or a ``tensor``
                whose shape or channel axis does not fit the channels named.
        """
        obj = exact_fields(
            value,
            where,
            {"features", "labels", "out_of_range", "nan"},
            frozenset({"tensor", "output_kind", "score_threshold"}),
        )
        features = []
        for i, item in enumerate(list_of(obj, "features", dict, where)):
            at = f"{where}.features[{i}]"
            f = exact_fields(item, at, {"name", "min", "max"}, frozenset({"discrete"}))
            lo = None if f["min"] is None else field(f, "min", float, at)
            hi = None if f["max"] is None else field(f, "max", float, at)
            if lo is not None and hi is not None and lo > hi:
                raise ValidationError(f"{at}: min {lo} is above max {hi}")
            discrete = field(f, "discrete", bool, at) if "discrete" in f else False
            features.append(FeatureSpec(safe_name(f["name"], f"{at}.name"), lo, hi, discrete))
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValidationError(f"{where}.features: names must be unique")
        if not features:
            raise ValidationError(f"{where}.features: at least one feature is needed")
        policies = {}
        for key in ("out_of_range", "nan"):
            policy = field(obj, key, str, where)
            if policy not in _POLICIES:
                raise ValidationError(f"{where}.{key}: {policy!r} is not one of {_POLICIES}")
            policies[key] = policy
        shape: tuple[int, ...] = ()
        axis = 0
        if "tensor" in obj:
            at = f"{where}.tensor"
            tensor = exact_fields(obj["tensor"], at, {"shape", "channel_axis"})
            shape = tuple(list_of(tensor, "shape", int, at))
            axis = check_tensor(shape, field(tensor, "channel_axis", int, at), len(features), at)
        kind = None
        if "output_kind" in obj:
            kind = field(obj, "output_kind", str, where)
            if kind not in OUTPUT_KINDS:
                raise ValidationError(f"{where}.output_kind: {kind!r} is not one of {OUTPUT_KINDS}")
        threshold = (
            field(obj, "score_threshold", float, where) if "score_threshold" in obj else None
        )
        return cls(
            score_threshold=threshold,
            output_kind=kind,  # type: ignore[arg-type]
            shape=shape,
            channel_axis=axis,
            features=tuple(features),
            labels=tuple(list_of(obj, "labels", str, where)),
            out_of_range=policies["out_of_range"],  # type: ignore[arg-type]
            nan=policies["nan"],  # type: ignore[arg-type]
        )


def check_tensor(shape: tuple[int, ...], axis: int, n_channels: int, where: str) -> int:
    """Check a sample shape and its channel axis against ``n_channels`` named channels;
    returns the axis, non-negative.

    Raises:
        ValidationError: the shape is empty, too deep or has a dimension < 1 (or a
            bool), the axis does not exist, or its size is not ``n_channels``.
    """
    if not 1 <= len(shape) <= MAX_RANK or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
    ):
        raise ValidationError(
            f"{where}.shape: {list(shape)} must be 1 to {MAX_RANK} dimensions of at least 1"
        )
    if isinstance(axis, bool) or not -len(shape) <= axis < len(shape):
        raise ValidationError(
            f"{where}.channel_axis: axis {axis} does not exist in shape {list(shape)}"
        )
    axis %= len(shape)
    if shape[axis] != n_channels:
        raise ValidationError(
            f"{where}: {n_channels} channels are named, but axis {axis} of shape "
            f"{list(shape)} has {shape[axis]}"
        )
    return axis


def nan_message(names: tuple[str, ...], x: np.ndarray) -> str:
    """The one-line error for inputs ``x [batch, features]`` (or ``[features]``) holding
    NaN the schema refuses, naming the features that do."""
    rows = np.asarray(x, dtype=np.float64).reshape(-1, len(names))
    bad = np.flatnonzero(np.isnan(rows).any(axis=0))
    listed = ", ".join(names[i] for i in bad)
    return f"inputs contain NaN, which this model's schema refuses: {listed}"


def out_of_range_message(
    names: tuple[str, ...], lo: np.ndarray, hi: np.ndarray, x: np.ndarray
) -> str:
    """The one-line error for inputs ``x [batch, features]`` outside ``[lo, hi]``,
    naming the features that are."""
    bad = np.flatnonzero(((x < lo) | (x > hi)).any(axis=0))
    return f"inputs out of the schema's valid range: {', '.join(names[i] for i in bad)}"
