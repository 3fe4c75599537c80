"""Models from TensorFlow's own converter (tests/fixtures/tf, made by
tests/fixtures/make_tf_models.py): every variant bundles, verifies and passes its
smoke test in the runtime at hand; what EdgeFleet cannot serve is refused at build with
one line saying why, and nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.messages import ModelVersion
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.serving import ServingModel
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
