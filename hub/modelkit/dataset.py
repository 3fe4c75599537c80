"""A seeded synthetic predictive-maintenance data set: sensor readings of a motor-driven pump.

Each sample is one reading of ten sensors (:data:`FEATURES`) labelled ``normal``, ``wear`` or
``fault`` (:data:`CLASSES`). The generator draws, per sample, an operating load, an ambient
temperature, a machine-specific vibration baseline and a damage severity; the sensors follow
from these with noise. Load moves most sensors together and the vibration baseline varies a lot
between machines, so the classes overlap: a linear model reaches roughly 80-90 % accuracy and a
small MLP a few points more, never 100 %.

:func:`apply_drift` shifts, widens or blurs features the same way on a data set and on live
samples, so a simulated fleet can drift in a controlled way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from hub.modelkit.errors import InvalidDataError

FEATURES: tuple[str, ...] = (
    "vibration_rms_g",
    "vibration_peak_g",
    "bearing_temp_c",
    "motor_temp_c",
    "current_a",
    "voltage_v",
    "pressure_bar",
    "flow_lpm",
    "rpm",
    "acoustic_db",
)
"""Feature names, in column order; each name ends with its unit."""

CLASSES: tuple[str, ...] = ("normal", "wear", "fault")
"""Class names; a label is the index into this tuple."""

FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "vibration_rms_g": (0.0, 16.0),
    "vibration_peak_g": (0.0, 50.0),
    "bearing_temp_c": (-40.0, 150.0),
    "motor_temp_c": (-40.0, 180.0),
    "current_a": (0.0, 100.0),
    "voltage_v": (0.0, 690.0),
    "pressure_bar": (0.0, 25.0),
    "flow_lpm": (0.0, 600.0),
    "rpm": (0.0, 3600.0),
    "acoustic_db": (20.0, 140.0),
}
"""Physically valid ``(low, high)`` range of each feature (sensor limits); treat as read-only.

Generated (undrifted) data always lies inside; drifted data may leave it on purpose.
"""

DEFAULT_CLASS_WEIGHTS: tuple[float, ...] = (0.5, 0.3, 0.2)
"""Default class priors for ``normal``, ``wear`` and ``fault``."""

_REFERENCE_SEED = 0
_REFERENCE_SIZE = 20_000


@dataclass(frozen=True)
class Drift:
    """A change of the input distribution, in units of each feature's reference spread.

    Attributes:
        offset: shift added to each affected feature, in reference standard deviations.
        scale: factor applied to each affected feature's deviation from its reference mean
            (1.0 keeps the spread, 2.0 doubles it).
        noise: standard deviation of extra Gaussian noise, in reference standard deviations.
        features: names of the affected features; ``None`` means all of them.
    """

    offset: float = 0.0
    scale: float = 1.0
    noise: float = 0.0
    features: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Dataset:
    """Feature matrix and labels.

    Attributes:
        x: float32 array ``[n, len(FEATURES)]`` of raw sensor values, columns as in FEATURES.
        y: int64 array ``[n]`` of class indices into CLASSES.
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_dataset(
    n: int,
    seed: int,
    drift: Drift | None = None,
    class_weights: tuple[float, ...] | None = None,
) -> Dataset:
    """Draw ``n`` labelled sensor readings; equal arguments always give equal data.

    Args:
        n: number of samples (at least 1).
        seed: seed of the random generator.
        drift: optional drift applied after generation (see :func:`apply_drift`).
        class_weights: relative class frequencies, one non-negative number per class;
            defaults to :data:`DEFAULT_CLASS_WEIGHTS`.

    Raises:
        InvalidDataError: ``n`` is below 1, the class weights are malformed, or the drift
            names an unknown feature or has a negative scale or noise.
    """
    if n < 1:
        raise InvalidDataError(f"make_dataset needs n >= 1, got {n}")
    probabilities = _class_probabilities(class_weights)
    if drift is not None:
        _check_drift(drift)
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASSES), size=n, p=probabilities).astype(np.int64)
    x = _sensor_readings(y, rng)
    if drift is not None:
        x = apply_drift(x, drift, rng)
    return Dataset(x=x, y=y)


