"""NumPy training of softmax regression and MLPs."""

from __future__ import annotations

import numpy as np
import pytest

from hub.modelkit import (
    Dataset,
    DenseNet,
    InvalidDataError,
    accuracy,
    fold_standardization,
    forward,
    predict,
    train_mlp,
    train_softmax_regression,
)


def test_linear_model_is_good_but_not_perfect(linear: DenseNet, test_set: Dataset) -> None:
    assert linear.hidden == () and linear.n_classes == 3
    assert 0.78 <= accuracy(linear, test_set.x, test_set.y) <= 0.92


def test_mlp_beats_the_linear_model_without_reaching_100_percent(
    mlp: DenseNet, linear: DenseNet, test_set: Dataset
) -> None:
    mlp_accuracy = accuracy(mlp, test_set.x, test_set.y)
    assert mlp_accuracy > accuracy(linear, test_set.x, test_set.y) + 0.01
    assert mlp_accuracy < 0.97


def test_training_is_deterministic_under_seed(train_set: Dataset) -> None:
    x, y = train_set.x[:1000], train_set.y[:1000]
    a = train_mlp(x, y, (8,), seed=4, epochs=3)
    b = train_mlp(x, y, (8,), seed=4, epochs=3)
    c = train_mlp(x, y, (8,), seed=5, epochs=3)
    for la, lb in zip(a.layers, b.layers, strict=True):
        np.testing.assert_array_equal(la.weights, lb.weights)
        np.testing.assert_array_equal(la.bias, lb.bias)
    assert not np.array_equal(a.layers[0].weights, c.layers[0].weights)


def test_model_takes_raw_sensor_values(mlp: DenseNet, train_set: Dataset) -> None:
    assert mlp.standardizer is not None
    np.testing.assert_allclose(mlp.standardizer.mean, train_set.x.mean(axis=0), rtol=1e-4)
    probabilities = forward(mlp, train_set.x[:50])
    assert probabilities.dtype == np.float32 and probabilities.shape == (50, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_folded_standardization_computes_the_same_function(
    mlp: DenseNet, test_set: Dataset
) -> None:
    folded = fold_standardization(mlp)
    assert folded.standardizer is None and len(folded.layers) == len(mlp.layers)
    np.testing.assert_allclose(forward(folded, test_set.x), forward(mlp, test_set.x), atol=1e-4)
    assert np.mean(predict(folded, test_set.x) == predict(mlp, test_set.x)) > 0.999


def test_layout_matches_the_documented_shapes(mlp: DenseNet) -> None:
    first, last = mlp.layers
    assert first.weights.shape == (10, 32) and first.weights.dtype == np.float32
    assert first.bias.shape == (32,) and first.activation == "relu"
    assert last.weights.shape == (32, 3) and last.activation == "none"
    assert mlp.n_parameters == 10 * 32 + 32 + 32 * 3 + 3


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (np.zeros((4, 3), np.float32), np.array([0, 1, 2])),  # row count mismatch
        (np.zeros((3, 3), np.float32), np.array([0.0, 1.0, 2.0])),  # float labels
        (np.zeros((3, 3), np.float32), np.array([0, 0, 0])),  # a single class
        (np.zeros(3, np.float32), np.array([0, 1, 2])),  # not a matrix
    ],
)
def test_malformed_training_data_rejected(x: np.ndarray, y: np.ndarray) -> None:
    with pytest.raises(InvalidDataError):
        train_softmax_regression(x, y, seed=0, epochs=1)


def test_wrong_feature_count_rejected_at_inference(mlp: DenseNet) -> None:
    with pytest.raises(InvalidDataError, match="shape"):
        forward(mlp, np.zeros((2, 9), np.float32))
