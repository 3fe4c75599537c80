"""Per-bin sums of top-1 confidences in monitoring windows: exact, mergeable, optional on
the wire (windows of older agents still parse), checked on both parsing paths.

Agent-only: nothing here imports the hub.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import (
    MetricsWindow,
    _window_checked,
    _window_fast,
    merge_windows,
    subtract_windows,
)
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator

NOW = 1_700_000_000.0
REF = ReferenceStats.from_data(
    np.random.default_rng(0).normal(size=(400, 2)),
    np.random.default_rng(1).dirichlet(np.ones(3), size=400),
    ["a", "b"],
    ["p", "q", "r"],
)


def window(seed: int, n: int = 300, nan_rows: int = 0) -> MetricsWindow:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=n)
    probs[:nan_rows] = np.nan
    acc = WindowAccumulator(REF, "m", 1, batch=64, clock=lambda: NOW)
    acc.record(rng.normal(size=(n, 2)), probs, 0.001)
    w = acc.close(NOW + 60)
    assert w is not None
    return w


def test_each_bin_holds_the_exact_sum_of_its_confidences() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=500)
    probs[:7] = np.nan  # no class, NaN confidence: counted in the NaN bin, summed nowhere
    acc = WindowAccumulator(REF, "m", 1, batch=64, clock=lambda: NOW)
    for i in range(0, 500, 50):
        acc.record(rng.normal(size=(50, 2)), probs[i : i + 50], 0.001)
    w = acc.close(NOW + 60)
    assert w is not None and w.confidence_sum is not None
    top = probs.max(axis=1)
    edges = np.asarray(REF.confidence.edges)
    for b in range(1, len(edges)):
        inside = (top >= edges[b - 1]) & ((top < edges[b]) | ((b == len(edges) - 1) & (top == 1.0)))
        assert w.confidence_sum[b] == pytest.approx(top[inside].sum(), rel=1e-12, abs=1e-12)
    assert w.confidence_sum[-1] == 0.0 and w.confidence[-1] == 7
    w.check_reference(REF)


def test_sums_merge_subtract_and_round_trip_through_json() -> None:
    a, b = window(3), window(4, nan_rows=5)
    merged = merge_windows(a, b)
    assert merged.confidence_sum is not None and a.confidence_sum and b.confidence_sum
    np.testing.assert_allclose(
        merged.confidence_sum, np.add(a.confidence_sum, b.confidence_sum), rtol=1e-15
    )
    rest = subtract_windows(merged, b)
    assert rest.confidence_sum is not None
    np.testing.assert_allclose(rest.confidence_sum, a.confidence_sum, rtol=1e-9, atol=1e-9)
    pairs = zip(rest.confidence_sum, rest.confidence, strict=True)
    assert all(s == 0.0 for s, c in pairs if c == 0)
    doc = json.loads(canonical_bytes(merged.to_json()))
    assert MetricsWindow.from_json(doc) == merged
    assert MetricsWindow.from_wire(doc).wire_json() is doc  # the fast path took it


def test_windows_of_agents_before_the_sums_still_parse_and_merges_drop_the_sums() -> None:
    new = window(5)
    doc = {
        k: v for k, v in json.loads(canonical_bytes(new.to_json())).items() if k != "confidence_sum"
    }
    old = MetricsWindow.from_json(doc)
    assert old.confidence_sum is None and "confidence_sum" not in old.to_json()
    assert MetricsWindow.from_wire(doc).wire_json() is doc
    assert merge_windows(old, new).confidence_sum is None
    assert merge_windows(new, old).confidence_sum is None
    assert subtract_windows(merge_windows(new, old), old).confidence_sum is None


def _doc() -> dict:
    return json.loads(canonical_bytes(window(6, nan_rows=3).to_json()))


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("a NaN bin with a sum", lambda s: [*s[:-1], 0.5]),
        ("an empty bin with a sum", lambda s: [1.0, *s[1:]]),
        ("one sum missing", lambda s: s[:-1]),
        ("one sum too many", lambda s: [*s, 0.0]),
        ("a string", lambda s: ["x", *s[1:]]),
        ("not a list", lambda s: 3.0),
        ("a boolean", lambda s: [True, *s[1:]]),
    ],
)
def test_forged_confidence_sums_are_refused_in_one_line(name, edit) -> None:
    doc = _doc()
    assert doc["confidence"][0] == 0  # underflow: empty
    doc["confidence_sum"] = edit(doc["confidence_sum"])
    with pytest.raises(ValidationError) as info:
        MetricsWindow.from_json(doc)
    assert "confidence_sum" in str(info.value) and "\n" not in str(info.value), name


def test_sums_outside_their_bins_do_not_fit_the_reference() -> None:
    """A window whose sums cannot come from these bins (a bin of [0.3, 0.4] summing to
    more than 0.4 per value) fails check_reference, which the hub runs first."""
    w = window(7)
    assert w.confidence_sum is not None
    b = next(i for i in range(1, len(w.confidence) - 2) if w.confidence[i] > 0)
    sums = list(w.confidence_sum)
    sums[b] = w.confidence[b] * REF.confidence.edges[b] + 0.01
    forged = MetricsWindow.from_json({**w.to_json(), "confidence_sum": sums})
    with pytest.raises(ValidationError, match="confidence sum"):
        forged.check_reference(REF)


_PATHS = [
    "confidence_sum",
    "confidence_sum.0",
    "confidence_sum.4",
    "confidence_sum.12",
    "confidence.4",
    "n",
]
_VALUES = [0.0, -1.0, 1.5, 1e308, 3, "x", None, [], [0.0] * 13, [0.0] * 12, True]


@pytest.mark.parametrize("path", _PATHS)
def test_the_fast_path_accepts_only_what_the_checked_path_accepts(path) -> None:
    for value in _VALUES:
        doc = _doc()
        *parents, last = path.split(".")
        target = doc
        with contextlib.suppress(KeyError, IndexError, TypeError):
            for key in parents:
                target = target[key]
            if isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
        fast = _window_fast(doc)
        try:
            checked: MetricsWindow | None = _window_checked(doc, "window")
        except ValidationError:
            checked = None
        assert fast is None or fast == checked, (path, value)
