"""Shared, session-scoped fixtures: small data sets and trained models (all under a second)."""

from __future__ import annotations

import numpy as np
import pytest

from hub.modelkit import (
    Dataset,
    DenseNet,
    QuantizedNet,
    make_dataset,
    quantize_net,
    train_mlp,
    train_softmax_regression,
    write_float,
    write_int8,
)


@pytest.fixture(scope="session")
def train_set() -> Dataset:
    return make_dataset(4000, seed=11)


@pytest.fixture(scope="session")
def test_set() -> Dataset:
    return make_dataset(2000, seed=12)


@pytest.fixture(scope="session")
def mlp(train_set: Dataset) -> DenseNet:
    return train_mlp(train_set.x, train_set.y, (32,), seed=3, epochs=20)


@pytest.fixture(scope="session")
def linear(train_set: Dataset) -> DenseNet:
    return train_softmax_regression(train_set.x, train_set.y, seed=3, epochs=20)


@pytest.fixture(scope="session")
def qnet(mlp: DenseNet, train_set: Dataset) -> QuantizedNet:
    return quantize_net(mlp, train_set.x[:500])


@pytest.fixture(scope="session")
def float_model(mlp: DenseNet) -> bytes:
    return write_float(mlp)


@pytest.fixture(scope="session")
def int8_model(qnet: QuantizedNet) -> bytes:
    """Int8 input (standardized, quantized) and int8 softmax output."""
    return write_int8(qnet, io_dtype="int8")


@pytest.fixture(scope="session")
def int8_float_io_model(qnet: QuantizedNet) -> bytes:
    """Raw float32 input, float32 probabilities, int8 inside."""
    return write_int8(qnet, io_dtype="float32")


@pytest.fixture(scope="session")
def sample_rows(test_set: Dataset) -> np.ndarray:
    """A few hundred raw test rows."""
    return test_set.x[:300]
