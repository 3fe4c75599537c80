"""The metrics window: the wire type every device reports, its parsing and checks, and
the exact algebra over it (:func:`merge_windows`, :func:`subtract_windows`).

A window holds, for one model version and role over one span of time, per-feature
histograms in the bins the bundle's reference statistics fix (layout of
:mod:`edge_agent.contract.histogram`), count/mean/M2/min/max of each feature,
predicted-class counts, a top-1 confidence histogram with the exact sum of the
confidences in each of its bins (for the hub's label-free accuracy estimate), an
invocation-latency histogram, error counters and, for a shadow model, how often it
agreed with the champion. The agent's :class:`~edge_agent.inference.accumulator.
WindowAccumulator` fills one; the hub merges them.

Everything in a window is a count or a moment, so :func:`merge_windows` is exact
(counts add; mean and M2 combine with Chan's parallel formula) and
:func:`subtract_windows` undoes it. The hub merges first and computes drift scores on
the merged counts, never averaging scores (see ``drift.md``).

Invariants of a window with ``n`` predictions (checked by :meth:`MetricsWindow.from_json`):

- every feature histogram sums to ``n`` (NaN in the last bin, +-inf in under/overflow);
- a feature's moment ``count`` covers finite values of magnitude <= :data:`MOMENT_LIMIT`
  only, so it is at most ``n`` minus the NaN bin;
- the confidence histogram sums to ``n``; ``sum(class_counts)`` plus the confidence NaN
  bin is ``n`` (a probability row holding NaN has no predicted class);
- ``confidence_sum`` (optional: windows of agents before it lack it) has one finite sum
  per confidence bin: the sum of the finite top-1 confidences counted there, so 0 for
  an empty bin and for the NaN bin;
- ``typicality_n`` / ``typicality_sum`` (optional, together; only for bundles whose
  reference has a calibration map): how many predictions had all inputs finite and a
  finite *typicality energy* (the squared whitened projections of the input on the
  map's weak principal directions, see :mod:`edge_agent.contract.calibration`), and the sum of
  those energies: ``typicality_n <= n``, the sum finite, >= 0, and 0 when the count is;
- the latency histogram counts *invocations* (one per ``WindowAccumulator.record``
  call), so it sums to at most ``n``;
- ``agreed <= compared``;
- ``channel_values`` (optional; only for a tensor input whose reference has per-channel
  value bins): per channel, a histogram of *every value at every position* of the
  samples, over the reference's channel bins, with ``positions`` values per channel in
  one sample: each channel histogram sums to ``n * positions``, not ``n`` (the values of
  one sample are not independent: the hub shows effect sizes on these, and tests the
  per-sample summaries, see ``docs/drift.md``). Merges keep them only when every part
  has them.

Wire form (compact: features as columns, counts as plain integer lists)::

    {"model": "m", "version": 3, "role": "active", "start": 1.7e9, "end": 1.7e9, "n": 120,
     "features": {"counts": [[...], ...], "count": [...], "mean": [...], "m2": [...],
                  "min": [... | null], "max": [... | null], "out_of_range": [...]},
     "classes": [...], "confidence": [...], "latency": [...],
     "errors": {"invoke_error": 2}, "compared": 0, "agreed": 0,
     "confidence_sum": [0.0, ..., 101.7, 0.0], "typicality_n": 120, "typicality_sum": 251.3}

Which predictions a window counts: every input row the schema accepted and the model
ran on, also when its output was NaN or infinite (that row has no predicted class and
a NaN confidence, and is an error ``nan_output`` too), so accepted NaN inputs show in
their features' NaN bins. Rows the schema refused (``invalid_input``) and invocations
the runtime failed (``invoke_error``) are errors only.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, ClassVar, Final, Literal, NamedTuple, cast

import numpy as np

try:  # the hub installs it, a device may not (then the checks are item by item)
    import orjson
except ImportError:  # pragma: no cover - exercised in the tflite-runtime environment
    orjson = None  # type: ignore[assignment]

from edge_agent.contract.fields import MAX_INT, as_object, exact_fields, is_safe_name, safe_name
from edge_agent.contract.fields import field as get
from edge_agent.contract.histogram import n_counts
from edge_agent.contract.reference import ReferenceStats
from edge_agent.errors import ValidationError

Role = Literal["active", "shadow"]
ROLES: Final[tuple[str, ...]] = ("active", "shadow")

#: Invocation-latency bin edges in milliseconds: 4 per decade, 10 us .. 10 s. Part of
#: the wire format: windows counted over other edges do not merge with these.
LATENCY_EDGES_MS: Final[tuple[float, ...]] = (
    0.01, 0.0178, 0.0316, 0.0562,
    0.1, 0.178, 0.316, 0.562,
    1.0, 1.78, 3.16, 5.62,
    10.0, 17.8, 31.6, 56.2,
    100.0, 178.0, 316.0, 562.0,
    1000.0, 1780.0, 3160.0, 5620.0,
    10000.0,
)  # fmt: skip
#: Values beyond this magnitude are binned (overflow/underflow) but left out of the
#: moments, so M2 stays finite and the window stays valid JSON.
MOMENT_LIMIT: Final = 1e100
#: At most this many distinct error kinds in one window.
MAX_ERROR_KINDS: Final = 64
#: Error kinds whose rows are also predictions (counted in ``n``): a rate over
#: attempts adds only the other kinds to ``n``.
ERRORS_IN_N: Final = frozenset({"nan_output"})

_LATENCY_EDGES: Final = np.asarray(LATENCY_EDGES_MS, dtype=np.float64)
_WINDOW_FIELDS: Final = {
    "model", "version", "role", "start", "end", "n", "features",
    "classes", "confidence", "latency", "errors", "compared", "agreed",
}  # fmt: skip
_TYPICALITY_FIELDS: Final = frozenset({"typicality_n", "typicality_sum"})
_OPTIONAL_WINDOW_FIELDS: Final = (
    frozenset({"confidence_sum", "channel_values"}) | _TYPICALITY_FIELDS
)
#: The key sets the fast path takes (anything else: the checked path).
_FAST_KEY_SETS: Final = (
    _WINDOW_FIELDS,
    _WINDOW_FIELDS | {"confidence_sum"},
    _WINDOW_FIELDS | {"confidence_sum"} | _TYPICALITY_FIELDS,
)
_FEATURE_FIELDS: Final = {"counts", "count", "mean", "m2", "min", "max", "out_of_range"}
_NUMERIC_KINDS: Final = "biuf"
_INT_ONLY: Final = frozenset({int})
_FLOAT_ONLY: Final = frozenset({float})
_LIST_ONLY: Final = frozenset({list})
_NUMBERS: Final = frozenset({int, float})
_NUMBERS_OR_NONE: Final = frozenset({int, float, type(None)})
_N_LATENCY: Final = len(LATENCY_EDGES_MS) + 2
_new_tuple: Final = tuple.__new__
_DIGITS_AND_COMMAS: Final = b"0123456789,"
_COUNT_TEXT: Final = b"0123456789,[]"
_new_object: Final = object.__new__
_set_attribute: Final = object.__setattr__


class ChannelValues(NamedTuple):
    """Per-channel histograms of every value at every position (see the module doc):
    ``positions`` values per channel in one sample, ``counts`` one vector per channel."""

    positions: int
    counts: tuple[tuple[int, ...], ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"positions": self.positions, "counts": [list(c) for c in self.counts]}


class FeatureWindow(NamedTuple):
    """One feature in one window: bin counts, moments of its finite values, range misses.

    ``min``/``max`` are None exactly when ``count`` is 0 (then ``mean`` and ``m2`` are 0).
    A named tuple: the hub builds ten of these per window it ingests, thousands a second.
    """

    counts: tuple[int, ...]
    count: int  # type: ignore[assignment]  # shadows tuple.count, which nothing here calls
    mean: float
    m2: float
    min: float | None
    max: float | None
    out_of_range: int

    @property
    def nan(self) -> int:
        """How many values were NaN (the histogram's last bin)."""
        return self.counts[-1]

    @property
    def variance(self) -> float:
        """Population variance of the finite values (0 when there are none)."""
        return self.m2 / self.count if self.count else 0.0


@dataclass(frozen=True)
class MetricsWindow:
    """Everything one model counted over one time window; merges exactly with its peers.

    Bin edges are not carried: they are in the bundle's reference statistics (see
    :meth:`check_reference`) and :data:`LATENCY_EDGES_MS`.
    """

    model_name: str
    model_version: int
    role: Role
    start: float
    end: float
    n: int
    features: tuple[FeatureWindow, ...]
    class_counts: tuple[int, ...]
    confidence: tuple[int, ...]
    latency: tuple[int, ...]
    errors: dict[str, int] = field(default_factory=dict)
    compared: int = 0
    agreed: int = 0
    #: Per confidence bin, the sum of the finite top-1 confidences counted there; None
    #: for windows of agents that did not send it (then merges drop it).
    confidence_sum: tuple[float, ...] | None = None
    #: Predictions with a finite typicality energy, and the sum of their energies
    #: (see the module doc); None for windows without them (then merges drop them).
    typicality_n: int | None = None
    typicality_sum: float | None = None
    #: Per-channel value histograms over all positions (tensor inputs; see the module
    #: doc); None for windows without them (then merges drop them).
    channel_values: ChannelValues | None = None
    #: The document :meth:`from_wire` parsed, when it is exactly this window's JSON form
    #: (set on the instance; not a field: not compared, copied or shown).
    _wire: ClassVar[dict[str, Any] | None] = None

    @property
    def key(self) -> tuple[str, int, str]:
        """What must be equal for two windows to merge: model name, version and role."""
        return (self.model_name, self.model_version, self.role)

    @property
    def shape(self) -> tuple[tuple[int, ...], int, int, int]:
        """Lengths of the count vectors: per feature, classes, confidence, latency."""
        return (
            tuple(len(f.counts) for f in self.features),
            len(self.class_counts),
            len(self.confidence),
            len(self.latency),
        )

    def check_reference(self, reference: ReferenceStats) -> None:
        """Check that this window was counted over ``reference``'s bins.

        Raises:
            ValidationError: a count vector's length does not fit the reference, or a
                confidence sum lies outside what its bin's edges allow.
        """
        expected = (
            tuple(n_counts(f.edges) for f in reference.features),
            len(reference.class_counts),
            n_counts(reference.confidence.edges),
            len(LATENCY_EDGES_MS) + 2,
        )
        if self.shape != expected:
            raise ValidationError(
                f"window {self.model_name} v{self.model_version}: count lengths "
                f"{self.shape} do not fit the reference {expected}"
            )
        cv = self.channel_values
        if cv is not None:
            bins = tuple(n_counts(c.edges) for c in reference.channels)
            if tuple(len(c) for c in cv.counts) != bins:
                raise ValidationError(
                    f"window {self.model_name} v{self.model_version}: channel value counts "
                    f"{tuple(len(c) for c in cv.counts)} do not fit the reference's "
                    f"channel bins {bins}"
                )
        sums = self.confidence_sum
        if sums is not None:
            e = reference.confidence.edges
            for b in range(1, len(e)):  # interior bins: [e[b-1], e[b]]
                n_b, s_b = self.confidence[b], sums[b]
                slack = 1e-9 * max(1.0, abs(s_b))
                if not n_b * e[b - 1] - slack <= s_b <= n_b * e[b] + slack:
                    raise ValidationError(
                        f"window {self.model_name} v{self.model_version}: confidence sum "
                        f"{s_b} of bin {b} does not fit {n_b} values in [{e[b - 1]}, {e[b]}]"
                    )

    def to_json(self) -> dict[str, Any]:
        """Return the compact JSON form (see the module doc)."""
        fs = self.features
        return {
            "model": self.model_name,
            "version": self.model_version,
            "role": self.role,
            "start": self.start,
            "end": self.end,
            "n": self.n,
            "features": {
                "counts": [list(f.counts) for f in fs],
                "count": [f.count for f in fs],
                "mean": [f.mean for f in fs],
                "m2": [f.m2 for f in fs],
                "min": [f.min for f in fs],
                "max": [f.max for f in fs],
                "out_of_range": [f.out_of_range for f in fs],
            },
            "classes": list(self.class_counts),
            "confidence": list(self.confidence),
            "latency": list(self.latency),
            "errors": {k: v for k, v in sorted(self.errors.items()) if v},
            "compared": self.compared,
            "agreed": self.agreed,
            **(
                {} if self.confidence_sum is None else {"confidence_sum": list(self.confidence_sum)}
            ),
            **(
                {}
                if self.typicality_n is None
                else {"typicality_n": self.typicality_n, "typicality_sum": self.typicality_sum}
            ),
            **(
                {}
                if self.channel_values is None
                else {"channel_values": self.channel_values.to_json()}
            ),
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "window") -> MetricsWindow:
        """Parse and check a window: exact fields and types, counts >= 0, invariants hold.

        Raises:
            ValidationError: malformed or inconsistent (one line naming the field).
        """
        fast = _window_fast(value)
        return fast if fast is not None else _window_checked(value, where)

    @classmethod
    def from_wire(cls, value: Any, where: str = "window") -> MetricsWindow:
        """Like :meth:`from_json`, for a document the caller hands over (freshly parsed
        and never modified afterwards): when it is already exactly the window's JSON
        form, up to key order, the window keeps it for :meth:`wire_json`, so that the
        hub stores what it received without building it again.

        Raises:
            ValidationError: malformed or inconsistent (one line naming the field).
        """
        fast = _window_fast(value)
        if fast is None:
            return _window_checked(value, where)
        # The fast path takes only floats where floats go and no zero error counts, so
        # the document is what to_json() would build, key order aside.
        object.__setattr__(fast, "_wire", value)
        return fast

    def wire_json(self) -> dict[str, Any]:
        """The JSON form (as :meth:`to_json`): the parsed document when :meth:`from_wire`
        kept it (read-only: do not modify it), else a new one."""
        wire = self._wire
        return wire if wire is not None else self.to_json()


def _window_checked(value: Any, where: str) -> MetricsWindow:
    """:meth:`MetricsWindow.from_json` field by field: slower than :func:`_window_fast`,
    but it accepts every valid window and names what is wrong with an invalid one.

    Raises:
        ValidationError: malformed or inconsistent (one line naming the field).
    """
    obj = exact_fields(value, where, _WINDOW_FIELDS, _OPTIONAL_WINDOW_FIELDS)
    role = get(obj, "role", str, where)
    if role not in ROLES:
        raise ValidationError(f"{where}.role: {role!r} is not one of {ROLES}")
    version = get(obj, "version", int, where)
    if not 1 <= version <= MAX_INT:
        raise ValidationError(f"{where}.version: must be from 1 to 2**53, got {version}")
    window = MetricsWindow(
        model_name=safe_name(obj["model"], f"{where}.model"),
        model_version=version,
        role=cast(Role, role),
        start=_finite(obj["start"], f"{where}.start"),
        end=_finite(obj["end"], f"{where}.end"),
        n=_count(obj["n"], f"{where}.n"),
        features=_features_from_json(obj["features"], f"{where}.features"),
        class_counts=_counts(obj["classes"], f"{where}.classes", 1),
        confidence=_counts(obj["confidence"], f"{where}.confidence", 4),
        latency=_counts(obj["latency"], f"{where}.latency", 4),
        errors=_errors_from_json(obj["errors"], f"{where}.errors"),
        compared=_count(obj["compared"], f"{where}.compared"),
        agreed=_count(obj["agreed"], f"{where}.agreed"),
        confidence_sum=(
            _sums(obj["confidence_sum"], f"{where}.confidence_sum")
            if "confidence_sum" in obj
            else None
        ),
        **_typicality_from_json(obj, where),
        channel_values=(
            _channel_values(obj["channel_values"], f"{where}.channel_values")
            if "channel_values" in obj
            else None
        ),
    )
    check_window(window, where)
    return window


def _channel_values(value: Any, where: str) -> ChannelValues:
    obj = exact_fields(value, where, {"positions", "counts"})
    positions = _count(obj["positions"], f"{where}.positions")
    rows = obj["counts"]
    if type(rows) is not list or not rows:
        raise ValidationError(f"{where}.counts: expected a list of count vectors")
    counts = tuple(_counts(r, f"{where}.counts[{i}]", 4) for i, r in enumerate(rows))
    return ChannelValues(positions, counts)


def _typicality_from_json(obj: dict[str, Any], where: str) -> dict[str, Any]:
    present = _TYPICALITY_FIELDS & obj.keys()
    if not present:
        return {}
    if present != _TYPICALITY_FIELDS:
        raise ValidationError(f"{where}: typicality_n and typicality_sum come together")
    return {
        "typicality_n": _count(obj["typicality_n"], f"{where}.typicality_n"),
        "typicality_sum": _finite(obj["typicality_sum"], f"{where}.typicality_sum"),
    }


def check_window(w: MetricsWindow, where: str = "window") -> None:
    """Check a window's invariants (see the module doc).

    Raises:
        ValidationError: one is broken (one line naming it).
    """
    if w.start > w.end:
        raise ValidationError(f"{where}: start {w.start} is after end {w.end}")
    if not w.features:
        raise ValidationError(f"{where}.features: at least one feature is needed")
    if not w.class_counts or len(w.confidence) < 4 or min(w.shape[0]) < 4:
        raise ValidationError(f"{where}: count vectors too short for their bins {w.shape}")
    for i, f in enumerate(w.features):
        problem = _feature_problem(f, w.n)
        if problem is not None:
            raise ValidationError(f"{where}.features[{i}]{problem}")
    if sum(w.confidence) != w.n:
        raise ValidationError(f"{where}.confidence: sum {sum(w.confidence)} is not n = {w.n}")
    if sum(w.class_counts) + w.confidence[-1] != w.n:
        raise ValidationError(f"{where}.classes: sum plus NaN confidences is not n = {w.n}")
    if len(w.latency) != len(LATENCY_EDGES_MS) + 2:
        raise ValidationError(
            f"{where}.latency: expected {len(LATENCY_EDGES_MS) + 2} counts, got {len(w.latency)}"
        )
    if sum(w.latency) > w.n:
        raise ValidationError(f"{where}.latency: more invocations than predictions")
    if w.agreed > w.compared:
        raise ValidationError(f"{where}: agreed {w.agreed} is above compared {w.compared}")
    if len(w.errors) > MAX_ERROR_KINDS:
        raise ValidationError(f"{where}.errors: more than {MAX_ERROR_KINDS} kinds")
    if any(v < 0 for v in w.errors.values()):
        raise ValidationError(f"{where}.errors: counts cannot be negative")
    if w.confidence_sum is not None:
        problem = _sums_problem(w.confidence_sum, w.confidence)
        if problem is not None:
            raise ValidationError(f"{where}.confidence_sum: {problem}")
    problem = _typicality_problem(w.typicality_n, w.typicality_sum, w.n)
    if problem is not None:
        raise ValidationError(f"{where}.typicality: {problem}")
    cv = w.channel_values
    if cv is not None:
        if cv.positions < 1:
            raise ValidationError(f"{where}.channel_values.positions: must be >= 1")
        for i, c in enumerate(cv.counts):
            if sum(c) != w.n * cv.positions:
                raise ValidationError(
                    f"{where}.channel_values.counts[{i}]: sum {sum(c)} is not n x positions "
                    f"= {w.n * cv.positions}"
                )


def _typicality_problem(count: int | None, total: float | None, n: int) -> str | None:
    """What is wrong with a window's typicality count and sum, or None."""
    if count is None or total is None:
        return None if count is None and total is None else "count and sum come together"
    if not 0 <= count <= n:
        return f"count {count} is not from 0 to n = {n}"
    if not math.isfinite(total) or total < 0.0 or (count == 0 and total != 0.0):
        return "the sum must be finite, >= 0, and 0 when the count is"
    return None


def _sums_problem(sums: tuple[float, ...], counts: tuple[int, ...]) -> str | None:
    """What is wrong with per-bin confidence sums for these counts, or None."""
    if len(sums) != len(counts):
        return f"expected {len(counts)} sums (one per confidence bin), got {len(sums)}"
    if not all(map(math.isfinite, sums)):
        return "sums must be finite"
    if sums[-1] != 0.0 or any(s != 0.0 for s, c in zip(sums, counts, strict=True) if c == 0):
        return "an empty bin and the NaN bin sum to 0"
    return None


def _feature_problem(f: FeatureWindow, n: int) -> str | None:
    """What is wrong with one feature of a window of ``n`` predictions (the rest of the
    error line), or None; no message is formatted for a sound feature."""
    if sum(f.counts) != n:
        return f".counts: sum {sum(f.counts)} is not n = {n}"
    if f.count > n - f.nan:
        return f".count: {f.count} is above n minus NaNs"
    if f.out_of_range > n:
        return f".out_of_range: {f.out_of_range} is above n = {n}"
    if f.m2 < 0.0:
        return f".m2: {f.m2} is negative"
    if f.count == 0:
        if f.min is not None or f.max is not None or f.mean != 0.0 or f.m2 != 0.0:
            return ": no finite values, so mean/m2 are 0, min/max null"
    elif f.min is None or f.max is None or f.min > f.max:
        return ": min/max must be numbers with min <= max"
    return None


def merge_windows(a: MetricsWindow, b: MetricsWindow) -> MetricsWindow:
    """Merge two windows of one model exactly: counts add, moments combine (Chan et al.).

    The result spans ``[min(start), max(end)]``.

    Raises:
        ValidationError: the windows differ in model, version, role or count lengths.
    """
    _check_mergeable(a, b, "merge")
    return MetricsWindow(
        model_name=a.model_name,
        model_version=a.model_version,
        role=a.role,
        start=min(a.start, b.start),
        end=max(a.end, b.end),
        n=a.n + b.n,
        features=tuple(
            _merge_feature(fa, fb) for fa, fb in zip(a.features, b.features, strict=True)
        ),
        class_counts=_add(a.class_counts, b.class_counts),
        confidence=_add(a.confidence, b.confidence),
        latency=_add(a.latency, b.latency),
        errors=_combine_errors(a.errors, b.errors, 1),
        compared=a.compared + b.compared,
        agreed=a.agreed + b.agreed,
        confidence_sum=(
            None
            if a.confidence_sum is None or b.confidence_sum is None
            else tuple(map(operator.add, a.confidence_sum, b.confidence_sum))
        ),
        **_combine_typicality(a, b, 1),
        channel_values=_combine_channels(a.channel_values, b.channel_values, 1),
    )


def _combine_channels(
    a: ChannelValues | None, b: ChannelValues | None, sign: int
) -> ChannelValues | None:
    """Channel values of a merge (sign 1) or subtraction (-1): kept only when both
    windows have them.

    Raises:
        ValidationError: they differ in positions or count lengths, or a count would
            go negative.
    """
    if a is None or b is None:
        return None
    if a.positions != b.positions or [len(c) for c in a.counts] != [len(c) for c in b.counts]:
        raise ValidationError("channel values of different positions or bins")
    combine = _add if sign > 0 else _sub
    return ChannelValues(
        a.positions, tuple(combine(x, y) for x, y in zip(a.counts, b.counts, strict=True))
    )


def _combine_typicality(a: MetricsWindow, b: MetricsWindow, sign: int) -> dict[str, Any]:
    """``typicality_n``/``typicality_sum`` of a merge (sign 1) or subtraction (-1):
    kept only when both windows have them."""
    if a.typicality_n is None or b.typicality_n is None:
        return {}
    count = _nonneg(a.typicality_n + sign * b.typicality_n)
    total = (a.typicality_sum or 0.0) + sign * (b.typicality_sum or 0.0)
    return {"typicality_n": count, "typicality_sum": max(0.0, total) if count else 0.0}


def subtract_windows(total: MetricsWindow, part: MetricsWindow) -> MetricsWindow:
    """Remove ``part`` from ``total`` (a merge that contains it): the inverse of a merge.

    Counts subtract; mean and M2 follow the reverse parallel formula (exact up to
    rounding). ``start``, ``end``, ``min`` and ``max`` are kept from ``total``, which
    bounds the rest (min/max become None where no finite value is left).

    Raises:
        ValidationError: the windows differ in model, version, role or count lengths,
            or ``part`` is not contained in ``total`` (a count would go negative).
    """
    _check_mergeable(total, part, "subtract")
    try:
        confidence = _sub(total.confidence, part.confidence)
        sums = None
        if total.confidence_sum is not None and part.confidence_sum is not None:
            sums = tuple(
                t - p if c else 0.0
                for t, p, c in zip(
                    total.confidence_sum, part.confidence_sum, confidence, strict=True
                )
            )
        rest = MetricsWindow(
            model_name=total.model_name,
            model_version=total.model_version,
            role=total.role,
            start=total.start,
            end=total.end,
            n=_nonneg(total.n - part.n),
            features=tuple(
                _subtract_feature(ft, fp)
                for ft, fp in zip(total.features, part.features, strict=True)
            ),
            class_counts=_sub(total.class_counts, part.class_counts),
            confidence=confidence,
            latency=_sub(total.latency, part.latency),
            errors=_combine_errors(total.errors, part.errors, -1),
            compared=_nonneg(total.compared - part.compared),
            agreed=_nonneg(total.agreed - part.agreed),
            confidence_sum=sums,
            **_combine_typicality(total, part, -1),
            channel_values=_combine_channels(total.channel_values, part.channel_values, -1),
        )
        check_window(rest, "subtract")
    except ValidationError as exc:
        raise ValidationError(f"subtract: the part is not contained in the total ({exc})") from exc
    return rest


def _merge_feature(a: FeatureWindow, b: FeatureWindow) -> FeatureWindow:
    count = a.count + b.count
    if b.count == 0:
        mean, m2 = a.mean, a.m2
    elif a.count == 0:
        mean, m2 = b.mean, b.m2
    else:
        delta = b.mean - a.mean
        mean = a.mean + delta * b.count / count
        m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / count
    return FeatureWindow(
        counts=_add(a.counts, b.counts),
        count=count,
        mean=mean,
        m2=m2,
        min=_pick(min, a.min, b.min),
        max=_pick(max, a.max, b.max),
        out_of_range=a.out_of_range + b.out_of_range,
    )


def _subtract_feature(t: FeatureWindow, p: FeatureWindow) -> FeatureWindow:
    rest = _nonneg(t.count - p.count)
    if rest == 0:
        mean, m2 = 0.0, 0.0
    elif p.count == 0:
        mean, m2 = t.mean, t.m2
    else:
        # From mean_t = mean_r + (mean_p - mean_r) * n_p / n_t, solved for mean_r
        # without forming n_t * mean_t (better conditioned when n_r << n_t).
        mean = t.mean - (p.mean - t.mean) * p.count / rest
        delta = p.mean - mean
        m2 = max(0.0, t.m2 - p.m2 - delta * delta * rest * p.count / t.count)
    return FeatureWindow(
        counts=_sub(t.counts, p.counts),
        count=rest,
        mean=mean,
        m2=m2,
        min=t.min if rest else None,
        max=t.max if rest else None,
        out_of_range=_nonneg(t.out_of_range - p.out_of_range),
    )


def _check_mergeable(a: MetricsWindow, b: MetricsWindow, what: str) -> None:
    if a.key != b.key:
        raise ValidationError(f"{what}: windows of {a.key} and {b.key} cannot be combined")
    if a.shape != b.shape:
        raise ValidationError(f"{what}: count lengths differ ({a.shape} vs {b.shape})")


def _pick(
    choose: Callable[[float, float], float], a: float | None, b: float | None
) -> float | None:
    if a is None:
        return b
    return a if b is None else choose(a, b)


def _add(a: Iterable[int], b: Iterable[int]) -> tuple[int, ...]:
    return tuple(map(operator.add, a, b))


def _sub(a: Iterable[int], b: Iterable[int]) -> tuple[int, ...]:
    out = tuple(map(operator.sub, a, b))
    if out and min(out) < 0:
        raise ValidationError("a count would go negative")
    return out


def _nonneg(value: int) -> int:
    if value < 0:
        raise ValidationError("a count would go negative")
    return value


def _combine_errors(a: Mapping[str, int], b: Mapping[str, int], sign: int) -> dict[str, int]:
    out = {}
    for kind in sorted(a.keys() | b.keys()):
        value = _nonneg(a.get(kind, 0) + sign * b.get(kind, 0))
        if value:
            out[kind] = value
    return out


def _finite(value: Any, where: str) -> float:
    try:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ValidationError(f"{where}: expected a finite number")
    except OverflowError:  # an int beyond any float
        raise ValidationError(f"{where}: expected a finite number") from None
    return float(value)


def _all_counts(values: list[Any]) -> bool:
    """Whether every item is an int >= 0 (bool is not a count), for values parsed from
    JSON (where no other int subclass occurs)."""
    if orjson is not None:
        # orjson writes an int >= 0 as bare digits, and anything else with some other
        # character: a sign, a float's "." or "e", true, false, null, a quote, a bracket.
        # Three times cheaper than checking each item's type and the minimum.
        try:
            text = orjson.dumps(values)
        except TypeError:  # not JSON, or an int beyond 64 bits: the item-by-item checks
            return False
        return not text[1:-1].translate(None, _DIGITS_AND_COMMAS)
    return set(map(type, values)) <= _INT_ONLY and (not values or min(values) >= 0)


def _all_finite(values: list[Any]) -> bool:
    """Whether every item is an int or float with a finite float value."""
    if not set(map(type, values)) <= _NUMBERS:
        return False
    try:
        return all(map(math.isfinite, values))
    except OverflowError:
        return False


def _count(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise ValidationError(f"{where}: expected an integer from 0 to 2**53")
    return value


def _counts(value: Any, where: str, min_len: int = 0) -> tuple[int, ...]:
    if type(value) is not list or not set(map(type, value)) <= _INT_ONLY:
        raise ValidationError(f"{where}: expected a list of integers")
    if len(value) < min_len:
        raise ValidationError(f"{where}: expected at least {min_len} counts, got {len(value)}")
    if value and min(value) < 0:
        raise ValidationError(f"{where}: counts cannot be negative")
    return tuple(value)


def _sums(value: Any, where: str) -> tuple[float, ...]:
    if type(value) is not list:
        raise ValidationError(f"{where}: expected a list of numbers")
    return tuple(_finite(v, f"{where}[{i}]") for i, v in enumerate(value))


def _column(obj: Mapping[str, Any], key: str, where: str, n: int) -> list[Any]:
    value = obj[key]
    if type(value) is not list or len(value) != n:
        raise ValidationError(f"{where}.{key}: expected a list of {n} items (one per feature)")
    return value


def _window_fast(obj: Any) -> MetricsWindow | None:
    """The window when it is written as the agents write it, checked with whole-column
    operations in C (the hub's ingest parses thousands a second); None when anything is
    off or merely unusual (ints where floats go, a feature with no finite value), so
    that :func:`_window_checked` names the problem or accepts it. Accepts nothing that
    refuses, and builds the same window: every type and every invariant of
    :func:`check_window` is checked here too."""
    if type(obj) is not dict:
        return None
    keys = obj.keys()
    if keys not in _FAST_KEY_SETS:
        return None
    typ_n, typ_sum = obj.get("typicality_n"), obj.get("typicality_sum")
    if "typicality_n" in keys and (
        type(typ_n) is not int
        or type(typ_sum) is not float
        or type(obj["n"]) is not int
        or _typicality_problem(typ_n, typ_sum, obj["n"]) is not None
    ):
        return None
    if keys == _WINDOW_FIELDS:
        sums = None
    else:
        sums = obj["confidence_sum"]
        if (
            type(sums) is not list
            or set(map(type, sums)) != _FLOAT_ONLY
            or not all(map(math.isfinite, sums))
        ):
            return None  # (lengths and zeros: with the invariants below)
    f = obj["features"]
    if type(f) is not dict or f.keys() != _FEATURE_FIELDS:
        return None
    counts, count, oor = f["counts"], f["count"], f["out_of_range"]
    mean, m2, lo, hi = f["mean"], f["m2"], f["min"], f["max"]
    classes, confidence, latency = obj["classes"], obj["confidence"], obj["latency"]
    n, start, end, version = obj["n"], obj["start"], obj["end"], obj["version"]
    compared, agreed, errors = obj["compared"], obj["agreed"], obj["errors"]
    columns = (counts, count, oor, mean, m2, lo, hi, classes, confidence, latency)
    if set(map(type, columns)) != _LIST_ONLY or set(map(type, counts)) != _LIST_ONLY:
        return None  # (an empty counts list fails the second test)
    if set(map(len, columns[1:7])) != {len(counts)} or min(map(len, counts)) < 4:
        return None
    if not classes or len(confidence) < 4 or len(latency) != _N_LATENCY:
        return None
    if orjson is not None:
        # Every count in one dump (see _all_counts): ints >= 0 are bare digits, and the
        # only lists are the ones checked above (an item that is a list adds a "[").
        try:
            text = orjson.dumps(
                (counts, count, oor, classes, confidence, latency, n, compared, agreed, version)
            )
        except TypeError:
            return None
        if text.translate(None, _COUNT_TEXT) or text.count(b"[") != len(counts) + 7:
            return None
    else:
        ints = [
            *chain.from_iterable(counts), *count, *oor, *classes, *confidence, *latency,
            n, compared, agreed, version,
        ]  # fmt: skip
        if not _all_counts(ints):
            return None
    # Every other count is bounded by n or compared (check_window's invariants below).
    if not 1 <= version <= MAX_INT or n > MAX_INT or compared > MAX_INT:
        return None
    floats = [*mean, *m2, *lo, *hi, start, end]  # min/max null: the slow path
    if set(map(type, floats)) != _FLOAT_ONLY or not all(map(math.isfinite, floats)):
        return None
    # check_window's invariants, column by column (0 in count: the slow path)
    if (
        start > end
        or set(map(sum, counts)) != {n}
        or max(map(operator.add, count, map(operator.itemgetter(-1), counts))) > n
        or max(oor) > n
        or min(m2) < 0.0
        or 0 in count
        or not all(map(operator.le, lo, hi))
        or sum(confidence) != n
        or sum(classes) + confidence[-1] != n
        or sum(latency) > n
        or agreed > compared
        or (sums is not None and _sums_problem(tuple(sums), tuple(confidence)) is not None)
    ):
        return None
    role, model = obj["role"], obj["model"]
    if role not in ROLES or not is_safe_name(model) or type(errors) is not dict:
        return None
    if errors:
        values = errors.values()
        if (
            len(errors) > MAX_ERROR_KINDS
            or set(map(type, values)) != _INT_ONLY
            or min(values) < 1  # zero counts are dropped: the slow path
            or max(values) > MAX_INT
            or not all(map(is_safe_name, errors))
        ):
            return None
        errors = dict(sorted(errors.items()))
    # FeatureWindow.__new__ is Python; tuple.__new__ through map is not.
    feature_columns = (map(tuple, counts), count, mean, m2, lo, hi, oor)
    # The frozen dataclass's __init__ sets its 17 fields one object.__setattr__ at a
    # time (2 us); every value is checked, so the instance dict is set in one go.
    window = _new_object(MetricsWindow)
    _set_attribute(
        window,
        "__dict__",
        {
            "model_name": model,
            "model_version": version,
            "role": role,
            "start": start,
            "end": end,
            "n": n,
            "features": tuple(
                map(_new_tuple, repeat(FeatureWindow), zip(*feature_columns, strict=True))
            ),
            "class_counts": tuple(classes),
            "confidence": tuple(confidence),
            "latency": tuple(latency),
            "errors": errors,
            "compared": compared,
            "agreed": agreed,
            "confidence_sum": None if sums is None else tuple(sums),
            "typicality_n": typ_n,
            "typicality_sum": typ_sum,
            "channel_values": None,  # windows with channel values take the checked path
        },
    )
    return window


def _features_from_json(value: Any, where: str) -> tuple[FeatureWindow, ...]:
    obj = exact_fields(value, where, _FEATURE_FIELDS)
    counts = obj["counts"]
    if type(counts) is not list or not counts:
        raise ValidationError(f"{where}.counts: expected a non-empty list (one per feature)")
    n = len(counts)
    cols = {k: _column(obj, k, where, n) for k in _FEATURE_FIELDS}
    fast = _features_fast(cols)
    if fast is not None:
        return fast
    # Something is wrong: check item by item to name it.
    out = []
    for i in range(n):
        at = f"{where}[{i}]"
        lo, hi = cols["min"][i], cols["max"][i]
        out.append(
            FeatureWindow(
                counts=_counts(cols["counts"][i], f"{where}.counts[{i}]", 4),
                count=_count(cols["count"][i], f"{at}.count"),
                mean=_finite(cols["mean"][i], f"{at}.mean"),
                m2=_finite(cols["m2"][i], f"{at}.m2"),
                min=None if lo is None else _finite(lo, f"{at}.min"),
                max=None if hi is None else _finite(hi, f"{at}.max"),
                out_of_range=_count(cols["out_of_range"][i], f"{at}.out_of_range"),
            )
        )
    return tuple(out)


def _features_fast(cols: Mapping[str, list[Any]]) -> tuple[FeatureWindow, ...] | None:
    """The features when every column holds what it should (whole-column checks in C,
    the common case at the hub's ingest rate); None if anything is off, so that the
    caller's item-by-item checks name it."""
    counts = cols["counts"]
    if not set(map(type, counts)) <= _LIST_ONLY or min(map(len, counts)) < 4:
        return None
    if not (
        _all_counts(list(chain.from_iterable(counts)))
        and _all_counts(cols["count"])
        and _all_counts(cols["out_of_range"])
        and _all_finite(cols["mean"])
        and _all_finite(cols["m2"])
    ):
        return None
    lo, hi = _finite_or_none(cols["min"]), _finite_or_none(cols["max"])
    if lo is None or hi is None:
        return None
    return tuple(
        map(
            FeatureWindow,
            map(tuple, counts),
            cols["count"],
            _as_floats(cols["mean"]),
            _as_floats(cols["m2"]),
            lo,
            hi,
            cols["out_of_range"],
        )
    )


def _as_floats(values: list[Any]) -> list[float]:
    """Checked finite numbers as floats (ints converted)."""
    return values if set(map(type, values)) <= _FLOAT_ONLY else list(map(float, values))


def _finite_or_none(values: list[Any]) -> list[float | None] | None:
    """Items that are finite numbers (as floats) or None; None if any is not."""
    kinds = set(map(type, values))
    if not kinds <= _NUMBERS_OR_NONE:
        return None
    present = [v for v in values if v is not None] if type(None) in kinds else values
    if not _all_finite(present):
        return None
    if int in kinds:
        return [None if v is None else float(v) for v in values]
    return values


def _errors_from_json(value: Any, where: str) -> dict[str, int]:
    obj = as_object(value, where)
    if len(obj) > MAX_ERROR_KINDS:
        raise ValidationError(f"{where}: more than {MAX_ERROR_KINDS} kinds")
    out = {}
    for kind in sorted(obj):
        safe_name(kind, f"{where} key")
        count = _count(obj[kind], f"{where}.{kind}")
        if count:
            out[kind] = count
    return out


# --- the batch form: many window documents at once ----------------------------------
#
# A fleet-wide drift query over a day of 60 s windows from 1,000 devices merges 1.44
# million windows; parsing each into a MetricsWindow and merging pairwise costs ~80 µs
# a window. The hub's roll-ups instead merge the stored documents (the wire form)
# column by column with NumPy: counts add, moments combine with the parallel formula of
# Chan et al. over all parts at once. That is what repeated merge_windows computes, up
# to floating-point rounding of the means and M2 (per-bin confidence sums are added in
# order, exactly as the pairwise merges add them); tests hold the two forms equal.


def merge_documents(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge window documents of one model, version and role into one document.

    Raises:
        ValidationError: no documents, or they differ in model, version, role or
            count lengths.
    """
    if not docs:
        raise ValidationError("merge: no windows")
    first = docs[0]
    key = (first["model"], first["version"], first["role"])
    if any((d["model"], d["version"], d["role"]) != key for d in docs):
        raise ValidationError(f"merge: windows of another model, version or role than {key}")
    if len(docs) == 1:
        return dict(first)
    try:
        features = _merge_features([d["features"] for d in docs])
        merged = {
            "model": key[0],
            "version": key[1],
            "role": key[2],
            "start": min(d["start"] for d in docs),
            "end": max(d["end"] for d in docs),
            "n": sum(d["n"] for d in docs),
            "features": features,
            "classes": _sum_columns([d["classes"] for d in docs]),
            "confidence": _sum_columns([d["confidence"] for d in docs]),
            "latency": _sum_columns([d["latency"] for d in docs]),
            "errors": dict(sorted(sum((Counter(d["errors"]) for d in docs), Counter()).items())),
            "compared": sum(d["compared"] for d in docs),
            "agreed": sum(d["agreed"] for d in docs),
        }
        # Per-bin confidence sums and typicality (optional): kept only when every part
        # has them.
        if all("confidence_sum" in d for d in docs):
            merged["confidence_sum"] = _sum_floats([d["confidence_sum"] for d in docs])
        if all("typicality_n" in d for d in docs):
            merged["typicality_n"] = sum(d["typicality_n"] for d in docs)
            merged["typicality_sum"] = _sum_floats([[d["typicality_sum"]] for d in docs])[0]
        if all("channel_values" in d for d in docs):
            parts = [d["channel_values"] for d in docs]
            if len({(p["positions"], len(p["counts"])) for p in parts}) != 1:
                raise ValueError("channel values of different positions or channels")
            merged["channel_values"] = {
                "positions": parts[0]["positions"],
                "counts": [
                    _sum_columns([p["counts"][c] for p in parts])
                    for c in range(len(parts[0]["counts"]))
                ],
            }
        return merged
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"merge: windows of {key} do not fit together ({exc})") from exc


def shape_of(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must agree for two window documents to merge: model, version, role and the
    length of every count vector."""
    f = doc["features"]
    return (
        doc["model"],
        doc["version"],
        doc["role"],
        tuple(len(c) for c in f["counts"]),
        len(doc["classes"]),
        len(doc["confidence"]),
        len(doc["latency"]),
    )


def largest_mergeable(docs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The documents of the most common shape (all of them when they agree, the usual
    case); a device reporting another shape for the same model version is broken, and
    its windows must not stop the rest from merging."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for d in docs:
        groups.setdefault(shape_of(d), []).append(d)
    return max(groups.values(), key=len)


def _sum_columns(rows: list[list[int]]) -> list[int]:
    """Element-wise sum of equally long count vectors.

    Raises:
        ValueError: the lengths differ.
    """
    if len({len(r) for r in rows}) != 1:
        raise ValueError("count vectors of different lengths")
    return [int(v) for v in np.asarray(rows, dtype=np.int64).sum(axis=0)]


def _sum_floats(rows: list[list[float]]) -> list[float]:
    """Element-wise sum of equally long float vectors, added in document order (as
    pairwise merges add them).

    Raises:
        ValueError: the lengths differ.
    """
    if len({len(r) for r in rows}) != 1:
        raise ValueError("sum vectors of different lengths")
    out = list(rows[0])
    for r in rows[1:]:
        out = [a + b for a, b in zip(out, r, strict=True)]
    return [float(v) for v in out]


def _merge_features(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    n_features = len(parts[0]["count"])
    if any(len(p["count"]) != n_features for p in parts):
        raise ValueError("different numbers of features")
    count = np.asarray([p["count"] for p in parts], dtype=np.float64)  # (windows, features)
    mean = np.asarray([p["mean"] for p in parts], dtype=np.float64)
    m2 = np.asarray([p["m2"] for p in parts], dtype=np.float64)
    lo = np.asarray([p["min"] for p in parts], dtype=np.float64)  # None -> nan
    hi = np.asarray([p["max"] for p in parts], dtype=np.float64)
    total = count.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    grand = (count * mean).sum(axis=0) / safe
    spread = (m2 + count * (mean - grand) ** 2).sum(axis=0)
    present = total > 0
    with np.errstate(all="ignore"):  # all-NaN columns are the features with no value
        lo_all, hi_all = (
            np.nanmin(np.where(count > 0, lo, np.nan), axis=0),
            np.nanmax(np.where(count > 0, hi, np.nan), axis=0),
        )
    return {
        "counts": [_sum_columns([p["counts"][j] for p in parts]) for j in range(n_features)],
        "count": [int(c) for c in total],
        "mean": [float(g) if ok else 0.0 for g, ok in zip(grand, present, strict=True)],
        "m2": [float(s) if ok else 0.0 for s, ok in zip(spread, present, strict=True)],
        "min": [float(v) if ok else None for v, ok in zip(lo_all, present, strict=True)],
        "max": [float(v) if ok else None for v, ok in zip(hi_all, present, strict=True)],
        "out_of_range": _sum_columns([p["out_of_range"] for p in parts]),
    }
