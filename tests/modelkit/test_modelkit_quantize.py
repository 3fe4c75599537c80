"""Full-integer quantization and the NumPy emulation of TFLite's integer kernels."""

from __future__ import annotations

import numpy as np
import pytest

from hub.modelkit import (
    SOFTMAX_OUTPUT,
    Dataset,
    DenseNet,
    InvalidDataError,
    QuantizationError,
    QuantizedNet,
    accuracy,
    dequantize_output,
    fold_standardization,
    quantize_input,
    quantize_net,
    reference_forward,
)
from hub.modelkit.quantize import multiply_by_quantized_multiplier, quantize_multiplier


def test_weights_are_symmetric_per_channel_int8(qnet: QuantizedNet, mlp: DenseNet) -> None:
    for qlayer, layer in zip(qnet.layers, mlp.layers, strict=True):
        assert qlayer.weights.dtype == np.int8
        assert qlayer.weights.shape == layer.weights.T.shape  # TFLite layout [out, in]
        assert qlayer.weights.min() >= -127 and qlayer.weights.max() <= 127
        assert qlayer.weight_scales.shape == (layer.n_outputs,)
        # Every channel uses its full range: the largest weight maps to +-127.
        np.testing.assert_array_equal(np.abs(qlayer.weights.astype(int)).max(axis=1), 127)
        dequantized = qlayer.weights * qlayer.weight_scales[:, None]
        np.testing.assert_allclose(
            dequantized, layer.weights.T, atol=float(qlayer.weight_scales.max()) / 2 + 1e-7
        )


def test_biases_are_int32_at_input_times_weight_scale(qnet: QuantizedNet, mlp: DenseNet) -> None:
    for qlayer, layer in zip(qnet.layers[1:], mlp.layers[1:], strict=True):
        assert qlayer.bias.dtype == np.int32
        np.testing.assert_allclose(
            qlayer.bias * qlayer.bias_scales, layer.bias, atol=float(qlayer.bias_scales.max())
        )


def test_activation_ranges_include_zero_and_relu_clamps_at_zero_point(
    qnet: QuantizedNet,
) -> None:
    for layer in qnet.layers:
        assert -128 <= layer.output.zero_point <= 127 and layer.output.scale > 0
        if layer.activation == "relu":
            assert layer.output.zero_point == -128  # calibrated min is exactly 0
            assert layer.activation_range() == (-128, 127)
    assert qnet.output == SOFTMAX_OUTPUT == type(SOFTMAX_OUTPUT)(1 / 256, -128)


def test_reference_int8_accuracy_is_close_to_float(
    qnet: QuantizedNet, mlp: DenseNet, test_set: Dataset
) -> None:
    outputs = reference_forward(qnet, quantize_input(qnet, test_set.x))
    int8_accuracy = float(np.mean(np.argmax(outputs, axis=1) == test_set.y))
    assert abs(int8_accuracy - accuracy(mlp, test_set.x, test_set.y)) <= 0.01
    probabilities = dequantize_output(qnet, outputs)
    assert np.all(np.abs(probabilities.sum(axis=1) - 1.0) <= 3 / 256)


def test_folded_network_quantizes_like_the_unfolded_one(
    mlp: DenseNet, train_set: Dataset, test_set: Dataset
) -> None:
    folded = quantize_net(fold_standardization(mlp), train_set.x[:500])
    outputs = reference_forward(folded, quantize_input(folded, test_set.x))
    assert (
        abs(
            np.mean(np.argmax(outputs, axis=1) == test_set.y)
            - accuracy(mlp, test_set.x, test_set.y)
        )
        <= 0.01
    )


def test_quantize_multiplier_matches_tflite_examples() -> None:
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(0.25) == (1 << 30, -1)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12) == (0, 0)  # below 2**-31 * 2**-31: shifted out
    multiplier, shift = quantize_multiplier(0.0123)
    assert abs(multiplier * 2.0 ** (shift - 31) - 0.0123) < 1e-11


@pytest.mark.parametrize(
    ("x", "double", "half_up", "single"),
    [
        (10, 3, 3, 3),  # 10 * 0.25 = 2.5: ties away from zero, or toward +infinity
        (-10, -3, -2, -2),
        (-6, -2, -1, -1),
        (14, 4, 4, 4),
        (12, 3, 3, 3),
        (-13, -3, -3, -3),
    ],
)
def test_requantization_rounding_conventions(
    x: int, double: int, half_up: int, single: int
) -> None:
    m, s = quantize_multiplier(0.25)
    args = (np.array([x]), np.array([m]), np.array([s]))
    assert multiply_by_quantized_multiplier(*args, "double")[0] == double
    assert multiply_by_quantized_multiplier(*args, "double_half_up")[0] == half_up
    assert multiply_by_quantized_multiplier(*args, "single")[0] == single


def test_rounding_conventions_disagree_on_some_outputs(
    qnet: QuantizedNet, test_set: Dataset
) -> None:
    """Why the runtime's convention matters: a one-step logit tie flips several output steps."""
    x_q = quantize_input(qnet, test_set.x)
    double = reference_forward(qnet, x_q, rounding="double").astype(int)
    single = reference_forward(qnet, x_q, rounding="single").astype(int)
    assert 0 < np.count_nonzero(double != single) < 0.05 * double.size


def test_representative_data_with_nan_rejected(mlp: DenseNet, train_set: Dataset) -> None:
    bad = train_set.x[:100].copy()
    bad[3, 2] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_net(mlp, bad)


def test_representative_data_of_wrong_width_rejected(mlp: DenseNet) -> None:
    with pytest.raises(QuantizationError, match="shape"):
        quantize_net(mlp, np.zeros((10, 4), np.float32))


def test_float_inputs_refused_by_the_integer_reference(qnet: QuantizedNet) -> None:
    with pytest.raises(InvalidDataError, match="int8"):
        reference_forward(qnet, np.zeros((2, qnet.n_inputs), np.float32))
