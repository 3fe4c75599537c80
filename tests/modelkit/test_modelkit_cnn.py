"""The int8 1-D CNN on vibration windows: NumPy training, quantization, the TFLite graph as
TensorFlow's converter writes a Conv1D, and the integer reference against both runtimes.

Tests marked ``runtime`` run in both environments (ai-edge-litert and tflite-runtime).
"""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from edge_agent.inference.runtime import open_interpreter, runtime_name
from hub.modelkit import (
    RUNTIME_ROUNDING,
    ConvNet,
    InvalidDataError,
    QuantizationError,
    QuantizedConvNet,
    VibrationSet,
    cnn_accuracy,
    cnn_forward,
    make_vibration,
    quantize_cnn,
    quantize_windows,
    reference_cnn_forward,
    run_tflite,
    train_cnn,
    write_cnn_int8,
)
from hub.modelkit.cnn import reference_cnn_logits
from hub.modelkit.quantize import multiply_by_quantized_multiplier

runtime = pytest.mark.runtime

#: Held-out accuracy floor: the trained CNN reaches about 92 %; the most frequent class
#: alone is about 34 %, and the floor is well above what a model that ignores the bearing
#: class (at most ~67 %) or an untrained one reaches.
ACCURACY_FLOOR = 0.85


@pytest.fixture(scope="module")
def vib_train() -> VibrationSet:
    return make_vibration(3000, seed=31)


@pytest.fixture(scope="module")
def vib_test() -> VibrationSet:
    return make_vibration(1500, seed=32)


@pytest.fixture(scope="module")
def cnn(vib_train: VibrationSet) -> ConvNet:
    return train_cnn(vib_train.x, vib_train.y, seed=1)


@pytest.fixture(scope="module")
def qcnn(cnn: ConvNet, vib_train: VibrationSet) -> QuantizedConvNet:
    return quantize_cnn(cnn, vib_train.x[:800])


@pytest.fixture(scope="module")
def cnn_int8(qcnn: QuantizedConvNet) -> bytes:
    return write_cnn_int8(qcnn, io_dtype="int8")


@pytest.fixture(scope="module")
def cnn_float_io(qcnn: QuantizedConvNet) -> bytes:
    return write_cnn_int8(qcnn, io_dtype="float32")


