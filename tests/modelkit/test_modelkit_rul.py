"""The remaining-useful-life regressor on the pump data: labels, NumPy training, the int8
graph without a softmax, and the integer reference against both runtimes.

Tests marked ``runtime`` run in both environments (ai-edge-litert and tflite-runtime).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.inference.runtime import open_interpreter, runtime_name
from hub.modelkit import (
    RUNTIME_ROUNDING,
    DenseNet,
    InvalidDataError,
    QuantizedNet,
    RulDataset,
    dequantize_output,
    forward,
    make_dataset,
    make_rul_dataset,
    quantize_input,
    quantize_net,
    reference_forward,
    run_tflite,
    train_regression_mlp,
    write_float,
    write_int8,
)
from tests.modelkit.test_modelkit_cnn import operators

runtime = pytest.mark.runtime


def rmse(predicted: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted.astype(np.float64) - target) ** 2)))


@pytest.fixture(scope="module")
def rul_train() -> RulDataset:
    return make_rul_dataset(4000, seed=41)


@pytest.fixture(scope="module")
def rul_test() -> RulDataset:
    return make_rul_dataset(2000, seed=42)


@pytest.fixture(scope="module")
def regressor(rul_train: RulDataset) -> DenseNet:
    return train_regression_mlp(rul_train.x, rul_train.rul, (32,), seed=3, epochs=20)


@pytest.fixture(scope="module")
def qreg(regressor: DenseNet, rul_train: RulDataset) -> QuantizedNet:
    return quantize_net(regressor, rul_train.x[:500])


@pytest.fixture(scope="module")
def mean_rmse(rul_train: RulDataset, rul_test: RulDataset) -> float:
    """Error of predicting the training mean for every test row."""
    return rmse(np.full(len(rul_test), rul_train.rul.mean()), rul_test.rul)


def test_rul_labels_follow_the_damage_and_the_readings_are_the_classifiers() -> None:
    data = make_rul_dataset(3000, seed=5)
    plain = make_dataset(3000, seed=5)
    np.testing.assert_array_equal(data.x, plain.x)
    np.testing.assert_array_equal(data.y, plain.y)
    assert data.rul.dtype == np.float32 and np.all(data.rul >= 0)
    medians = [np.median(data.rul[data.y == k]) for k in range(3)]
    assert medians[0] > 3000 > medians[1] > 600 > medians[2]


def test_the_regressor_beats_predicting_the_mean(
    regressor: DenseNet, rul_test: RulDataset, mean_rmse: float
) -> None:
    assert regressor.head == "linear" and regressor.n_classes == 1
    predicted = forward(regressor, rul_test.x)[:, 0]
    assert rmse(predicted, rul_test.rul) < 0.6 * mean_rmse
    # Not a softmax: outputs are hours, far outside [0, 1].
    assert predicted.max() > 2000


def test_int8_reference_error_is_close_to_float(
    qreg: QuantizedNet, regressor: DenseNet, rul_test: RulDataset
) -> None:
    assert qreg.head == "linear" and qreg.output == qreg.layers[-1].output
    hours = dequantize_output(qreg, reference_forward(qreg, quantize_input(qreg, rul_test.x)))
    float_error = rmse(forward(regressor, rul_test.x)[:, 0], rul_test.rul)
    assert rmse(hours[:, 0], rul_test.rul) < float_error * 1.02


def test_graph_has_no_softmax_and_one_output(qreg: QuantizedNet, regressor: DenseNet) -> None:
    assert operators(write_int8(qreg, io_dtype="int8")) == [("FULLY_CONNECTED", 4)] * 2
    assert operators(write_int8(qreg, io_dtype="float32")) == [
        ("SUB", 1),
        ("MUL", 1),
        ("QUANTIZE", 1),
        ("FULLY_CONNECTED", 4),
        ("FULLY_CONNECTED", 4),
        ("DEQUANTIZE", 2),
    ]
    assert ("SOFTMAX", 1) not in operators(write_float(regressor))


@pytest.mark.parametrize(
    "targets",
    [np.zeros(9, np.float32), np.array([np.nan] * 10, np.float32), np.zeros((10, 1))],
)
def test_unusable_targets_rejected(rul_train: RulDataset, targets: np.ndarray) -> None:
    with pytest.raises(InvalidDataError, match="targets"):
        train_regression_mlp(rul_train.x[:10], targets, seed=0, epochs=1)


@runtime
def test_models_load_with_one_named_output(qreg: QuantizedNet, regressor: DenseNet) -> None:
    for model, dtype in (
        (write_int8(qreg, io_dtype="int8"), np.int8),
        (write_int8(qreg, io_dtype="float32"), np.float32),
        (write_float(regressor), np.float32),
    ):
        interpreter = open_interpreter(model)
        (out,) = interpreter.get_output_details()
        assert out["name"] == "output" and out["dtype"] == dtype
        assert out["shape"].tolist() == [1, 1]
        signatures = interpreter.get_signature_list()  # type: ignore[attr-defined]
        assert signatures == {"serving_default": {"inputs": ["input"], "outputs": ["output"]}}


@runtime
def test_int8_regressor_matches_the_integer_reference(
    qreg: QuantizedNet, rul_test: RulDataset
) -> None:
    x_q = quantize_input(qreg, rul_test.x)
    expected = reference_forward(qreg, x_q, rounding=RUNTIME_ROUNDING[runtime_name()])
    outputs = run_tflite(write_int8(qreg, io_dtype="int8"), x_q)
    assert outputs.dtype == np.int8 and outputs.shape == (len(rul_test), 1)
    assert np.abs(outputs.astype(int) - expected.astype(int)).max() <= 1
    hours = run_tflite(write_int8(qreg, io_dtype="float32"), rul_test.x)
    steps = np.rint(hours / qreg.output.scale).astype(int) + qreg.output.zero_point
    assert np.abs(steps - expected.astype(int)).max() <= 1


@runtime
def test_int8_regressor_in_the_runtime_beats_predicting_the_mean(
    qreg: QuantizedNet, regressor: DenseNet, rul_test: RulDataset, mean_rmse: float
) -> None:
    hours = run_tflite(write_int8(qreg, io_dtype="float32"), rul_test.x)[:, 0]
    assert rmse(hours, rul_test.rul) < 0.6 * mean_rmse
    np.testing.assert_allclose(
        run_tflite(write_float(regressor), rul_test.x[:200]),
        forward(regressor, rul_test.x[:200]),
        rtol=1e-5,
        atol=1e-2,
    )
