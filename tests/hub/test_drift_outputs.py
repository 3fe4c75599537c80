"""Output kinds (regression, score, multi-label) end to end on TensorFlow-made models
(tests/fixtures/tf): the kind is inferred at build when the schema does not declare it,
the outputs are monitored per sample as ``out.<label>`` with bins from the reference
outputs, the hub tests them with the one rule (and tests no predicted classes or
confidences), reports their mean/variance shift, and says the accuracy estimate is not
applicable. Real bundles, real ServingModels, real merges."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.window import merge_windows
from edge_agent.errors import ValidationError
from edge_agent.inference.serving import Predictor, ServingModel
from hub.api.documents import DriftReportOut
from hub.bundler import build_bundle, load_reference
from hub.drift import drift_report
from tests.support.accel import regression_rows
from tests.support.fidelity import binomial_upper

TF = Path(__file__).parent.parent / "fixtures" / "tf"


def bundle(tmp_path: Path, name: str, variant: str, keys, trust, schema=None):
    out = tmp_path / f"{name}-{variant}.efb"
    build_bundle(
        (TF / f"{name}_{variant}.tflite").read_bytes(),
        name=name,
        version=1,
        reference=load_reference(TF / f"{name}.npz"),
        keys=keys,
        out=out,
        schema=schema,
    )
    return verify_bundle(out, trust)


def predictor(b) -> Predictor:
    p = Predictor()
    p.active = ServingModel(b, ModelVersion("m", 1), clock=lambda: 0.0)
    return p


@pytest.fixture(scope="module")
def reg(tmp_path_factory, signing_keys, trust_1of1):
    return bundle(tmp_path_factory.mktemp("reg"), "reg", "int8f", signing_keys[:1], trust_1of1)


@pytest.mark.parametrize(
    ("name", "kind", "outputs"),
    [
        ("reg", "regression", ("out.output_0",)),
        ("multilabel", "multilabel", tuple(f"out.class_{i}" for i in range(4))),
        ("mlp", "classification", ()),
    ],
)
def test_output_kind_is_inferred_at_build_with_a_clear_line(
    tmp_path, name, kind, outputs, signing_keys, trust_1of1, caplog
):
    with caplog.at_level(logging.INFO, logger="edgefleet.hub"):
        b = bundle(tmp_path, name, "float16", signing_keys[:1], trust_1of1)
    assert f"output kind inferred as {kind} (" in caplog.text
    assert "declare output_kind in the schema" in caplog.text
    schema, reference = b.input_schema(), b.reference()
    assert schema.kind == kind and reference.output_kind == kind
    names = tuple(f.name for f in reference.features)
    assert names[len(names) - len(outputs) :] == outputs if outputs else "out." not in str(names)
    # A classifier's bundle is as before the field existed: no output_kind anywhere.
    assert ("output_kind" in schema.to_json()) == (kind != "classification")
    assert ("output_kind" in reference.to_json()) == (kind != "classification")


def test_a_declared_output_kind_is_kept(tmp_path, signing_keys, trust_1of1, caplog):
    schema = InputSchema(
        features=tuple(FeatureSpec(f"m{i}") for i in range(12)),
        labels=("leak", "cavitation", "misalignment", "looseness"),
        output_kind="score",
    )
    with caplog.at_level(logging.INFO, logger="edgefleet.hub"):
        b = bundle(tmp_path, "multilabel", "int8", signing_keys[:1], trust_1of1, schema)
    assert "inferred" not in caplog.text
    assert b.reference().output_kind == "score"
    assert [f.name for f in b.reference().features][-4:] == [
        "out.leak",
        "out.cavitation",
        "out.misalignment",
        "out.looseness",
    ]


def test_regression_outputs_are_binned_on_their_own_reference_values(reg):
    ref = reg.reference()
    out = ref.features[-1]
    assert out.name == "out.output_0"
    with np.load(TF / "reg.npz") as data:
        values = data["outputs_int8f"][:, 0]
    # Interior edges within the reference outputs, not the 0-1 confidence edges.
    assert out.edges[0] >= values.min() - 1e-3 and out.edges[-1] <= values.max() + 1e-3
    assert out.edges[-1] > 100.0
    assert sum(out.counts) == ref.n
    assert abs(out.mean - float(values.mean())) < 1e-3 * abs(float(values.mean()))


def test_stable_regression_data_is_rarely_flagged(reg):
    """200 reports of fresh data (n = 300 each, as one device's windows), decided with
    the one rule on features and output only: at most the 1 % family-wise rate."""
    rng = np.random.default_rng(31)
    p = predictor(reg)
    flagged = 0
    for _ in range(200):
        p.predict(regression_rows(300, rng))
        (window,) = p.close_windows(now=60.0)
        report = drift_report(reg.reference(), [window])
        flagged += report.decision.drifted_any
    assert flagged <= binomial_upper(200, 0.01), flagged


def test_a_shift_of_the_regression_output_is_flagged_with_its_mean_shift(reg):
    rng = np.random.default_rng(32)
    p = predictor(reg)
    p.predict(regression_rows(1000, rng, offset_r0=1.0))
    (window,) = p.close_windows(now=60.0)
    report = drift_report(reg.reference(), [window])
    assert "out.output_0" in report.decision.drifted
    (shift,) = report.output_shift
    assert shift.name == "out.output_0" and shift.n == 1000
    assert shift.mean_shift_sd is not None and shift.mean_shift_sd < -0.5  # life falls
    assert report.prediction is None and report.confidence is None
    doc = report.to_json()
    assert "prediction" not in doc and doc["output_kind"] == "regression"
    assert doc["output_shift"][0]["name"] == "out.output_0"
    assert report.accuracy is not None and report.accuracy.status == "not_applicable"
    assert doc["accuracy"]["label"] == "not applicable (the model is not a classifier)"
    # The API's documented answer takes it as it is, key for key.
    out = DriftReportOut.model_validate(doc).model_dump(mode="json", exclude_unset=True)
    assert out == json.loads(json.dumps(doc)) and list(out) == list(doc)


def test_output_windows_merge_exactly(reg):
    """Two devices' windows merged hold what one device counting all rows holds."""
    rng = np.random.default_rng(33)
    x = regression_rows(600, rng)
    one, a, b = predictor(reg), predictor(reg), predictor(reg)
    one.predict(x)
    for i in range(0, 600, 50):
        (a if i < 300 else b).predict(x[i : i + 50])
    (whole,) = one.close_windows(now=60.0)
    (wa,) = a.close_windows(now=60.0)
    (wb,) = b.close_windows(now=60.0)
    merged = merge_windows(wa, wb)
    assert merged.n == whole.n == 600
    for got, want in zip(merged.features, whole.features, strict=True):
        assert got.counts == want.counts and got.count == want.count
        assert abs(got.mean - want.mean) <= 1e-9 * max(1.0, abs(want.mean))
        assert abs(got.m2 - want.m2) <= 1e-9 * max(1.0, want.m2)


def test_the_local_answer_says_what_each_kind_means(tmp_path, reg, signing_keys, trust_1of1):
    x = load_reference(TF / "reg.npz").x[:2]
    doc = predictor(reg).predict(x).to_json()
    assert "classes" not in doc and np.asarray(doc["outputs"]).shape == (2, 1)
    ml = bundle(tmp_path, "multilabel", "float16", signing_keys[:1], trust_1of1)
    xm = load_reference(TF / "multilabel.npz").x[:3]
    result = predictor(ml).predict(xm)
    positive = result.to_json()["positive"]
    want = [[f"class_{i}" for i in np.flatnonzero(r >= 0.5)] for r in result.outputs]
    assert positive == want and "classes" not in result.to_json()


def test_a_classifier_report_keeps_the_keys_it_had(tmp_path, signing_keys, trust_1of1):
    mlp = bundle(tmp_path, "mlp", "int8", signing_keys[:1], trust_1of1)
    p = predictor(mlp)
    p.predict(load_reference(TF / "mlp.npz").x[:50])
    (window,) = p.close_windows(now=60.0)
    doc = drift_report(mlp.reference(), [window]).to_json()
    assert "prediction" in doc and "confidence" in doc
    assert "output_kind" not in doc and "output_shift" not in doc
    out = DriftReportOut.model_validate(doc).model_dump(mode="json", exclude_unset=True)
    assert list(out) == list(doc)


@pytest.mark.parametrize(("kind", "cut"), [("multilabel", 0.5), ("score", 0.3)])
def test_positive_and_exceedance_rates_are_exact_counts(
    tmp_path, signing_keys, trust_1of1, kind, cut
):
    schema = InputSchema(
        features=tuple(FeatureSpec(f"m{i}") for i in range(12)),
        labels=("leak", "cavitation", "misalignment", "looseness"),
        output_kind=kind,
        score_threshold=cut if kind == "score" else None,
    )
    b = bundle(tmp_path, "multilabel", "int8f", signing_keys[:1], trust_1of1, schema)
    ref = b.reference()
    assert ref.output_cut == cut
    assert all(cut in f.edges for f in ref.features if f.name.startswith("out."))
    x = np.random.default_rng(34).normal(0, 1, (700, 12)).astype(np.float32) * 1.3
    p = predictor(b)
    outputs = p.predict(x).outputs
    (window,) = p.close_windows(now=60.0)
    report = drift_report(ref, [window])
    assert [s.name for s in report.output_shift] == [f"out.{label}" for label in schema.labels]
    for j, s in enumerate(report.output_shift):
        assert s.cut == cut
        assert s.rate == float(np.mean(outputs[:, j] >= cut))  # exact, not binned
        assert s.reference_rate is not None and 0.0 < s.reference_rate < 1.0


def test_a_score_threshold_needs_a_score_model():
    with pytest.raises(ValidationError, match="score_threshold: a finite number, for output_kind"):
        InputSchema(features=(FeatureSpec("a"),), output_kind="regression", score_threshold=1.0)
