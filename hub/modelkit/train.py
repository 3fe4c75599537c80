"""Small dense networks trained with NumPy: softmax regression, ReLU MLP classifiers, and ReLU
MLP regressors (:func:`train_regression_mlp`, a ``"linear"`` head trained on squared error).

A :class:`DenseNet` takes raw sensor values. Its first stage standardizes them with the mean
and standard deviation of the training data (:class:`Standardizer`, ``(x - mean) * scale`` in
float32), then dense layers and a softmax follow. Training runs mini-batch Adam on the
cross-entropy loss with a little L2 weight decay and is deterministic given ``seed``.

The standardization is kept as its own stage rather than folded into the first layer's weights:
folding works (:func:`fold_standardization`) but makes float32 inference cancel large terms
(rpm near 1500 times a small weight, minus a large bias), which costs about 1e-5 of absolute
precision on the probabilities. A separate SUB and MUL keep float32 results reproducible.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from hub.modelkit.errors import InvalidDataError

Activation = Literal["relu", "none"]
Head = Literal["softmax", "linear"]
"""What follows the last dense layer: a softmax (a classifier) or nothing (a regressor)."""


@dataclass(frozen=True)
class DenseLayer:
    """One fully connected layer ``activation(x @ weights + bias)``.

    Attributes:
        weights: float32 ``[in, out]``.
        bias: float32 ``[out]``.
        activation: ``"relu"`` or ``"none"``.
    """

    weights: np.ndarray
    bias: np.ndarray
    activation: Activation

    @property
    def n_inputs(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True)
class Standardizer:
    """Per-feature standardization ``(x - mean) * scale`` computed in float32.

    Attributes:
        mean: float32 ``[F]`` feature means.
        scale: float32 ``[F]`` reciprocal standard deviations (1 for constant features).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Standardizer from the mean and standard deviation of the rows of ``x``.

        Raises:
            InvalidDataError: ``x`` is not a non-empty ``[n, F]`` array of finite values.
        """
        values = np.asarray(x, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0 or not np.all(np.isfinite(values)):
            raise InvalidDataError(
                f"standardization needs a non-empty finite [n, F] array, got shape {values.shape}"
            )
        std = values.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(
            mean=values.mean(axis=0).astype(np.float32), scale=(1.0 / std).astype(np.float32)
        )

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardized float32 values: SUB then MUL in float32, as the TFLite graphs do."""
        centered = np.asarray(x, dtype=np.float32) - self.mean
        result: np.ndarray = (centered * self.scale).astype(np.float32)
        return result


@dataclass(frozen=True)
class DenseNet:
    """Optional input standardization, dense layers, then a softmax over the last outputs.

    Attributes:
        layers: the dense layers, input to output.
        standardizer: applied to raw inputs before the first layer; ``None`` when the first
            layer takes raw values directly (see :func:`fold_standardization`).
        head: ``"softmax"`` (a classifier: the outputs are class probabilities) or
            ``"linear"`` (a regressor: the last layer's outputs are the predictions).
    """

    layers: tuple[DenseLayer, ...]
    standardizer: Standardizer | None = None
    head: Head = "softmax"

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_inputs

    @property
    def n_classes(self) -> int:
        return self.layers[-1].n_outputs

    @property
    def hidden(self) -> tuple[int, ...]:
        """Widths of the hidden layers (empty for softmax regression)."""
        return tuple(layer.n_outputs for layer in self.layers[:-1])

    @property
    def n_parameters(self) -> int:
        return sum(layer.weights.size + layer.bias.size for layer in self.layers)


def fold_standardization(net: DenseNet) -> DenseNet:
    """The same function with the standardization folded into the first layer.

    ``(x - m) * s @ W + b == x @ (s[:, None] * W) + (b - (m * s) @ W)``. The result has no
    standardizer and a smaller graph, at the price of float32 cancellation on raw inputs with
    large offsets (see the module docstring). Returns ``net`` itself if nothing is to fold.
    """
    if net.standardizer is None:
        return net
    first = net.layers[0]
    mean = net.standardizer.mean.astype(np.float64)
    scale = net.standardizer.scale.astype(np.float64)
    weights = first.weights.astype(np.float64) * scale[:, None]
    bias = first.bias.astype(np.float64) - mean @ weights
    folded = replace(first, weights=weights.astype(np.float32), bias=bias.astype(np.float32))
    return DenseNet(layers=(folded, *net.layers[1:]), standardizer=None, head=net.head)


