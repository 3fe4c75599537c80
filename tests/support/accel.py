"""The 3-axis accelerometer windows the TensorFlow fixture ``cnn1d`` was trained and
referenced on (a copy of ``accel_windows`` in tests/fixtures/make_tf_models.py, which
needs TensorFlow to import), with a sensor gain change on one axis for drift tests."""

from __future__ import annotations

import numpy as np

RATE_HZ = 400.0
AXES = ("ax", "ay", "az")


def accel_windows(
    n: int, rng: np.random.Generator, gain: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows [n, 64, 3] (in g) and their classes: 0 normal, 1 imbalance, 2 bearing
    fault; ``gain`` multiplies an axis's readings (a miscalibrated sensor). Values are
    rounded to float16 and returned as float32, as the fixture's reference was stored."""
    y = rng.integers(0, 3, n)
    t = np.arange(64) / RATE_HZ
    x = rng.normal(0.0, 0.05, (n, 64, 3))
    rot = rng.uniform(20.0, 30.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = np.where(y == 1, rng.uniform(0.5, 0.9, n), rng.uniform(0.05, 0.15, n))
    w = 2 * np.pi * rot[:, None] * t[None, :] + phase[:, None]
    x[:, :, 0] += amp[:, None] * np.sin(w)
    x[:, :, 1] += amp[:, None] * np.cos(w)
    x[:, :, 2] += 1.0
    for i in np.flatnonzero(y == 2):
        period = int(RATE_HZ / (rot[i] * 3.6))
        start = rng.integers(0, period)
        ring = np.exp(-np.arange(12) / 3.0) * np.sin(2 * np.pi * 150.0 * np.arange(12) / RATE_HZ)
        for s in range(start, 64, period):
            seg = ring[: 64 - s] * rng.uniform(0.4, 0.8)
            x[i, s : s + seg.size, :2] += seg[:, None]
            x[i, s : s + seg.size, 2] += 0.5 * seg
    for axis, g in (gain or {}).items():
        x[:, :, AXES.index(axis)] *= g
    return x.astype(np.float16).astype(np.float32), y.astype(np.int64)


def regression_rows(n: int, rng: np.random.Generator, offset_r0: float = 0.0) -> np.ndarray:
    """``n`` rows of the 8 features the TF fixture ``reg`` was trained on (a copy of
    ``regression`` in tests/fixtures/make_tf_models.py), ``offset_r0`` added to the
    first (in its standard deviations: wear rises, remaining useful life falls)."""
    x = rng.normal(0, 1, (n, 8))
    x[:, 0] += offset_r0
    x[:, 4:] = x[:, 4:] * 5 + 20
    return x.astype(np.float32)
