"""Post-training full-integer quantization of a :class:`DenseNet`, and TFLite's integer maths.

The scheme is TFLite's int8 specification:

* weights: symmetric, per output channel, int8 in ``[-127, 127]``, zero point 0;
* biases: int32 with scale ``input_scale * weight_scale[c]``, zero point 0;
* activations: asymmetric int8 per tensor, scale and zero point from the min/max seen on a
  representative data set (the range always includes 0);
* softmax output: scale 1/256, zero point -128.

Raw sensor values span very different magnitudes (rpm in the thousands, vibration below one g),
so one per-tensor int8 scale for all of them would erase the small features. The quantized
network therefore keeps the float network's :class:`Standardizer` (``(x - mean) * scale`` in
float32) in front and quantizes the standardized values; a network whose standardization was
folded into its first layer is unfolded with the representative data's statistics.
:func:`quantize_input` does both steps for callers that feed int8 directly.

:func:`reference_forward` re-implements the integer arithmetic of TFLite's kernels
(``reference_integer_ops::FullyConnectedPerChannel`` with ``QuantizeMultiplier`` /
``MultiplyByQuantizedMultiplier``, and the table-based int8 softmax) so tests can check a
runtime's outputs step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hub.modelkit.errors import InvalidDataError, QuantizationError
from hub.modelkit.train import Activation, DenseNet, Head, Standardizer

Rounding = Literal["double", "double_half_up", "single"]
"""How a runtime rounds when it requantizes an int32 accumulator to int8.

* ``"double"``: gemmlowp's ``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT``
  (ties away from zero), TFLite's reference kernels in a default build.
* ``"double_half_up"``: the same high multiply, then a rounding right shift with ties toward
  +infinity, as ruy's kernels do (TFLite's default optimized CPU kernels).
* ``"single"``: one rounding of the 64-bit product (ties toward +infinity), TFLite built with
  ``TFLITE_SINGLE_ROUNDING``.

The conventions disagree by one step on a few tenths of a percent of the values (ties after
the first rounding), and the softmax can amplify a one-step logit difference to several output
steps, so an exact comparison needs the runtime's own convention: see
:data:`RUNTIME_ROUNDING`.
"""

RUNTIME_ROUNDING: dict[str, Rounding] = {
    "ai-edge-litert": "single",
    "tflite-runtime": "double_half_up",
}
"""The convention each runtime's default kernels follow, measured bit for bit on x86-64 with
ai-edge-litert 2.3.0 and tflite-runtime 2.14.0 (whose reference kernels use ``"double"``)."""

INT8_MIN = -128
INT8_MAX = 127
WEIGHT_MAX = 127
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QuantParams:
    """Affine per-tensor quantization ``real = scale * (q - zero_point)``.

    ``scale`` is always a float32-representable value, as stored in the flatbuffer.
    """

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float values to int8 (round half away from zero, saturate), like TFLite's QUANTIZE."""
        scaled = np.asarray(x, dtype=np.float32) / np.float32(self.scale)
        q = _round_half_away(scaled).astype(np.int64) + self.zero_point
        return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Int8 values to float32, like TFLite's DEQUANTIZE."""
        centered = np.asarray(q).astype(np.int32) - self.zero_point
        return (centered.astype(np.float32) * np.float32(self.scale)).astype(np.float32)


SOFTMAX_OUTPUT = QuantParams(scale=1.0 / 256.0, zero_point=-128)
"""TFLite's fixed quantization of an int8 softmax output."""


