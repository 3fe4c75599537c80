"""Merging many stored windows at once, for the store's hourly roll-ups.

A fleet-wide drift query over a day of 60 s windows from 1,000 devices would merge
1.44 million windows; parsing each into a :class:`~edge_agent.contract.window.MetricsWindow`
and merging pairwise costs ~80 µs a window. The store instead keeps hourly roll-ups
(see :mod:`hub.store`) built here: :func:`merge_documents` adds a batch of window
documents (their JSON form) column by column with NumPy — counts add, moments combine
with the parallel formula of Chan et al. over all parts at once — which is what
repeated :func:`~edge_agent.contract.window.merge_windows` computes, up to floating-point
rounding of the means and M2 (per-bin confidence sums are added in order, exactly
as the pairwise merges add them).

Pure functions: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_agent.errors import ValidationError

#: Length of an hour bucket (seconds); a window belongs to the hour its start falls in.
HOUR_S = 3600


def hour_of(start: float) -> int:
    """The hour bucket of a window that starts at ``start`` (Unix seconds): the ``h``
    with ``h * HOUR_S <= start < (h + 1) * HOUR_S`` (Python's float floor division is
    exact, so this holds right at the boundaries too)."""
    return int(start // HOUR_S)


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
