"""A small 1-D convolutional classifier for windows ``[L, C]``: train in NumPy, quantize to
int8, and emulate TFLite's integer kernels.

The network is one convolution over time (``filters`` filters of ``kernel_size`` taps across
all channels, stride 1, no padding) with ReLU, global max pooling over time, and a dense layer
to the classes with a softmax::

    x [L, C] -> conv (ReLU) [L - k + 1, filters] -> max over time [filters] -> dense -> softmax

It takes raw readings (no standardization stage: TensorFlow's converter quantizes raw inputs
too, and accelerometer readings in g need none). Quantization follows TFLite's int8 scheme as
:mod:`hub.modelkit.quantize` does for dense networks: per-channel symmetric int8 filters,
int32 biases, per-tensor asymmetric activations calibrated on representative windows; the max
pooling keeps its input's quantization, as TFLite requires. :func:`reference_cnn_forward`
computes the convolution as TFLite's ``ConvPerChannel`` does (each output is a per-channel
requantized int32 dot product over a ``k x C`` patch, exactly a fully connected layer on that
patch), the max pooling exactly, then the dense layer and the int8 softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hub.modelkit.errors import InvalidDataError, QuantizationError
from hub.modelkit.quantize import (
    SOFTMAX_OUTPUT,
    QuantizedLayer,
    QuantParams,
    Rounding,
    _activation_params,
    _fully_connected,
    _quantize_layer,
    _softmax_int8,
)
from hub.modelkit.train import DenseLayer


@dataclass(frozen=True)
class ConvNet:
    """A float 1-D CNN: convolution + ReLU, global max pooling, dense layer, softmax.

    Attributes:
        kernel: float32 ``[kernel_size, channels, filters]``.
        conv_bias: float32 ``[filters]``.
        dense: the output layer, weights ``[filters, classes]``, activation ``"none"``.
        length: window length ``L`` the network takes.
    """

    kernel: np.ndarray
    conv_bias: np.ndarray
    dense: DenseLayer
    length: int

    @property
    def kernel_size(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.kernel.shape[1])

    @property
    def n_filters(self) -> int:
        return int(self.kernel.shape[2])

    @property
    def n_classes(self) -> int:
        return self.dense.n_outputs

    @property
    def sample_shape(self) -> tuple[int, int]:
        return self.length, self.n_channels


@dataclass(frozen=True)
class QuantizedConvNet:
    """A full-integer int8 :class:`ConvNet` in TFLite's layout.

    Attributes:
        conv: the convolution as an int8 layer on flattened patches: weights
            ``[filters, kernel_size * channels]`` (tap-major, i.e. TFLite's filter
            ``[filters, 1, kernel_size, channels]`` flattened), ReLU, its input quantization
            (the model input's) and output quantization (also the pooled values').
        dense: the int8 output layer; its input quantization is the convolution's output's.
        kernel_size: taps of the convolution.
        length: window length ``L``.
        output: quantization of the softmax output (:data:`SOFTMAX_OUTPUT`).
    """

    conv: QuantizedLayer
    dense: QuantizedLayer
    kernel_size: int
    length: int
    output: QuantParams = SOFTMAX_OUTPUT

    @property
    def input(self) -> QuantParams:
        """Quantization of the int8 input window."""
        return self.conv.input

    @property
    def logits(self) -> QuantParams:
        return self.dense.output

    @property
    def n_channels(self) -> int:
        return int(self.conv.weights.shape[1]) // self.kernel_size

    @property
    def n_filters(self) -> int:
        return int(self.conv.weights.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.dense.weights.shape[0])

    @property
    def sample_shape(self) -> tuple[int, int]:
        return self.length, self.n_channels

    @property
    def out_length(self) -> int:
        """Positions the convolution produces (``length - kernel_size + 1``)."""
        return self.length - self.kernel_size + 1


def cnn_logits(net: ConvNet, x: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs, float32 ``[n, classes]``, for windows ``x`` ``[n, L, C]``.

    Raises:
        InvalidDataError: ``x`` is not ``[n >= 1, L, C]`` for this network.
    """
    windows = _as_windows(x, net.sample_shape).astype(np.float32)
    pooled = _conv_relu(
        _patches(windows, net.kernel_size), net.kernel.reshape(-1, net.n_filters), net.conv_bias
    ).max(axis=1)
    result: np.ndarray = (pooled @ net.dense.weights + net.dense.bias).astype(np.float32)
    return result


def cnn_forward(net: ConvNet, x: np.ndarray) -> np.ndarray:
    """Class probabilities, float32 ``[n, classes]``, for windows ``x`` ``[n, L, C]``.

    Raises:
        InvalidDataError: ``x`` is not ``[n >= 1, L, C]`` for this network.
    """
    return _softmax(cnn_logits(net, x).astype(np.float64)).astype(np.float32)


