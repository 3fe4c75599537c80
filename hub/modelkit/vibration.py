"""A seeded synthetic vibration data set: 3-axis accelerometer windows of a rotating pump.

Each sample is a window of :data:`WINDOW` readings of the axes :data:`AXES` (in g) sampled at
:data:`RATE_HZ`, labelled ``normal``, ``imbalance`` or ``bearing`` (:data:`VIBRATION_CLASSES`).
``ax`` and ``ay`` are the radial axes, ``az`` the axial one, which also carries gravity (1 g).
Per window the generator draws a shaft speed in :data:`SHAFT_HZ` (1200-1800 rpm, returned as
:attr:`VibrationSet.shaft_hz`) and a phase:

* ``normal``: a weak shaft-rotation harmonic (1x, 0.05-0.3 g, with a weaker 2x) on the radial
  axes, a tenth of it axially, plus Gaussian noise;
* ``imbalance``: the same with a strong 1x component (0.25-0.8 g) rotating in the radial plane
  (sine on ``ax``, cosine on ``ay``) and only a tenth of it axially;
* ``bearing``: the normal signal plus impulses at the outer-race defect frequency
  (:data:`BPFO_ORDER` times the shaft speed), each ringing down at the bearing resonance
  (:data:`RESONANCE_HZ`, time constant :data:`RING_DECAY_S`), their amplitude modulated by the
  shaft rotation.

The ``noise`` knob sets the noise standard deviation (g) and ``gain`` multiplies each axis's
readings (a sensor gain change: the drift a miscalibrated or loosened sensor shows).

The classes overlap (a strong normal 1x reaches a weak imbalance's, weak impulses drown in
the noise), so the small CNN of :mod:`hub.modelkit.cnn` reaches about 92 % on held-out
windows, not 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hub.modelkit.errors import InvalidDataError

RATE_HZ = 1000.0
"""Sample rate of the windows, in Hz."""

WINDOW = 64
"""Readings per window (64 ms at :data:`RATE_HZ`: 1.3 to 1.9 shaft revolutions, 4.6 to 7
bearing defect impulses)."""

AXES: tuple[str, ...] = ("ax", "ay", "az")
"""Channel names, in the order of the last axis of a window."""

AXIS_RANGE_G = (-16.0, 16.0)
"""Measuring range of each axis in g (a +-16 g MEMS accelerometer)."""

VIBRATION_CLASSES: tuple[str, ...] = ("normal", "imbalance", "bearing")
"""Class names; a label is the index into this tuple."""

SHAFT_HZ = (20.0, 30.0)
"""Range of the shaft rotation frequency (1x), in Hz."""

BPFO_ORDER = 3.6
"""Ball-pass frequency of the outer race, in multiples of the shaft frequency."""

RESONANCE_HZ = 300.0
"""Frequency at which each bearing impulse rings."""

RING_DECAY_S = 0.003
"""Time constant of each impulse's exponential ring-down, in seconds."""

DEFAULT_NOISE_G = 0.08
"""Default standard deviation of the sensor noise, in g."""


