"""``vibration-cnn`` and ``pump-rul`` as the demo will deploy them: the files the builders
write, a signed bundle built from them (by ``hub.bundler`` and by ``edgefleet bundle build``),
served by the agent's real serving path, and the hub's drift rule on its windows: a sensor
gain change on one axis is flagged on that axis only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.cli import _load_plugins, cli
from edge_agent.contract.bundle import Bundle, verify_bundle
from edge_agent.contract.input_schema import InputSchema
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.trust import TrustRoot
from edge_agent.inference.runtime import runtime_name
from edge_agent.inference.serving import Predictor, ServingModel
from hub.bundler import build_bundle, load_reference
from hub.drift import drift_report
from hub.modelkit import (
    AXES,
    FEATURES,
    VIBRATION_CLASSES,
    FleetModelReport,
    InvalidDataError,
    build_pump_rul,
    build_vibration_cnn,
    make_vibration,
)
from hub.modelkit.fleet_models import RUL_LABEL, RUL_MODEL_NAME, VIBRATION_MODEL_NAME

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def vibration(tmp_path_factory: pytest.TempPathFactory) -> FleetModelReport:
    return build_vibration_cnn(tmp_path_factory.mktemp("vibration"), seed=3, n_train=2000)


@pytest.fixture(scope="module")
def rul(tmp_path_factory: pytest.TempPathFactory) -> FleetModelReport:
    return build_pump_rul(tmp_path_factory.mktemp("rul"), seed=3, n_train=3000, n_test=2000)


def bundle_of(
    report: FleetModelReport,
    out: Path,
    keys: list[Ed25519PrivateKey],
    trust: TrustRoot,
) -> Bundle:
    """Bundle the written files as ``model push`` does (model, reference, schema), verify."""
    schema = InputSchema.from_json(json.loads(report.schema_path.read_bytes()))
    build_bundle(
        report.model_path.read_bytes(),
        name=report.name,
        version=1,
        reference=load_reference(report.reference_path),
        keys=keys[:1],
        out=out,
        schema=schema,
    )
    return verify_bundle(out, trust)


@pytest.fixture(scope="module")
def vibration_bundle(
    vibration: FleetModelReport,
    tmp_path_factory: pytest.TempPathFactory,
    signing_keys: list[Ed25519PrivateKey],
    trust_1of1: TrustRoot,
) -> Bundle:
    out = tmp_path_factory.mktemp("vib-bundle") / "vibration-cnn-1.efb"
    return bundle_of(vibration, out, signing_keys, trust_1of1)


def served_window(bundle: Bundle, x: np.ndarray):  # type: ignore[no-untyped-def]
    """The window the agent's serving path closes after predicting every row of ``x``."""
    predictor = Predictor()
    predictor.active = ServingModel(
        bundle, ModelVersion(bundle.manifest.name, 1), clock=lambda: 0.0
    )
    for start in range(0, x.shape[0], 100):
        predictor.predict(x[start : start + 100])
    (window,) = predictor.close_windows(now=60.0)
    return window


def test_vibration_builder_writes_a_bundle_ready_model(vibration: FleetModelReport) -> None:
    out = vibration.model_path.parent
    assert sorted(p.name for p in out.iterdir()) == [
        "model-int8.tflite",
        "reference.npz",
        "schema.json",
        "test.npz",
    ]
    assert vibration.name == VIBRATION_MODEL_NAME == "vibration-cnn"
    assert vibration.runtime == runtime_name()
    assert vibration.model_bytes == vibration.model_path.stat().st_size
    schema_doc = json.loads(vibration.schema_path.read_bytes())
    assert schema_doc["tensor"] == {"shape": [64, 3], "channel_axis": 1}
    schema = InputSchema.from_json(schema_doc)
    assert schema.names == AXES == ("ax", "ay", "az") and schema.labels == VIBRATION_CLASSES
    assert all((f.min, f.max) == (-16.0, 16.0) for f in schema.features)
    with np.load(vibration.reference_path) as reference:
        assert reference["x"].shape == (1000, 64, 3) and reference["x"].dtype == np.float32
        assert tuple(reference["channel_names"]) == AXES
        assert reference["holdout_x"].shape == (2000, 64, 3)
    assert vibration.metric == "accuracy" and vibration.value > 0.85 > vibration.baseline
    assert vibration.max_step_diff <= 1
    assert f"{vibration.value:.4g}" in "\n".join(vibration.lines())


