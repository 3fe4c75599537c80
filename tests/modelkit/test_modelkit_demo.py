"""The demo build: files written, numbers measured in the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.input_schema import InputSchema
from edge_agent.inference.runtime import runtime_name
from hub.modelkit import CLASSES, FEATURES, DemoReport, InvalidDataError, build_demo

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> DemoReport:
    return build_demo(
        tmp_path_factory.mktemp("demo"), hidden=(16,), seed=3, n_train=3000, n_test=2000
    )


def test_demo_writes_both_models_and_data(report: DemoReport) -> None:
    out = report.float_path.parent
    assert sorted(p.name for p in out.iterdir()) == [
        "model-float.tflite",
        "model-int8.tflite",
        "reference.npz",
        "schema.json",
        "test.npz",
    ]
    assert report.float_bytes == report.float_path.stat().st_size
    assert report.int8_bytes == report.int8_path.stat().st_size
    assert report.int8_path.read_bytes()[4:8] == b"TFL3"
    with np.load(report.reference_path) as reference:
        assert reference["x"].shape == (1000, len(FEATURES)) and reference["x"].dtype == np.float32
        assert reference["y"].shape == (1000,) and reference["y"].dtype == np.int64
        assert tuple(reference["features"]) == FEATURES and tuple(reference["classes"]) == CLASSES
    with np.load(report.test_path) as test:
        assert test["x"].shape == (2000, len(FEATURES)) and test["y"].shape == (2000,)
    schema = InputSchema.from_json(json.loads((out / "schema.json").read_bytes()))
    assert schema.names == FEATURES and schema.labels == CLASSES  # not f0.../class_0
    assert all(f.min is not None and f.max is not None for f in schema.features)


def test_demo_accuracies_are_measured_in_the_runtime(report: DemoReport) -> None:
    assert report.runtime == runtime_name()
    assert 0.8 < report.float_accuracy < 0.97
    assert abs(report.float_accuracy - report.int8_accuracy) <= 0.01
    assert report.int8_max_step_diff <= 1


def test_demo_report_lines_name_the_files_and_numbers(report: DemoReport) -> None:
    text = "\n".join(report.lines())
    assert str(report.float_path) in text and str(report.int8_path) in text
    assert f"{report.int8_accuracy:.2%}" in text and f"{report.float_bytes:,}" in text


def test_demo_is_reproducible(report: DemoReport, tmp_path: Path) -> None:
    again = build_demo(tmp_path, hidden=(16,), seed=3, n_train=3000, n_test=2000)
    assert again.float_path.read_bytes() == report.float_path.read_bytes()
    assert again.int8_path.read_bytes() == report.int8_path.read_bytes()


def test_reference_sample_larger_than_training_set_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError):
        build_demo(tmp_path, n_train=100, n_reference=200)
