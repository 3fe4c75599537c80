"""The input schema a bundle ships: feature names, valid ranges, and the NaN policy.

The agent validates every prediction request against it (issue: inference): wrong
shapes are refused, out-of-range values and NaNs are accepted or refused per the
policy and counted either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from edge_agent.contract.fields import exact_fields, field, list_of, safe_name
from edge_agent.errors import ValidationError

Policy = Literal["accept", "refuse"]
_POLICIES: Final = ("accept", "refuse")


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

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in input order."""
        return tuple(f.name for f in self.features)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document."""
        return {
            "features": [f.to_json() for f in self.features],
            "labels": list(self.labels),
            "out_of_range": self.out_of_range,
            "nan": self.nan,
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "schema") -> InputSchema:
        """Parse and check the document.

        Raises:
            ValidationError: malformed, duplicate names, or min > max.
        """
        obj = exact_fields(value, where, {"features", "labels", "out_of_range", "nan"})
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
        return cls(
            features=tuple(features),
            labels=tuple(list_of(obj, "labels", str, where)),
            out_of_range=policies["out_of_range"],  # type: ignore[arg-type]
            nan=policies["nan"],  # type: ignore[arg-type]
        )


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
