"""The written TFLite files: structure, and behaviour in the installed runtime.

Tests marked ``runtime`` run in both environments (ai-edge-litert and tflite-runtime).
"""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from edge_agent.inference.runtime import open_interpreter, runtime_name
from hub.modelkit import (
    RUNTIME_ROUNDING,
    Dataset,
    DenseNet,
    InvalidDataError,
    QuantizedNet,
    forward,
    make_dataset,
    quantize_input,
    quantize_net,
    reference_forward,
    run_tflite,
    train_mlp,
    write_float,
    write_int8,
)

runtime = pytest.mark.runtime


def _opcodes(model: bytes) -> dict[str, int]:
    root = tflite.Model.GetRootAs(model, 0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    codes = (root.OperatorCodes(i) for i in range(root.OperatorCodesLength()))
    return {names[code.BuiltinCode()]: code.Version() for code in codes}


def _tensor(model: bytes, name: str) -> tflite.Tensor:
    graph = tflite.Model.GetRootAs(model, 0).Subgraphs(0)
    for i in range(graph.TensorsLength()):
        if graph.Tensors(i).Name().decode() == name:
            return graph.Tensors(i)
    raise AssertionError(f"no tensor {name}")


def test_files_carry_the_tfl3_identifier_and_schema_version(
    float_model: bytes, int8_model: bytes, int8_float_io_model: bytes
) -> None:
    for model in (float_model, int8_model, int8_float_io_model):
        assert model[4:8] == b"TFL3"
        root = tflite.Model.GetRootAs(model, 0)
        assert root.Version() == 3
        assert root.Description() == b"edgefleet-modelkit"
        assert root.SignatureDefs(0).SignatureKey() == b"serving_default"


def test_operators_and_versions(
    float_model: bytes, int8_model: bytes, int8_float_io_model: bytes
) -> None:
    assert _opcodes(float_model) == {"SUB": 1, "MUL": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    assert _opcodes(int8_model) == {"FULLY_CONNECTED": 4, "SOFTMAX": 2}
    assert _opcodes(int8_float_io_model) == {
        "SUB": 1,
        "MUL": 1,
        "QUANTIZE": 1,
        "FULLY_CONNECTED": 4,
        "SOFTMAX": 2,
        "DEQUANTIZE": 2,
    }


def test_weights_are_stored_per_channel(int8_model: bytes, qnet: QuantizedNet) -> None:
    weights = _tensor(int8_model, "dense_0/weights")
    assert weights.ShapeAsNumpy().tolist() == [32, 10]  # [out, in]
    assert weights.Type() == tflite.TensorType.INT8
    quantization = weights.Quantization()
    assert quantization.QuantizedDimension() == 0
    np.testing.assert_array_equal(quantization.ScaleAsNumpy(), qnet.layers[0].weight_scales)
    np.testing.assert_array_equal(quantization.ZeroPointAsNumpy(), np.zeros(32))
    bias = _tensor(int8_model, "dense_0/bias")
    assert bias.Type() == tflite.TensorType.INT32
    np.testing.assert_array_equal(bias.Quantization().ScaleAsNumpy(), qnet.layers[0].bias_scales)


def test_int8_file_is_under_30_percent_of_float_for_a_large_mlp(train_set: Dataset) -> None:
    x, y = train_set.x[:1000], train_set.y[:1000]
    net = train_mlp(x, y, (512, 512), seed=0, epochs=1)
    float_bytes = len(write_float(net))
    int8_bytes = len(write_int8(quantize_net(net, x[:200])))
    assert int8_bytes <= 0.30 * float_bytes


@runtime
@pytest.mark.parametrize(
    ("fixture", "in_dtype", "out_dtype"),
    [
        ("float_model", np.float32, np.float32),
        ("int8_model", np.int8, np.int8),
        ("int8_float_io_model", np.float32, np.float32),
    ],
)
def test_models_load_with_named_dynamic_batch_io(
    request: pytest.FixtureRequest, fixture: str, in_dtype: type, out_dtype: type
) -> None:
    interpreter = open_interpreter(request.getfixturevalue(fixture))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["name"] == "input" and inp["dtype"] == in_dtype
    assert inp["shape"].tolist() == [1, 10] and inp["shape_signature"].tolist() == [-1, 10]
    assert out["name"] == "probabilities" and out["dtype"] == out_dtype
    assert out["shape"].tolist() == [1, 3]
    signatures = interpreter.get_signature_list()  # type: ignore[attr-defined]
    assert signatures == {"serving_default": {"inputs": ["input"], "outputs": ["probabilities"]}}


@runtime
def test_int8_io_model_declares_the_quantization(int8_model: bytes, qnet: QuantizedNet) -> None:
    interpreter = open_interpreter(int8_model)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    assert (scale, zero_point) == pytest.approx((qnet.input.scale, qnet.input.zero_point))
    assert interpreter.get_output_details()[0]["quantization"] == (1 / 256, -128)


@runtime
def test_batches_give_the_same_outputs_as_single_rows(
    float_model: bytes, int8_float_io_model: bytes, sample_rows: np.ndarray
) -> None:
    for model in (float_model, int8_float_io_model):
        batched = run_tflite(model, sample_rows, batch_size=128)  # 128, 128, then 44 rows
        assert batched.shape == (len(sample_rows), 3) and batched.dtype == np.float32
        one_by_one = np.concatenate([run_tflite(model, row[None, :]) for row in sample_rows[:20]])
        np.testing.assert_allclose(batched[:20], one_by_one, atol=1e-6)


@runtime
def test_float_model_matches_numpy_forward(
    float_model: bytes, mlp: DenseNet, sample_rows: np.ndarray
) -> None:
    outputs = run_tflite(float_model, sample_rows)
    np.testing.assert_allclose(outputs, forward(mlp, sample_rows), rtol=0, atol=1e-5)


@runtime
def test_int8_model_matches_the_integer_reference(
    int8_model: bytes, qnet: QuantizedNet, sample_rows: np.ndarray
) -> None:
    x_q = quantize_input(qnet, sample_rows)
    outputs = run_tflite(int8_model, x_q)
    assert outputs.dtype == np.int8 and outputs.shape == (len(sample_rows), 3)
    expected = reference_forward(qnet, x_q, rounding=RUNTIME_ROUNDING[runtime_name()])
    assert np.abs(outputs.astype(int) - expected.astype(int)).max() <= 1


@runtime
def test_float_io_int8_model_matches_the_integer_reference(
    int8_float_io_model: bytes, qnet: QuantizedNet, sample_rows: np.ndarray
) -> None:
    probabilities = run_tflite(int8_float_io_model, sample_rows)
    steps = np.rint(probabilities * 256).astype(int) - 128
    expected = reference_forward(
        qnet, quantize_input(qnet, sample_rows), rounding=RUNTIME_ROUNDING[runtime_name()]
    )
    assert np.abs(steps - expected.astype(int)).max() <= 1


@runtime
def test_int8_accuracy_within_one_point_of_float(
    float_model: bytes, int8_float_io_model: bytes, test_set: Dataset
) -> None:
    float_accuracy = np.mean(np.argmax(run_tflite(float_model, test_set.x), 1) == test_set.y)
    int8_accuracy = np.mean(np.argmax(run_tflite(int8_float_io_model, test_set.x), 1) == test_set.y)
    assert float_accuracy > 0.8
    assert abs(float_accuracy - int8_accuracy) <= 0.01


@runtime
def test_folded_float_model_runs_and_agrees(mlp: DenseNet, sample_rows: np.ndarray) -> None:
    from hub.modelkit import fold_standardization

    folded = write_float(fold_standardization(mlp))
    assert "SUB" not in _opcodes(folded)
    np.testing.assert_allclose(
        run_tflite(folded, sample_rows), forward(mlp, sample_rows), atol=1e-4
    )


@runtime
def test_int8_model_refuses_unquantized_float_input(
    int8_model: bytes, sample_rows: np.ndarray
) -> None:
    with pytest.raises(InvalidDataError, match="quantize_input"):
        run_tflite(int8_model, sample_rows)


@runtime
def test_softmax_regression_round_trips() -> None:
    data = make_dataset(1000, seed=21)
    from hub.modelkit import train_softmax_regression

    net = train_softmax_regression(data.x, data.y, seed=0, epochs=5)
    qnet = quantize_net(net, data.x[:200])
    np.testing.assert_allclose(
        run_tflite(write_float(net), data.x), forward(net, data.x), atol=1e-5
    )
    x_q = quantize_input(qnet, data.x)
    expected = reference_forward(qnet, x_q, rounding=RUNTIME_ROUNDING[runtime_name()])
    assert np.abs(run_tflite(write_int8(qnet), x_q).astype(int) - expected).max() <= 1