def operators(model: bytes) -> list[tuple[str, int]]:
    """(builtin name, version) of every operator, in graph order."""
    root = tflite.Model.GetRootAs(model, 0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    graph = root.Subgraphs(0)
    result = []
    for i in range(graph.OperatorsLength()):
        code = root.OperatorCodes(graph.Operators(i).OpcodeIndex())
        result.append((names[code.BuiltinCode()], code.Version()))
    return result


def tensor(model: bytes, name: str) -> tflite.Tensor:
    graph = tflite.Model.GetRootAs(model, 0).Subgraphs(0)
    for i in range(graph.TensorsLength()):
        if graph.Tensors(i).Name().decode() == name:
            return graph.Tensors(i)
    raise AssertionError(f"no tensor {name}")


# --- NumPy ------------------------------------------------------------------------------------


def test_float_cnn_is_accurate_but_not_perfect(cnn: ConvNet, vib_test: VibrationSet) -> None:
    assert (cnn.kernel.shape, cnn.conv_bias.shape) == ((5, 3, 8), (8,))
    assert cnn.dense.weights.shape == (8, 3) and cnn.sample_shape == (64, 3)
    assert ACCURACY_FLOOR < cnn_accuracy(cnn, vib_test.x, vib_test.y) < 0.99
    probabilities = cnn_forward(cnn, vib_test.x[:20])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_an_untrained_or_shuffled_label_cnn_stays_below_the_floor(
    vib_train: VibrationSet, vib_test: VibrationSet
) -> None:
    """The floor is one a broken model fails: a single step of training, or labels that
    carry no information, stay far below it."""
    barely = train_cnn(vib_train.x[:64], vib_train.y[:64], seed=1, epochs=1, batch_size=64)
    assert cnn_accuracy(barely, vib_test.x, vib_test.y) < ACCURACY_FLOOR
    shuffled = np.random.default_rng(0).permutation(vib_train.y)
    noise = train_cnn(vib_train.x, shuffled, seed=1, epochs=3)
    assert cnn_accuracy(noise, vib_test.x, vib_test.y) < 0.5


def test_training_is_deterministic_under_seed(vib_train: VibrationSet) -> None:
    x, y = vib_train.x[:300], vib_train.y[:300]
    a, b = train_cnn(x, y, seed=4, epochs=2), train_cnn(x, y, seed=4, epochs=2)
    c = train_cnn(x, y, seed=5, epochs=2)
    np.testing.assert_array_equal(a.kernel, b.kernel)
    np.testing.assert_array_equal(a.dense.weights, b.dense.weights)
    assert not np.array_equal(a.kernel, c.kernel)


def test_int8_reference_accuracy_is_close_to_float(
    qcnn: QuantizedConvNet, cnn: ConvNet, vib_test: VibrationSet
) -> None:
    outputs = reference_cnn_forward(qcnn, quantize_windows(qcnn, vib_test.x))
    int8_accuracy = float(np.mean(np.argmax(outputs, axis=1) == vib_test.y))
    assert abs(int8_accuracy - cnn_accuracy(cnn, vib_test.x, vib_test.y)) <= 0.01
    assert qcnn.conv.output.zero_point == -128  # calibrated ReLU output starts at 0
    assert qcnn.conv.weights.shape == (8, 15) and qcnn.conv.weights.dtype == np.int8


def test_the_reference_convolution_is_a_sliding_dot_product(qcnn: QuantizedConvNet) -> None:
    """One window whose only value off the zero point is reading 10 of ``ay``: the
    accumulator of filter f at output position p (6..10) is the bias plus that value times
    the filter's ``ay`` weight at tap 10 - p, every other position holds the bias alone;
    the max pooling and dense layer follow. Pins the tap-major patch layout."""
    zp = qcnn.input.zero_point
    x = np.full((1, 64, 3), zp, np.int8)
    x[0, 10, 1] = min(zp + 100, 127)
    weights = qcnn.conv.weights.astype(np.int64).reshape(8, 5, 3)
    acc = np.zeros((60, 8), np.int64) + qcnn.conv.bias
    for p in range(6, 11):
        acc[p] += (int(x[0, 10, 1]) - zp) * weights[:, 10 - p, 1]
    m, s = qcnn.conv.requantization()
    conv = np.clip(
        multiply_by_quantized_multiplier(acc, m, s) + qcnn.conv.output.zero_point, -128, 127
    )
    pooled = conv.max(axis=0)
    dense_acc = (pooled - qcnn.dense.input.zero_point) @ qcnn.dense.weights.astype(np.int64).T
    dense_acc += qcnn.dense.bias
    dm, ds = qcnn.dense.requantization()
    logits = np.clip(
        multiply_by_quantized_multiplier(dense_acc, dm, ds) + qcnn.logits.zero_point, -128, 127
    )
    np.testing.assert_array_equal(reference_cnn_logits(qcnn, x)[0], logits)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 64), np.int8), np.zeros((4, 63, 3), np.int8), np.zeros((0, 64, 3), np.int8)],
)
def test_windows_of_the_wrong_shape_are_refused(qcnn: QuantizedConvNet, bad: np.ndarray) -> None:
    with pytest.raises(InvalidDataError, match=r"\[n >= 1, 64, 3\]"):
        reference_cnn_forward(qcnn, bad)


def test_float_windows_refused_by_the_integer_reference(qcnn: QuantizedConvNet) -> None:
    with pytest.raises(InvalidDataError, match="int8"):
        reference_cnn_forward(qcnn, np.zeros((2, 64, 3), np.float32))