@dataclass(frozen=True)
class QuantizedLayer:
    """One int8 fully connected layer in TFLite's layout.

    Attributes:
        weights: int8 ``[out, in]`` (TFLite's FULLY_CONNECTED filter layout).
        weight_scales: float32 ``[out]``, one scale per output channel (zero point 0).
        bias: int32 ``[out]``, scale ``input.scale * weight_scales[c]``.
        activation: fused activation, ``"relu"`` or ``"none"``.
        input: quantization of the layer's input tensor.
        output: quantization of the layer's output tensor (after the fused activation).
    """

    weights: np.ndarray
    weight_scales: np.ndarray
    bias: np.ndarray
    activation: Activation
    input: QuantParams
    output: QuantParams

    @property
    def bias_scales(self) -> np.ndarray:
        """Float32 ``[out]`` scales of the int32 bias."""
        result: np.ndarray = (np.float32(self.input.scale) * self.weight_scales).astype(np.float32)
        return result

    def requantization(self, rounding: Rounding = "double") -> tuple[np.ndarray, np.ndarray]:
        """Per-channel fixed-point multipliers (int64 ``[out]``) and shifts, as TFLite derives them.

        The real multiplier is ``input_scale * weight_scale[c] / output_scale`` computed in
        double from the float32 scales, then split by :func:`quantize_multiplier`.
        """
        input_scale = float(np.float32(self.input.scale))
        output_scale = float(np.float32(self.output.scale))
        pairs = [
            quantize_multiplier(input_scale * float(s) / output_scale, rounding)
            for s in self.weight_scales.astype(np.float32)
        ]
        multipliers = np.array([m for m, _ in pairs], dtype=np.int64)
        shifts = np.array([s for _, s in pairs], dtype=np.int64)
        return multipliers, shifts

    def activation_range(self) -> tuple[int, int]:
        """Clamp range of the int8 output: ReLU clamps at the output zero point."""
        if self.activation == "relu":
            return max(INT8_MIN, self.output.zero_point), INT8_MAX
        return INT8_MIN, INT8_MAX


@dataclass(frozen=True)
class QuantizedNet:
    """Everything needed to write and to emulate a full-integer int8 classifier or regressor.

    Attributes:
        standardizer: float32 standardization of raw inputs, applied before input quantization.
        layers: the int8 fully connected layers; the last one produces the logits (for a
            ``"linear"`` head: the predictions).
        output: quantization of the model's output: :data:`SOFTMAX_OUTPUT` for a softmax
            head, the last layer's output quantization for a linear head.
        head: ``"softmax"`` (classifier) or ``"linear"`` (regressor), as the float network's.
    """

    standardizer: Standardizer
    layers: tuple[QuantizedLayer, ...]
    output: QuantParams = SOFTMAX_OUTPUT
    head: Head = "softmax"

    @property
    def input(self) -> QuantParams:
        """Quantization of the (standardized) int8 input."""
        return self.layers[0].input

    @property
    def logits(self) -> QuantParams:
        """Quantization of the last layer's output (the softmax input)."""
        return self.layers[-1].output

    @property
    def n_inputs(self) -> int:
        return int(self.layers[0].weights.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.layers[-1].weights.shape[0])


def quantize_net(net: DenseNet, representative: np.ndarray) -> QuantizedNet:
    """Quantize ``net`` to int8, calibrating activation ranges on ``representative`` raw inputs.

    Args:
        net: a trained float network taking raw inputs (with a standardizer, or folded).
        representative: float ``[n, net.n_inputs]`` raw inputs typical of production data,
            a few hundred rows or more (a sample of the training data is the usual choice).

    Raises:
        QuantizationError: the representative data is empty, not finite, or of the wrong shape.
    """
    rep = np.asarray(representative, dtype=np.float64)
    if rep.ndim != 2 or rep.shape[1] != net.n_inputs or rep.shape[0] == 0:
        raise QuantizationError(
            f"representative data must have shape [n >= 1, {net.n_inputs}], got {rep.shape}"
        )
    if not np.all(np.isfinite(rep)):
        raise QuantizationError("representative data contains NaN or infinity: drop those rows")

    weights = [layer.weights.astype(np.float64) for layer in net.layers]
    biases = [layer.bias.astype(np.float64) for layer in net.layers]
    standardizer = net.standardizer
    if standardizer is None:
        # A folded network: standardize with the representative statistics and unfold,
        # x @ W + b == ((x - m) * s) @ (W / s[:, None]) + (b + m @ W).
        standardizer = Standardizer.fit(rep)
        mean = standardizer.mean.astype(np.float64)
        scale = standardizer.scale.astype(np.float64)
        biases[0] = biases[0] + mean @ weights[0]
        weights[0] = weights[0] / scale[:, None]
    h = standardizer.apply(rep).astype(np.float64)
    current = _activation_params(h)
    layers: list[QuantizedLayer] = []
    for layer, w, b in zip(net.layers, weights, biases, strict=True):
        h = h @ w + b
        if layer.activation == "relu":
            h = np.maximum(h, 0.0)
        output = _activation_params(h)
        layers.append(_quantize_layer(w, b, layer.activation, current, output))
        current = output
    if net.head == "linear":
        return QuantizedNet(standardizer, tuple(layers), layers[-1].output, "linear")
    return QuantizedNet(standardizer=standardizer, layers=tuple(layers))