def cnn_accuracy(net: ConvNet, x: np.ndarray, y: np.ndarray) -> float:
    """Share of windows whose most probable class is the label.

    Raises:
        InvalidDataError: ``x`` does not fit the network or ``y`` has not one label per window.
    """
    labels = np.asarray(y)
    if labels.shape != (np.asarray(x).shape[0],):
        raise InvalidDataError(f"labels shape {labels.shape} does not match x windows")
    return float(np.mean(np.argmax(cnn_logits(net, x), axis=1) == labels))


def train_cnn(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    filters: int = 8,
    kernel_size: int = 5,
    epochs: int = 12,
    learning_rate: float = 0.01,
    batch_size: int = 64,
    l2: float = 1e-4,
    n_classes: int | None = None,
) -> ConvNet:
    """Train a :class:`ConvNet` with mini-batch Adam on the cross-entropy (float64, seeded).

    Args:
        x: float ``[n, L, C]`` raw windows.
        y: integer labels ``[n]`` in ``[0, n_classes)``.
        seed: seeds the initialization and the batch order.
        filters: convolution filters.
        kernel_size: taps of each filter (at most ``L``).
        epochs: passes over the data.
        learning_rate: Adam step size (cosine decay to 5 % of it).
        batch_size: windows per step.
        l2: weight decay on the kernel and dense weights.
        n_classes: number of classes; defaults to ``max(y) + 1``.

    Raises:
        InvalidDataError: shapes, labels or hyper-parameters are unusable.
    """
    windows = np.asarray(x, dtype=np.float64)
    if windows.ndim != 3 or windows.shape[0] == 0 or not np.all(np.isfinite(windows)):
        raise InvalidDataError(
            f"train_cnn needs finite windows [n >= 1, L, C], got shape {windows.shape}"
        )
    labels = np.asarray(y)
    if labels.shape != (windows.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidDataError(
            f"labels must be integers of shape ({windows.shape[0]},), got "
            f"{labels.dtype} {labels.shape}"
        )
    classes = int(labels.max()) + 1 if n_classes is None else n_classes
    length, channels = windows.shape[1], windows.shape[2]
    if not 1 <= kernel_size <= length or filters < 1 or epochs < 1 or batch_size < 1:
        raise InvalidDataError(
            f"need 1 <= kernel_size <= {length}, filters, epochs and batch_size >= 1; got "
            f"{kernel_size}, {filters}, {epochs}, {batch_size}"
        )
    if classes < 2 or labels.min() < 0 or labels.max() >= classes:
        raise InvalidDataError(f"need labels in [0, {classes}) and at least 2 classes")
    if not learning_rate > 0 or l2 < 0:
        raise InvalidDataError(f"need learning_rate > 0 and l2 >= 0, got {learning_rate}, {l2}")

    rng = np.random.default_rng(seed)
    fan_in = kernel_size * channels
    params = [
        rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, filters)),  # kernel, tap-major
        np.zeros(filters),
        rng.normal(0.0, np.sqrt(2.0 / filters), (filters, classes)),
        np.zeros(classes),
    ]
    patches = _patches(windows, kernel_size)
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    n = windows.shape[0]
    total = epochs * -(-n // batch_size)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            grads = _cnn_gradients(patches[batch], labels[batch].astype(np.int64), params, l2)
            step += 1
            progress = (step - 1) / max(total - 1, 1)
            rate = learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * progress)))
            for p, g, m, v in zip(params, grads, first, second, strict=True):
                m *= beta1
                m += (1.0 - beta1) * g
                v *= beta2
                v += (1.0 - beta2) * g * g
                p -= rate * (m / (1.0 - beta1**step)) / (np.sqrt(v / (1.0 - beta2**step)) + eps)
    kernel, conv_bias, dense_w, dense_b = params
    return ConvNet(
        kernel=kernel.reshape(kernel_size, channels, filters).astype(np.float32),
        conv_bias=conv_bias.astype(np.float32),
        dense=DenseLayer(dense_w.astype(np.float32), dense_b.astype(np.float32), "none"),
        length=length,
    )


def quantize_cnn(net: ConvNet, representative: np.ndarray) -> QuantizedConvNet:
    """Quantize ``net`` to int8, calibrating activation ranges on ``representative`` windows.

    Raises:
        QuantizationError: the representative windows are empty, not finite, or not
            ``[n, L, C]`` for this network.
    """
    rep = np.asarray(representative, dtype=np.float64)
    if rep.ndim != 3 or rep.shape[1:] != net.sample_shape or rep.shape[0] == 0:
        length, channels = net.sample_shape
        raise QuantizationError(
            f"representative windows must have shape [n >= 1, {length}, {channels}], "
            f"got {rep.shape}"
        )
    if not np.all(np.isfinite(rep)):
        raise QuantizationError("representative windows contain NaN or infinity: drop them")
    kernel = net.kernel.astype(np.float64).reshape(-1, net.n_filters)
    bias = net.conv_bias.astype(np.float64)
    input_params = _activation_params(rep)
    activations = _conv_relu(_patches(rep, net.kernel_size), kernel, bias)
    conv_params = _activation_params(activations)
    pooled = activations.max(axis=1)
    dense_w = net.dense.weights.astype(np.float64)
    dense_b = net.dense.bias.astype(np.float64)
    logit_params = _activation_params(pooled @ dense_w + dense_b)
    return QuantizedConvNet(
        conv=_quantize_layer(kernel, bias, "relu", input_params, conv_params),
        dense=_quantize_layer(dense_w, dense_b, "none", conv_params, logit_params),
        kernel_size=net.kernel_size,
        length=net.length,
    )