def logits(net: DenseNet, x: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs, float32 ``[n, classes]``, computed in float32 like TFLite.

    Raises:
        InvalidDataError: ``x`` is not ``[n, net.n_inputs]``.
    """
    h = _as_features(x, net.n_inputs)
    if net.standardizer is not None:
        h = net.standardizer.apply(h)
    for layer in net.layers:
        h = h @ layer.weights + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, np.float32(0.0))
    return h


def forward(net: DenseNet, x: np.ndarray) -> np.ndarray:
    """Class probabilities, float32 ``[n, classes]``, for raw inputs ``x`` ``[n, features]``;
    for a ``"linear"`` head, the last layer's outputs ``[n, outputs]``.

    Raises:
        InvalidDataError: ``x`` is not ``[n, net.n_inputs]``.
    """
    if net.head == "linear":
        return logits(net, x)
    return _softmax(logits(net, x))


def predict(net: DenseNet, x: np.ndarray) -> np.ndarray:
    """Most probable class per row, int64 ``[n]``.

    Raises:
        InvalidDataError: ``x`` is not ``[n, net.n_inputs]``.
    """
    result: np.ndarray = np.argmax(logits(net, x), axis=1).astype(np.int64)
    return result


def accuracy(net: DenseNet, x: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose most probable class equals the label, in ``[0, 1]``.

    Raises:
        InvalidDataError: shapes of ``x`` and ``y`` do not match the network or each other.
    """
    labels = np.asarray(y)
    if labels.shape != (np.asarray(x).shape[0],):
        raise InvalidDataError(f"labels shape {labels.shape} does not match x rows")
    return float(np.mean(predict(net, x) == labels))


def train_softmax_regression(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    epochs: int = 30,
    learning_rate: float = 0.02,
    batch_size: int = 64,
    l2: float = 1e-4,
    n_classes: int | None = None,
) -> DenseNet:
    """Train a linear softmax classifier (standardization and one dense layer) on raw inputs.

    Args:
        x: float ``[n, features]`` raw inputs.
        y: integer labels ``[n]`` in ``[0, n_classes)``.
        seed: seeds the initialization and the batch order.
        epochs: passes over the data.
        learning_rate: Adam step size (decays with a cosine schedule to 5 % of it).
        batch_size: samples per step.
        l2: weight-decay coefficient on the weights (not biases).
        n_classes: number of classes; defaults to ``max(y) + 1``.

    Raises:
        InvalidDataError: shapes, labels or hyper-parameters are unusable.
    """
    return train_mlp(
        x,
        y,
        hidden=(),
        seed=seed,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        l2=l2,
        n_classes=n_classes,
    )


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    hidden: tuple[int, ...] = (32,),
    *,
    seed: int,
    epochs: int = 30,
    learning_rate: float = 0.005,
    batch_size: int = 64,
    l2: float = 1e-4,
    n_classes: int | None = None,
) -> DenseNet:
    """Train a ReLU MLP with hidden layer widths ``hidden`` on raw inputs.

    Same arguments as :func:`train_softmax_regression`; ``hidden=()`` trains softmax regression.

    Raises:
        InvalidDataError: shapes, labels or hyper-parameters are unusable.
    """
    features = _as_features(x, None)
    labels = _as_labels(y, features.shape[0])
    classes = int(labels.max()) + 1 if n_classes is None else n_classes
    _check_hyper_parameters(hidden, epochs, learning_rate, batch_size, l2, classes, labels)

    standardizer = Standardizer.fit(features)
    standardized = standardizer.apply(features).astype(np.float64)

    rng = np.random.default_rng(seed)
    widths = (features.shape[1], *hidden, classes)
    weights = [
        rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out))
        for fan_in, fan_out in itertools.pairwise(widths)
    ]
    biases = [np.zeros(fan_out) for fan_out in widths[1:]]
    _adam(standardized, labels, weights, biases, rng, epochs, learning_rate, batch_size, l2)
    layers = tuple(
        DenseLayer(
            weights=w.astype(np.float32),
            bias=b.astype(np.float32),
            activation="relu" if i < len(hidden) else "none",
        )
        for i, (w, b) in enumerate(zip(weights, biases, strict=True))
    )
    return DenseNet(layers=layers, standardizer=standardizer)


