"""Models from TensorFlow's own converter (tests/fixtures/tf, made by
tests/fixtures/make_tf_models.py): every variant bundles, verifies and passes its
smoke test in the runtime at hand; what EdgeFleet cannot serve is refused at build with
one line saying why, and nothing is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.contract.messages import ModelVersion
from edge_agent.daemon.local_api import LocalApi
from edge_agent.errors import PredictionError, ValidationError
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.runtime import runtime_name
from edge_agent.inference.serving import Predictor, ServingModel
from hub.bundler import ReferenceData, build_bundle, load_reference
from hub.errors import BuildError

pytestmark = pytest.mark.runtime

TF = Path(__file__).parent / "fixtures" / "tf"
VARIANTS = ("int8", "int8f", "dynamic", "float16")
TABULAR = ("mlp", "reg", "multilabel")


def tf_model(name: str, variant: str) -> bytes:
    return (TF / f"{name}_{variant}.tflite").read_bytes()


def four_features() -> ReferenceData:
    x = np.random.default_rng(0).normal(size=(50, 4))
    return ReferenceData(x, ("a", "b", "c", "d"))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TABULAR)
def test_runtime_matches_tensorflow_on_every_tabular_fixture(name, variant):
    with np.load(TF / f"{name}.npz") as data:
        x, expected = data["x"].astype(np.float32), data[f"outputs_{variant}"]
    model = LoadedModel(tf_model(name, variant))
    got = model.predict(x)
    diff = np.abs(got - expected).max(axis=1)
    if not model.is_quantized():
        assert diff.max() <= 1e-3 * max(1.0, float(np.abs(expected).max()))
        return
    # The same kernels up to requantization rounding, which the two runtimes do
    # differently (hub.modelkit.quantize.RUNTIME_ROUNDING): a few rows one int8 step
    # apart, which a softmax or sigmoid can widen to ~16 output steps.
    step = model.output_step() or float(np.ptp(expected)) / 256
    assert diff.max() <= 32 * step
    assert np.mean(diff > step * 1.01) <= 0.05


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TABULAR)
def test_every_tabular_fixture_bundles_verifies_and_passes_its_smoke_test(
    tmp_path, name, variant, signing_keys, trust_2of3
):
    out = tmp_path / "b.efb"
    build_bundle(
        tf_model(name, variant),
        name=name,
        version=1,
        reference=load_reference(TF / f"{name}.npz"),
        keys=signing_keys[:2],
        out=out,
    )
    bundle = verify_bundle(out, trust_2of3)
    serving = ServingModel(bundle, ModelVersion(name, 1))
    serving.smoke_test()


BAD = {
    "bad_two_inputs": "2 input(s) and 1 output(s)",
    "bad_two_outputs": "1 input(s) and 2 output(s)",
    "bad_subgraphs": "3 subgraphs",
    "bad_dynamic": "dynamic dimensions [1, -1, 3]",
    "bad_custom_op": "custom operator(s) BesselI1e",
    "bad_int8_no_quant": "int8 without quantization parameters",
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_build_refuses_what_the_runtime_cannot_serve_in_one_line(tmp_path, bad, signing_keys):
    out = tmp_path / "b.efb"
    with pytest.raises(BuildError, match=re.escape(BAD[bad])) as info:
        build_bundle(
            (TF / f"{bad}.tflite").read_bytes(),
            name="bad",
            version=1,
            reference=four_features(),
            keys=signing_keys[:2],
            out=out,
        )
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_reference_whose_width_does_not_match_the_model(tmp_path, signing_keys):
    ref = load_reference(TF / "mlp.npz")
    narrow = ReferenceData(ref.x[:, :9], ref.names[:9])
    with pytest.raises(BuildError, match="9 features, the model takes 10"):
        build_bundle(
            tf_model("mlp", "int8"),
            name="mlp",
            version=1,
            reference=narrow,
            keys=signing_keys[:2],
            out=tmp_path / "b.efb",
        )
    assert list(tmp_path.iterdir()) == []


# --- inputs of any rank (time series, images) --------------------------------------

TENSOR = ("cnn1d", "cnn2d")


def tensor_bundle(tmp_path: Path, name: str, variant: str, keys, schema=None) -> Path:
    out = tmp_path / f"{name}-{variant}.efb"
    build_bundle(
        tf_model(name, variant),
        name=name,
        version=1,
        reference=load_reference(TF / f"{name}.npz"),
        keys=keys,
        out=out,
        schema=schema,
    )
    return out


def serving(path: Path, trust, name: str = "m") -> Predictor:
    p = Predictor()
    p.active = ServingModel(verify_bundle(path, trust), ModelVersion(name, 1))
    return p


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TENSOR)
def test_tensor_fixture_bundles_serves_and_matches_tensorflow(
    tmp_path, name, variant, signing_keys, trust_2of3
):
    with np.load(TF / f"{name}.npz") as data:
        x, expected = data["x"].astype(np.float32), data[f"outputs_{variant}"]
    if (name, variant) == ("cnn2d", "dynamic") and runtime_name() == "tflite-runtime":
        # tflite-runtime 2.14 lacks the FULLY_CONNECTED version TF 2.20 emits for a
        # dynamic-range 2-D CNN: refused in one line, as any op the runtime lacks.
        lacks = r"tflite-runtime 2\.14\.\d+ lacks operator FULLY_CONNECTED version 12, which"
        with pytest.raises(BuildError, match=lacks) as info:
            tensor_bundle(tmp_path, name, variant, signing_keys[:2])
        assert "\n" not in str(info.value)
        return
    p = serving(tensor_bundle(tmp_path, name, variant, signing_keys[:2]), trust_2of3, name)
    p.active.smoke_test()
    one = p.predict(x[0])  # one sample, the model's own shape
    batch = p.predict(x[:8].tolist())  # nested lists, as JSON gives them
    assert one.outputs.shape == (1, expected.shape[1])
    tol = 32 * (p.active.model.output_step() or 1 / 256) if p.active.model.is_quantized() else 1e-4
    assert np.abs(one.outputs[0] - expected[0]).max() <= tol
    assert np.abs(batch.outputs - expected[:8]).max() <= tol
    window = p.active.monitor.close()
    assert window is not None and window.n == 9
    names = [f.name for f in p.active.reference.features]  # the window's, in its order
    assert len(window.features) == len(names)
    channels = p.active.schema.names
    assert names == [f"{c}.{s}" for c in channels for s in ("mean", "std", "energy")]
    assert all(sum(f.counts) == 9 for f in window.features)  # one count per sample


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((64, 2), np.float32), r"shape \[64, 2\]; expected \[64, 3\] or \[batch, 64, 3\]"),
        (np.zeros((2, 3, 64), np.float32), r"shape \[2, 3, 64\]; expected"),
        (np.zeros(192, np.float32), r"shape \[192\]; expected"),
        ([["a", "b", "c"]] * 64, "inputs must be numbers: got str"),
        ([[True, False, True]] * 64, "inputs must be numbers: got bool"),
        ([[0.0, 0.0, 0.0]] * 63 + [[0.0]], "inputs must be numbers"),  # ragged
    ],
    ids=["wrong_channels", "channels_first", "flattened", "strings", "booleans", "ragged"],
)
def test_tensor_input_of_wrong_shape_or_dtype_is_refused_in_one_line(
    tmp_path, bad, match, signing_keys, trust_2of3
):
    p = serving(tensor_bundle(tmp_path, "cnn1d", "int8f", signing_keys[:2]), trust_2of3)
    with pytest.raises(PredictionError, match=match) as info:
        p.predict(bad)
    assert "\n" not in str(info.value)
    window = p.active.monitor.close()
    assert window is not None and window.n == 0 and window.errors == {"invalid_input": 1}


def test_tensor_values_out_of_a_channels_range_are_refused_naming_that_channel(
    tmp_path, signing_keys, trust_2of3
):
    schema = InputSchema(
        features=(FeatureSpec("ax", -4, 4), FeatureSpec("ay", -4, 4), FeatureSpec("az", -4, 4)),
        labels=("normal", "imbalance", "bearing"),
        out_of_range="refuse",
        shape=(64, 3),
        channel_axis=1,
    )
    p = serving(tensor_bundle(tmp_path, "cnn1d", "float16", signing_keys[:2], schema), trust_2of3)
    x = load_reference(TF / "cnn1d.npz").x[:3].astype(np.float32)
    x[1, 40, 1] = 9.0  # one value of ay, in one row of three
    with pytest.raises(PredictionError, match=r"out of the schema's valid range: ay$"):
        p.predict(x[1])
    result = p.predict(x)
    assert [e.row for e in result.errors] == [1] and "ay" in result.errors[0].message
    x[2, 3, 2] = np.nan
    with pytest.raises(
        PredictionError, match=r"contain NaN, which this model's schema refuses: az$"
    ):
        p.predict(x[2])


def test_reference_whose_shape_does_not_match_the_tensor_input_is_refused(tmp_path, signing_keys):
    ref = load_reference(TF / "cnn1d.npz")
    wrong = ReferenceData(ref.x[:, :, :2], ref.names[:2])
    with pytest.raises(BuildError, match=re.escape("reference data is [400, 64, 2], the model")):
        build_bundle(
            tf_model("cnn1d", "int8"),
            name="c",
            version=1,
            reference=wrong,
            keys=signing_keys[:2],
            out=tmp_path / "b.efb",
        )
    assert list(tmp_path.iterdir()) == []


def test_schema_naming_a_channel_axis_that_does_not_exist_is_refused():
    doc = {
        "features": [{"name": n, "min": None, "max": None} for n in ("ax", "ay", "az")],
        "labels": [],
        "out_of_range": "accept",
        "nan": "refuse",
        "tensor": {"shape": [64, 3], "channel_axis": 2},
    }
    with pytest.raises(ValidationError, match=r"axis 2 does not exist in shape \[64, 3\]"):
        InputSchema.from_json(doc)
    doc["tensor"] = {"shape": [64, 3], "channel_axis": 0}
    with pytest.raises(ValidationError, match=r"3 channels are named, but axis 0 .* has 64"):
        InputSchema.from_json(doc)


def test_tabular_schema_written_before_tensors_parses_to_the_same_bytes():
    old = {
        "features": [
            {"name": "a", "min": 0.0, "max": 1.0},
            {"name": "b", "min": None, "max": None},
        ],
        "labels": ["x", "y"],
        "out_of_range": "accept",
        "nan": "refuse",
    }
    schema = InputSchema.from_json(old)
    assert schema.is_tabular and schema.sample_shape == (2,)
    assert canonical_bytes(schema.to_json()) == canonical_bytes(old)


def test_the_local_api_serves_nested_lists_of_a_tensor_input(tmp_path, signing_keys, trust_2of3):
    p = serving(tensor_bundle(tmp_path, "cnn1d", "int8", signing_keys[:2]), trust_2of3)
    x = load_reference(TF / "cnn1d.npz").x[:2]
    api = LocalApi(p.predict, lambda: {}, lambda: None, port=0)
    api.start()
    try:
        url = f"http://127.0.0.1:{api.port}/v1/predict"
        ok = httpx.post(url, content=json.dumps({"inputs": x.tolist()}))
        assert ok.status_code == 200, ok.text
        assert np.asarray(ok.json()["outputs"]).shape == (2, 3)
        bad = httpx.post(url, content=json.dumps({"inputs": x[0, :, :2].tolist()}))
        assert bad.status_code == 400
        assert bad.json()["error"].startswith("inputs have shape [64, 2]; expected [64, 3]")
    finally:
        api.stop()


def test_summaries_follow_the_channel_axis_wherever_it_is():
    names = tuple(FeatureSpec(n) for n in ("ax", "ay", "az"))
    last = InputSchema(names, shape=(64, 3), channel_axis=-1)
    first = InputSchema(names, shape=(3, 64), channel_axis=0)
    x = np.random.default_rng(1).normal(size=(5, 64, 3)) * [1.0, 2.0, 3.0] + [0.0, 1.0, -1.0]
    got = last.summarize(x).reshape(5, 3, 3)
    assert np.allclose(got[:, :, 0], x.mean(axis=1))  # mean
    assert np.allclose(got[:, :, 1], x.std(axis=1))  # population std
    assert np.allclose(got[:, :, 2], (x**2).mean(axis=1))  # energy
    assert np.allclose(first.summarize(np.swapaxes(x, 1, 2)), last.summarize(x))
    assert first.monitored_names[:3] == ("ax.mean", "ax.std", "ax.energy")