RUL_MAX_HOURS = 4000.0
"""Remaining useful life of an undamaged pump, in hours (before the unit-to-unit spread)."""


@dataclass(frozen=True)
class RulDataset:
    """Sensor readings with their remaining useful life.

    Attributes:
        x: float32 ``[n, len(FEATURES)]`` raw sensor values, as :attr:`Dataset.x`.
        y: int64 ``[n]`` class indices into CLASSES (the condition the readings show).
        rul: float32 ``[n]`` remaining useful life in hours.
    """

    x: np.ndarray
    y: np.ndarray
    rul: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_rul_dataset(
    n: int,
    seed: int,
    drift: Drift | None = None,
    class_weights: tuple[float, ...] | None = None,
) -> RulDataset:
    """Draw ``n`` sensor readings labelled with their remaining useful life in hours.

    The readings come from the same generator as :func:`make_dataset` (equal arguments give
    equal ``x`` and ``y``). The life follows from each sample's hidden damage severity
    ``s`` in ``[0, 1]``: ``RUL_MAX_HOURS * (1 - s)**2`` times a log-normal unit-to-unit
    spread of 15 %, so healthy pumps have about 4000 h left, worn ones 600-2300 h and
    failing ones less than 650 h. The severity is not observed directly: the readings carry
    it through noise and load, so a model's error is well above zero.

    Raises:
        InvalidDataError: as :func:`make_dataset`.
    """
    if n < 1:
        raise InvalidDataError(f"make_rul_dataset needs n >= 1, got {n}")
    probabilities = _class_probabilities(class_weights)
    if drift is not None:
        _check_drift(drift)
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASSES), size=n, p=probabilities).astype(np.int64)
    x, severity = _readings_and_severity(y, rng)
    if drift is not None:
        x = apply_drift(x, drift, rng)
    spread = np.random.default_rng([seed, 1]).lognormal(0.0, 0.15, n)
    rul = RUL_MAX_HOURS * (1.0 - severity) ** 2 * spread
    return RulDataset(x=x, y=y, rul=rul.astype(np.float32))


def apply_drift(x: np.ndarray, drift: Drift, rng: np.random.Generator) -> np.ndarray:
    """Return a drifted copy of ``x`` (float32 ``[n, F]`` or one sample ``[F]``).

    For every affected feature ``f`` with reference mean ``m`` and standard deviation ``s``
    (see :func:`reference_stats`): ``x' = m + (x - m) * scale + offset * s + noise * s * N(0, 1)``.
    Values are not clipped to :data:`FEATURE_RANGES`, so strong drift can leave them.

    Raises:
        InvalidDataError: ``x`` is not ``[n, F]`` or ``[F]``, or the drift names an unknown
            feature or has a negative scale or noise.
    """
    _check_drift(drift)
    values = np.asarray(x, dtype=np.float32)
    if values.shape[-1:] != (len(FEATURES),) or values.ndim not in (1, 2):
        raise InvalidDataError(
            f"apply_drift expects shape [n, {len(FEATURES)}] or [{len(FEATURES)}], "
            f"got {values.shape}"
        )
    columns = [FEATURES.index(name) for name in (drift.features or FEATURES)]
    mean, std = reference_stats()
    m = mean[columns].astype(np.float64)
    s = std[columns].astype(np.float64)
    out = values.astype(np.float64, copy=True)
    selected = out[..., columns]
    drifted = m + (selected - m) * drift.scale + drift.offset * s
    if drift.noise > 0.0:
        drifted = drifted + drift.noise * s * rng.standard_normal(selected.shape)
    out[..., columns] = drifted
    return out.astype(np.float32)