def train_regression_mlp(
    x: np.ndarray,
    t: np.ndarray,
    hidden: tuple[int, ...] = (32,),
    *,
    seed: int,
    epochs: int = 30,
    learning_rate: float = 0.005,
    batch_size: int = 64,
    l2: float = 1e-4,
) -> DenseNet:
    """Train a ReLU MLP with one linear output on raw inputs, minimizing the squared error.

    The target is standardized for training (its mean and standard deviation are folded
    back into the last layer), so the returned ``"linear"``-head network predicts ``t`` in
    its own units. Other arguments as :func:`train_mlp`.

    Raises:
        InvalidDataError: shapes, targets or hyper-parameters are unusable (targets must
            be finite, one per row).
    """
    features = _as_features(x, None)
    target = np.asarray(t, dtype=np.float64)
    if target.shape != (features.shape[0],) or not np.all(np.isfinite(target)):
        raise InvalidDataError(
            f"targets must be finite numbers of shape ({features.shape[0]},), got {target.shape}"
        )
    labels = np.zeros(features.shape[0], np.int64)
    _check_hyper_parameters(hidden, epochs, learning_rate, batch_size, l2, 2, labels)
    standardizer = Standardizer.fit(features)
    standardized = standardizer.apply(features).astype(np.float64)
    t_mean = float(target.mean())
    t_std = float(target.std()) or 1.0

    rng = np.random.default_rng(seed)
    widths = (features.shape[1], *hidden, 1)
    weights = [
        rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out))
        for fan_in, fan_out in itertools.pairwise(widths)
    ]
    biases = [np.zeros(fan_out) for fan_out in widths[1:]]
    scaled = ((target - t_mean) / t_std)[:, None]
    _adam(standardized, scaled, weights, biases, rng, epochs, learning_rate, batch_size, l2)
    weights[-1] = weights[-1] * t_std
    biases[-1] = biases[-1] * t_std + t_mean
    layers = tuple(
        DenseLayer(
            weights=w.astype(np.float32),
            bias=b.astype(np.float32),
            activation="relu" if i < len(hidden) else "none",
        )
        for i, (w, b) in enumerate(zip(weights, biases, strict=True))
    )
    return DenseNet(layers=layers, standardizer=standardizer, head="linear")


def _adam(
    x: np.ndarray,
    y: np.ndarray,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    rng: np.random.Generator,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    l2: float,
) -> None:
    """Minimize the batch loss + l2/2 * |W|^2 in place with Adam (float64): cross-entropy
    for integer labels ``y [n]``, half the mean squared error for float targets ``[n, 1]``."""
    params = [p for pair in zip(weights, biases, strict=True) for p in pair]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    n = x.shape[0]
    steps_per_epoch = -(-n // batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            grads = _gradients(x[batch], y[batch], weights, biases, l2)
            step += 1
            progress = (step - 1) / max(total_steps - 1, 1)
            rate = learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * progress)))
            correction1 = 1.0 - beta1**step
            correction2 = 1.0 - beta2**step
            for p, g, m, v in zip(params, grads, first, second, strict=True):
                m *= beta1
                m += (1.0 - beta1) * g
                v *= beta2
                v += (1.0 - beta2) * g * g
                p -= rate * (m / correction1) / (np.sqrt(v / correction2) + eps)


def _gradients(
    x: np.ndarray,
    y: np.ndarray,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    l2: float,
) -> list[np.ndarray]:
    """Gradients of the batch loss (see :func:`_adam`), ordered ``[dW0, db0, dW1, db1, ...]``."""
    activations = [x]
    h = x
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w + b
        if i < last:
            h = np.maximum(h, 0.0)
        activations.append(h)
    if y.ndim == 2:  # regression targets: d(0.5 * mean squared error)
        delta = activations[-1] - y
    else:
        delta = _softmax(activations[-1])
        delta[np.arange(y.shape[0]), y] -= 1.0
    delta /= y.shape[0]
    grads: list[np.ndarray] = []
    for i in range(last, -1, -1):
        grads.append(delta.sum(axis=0))
        grads.append(activations[i].T @ delta + l2 * weights[i])
        if i > 0:
            delta = (delta @ weights[i].T) * (activations[i] > 0.0)
    grads.reverse()
    return grads


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def _as_features(x: np.ndarray, n_inputs: int | None) -> np.ndarray:
    values = np.asarray(x, dtype=np.float32)
    if values.ndim != 2 or (n_inputs is not None and values.shape[1] != n_inputs):
        expected = f"[n, {n_inputs}]" if n_inputs is not None else "[n, features]"
        raise InvalidDataError(f"inputs must have shape {expected}, got {values.shape}")
    if values.shape[0] == 0:
        raise InvalidDataError("inputs are empty: pass at least one row")
    return values


def _as_labels(y: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidDataError(
            f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    if labels.min() < 0:
        raise InvalidDataError("labels must be >= 0")
    return labels.astype(np.int64)


def _check_hyper_parameters(
    hidden: tuple[int, ...],
    epochs: int,
    learning_rate: float,
    batch_size: int,
    l2: float,
    n_classes: int,
    labels: np.ndarray,
) -> None:
    if any(width < 1 for width in hidden):
        raise InvalidDataError(f"hidden layer widths must be >= 1, got {hidden}")
    if epochs < 1 or batch_size < 1:
        raise InvalidDataError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if not learning_rate > 0 or l2 < 0:
        raise InvalidDataError(f"need learning_rate > 0 and l2 >= 0, got {learning_rate}, {l2}")
    if n_classes < 2 or int(labels.max()) >= n_classes:
        raise InvalidDataError(
            f"need at least 2 classes and labels below n_classes={n_classes}, "
            f"got max label {int(labels.max())}"
        )