def quantize_input(qnet: QuantizedNet, x: np.ndarray) -> np.ndarray:
    """Raw float inputs ``[n, F]`` to the int8 input of an int8-io model (standardize, quantize).

    Raises:
        InvalidDataError: ``x`` is not ``[n, qnet.n_inputs]``.
    """
    values = _check_shape(x, qnet.n_inputs, "inputs")
    return qnet.input.quantize(qnet.standardizer.apply(values))


def dequantize_output(qnet: QuantizedNet, q: np.ndarray) -> np.ndarray:
    """Int8 model outputs ``[n, C]`` to float32: probabilities (multiples of 1/256) for a
    softmax head, predictions in the target's units for a linear head."""
    return qnet.output.dequantize(q)


def reference_forward(
    qnet: QuantizedNet, x_q: np.ndarray, *, rounding: Rounding = "double"
) -> np.ndarray:
    """Emulate the int8 model on int8 inputs ``[n, F]``; returns the int8 softmax output ``[n, C]``
    (for a ``"linear"`` head: the last layer's int8 output, see :func:`reference_logits`).

    Each layer accumulates ``(x - input_zero_point) * w`` plus the bias in int32, requantizes
    every channel with its fixed-point multiplier and shift (``rounding`` picks the runtime's
    convention, see :data:`Rounding` and :data:`RUNTIME_ROUNDING`), adds the output zero point
    and clamps (ReLU clamps at the zero point). The softmax follows TFLite's optimized int8
    kernel: a float32 exp table over the quantized logits, normalized and rounded to
    multiples of 1/256.

    Raises:
        InvalidDataError: ``x_q`` is not an int8 array ``[n, qnet.n_inputs]``.
    """
    logits = reference_logits(qnet, x_q, rounding=rounding)
    if qnet.head == "linear":
        return logits
    return _softmax_int8(logits, qnet.logits.scale)


def reference_logits(
    qnet: QuantizedNet, x_q: np.ndarray, *, rounding: Rounding = "double"
) -> np.ndarray:
    """Int8 logits ``[n, C]`` (the softmax input) for int8 inputs, as in :func:`reference_forward`.

    Raises:
        InvalidDataError: ``x_q`` is not an int8 array ``[n, qnet.n_inputs]``.
    """
    q = np.asarray(x_q)
    if q.dtype != np.int8:
        raise InvalidDataError(f"the int8 reference expects int8 inputs, got {q.dtype}")
    h = _check_shape(q, qnet.n_inputs, "inputs").astype(np.int64)
    for layer in qnet.layers:
        h = _fully_connected(layer, h, rounding)
    return h.astype(np.int8)


def quantize_multiplier(real_multiplier: float, rounding: Rounding = "double") -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real = m * 2**(shift - 31)``, ``m`` in ``[2**30, 2**31)``.

    Returns ``(0, 0)`` for zero and for multipliers too small to matter (shift below -31);
    with single rounding, shifts above 30 saturate as TFLite does.

    Raises:
        QuantizationError: the multiplier is negative or not finite.
    """
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise QuantizationError(f"requantization multiplier {real_multiplier} is unusable")
    if real_multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real_multiplier)
    fixed = _round_half_away_scalar(fraction * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: Rounding = "double"
) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier`` on int64 arrays, with either rounding.

    ``x`` holds int32-range accumulators; ``multiplier`` and ``shift`` broadcast against it.
    """
    x = np.asarray(x, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if rounding == "single":
        total_shift = 31 - shift
        single: np.ndarray = (x * multiplier + (np.int64(1) << (total_shift - 1))) >> total_shift
        return single
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    high = _saturating_rounding_doubling_high_mul(x * (np.int64(1) << left), multiplier)
    if rounding == "double_half_up":
        half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), np.int64(0))
        half_up: np.ndarray = (high + half) >> right
        return half_up
    return _rounding_divide_by_pot(high, right)


