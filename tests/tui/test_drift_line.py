"""The drift view's summary line says over which features its drifted share is taken."""

from __future__ import annotations

from edgefleet_client import DriftResult
from tui.screens.drift import _report_line


def result(verdicts: list[str], share: float | None) -> DriftResult:
    features = [{"name": f"c{i}.mean", "verdict": v} for i, v in enumerate(verdicts)]
    report = {"features": features, "drifted_share": share, "dataset_drift": False}
    return DriftResult(model="m", version=1, since=None, n=888, features=(), report=report)


def test_the_share_names_how_many_features_were_decided_and_how_many_were_not():
    # three of nine decided (all drifted), six without the evidence yet: "100%" alone
    # read as if every feature had drifted
    line = _report_line(result(["insufficient"] * 6 + ["major"] * 3, 1.0))
    assert "100% of 3 decided features drifted (6 insufficient)" in line


def test_every_feature_decided_adds_no_insufficient_count():
    line = _report_line(result(["none", "none", "drift", "none"], 0.25))
    assert "25% of 4 decided features drifted" in line and "insufficient" not in line


def test_no_decided_feature_gives_no_share():
    line = _report_line(result(["insufficient"] * 3, None))
    assert "decided" not in line and line.startswith("888 predictions")