@cache
def reference_stats() -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float32 ``[F]`` each) of undrifted data.

    Computed once from a fixed large sample with the default class weights; these are the
    units of :class:`Drift`. The arrays are read-only.
    """
    rng = np.random.default_rng(_REFERENCE_SEED)
    y = rng.choice(len(CLASSES), size=_REFERENCE_SIZE, p=_class_probabilities(None))
    x = _sensor_readings(y.astype(np.int64), rng).astype(np.float64)
    mean = x.mean(axis=0).astype(np.float32)
    std = x.std(axis=0).astype(np.float32)
    mean.flags.writeable = False
    std.flags.writeable = False
    return mean, std


def _class_probabilities(class_weights: tuple[float, ...] | None) -> np.ndarray:
    weights = np.asarray(
        DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights, dtype=np.float64
    )
    if weights.shape != (len(CLASSES),):
        raise InvalidDataError(
            f"class_weights needs {len(CLASSES)} values ({', '.join(CLASSES)}), "
            f"got {weights.shape[0] if weights.ndim == 1 else weights.shape}"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise InvalidDataError(
            f"class_weights must be finite, non-negative and not all zero, got {class_weights}"
        )
    result: np.ndarray = weights / weights.sum()
    return result


def _check_drift(drift: Drift) -> None:
    unknown = sorted(set(drift.features or ()) - set(FEATURES))
    if unknown:
        raise InvalidDataError(f"drift names unknown features {unknown}; known: {FEATURES}")
    if drift.scale < 0 or drift.noise < 0:
        raise InvalidDataError(
            f"drift scale and noise must be >= 0, got scale={drift.scale}, noise={drift.noise}"
        )


def _sensor_readings(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor values for labels ``y``: float32 ``[n, F]``, clipped to FEATURE_RANGES."""
    return _readings_and_severity(y, rng)[0]


def _readings_and_severity(
    y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sensor values for labels ``y`` (as :func:`_sensor_readings`) and each sample's
    damage severity (float64 ``[n]`` in ``[0, 1]``, 0 for ``normal``)."""
    n = y.shape[0]
    normal, wear, fault = (y == k for k in range(len(CLASSES)))
    load = rng.uniform(0.35, 1.0, n)  # share of rated load
    ambient = rng.normal(24.0, 4.0, n)  # deg C
    baseline = rng.lognormal(0.0, 0.35, n)  # machine-to-machine vibration level
    severity = np.where(
        wear, rng.uniform(0.25, 0.6, n), np.where(fault, rng.uniform(0.6, 1.0, n), 0.0)
    )
    electrical = fault & (rng.random(n) < 0.4)  # winding / supply faults; the rest mechanical
    mech = np.where(electrical | normal, 0.0, severity)
    elec = np.where(electrical, severity, 0.0)

    rms = 0.22 * baseline * (0.8 + 0.4 * load) * (1.0 + 1.3 * mech + 0.4 * elec)
    rms = rms * rng.lognormal(0.0, 0.12, n)
    crest = 3.0 * rng.lognormal(0.0, 0.12, n) * (1.0 + 0.6 * mech)
    columns = {
        "vibration_rms_g": rms,
        "vibration_peak_g": rms * crest,
        "bearing_temp_c": ambient + 18.0 + 14.0 * load + 12.0 * mech + rng.normal(0, 4.0, n),
        "motor_temp_c": ambient
        + 28.0
        + 30.0 * load
        + 4.0 * mech
        + 16.0 * elec
        + rng.normal(0, 4.5, n),
        "current_a": 6.0 + 26.0 * load + 2.5 * mech + 5.0 * elec + rng.normal(0, 1.5, n),
        "voltage_v": 400.0 - 8.0 * elec + rng.normal(0, 5.0, n),
        "pressure_bar": 2.0 + 4.0 * load - 0.9 * mech + rng.normal(0, 0.35, n),
        "flow_lpm": 60.0 + 150.0 * load - 20.0 * mech + rng.normal(0, 9.0, n),
        "rpm": 1495.0 - 25.0 * load - 5.0 * mech - 12.0 * elec + rng.normal(0, 3.5, n),
        "acoustic_db": 62.0 + 8.0 * load + 7.0 * mech + 2.0 * elec + rng.normal(0, 2.5, n),
    }
    x = np.stack([columns[name] for name in FEATURES], axis=1)
    low = np.array([FEATURE_RANGES[name][0] for name in FEATURES])
    high = np.array([FEATURE_RANGES[name][1] for name in FEATURES])
    return np.clip(x, low, high).astype(np.float32), severity