def _quantize_layer(
    w: np.ndarray,
    b: np.ndarray,
    activation: Activation,
    input_params: QuantParams,
    output_params: QuantParams,
) -> QuantizedLayer:
    """Quantize one layer given float weights ``[in, out]`` and bias ``[out]``."""
    filters = w.T  # [out, in]
    max_abs = np.abs(filters).max(axis=1)
    scales = np.where(max_abs > 0.0, max_abs / WEIGHT_MAX, 1.0 / WEIGHT_MAX)
    # The int32 bias must fit: raise a channel's weight scale if its bias would overflow.
    needed = np.abs(b) / (input_params.scale * float(2**30))
    scales = np.maximum(scales, needed).astype(np.float32)
    q_weights = np.clip(
        _round_half_away(filters / scales.astype(np.float64)[:, None]), -WEIGHT_MAX, WEIGHT_MAX
    ).astype(np.int8)
    bias_scales = np.float64(np.float32(input_params.scale)) * scales.astype(np.float64)
    q_bias = _round_half_away(b / bias_scales)
    if np.any(q_bias < _INT32_MIN) or np.any(q_bias > _INT32_MAX):
        raise QuantizationError("a bias does not fit in int32 even after rescaling the weights")
    return QuantizedLayer(
        weights=q_weights,
        weight_scales=scales,
        bias=q_bias.astype(np.int32),
        activation=activation,
        input=input_params,
        output=output_params,
    )


def _activation_params(values: np.ndarray) -> QuantParams:
    """Asymmetric int8 parameters covering ``[min(values, 0), max(values, 0)]``."""
    low = min(float(values.min()), 0.0)
    high = max(float(values.max()), 0.0)
    if high - low <= 0.0:
        return QuantParams(scale=1.0, zero_point=0)
    scale = float(np.float32((high - low) / (INT8_MAX - INT8_MIN)))
    zero_point = int(np.clip(_round_half_away_scalar(INT8_MIN - low / scale), INT8_MIN, INT8_MAX))
    return QuantParams(scale=scale, zero_point=zero_point)


def _fully_connected(layer: QuantizedLayer, x: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Int8 FULLY_CONNECTED on int64-held int8 values ``[n, in]``; returns ``[n, out]`` int64."""
    acc = (x - layer.input.zero_point) @ layer.weights.astype(np.int64).T + layer.bias
    multipliers, shifts = layer.requantization(rounding)
    scaled = multiply_by_quantized_multiplier(acc, multipliers, shifts, rounding)
    out = scaled + layer.output.zero_point
    low, high = layer.activation_range()
    result: np.ndarray = np.clip(out, low, high)
    return result


def _softmax_int8(logits: np.ndarray, input_scale: float, beta: float = 1.0) -> np.ndarray:
    """TFLite's optimized int8 softmax: float32 exp table, round(p * 256) - 128, saturate."""
    table_scale = np.float32(-np.float32(input_scale) * np.float32(beta))
    wide = logits.astype(np.int64)
    diff = (wide.max(axis=1, keepdims=True) - wide).astype(np.float32)  # >= 0
    exps = np.exp(table_scale * diff, dtype=np.float32)
    sums = exps.sum(axis=1, keepdims=True, dtype=np.float32)
    inv = np.float32(1.0) / (sums * np.float32(SOFTMAX_OUTPUT.scale))
    rescaled = exps * inv
    q = _round_half_away(rescaled).astype(np.int64) + SOFTMAX_OUTPUT.zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def _saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    overflow = (a == b) & (a == _INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    total = ab + nudge
    # C++ integer division truncates toward zero.
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    result: np.ndarray = np.where(overflow, np.int64(_INT32_MAX), high)
    return result


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    result: np.ndarray = (x >> exponent) + (remainder > threshold).astype(np.int64)
    return result


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (C's ``round``), as float64."""
    values = np.asarray(x, dtype=np.float64)
    result: np.ndarray = np.sign(values) * np.floor(np.abs(values) + 0.5)
    return result


def _round_half_away_scalar(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _check_shape(x: np.ndarray, n_inputs: int, what: str) -> np.ndarray:
    values = np.asarray(x)
    if values.ndim != 2 or values.shape[1] != n_inputs:
        raise InvalidDataError(f"{what} must have shape [n, {n_inputs}], got {values.shape}")
    return values