def test_representative_windows_with_nan_rejected(cnn: ConvNet, vib_train: VibrationSet) -> None:
    bad = vib_train.x[:50].copy()
    bad[3, 7, 2] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_cnn(cnn, bad)
    with pytest.raises(QuantizationError, match="shape"):
        quantize_cnn(cnn, vib_train.x[:50, :32])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 65}, "kernel_size"),
        ({"filters": 0}, "filters"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_unusable_hyper_parameters_rejected(
    vib_train: VibrationSet, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidDataError, match=message):
        train_cnn(vib_train.x[:10], vib_train.y[:10], seed=0, **kwargs)  # type: ignore[arg-type]


def test_labels_that_do_not_match_the_windows_rejected(vib_train: VibrationSet) -> None:
    with pytest.raises(InvalidDataError, match="labels"):
        train_cnn(vib_train.x[:10], vib_train.y[:9], seed=0)
    with pytest.raises(InvalidDataError, match="windows"):
        train_cnn(vib_train.x[:10, :, 0], vib_train.y[:10], seed=0)


# --- the TFLite graph -------------------------------------------------------------------------


def test_graph_is_what_tensorflows_converter_writes_for_conv1d(
    cnn_int8: bytes, cnn_float_io: bytes
) -> None:
    core = [
        ("RESHAPE", 1),
        ("CONV_2D", 3),
        ("MAX_POOL_2D", 2),
        ("RESHAPE", 1),
        ("FULLY_CONNECTED", 4),
        ("SOFTMAX", 2),
    ]
    assert operators(cnn_int8) == core
    assert operators(cnn_float_io) == [("QUANTIZE", 1), *core, ("DEQUANTIZE", 2)]
    image = tensor(cnn_int8, "conv/image")
    assert image.ShapeAsNumpy().tolist() == [1, 1, 64, 3]
    assert image.ShapeSignatureAsNumpy().tolist() == [-1, 1, 64, 3]


def test_filters_are_stored_per_channel_in_tflite_layout(
    cnn_int8: bytes, qcnn: QuantizedConvNet
) -> None:
    kernel = tensor(cnn_int8, "conv/kernel")
    assert kernel.ShapeAsNumpy().tolist() == [8, 1, 5, 3]  # [out, h, w, in]
    assert kernel.Type() == tflite.TensorType.INT8
    quantization = kernel.Quantization()
    assert quantization.QuantizedDimension() == 0
    np.testing.assert_array_equal(quantization.ScaleAsNumpy(), qcnn.conv.weight_scales)
    bias = tensor(cnn_int8, "conv/bias")
    assert bias.Type() == tflite.TensorType.INT32
    np.testing.assert_array_equal(bias.Quantization().ScaleAsNumpy(), qcnn.conv.bias_scales)


def test_unknown_io_dtype_rejected(qcnn: QuantizedConvNet) -> None:
    with pytest.raises(InvalidDataError, match="io_dtype"):
        write_cnn_int8(qcnn, io_dtype="int16")  # type: ignore[arg-type]


# --- in the runtime ---------------------------------------------------------------------------


@runtime
@pytest.mark.parametrize(
    ("fixture", "dtype"), [("cnn_int8", np.int8), ("cnn_float_io", np.float32)]
)
def test_models_load_with_a_dynamic_batch_of_windows(
    request: pytest.FixtureRequest, fixture: str, dtype: type
) -> None:
    interpreter = open_interpreter(request.getfixturevalue(fixture))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["name"] == "input" and inp["dtype"] == dtype
    assert inp["shape"].tolist() == [1, 64, 3] and inp["shape_signature"].tolist() == [-1, 64, 3]
    assert out["name"] == "probabilities" and out["shape"].tolist() == [1, 3]


@runtime
def test_int8_cnn_matches_the_integer_reference(
    cnn_int8: bytes, qcnn: QuantizedConvNet, vib_test: VibrationSet
) -> None:
    x_q = quantize_windows(qcnn, vib_test.x)
    outputs = run_tflite(cnn_int8, x_q, batch_size=512)
    assert outputs.dtype == np.int8 and outputs.shape == (len(vib_test), 3)
    expected = reference_cnn_forward(qcnn, x_q, rounding=RUNTIME_ROUNDING[runtime_name()])
    assert np.abs(outputs.astype(int) - expected.astype(int)).max() <= 1


@runtime
def test_float_io_cnn_matches_the_integer_reference_and_clears_the_floor(
    cnn_float_io: bytes, qcnn: QuantizedConvNet, vib_test: VibrationSet
) -> None:
    probabilities = run_tflite(cnn_float_io, vib_test.x)
    steps = np.rint(probabilities * 256).astype(int) - 128
    expected = reference_cnn_forward(
        qcnn, quantize_windows(qcnn, vib_test.x), rounding=RUNTIME_ROUNDING[runtime_name()]
    )
    assert np.abs(steps - expected.astype(int)).max() <= 1
    assert np.mean(np.argmax(probabilities, axis=1) == vib_test.y) > ACCURACY_FLOOR


@runtime
def test_batches_give_the_same_outputs_as_single_windows(
    cnn_float_io: bytes, vib_test: VibrationSet
) -> None:
    batched = run_tflite(cnn_float_io, vib_test.x[:100], batch_size=32)
    one_by_one = np.concatenate([run_tflite(cnn_float_io, w[None]) for w in vib_test.x[:10]])
    np.testing.assert_array_equal(batched[:10], one_by_one)


@runtime
def test_windows_of_another_shape_refused_by_run_tflite(cnn_float_io: bytes) -> None:
    with pytest.raises(InvalidDataError, match=r"samples of shape \[64, 3\], got \[32, 3\]"):
        run_tflite(cnn_float_io, np.zeros((2, 32, 3), np.float32))