def quantize_windows(qnet: QuantizedConvNet, x: np.ndarray) -> np.ndarray:
    """Raw windows ``[n, L, C]`` to the int8 input of an int8-io model.

    Raises:
        InvalidDataError: ``x`` is not ``[n >= 1, L, C]`` for this network.
    """
    return qnet.input.quantize(_as_windows(x, qnet.sample_shape))


def reference_cnn_forward(
    qnet: QuantizedConvNet, x_q: np.ndarray, *, rounding: Rounding = "double"
) -> np.ndarray:
    """Emulate the int8 model on int8 windows ``[n, L, C]``: the int8 softmax output ``[n, K]``.

    ``rounding`` is the runtime's requantization convention (see
    :data:`hub.modelkit.quantize.RUNTIME_ROUNDING`).

    Raises:
        InvalidDataError: ``x_q`` is not an int8 array ``[n, L, C]`` for this network.
    """
    return _softmax_int8(reference_cnn_logits(qnet, x_q, rounding=rounding), qnet.logits.scale)


def reference_cnn_logits(
    qnet: QuantizedConvNet, x_q: np.ndarray, *, rounding: Rounding = "double"
) -> np.ndarray:
    """Int8 logits ``[n, K]`` (the softmax input), as in :func:`reference_cnn_forward`.

    Raises:
        InvalidDataError: ``x_q`` is not an int8 array ``[n, L, C]`` for this network.
    """
    q = np.asarray(x_q)
    if q.dtype != np.int8:
        raise InvalidDataError(f"the int8 reference expects int8 windows, got {q.dtype}")
    windows = _as_windows(q, qnet.sample_shape).astype(np.int64)
    patches = _patches(windows, qnet.kernel_size)
    n, positions, width = patches.shape
    conv = _fully_connected(qnet.conv, patches.reshape(-1, width), rounding)
    pooled = conv.reshape(n, positions, qnet.n_filters).max(axis=1)
    return _fully_connected(qnet.dense, pooled, rounding).astype(np.int8)


def _patches(x: np.ndarray, k: int) -> np.ndarray:
    """``[n, L, C]`` windows to ``[n, L - k + 1, k * C]`` patches, tap-major per patch."""
    view = np.lib.stride_tricks.sliding_window_view(x, k, axis=1)  # [n, P, C, k]
    return np.ascontiguousarray(view.transpose(0, 1, 3, 2)).reshape(x.shape[0], -1, k * x.shape[2])


def _conv_relu(patches: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """ReLU of the convolution: ``[n, P, filters]``."""
    result: np.ndarray = np.maximum(patches @ kernel + bias, 0.0)
    return result


def _cnn_gradients(
    patches: np.ndarray, y: np.ndarray, params: list[np.ndarray], l2: float
) -> list[np.ndarray]:
    """Gradients of the batch's mean cross-entropy (+ l2/2 |W|^2) for ``[K, b, W, b]``."""
    kernel, bias, dense_w, dense_b = params
    n = y.shape[0]
    activations = _conv_relu(patches, kernel, bias)  # [n, P, F]
    where = activations.argmax(axis=1)  # [n, F]: the position each filter's max came from
    pooled = np.take_along_axis(activations, where[:, None, :], axis=1)[:, 0, :]
    delta = _softmax(pooled @ dense_w + dense_b)
    delta[np.arange(n), y] -= 1.0
    delta /= n
    d_pooled = (delta @ dense_w.T) * (pooled > 0.0)  # [n, F]
    chosen = patches[np.arange(n)[:, None], where]  # [n, F, k*C]: each filter's max patch
    d_kernel = np.einsum("nfi,nf->if", chosen, d_pooled) + l2 * kernel
    return [d_kernel, d_pooled.sum(axis=0), pooled.T @ delta + l2 * dense_w, delta.sum(axis=0)]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def _as_windows(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    values = np.asarray(x)
    if values.ndim != 3 or values.shape[1:] != shape or values.shape[0] == 0:
        raise InvalidDataError(
            f"windows must have shape [n >= 1, {shape[0]}, {shape[1]}], got {values.shape}"
        )
    return values