@dataclass(frozen=True)
class VibrationSet:
    """Accelerometer windows and labels.

    Attributes:
        x: float32 ``[n, WINDOW, len(AXES)]`` readings in g.
        y: int64 ``[n]`` class indices into VIBRATION_CLASSES.
        shaft_hz: float64 ``[n]`` shaft rotation frequency of each window (what a tachometer
            would read; the model does not see it).
    """

    x: np.ndarray
    y: np.ndarray
    shaft_hz: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_vibration(
    n: int,
    seed: int,
    *,
    noise: float = DEFAULT_NOISE_G,
    gain: dict[str, float] | None = None,
) -> VibrationSet:
    """Draw ``n`` labelled windows (classes equally likely); equal arguments give equal data.

    Args:
        n: number of windows (at least 1).
        seed: seed of the random generator.
        noise: standard deviation of the Gaussian sensor noise in g (at least 0).
        gain: per-axis factor applied to the readings, e.g. ``{"ay": 1.3}`` (a sensor reading
            30 % high); axes not named keep gain 1. The labels and every other draw are the
            same as without it, so ``gain`` changes only the named axes.

    Raises:
        InvalidDataError: ``n`` is below 1, ``noise`` is negative or not finite, or ``gain``
            names an unknown axis or has a negative or non-finite factor.
    """
    if n < 1:
        raise InvalidDataError(f"make_vibration needs n >= 1, got {n}")
    if not np.isfinite(noise) or noise < 0:
        raise InvalidDataError(f"noise must be a finite number >= 0 g, got {noise}")
    factors = axis_gains(gain)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(VIBRATION_CLASSES), n).astype(np.int64)
    t = np.arange(WINDOW) / RATE_HZ
    shaft = rng.uniform(*SHAFT_HZ, n)
    phase = rng.uniform(0.0, 2.0 * np.pi, n)
    imbalance = y == 1
    amplitude = np.where(imbalance, rng.uniform(0.25, 0.8, n), rng.uniform(0.05, 0.3, n))
    second = rng.uniform(0.0, 0.3, n) * np.where(imbalance, 0.1, 1.0) * amplitude
    angle = 2.0 * np.pi * shaft[:, None] * t[None, :] + phase[:, None]
    x = noise * rng.standard_normal((n, WINDOW, len(AXES)))
    radial = amplitude[:, None] * np.sin(angle) + second[:, None] * np.sin(2.0 * angle + 0.7)
    x[:, :, 0] += radial
    x[:, :, 1] += amplitude[:, None] * np.cos(angle) + second[:, None] * np.cos(2.0 * angle)
    x[:, :, 2] += 1.0 + 0.1 * radial
    x += _bearing_impulses(y == 2, shaft, phase, rng)
    return VibrationSet(x=(x * factors).astype(np.float32), y=y, shaft_hz=shaft)


def axis_gains(gain: dict[str, float] | None) -> np.ndarray:
    """Per-axis factors ``[len(AXES)]`` from a ``{axis: factor}`` mapping (missing axes: 1).

    Raises:
        InvalidDataError: an unknown axis, or a negative or non-finite factor.
    """
    factors = np.ones(len(AXES))
    for axis, factor in (gain or {}).items():
        if axis not in AXES:
            raise InvalidDataError(f"gain names unknown axis {axis!r}; axes: {', '.join(AXES)}")
        if not np.isfinite(factor) or factor < 0:
            raise InvalidDataError(f"gain of {axis} must be finite and >= 0, got {factor}")
        factors[AXES.index(axis)] = factor
    return factors


def _bearing_impulses(
    faulty: np.ndarray, shaft: np.ndarray, phase: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Outer-race defect impulses for the ``faulty`` windows, zero elsewhere: ``[n, W, 3]``.

    Impulses repeat at ``BPFO_ORDER * shaft`` Hz from a random offset; each rings as a
    decaying sine at :data:`RESONANCE_HZ` with an amplitude of 0.1-0.5 g modulated by
    ``1 + 0.5 sin(shaft angle)``, mostly radial (half of it axial).
    """
    n = faulty.shape[0]
    strength = np.asarray(rng.uniform(0.1, 0.5, size=n))
    offset = np.asarray(rng.uniform(0.0, 1.0, size=n))
    t = np.arange(WINDOW) / RATE_HZ
    period: np.ndarray = 1.0 / (BPFO_ORDER * np.asarray(shaft))  # seconds between impulses
    # Time since the last impulse at every reading, and that impulse's time.
    since = np.mod(t[None, :] - offset[:, None] * period[:, None], period[:, None])
    hit = t[None, :] - since
    modulation = 1.0 + 0.5 * np.sin(2.0 * np.pi * shaft[:, None] * hit + phase[:, None])
    ring = np.exp(-since / RING_DECAY_S) * np.sin(2.0 * np.pi * RESONANCE_HZ * since)
    signal = np.where(faulty[:, None], strength[:, None] * modulation * ring, 0.0)
    result: np.ndarray = signal[:, :, None] * np.array([1.0, 1.0, 0.5])
    return result
