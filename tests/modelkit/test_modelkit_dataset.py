"""The synthetic predictive-maintenance data set and its drift."""

from __future__ import annotations

import numpy as np
import pytest

from hub.modelkit import (
    CLASSES,
    FEATURE_RANGES,
    FEATURES,
    Drift,
    InvalidDataError,
    apply_drift,
    make_dataset,
    reference_stats,
)


def test_shapes_dtypes_and_schema() -> None:
    data = make_dataset(500, seed=1)
    assert data.x.shape == (500, len(FEATURES)) and data.x.dtype == np.float32
    assert data.y.shape == (500,) and data.y.dtype == np.int64
    assert len(FEATURES) >= 8 and CLASSES == ("normal", "wear", "fault")
    assert set(FEATURE_RANGES) == set(FEATURES)
    assert set(np.unique(data.y)) == {0, 1, 2}


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = make_dataset(300, seed=5), make_dataset(300, seed=5), make_dataset(300, seed=6)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_undrifted_values_lie_in_the_physical_ranges() -> None:
    x = make_dataset(5000, seed=2).x
    for column, name in enumerate(FEATURES):
        low, high = FEATURE_RANGES[name]
        assert low <= x[:, column].min() and x[:, column].max() <= high, name


def test_classes_differ_in_distribution() -> None:
    data = make_dataset(6000, seed=3)
    vibration = data.x[:, FEATURES.index("vibration_rms_g")]
    means = [vibration[data.y == k].mean() for k in range(len(CLASSES))]
    assert means[0] < means[1] < means[2]


def test_class_weights_set_the_label_mix() -> None:
    y = make_dataset(4000, seed=4, class_weights=(0.0, 1.0, 1.0)).y
    assert not np.any(y == 0)
    assert 0.4 < np.mean(y == 1) < 0.6


def test_offset_drift_shifts_only_the_named_features() -> None:
    base = make_dataset(4000, seed=8)
    drifted = make_dataset(4000, seed=8, drift=Drift(offset=1.0, features=("bearing_temp_c",)))
    np.testing.assert_array_equal(base.y, drifted.y)
    _, std = reference_stats()
    shift = drifted.x.mean(axis=0) - base.x.mean(axis=0)
    column = FEATURES.index("bearing_temp_c")
    assert shift[column] == pytest.approx(std[column], rel=1e-3)
    assert np.all(np.delete(shift, column) == 0.0)


def test_scale_and_noise_drift_widen_the_distribution() -> None:
    x = make_dataset(4000, seed=9).x
    rng = np.random.default_rng(0)
    wider = apply_drift(x, Drift(scale=2.0), rng)
    noisier = apply_drift(x, Drift(noise=1.0), rng)
    np.testing.assert_allclose(wider.std(axis=0), 2.0 * x.std(axis=0), rtol=1e-3)
    assert np.all(noisier.std(axis=0) > 1.2 * x.std(axis=0))
    np.testing.assert_allclose(wider.mean(axis=0), x.mean(axis=0), rtol=0.05)


def test_drift_applies_to_a_single_live_sample() -> None:
    sample = make_dataset(1, seed=10).x[0]
    drifted = apply_drift(sample, Drift(offset=-2.0), np.random.default_rng(0))
    _, std = reference_stats()
    assert drifted.shape == sample.shape and drifted.dtype == np.float32
    np.testing.assert_allclose(drifted - sample, -2.0 * std, rtol=1e-3, atol=1e-3)


def test_strong_drift_may_leave_the_physical_range() -> None:
    x = make_dataset(2000, seed=13, drift=Drift(offset=-30.0, features=("current_a",))).x
    assert x[:, FEATURES.index("current_a")].min() < FEATURE_RANGES["current_a"][0]


def test_unknown_drift_feature_rejected() -> None:
    with pytest.raises(InvalidDataError, match="unknown features"):
        make_dataset(10, seed=0, drift=Drift(offset=1.0, features=("oil_level_pct",)))


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": 10, "class_weights": (1.0, 1.0)}, {"n": 10, "class_weights": (0, 0, 0)}],
)
def test_malformed_arguments_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidDataError):
        make_dataset(seed=0, **kwargs)  # type: ignore[arg-type]


def test_malformed_drift_input_rejected() -> None:
    with pytest.raises(InvalidDataError):
        apply_drift(np.zeros((3, 4), np.float32), Drift(), np.random.default_rng(0))
    with pytest.raises(InvalidDataError):
        apply_drift(
            np.zeros((3, len(FEATURES)), np.float32), Drift(scale=-1.0), np.random.default_rng(0)
        )