def test_rul_builder_writes_a_regression_model(rul: FleetModelReport) -> None:
    assert rul.name == RUL_MODEL_NAME == "pump-rul"
    schema = InputSchema.from_json(json.loads(rul.schema_path.read_bytes()))
    assert schema.kind == "regression" and schema.labels == (RUL_LABEL,)
    assert schema.names == FEATURES and schema.is_tabular
    with np.load(rul.reference_path) as reference:
        assert reference["x"].shape == (1000, len(FEATURES))
        assert tuple(reference["feature_names"]) == FEATURES
        assert "holdout_y" not in reference  # calibration is for classifiers
    assert rul.metric == "rmse_hours" and rul.value < 0.6 * rul.baseline
    assert rul.max_step_diff <= 1


def test_the_vibration_bundle_describes_the_tensor_and_its_channels(
    vibration_bundle: Bundle,
) -> None:
    schema = vibration_bundle.input_schema()
    assert schema.sample_shape == (64, 3) and schema.channel_axis == 1
    reference = vibration_bundle.reference()
    names = [f.name for f in reference.features]
    assert names == [f"{a}.{s}" for a in AXES for s in ("mean", "std", "energy")]
    assert reference.calibration is not None  # fitted on the held-out windows


def test_served_vibration_windows_are_classified_as_in_the_report(
    vibration_bundle: Bundle, vibration: FleetModelReport
) -> None:
    with np.load(vibration.test_path) as test:
        x, y = test["x"][:400], test["y"][:400]
    window = served_window(vibration_bundle, x)
    assert window.n == 400
    predicted = np.array(window.class_counts)
    # The served class mix is the labels' mix, within the model's error.
    assert np.abs(predicted - np.bincount(y, minlength=3)).sum() <= 2 * (1 - 0.85) * 400


def test_stable_vibration_windows_are_not_flagged(vibration_bundle: Bundle) -> None:
    x = make_vibration(600, seed=71).x
    report = drift_report(vibration_bundle.reference(), [served_window(vibration_bundle, x)])
    assert not report.decision.drifted_any, sorted(report.decision.drifted)


@pytest.mark.parametrize("axis", AXES)
def test_a_gain_change_on_one_axis_is_flagged_on_that_axis_only(
    vibration_bundle: Bundle, axis: str
) -> None:
    """The sensor on one axis reads 30 % high: within one window of 600 predictions that
    axis's per-sample summaries drift, and no other axis's."""
    x = make_vibration(600, seed=72, gain={axis: 1.3}).x
    report = drift_report(vibration_bundle.reference(), [served_window(vibration_bundle, x)])
    channels = {name.split(".")[0] for name in report.decision.drifted if "." in name}
    assert channels == {axis}, sorted(report.decision.drifted)
    by_name = {c.name: c for c in report.channel_values}
    others = [a for a in AXES if a != axis]
    assert all(by_name[axis].psi > 4 * by_name[o].psi for o in others)


def test_the_rul_bundle_monitors_its_output_in_hours(
    rul: FleetModelReport,
    tmp_path: Path,
    signing_keys: list[Ed25519PrivateKey],
    trust_1of1: TrustRoot,
) -> None:
    bundle = bundle_of(rul, tmp_path / "pump-rul-1.efb", signing_keys, trust_1of1)
    reference = bundle.reference()
    assert reference.output_kind == "regression"
    out = reference.features[-1]
    assert out.name == f"out.{RUL_LABEL}" and out.edges[-1] > 1000.0  # hours, not 0-1
    with np.load(rul.test_path) as test:
        x = test["x"][:300]
    window = served_window(bundle, x)
    report = drift_report(reference, [window])
    assert report.accuracy is not None and report.accuracy.status == "not_applicable"


def test_edgefleet_bundle_build_accepts_the_vibration_model(
    vibration: FleetModelReport, tmp_path: Path
) -> None:
    _load_plugins(cli)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("keys", "init", "--dir", str(tmp_path / "keys"), "--json")
    assert code == 0, err
    key = json.loads(out)["keys"][0]["path"]
    efb = tmp_path / "vibration-cnn-1.efb"
    code, out, err = run(
        "bundle",
        "build",
        str(vibration.model_path),
        "--name",
        "vibration-cnn",
        "--version",
        "1",
        "--reference",
        str(vibration.reference_path),
        "--schema",
        str(vibration.schema_path),
        "--key",
        key,
        "--out",
        str(efb),
    )
    assert code == 0, err
    assert out.startswith(f"built    {efb}  (vibration-cnn v1")
    trust = tmp_path / "keys" / "trust.json"
    code, out, _ = run("bundle", "verify", str(efb), "--trust", str(trust))
    assert code == 0 and out.startswith("verified: vibration-cnn v1")


def test_reference_sample_larger_than_training_set_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match="n_reference <= n_train"):
        build_vibration_cnn(tmp_path, n_train=100, n_reference=200)
    with pytest.raises(InvalidDataError, match="n_reference <= n_train"):
        build_pump_rul(tmp_path, n_train=100, n_reference=200)
